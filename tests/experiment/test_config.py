import pytest

from preadapt.experiment.config import Config, ConfigError, apply_overrides, load_config, parse_config
from preadapt.experiment.presets import preset_descriptions, preset_names


def test_defaults_follow_the_design_skeleton():
    config = Config()
    assert config.world.kind == "gaussian" and config.world.classes == 20
    assert config.encoder.kind == "mlp" and config.objective.kind == "curl"
    assert config.evaluate.task_classes == [2, 10] and config.evaluate.level == 0.95


def test_round_trip_through_yaml_keeps_the_config_and_its_hash(tmp_path, tiny):
    config = parse_config(tiny)
    path = tmp_path / "c.yaml"
    path.write_text(config.to_yaml())
    again = load_config(path)
    assert again == config and again.config_hash() == config.config_hash()


def test_overrides_are_typed_yaml_values(tiny):
    data = apply_overrides(tiny, ["world.classes=7", "evaluate.task_classes=[2, 4]", "encoder.norm_bound=null"])
    config = parse_config(data)
    assert config.world.classes == 7 and config.evaluate.task_classes == [2, 4] and config.encoder.norm_bound is None


@pytest.mark.parametrize("change, expected", [
    (["objective.negatives=0"], "objective.negatives: got 0; input should be greater than or equal to 1"),
    (["world.classes=1"], "world.classes: got 1; input should be greater than or equal to 2"),
    (["world.noise=-1"], "world.noise: got -1; input should be greater than or equal to 0"),
    (["world.kind=banana"], "world.kind: got 'banana'; allowed: finite, gaussian, hypercube, topics"),
    (["encoder.kind=transformer"], "encoder.kind: got 'transformer'; allowed: bow, cnn, gru, identity, linear, lookup, minilm, mlp"),
    (["world.colour=red"], "world.colour: unknown field"),
    (["pretrain.checkpoints=[0, 9999]"], "pretrain.checkpoints: got step 9999; allowed: 0..8"),
    (["evaluate.task_classes=[2, 6]"], "evaluate.task_classes: got 6; allowed: 2..5 (classes with positive prior)"),
    (["evaluate.probe_shots=100"], "evaluate.mean_samples: got 60; must be ≥ probe_shots + probe_val = 110"),
    (["device=tpu"], "device: got 'tpu'; input should be 'cpu', 'cuda' or 'auto'"),
    (["objective.loss=square"], "objective.loss: got 'square'"),
    (["world.prior=[1, 1, 0, 0, 0]", "evaluate.task_classes=[3]"],
     "evaluate.task_classes: got 3; allowed: 2..2 (classes with positive prior)"),
    (["world.prior=[1, 0, 0, 0, 0]"], "world.prior: got [1.0, 0.0, 0.0, 0.0, 0.0]; at least two classes"),
])
def test_bad_fields_give_one_line_naming_field_value_and_what_is_allowed(tiny, change, expected):
    with pytest.raises(ConfigError) as info:
        parse_config(apply_overrides(tiny, change))
    message = str(info.value)
    assert message.startswith(expected), message
    assert "\n" not in message


@pytest.mark.parametrize("item", ["world.classes", "=3", "world..classes=3", "world.classes.x=3"])
def test_malformed_overrides_are_refused(tiny, item):
    with pytest.raises(ConfigError, match="--set"):
        apply_overrides(tiny, [item])


def test_missing_file_and_unknown_preset_and_both_sources(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="--preset: got 'nope'; allowed: bounds-blocks, bounds-negatives, demo"):
        load_config(preset="nope")
    (tmp_path / "c.yaml").write_text("name: x\n")
    with pytest.raises(ConfigError, match="not both"):
        load_config(tmp_path / "c.yaml", preset="demo")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.yaml")


