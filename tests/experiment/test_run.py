import sqlite3

import pandas as pd
import pytest
import torch

import preadapt
from preadapt.experiment.config import ConfigError
from preadapt.api import run  # the pipeline with the report writer passed in
from preadapt.experiment.run import RunInterrupted
from preadapt.experiment.store import RESULT_COLUMNS, Store
from preadapt.objectives import OBJECTIVES, CURL, Objective, register_objective

from conftest import DIVERGING, write_legacy_store


def test_a_run_writes_every_file_and_the_store_matches_the_csv(tmp_path, tiny):
    result = run(tiny, out=tmp_path / "run")
    out = tmp_path / "run"
    assert result.status == "finished"
    for name in ("config.yaml", "results.sqlite", "results.csv", "report.html", "figures/losses.png",
                 "figures/lemma_4_3.png", "checkpoints/step_000000.pt", "checkpoints/step_000008.pt"):
        assert (out / name).exists(), name
    csv = pd.read_csv(out / "results.csv")
    assert list(csv.columns) == RESULT_COLUMNS
    store = Store(out / "results.sqlite")
    assert len(store.results()) == len(csv) == len(result.results)
    runs = store.runs()
    assert runs.loc[0, "status"] == "finished" and runs.loc[0, "seed"] == 3
    assert runs.loc[0, "torch_version"] == torch.__version__ and runs.loc[0, "device"] == "cpu"
    assert store.schema_version() == 4
    store.close()
    # every number carries an interval and (unless exact) a sample count
    rows = result.results
    assert (rows["lower"] <= rows["value"]).all() and (rows["value"] <= rows["upper"]).all()
    assert rows.loc[rows["method"] != "exact", "n"].notna().all()
    # the configured k and b are measured besides k = 1
    assert set(rows.loc[rows["quantity"] == "L_un", "negatives"]) == {1, 2}
    # the block grid measures b = 1 (its base) and the configured b at k = 1, and the configured (k, b)
    blocks = rows.loc[rows["quantity"] == "L_un_block", ["negatives", "block_size"]]
    assert set(map(tuple, blocks.astype(int).values.tolist())) == {(1, 1), (1, 2), (2, 2)}
    assert set(rows["step"]) == {0, 3, 8}
    # every statement that applies is checked at every checkpoint, the theorems without a verdict
    # (the objective has k = 2 and b = 2, so their premise is not met)
    slack = rows[rows["quantity"] == "bound_slack"]
    for step in (0, 3, 8):
        names = set(slack.loc[slack["step"] == step, "bound"])
        assert names == {"lemma_4_3", "mean_below_diff", "jensen_floor", "lemma_4_4",
                         "lemma_4_3_negatives", "proposition_6_2", "block_below_un", "block_monotone",
                         "theorem_4_1", "theorem_4_5"}
    theorems = slack[slack["bound"].isin(["theorem_4_1", "theorem_4_5"])]
    assert (theorems["status"] == "premise not met").all()
    assert theorems["note"].str.contains("negatives = 2, block_size = 2").all()
    assert not (slack["status"] == "violated").any()


def test_the_true_negative_infonce_oracle_trains_and_measures_l_pre_on_true_negatives(monkeypatch, tiny):
    """objective.true_negatives reaches the training tuples and L_pre's fresh tuples; the L_un family
    keeps negatives from ρ (collisions included)."""
    import importlib

    from preadapt.worlds.sampling import draw_tuples

    quantities = importlib.import_module("preadapt.estimate.quantities")
    run_module = importlib.import_module("preadapt.experiment.run")  # the package exports the function run

    drawn = []

    def spy(world, n, generator, negatives=1, block_size=1, condition=None, true_negatives=False):
        tuples = draw_tuples(world, n, generator, negatives, block_size, condition, true_negatives)
        drawn.append((true_negatives, condition, tuples))
        return tuples

    monkeypatch.setattr(run_module, "draw_tuples", spy)
    monkeypatch.setattr(quantities, "draw_tuples", spy)
    config = {**tiny, "objective": {"kind": "infonce", "negatives": 3, "true_negatives": True}}
    result = run(config)
    assert result.status == "finished", result.error
    assert {"L_pre_train", "L_pre", "L_un"} <= set(result.results["quantity"])
    oracle = [t for flag, _, t in drawn if flag]
    marginal = [t for flag, condition, t in drawn if not flag and condition is None]
    assert len(oracle) >= 1 + len(result.checks)  # the training tuples, and L_pre at every checkpoint
    assert oracle[0].negatives_count == 3 and len(oracle[0]) == tiny["pretrain"]["tuples"]
    for tuples in oracle:
        assert not (tuples.negative_class == tuples.anchor_class[:, None]).any()
    assert marginal and any((t.negative_class == t.anchor_class[:, None]).any() for t in marginal)


