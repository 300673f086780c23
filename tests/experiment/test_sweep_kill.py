"""The acceptance kill test: a 12-run sweep whose driver is killed with SIGKILL five times and
restarted each time ends with exactly 12 finished runs, results identical to an uninterrupted sweep,
and a sound database; no finished run is ever run again.

Each kill lands at a state reached by construction: test gates (``preadapt.experiment.testing``)
hold the driver or its workers at named points, and the test kills the driver once the gates and
the store show the state it wants: during start-up, before the store exists; with 3 runs finished
and 2 held in their workers; inside the transaction that records a run's outcome; inside the one
that marks a run running; with 10 finished and 2 held. No verdict depends on timing or load; the
waits have a deadline only against a hang."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from contextlib import closing

import pandas as pd
import pytest

from conftest import TWELVE_QUIET_REPORT, Gates, sorted_results, wait_until, write_sweep
from preadapt.experiment.store import Store
from preadapt.experiment.sweep import load_sweep


def _runs(db_path) -> pd.DataFrame:
    """The runs table (empty before the schema is written), each run with its count of result rows."""
    columns = ["run_id", "status", "started_at", "finished_at", "rows"]
    if not db_path.is_file():
        return pd.DataFrame(columns=columns)
    with closing(sqlite3.connect(db_path, timeout=30)) as db:
        try:
            rows = db.execute("SELECT run_id, status, started_at, finished_at, "
                              "(SELECT count(*) FROM results WHERE run = runs.run_id) FROM runs ORDER BY run_id")
            return pd.DataFrame(rows.fetchall(), columns=columns)
        except sqlite3.OperationalError:  # killed before the schema was written
            return pd.DataFrame(columns=columns)


def _finished(db_path) -> set[str]:
    """The finished runs; a failed run fails the test at once (it would never finish)."""
    runs = _runs(db_path)
    if (runs["status"] == "failed").any():
        with closing(sqlite3.connect(db_path, timeout=30)) as db:
            errors = db.execute("SELECT run_id, error FROM runs WHERE status = 'failed'").fetchall()
        pytest.fail(f"runs failed: {errors}")
    return set(runs.loc[runs["status"] == "finished", "run_id"])


def _integrity(db_path) -> str:
    with closing(sqlite3.connect(db_path, timeout=30)) as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


@pytest.mark.slow
def test_a_sweep_killed_five_times_loses_and_repeats_nothing(tmp_path, drivers, twelve_reference):
    path = write_sweep(tmp_path, TWELVE_QUIET_REPORT)
    run_ids = [planned.run_id for planned in load_sweep(path).runs]

    db = tmp_path / "killed" / "results.sqlite"
    command = [sys.executable, "-m", "preadapt.cli", "sweep", str(path), "--out", "killed", "--workers", "2"]
    row_writes = [f"{kind}-{run_id}" for run_id in run_ids for kind in ("start", "finish")]
    first_seen: dict[str, tuple[str, str]] = {}  # run_id → (started_at, finished_at) when first seen finished

    def start(attempt: int, hold: set[str], release_runs: bool = False):
        """A driver whose gates hold the points ``hold`` and every run until the test passes it."""
        points = ["open", *row_writes, *([f"run-{run_id}" for run_id in run_ids] if release_runs else [])]
        gates = Gates(tmp_path / "gates" / str(attempt), release=[p for p in points if p not in hold])
        log = tmp_path / f"driver-{attempt}.log"
        with open(log, "w") as output:
            process = subprocess.Popen(command, cwd=tmp_path, env=gates.env, stdout=output, stderr=subprocess.STDOUT)
        drivers.append(process)
        return gates, process, log

    def check_store(gates: Gates, finished_before: set[str]) -> pd.DataFrame:
        """What holds after every kill and at the end."""
        runs = _runs(db)
        assert set(runs["status"]) <= {"finished", "running"}
        assert (runs.loc[runs["status"] == "running", "rows"] == 0).all(), runs  # a run is whole or has no rows
        if db.is_file():
            assert _integrity(db) == "ok"
        for row in runs[runs["status"] == "finished"].itertuples():
            when = (row.started_at, row.finished_at)
            assert first_seen.setdefault(row.run_id, when) == when  # a finished run is never run again,
        assert not gates.reached("run") & finished_before  # nor even handed to a worker
        return runs

    def kill(process, gates: Gates, finished_before: set[str]) -> pd.DataFrame:
        process.kill()  # SIGKILL to the driver: no handler runs; its workers exit when they see it gone
        process.wait()
        return check_store(gates, finished_before)

    # 1. During start-up: the driver holds before it opens its store, so no schema is written yet.
    gates, process, log = start(0, hold={"open"})
    wait_until(lambda: (gates.folder / "open.reached").exists(), "the driver at its start-up gate", process, log)
    runs = kill(process, gates, set())
    assert runs.empty and not db.exists()

    # 2. Three runs finished, the next two held in their workers (the store says running).
    gates, process, log = start(1, hold=set())
    wait_until(lambda: gates.pass_runs(3) and len(_finished(db)) == 3 and len(gates.held("run")) == 2,
               "3 runs finished and 2 held in the workers", process, log)
    runs = kill(process, gates, set())
    assert len(_finished(db)) == 3 and set(runs.loc[runs["status"] == "running", "run_id"]) == gates.held("run")

    # 3. Inside the transaction that records a run's outcome: its rows written, its status not yet.
    finished = _finished(db)
    gates, process, log = start(2, hold={f"finish-{run_id}" for run_id in run_ids})
    wait_until(lambda: gates.pass_runs(1) and len(gates.held("finish")) == 1 and len(gates.held("run")) == 1,
               "a run's outcome being recorded, another run held in its worker", process, log)
    [recording] = gates.held("finish")
    runs = kill(process, gates, finished)
    assert _finished(db) == finished  # the transaction left nothing: the run is running, with no rows
    assert runs.set_index("run_id").loc[[recording, *gates.held("run")], "status"].tolist() == ["running"] * 2

    # 4. Inside the transaction that marks the first run running: in plan order, a run left running by
    # the last kill, its row deleted and the new one not yet written.
    finished, before = _finished(db), _runs(db)
    gates, process, log = start(3, hold={f"start-{run_id}" for run_id in run_ids})
    wait_until(lambda: len(gates.held("start")) == 1, "the first run being recorded as running", process, log)
    runs = kill(process, gates, finished)
    assert gates.held("start") <= set(before.loc[before["status"] == "running", "run_id"])
    pd.testing.assert_frame_equal(runs, before)  # rolled back: not a row changed

    # 5. Ten runs finished, the last two held in their workers.
    finished = _finished(db)
    gates, process, log = start(4, hold=set())
    wait_until(lambda: gates.pass_runs(7) and len(_finished(db)) == 10 and len(gates.held("run")) == 2,
               "10 runs finished and 2 held in the workers", process, log)
    runs = kill(process, gates, finished)
    assert set(runs.loc[runs["status"] == "running", "run_id"]) == gates.held("run")

    # The last restart, nothing held, runs the two left and no other.
    finished = _finished(db)
    gates, process, log = start(5, hold=set(), release_runs=True)
    try:
        assert process.wait(timeout=600) == 0, log.read_text()[-3000:]
    except subprocess.TimeoutExpired:
        pytest.fail("the test hung: the last restart did not finish in 600 s")
    check_store(gates, finished)
    assert gates.reached("run") == set(run_ids) - finished and len(finished) == 10

    killed = Store(db)
    try:
        assert killed.integrity() == "ok"
        assert sorted(killed.statuses().values()) == ["finished"] * 12
        assert killed.statuses().keys() == twelve_reference.statuses.keys()  # uninterrupted, in one process
        pd.testing.assert_frame_equal(sorted_results(killed.results()), sorted_results(twelve_reference.results),
                                      check_exact=True)
    finally:
        killed.close()
