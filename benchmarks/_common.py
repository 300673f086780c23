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