def test_checkpoints_load_with_weights_only(tmp_path, tiny):
    run(tiny, out=tmp_path / "run", report=None)  # no report: the checkpoints come before it
    state = torch.load(tmp_path / "run" / "checkpoints" / "step_000008.pt", weights_only=True)
    assert any(key.endswith("weight") for key in state)


def test_same_config_and_seed_write_identical_results(tmp_path, tiny):
    run(tiny, out=tmp_path / "a", report=None)  # results.csv is written before (and without) the report
    run(tiny, out=tmp_path / "b", report=None)
    assert (tmp_path / "a" / "results.csv").read_bytes() == (tmp_path / "b" / "results.csv").read_bytes()
    other = run({**tiny, "seed": 4}).results
    assert not other["value"].equals(pd.read_csv(tmp_path / "a" / "results.csv")["value"])


def test_a_diverging_run_is_recorded_as_failed_with_step_and_reason(tmp_path):
    result = run(DIVERGING, out=tmp_path / "boom")
    assert result.status == "failed"
    assert "diverged at step 2: non-finite loss" in result.error
    with sqlite3.connect(tmp_path / "boom" / "results.sqlite") as db:
        status, error = db.execute("SELECT status, error FROM runs").fetchone()
        assert status == "failed" and "step 2" in error
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert set(result.results["step"]) == {0}  # the checkpoint evaluated before the failure is kept


def test_an_injected_fault_is_recorded_not_raised(tmp_path, tiny):
    class Faulty(CURL):
        def forward(self, encoded):
            raise RuntimeError("injected fault")

    register_objective("faulty", lambda config: Faulty())
    try:
        result = run({**tiny, "objective": {"kind": "faulty"}}, out=tmp_path / "f")
    finally:
        OBJECTIVES._entries.pop("faulty")
    assert result.status == "failed" and result.error == "RuntimeError: injected fault (at step 0, evaluating the checkpoint)"


def _store_state(path):
    store = Store(path)
    try:
        return store.runs(), store.results()
    finally:
        store.close()


def test_ctrl_c_records_the_run_interrupted_and_the_same_run_starts_over_to_identical_results(tmp_path, tiny):
    def ctrl_c_after_the_first_checkpoint(stage, done, total):
        if stage == "evaluate" and done == 1:  # step 0 evaluated and its rows kept: the signal lands here
            raise KeyboardInterrupt

    out = tmp_path / "run"
    with pytest.raises(RunInterrupted) as info:
        run(tiny, out=out, progress=ctrl_c_after_the_first_checkpoint)
    stop = info.value
    assert (stop.step, stop.total_steps, stop.stage, stop.evaluated, stop.status, stop.out) == (
        1, 8, "training", [0], "interrupted", out)
    runs, results = _store_state(out / "results.sqlite")
    assert runs[["run_id", "status", "error"]].values.tolist() == [
        [stop.run_id, "interrupted", "interrupted at step 1 of 8 while training"]]
    assert set(results["step"]) == {0} and "bound_slack" in set(results["quantity"])
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "config.yaml", "results.sqlite"]
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_000000.pt"]

    with pytest.raises(ConfigError, match="is not empty; pass --force"):  # another config: never overwritten
        run({**tiny, "seed": 4}, out=out)
    again = run(tiny, out=out, report=None)  # the same config: it starts over, no force needed
    reference = run(tiny, out=tmp_path / "uninterrupted", report=None)  # (the files compared come before a report)
    assert again.status == "finished" and again.run_id == stop.run_id
    pd.testing.assert_frame_equal(again.results, reference.results, check_exact=True)
    runs, results = _store_state(out / "results.sqlite")
    assert runs["status"].tolist() == ["finished"]
    pd.testing.assert_frame_equal(results, _store_state(tmp_path / "uninterrupted" / "results.sqlite")[1],
                                  check_exact=True)
    assert (out / "results.csv").read_bytes() == (tmp_path / "uninterrupted" / "results.csv").read_bytes()


