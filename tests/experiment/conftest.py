import os
import subprocess
import time
from dataclasses import dataclass

import pandas as pd
import pytest

from preadapt.experiment.testing import GATE_VARIABLE

TINY = {
    "name": "tiny",
    "seed": 3,
    "device": "cpu",
    "world": {"kind": "gaussian", "classes": 5, "dim": 4, "warp": True},
    "encoder": {"kind": "mlp", "hidden": [8], "out_dim": 4, "norm_bound": 3.0},
    "objective": {"kind": "curl", "loss": "logistic", "negatives": 2, "block_size": 2},
    "pretrain": {"tuples": 256, "epochs": 2, "batch_size": 64, "checkpoints": [0, 3]},
    "evaluate": {"samples": 600, "mean_samples": 60, "test_per_class": 12, "task_classes": [2, 3], "top_r": [1, 2],
                 "probe_tasks": 4, "probe_shots": 10, "probe_val": 10, "star_samples": 30, "bootstrap": 10},
}

DIVERGING = {
    **TINY,
    "name": "boom",
    "encoder": {"kind": "linear", "out_dim": 4, "norm_bound": None},
    "objective": {"kind": "curl", "loss": "hinge"},
    "pretrain": {"tuples": 512, "epochs": 5, "batch_size": 64, "optimizer": "sgd", "lr": 1e30, "checkpoints": [0]},
}


@pytest.fixture
def tiny():
    return {key: (dict(value) if isinstance(value, dict) else value) for key, value in TINY.items()}


SWEEP_BASE = {**TINY, "name": "base", "threads": 1,
              "objective": {"kind": "curl", "loss": "logistic", "negatives": 1, "block_size": 1},
              "pretrain": {"tuples": 256, "epochs": 2, "batch_size": 64, "checkpoints": [0]}}
"""A run of about a second: the base of the test sweeps (one torch thread, so that every backend
computes bit for bit the same)."""

TWELVE = {"name": "twelve", "base": "base.yaml", "grid": {"objective.negatives": [1, 2, 4], "objective.block_size": [1, 2]},
          "replicates": 2}
"""The 12-run sweep of the acceptance tests: 3 × 2 points × 2 replicates."""


QUIET_REPORT = {"report": {"quantities": ["L_un[negatives=1]"]}}
"""A sweep report of one quantity, for the sweeps of tests that assert on the runs and the store, not on
the report's figures: the report is still written (its runs table, statuses and errors included), in a
quarter of the time of the default four quantities' (0.8 s instead of 3 s for TWELVE). A report is not
part of a run's config: the run ids and rows are those of the sweep without it."""

TWELVE_QUIET_REPORT = {**TWELVE, **QUIET_REPORT}
"""TWELVE with a report of one quantity: the same 12 runs."""


def write_sweep(folder, spec, base=None):
    """Write base.yaml and sweep.yaml into ``folder``; return the sweep file's path."""
    import yaml

    (folder / "base.yaml").write_text(yaml.safe_dump(base or SWEEP_BASE))
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def sorted_results(frame):
    """A results table in a canonical row order (runs complete in any order)."""
    keys = ["run", "step", "quantity", "negatives", "block_size", "task_classes", "top_r", "adapter", "shots", "split",
            "bound", "term"]
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)


ONE_THREAD = {"OMP_NUM_THREADS": os.environ.get("PREADAPT_TEST_THREADS", "1"),
              "MKL_NUM_THREADS": os.environ.get("PREADAPT_TEST_THREADS", "1")}
"""The torch threads of a process a test starts: as many as the test's worker has (tests/conftest.py: one,
the suite runs two workers on two cores). With torch's default of one per core, a run in a subprocess
contends with the other worker for the cores, and its evaluation, whose spin-waiting threads wait on
each other, takes ten times as long (0.6 s becomes 7 s for TINY); no test's verdict depends on the count."""


@dataclass(frozen=True)
class Reference:
    """The 12-run sweep (TWELVE) run uninterrupted in one process: what the acceptance tests compare with."""

    statuses: dict[str, str]
    results: pd.DataFrame


@pytest.fixture(scope="session")
def twelve_reference(once_per_session) -> Reference:
    """TWELVE run once per test session, in-process, and read by every worker: the kill test and the Ray
    test compare with the same sweep, bit for bit, so it is computed by whichever needs it first (the
    other worker waits and reads the store it wrote), not once per test."""
    from preadapt.experiment.executors import InProcess
    from preadapt.experiment.store import Store
    from preadapt.experiment.sweep import load_sweep, run_sweep

    def read(folder):
        store = Store(folder / "out" / "results.sqlite")
        try:
            return Reference(store.statuses(), store.results())
        finally:
            store.close()

    return once_per_session("twelve", lambda folder: run_sweep(load_sweep(write_sweep(folder, TWELVE)), folder / "out",
                                                               InProcess()), read)


