"""Timing and reporting helpers shared by the benchmark scripts (not part of the package).

Benchmarks compare two programs measured in one process, so machine load affects both; repeats are
interleaved (A B A B ...) and medians reported. Every script ends with one ``SUMMARY {json}`` line
per target, which ``run_all.py`` collects into its table (and into docs/benchmarks.md).

The scripts also import as modules (tests/test_benchmarks.py puts benchmarks/ on ``sys.path``):
each factors its two programs into functions that run at tiny sizes, so that the tests can check
that a benchmark's program and its baseline compute the same results.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch


def interleaved(programs: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Wall times of each program over ``repeats`` rounds, one run of each per round (A B A B ...).

    ``warmup`` untimed rounds first (allocator, thread pool, lazy imports).
    """
    for _ in range(warmup):
        for fn in programs.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in programs}
    for _ in range(repeats):
        for name, fn in programs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> str:
    """"median [min, max]" of a list of seconds."""
    return f"{median(values):.4g} s [{min(values):.4g}, {max(values):.4g}]"


def round_ratios(numerator: list[float], denominator: list[float]) -> str:
    """The per-round ratios of two interleaved timings, sorted: how steady the median ratio is."""
    return ", ".join(f"{r:.2f}" for r in sorted(a / b for a, b in zip(numerator, denominator)))


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def machine() -> str:
    return (f"{platform.machine()} cpus={os.cpu_count()} torch={torch.__version__} "
            f"torch_threads={torch.get_num_threads()} load1={load_average():.2f}")


def add_threads_argument(parser) -> None:
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")


def set_threads(threads: int | None) -> None:
    if threads is not None:
        torch.set_num_threads(threads)


def summary(bench: str, target: str, measured: str, ratio: float | None, goal: str, passed: bool | None, *,
            ratio_text: str | None = None, detail: list[str] | None = None) -> None:
    """One machine-readable result line: what was measured, the ratio and the verdict.

    ``ratio_text``: how the table shows the ratio (default: ``ratio`` to 3 digits); ``detail``: lines
    run_all.py prints under the table and writes to docs/benchmarks.md (a breakdown, say).
    """
    print("SUMMARY " + json.dumps({"bench": bench, "target": target, "measured": measured, "ratio": ratio,
                                       "goal": goal, "passed": passed, "ratio_text": ratio_text,
                                       "detail": detail or []}, ensure_ascii=False), flush=True)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def module_at(commit: str, path: str, name: str):
    """The module at ``path`` (in the repository) as it was at ``commit`` (read with ``git show``),
    imported under ``name`` beside the working tree's own."""
    import importlib.util
    import subprocess
    import sys
    import tempfile

    source = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, check=True, capture_output=True,
                            text=True).stdout
    file = os.path.join(tempfile.mkdtemp(), f"{name}.py")
    with open(file, "w") as handle:
        handle.write(source)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def before_after(label: str, old: Callable[[], object], new: Callable[[], object], rounds: int = 7) -> float:
    """Print the markdown row ``| label | before | after | speed-up |``: medians of the process's CPU time
    (steadier than wall time on a shared machine) over interleaved rounds, after one untimed call of each.
    Returns the speed-up."""
    old()
    new()
    before, after = [], []
    for _ in range(rounds):
        start = time.process_time()
        old()
        before.append(time.process_time() - start)
        start = time.process_time()
        new()
        after.append(time.process_time() - start)
    b, a = median(before), median(after)
    print(f"| {label} | {b * 1e3:.1f} ms | {a * 1e3:.1f} ms | {b / a:.2f}x |", flush=True)
    return b / a


def demo_checkpoint_at(commit: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """(pretraining s, one evaluation s) of the demo's checkpoint (``_evaluate_demo_checkpoint.py``, CPU
    seconds, one thread) with the package of ``commit`` (a temporary git worktree) and of the working
    tree, each in its own process: (before, after)."""
    import subprocess
    import sys
    import tempfile

    worktree = tempfile.mkdtemp()
    subprocess.run(["git", "worktree", "add", "--detach", "-q", worktree, commit], cwd=ROOT, check=True)
    try:
        figures = []
        for src in (os.path.join(worktree, "src"), os.path.join(ROOT, "src")):
            out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "_evaluate_demo_checkpoint.py")],
                                 env=dict(os.environ, PYTHONPATH=src, OMP_NUM_THREADS="1"), check=True,
                                 capture_output=True, text=True).stdout.split()
            figures.append((float(out[-2]), float(out[-1])))
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", worktree], cwd=ROOT, check=False)
    return figures[0], figures[1]
