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
    (["world.kind=banana"], "world.kind: got 'banana'; allowed: finite, gaussian, topics"),
    (["encoder.kind=transformer"], "encoder.kind: got 'transformer'; allowed: bow, cnn, gru, identity, linear, minilm, mlp"),
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