def test_ctrl_c_before_the_run_is_recorded_leaves_none_of_its_files(tmp_path, tiny, monkeypatch):
    def ctrl_c(self, provenance):
        raise KeyboardInterrupt

    monkeypatch.setattr(Store, "start_run", ctrl_c)
    with pytest.raises(RunInterrupted) as info:
        run(tiny, out=tmp_path / "run")
    assert (info.value.status, info.value.stage) == (None, "starting")
    assert not any((tmp_path / "run").iterdir())


def test_ctrl_c_while_the_report_is_written_keeps_the_recorded_outcome(tmp_path, tiny):
    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    with pytest.raises(RunInterrupted) as info:
        run(tiny, out=tmp_path / "run", report=ctrl_c)
    assert (info.value.status, info.value.stage) == ("finished", "writing the report")
    runs, results = _store_state(tmp_path / "run" / "results.sqlite")
    assert runs["status"].tolist() == ["finished"] and set(results["step"]) == {0, 3, 8}
    assert len(pd.read_csv(tmp_path / "run" / "results.csv")) == len(results)


def test_a_store_of_schema_version_2_is_migrated_and_keeps_its_runs(tmp_path):
    path = tmp_path / "results.sqlite"
    write_legacy_store(path, 2)
    store = Store(path)
    try:
        assert store.schema_version() == 4 and store.integrity() == "ok"  # 2 → 3 → 4
        assert store.statuses() == {"old": "finished"} and store.runs().loc[0, "seed"] == 3
        assert store.results()["quantity"].tolist() == ["tau"]
        store.start_run({"run_id": "new", "config_hash": "h2", "config_json": "{}"})
        store.finish_run("new", store.results().assign(run="new"), "interrupted", "now", "interrupted at step 1")
        assert store.statuses() == {"old": "finished", "new": "interrupted"}
        with pytest.raises(sqlite3.IntegrityError):  # the foreign key still holds after the rebuild
            with store.connection:
                store.connection.execute("INSERT INTO results (run, step, quantity, value, lower, upper, level, "
                                         "method) VALUES ('nobody', 0, 'tau', 0, 0, 0, 1, 'exact')")
    finally:
        store.close()


def test_a_user_world_registered_by_name_is_usable_in_configs(tiny):
    from preadapt.worlds import GaussianWorld, WORLDS, register_world

    register_world("corners", lambda config, generator: GaussianWorld(torch.eye(int(config.size)) * 3, noise=0.5))
    try:
        result = run({**tiny, "world": {"kind": "corners", "size": 5}})
    finally:
        WORLDS._entries.pop("corners")
    assert result.status == "finished"


def test_evaluate_measures_a_users_encoder():
    encoder = torch.nn.Sequential(torch.nn.Linear(4, 3))
    table = preadapt.evaluate(encoder, {"kind": "gaussian", "classes": 4, "dim": 4},
                              {"samples": 500, "mean_samples": 60, "test_per_class": 10, "task_classes": [2],
                               "top_r": [1], "probe_tasks": 3, "probe_shots": 10, "probe_val": 10,
                               "star_samples": 20, "bootstrap": 10})
    assert {"L_un", "L_sup_mean", "L_sup", "acc_avg", "bound_slack", "R"} <= set(table["quantity"])
    r = table[table["quantity"] == "R"].iloc[0]
    assert r["method"] == "empirical"  # no norm bound: R is measured


