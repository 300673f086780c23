"""``preadapt sweep`` driven as a user would: bad sweep files, failures, Ctrl-C and resume, export.

A sweep with pool workers, and every test of a signal, runs in a subprocess; the commands whose subject is
what they say and write (refusals, exports, a resumed sweep) run in this process (``command_line.cli``)."""

from __future__ import annotations

import io
import json
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing

import pandas as pd
import pytest

from command_line import cli
from conftest import QUIET_REPORT, TWELVE, Gates, signal_and_wait, wait_until, write_sweep
from preadapt.experiment.sweep import load_sweep
from test_cli import TERMINAL_CTRL_C, preadapt

FOUR = {**TWELVE, "name": "four", "grid": {"objective.negatives": [1, 2]}, "replicates": 2}


@pytest.mark.parametrize("change, message", [
    ({"grid": {"objective.negativs": [1, 2]}},
     "grid.objective.negativs: unknown field; did you mean `negatives`? (see docs/config.md for the allowed fields)"),
    ({"gird": {"objective.negatives": [1, 2]}}, "sweep.yaml: gird: unknown field; did you mean `grid`?"),
    ({"grid": {"objective.negatives": []}}, "grid.objective.negatives: an empty list; give at least one value"),
    ({"grid": {}, "zip": {"world.classes": [4, 5], "objective.negatives": [1, 2, 3]}},
     "zip: the lists differ in length (world.classes has 2, objective.negatives has 3)"),
])
def test_a_bad_sweep_file_exits_2_with_one_line_before_any_run(tmp_path, change, message):
    path = write_sweep(tmp_path, {**TWELVE, **change})
    result = cli("sweep", str(path), "--out", "out", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f"preadapt: {message}" or (
        result.stderr.startswith(f"preadapt: {message}") and result.stderr.count("\n") == 1), result.stderr
    assert not (tmp_path / "out").exists()  # nothing written, nothing run


@pytest.mark.parametrize("args, message", [
    (["--backend", "spark"], "--backend: got 'spark'; allowed: local, ray"),
    (["--workers", "0"], "--workers: got 0; allowed: 1 or more"),
    (["--address", "127.0.0.1:6379"], "--address: only for --backend ray"),
])
def test_bad_options_exit_2(tmp_path, args, message):
    path = write_sweep(tmp_path, FOUR)
    result = cli("sweep", str(path), *args, "--out", "out", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip() == f"preadapt: {message}", result.stderr


def test_failed_runs_exit_1_naming_them_and_the_rest_finish(tmp_path):
    spec = {**FOUR, **QUIET_REPORT, "grid": {"pretrain.lr": [1e-3, 1e3]}, "replicates": 1,
            "set": {"pretrain.optimizer": "sgd", "encoder": {"kind": "linear", "out_dim": 4, "norm_bound": None}}}
    path = write_sweep(tmp_path, spec)
    result = preadapt("sweep", str(path), "--out", "out", "--workers", "2", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("preadapt: 1 of 2 runs failed (four-") and "diverged at step" in line
    assert line.endswith(f"rerun them with: preadapt sweep {path} --out out --workers 2 --retry-failed")
    with sqlite3.connect(tmp_path / "out" / "results.sqlite") as db:
        statuses = sorted(row[0] for row in db.execute("SELECT status FROM runs"))
        assert statuses == ["failed", "finished"]
    # the export: the tidy table across runs, with the swept field as a column
    exported = pd.read_csv(io.StringIO(cli("results", "out", cwd=tmp_path).stdout))
    assert set(exported["pretrain.lr"]) == {1e-3, 1e3} and "replicate" in exported.columns
    diverged = exported[exported["pretrain.lr"] == 1e3]  # its checkpoint before the divergence, marked
    assert len(diverged) and set(diverged["run_status"]) == {"failed"}
    records = json.loads(cli("results", "out", "--format", "json", cwd=tmp_path).stdout)
    assert len(records) == len(exported)
    rebuilt = cli("report", "out", cwd=tmp_path)
    assert rebuilt.returncode == 0 and "diverged at step" in (tmp_path / "out" / "report.html").read_text()
    # resumed: it says what it keeps, runs nothing, and still names the failed run
    resumed = cli("sweep", str(path), "--out", "out", cwd=tmp_path)
    assert resumed.returncode == 1 and "1 of 2 runs failed" in resumed.stderr, resumed.stderr
    assert resumed.stdout.splitlines()[0] == (
        "sweep four: 1 finished run kept, 1 failed run skipped (--retry-failed runs it again), 0 to run")


def _statuses(db_path) -> list[str]:
    if not db_path.is_file():
        return []
    with closing(sqlite3.connect(db_path, timeout=30)) as db:
        try:
            return [row[0] for row in db.execute("SELECT status FROM runs")]
        except sqlite3.OperationalError:  # the schema is not written yet
            return []


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_stops_cleanly_says_how_to_resume_and_resume_finishes(tmp_path, workers, drivers):
    path = write_sweep(tmp_path, {**TWELVE, **QUIET_REPORT, "replicates": 1})
    runs = [planned.run_id for planned in load_sweep(path).runs]
    # Ctrl-C lands with one run finished and `workers` runs held at their gate (in-process, the driver
    # itself): the gates of preadapt.experiment.testing hold that state until the test acts
    gates = Gates(tmp_path / "gates", release=["open", *(f"{kind}-{run_id}" for run_id in runs
                                                          for kind in ("start", "finish"))])
    command = [sys.executable, "-c", TERMINAL_CTRL_C, "sweep", str(path), "--out", "out", "--workers", str(workers)]
    log = tmp_path / "driver.log"
    with open(log, "w") as output:
        process = subprocess.Popen(command, cwd=tmp_path, env=gates.env, stdout=subprocess.DEVNULL, stderr=output)
    drivers.append(process)
    wait_until(lambda: gates.pass_runs(1) and _statuses(tmp_path / "out" / "results.sqlite").count("finished") == 1
               and len(gates.held("run")) == workers, f"1 run finished and {workers} held", process, log)
    signal_and_wait(process, signal.SIGINT, "the driver")
    stderr = log.read_text()
    assert process.returncode == 130, stderr
    assert f"resume with: preadapt sweep {path} --out out --workers {workers}" in stderr
    assert _statuses(tmp_path / "out" / "results.sqlite") == ["finished"]  # the runs in flight were forgotten
    assert (tmp_path / "out" / "report.html").is_file()  # the report of what finished
    resumed = cli("sweep", str(path), "--out", "out", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.splitlines()[0] == "sweep twelve: 1 finished run kept, 5 to run"
    assert _statuses(tmp_path / "out" / "results.sqlite") == ["finished"] * 6