def test_yaml_is_read_safely(tmp_path):
    (tmp_path / "evil.yaml").write_text("name: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "evil.yaml")


def test_presets_are_valid_and_described():
    assert "demo" in preset_names()
    for name, description in preset_descriptions().items():
        assert description, name
        load_config(preset=name)


def test_a_component_section_without_kind_takes_the_default_kind():
    from preadapt.experiment.config import Config, parse_config

    config = parse_config({"objective": {"negatives": 3}, "world": {"classes": 12}})
    assert (config.objective.kind, config.objective.negatives) == (Config().objective.kind, 3)
    assert (config.world.kind, config.world.classes) == (Config().world.kind, 12)


# ---------------------------------------------------------------- defaults that fit the world and the training

def test_default_tasks_fit_a_smaller_world_and_still_read_as_defaults():
    five = load_config(overrides=["world.classes=5"])  # the demo leaves task_classes and top_r to the defaults
    assert (five.evaluate.task_classes, five.evaluate.top_r) == ([2], [1, 5])
    assert "task_classes" not in five.evaluate.model_fields_set
    assert five.defaults_resolved() == ["evaluate.task_classes [2, 10] → [2] (world has 5 classes)"]
    three = parse_config({"world": {"classes": 3}, "evaluate": {"samples": 100}})  # a section given in part
    assert (three.evaluate.task_classes, three.evaluate.top_r, three.evaluate.samples) == ([2], [1], 100)
    # a fitted section fits again on another world: its fields still come from the defaults
    again = parse_config({"world": {"classes": 20}, "evaluate": three.evaluate})
    assert (again.evaluate.task_classes, again.evaluate.top_r) == ([2, 10], [1, 5])
    assert load_config().defaults_resolved() == [] and Config().evaluate.task_classes == [2, 10]


def test_default_tasks_fit_the_classes_of_positive_prior():
    config = load_config(overrides=["world.classes=6", "world.prior=[1, 1, 1, 0, 0, 0]"])
    assert (config.evaluate.task_classes, config.evaluate.top_r) == ([2], [1])
    assert config.defaults_resolved()[0] == "evaluate.task_classes [2, 10] → [2] (world has 3 classes of positive prior)"


def test_default_checkpoints_fit_the_training():
    untrained = load_config(overrides=["pretrain.epochs=0"])
    assert untrained.pretrain.checkpoints == untrained.pretrain.checkpoint_steps == [0]
    assert untrained.defaults_resolved() == [
        "pretrain.checkpoints [0, 50, 200] → [0] (training has 0 steps: epochs × ceil(tuples / batch_size))"]
    one_epoch = load_config(overrides=["pretrain.epochs=1"])  # 79 steps: 200 is dropped, the final model kept
    assert one_epoch.pretrain.checkpoints == [0, 50, 79]
    assert load_config().pretrain.checkpoints == [0, 50, 200]


def test_the_resolved_values_are_saved_hashed_and_read_back(tmp_path):
    config = load_config(overrides=["world.classes=5", "pretrain.epochs=0"])
    explicit = load_config(overrides=["world.classes=5", "pretrain.epochs=0", "evaluate.task_classes=[2]",
                                      "pretrain.checkpoints=[0]"])
    assert config.config_hash() == explicit.config_hash() and explicit.defaults_resolved() == []
    path = tmp_path / "config.yaml"
    path.write_text(config.to_yaml())
    saved = load_config(path)
    assert saved.evaluate.task_classes == [2] and saved.pretrain.checkpoints == [0]
    assert saved == config and saved.config_hash() == config.config_hash()


@pytest.mark.parametrize("change, expected", [
    (["world.classes=5", "evaluate.task_classes=[2, 10]"], "evaluate.task_classes: got 10; allowed: 2..5"),
    (["world.classes=3", "evaluate.top_r=[1, 5]"], "evaluate.top_r: got 5; allowed: 1..3"),
    (["pretrain.epochs=0", "pretrain.checkpoints=[0, 50]"], "pretrain.checkpoints: got step 50; allowed: 0..0"),
    (["pretrain.epochs=0", "bounds.comparator=50"], "bounds.comparator: got 50; allowed: 'best' or a checkpoint step [0]"),
])
def test_values_given_explicitly_are_validated_not_fitted(change, expected):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=change)
    assert str(info.value).startswith(expected), str(info.value)


