"""The results store: one SQLite database per run (or sweep) directory (DESIGN.md section 3).

Table ``runs`` holds one provenance row per run; table ``results`` the tidy rows; table ``timings``
where each run's wall time went (``TIMING_COLUMNS``: per stage, seconds and calls; ``preadapt.timing``);
table ``meta`` the schema version and, in a sweep directory, the sweep's plan (key ``sweep``). Every write is one
transaction and the journal is write-ahead (WAL), so a process killed at any moment leaves the
database whole: a run is finished or failed with all its rows (a failed run's are those of its
checkpoints before the failure), or marked running with none. Only one
process writes (a sweep's driver); workers hand their results to it.

A run's ``status`` is one of ``RUN_STATUSES``: ``running`` (recorded when it starts; a run still
marked running after its process is gone was killed, e.g. by SIGKILL), ``finished``, ``failed``
(``error`` says why and where), or ``interrupted`` (stopped by Ctrl-C or SIGTERM; ``error`` says at
which step and stage; its rows are those of the checkpoints evaluated before, without the
theorems' checks, which need every checkpoint). ``interrupted`` came with schema version 3, and a
store of version 2 is migrated when opened. A sweep never records ``interrupted``: it forgets the
runs it stops, and runs every run not finished (nor failed, unless asked) when it resumes.

The ``timings`` table came with schema version 4 (a store of version 3 gains it, empty, when opened).
A run's timings are written with its outcome (a failed or interrupted run's: the stages measured
until then) and replaced once its report is written (the report's own time included); running the
run again replaces them.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pandas as pd

SCHEMA_VERSION = 4

RUN_STATUSES = ("running", "finished", "failed", "interrupted")

ESTIMATE_COLUMNS = ["run", "step", "quantity", "value", "lower", "upper", "n", "level", "method"]
CONTEXT_COLUMNS = ["negatives", "block_size", "task_classes", "top_r", "adapter", "shots", "split", "bound", "status",
                   "term", "note"]
RESULT_COLUMNS = ESTIMATE_COLUMNS + CONTEXT_COLUMNS
INTEGER_COLUMNS = ["step", "n", "negatives", "block_size", "task_classes", "top_r", "shots"]
TEXT_COLUMNS = ["run", "quantity", "method", "adapter", "split", "bound", "status", "term", "note"]

TIMING_COLUMNS = ["run", "stage", "seconds", "calls"]
"""A run's stages (``preadapt.timing.Timings.rows``): ``stage`` a path (``evaluation/L_un`` is part
of ``evaluation``; the top-level stages do not overlap and add up to the run's wall time), ``seconds``
wall-clock, ``calls`` how often the stage was entered."""

RUN_COLUMNS = ["run_id", "config_hash", "config_json", "status", "started_at", "finished_at", "error",
               "preadapt_version", "git_revision", "torch_version", "threads", "device", "seed"]


def _runs_table(name: str) -> str:
    return f"""CREATE TABLE IF NOT EXISTS {name} (
    run_id TEXT PRIMARY KEY, config_hash TEXT NOT NULL, config_json TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ({", ".join(f"'{status}'" for status in RUN_STATUSES)})),
    started_at TEXT, finished_at TEXT, error TEXT, preadapt_version TEXT, git_revision TEXT,
    torch_version TEXT, threads INTEGER, device TEXT, seed INTEGER
);"""


_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
{_runs_table("runs")}
CREATE TABLE IF NOT EXISTS results (
    run TEXT NOT NULL REFERENCES runs(run_id), step INTEGER NOT NULL, quantity TEXT NOT NULL,
    value REAL NOT NULL, lower REAL NOT NULL, upper REAL NOT NULL, n INTEGER, level REAL NOT NULL,
    method TEXT NOT NULL, {", ".join(f"{c} {'TEXT' if c in TEXT_COLUMNS else 'INTEGER'}" for c in CONTEXT_COLUMNS)}
);
CREATE INDEX IF NOT EXISTS results_run ON results(run, step);
CREATE TABLE IF NOT EXISTS timings (
    run TEXT NOT NULL REFERENCES runs(run_id), stage TEXT NOT NULL, seconds REAL NOT NULL, calls INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS timings_run ON timings(run);
"""


