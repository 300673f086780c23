"""Where a run's time went (``preadapt.timing``, the store's ``timings`` table): the stages are there,
they add up without overlapping, the training loop leaves out the checkpoints' evaluation, and the
table travels with a run's outcome into a single run's store and a sweep's.

No assertion here is about speed: the wall-clock checks compare measurements with each other, and the
exact ones run on a clock that advances only when a test says so."""

from __future__ import annotations

import importlib
import pickle
import sqlite3
import time
from functools import partial

import pytest

from preadapt.experiment.executors import InProcess, RunTask, execute
from preadapt.experiment.config import parse_config
from preadapt.experiment.run import run
from preadapt.experiment.store import TIMING_COLUMNS, Store
from preadapt.experiment.sweep import load_sweep, run_sweep
from preadapt.timing import Timings

from conftest import DIVERGING, SWEEP_BASE, write_sweep, write_legacy_store

run_module = importlib.import_module("preadapt.experiment.run")  # the package's `run` attribute is the function
TOP = ["start-up", "sampling", "pretraining", "evaluation", "bound checks", "storing", "other"]


def small(**changes):
    """A run of about a second: checkpoints 0 and the last (8)."""
    return {**SWEEP_BASE, "name": "timed", **changes}


def top_level(frame):
    return frame[~frame["stage"].str.contains("/")]


# ---------------------------------------------------------------- the Timings arithmetic


class Clock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_stages_nest_by_path_and_an_apart_stage_is_left_out_of_those_it_interrupts():
    clock = Clock()
    timings = Timings(clock=clock)
    clock.advance(1)  # set-up before any stage
    with timings.stage("pretraining"):
        clock.advance(2)
        with timings.stage("evaluation", apart=True):
            clock.advance(3)
            with timings.stage("L_un"):
                clock.advance(4)
                with timings.stage("bound checks", apart=True):  # apart inside apart: each counted once
                    clock.advance(5)
        clock.advance(6)
    timings.rest("start-up")
    seconds = {row["stage"]: row["seconds"] for row in timings.rows()}
    assert seconds == {"pretraining": 8, "evaluation": 7, "evaluation/L_un": 4, "bound checks": 5, "start-up": 1}
    assert sum(value for stage, value in seconds.items() if "/" not in stage) == timings.elapsed() == 21


def test_a_stage_that_raises_is_still_booked_and_counts_its_calls():
    clock = Clock()
    timings = Timings(clock=clock)
    for _ in range(3):
        with pytest.raises(ValueError), timings.stage("fit"):
            clock.advance(2)
            raise ValueError("boom")
    assert timings.rows() == [{"stage": "fit", "seconds": 6, "calls": 3}]


def test_rest_books_only_what_no_top_level_stage_covered():
    clock = Clock()
    timings = Timings(clock=clock)
    clock.advance(1)
    with timings.stage("sampling"):
        clock.advance(10)
    clock.advance(2)
    timings.rest("start-up")
    clock.advance(3)
    timings.rest("other")
    timings.rest("other")  # nothing new since: books 0 s
    assert timings.rows() == [{"stage": "sampling", "seconds": 10, "calls": 1},
                              {"stage": "start-up", "seconds": 3, "calls": 1},
                              {"stage": "other", "seconds": 3, "calls": 2}]


def test_a_stage_open_for_the_first_time_is_not_listed_yet():
    timings = Timings()
    with timings.stage("report"):
        assert timings.rows() == []
    assert [row["stage"] for row in timings.rows()] == ["report"]


# ---------------------------------------------------------------- a run's timings


