"""`make demo`'s time and where it goes: evaluation's share of the run's wall time (issue 15).

Runs ``preadapt run --preset demo --out TMP --force`` (the console script of this venv, so a warm
venv: nothing is installed) in a subprocess with ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` set to
``--threads`` (torch takes its thread count from them, and the run's config stays the demo's own,
``threads: null``; the store's ``runs.threads`` column records what the run used). The wall time is
the subprocess's, from spawn to exit: interpreter start-up and imports included.

The breakdown is read from the run's store, ``results.sqlite``: table ``timings`` (columns run,
stage, seconds, calls), stages such as ``start-up``, ``sampling``, ``pretraining``,
``evaluation/<quantity>``, ``bound checks``, ``storing`` and ``report`` (``preadapt.timing``: a
stage inside another is named ``parent/name``). Stages are grouped by the part before the first
``/``; a group with a row of its own (``evaluation``) takes that row, otherwise the sum of its direct
sub-rows (``evaluation/<quantity>``); the detail lists the direct sub-rows of each group, and inside
the larger ones theirs. "imports/CLI" is the wall time in no stage: the interpreter's start and the
imports before the run's clock starts, and the CLI's output after it. Without a ``timings`` table
the benchmark reports the wall time only and says "breakdown unavailable".

Target: evaluation ≤ 50 % of the wall time.

Run: ``.venv/bin/python benchmarks/bench_demo.py [--threads 1] [--preset demo] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from _common import load_average, summary

TARGET = 0.50
# the groups, in the order of a run; any other stage is shown under its own name
GROUPS = {"start-up": "start-up", "startup": "start-up", "imports": "start-up", "sampling": "sampling",
          "pretraining": "pretraining", "pretrain": "pretraining", "evaluation": "evaluation",
          "evaluate": "evaluation", "report": "report"}
ORDER = ["start-up", "sampling", "pretraining", "evaluation", "report"]


def preadapt_command() -> list[str]:
    """The ``preadapt`` console script beside this interpreter (the venv's), else ``-m preadapt.cli``."""
    script = Path(sys.executable).parent / "preadapt"
    return [str(script)] if script.exists() else [sys.executable, "-c", "from preadapt.cli import app; app()"]


def demo_command(out: Path, preset: str = "demo", overrides: list[str] | tuple[str, ...] = ()) -> list[str]:
    return [*preadapt_command(), "run", "--preset", preset, "--out", str(out), "--force",
            *(part for item in overrides for part in ("--set", item))]


def thread_env(threads: int | None) -> dict[str, str]:
    env = dict(os.environ)
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def run_demo(out: Path, threads: int | None, preset: str = "demo",
             overrides=()) -> tuple[float, subprocess.CompletedProcess]:
    """Wall seconds of one run (spawn to exit) and the finished process."""
    start = time.perf_counter()
    process = subprocess.run(demo_command(out, preset, overrides), env=thread_env(threads), capture_output=True,
                             text=True, check=False)
    return time.perf_counter() - start, process


def read_timings(store: Path) -> list[tuple[str, str, float, int | None]] | None:
    """The rows (run, stage, seconds, calls) of the store's ``timings`` table; None without one."""
    connection = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        found = connection.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'timings'")
        if found.fetchone() is None:
            return None
        return [(str(run), str(stage), float(seconds), None if calls is None else int(calls))
                for run, stage, seconds, calls in connection.execute("SELECT run, stage, seconds, calls FROM timings")]
    finally:
        connection.close()


def read_threads(store: Path) -> int | None:
    connection = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        row = connection.execute("SELECT threads FROM runs").fetchone()
        return None if row is None else row[0]
    finally:
        connection.close()


@dataclass
class Breakdown:
    """A run's wall time split into the issue's groups (seconds), with every stage row behind them."""

    wall: float
    groups: dict[str, float]
    stages: list[tuple[str, float, int | None]] = field(default_factory=list)  # (stage, seconds, calls)

    @property
    def accounted(self) -> float:
        return sum(self.groups.values())

    @property
    def unaccounted(self) -> float:
        """Wall time outside every stage: the interpreter, the imports and the CLI around the run."""
        return self.wall - self.accounted

    def share(self, group: str) -> float:
        return self.groups.get(group, 0.0) / self.wall

    def children(self, stage: str) -> list[tuple[str, float, int | None]]:
        """The rows directly inside ``stage`` (a group's name for a top-level one), largest first."""
        prefixes = [stage] + [head for head, group in GROUPS.items() if group == stage]
        found = [row for row in self.stages if any(row[0].startswith(p + "/") and row[0].count("/") == p.count("/") + 1
                                                     for p in prefixes)]
        return sorted(found, key=lambda row: -row[1])


def breakdown(rows: list[tuple[str, str, float, int | None]], wall: float) -> Breakdown:
    """Group ``timings`` rows (run, stage, seconds, calls) of one run by the part of the stage before
    the first "/": a group's own row (``evaluation``) wins over the sum of its direct sub-rows
    (``evaluation/L_un``; deeper rows, ``evaluation/adapters/linear``, are inside those)."""
    own: dict[str, float] = {}
    parts: dict[str, float] = {}
    for _, stage, seconds, _ in rows:
        depth = stage.count("/")
        group = GROUPS.get(stage.split("/", 1)[0], stage.split("/", 1)[0])
        if depth == 0:
            own[group] = own.get(group, 0.0) + seconds
        elif depth == 1:
            parts[group] = parts.get(group, 0.0) + seconds
    groups = {group: own.get(group, parts.get(group, 0.0)) for group in [*own, *parts]}
    ordered = {g: groups[g] for g in ORDER if g in groups} | {g: s for g, s in groups.items() if g not in ORDER}
    return Breakdown(wall, ordered, [(stage, seconds, calls) for _, stage, seconds, calls in rows])


def describe(result: Breakdown) -> str:
    """One line: the wall time, the imports and CLI outside the run's clock, the issue's groups and
    the rest (``other``: storing, bound checks, ...)."""
    main = [f"{group} {result.groups[group]:.1f}" for group in ORDER if group in result.groups]
    rest = sum(seconds for group, seconds in result.groups.items() if group not in ORDER)
    return (f"wall {result.wall:.1f} s: imports/CLI {result.unaccounted:.1f}, " + ", ".join(main)
            + f", other {rest:.1f}")


def detail_lines(result: Breakdown) -> list[str]:
    """The breakdown, one line a group, with its direct stages and, inside the larger ones, theirs."""
    wall = result.wall
    lines = [f"imports/CLI (outside the run's clock: interpreter, imports, the CLI's output): "
             f"{result.unaccounted:.2f} s ({result.unaccounted / wall:.0%})"]
    for group, seconds in result.groups.items():
        line = f"{group}: {seconds:.2f} s ({seconds / wall:.0%})"
        parts = []
        for stage, spent, calls in result.children(group):
            if spent < 0.005:
                continue
            part = f"{stage.rsplit('/', 1)[1]} {spent:.2f} s" + (f" ×{calls}" if calls and calls > 1 else "")
            inner = result.children(stage) if spent >= 0.25 * seconds else []
            if inner:
                part += " [" + ", ".join(f"{s.rsplit('/', 1)[1]} {t:.2f}" for s, t, _ in inner if t >= 0.005) + "]"
            parts.append(part)
        lines.append(line + (": " + "; ".join(parts) if parts else ""))
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--keep", type=Path, default=None, help="write the run here instead of a temporary folder")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="a config override a.b=value")
    parser.add_argument("--threads", type=int, default=None, help="OMP/MKL threads of the run (default: unset)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        out = args.keep or Path(folder) / "demo"
        load = load_average()
        wall, process = run_demo(out, args.threads, args.preset, args.overrides)
        print(f"$ {' '.join(demo_command(out, args.preset, args.overrides))}  (OMP_NUM_THREADS={args.threads}; "
              f"load1 before {load:.2f}, after {load_average():.2f})")
        if process.returncode != 0:
            print(process.stdout[-2000:], process.stderr[-4000:], sep="\n", file=sys.stderr)
            summary(f"`make demo` ({args.preset})", "evaluation's share of the run's wall time",
                    f"exit status {process.returncode} after {wall:.1f} s", None, f"<= {TARGET:.0%}", False)
            return 1
        store = out / "results.sqlite"
        rows, threads = read_timings(store), read_threads(store)
    print(f"wall time {wall:.2f} s (torch threads of the run: {threads})")
    if rows is None:
        print("breakdown unavailable: the run's store has no `timings` table")
        summary(f"`make demo` ({args.preset})", "evaluation's share of the run's wall time",
                f"wall {wall:.1f} s; breakdown unavailable (no `timings` table in the store)", None,
                f"<= {TARGET:.0%}", None, ratio_text="-")
        return 0
    result = breakdown(rows, wall)
    detail = [f"`preadapt run --preset {args.preset}` breakdown (the run's `timings` table; {threads} torch "
              f"thread{'s' if threads != 1 else ''}; wall {wall:.1f} s; ×N: calls):", *detail_lines(result)]
    for line in detail:
        print("  " + line)
    share = result.share("evaluation")
    print(f"evaluation's share: {share:.1%} (target <= {TARGET:.0%})")
    summary(f"`make demo` ({args.preset})", "evaluation's share of the run's wall time", describe(result), share,
            f"<= {TARGET:.0%}", bool(share <= TARGET), ratio_text=f"{share:.0%}", detail=detail)
    return 0


if __name__ == "__main__":
    sys.exit(main())