@pytest.mark.slow
def test_the_demo_preset_never_violates_lemma_4_3(demo_run):
    result = demo_run  # preadapt.run(preadapt.load_config(preset="demo")), shared with test_browser.py
    assert result.status == "finished"
    slack = result.results[result.results["quantity"] == "bound_slack"]
    assert len(slack[slack["bound"] == "lemma_4_3"]) == 4
    assert set(slack["bound"]) == {"lemma_4_3", "mean_below_diff", "jensen_floor", "lemma_4_4",
                                   "theorem_4_1", "theorem_4_5"}
    assert (slack["status"] != "violated").all()
    # the theorems' premise: only checkpoints whose empirical CURL loss is at most the comparator's
    # get a verdict; the comparator (the best held-out L_un) always does
    terms = result.results[result.results["quantity"] == "bound_term"]
    comparator = int(terms.loc[terms["term"] == "comparator_step", "value"].iloc[0])
    theorem = slack[slack["bound"] == "theorem_4_1"].set_index("step")
    assert theorem.loc[comparator, "status"] != "premise not met"
    assert theorem.loc[0, "status"] == "premise not met" or comparator == 0


def test_a_run_without_a_report_writer_writes_every_file_but_the_report(tmp_path, tiny):
    from preadapt.experiment.run import run as run_pipeline

    result = run_pipeline(tiny, out=tmp_path / "run")
    assert result.status == "finished"
    written = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.yaml", "results.sqlite", "results.csv", "checkpoints"} <= written
    assert not written & {"report.html", "figures"}


def test_an_objective_factory_that_builds_no_objective_is_refused_naming_the_kind(tiny):
    class Plain(torch.nn.Module):  # the protocol's attributes, but not an Objective
        negatives, block_size = 1, 1

        def forward(self, encoded):
            return encoded.anchor.sum(-1)

    register_objective("plain_test", lambda config: Plain())
    try:
        with pytest.raises(ConfigError, match=r"^objective\.kind: the factory of objective kind 'plain_test' built a "
                                              r"Plain, not a preadapt\.objectives\.Objective; subclass "
                                              r"preadapt\.objectives\.Objective"):
            run({**tiny, "objective": {"kind": "plain_test"}})
    finally:
        OBJECTIVES._entries.pop("plain_test")


def test_another_objective_keeps_the_every_f_checks_and_withholds_the_theorems_verdict(tiny):
    """L_un is always the CURL loss, so Lemma 4.3, 4.4, the floor and the block statements apply to an
    encoder trained by any objective; Theorems 4.1 and 4.5 need f̂ to minimise the empirical CURL loss."""
    from preadapt.objectives import curl_margins

    class SquaredHinge(Objective):
        def forward(self, encoded):
            margins = curl_margins(encoded.anchor, encoded.positives, encoded.negatives)
            return torch.clamp(1.0 - margins.min(dim=-1).values, min=0.0) ** 2

    register_objective("squared_hinge_test", lambda config: SquaredHinge())
    try:
        config = {**tiny, "objective": {"kind": "squared_hinge_test"},
                  "evaluate": {**tiny["evaluate"], "negatives": [2], "block_sizes": [2]}}
        result = run(config)
    finally:
        OBJECTIVES._entries.pop("squared_hinge_test")
    assert result.status == "finished"
    slack = result.results[result.results["quantity"] == "bound_slack"]
    every_f = slack[~slack["bound"].str.startswith("theorem")]
    assert {"lemma_4_3", "jensen_floor", "lemma_4_4", "lemma_4_3_negatives", "proposition_6_2",
            "block_monotone"} <= set(every_f["bound"])
    assert every_f["status"].isin(["holds", "inconclusive"]).all()
    theorems = slack[slack["bound"].str.startswith("theorem")]
    assert len(theorems) == 2 * len(set(slack["step"]))
    assert (theorems["status"] == "premise not met").all()
    assert theorems["note"].str.contains("objective 'squared_hinge_test'").all()


