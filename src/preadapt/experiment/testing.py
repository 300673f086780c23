"""A test hook, not a feature: gates that hold a sweep's driver or worker, or a single run, at a
named point until a test releases it, so that a test acts (kills the driver, sends Ctrl-C) at a
state it reached by construction rather than by timing.

With the environment variable ``PREADAPT_TEST_GATE`` set to a directory, a process reaching point
``P`` writes its pid to ``<dir>/P.reached`` and waits until ``<dir>/P.go`` exists. Unset (always,
outside the tests), every gate does nothing. The points:

- ``open``: the sweep's driver, before it opens its store (no schema written yet);
- ``run-<run_id>``: a worker (the driver itself in-process), before it computes the run; the store
  says running;
- ``start-<run_id>``: the driver inside the transaction that marks the run running, its earlier row
  (of a run left running) deleted and the new one not yet written;
- ``finish-<run_id>``: the driver inside the transaction that records the run's outcome, its rows
  written and its status not yet;
- ``checkpoint-<step>``: a single run (``preadapt run``, ``preadapt.run``; not a sweep's runs) as it
  reaches the checkpoint at training step ``step``, before saving and evaluating it; the store says
  running and holds nothing of this checkpoint.

>>> import tempfile
>>> from unittest import mock
>>> folder = Path(tempfile.mkdtemp())
>>> (folder / "open.go").touch()
>>> with mock.patch.dict(os.environ, {GATE_VARIABLE: str(folder)}):
...     gate("open")  # released beforehand: passes at once, leaving its mark
>>> (folder / "open.reached").read_text() == str(os.getpid())
True
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from pathlib import Path

GATE_VARIABLE = "PREADAPT_TEST_GATE"

_RUN_ROW_WRITES = [("start", re.compile(r"INSERT INTO runs \([^)]*\) VALUES \('([^']*)'", re.IGNORECASE)),
                   ("finish", re.compile(r"UPDATE runs SET .* WHERE run_id = '([^']*)'\s*$", re.IGNORECASE | re.DOTALL))]
"""The store's statements that write a run's row (experiment/store.py), as SQLite traces them (the
parameters written in): the last statement of start_run's and of finish_run's transaction."""


def gate(point: str) -> None:
    """Hold at ``point`` until ``<dir>/<point>.go`` exists (the module's docstring); nothing when
    ``PREADAPT_TEST_GATE`` is unset."""
    folder = os.environ.get(GATE_VARIABLE)
    if not folder:
        return
    folder = Path(folder)
    partial = folder / f".{point}.{os.getpid()}"
    partial.write_text(str(os.getpid()))
    os.replace(partial, folder / f"{point}.reached")  # whole or absent: a test may read the pid at once
    while not (folder / f"{point}.go").exists():
        time.sleep(0.01)


def gate_run_row_writes(connection: sqlite3.Connection) -> None:
    """Gate the points ``start-<run_id>`` and ``finish-<run_id>``, inside the store's transactions on
    ``connection``; nothing when ``PREADAPT_TEST_GATE`` is unset."""
    if not os.environ.get(GATE_VARIABLE):
        return

    def trace(statement: str) -> None:
        for name, pattern in _RUN_ROW_WRITES:
            match = pattern.match(statement)
            if match:
                gate(f"{name}-{match.group(1)}")

    connection.set_trace_callback(trace)