def test_a_tiny_run_with_fitted_defaults_evaluates_the_untrained_model():
    from preadapt import run

    small = ["device=cpu", "world.dim=4", "encoder.hidden=[8]", "encoder.out_dim=4", "pretrain.tuples=64",
             "evaluate.samples=200", "evaluate.mean_samples=40", "evaluate.test_per_class=8", "evaluate.probe_tasks=2",
             "evaluate.probe_shots=5", "evaluate.probe_val=5", "evaluate.star_samples=10", "evaluate.bootstrap=10"]
    result = run(load_config(overrides=[*small, "world.classes=5", "pretrain.epochs=0"]))
    assert result.status == "finished", result.error
    rows = result.results
    assert rows.step.unique().tolist() == [0]
    assert set(rows.task_classes.dropna()) == {2} and set(rows.top_r.dropna()) == {1, 5}


# ---------------------------------------------------------------- encoder and world fit each other

@pytest.mark.parametrize("change, expected", [
    (["encoder={kind: cnn}"], "encoder.kind: got 'cnn', which needs real-valued images of shape (C, H, W) or (H, W); "
                              "the world gives float32 inputs of shape (16,)"),
    (["world={kind: topics, vocab: 100}", "encoder={kind: bow, vocab: 50}"],
     "encoder.vocab: got 50; allowed: ≥ 100, the world's vocabulary"),
    (["world={kind: topics}", "encoder={kind: gru, vocab: 999}"], "encoder.vocab: got 999; allowed: ≥ 1000"),
    (["world={kind: topics}", "encoder={kind: linear}"],
     "encoder.kind: got 'linear', which needs real-valued inputs; the world gives int64 token ids of shape (32,) in [0, 1000)"),
    (["world={kind: topics}", "encoder={kind: mlp}"], "encoder.kind: got 'mlp', which needs real-valued inputs"),
    (["encoder={kind: bow, vocab: 1000}"],
     "encoder.kind: got 'bow', which needs token ids of shape (L,); the world gives float32 inputs of shape (16,)"),
    (["world={kind: finite}", "encoder={kind: cnn, widths: [4, 8, 16, 32]}"],
     "encoder.widths: got [4, 8, 16, 32], 4 conv blocks; allowed: at most 3 for 8×8 images"),
    (["encoder={kind: minilm}"], "encoder.kind: got 'minilm', which needs word ids of shape (L,)"),
    (["world={kind: topics, vocab: 4}", "encoder={kind: minilm, words: [pad, a, b]}"],
     "encoder.words: got 3 words; allowed: at least 4"),
])
def test_an_encoder_that_cannot_take_the_worlds_inputs_fails_validation(change, expected):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=change)
    message = str(info.value)
    assert message.startswith(expected) and "\n" not in message, message


@pytest.mark.parametrize("change", [
    ["world={kind: topics, vocab: 100}", "encoder={kind: bow, vocab: 100}"],
    ["world={kind: topics, vocab: 100}", "encoder={kind: gru, vocab: 500}"],
    ["world={kind: topics}", "encoder={kind: identity}"],
    ["world={kind: finite}", "encoder={kind: cnn, widths: [4, 8, 16]}"],
    ["world={kind: finite}", "encoder={kind: mlp}"],
])
def test_an_encoder_that_takes_the_worlds_inputs_passes(change):
    load_config(overrides=change)


