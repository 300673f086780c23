"""Sweeps through the Python API: expansion of grid, zip and replicates; validation before any run;
the driver's store (resume, failures, retry); the tidy export with the swept fields."""

from __future__ import annotations

import re

import pytest
import torch

from conftest import QUIET_REPORT, SWEEP_BASE, TWELVE, Gates, wait_until, write_sweep
from preadapt.api import run_sweep  # the driver with the sweep report writer passed in
from preadapt.experiment.config import ConfigError
from preadapt.experiment.executors import InProcess, RunTask, execute
from preadapt.experiment.store import Store
from preadapt.experiment.sweep import load_sweep, replicate_seed, sweep_results
from preadapt.registry import ComponentConfig
from preadapt.objectives import OBJECTIVES, register_objective
from preadapt.objectives.curl import CURL


def test_grid_times_replicates_gives_every_run_once_with_paired_seeds(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, TWELVE))
    assert len(sweep.runs) == 12 and len({r.run_id for r in sweep.runs}) == 12
    assert [axis["name"] for axis in sweep.axes] == ["objective.negatives", "objective.block_size"]
    points = {(r.point["objective.negatives"], r.point["objective.block_size"]) for r in sweep.runs}
    assert points == {(k, b) for k in (1, 2, 4) for b in (1, 2)}
    for r in sweep.runs:  # the point's values reached the config, and the sweep named its runs
        assert (r.config.objective.negatives, r.config.objective.block_size) == tuple(r.point.values())
        assert r.config.name == "twelve" and r.run_id.startswith("twelve-")
    seeds = {r.replicate: set() for r in sweep.runs}
    for r in sweep.runs:
        seeds[r.replicate].add(r.config.seed)
    assert all(len(s) == 1 for s in seeds.values())  # one seed per replicate, shared by every point
    assert seeds[0] != seeds[1]
    base_hash = load_sweep(write_sweep(tmp_path, {**TWELVE, "grid": {}, "replicates": 1})).runs[0].config
    assert base_hash.seed == replicate_seed(_base_hash(tmp_path), 0)


def _base_hash(folder):
    from preadapt.experiment.config import parse_config

    return parse_config({**SWEEP_BASE, "name": "twelve"}).config_hash()


def test_zip_varies_fields_together_and_sections_take_whole_mappings(tmp_path):
    objectives = [{"kind": "infonce", "negatives": 2}, {"kind": "curl", "loss": "hinge", "negatives": 2}]
    spec = {"base": "base.yaml", "grid": {"objective": objectives},
            "zip": {"world.classes": [4, 6], "evaluate.task_classes": [[2, 4], [2, 6]]}}
    sweep = load_sweep(write_sweep(tmp_path, spec))
    assert sweep.name == "sweep" and len(sweep.runs) == 4
    assert [axis["fields"] for axis in sweep.axes] == [["objective"], ["world.classes", "evaluate.task_classes"]]
    pairs = {(r.config.world.classes, tuple(r.config.evaluate.task_classes)) for r in sweep.runs}
    assert pairs == {(4, (2, 4)), (6, (2, 6))}
    labels = {r.point["objective"] for r in sweep.runs}
    assert labels == {"kind=infonce", "kind=curl,loss=hinge"}
    assert {r.config.objective.kind for r in sweep.runs} == {"infonce", "curl"}


