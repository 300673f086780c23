"""The 12-run sweep under ``--backend ray`` on 2 CPUs gives results identical to the local backend."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from conftest import TWELVE_QUIET_REPORT, sorted_results, write_sweep
from preadapt.experiment.executors import ray_resources
from preadapt.experiment.store import Store

ray = pytest.importorskip("ray", reason="the optional extra 'ray' is not installed (pip install 'preadapt[ray]')")


@pytest.mark.slow
def test_ray_on_two_cpus_matches_the_local_backend(tmp_path, twelve_reference):
    path = write_sweep(tmp_path, TWELVE_QUIET_REPORT)  # twelve_reference: the same sweep, local, in-process
    command = [sys.executable, "-m", "preadapt.cli", "sweep", str(path), "--out", "ray", "--backend", "ray",
               "--workers", "2"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    distributed = Store(tmp_path / "ray" / "results.sqlite")
    try:
        assert sorted(distributed.statuses().values()) == ["finished"] * 12
        assert distributed.statuses().keys() == twelve_reference.statuses.keys()
        pd.testing.assert_frame_equal(sorted_results(distributed.results()), sorted_results(twelve_reference.results),
                                      check_exact=True)
        runs = distributed.runs()
        assert set(runs["threads"]) == {1}  # num_cpus = threads = 1 per task
    finally:
        distributed.close()


def test_a_run_asks_ray_for_its_threads_and_a_gpu_only_for_device_cuda():
    assert ray_resources('{"threads": null, "device": "auto"}') == {"num_cpus": 1, "num_gpus": 0}
    assert ray_resources('{"threads": 3, "device": "cuda"}') == {"num_cpus": 3, "num_gpus": 1}
