"""Shared test set-up: one torch thread per test worker (the suite runs with two workers on two cores),
and what is computed once per test session for the tests of every worker."""

import fcntl
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch

torch.set_num_threads(int(os.environ.get("PREADAPT_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def once_per_session(tmp_path_factory):
    """``once(name, make, read)``: ``make(folder)`` runs once in the whole test session, whichever worker
    process asks first (the others wait on a file lock), into a folder of the session's temporary
    directory that every worker shares; each caller gets ``read(folder)``, read under the lock."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's: each worker's basetemp is a folder of it

    def once(name, make, read):
        folder = root / f"once-{name}"
        with open(root / f"once-{name}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if not (folder / ".made").exists():  # a make that raised left no mark: made again
                    shutil.rmtree(folder, ignore_errors=True)
                    folder.mkdir()
                    make(folder)
                    (folder / ".made").touch()
                return read(folder)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    return once


@dataclass(frozen=True)
class FinishedRun:
    """A run read back from its directory: its status, its rows (as its store holds them: the frame the
    run returned, to the last bit) and the directory (config, store, report)."""

    status: str
    results: pd.DataFrame
    out: Path


@pytest.fixture(scope="session")
def demo_run(once_per_session) -> FinishedRun:
    """The demo preset run as ``preadapt run --preset demo`` runs it (its files and report), once per
    session: test_run.py checks its bounds and test_browser.py reads its report."""
    import preadapt
    from preadapt.experiment.store import Store

    def read(folder):
        store = Store(folder / "demo" / "results.sqlite")
        try:
            [status] = store.statuses().values()
            return FinishedRun(status, store.results(), folder / "demo")
        finally:
            store.close()

    return once_per_session("demo", lambda folder: preadapt.run(preadapt.load_config(preset="demo"),
                                                                 out=folder / "demo"), read)
