"""The acceptance kill test: a 12-run sweep killed with SIGKILL at 5 random moments and restarted
each time ends with exactly 12 finished runs, results identical to an uninterrupted sweep, and a
sound database."""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
import time

import pandas as pd
import pytest

from conftest import TWELVE, sorted_results, write_sweep
from preadapt.experiment.executors import InProcess
from preadapt.experiment.store import Store
from preadapt.experiment.sweep import load_sweep, run_sweep


def _statuses(db_path) -> list[str]:
    if not db_path.is_file():
        return []
    with sqlite3.connect(db_path, timeout=30) as db:
        try:
            return [row[0] for row in db.execute("SELECT status FROM runs")]
        except sqlite3.OperationalError:  # killed before the schema was written
            return []


def _finished_at(db_path) -> dict[str, tuple[str, str]]:
    """run_id → (started_at, finished_at) of the finished runs: a rerun would change them."""
    if not db_path.is_file():
        return {}
    with sqlite3.connect(db_path, timeout=30) as db:
        try:
            rows = db.execute("SELECT run_id, started_at, finished_at FROM runs WHERE status = 'finished'")
            return {run_id: (start, end) for run_id, start, end in rows.fetchall()}
        except sqlite3.OperationalError:
            return {}


@pytest.mark.slow
def test_a_sweep_killed_five_times_loses_and_repeats_nothing(tmp_path):
    path = write_sweep(tmp_path, TWELVE)
    reference = tmp_path / "reference"
    run_sweep(load_sweep(path), reference, InProcess())  # uninterrupted, in this process

    command = [sys.executable, "-m", "preadapt.cli", "sweep", str(path), "--out", "killed", "--workers", "2"]
    moments = random.Random(20261128)
    seen, started = [], {}
    for kill in range(5):
        before = _statuses(tmp_path / "killed" / "results.sqlite").count("finished")
        process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if kill == 0:  # during start-up: imports, the store's schema, the plan
            time.sleep(moments.uniform(0.5, 3.0))
        else:  # a random moment after this restart has made progress: runs in flight, any transaction
            deadline = time.monotonic() + 120
            while (_statuses(tmp_path / "killed" / "results.sqlite").count("finished") == before
                   and process.poll() is None and time.monotonic() < deadline):
                time.sleep(0.05)
            time.sleep(moments.uniform(0.0, 0.8))
        process.kill()  # SIGKILL to the driver, mid-flight: no handler runs
        process.wait()
        statuses = _statuses(tmp_path / "killed" / "results.sqlite")
        assert set(statuses) <= {"finished", "running"}
        seen.append(statuses.count("finished"))
        for run_id, when in _finished_at(tmp_path / "killed" / "results.sqlite").items():
            assert started.setdefault(run_id, when) == when  # a finished run is never run again
    assert all(0 < finished < 12 for finished in seen[1:]), seen  # those kills landed while runs were in flight
    final = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr
    for run_id, when in _finished_at(tmp_path / "killed" / "results.sqlite").items():
        assert started.setdefault(run_id, when) == when

    killed = Store(tmp_path / "killed" / "results.sqlite")
    expected = Store(reference / "results.sqlite")
    try:
        assert killed.integrity() == "ok"
        assert sorted(killed.statuses().values()) == ["finished"] * 12
        assert killed.statuses().keys() == expected.statuses().keys()
        pd.testing.assert_frame_equal(sorted_results(killed.results()), sorted_results(expected.results()),
                                      check_exact=True)
    finally:
        killed.close()
        expected.close()