def test_a_run_stores_every_stage_and_they_add_up_to_no_more_than_its_wall_time(tmp_path):
    written = {}

    def report(out, results, runs, config_yaml, *, title, timings=None):  # a writer that keeps what it got
        written["timings"] = timings
        return out / "report.html"

    started = time.perf_counter()
    result = run(small(), out=tmp_path / "run", report=report)
    wall = time.perf_counter() - started
    assert result.status == "finished"
    store = Store(tmp_path / "run" / "results.sqlite")
    try:
        stored = store.timings()
        assert list(stored.columns) == TIMING_COLUMNS and set(stored["run"]) == {result.run_id}
        assert store.timings(result.run_id).equals(stored) and store.timings("nobody").empty
    finally:
        store.close()
    assert stored.equals(result.timings)
    assert (stored["seconds"] >= 0).all() and (stored["calls"] >= 1).all()
    stages = set(stored["stage"])
    assert set(TOP) | {"report"} <= stages
    for part in ("L_pre", "L_pre_train", "L_un", "L_un_same", "L_un_diff + L_sup_mean", "s_f bootstrap", "adapters",
                 "adapters/task points", "adapters/mean", "adapters/linear", "adapters/L_adapt_star linear",
                 "full problem"):
        assert f"evaluation/{part}" in stages, part
    assert {"bound checks/every f", "bound checks/rademacher", "bound checks/theorems"} <= stages
    calls = dict(zip(stored["stage"], stored["calls"]))
    assert calls["evaluation"] == 2 and calls["bound checks/every f"] == 2  # checkpoints 0 and 8
    assert calls["pretraining"] == calls["sampling"] == calls["report"] == 1
    top = top_level(stored)
    # Containment, not speed: the stages are intervals of the same monotonic clock inside the bracketed
    # call, so at any load they add up to less than it; the sum's float rounding (~1e-15 s) is far below
    # the microseconds the call spends outside Timings' span.
    assert top["seconds"].sum() <= wall
    seconds = dict(zip(stored["stage"], stored["seconds"]))
    for parent in ("evaluation", "evaluation/adapters", "bound checks"):  # the parts lie within their stage
        parts = stored[stored["stage"].str.startswith(parent + "/") & (stored["stage"].str.count("/") == parent.count("/") + 1)]
        # disjoint sub-intervals of the parent's own interval: only float64 rounding of the sums can
        # exceed it, by about (number of parts)·eps·seconds ≈ 1e-14 s here; IEEE-754 arithmetic, so the
        # same bound on every CPU
        assert parts["seconds"].sum() <= seconds[parent] + 1e-9, parent
    # the writer saw the stages before it, not its own
    assert "report" not in set(written["timings"]["stage"]) and set(TOP) <= set(written["timings"]["stage"])


def test_without_a_directory_the_result_still_has_its_timings():
    result = run(small())
    assert result.out is None and set(TOP) - {"storing"} <= set(result.timings["stage"])
    assert "report" not in set(result.timings["stage"])


def test_pretraining_leaves_out_the_checkpoints_evaluation(tmp_path, monkeypatch):
    """On a clock that moves only inside the training loop (7 s), each evaluation (1000 s), each every-f
    check (5 s) and each checkpoint file (3 s), every stage is known exactly."""
    clock = Clock()
    monkeypatch.setattr(run_module, "Timings", partial(Timings, clock=clock))

    def advancing(function, seconds):
        def wrapped(*args, **kwargs):
            clock.advance(seconds)
            return function(*args, **kwargs)
        return wrapped

    def training(*args, **kwargs):  # 7 s of training, then the loop and its checkpoints (evaluated inside)
        clock.advance(7)
        return pretrain(*args, **kwargs)

    pretrain = run_module.pretrain
    monkeypatch.setattr(run_module, "pretrain", training)
    monkeypatch.setattr(run_module, "evaluate_encoder", advancing(run_module.evaluate_encoder, 1000))
    monkeypatch.setattr(run_module, "check_bounds", advancing(run_module.check_bounds, 5))
    monkeypatch.setattr(run_module, "_write_whole", advancing(run_module._write_whole, 3))
    result = run(small(), out=tmp_path / "run")
    seconds = dict(zip(result.timings["stage"], result.timings["seconds"]))
    assert seconds["pretraining"] == 7
    assert seconds["evaluation"] == 2000 and seconds["bound checks/every f"] == 10
    assert seconds["sampling"] == seconds["other"] == 0
    assert seconds["start-up"] == 3  # config.yaml, written before pretraining
    assert seconds["storing"] == 2 * 3 + 3  # the two checkpoints' files, then results.csv