TINY_EVALUATE = {"samples": 1000, "mean_samples": 40, "test_per_class": 10, "task_classes": [2, 3], "top_r": [1],
                 "probe_tasks": 4, "probe_shots": 8, "probe_val": 8, "star_samples": 16, "bootstrap": 10}
COMPONENT_CASES = {
    "digits-cnn-curl-blocks": ({"kind": "finite", "dataset": "digits"}, {"kind": "cnn", "widths": [8], "out_dim": 8},
                               {"kind": "curl", "negatives": 2, "block_size": 3}),
    "topics-bow-infonce": ({"kind": "topics", "classes": 6, "vocab": 50, "max_length": 12},
                           {"kind": "bow", "vocab": 50, "out_dim": 8}, {"kind": "infonce", "negatives": 2}),
    "bank-gru-debiased": ({"kind": "topics", "classes": 6, "vocab": 50, "max_length": 12, "sentences_per_class": 40},
                          {"kind": "gru", "vocab": 50, "out_dim": 8, "hidden": 16},
                          {"kind": "debiased", "negatives": 3, "extra_positives": 2}),
    "gaussian-mlp-supervised": ({"kind": "gaussian", "classes": 6, "dim": 4},
                                {"kind": "mlp", "hidden": [8], "out_dim": 4}, {"kind": "supervised"}),
    "gaussian-mlp-spectral": ({"kind": "gaussian", "classes": 6, "dim": 4},
                              {"kind": "mlp", "hidden": [8], "out_dim": 4}, {"kind": "spectral"}),
    "gaussian-linear-align-uniform": ({"kind": "gaussian", "classes": 6, "dim": 4},
                                      {"kind": "linear", "out_dim": 4}, {"kind": "align_uniform"}),
}


@pytest.mark.parametrize("name", list(COMPONENT_CASES))
def test_every_registered_kind_runs_through_the_pipeline_and_never_violates_an_every_f_statement(name):
    world, encoder, objective = COMPONENT_CASES[name]
    result = run({"name": name, "device": "cpu", "world": world, "encoder": encoder, "objective": objective,
                  "pretrain": {"tuples": 256, "epochs": 2, "batch_size": 64, "checkpoints": [0]},
                  "evaluate": TINY_EVALUATE})
    assert result.status == "finished", result.error
    slack = result.results[result.results["quantity"] == "bound_slack"]
    assert {"lemma_4_3", "jensen_floor", "lemma_4_4", "theorem_4_1"} <= set(slack["bound"])
    assert not (slack["status"] == "violated").any()
    if objective["kind"] != "curl":
        theorems = slack[slack["bound"].str.startswith("theorem")]
        assert (theorems["status"] == "premise not met").all()


def test_on_a_world_with_splits_no_adapter_sees_the_held_out_examples():
    """Pure-noise features: nothing generalises, so an adapter that fitted (or chose) on the held-out
    split's own examples would score above chance; on the train/validation views it cannot."""
    from preadapt.encoders import IdentityEncoder

    rng = torch.Generator().manual_seed(0)
    features, labels = torch.randn(600, 64, generator=rng), torch.arange(600) % 5
    world = preadapt.FiniteWorld.from_arrays(features, labels, generator=torch.Generator().manual_seed(1))
    table = preadapt.evaluate(IdentityEncoder(), world,
                              {"samples": 500, "mean_samples": 60, "test_per_class": 40, "task_classes": [2],
                               "top_r": [1], "probe_tasks": 20, "probe_shots": 10, "probe_val": 10,
                               "star_samples": 20, "bootstrap": 10})
    top = table[(table["quantity"] == "acc_top") & (table["top_r"] == 1)]
    assert len(top) == 3  # the mean classifier from the pool's μ̂, and each adapter fitted on s shots per class
    for row in top.itertuples():  # chance is 1/5; the intervals are at 95%, the test allows their width
        assert row.lower <= 0.2 + 1e-9 or row.value < 0.3, (row.adapter, row.value, row.lower, row.upper)
