"""Run the benchmarks, print the table of issue 15 and rewrite its block of docs/benchmarks.md (``make bench``).

Every row is a ratio of two programs measured in one process, with interleaved repeats and medians
(the demo's row: a share of one run's wall time). Each benchmark script runs in its own process
with one thread by default (``--threads 1``: torch's, and ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` /
``OPENBLAS_NUM_THREADS`` for numpy, scikit-learn and the demo's run), one after another, so that
no two of them compete for the 2 cores.

The default sizes fit in under 5 minutes on 2 cores (the linear probe already at DESIGN.md's 1000
tasks); ``--full`` uses DESIGN.md's other sizes (more rounds, 10⁶ tuples, 3029 classes, fine-tuning up
to 100 tasks) and adds the sweep
executors (a minute at its quick size, which ``--only sweep`` runs; minutes more in all). The
printed table replaces the block between ``<!-- bench:begin -->`` and ``<!-- bench:end -->`` of
docs/benchmarks.md (date, machine, load, the table and the demo's breakdown); ``--no-write`` leaves
the file alone, and so does ``--only`` (a partial table) unless ``--write`` is given.

Run: ``.venv/bin/python benchmarks/run_all.py [--full] [--threads 1] [--only pretrain demo ...] [--no-write]``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOC = HERE.parent / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
# name → (script, arguments at the default sizes, arguments at --full, run by default)
BENCHMARKS = {
    "pretrain": ("bench_pretrain.py", [], ["--repeats", "15"], True),
    "estimates": ("bench_estimates.py", ["--quick"], [], True),
    "demo": ("bench_demo.py", [], [], True),
    "avg_k": ("bench_avg_k.py", ["--quick"], [], True),
    "linear_probe": ("bench_linear_probe.py", [], [], True),  # DESIGN.md §6's size: 1000 tasks
    "hinge": ("bench_hinge.py", ["--quick"], [], True),
    "sweep": ("bench_sweep.py", ["--quick"], [], False),
    "finetune": ("bench_finetune.py", ["--quick"], [], True),
}
# the rows of issue 15's table first, in its order (prefixes of the rows' names); the others after
ISSUE_ROWS = ["pretrain() vs bare loop, demo", "pretrain() vs bare loop, batch512", "pretrain() vs bare loop, wide",
              "pretrain() FLOP rate, wide", "sampler vs trainer", "estimates vs forward", "`make demo`"]
TIMEOUT_S = 900


def command(name: str, full: bool, threads: int | None) -> list[str]:
    script, default, at_full, _ = BENCHMARKS[name]
    args = [sys.executable, str(HERE / script), *(at_full if full else default)]
    if threads is not None:
        args += ["--threads", str(threads)]
    return args


def thread_env(threads: int | None) -> dict[str, str]:
    env = dict(os.environ)
    if threads is not None:
        env.update({key: str(threads) for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
    return env


def parse_rows(output: str) -> list[dict]:
    """The ``SUMMARY {json}`` lines of a benchmark's output."""
    return [json.loads(line[len("SUMMARY "):]) for line in output.splitlines() if line.startswith("SUMMARY ")]


def failed_row(name: str, why: str) -> dict:
    return {"bench": name, "target": "", "measured": why, "ratio": None, "goal": "", "passed": False,
            "ratio_text": "-", "detail": []}


def run(name: str, full: bool, threads: int | None) -> tuple[list[dict], float, float]:
    """One benchmark in its own process: its rows, its wall seconds and the load average before it."""
    args = command(name, full, threads)
    load = os.getloadavg()[0]
    print(f"\n=== {name}: {' '.join(args[1:])}  (load1 {load:.2f})", flush=True)
    start = time.perf_counter()
    try:
        process = subprocess.run(args, check=False, capture_output=True, text=True, env=thread_env(threads),
                                 timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return [failed_row(name, f"timed out after {TIMEOUT_S} s")], time.perf_counter() - start, load
    elapsed = time.perf_counter() - start
    print("\n".join(line for line in process.stdout.splitlines() if not line.startswith("SUMMARY ")), flush=True)
    rows = parse_rows(process.stdout)
    if process.returncode != 0:
        print(process.stderr[-6000:], file=sys.stderr)
        rows = [row for row in rows if row["passed"] is not False] + [
            failed_row(name, f"exit status {process.returncode}: {last_line(process.stderr)}")]
    elif not rows:
        rows = [failed_row(name, "no SUMMARY line in its output")]
    return rows, elapsed, load


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:160] if lines else "no error output"


def ordered(rows: list[dict]) -> list[dict]:
    def key(item):
        index, row = item
        position = next((i for i, prefix in enumerate(ISSUE_ROWS) if row["bench"].startswith(prefix)), len(ISSUE_ROWS))
        return position, index
    return [row for _, row in sorted(enumerate(rows), key=key)]


def verdict(passed) -> str:
    return {True: "PASS", False: "**FAIL**", None: "-"}[passed]


