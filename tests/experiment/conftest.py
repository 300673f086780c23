import os
import subprocess
import time

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
        return {**os.environ, GATE_VARIABLE: str(self.folder)}

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
