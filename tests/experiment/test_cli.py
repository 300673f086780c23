"""The command line driven as a user would: a subprocess, its exit code, what it prints and writes."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from conftest import DIVERGING, TINY


def preadapt(*args, cwd):
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "preadapt.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.fixture
def tiny_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


@pytest.mark.parametrize("args, message", [
    (["--set", "objective.negatives=0"], "objective.negatives: got 0"),
    (["--set", "world.classes=1"], "world.classes: got 1"),
    (["--set", "world.noise=-1"], "world.noise: got -1"),
    (["--set", "world.kind=banana"], "world.kind: got 'banana'; allowed: finite, gaussian, topics"),
    (["--set", "world.classes"], "--set 'world.classes': expected FIELD.PATH=VALUE"),
    (["missing.yaml"], "config file not found: missing.yaml"),
    (["--preset", "nope"], "--preset: got 'nope'; allowed:"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, tiny_file, args, message):
    if args[0] == "--set":
        args = [str(tiny_file), *args]
    result = preadapt("run", *args, "--out", "out", cwd=tmp_path)
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
    again = preadapt("run", str(tiny_file), "--out", "out", cwd=tmp_path)
    assert again.returncode == 2 and "--force" in again.stderr
    exported = preadapt("results", "out", "--format", "json", cwd=tmp_path)
    rows = json.loads(exported.stdout)
    assert {"run", "step", "quantity", "value", "lower", "upper", "n", "level", "method"} <= set(rows[0])
    (tmp_path / "out" / "report.html").unlink()
    rebuilt = preadapt("report", "out", cwd=tmp_path)
    assert rebuilt.returncode == 0 and (tmp_path / "out" / "report.html").is_file()


def test_default_output_directory_and_dry_run(tmp_path, tiny_file):
    dry = preadapt("run", str(tiny_file), "--dry-run", "--set", "seed=9", cwd=tmp_path)
    assert dry.returncode == 0
    assert yaml.safe_load(dry.stdout)["seed"] == 9
    assert not (tmp_path / "runs").exists()
    real = preadapt("run", str(tiny_file), cwd=tmp_path)
    assert real.returncode == 0 and (tmp_path / "runs" / "tiny" / "results.csv").is_file()


def test_a_failed_run_exits_1_and_is_recorded(tmp_path):
    path = tmp_path / "boom.yaml"
    path.write_text(yaml.safe_dump(DIVERGING))
    result = preadapt("run", str(path), "--out", "out", cwd=tmp_path)
    assert result.returncode == 1
    assert "diverged at step 2" in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "out" / "results.sqlite").is_file()


def test_presets_lists_one_line_each(tmp_path):
    result = preadapt("presets", cwd=tmp_path)
    assert result.returncode == 0
    assert any(line.startswith("demo ") for line in result.stdout.splitlines())


@pytest.mark.parametrize("change, note, fitted", [
    ("world.classes=5", "# defaults resolved: evaluate.task_classes [2, 10] → [2] (world has 5 classes)",
     lambda config: config["evaluate"]["task_classes"] == [2] and config["world"]["classes"] == 5),
    ("pretrain.epochs=0", "# defaults resolved: pretrain.checkpoints [0, 50, 200] → [0] (training has 0 steps",
     lambda config: config["pretrain"]["checkpoints"] == [0]),
])
def test_defaults_fit_the_world_and_the_training(tmp_path, change, note, fitted):
    result = preadapt("run", "--set", change, "--dry-run", cwd=tmp_path)
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
    result = preadapt("run", *change, "--out", "out", *(["--dry-run"] if dry_run else []), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"preadapt: {message}"), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not any(tmp_path.iterdir())