@pytest.mark.parametrize("change, message", [
    ({"grid": {"objective.negativs": [1, 2]}}, "grid.objective.negativs: unknown field"),
    ({"grid": {"objective.negatives": []}}, "grid.objective.negatives: an empty list"),
    ({"grid": {"objective.negatives": 3}}, "grid.objective.negatives: got 3; expected a list"),
    ({"grid": {"objective.negatives": [1, 0]}}, "grid.objective.negatives: got 0"),
    ({"grid": {"objective.negatives": [1, 1]}}, "grid.objective.negatives: got [1, 1]; a value is repeated"),
    ({"grid": {"seed": [1, 2]}}, "grid.seed: cannot be swept"),
    ({"grid": {}, "zip": {"world.classes": [4, 5], "objective.negatives": [1, 2, 3]}},
     "zip: the lists differ in length (world.classes has 2, objective.negatives has 3)"),
    ({"grid": {"world.classes": [4]}, "zip": {"world.classes": [5]}}, "zip.world.classes: also in grid"),
    ({"replicates": 0}, "sweep.yaml: replicates: got 0"),
    ({"gird": {}}, "sweep.yaml: gird: unknown field"),
    ({"base": "nope"}, "--preset: got 'nope'"),
    ({"base": "missing.yaml"}, "config file not found"),
    ({"report": {"quantities": ["acc_avg[adapter]"]}}, "report.quantities: got 'acc_avg[adapter]'"),
])
def test_a_bad_sweep_fails_before_any_run_with_one_line(tmp_path, change, message):
    with pytest.raises(ConfigError) as error:
        load_sweep(write_sweep(tmp_path, {**TWELVE, **change}))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_run_preset_name_as_sweep_and_a_sweep_preset_as_run_are_refused():
    from preadapt.experiment.config import load_config

    with pytest.raises(ConfigError, match="is a sweep preset; run it with: preadapt sweep --preset sweep-shots"):
        load_config(preset="sweep-shots")
    with pytest.raises(ConfigError, match="allowed sweep presets: .*sweep-negatives"):
        load_sweep(preset="demo")