def tidy_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows as the tidy results table: the columns of RESULT_COLUMNS, nullable integers."""
    frame = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    for column in INTEGER_COLUMNS:
        frame[column] = pd.array(frame[column], dtype="Int64")
    for column in ["value", "lower", "upper", "level"]:
        frame[column] = frame[column].astype("float64")
    for column in TEXT_COLUMNS:
        frame[column] = frame[column].astype("object").where(frame[column].notna(), None)
    return frame


def timings_frame(run_id: str, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A run's ``Timings.rows()`` as the store's ``timings`` table (``TIMING_COLUMNS``)."""
    frame = pd.DataFrame([dict(row, run=run_id) for row in rows], columns=TIMING_COLUMNS)
    return frame.astype({"seconds": "float64", "calls": "int64"})


class Store:
    """The SQLite store of one directory.

    >>> import tempfile, os
    >>> store = Store(os.path.join(tempfile.mkdtemp(), "results.sqlite"))
    >>> store.schema_version()
    4
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.connection = sqlite3.connect(self.path, timeout=30)
        self.connection.execute("PRAGMA journal_mode = WAL")
        with self.connection:
            self.connection.executescript(_SCHEMA)
            self.connection.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        if self.schema_version() == 2:
            self._migrate_from_2()
        if self.schema_version() == 3:  # version 4 adds the timings table, created above
            with self.connection:
                self.connection.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version' AND value = '3'")
        self.connection.execute("PRAGMA foreign_keys = ON")  # after the migration: it drops the parent table

    def _migrate_from_2(self) -> None:
        """Version 2 → 3: the runs table's CHECK gains ``interrupted``. SQLite cannot alter a CHECK,
        so the table is rebuilt (SQLite's documented procedure, foreign keys off), in one transaction."""
        connection = self.connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            if int(connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]) == 2:
                connection.execute(_runs_table("runs_v3"))
                columns = ", ".join(RUN_COLUMNS)
                connection.execute(f"INSERT INTO runs_v3 ({columns}) SELECT {columns} FROM runs")
                connection.execute("DROP TABLE runs")
                connection.execute("ALTER TABLE runs_v3 RENAME TO runs")
                connection.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
        except BaseException:
            connection.rollback()
            raise
        connection.commit()

    def schema_version(self) -> int:
        return int(self.connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])

    def start_run(self, provenance: dict[str, Any]) -> None:
        """Record a run as running (replacing an earlier attempt with the same id and its results)."""
        row = {column: provenance.get(column) for column in RUN_COLUMNS}
        row["status"] = "running"
        with self.connection:
            self.connection.execute("DELETE FROM results WHERE run = ?", (row["run_id"],))
            self.connection.execute("DELETE FROM timings WHERE run = ?", (row["run_id"],))
            self.connection.execute("DELETE FROM runs WHERE run_id = ?", (row["run_id"],))
            self.connection.execute(
                f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}) VALUES ({', '.join('?' * len(RUN_COLUMNS))})",
                [row[c] for c in RUN_COLUMNS])

    def get_meta(self, key: str) -> Any:
        """The JSON value stored under ``key`` in ``meta`` (None when absent)."""
        row = self.connection.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_meta(self, key: str, value: Any) -> None:
        with self.connection:
            self.connection.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def statuses(self) -> dict[str, str]:
        """run_id → status of every recorded run."""
        return dict(self.connection.execute("SELECT run_id, status FROM runs").fetchall())

    def forget_run(self, run_id: str) -> None:
        """Remove a run and its rows (a run interrupted before it finished: it is rerun on resume)."""
        with self.connection:
            self.connection.execute("DELETE FROM results WHERE run = ?", (run_id,))
            self.connection.execute("DELETE FROM timings WHERE run = ?", (run_id,))
            self.connection.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))

    def integrity(self) -> str:
        """SQLite's ``PRAGMA integrity_check``: "ok" for a sound database."""
        return "; ".join(row[0] for row in self.connection.execute("PRAGMA integrity_check").fetchall())

    def finish_run(self, run_id: str, results: pd.DataFrame, status: str, finished_at: str,
                   error: str | None = None, provenance: dict[str, Any] | None = None,
                   timings: list[dict[str, Any]] | None = None) -> None:
        """Write a run's results and its final status in one transaction; ``provenance`` (a worker's:
        threads, device, versions) updates the run's row; ``timings`` (``Timings.rows()``: records with
        stage, seconds, calls) replace the run's timings."""
        records = [tuple(None if pd.isna(v) else (int(v) if c in INTEGER_COLUMNS else v)
                         for c, v in zip(RESULT_COLUMNS, row))
                   for row in results[RESULT_COLUMNS].itertuples(index=False, name=None)]
        with self.connection:
            self.connection.executemany(
                f"INSERT INTO results ({', '.join(RESULT_COLUMNS)}) VALUES ({', '.join('?' * len(RESULT_COLUMNS))})",
                records)
            updates = {key: value for key, value in (provenance or {}).items()
                       if key in RUN_COLUMNS and key not in ("run_id", "status", "finished_at", "error")}
            updates.update(status=status, finished_at=finished_at, error=error)
            self.connection.execute(f"UPDATE runs SET {', '.join(f'{key} = ?' for key in updates)} WHERE run_id = ?",
                                    [*updates.values(), run_id])
            if timings is not None:
                self._replace_timings(run_id, timings)

    def write_timings(self, run_id: str, timings: list[dict[str, Any]]) -> None:
        """Replace a recorded run's timings (records with stage, seconds, calls: ``Timings.rows()``).

        >>> import tempfile, os
        >>> store = Store(os.path.join(tempfile.mkdtemp(), "results.sqlite"))
        >>> store.start_run({"run_id": "r", "config_hash": "h", "config_json": "{}"})
        >>> store.write_timings("r", [{"stage": "pretraining", "seconds": 1.5, "calls": 1}])
        >>> store.write_timings("r", [{"stage": "pretraining", "seconds": 2.0, "calls": 1},
        ...                           {"stage": "evaluation", "seconds": 3.0, "calls": 2}])
        >>> store.timings()
          run        stage  seconds  calls
        0   r  pretraining      2.0      1
        1   r   evaluation      3.0      2
        """
        with self.connection:
            self._replace_timings(run_id, timings)

    def _replace_timings(self, run_id: str, timings: list[dict[str, Any]]) -> None:
        self.connection.execute("DELETE FROM timings WHERE run = ?", (run_id,))
        self.connection.executemany("INSERT INTO timings (run, stage, seconds, calls) VALUES (?, ?, ?, ?)",
                                    [(run_id, str(row["stage"]), float(row["seconds"]), int(row["calls"]))
                                     for row in timings])

    def timings(self, run_id: str | None = None) -> pd.DataFrame:
        """The ``timings`` table (``TIMING_COLUMNS``), of one run or of all, each run's stages in the
        order they were first opened."""
        where, parameters = ("WHERE run = ?", (run_id,)) if run_id is not None else ("", ())
        return pd.read_sql_query(f"SELECT {', '.join(TIMING_COLUMNS)} FROM timings {where} ORDER BY rowid",
                                 self.connection, params=parameters)

    def results(self) -> pd.DataFrame:
        rows = self.connection.execute(f"SELECT {', '.join(RESULT_COLUMNS)} FROM results ORDER BY rowid").fetchall()
        return tidy_frame([dict(zip(RESULT_COLUMNS, row)) for row in rows])

    def runs(self) -> pd.DataFrame:
        return pd.read_sql_query(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs ORDER BY started_at", self.connection)

    def close(self) -> None:
        self.connection.close()
