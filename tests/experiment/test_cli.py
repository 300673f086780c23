"""The command line driven as a user would: its exit code, what it prints and writes.

A run as a user starts it, and every test of a signal, runs in a subprocess (``preadapt``); the tests
of what a command says and writes (the one-line refusals, dry runs, exports, a run started again) call
the same entry point in this process (``command_line.cli``: the same exit code, stdout and stderr,
without a fresh interpreter's imports for each command)."""

import json
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
import yaml

from command_line import cli
from conftest import DIVERGING, ONE_THREAD, TINY, Gates, signal_and_wait, wait_until
from preadapt.experiment.config import load_config
from preadapt.experiment.run import run_id_of


def preadapt(*args, cwd):
    env = {**os.environ, "COLUMNS": "200", **ONE_THREAD}
    return subprocess.run([sys.executable, "-m", "preadapt.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=300)


TERMINAL_CTRL_C = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); sys.argv[0] = 'preadapt'; "
                   "from preadapt.cli import main; main()")
"""``preadapt`` with SIGINT handled as at a terminal, even where this test's process inherited it
ignored (a background job of a non-interactive shell): Python keeps an ignored SIGINT ignored."""


@pytest.fixture
def tiny_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


@pytest.mark.parametrize("args, message", [
    (["--set", "objective.negatives=0"], "objective.negatives: got 0"),
    (["--set", "world.classes=1"], "world.classes: got 1"),
    (["--set", "world.noise=-1"], "world.noise: got -1"),
    (["--set", "world.kind=banana"], "world.kind: got 'banana'; allowed: finite, gaussian, hypercube, topics"),
    (["--set", "world.classes"], "--set 'world.classes': expected FIELD.PATH=VALUE"),
    (["missing.yaml"], "config file not found: missing.yaml"),
    (["--preset", "nope"], "--preset: got 'nope'; allowed:"),
    (["--set", "pretrain.epoch=3"], "pretrain.epoch: unknown field; did you mean `epochs`? (see docs/config.md"),
    (["--set", "epochs=3"], "epochs: unknown field; did you mean `pretrain.epochs`?"),
    (["--set", "world.colour=red"], "world.colour: unknown field (see docs/config.md for the allowed fields)"),
    (["--set", "evaluate.adapters=[{kind: nope}]"], "evaluate.adapters.0.kind: got 'nope'; allowed: finetune, linear"),
    (["--set", "evaluate.adapters=[{kind: finetune, c0: -0.5}]"], "evaluate.adapters.0.c0: got -0.5; c0 must be"),
    (["--set", "evaluate.shots=[100000]"], "evaluate.shots: got 100000; allowed: 1.."),
    (["--set", "task={kind: subspace, rank: 1000}"], "task.rank: got 1000; allowed: 1.."),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, tiny_file, args, message):
    if args[0] == "--set":
        args = [str(tiny_file), *args]
    result = cli("run", *args, "--out", "out", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "runs").exists()


def test_run_then_results_then_report(tmp_path, tiny_file):
    result = preadapt("run", str(tiny_file), "--out", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "bound_slack" in result.stdout and "holds" in result.stdout
    assert (tmp_path / "out" / "report.html").is_file()
    # a non-empty directory is refused without --force
    again = cli("run", str(tiny_file), "--out", "out", cwd=tmp_path)
    assert again.returncode == 2 and "--force" in again.stderr
    exported = cli("results", "out", "--format", "json", cwd=tmp_path)
    rows = json.loads(exported.stdout)
    assert {"run", "step", "quantity", "value", "lower", "upper", "n", "level", "method"} <= set(rows[0])
    (tmp_path / "out" / "report.html").unlink()
    rebuilt = cli("report", "out", cwd=tmp_path)
    assert rebuilt.returncode == 0 and (tmp_path / "out" / "report.html").is_file()
    assert 'id="time"' in (tmp_path / "out" / "report.html").read_text()  # the stored timings, shown again


def test_default_output_directory_and_dry_run(tmp_path, tiny_file):
    dry = cli("run", str(tiny_file), "--dry-run", "--set", "seed=9", cwd=tmp_path)
    assert dry.returncode == 0
    assert yaml.safe_load(dry.stdout)["seed"] == 9
    assert not (tmp_path / "runs").exists()
    real = cli("run", str(tiny_file), cwd=tmp_path)
    assert real.returncode == 0 and (tmp_path / "runs" / "tiny" / "results.csv").is_file()


def test_a_failed_run_exits_1_and_is_recorded(tmp_path):
    path = tmp_path / "boom.yaml"
    path.write_text(yaml.safe_dump(DIVERGING))
    result = cli("run", str(path), "--out", "out", cwd=tmp_path)
    assert result.returncode == 1
    assert "diverged at step 2" in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "out" / "results.sqlite").is_file()


def test_presets_lists_one_line_each(tmp_path):
    result = cli("presets", cwd=tmp_path)
    assert result.returncode == 0
    assert any(line.startswith("demo ") for line in result.stdout.splitlines())


@pytest.mark.parametrize("change, note, fitted", [
    ("world.classes=5", "# defaults resolved: evaluate.task_classes [2, 10] → [2] (world has 5 classes)",
     lambda config: config["evaluate"]["task_classes"] == [2] and config["world"]["classes"] == 5),
    ("pretrain.epochs=0", "# defaults resolved: pretrain.checkpoints [0, 50, 200] → [0] (training has 0 steps",
     lambda config: config["pretrain"]["checkpoints"] == [0]),
])
def test_defaults_fit_the_world_and_the_training(tmp_path, change, note, fitted):
    result = cli("run", "--set", change, "--dry-run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert any(line.startswith(note) for line in result.stdout.splitlines()), result.stdout
    assert fitted(yaml.safe_load(result.stdout))  # the notes are YAML comments: the output is still a config
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("dry_run", [True, False])
@pytest.mark.parametrize("change, message", [
    (["--set", "encoder={kind: cnn}"], "encoder.kind: got 'cnn', which needs real-valued images"),
    (["--set", "world={kind: topics, vocab: 100}", "--set", "encoder={kind: bow, vocab: 50}"],
     "encoder.vocab: got 50; allowed: ≥ 100"),
    (["--set", "world={kind: topics}", "--set", "encoder={kind: mlp}"],
     "encoder.kind: got 'mlp', which needs real-valued inputs"),
])
def test_an_encoder_that_does_not_fit_the_world_exits_2_before_anything_is_written(tmp_path, change, message, dry_run):
    result = cli("run", *change, "--out", "out", *(["--dry-run"] if dry_run else []), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"preadapt: {message}"), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("text, message", [
    ("name: mine\nworld:\n  classes: 5\n dim: 3\n",
     "config.yaml: not valid YAML at line 4, column 2: expected <block end>, but found '<block mapping start>' "
     "(in the block mapping that starts at line 1, column 1)"),
    ("name: mine\npretrain: {epochs: 2\n",
     "config.yaml: not valid YAML at line 3, column 1: expected ',' or '}', but got '<stream end>' "
     "(in the flow mapping that starts at line 2, column 11)"),
    ("", "config.yaml: the file is empty (no fields); write the fields to change, or `{}` to take every default"),
    ("# every field left at its default\n", "config.yaml: the file is empty (no fields)"),
])
def test_a_broken_or_empty_yaml_file_exits_2_with_one_line_and_writes_nothing(tmp_path, text, message):
    (tmp_path / "config.yaml").write_text(text)
    result = cli("run", "config.yaml", "--out", "out", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"preadapt: {message}") and result.stderr.count("\n") == 1, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


def test_an_explicitly_empty_mapping_takes_every_default(tmp_path):
    (tmp_path / "config.yaml").write_text("{}\n")
    result = cli("run", "config.yaml", "--dry-run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["name"] == "run"


def _unwritable(tmp_path, kind):
    """An --out that cannot be created: under a file (for everyone), in a read-only folder (for a
    user other than root), in sysfs (even for root); skipped where this machine lets it be made."""
    if kind == "read-only folder":
        (tmp_path / "locked").mkdir(mode=0o500)
    out = {"under a file": "config.yaml/out", "read-only folder": "locked/out", "sysfs": "/sys/preadapt-test-out"}[kind]
    try:
        os.mkdir(tmp_path / out)
    except OSError:
        return out
    os.rmdir(tmp_path / out)
    pytest.skip(f"{out} can be made here")


@pytest.mark.parametrize("kind", ["under a file", "read-only folder", "sysfs"])
@pytest.mark.parametrize("command", ["run", "sweep"])
def test_an_unwritable_out_exits_2_with_one_line_and_creates_nothing(tmp_path, tiny_file, kind, command):
    (tmp_path / "config.yaml").write_text("name: x\n")
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({"base": str(tiny_file), "grid": {"objective.negatives": [1]}}))
    out = _unwritable(tmp_path, kind)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    if command == "sweep":
        result = cli("sweep", "sweep.yaml", "--out", out, cwd=tmp_path)
    else:
        result = cli("run", str(tiny_file), "--out", out, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"preadapt: --out: cannot write {out} ("), result.stderr
    assert lines[0].endswith("); choose a directory you can write to")
    assert "Traceback" not in result.stderr + result.stdout
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before and not (tmp_path / out).exists()


def _run_rows(db_path):
    with closing(sqlite3.connect(db_path)) as db:
        runs = db.execute("SELECT run_id, status, error FROM runs").fetchall()
        steps = sorted({row[0] for row in db.execute("SELECT step FROM results")})
    return runs, steps


@pytest.mark.parametrize("stop", [pytest.param(signal.SIGINT, id="SIGINT"),
                                  pytest.param(signal.SIGTERM, id="SIGTERM", marks=pytest.mark.slow)])
def test_ctrl_c_during_a_run_says_where_and_what_was_kept_and_the_same_command_starts_it_over(
        tmp_path, tiny_file, stop, drivers):
    # the run is held by a test gate (preadapt.experiment.testing) as it reaches step 3's checkpoint,
    # step 0 evaluated: the signal lands in that state by construction
    gates = Gates(tmp_path / "gates", release=["checkpoint-0"])
    log = tmp_path / "run.log"
    with open(log, "w") as output:
        process = subprocess.Popen([sys.executable, "-c", TERMINAL_CTRL_C, "run", "tiny.yaml", "--out", "out"],
                                   cwd=tmp_path, env=gates.env, stdout=subprocess.DEVNULL, stderr=output)
    drivers.append(process)
    wait_until(lambda: (gates.folder / "checkpoint-3.reached").exists(), "the run held at step 3", process, log)
    signal_and_wait(process, stop, "the run")
    stderr = log.read_text()
    assert process.returncode == 130, stderr
    run_id = run_id_of(load_config(tiny_file))
    rerun = "preadapt run tiny.yaml --out out"
    assert stderr.splitlines() == [
        f"preadapt: interrupted at step 3 of 8 while evaluating the checkpoint; kept out/config.yaml, out/checkpoints/ "
        f"(step 0) and out/results.sqlite (run {run_id} marked interrupted, with the rows of step 0); start it "
        f"again, no --force needed: {rerun}"]
    assert _run_rows(tmp_path / "out" / "results.sqlite") == (
        [(run_id, "interrupted", "interrupted at step 3 of 8 while evaluating the checkpoint")], [0])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["checkpoints", "config.yaml", "results.sqlite"]
    assert [p.name for p in (tmp_path / "out" / "checkpoints").iterdir()] == ["step_000000.pt"]
    if stop == signal.SIGTERM:
        return
    exported = cli("results", "out", cwd=tmp_path)  # the readers of the store say what the rows are
    assert exported.returncode == 0 and exported.stdout.count("\n") > 1
    assert exported.stderr == (f"preadapt: note: run {run_id} did not finish (interrupted at step 3 of 8 while "
                               f"evaluating the checkpoint); its rows are those of step 0\n")
    again = cli(*shlex.split(rerun)[1:], cwd=tmp_path)  # the printed command, as it is
    assert again.returncode == 0, again.stderr
    assert _run_rows(tmp_path / "out" / "results.sqlite") == ([(run_id, "finished", None)], [0, 3, 8])