def test_a_failed_run_keeps_the_stages_it_measured(tmp_path):
    result = run(DIVERGING, out=tmp_path / "run")
    assert result.status == "failed"
    store = Store(tmp_path / "run" / "results.sqlite")
    try:
        stages = set(store.timings(result.run_id)["stage"])
    finally:
        store.close()
    assert {"start-up", "sampling", "pretraining", "evaluation"} <= stages  # checkpoint 0 was evaluated


# ---------------------------------------------------------------- the store


def test_timings_are_replaced_when_a_run_is_recorded_again(tmp_path):
    store = Store(tmp_path / "results.sqlite")
    try:
        store.start_run({"run_id": "r", "config_hash": "h", "config_json": "{}"})
        store.start_run({"run_id": "s", "config_hash": "h", "config_json": "{}"})
        empty = store.results()
        store.finish_run("r", empty, "failed", "now", "boom", timings=[{"stage": "sampling", "seconds": 1.0, "calls": 1}])
        store.finish_run("s", empty, "finished", "now", timings=[{"stage": "sampling", "seconds": 9.0, "calls": 1}])
        store.start_run({"run_id": "r", "config_hash": "h", "config_json": "{}"})  # run again: its timings go
        assert store.timings("r").empty and len(store.timings("s")) == 1
        store.finish_run("r", empty, "finished", "now", timings=[{"stage": "sampling", "seconds": 2.0, "calls": 1},
                                                                 {"stage": "pretraining", "seconds": 3.0, "calls": 1}])
        store.write_timings("r", [{"stage": "sampling", "seconds": 2.0, "calls": 1},
                                  {"stage": "pretraining", "seconds": 3.0, "calls": 1},
                                  {"stage": "report", "seconds": 4.0, "calls": 1}])
        assert store.timings("r")["stage"].tolist() == ["sampling", "pretraining", "report"]
        store.forget_run("s")
        assert set(store.timings()["run"]) == {"r"}
        with pytest.raises(sqlite3.IntegrityError):  # only recorded runs have timings
            store.write_timings("nobody", [{"stage": "sampling", "seconds": 1.0, "calls": 1}])
    finally:
        store.close()


def test_a_store_of_schema_version_3_gains_the_timings_table(tmp_path):
    path = tmp_path / "results.sqlite"
    write_legacy_store(path, 3)
    store = Store(path)
    try:
        assert store.schema_version() == 4 and store.integrity() == "ok"
        assert store.statuses() == {"old": "finished"} and store.results()["quantity"].tolist() == ["tau"]
        assert store.timings().empty and list(store.timings().columns) == TIMING_COLUMNS
        store.write_timings("old", [{"stage": "report", "seconds": 0.5, "calls": 1}])
    finally:
        store.close()
    again = Store(path)  # opened once more: nothing to migrate, the rows stay
    try:
        assert again.schema_version() == 4 and again.timings()["stage"].tolist() == ["report"]
    finally:
        again.close()


# ---------------------------------------------------------------- sweeps


def test_a_workers_timings_travel_back_with_its_outcome():
    config = parse_config(small())
    outcome = execute(RunTask("timed-run", config.model_dump_json()))
    assert outcome.status == "finished"
    assert set(TOP) - {"storing"} <= {row["stage"] for row in outcome.timings}
    assert pickle.loads(pickle.dumps(outcome)).timings == outcome.timings  # what a pool or Ray hands back
    top = sum(row["seconds"] for row in outcome.timings if "/" not in row["stage"])
    assert top <= outcome.seconds  # the worker's wall time, measured around the same calls


def test_a_sweep_store_has_the_timings_of_every_run(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, {"name": "timed", "base": "base.yaml",
                                              "grid": {"objective.negatives": [1, 2]}}))
    summary = run_sweep(sweep, tmp_path / "out", InProcess())
    assert sorted(summary.statuses.values()) == ["finished", "finished"]
    store = Store(tmp_path / "out" / "results.sqlite")
    try:
        timings = store.timings()
    finally:
        store.close()
    assert set(timings["run"]) == {planned.run_id for planned in sweep.runs}
    for run_id, rows in timings.groupby("run"):
        assert {"start-up", "sampling", "pretraining", "evaluation", "bound checks"} <= set(rows["stage"]), run_id
        assert (rows["seconds"] >= 0).all()
