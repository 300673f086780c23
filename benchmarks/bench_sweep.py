"""Sweep executors: wall time of one 12-run sweep in-process, in a local pool of 2 workers, and on
a local Ray with 2 CPUs, measured in one process (issue 5; docs/sweeps.md).

Each run uses one torch thread (``threads: 1``), so a 2-worker pool can use both cores of this
machine; the ratios say what the pool and Ray buy over the in-process executor, start-up
(process spawn, torch import, Ray start) included, and the driver's own share of the in-process
wall time (store writes, the report) is printed as wall time minus the runs' compute time. Every
executor's results are checked identical to the in-process ones.

Run: ``.venv/bin/python benchmarks/bench_sweep.py [--quick] [--repeats N]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from _common import add_threads_argument, machine, median, set_threads, spread, summary

from preadapt.api import run_sweep  # the driver with the sweep report writer: the wall time includes the report
from preadapt.experiment.executors import InProcess, LocalPool, RayExecutor
from preadapt.experiment.store import Store
from preadapt.experiment.sweep import SweepSpec, expand

BASE = {
    "name": "bench", "seed": 0, "device": "cpu", "threads": 1,
    "world": {"kind": "gaussian", "classes": 8, "dim": 8, "warp": True},
    "encoder": {"kind": "mlp", "hidden": [32], "out_dim": 8, "norm_bound": 5.0},
    "objective": {"kind": "curl", "loss": "logistic", "negatives": 1, "block_size": 1},
    "pretrain": {"tuples": 2000, "epochs": 3, "batch_size": 128, "checkpoints": [0]},
    "evaluate": {"samples": 2000, "mean_samples": 100, "test_per_class": 50, "task_classes": [2, 8], "top_r": [1],
                 "probe_tasks": 20, "probe_shots": 20, "probe_val": 20, "star_samples": 50, "bootstrap": 20},
}


def sweep(quick: bool):
    spec = SweepSpec(name="bench", base=BASE, grid={"objective.negatives": [1, 2, 4], "objective.block_size": [1, 2]},
                     replicates=1 if quick else 2)
    return expand(spec, "bench", Path("."))


def timed(plan, make_executor) -> tuple[float, float, pd.DataFrame]:
    """Wall seconds of the whole sweep (executor start-up included), the runs' compute seconds, results."""
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        summary_ = run_sweep(plan, Path(folder) / "out", make_executor())
        wall = time.perf_counter() - start
        store = Store(Path(folder) / "out" / "results.sqlite")
        try:
            results = store.results()
        finally:
            store.close()
    keys = ["run", "step", "quantity", "negatives", "block_size", "task_classes", "top_r", "adapter", "shots",
            "bound", "term"]
    return wall, sum(summary_.seconds.values()), results.sort_values(keys, kind="stable").reset_index(drop=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 runs instead of 12, one repeat")
    parser.add_argument("--repeats", type=int, default=None)
    add_threads_argument(parser)  # the driver's; every run sets its own (threads: 1)
    args = parser.parse_args()
    set_threads(args.threads)
    repeats = args.repeats or (1 if args.quick else 2)
    plan = sweep(args.quick)
    print(machine(), f"runs={len(plan.runs)} repeats={repeats}")
    executors = {"in-process": InProcess, "pool-2": lambda: LocalPool(2), "ray-2": lambda: RayExecutor(workers=2)}
    try:
        import ray  # noqa: F401
    except ImportError:
        executors.pop("ray-2")
        print("ray not installed: the Ray executor is not measured")
    walls: dict[str, list[float]] = {name: [] for name in executors}
    computes: dict[str, list[float]] = {name: [] for name in executors}
    reference = None
    for _ in range(repeats):  # interleaved: in-process, pool, ray, in-process, ...
        for name, make in executors.items():
            wall, compute, results = timed(plan, make)
            walls[name].append(wall)
            computes[name].append(compute)
            if reference is None:
                reference = results
            else:
                pd.testing.assert_frame_equal(results, reference, check_exact=True)
    for name in executors:
        print(f"{name:11s} wall {spread(walls[name])}; runs' compute {median(computes[name]):.3g} s")
    base = median(walls["in-process"])
    overhead = base - median(computes["in-process"])
    print(f"driver overhead in-process (wall − compute): {overhead:.3g} s = {overhead / base:.0%} of the wall time")
    for name in [n for n in executors if n != "in-process"]:
        ratio = base / median(walls[name])
        summary(f"sweep, {name} vs in-process",
                f"{len(plan.runs)}-run sweep, {name} vs in-process (wall, start-up included)",
                f"{median(walls[name]):.3g} s vs {base:.3g} s", ratio, "information (2 cores: at most 2x)", None,
                ratio_text=f"{ratio:.2f}x")
    print("results identical across executors: yes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
