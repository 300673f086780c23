"""Run every benchmark of DESIGN.md §6 and print a summary table (``make bench``).

Each benchmark runs in its own process, with ``--quick`` sizes unless ``--full`` is given
(bench_linear_probe.py has no ``--quick``: quick runs it on 200 tasks with 2 repeats). Ratios are
measured within each process; absolute times depend on the machine and its load.

Run: ``.venv/bin/python benchmarks/run_all.py [--full] [--threads N] [--only avg_k pretrain ...]``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = {
    "avg_k": "bench_avg_k.py",
    "linear_probe": "bench_linear_probe.py",
    "pretrain": "bench_pretrain.py",
    "estimates": "bench_estimates.py",
    "sweep": "bench_sweep.py",
    "hinge": "bench_hinge.py",
}
LINEAR_PROBE_QUICK = ["--tasks", "200", "--repeats", "2"]


def command(name: str, full: bool, threads: int | None) -> list[str]:
    args = [sys.executable, str(HERE / BENCHMARKS[name])]
    if not full:
        args += LINEAR_PROBE_QUICK if name == "linear_probe" else ["--quick"]
    if threads is not None:
        args += ["--threads", str(threads)]
    return args


def linear_probe_rows(output: str) -> list[dict]:
    """bench_linear_probe.py prints prose, not SUMMARY lines: read its ratio and accuracy gap."""
    speed = re.search(r"speed-up ratio \(sklearn / batched\): ([\d.]+)x", output)
    gap = re.search(r"mean accuracy difference: ([+-][\d.]+) points", output)
    times = re.findall(r"^(batched LinearProbe|sklearn loop):\s+([\d.]+) s", output, re.MULTILINE)
    tasks = re.search(r"tasks=(\d+)", output)
    if not (speed and gap):
        return [{"bench": "linear_probe", "target": "", "measured": "could not parse output", "ratio": None,
                     "goal": ">= 10x, within 0.5 points", "passed": None}]
    ratio, points = float(speed.group(1)), float(gap.group(1))
    measured = "; ".join(f"{name} {seconds} s" for name, seconds in times) + f"; acc diff {points:+.3f} pts"
    return [{"bench": "linear_probe", "target": f"{tasks.group(1) if tasks else '?'} binary tasks vs sklearn loop",
                 "measured": measured, "ratio": ratio, "goal": ">= 10x, within 0.5 points",
                 "passed": bool(ratio >= 10 and abs(points) <= 0.5)}]


def run(name: str, full: bool, threads: int | None) -> tuple[list[dict], float]:
    args = command(name, full, threads)
    print(f"\n=== {name}: {' '.join(args[1:])}", flush=True)
    start = time.perf_counter()
    process = subprocess.run(args, check=False, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    output = process.stdout
    print(output, end="", flush=True)
    if process.returncode != 0:
        print(process.stderr, file=sys.stderr)
        return [{"bench": name, "target": "", "measured": f"exit status {process.returncode}", "ratio": None, "goal": "",
                     "passed": False}], elapsed
    if name == "linear_probe":
        return linear_probe_rows(output), elapsed
    rows = [json.loads(line[len("SUMMARY "):]) for line in output.splitlines() if line.startswith("SUMMARY ")]
    return rows, elapsed


def verdict(passed) -> str:
    return {True: "PASS", False: "FAIL", None: "?"}[passed]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the sizes of DESIGN.md (minutes)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for every benchmark")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), default=None)
    args = parser.parse_args()

    rows: list[dict] = []
    for name in args.only or BENCHMARKS:
        result, elapsed = run(name, args.full, args.threads)
        rows.extend(result)
        print(f"--- {name} took {elapsed:.0f} s", flush=True)

    print(f"\nSummary ({'full' if args.full else 'quick'} sizes; ratios within one process):")
    header = ("benchmark", "ratio", "target", "verdict", "measured")
    table = [(r["bench"], "-" if r["ratio"] is None else f"{r['ratio']:.3g}", r["goal"], verdict(r["passed"]),
              r["measured"]) for r in rows]
    widths = [max(len(str(row[i])) for row in [header, *table]) for i in range(4)]
    for row in [header, *table]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row[:4], widths)) + "  " + row[4])
    failed = [r["bench"] for r in rows if r["passed"] is False]
    print(f"\n{len(rows) - len(failed)}/{len(rows)} targets met" + (f"; missed: {', '.join(failed)}" if failed else ""))


if __name__ == "__main__":
    main()