class Faulty(CURL):
    """The CURL objective, raising from its ``fail_at``-th training call on: an injected fault."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at, self.calls = fail_at, 0

    def forward(self, encoded):
        if self.training:
            self.calls += 1
            if self.calls >= self.fail_at:
                raise RuntimeError("injected fault")
        return super().forward(encoded)


class FaultyParams(ComponentConfig):
    fail_at: int = 3


@pytest.fixture
def faulty_objective():
    register_objective("faulty", lambda params: Faulty(params.fail_at), FaultyParams)
    yield
    OBJECTIVES._entries.pop("faulty")


def test_a_failed_run_is_recorded_with_its_reason_and_the_others_finish(tmp_path, faulty_objective):
    spec = {"base": "base.yaml", "grid": {"objective": [{"kind": "curl", "negatives": 1}, {"kind": "faulty"}],
                                          "pretrain.lr": [1e-3, 1e3]},
            "set": {"pretrain.optimizer": "sgd", "encoder": {"kind": "linear", "out_dim": 4, "norm_bound": None}},
            **QUIET_REPORT}
    sweep = load_sweep(write_sweep(tmp_path, spec))
    summary = run_sweep(sweep, tmp_path / "out", InProcess())
    by_point = {(r.point["objective"], r.point["pretrain.lr"]): summary.statuses[r.run_id] for r in sweep.runs}
    assert by_point == {("kind=curl,negatives=1", 1e-3): "finished", ("kind=curl,negatives=1", 1e3): "failed",
                        ("kind=faulty", 1e-3): "failed", ("kind=faulty", 1e3): "failed"}
    errors = {(r.point["objective"], r.point["pretrain.lr"]): summary.errors[r.run_id]
              for r in sweep.runs if r.run_id in summary.errors}
    assert errors[("kind=curl,negatives=1", 1e3)].startswith("diverged at step ")  # non-finite from lr 1e3
    assert re.fullmatch(r"RuntimeError: injected fault \(at step [1-9]\d*, training\)", errors[("kind=faulty", 1e-3)])
    store = Store(tmp_path / "out" / "results.sqlite")
    try:
        results = store.results()
        diverged = next(r.run_id for r in sweep.runs if r.point == {"objective": "kind=curl,negatives=1",
                                                                      "pretrain.lr": 1e3})
        assert set(results[results.run == diverged].step) == {0}  # the checkpoint before the divergence is kept
        assert store.integrity() == "ok"
    finally:
        store.close()
    # resume: the failed runs stay failed (and are not rerun) unless asked
    again = run_sweep(sweep, tmp_path / "out", InProcess())
    assert again.seconds == {} and sorted(again.failed) == sorted(summary.failed)
    retried = run_sweep(sweep, tmp_path / "out", InProcess(), retry_failed=True)
    assert sorted(retried.seconds) == sorted(summary.failed)


def test_resume_skips_finished_runs_and_reruns_those_left_running(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, {**TWELVE, **QUIET_REPORT, "grid": {"objective.negatives": [1, 2]},
                                              "replicates": 1}))
    first = run_sweep(sweep, tmp_path / "out", InProcess())
    assert sorted(first.seconds) == sorted(r.run_id for r in sweep.runs)
    store = Store(tmp_path / "out" / "results.sqlite")
    before = store.results()
    store.start_run({"run_id": sweep.runs[0].run_id, "config_hash": "x", "config_json": "{}"})  # as if killed mid-run
    store.close()
    second = run_sweep(sweep, tmp_path / "out", InProcess())
    assert list(second.seconds) == [sweep.runs[0].run_id]
    store = Store(tmp_path / "out" / "results.sqlite")
    try:
        after = store.results()
    finally:
        store.close()
    key = ["run", "step", "quantity", "negatives", "task_classes", "top_r", "adapter", "bound", "term"]
    assert after.sort_values(key).reset_index(drop=True).equals(before.sort_values(key).reset_index(drop=True))


def test_the_export_carries_replicate_and_swept_fields(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, {**TWELVE, **QUIET_REPORT, "grid": {"objective.negatives": [1, 2]},
                                              "replicates": 1}))
    run_sweep(sweep, tmp_path / "out", InProcess())
    store = Store(tmp_path / "out" / "results.sqlite")
    try:
        table = sweep_results(store.results(), store.get_meta("sweep"))
    finally:
        store.close()
    assert list(table.columns[-2:]) == ["replicate", "objective.negatives"]
    runs = {r.run_id: r.point["objective.negatives"] for r in sweep.runs}
    assert all(runs[run] == k for run, k in zip(table["run"], table["objective.negatives"]))
    assert (tmp_path / "out" / "report.html").is_file() and (tmp_path / "out" / "results.csv").is_file()


def test_a_directory_of_another_sweep_or_a_single_run_is_refused(tmp_path):
    from preadapt.experiment.run import run

    sweep = load_sweep(write_sweep(tmp_path, {**TWELVE, **QUIET_REPORT, "grid": {}, "replicates": 1}))
    run({**SWEEP_BASE, "pretrain": {"tuples": 64, "epochs": 1, "batch_size": 64, "checkpoints": [0]}},
        out=tmp_path / "single")
    with pytest.raises(ConfigError, match="holds a single run, not a sweep"):
        run_sweep(sweep, tmp_path / "single", InProcess())
    run_sweep(sweep, tmp_path / "out", InProcess())
    other = load_sweep(write_sweep(tmp_path, {**TWELVE, "name": "other", "grid": {}, "replicates": 1}))
    with pytest.raises(ConfigError, match="holds the sweep 'twelve', not 'other'"):
        run_sweep(other, tmp_path / "out", InProcess())


def test_execute_turns_any_error_into_a_failed_outcome():
    outcome = execute(RunTask("broken", '{"world": {"kind": "gaussian", "classes": 1}}'))
    assert outcome.status == "failed" and outcome.rows == []
    assert outcome.error == "invalid config: world.classes: got 1; input should be greater than or equal to 2"


def test_an_in_process_run_does_not_leave_its_threads_to_the_next(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, {**TWELVE, "grid": {}, "replicates": 1}))  # threads: 1
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        executor = InProcess()
        executor.submit(RunTask(sweep.runs[0].run_id, sweep.runs[0].config.model_dump_json()))
        [outcome] = executor.wait(timeout=0)
        assert outcome.status == "finished" and outcome.provenance["threads"] == 1  # the run used its own
        assert torch.get_num_threads() == 2  # and the driver's count is back
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("baseline, message", [
    ({"objective.negativs": 1}, "report.baseline.objective.negativs: not an axis; allowed: objective.negatives"),
    ({"objective.negatives": 3}, "report.baseline.objective.negatives: got 3; allowed: 1, 2, 4"),
])
def test_a_baseline_names_an_axis_and_one_of_its_values(tmp_path, baseline, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_sweep(write_sweep(tmp_path, {**TWELVE, "report": {"baseline": baseline}}))
    assert load_sweep(write_sweep(tmp_path, {**TWELVE, "report": {"baseline": {"objective.negatives": 2}}})).baseline


@pytest.mark.slow
def test_a_pool_worker_killed_mid_run_loses_the_runs_in_flight_and_a_fresh_pool_takes_the_next(tmp_path, monkeypatch):
    import os
    import signal

    from preadapt.experiment.executors import LOST, LocalPool
    from preadapt.experiment.testing import GATE_VARIABLE

    sweep = load_sweep(write_sweep(tmp_path, {**TWELVE, "grid": {"objective.negatives": [1, 2]}, "replicates": 1}))
    first, second = (RunTask(r.run_id, r.config.model_dump_json()) for r in sweep.runs)
    gates = Gates(tmp_path / "gates")  # each worker holds its run until released: both are mid-run when one dies
    monkeypatch.setenv(GATE_VARIABLE, str(gates.folder))  # inherited by the workers the pool spawns
    pool = LocalPool(2)
    try:
        pool.submit(first)
        pool.submit(second)
        wait_until(lambda: gates.held("run") == {first.run_id, second.run_id}, "both runs held in their workers")
        # kill the first worker the pool spawned, as the out-of-memory killer would. (Python's pool watches a
        # worker that a later submit spawned only from its next wake-up, a result or a submit: while both
        # runs are held none comes, and that worker's death would go unseen.)
        os.kill(next(iter(pool._pool._processes)), signal.SIGKILL)
        outcomes = []

        def collected(count: int) -> bool:
            outcomes.extend(pool.wait(timeout=0.5))
            return len(outcomes) >= count

        wait_until(lambda: collected(2), "both runs' outcomes")
        # the broken pool returns both runs as lost (not failed): the driver gives each one more try
        assert len(outcomes) == 2 and {o.run_id for o in outcomes} == {first.run_id, second.run_id}
        assert {o.status for o in outcomes} == {LOST} and outcomes[0].error.startswith("worker process died")
        gates.release(f"run-{second.run_id}")
        pool.submit(second)
        wait_until(lambda: collected(3), "the resubmitted run's outcome")
        assert len(outcomes) == 3 and outcomes[2].run_id == second.run_id and outcomes[2].status == "finished"
    finally:
        pool.shutdown(cancel=True)


class Flaky:
    """An executor whose first outcome of each run is "lost" (a broken pool), then the real one."""

    capacity, shares_registry, shares_files = 2, True, True

    def __init__(self, lose_twice: set[str] = frozenset()) -> None:
        self.inner, self.seen, self.lose_twice = InProcess(), {}, lose_twice

    def submit(self, task):
        self.seen[task.run_id] = self.seen.get(task.run_id, 0) + 1
        self.inner.submit(task)

    def wait(self, timeout):
        from preadapt.experiment.executors import LOST, RunOutcome

        outcomes = self.inner.wait(timeout)
        return [RunOutcome(o.run_id, LOST, "worker process died (test)")
                if self.seen[o.run_id] == 1 or o.run_id in self.lose_twice else o for o in outcomes]

    def shutdown(self, cancel=False):
        self.inner.shutdown(cancel)


def test_a_lost_run_is_run_once_more_and_fails_only_if_lost_again(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, {**TWELVE, **QUIET_REPORT, "grid": {"objective.negatives": [1, 2]},
                                              "replicates": 1}))
    unlucky = sweep.runs[1].run_id
    executor = Flaky(lose_twice={unlucky})
    summary = run_sweep(sweep, tmp_path / "out", executor)
    assert executor.seen == {r.run_id: 2 for r in sweep.runs}
    assert summary.statuses == {sweep.runs[0].run_id: "finished", unlucky: "failed"}
    assert summary.errors[unlucky] == "worker process died (test)"


def test_a_second_driver_on_the_same_directory_is_refused(tmp_path):
    from preadapt.experiment.sweep import _lock

    sweep = load_sweep(write_sweep(tmp_path, {**TWELVE, **QUIET_REPORT, "grid": {}, "replicates": 1}))
    held = _lock(tmp_path / "out")
    try:
        with pytest.raises(ConfigError, match="another preadapt sweep is running in"):
            run_sweep(sweep, tmp_path / "out", InProcess())
    finally:
        held.close()
    assert run_sweep(sweep, tmp_path / "out", InProcess()).finished  # released: it runs
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="exists and is not a directory"):
        run_sweep(sweep, tmp_path / "file", InProcess())


def test_user_components_are_refused_by_executors_in_other_processes(tmp_path, faulty_objective):
    from preadapt.experiment.executors import LocalPool

    sweep = load_sweep(write_sweep(tmp_path, {**TWELVE, "grid": {"objective": [{"kind": "faulty"}]}}))
    with pytest.raises(ConfigError, match="objective.kind: 'faulty' is registered in this process only"):
        run_sweep(sweep, tmp_path / "out", LocalPool(2))
    assert not (tmp_path / "out").exists()


def test_zip_positions_must_differ_and_null_values_get_a_label(tmp_path):
    spec = {**TWELVE, "grid": {"encoder.norm_bound": [None, 5.0]},
            "zip": {"world.classes": [4, 4, 6], "evaluate.task_classes": [[2], [2, 3], [2]]}}
    sweep = load_sweep(write_sweep(tmp_path, spec))
    assert {r.point["encoder.norm_bound"] for r in sweep.runs} == {"null", 5.0}
    assert {r.point["world.classes"] for r in sweep.runs} == {"4, [2]", "4, [2, 3]", "6, [2]"}  # 4 repeats
    with pytest.raises(ConfigError, match=r"zip: two positions give the same values of world.classes, evaluate"):
        load_sweep(write_sweep(tmp_path, {**spec, "zip": {"world.classes": [4, 4], "evaluate.task_classes": [[2], [2]]}}))


# ---------------------------------------------------------------------------------------------------
# runs that share a pretraining


class NoSharedFiles(InProcess):
    """InProcess whose runs are treated as not seeing the driver's files: each run trains its own."""

    shares_files = False