def ratio_cell(row: dict) -> str:
    if row.get("ratio_text"):
        return row["ratio_text"]
    return "-" if row["ratio"] is None else f"{row['ratio']:.3g}"


def cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(rows: list[dict]) -> list[str]:
    """The Markdown table: benchmark | measured | ratio | target | verdict."""
    lines = ["| benchmark | measured | ratio | target | verdict |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append("| " + " | ".join(cell(c) for c in (row["bench"], row["measured"], ratio_cell(row), row["goal"],
                                                          verdict(row["passed"]))) + " |")
    return lines


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown CPU"
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return found.group(1).strip() if found else platform.processor() or "unknown CPU"


def memory_gib() -> str:
    try:
        kib = int(re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.MULTILINE).group(1))
        return f"{kib / 2**20:.0f} GiB RAM"
    except (OSError, AttributeError):
        return "RAM unknown"


def machine_line(threads: int | None) -> str:
    import numpy
    import torch
    return (f"{platform.machine()}, {os.cpu_count()} CPUs ({cpu_model()}), {memory_gib()}, Python "
            f"{platform.python_version()}, torch {torch.__version__}, numpy {numpy.__version__}; threads per "
            f"benchmark: {threads if threads is not None else 'library default'}")


def summary_lines(rows: list[dict]) -> list[str]:
    scored = [r for r in rows if r["passed"] is not None]
    missed = [r["bench"] for r in scored if r["passed"] is False]
    text = f"{len(scored) - len(missed)}/{len(scored)} targets met"
    text += f"; missed: {', '.join(missed)}" if missed else ""
    return [text + f" ({len(rows) - len(scored)} rows for information)."]


def block(rows: list[dict], started: datetime.datetime, total: float, loads: dict[str, float], end_load: float,
          threads: int | None, full: bool, only: list[str] | None = None) -> str:
    load_text = ", ".join(f"{name} {load:.1f}" for name, load in loads.items())
    lines = [BEGIN, "<!-- generated by benchmarks/run_all.py (make bench): edits inside this block are overwritten -->",
             "", f"## Latest `make bench`{' --full' if full else ''}"
             + (f" (only {', '.join(only)})" if only else ""), "",
             f"**When:** {started.strftime('%Y-%m-%d %H:%M %Z')}, {total:.0f} s of wall time in all. "
             f"**Machine:** {machine_line(threads)}. **Load average** (1 min) before each benchmark: {load_text}; "
             f"{end_load:.1f} at the end. The machine may be shared: both programs of a ratio see the same load, "
             "absolute figures do not.", "", *table(rows), "", *summary_lines(rows)]
    for row in rows:
        if row.get("detail"):
            head, *items = row["detail"]
            lines += ["", head, "", *(f"- {item}" for item in items)]
    lines += ["", END]
    return "\n".join(lines)


def write_doc(text: str, path: Path = DOC) -> None:
    """Replace the generated block of ``path`` (between the markers); without markers, put the block
    after the document's title."""
    doc = path.read_text()
    if BEGIN in doc and END in doc:
        head, rest = doc.split(BEGIN, 1)
        doc = head + text + rest.split(END, 1)[1]
    else:
        title, _, rest = doc.partition("\n")
        doc = f"{title}\n\n{text}\n{rest}"
    path.write_text(doc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="DESIGN.md's sizes, plus sweep and finetune (minutes)")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads per benchmark (default 1; 0: the libraries' default)")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=None)
    parser.add_argument("--no-write", action="store_true", help="do not rewrite docs/benchmarks.md")
    parser.add_argument("--write", action="store_true", help="rewrite docs/benchmarks.md even with --only")
    args = parser.parse_args()
    threads = args.threads or None
    names = args.only or [name for name, (*_, default) in BENCHMARKS.items() if default or args.full]

    started, start = datetime.datetime.now().astimezone(), time.perf_counter()
    rows: list[dict] = []
    loads: dict[str, float] = {}
    crashed = False
    for name in names:
        result, elapsed, load = run(name, args.full, threads)
        loads[name] = load
        crashed |= any(r["ratio"] is None and r["passed"] is False for r in result)
        rows.extend(result)
        print(f"--- {name} took {elapsed:.0f} s", flush=True)
    total = time.perf_counter() - start
    rows = ordered(rows)

    print(f"\n{'full' if args.full else 'default'} sizes, {threads or 'default'} thread(s); total {total:.0f} s; "
          f"load1 now {os.getloadavg()[0]:.2f}\n")
    print("\n".join(table(rows)))
    print("\n" + "\n".join(summary_lines(rows)))
    for row in rows:
        if row.get("detail"):
            head, *items = row["detail"]
            print("\n" + head + "".join(f"\n  {item}" for item in items))
    if args.no_write or (args.only and not args.write):
        print(f"\n{DOC.relative_to(HERE.parent)} left as it is" + (" (--only: a partial table)" if args.only else ""))
    else:
        write_doc(block(rows, started, total, loads, os.getloadavg()[0], threads, args.full, args.only))
        print(f"\nrewrote the generated block of {DOC.relative_to(HERE.parent)}")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