class Gates:
    """A directory of test gates (``preadapt.experiment.testing``) as a test drives it: every point
    holds its process until the test releases it, beforehand or when the point is reached."""

    def __init__(self, folder, release=()):
        self.folder = folder
        folder.mkdir(parents=True)
        self.release(*release)

    @property
    def env(self) -> dict[str, str]:
        """The environment of a process whose gates are these."""
        return {**os.environ, **ONE_THREAD, GATE_VARIABLE: str(self.folder)}

    def release(self, *points: str) -> None:
        for point in points:
            (self.folder / f"{point}.go").touch()

    def reached(self, kind: str) -> set[str]:
        """The run ids whose point ``<kind>-<run_id>`` was reached (kind: run, start or finish)."""
        return {path.name[len(kind) + 1:-len(".reached")] for path in self.folder.glob(f"{kind}-*.reached")}

    def held(self, kind: str) -> set[str]:
        """The run ids held at ``<kind>-<run_id>`` now: reached and not released."""
        return {run_id for run_id in self.reached(kind) if not (self.folder / f"{kind}-{run_id}.go").exists()}

    def pass_runs(self, count: int) -> bool:
        """Release the runs held at their run gate, in id order, until ``count`` have passed it in all;
        whether they have. Call it again to pass those that reach the gate later."""
        released = self.reached("run") - self.held("run")
        for run_id in sorted(self.held("run"))[:max(0, count - len(released))]:
            self.release(f"run-{run_id}")
        return len(self.reached("run") - self.held("run")) >= count


@pytest.fixture
def drivers():
    """The driver processes a test starts (append them): any still running at its end is killed, so
    that a failed test leaves no driver held at a gate (its workers exit when they see it gone)."""
    started = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_until(condition, what: str, process=None, log=None, seconds: float = 300.0) -> None:
    """Poll until ``condition()`` holds. The deadline only guards against a hang (the states waited
    for are held by gates, never raced): its failure says that the test hung. A driver that exits
    first, or a traceback in the output of the driver and its workers (``log``), fails it at once."""
    end = time.monotonic() + seconds
    while not condition():
        output = log.read_text() if log is not None and log.is_file() else ""
        if process is not None and process.poll() is not None:
            pytest.fail(f"the driver exited ({process.returncode}) while the test waited for {what}:\n{output[-3000:]}")
        if "Traceback" in output:  # the driver or a worker crashed: waiting on would only hang
            pytest.fail(f"the driver or a worker raised while the test waited for {what}:\n{output[-3000:]}")
        if time.monotonic() > end:
            pytest.fail(f"the test hung: still waiting for {what} after {seconds:.0f} s")
        time.sleep(0.05)


def signal_and_wait(process, sig: int, what: str, seconds: float = 300.0) -> None:
    """Send ``sig`` to ``process`` and wait for it to exit; the deadline only guards against a hang."""
    process.send_signal(sig)
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the test hung: {what} did not stop within {seconds:.0f} s of the signal")


def write_legacy_store(path, version: int) -> None:
    """A results.sqlite as an older preadapt wrote it (schema ``version`` 2 or 3: version 3 added the run
    status ``interrupted``), holding one finished run ``old`` (seed 3) with one ``tau`` row: for the
    migration tests."""
    import sqlite3

    statuses = "'finished', 'failed', 'running'" + (", 'interrupted'" if version >= 3 else "")
    with sqlite3.connect(path) as db:
        db.executescript(f"""
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE runs (run_id TEXT PRIMARY KEY, config_hash TEXT NOT NULL, config_json TEXT NOT NULL,
                status TEXT NOT NULL CHECK (status IN ({statuses})), started_at TEXT,
                finished_at TEXT, error TEXT, preadapt_version TEXT, git_revision TEXT, torch_version TEXT,
                threads INTEGER, device TEXT, seed INTEGER);
            CREATE TABLE results (run TEXT NOT NULL REFERENCES runs(run_id), step INTEGER NOT NULL,
                quantity TEXT NOT NULL, value REAL NOT NULL, lower REAL NOT NULL, upper REAL NOT NULL, n INTEGER,
                level REAL NOT NULL, method TEXT NOT NULL, negatives INTEGER, block_size INTEGER,
                task_classes INTEGER, top_r INTEGER, adapter TEXT, shots INTEGER, split TEXT, bound TEXT,
                status TEXT, term TEXT, note TEXT);
            INSERT INTO meta VALUES ('schema_version', '{version}');
            INSERT INTO runs (run_id, config_hash, config_json, status, seed) VALUES ('old', 'h', '{{}}', 'finished', 3);
            INSERT INTO results (run, step, quantity, value, lower, upper, level, method)
                VALUES ('old', 0, 'tau', 0.5, 0.5, 0.5, 1.0, 'exact');
        """)
    db.close()