SHARING = {"name": "sharing", "base": "base.yaml", "replicates": 2,
           "grid": {"task.severity": [0.0, 0.5, 1.0], "evaluate.probe_shots": [4, 6]}, **QUIET_REPORT}


def test_runs_that_share_a_pretraining_train_once_and_give_the_rows_of_training_again(tmp_path, monkeypatch):
    """Three severities × two shot counts × two seeds: 12 runs, 2 pretrainings of 6 runs each. Shared, each
    pretraining is computed once and replayed five times; the rows equal, bit for bit, those of the runs
    that each trained their own; the kept pretrainings are removed when every run has finished."""
    import importlib

    import pandas as pd

    run_module = importlib.import_module("preadapt.experiment.run")  # the package exports a function of that name
    trained = []
    real = run_module.pretrain

    def counting(*args, **kwargs):
        trained.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "pretrain", counting)
    base = {**SWEEP_BASE, "task": {"kind": "covariate", "severity": 0.0}}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    sweep = load_sweep(write_sweep(tmp_path / "a", SHARING, base))
    assert len({r.config.pretraining_hash() for r in sweep.runs}) == 2 and len(sweep.runs) == 12
    shared = run_sweep(sweep, tmp_path / "a" / "out", InProcess())
    assert len(trained) == 2 and sorted(set(shared.statuses.values())) == ["finished"]
    assert not (tmp_path / "a" / "out" / "pretrained").exists()
    alone = run_sweep(load_sweep(write_sweep(tmp_path / "b", SHARING, base)), tmp_path / "b" / "out", NoSharedFiles())
    assert len(trained) == 2 + 12 and sorted(set(alone.statuses.values())) == ["finished"]
    keys = ["run", "step", "quantity", "negatives", "block_size", "task_classes", "top_r", "adapter", "shots", "split",
            "bound", "term"]
    first, second = (pd.read_csv(tmp_path / name / "out" / "results.csv").sort_values(keys).reset_index(drop=True)
                     for name in ("a", "b"))
    pd.testing.assert_frame_equal(first, second)


def test_a_kept_pretraining_that_does_not_fit_is_trained_again(tmp_path):
    """read_pretraining takes only a file of this format whose steps are the run's (all of them, or a prefix
    before a divergence); anything else (another grid's checkpoints, a broken file) means: train."""
    from preadapt.experiment.run import read_pretraining, write_pretraining

    path = tmp_path / "pretrained" / "p.pt"
    state = [{"w": torch.ones(2)}, {"w": torch.zeros(2)}]
    assert read_pretraining(path, [0, 5]) is None  # nothing kept yet
    write_pretraining(path, [0, 5], state, [{}, {}], "finished", None)
    kept = read_pretraining(path, [0, 5])
    assert kept["steps"] == [0, 5] and torch.equal(kept["encoder"][1]["w"], torch.zeros(2))
    assert read_pretraining(path, [0, 5, 10]) is None and read_pretraining(path, [0]) is None
    write_pretraining(path, [0], state[:1], [{}], "failed", "diverged at step 3")
    assert read_pretraining(path, [0, 5])["error"] == "diverged at step 3"  # the steps before a divergence
    path.write_bytes(b"not a checkpoint")
    assert read_pretraining(path, [0, 5]) is None