def test_a_user_world_is_checked_only_when_its_config_gives_an_input_spec():
    from typing import Literal

    import torch

    from preadapt.registry import ComponentConfig
    from preadapt.worlds import WORLDS, register_world
    from preadapt.worlds.base import InputSpec

    class TokenWorldConfig(ComponentConfig):
        kind: Literal["user_tokens"] = "user_tokens"
        classes: int = 4

        @property
        def input_spec(self) -> InputSpec:
            return InputSpec((6,), torch.int64, vocabulary=10)

    register_world("user_plain", lambda config, generator: None)  # no params model: nothing known
    register_world("user_tokens", lambda config, generator: None, TokenWorldConfig)
    try:
        assert parse_config({"world": {"kind": "user_plain", "classes": 4}, "encoder": {"kind": "cnn"}})
        assert parse_config({"world": {"kind": "user_tokens"}, "encoder": {"kind": "bow", "vocab": 10}})
        with pytest.raises(ConfigError, match=r"^encoder.vocab: got 9; allowed: ≥ 10"):
            parse_config({"world": {"kind": "user_tokens"}, "encoder": {"kind": "bow", "vocab": 9}})
    finally:
        WORLDS._entries.pop("user_plain")
        WORLDS._entries.pop("user_tokens")


def test_the_python_evaluate_fits_defaulted_task_sizes_to_the_world():
    """preadapt.evaluate on a world of 3 classes with the default evaluate section: AVG-10 and TOP-5
    are dropped (the defaults), while an explicit task size of 10 is still refused."""
    import preadapt
    from preadapt.experiment.config import ConfigError

    world = {"kind": "gaussian", "classes": 3, "dim": 4}
    small = {"samples": 200, "mean_samples": 100, "test_per_class": 20, "probe_tasks": 3, "probe_shots": 5,
             "probe_val": 5, "star_samples": 10, "bootstrap": 10}
    table = preadapt.evaluate(preadapt.IdentityEncoder(), world, small)
    assert sorted(table.query("quantity == 'acc_avg'")["task_classes"].unique().tolist()) == [2]
    assert sorted(table.query("quantity == 'acc_top'")["top_r"].unique().tolist()) == [1]
    with pytest.raises(ConfigError, match="evaluate.task_classes: got 10; allowed: 2..3"):
        preadapt.evaluate(preadapt.IdentityEncoder(), world, {**small, "task_classes": [2, 10]})


def test_the_pretraining_hash_keeps_only_what_pretraining_sees():
    """Runs that differ only in what the tasks see share a pretraining; the task fields that change the
    pretraining world (an unseen fraction, coarse superclasses) and the seed do not."""
    from preadapt.experiment.config import parse_config

    def pretraining(task=None, **fields):
        return parse_config({"world": {"kind": "gaussian", "classes": 10}, "task": task, **fields}).pretraining_hash()

    def shift(fraction, severity):
        return {"kind": "compose", "steps": [{"kind": "unseen", "fraction": fraction},
                                             {"kind": "covariate", "severity": severity}]}

    plain = pretraining()
    assert plain == pretraining({"kind": "covariate", "severity": 1.0}) == pretraining({"kind": "prior", "prior": "uniform"})
    assert plain == pretraining({"kind": "subspace", "rank": 2}) == pretraining(shift(0.0, 0.5))
    assert plain == pretraining({"kind": "hierarchy", "groups": 5, "direction": "fine_to_coarse"})
    assert plain == pretraining(evaluate={"shots": [5]}) == pretraining(bounds={"comparator": "best"})
    assert pretraining(shift(0.2, 0.0)) == pretraining(shift(0.2, 1.0)) == pretraining({"kind": "unseen", "fraction": 0.2,
                                                                                         "tasks": "unseen"})
    others = {pretraining(shift(0.2, 0.0)), pretraining(shift(0.4, 0.0)), pretraining(seed=1),
              pretraining({"kind": "hierarchy", "groups": 5, "direction": "coarse_to_fine"}),
              pretraining(encoder={"kind": "linear"}), pretraining(pretrain={"epochs": 2})}
    assert plain not in others and len(others) == 6
