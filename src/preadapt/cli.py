"""The ``preadapt`` command line: parses, calls experiment/ and report/, prints.

Exit codes: 0 success; 2 invalid config or arguments (one line, nothing written); 1 a run failed
(recorded in the store); 130 a run or sweep stopped by Ctrl-C (or SIGTERM), with one line saying
what was kept and the command that resumes it (a sweep) or starts it again (a run).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Measure the pretraining-adaptation interface, with confidence intervals.")
console = Console()
errors = Console(stderr=True)


def _fail(message: str, code: int = 2) -> None:
    errors.print(f"preadapt: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _print_summary(results, run_id: str) -> None:
    """Every quantity at the last evaluated step: estimate [CI] n, level, and a bound's verdict (the
    terms of the bounds are left to report.html and the results table)."""
    from preadapt.report.tables import context_label, format_estimate, format_level

    step = int(results["step"].max())
    table = Table(title=f"{run_id} at step {step}", title_justify="left")
    for column in ("quantity", "estimate [CI] n", "level", "status"):
        table.add_column(column, overflow="fold")
    for row in results[(results["step"] == step) & (results["quantity"] != "bound_term")].to_dict("records"):
        estimate = format_estimate(row["value"], row["lower"], row["upper"], row["n"], row["method"])
        status = row["status"] if row["quantity"] == "bound_slack" else ""
        level = "" if row["method"] in ("exact", "empirical") else format_level(row["level"])
        table.add_row(context_label(row), estimate, level, status or "")
    console.print(table)


@app.command("run")
def run_command(
    config: Optional[Path] = typer.Argument(None, help="YAML config file (default: the demo preset)"),
    preset: Optional[str] = typer.Option(None, "--preset", help="a named preset (see `preadapt presets`)"),
    overrides: list[str] = typer.Option([], "--set", help="override a field: a.b=value (repeatable)"),
    out: Optional[Path] = typer.Option(None, "--out", help="output directory (default runs/<config name>)"),
    force: bool = typer.Option(False, "--force", help="overwrite a non-empty output directory"),
    dry_run: bool = typer.Option(False, "--dry-run", help="validate and print the resolved config; write nothing"),
) -> None:
    """Pretrain, evaluate every checkpoint, check the bounds, write the results and a report."""
    import signal

    from preadapt.experiment.config import ConfigError, load_config
    from preadapt.experiment.run import RunInterrupted, prepare_output, resolve_device, run, run_id_of

    try:
        resolved = load_config(config, overrides, preset)
        resolve_device(resolved.device)
        target = out if out is not None else Path("runs") / resolved.name
        if dry_run:  # the defaults fitted to the world and the training as YAML comments: still a config file
            for line in resolved.defaults_resolved():
                console.print(f"# defaults resolved: {line}", markup=False, highlight=False, soft_wrap=True)
            console.print(resolved.to_yaml(), markup=False, highlight=False, end="")
            return
        prepare_output(target, force, run_id_of(resolved))
    except ConfigError as error:
        _fail(str(error))
    from preadapt.report.html import write_report  # matplotlib: not before the config is known good (0.4 s)

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a scheduler's stop: the same clean stop as Ctrl-C
    options = [str(config)] if config is not None else (["--preset", preset] if preset is not None else [])
    rerun = shlex.join(["preadapt", "run", *options, *(part for item in overrides for part in ("--set", item)),
                        "--out", str(target)])
    for line in resolved.defaults_resolved():
        console.print(f"defaults resolved: {line}", markup=False, highlight=False, soft_wrap=True)

    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=errors, transient=True, disable=not errors.is_terminal) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done)

        try:
            result = run(resolved, out=target, force=True, progress=progress, report=write_report)
        except RunInterrupted as stop:
            _fail(_interrupted_line(stop, target, rerun), code=130)
        except KeyboardInterrupt:  # a second Ctrl-C while the first was being recorded
            _fail(f"interrupted; {target} may hold a partly recorded run; start it again with: {rerun} --force",
                  code=130)

    if len(result.results):
        _print_summary(result.results, result.run_id)
    if result.status != "finished":
        _fail(f"run {result.run_id} failed: {result.error} (recorded in {target / 'results.sqlite'})", code=1)
    console.print(f"wrote {target}/ (report: {target / 'report.html'})", markup=False, highlight=False)


def _steps(steps: list[int]) -> str:
    return f"step{'s' if len(steps) > 1 else ''} {', '.join(map(str, steps))}"


def _interrupted_line(stop, target: Path, rerun: str) -> str:
    """The one line of a run stopped by Ctrl-C: where it stopped, what was kept, how to start it again."""
    if stop.status is None:
        return f"interrupted while starting run {stop.run_id}: nothing kept in {target}/; start it with: {rerun}"
    if stop.status != "interrupted":  # the outcome was recorded; only the report was left
        return (f"interrupted while writing the report: run {stop.run_id} {stop.status} and is recorded in "
                f"{target / 'results.sqlite'}; write the report with: {shlex.join(['preadapt', 'report', str(target)])}")
    saved = sorted(int(path.stem[len("step_"):]) for path in (target / "checkpoints").glob("step_*.pt"))
    rows = f"the rows of {_steps(stop.evaluated)}" if stop.evaluated else "no rows: no checkpoint was evaluated"
    return (f"interrupted at step {stop.step} of {stop.total_steps} while {stop.stage}; kept {target / 'config.yaml'}, "
            f"{target / 'checkpoints'}/ ({_steps(saved) if saved else 'empty'}) and {target / 'results.sqlite'} "
            f"(run {stop.run_id} marked interrupted, with {rows}); start it again, no --force needed: {rerun}")


@app.command("presets")
def presets_command() -> None:
    """List the presets, one line each: run presets (preadapt run --preset), then sweep presets."""
    from preadapt.experiment.presets import preset_descriptions
    from preadapt.experiment.sweep import sweep_preset_descriptions

    for name, description in preset_descriptions().items():
        console.print(f"{name:20s} {description}", markup=False, highlight=False)
    console.print("sweeps (preadapt sweep --preset NAME):", markup=False, highlight=False)
    for name, description in sweep_preset_descriptions().items():
        console.print(f"{name:20s} {description}", markup=False, highlight=False)


@app.command("sweep")
def sweep_command(
    sweep_file: Optional[Path] = typer.Argument(None, help="sweep file (YAML: base, grid, zip, replicates)"),
    preset: Optional[str] = typer.Option(None, "--preset", help="a sweep preset (see `preadapt presets`)"),
    backend: str = typer.Option("local", "--backend", help="local or ray"),
    workers: Optional[int] = typer.Option(None, "--workers", help="runs at once (local: 1 = in-process; ray: CPUs)"),
    address: Optional[str] = typer.Option(None, "--address", help="a running Ray cluster to join (--backend ray)"),
    out: Optional[Path] = typer.Option(None, "--out", help="sweep directory (default runs/<sweep name>)"),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="run the failed runs again"),
    dry_run: bool = typer.Option(False, "--dry-run", help="validate and list the runs; run nothing"),
) -> None:
    """Run a sweep (resumable: finished runs are skipped), write results.csv and the sweep report."""
    import signal

    from preadapt.experiment.config import ConfigError
    from preadapt.experiment.executors import make_executor
    from preadapt.experiment.sweep import load_sweep, run_sweep

    try:
        sweep = load_sweep(sweep_file, preset)
        if backend not in ("local", "ray"):
            raise ConfigError(f"--backend: got {backend!r}; allowed: local, ray")
        target = out if out is not None else Path("runs") / sweep.name
        if dry_run:
            _print_plan(sweep)
            return
        executor = make_executor(backend, workers, address)
    except ConfigError as error:
        _fail(str(error))

    from preadapt.report.sweep import write_sweep_report  # matplotlib: not before the sweep is known good

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a scheduler's stop: the same clean stop as Ctrl-C
    options = [str(sweep_file)] if sweep_file is not None else ["--preset", str(preset)]
    options += ["--out", str(target)] + (["--backend", backend] if backend != "local" else [])
    options += (["--workers", str(workers)] if workers is not None else []) + (["--address", address] if address else [])
    resume = shlex.join(["preadapt", "sweep", *options])
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("{task.fields[counts]}"), TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn())
    with Progress(*columns, console=errors, transient=True, disable=not errors.is_terminal) as bar:
        task = bar.add_task(f"sweep {sweep.name}", total=1, counts="")
        said: list[bool] = []

        def progress(counts) -> None:
            if not said:  # the first report, before any run: what a resumed sweep keeps
                said.append(True)
                if counts.resumed():
                    console.print(f"sweep {sweep.name}: {counts.resumed()}", markup=False, highlight=False)
            if counts.stage == "report":
                bar.update(task, description=f"sweep {sweep.name}: writing the report")
            bar.update(task, total=max(counts.to_run, 1), completed=counts.finished + counts.failed,
                       counts=f"finished {counts.finished} · failed {counts.failed} · running {counts.running}"
                              + (f" · {counts.earlier} earlier" if counts.earlier else ""))

        try:
            summary = run_sweep(sweep, target, executor, retry_failed=retry_failed, progress=progress,
                                report=write_sweep_report)
        except ConfigError as error:
            executor.shutdown(cancel=True)
            _fail(str(error))
    _print_sweep_summary(summary)
    if summary.interrupted:
        _fail(f"interrupted: {len(summary.finished)} of {len(sweep.runs)} runs finished; resume with: {resume}",
              code=130)
    failed = summary.failed
    if failed:
        listed = "; ".join(f"{run_id}: {summary.errors.get(run_id, '?')}" for run_id in failed[:3])
        listed += f"; and {len(failed) - 3} more (see the table above)" if len(failed) > 3 else ""
        _fail(f"{len(failed)} of {len(sweep.runs)} runs failed ({listed}); rerun them with: {resume} --retry-failed",
              code=1)
    console.print(f"wrote {target}/ (report: {target / 'report.html'})", markup=False, highlight=False)


def _axis_header(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _print_plan(sweep) -> None:
    table = Table(title=f"sweep {sweep.name}: {len(sweep.runs)} runs", title_justify="left")
    for column in ["run", *(_axis_header(axis["name"]) for axis in sweep.axes), "replicate", "seed"]:
        table.add_column(column, overflow="fold")
    for planned in sweep.runs:
        table.add_row(planned.run_id, *(str(value) for value in planned.point.values()), str(planned.replicate),
                      str(planned.config.seed))
    console.print(table)


def _print_sweep_summary(summary) -> None:
    """One line per run: its point, replicate, status, seconds (when computed now) and error."""
    sweep = summary.sweep
    table = Table(title=f"sweep {sweep.name}: {len(summary.finished)} finished, {len(summary.failed)} failed "
                        f"of {len(sweep.runs)}", title_justify="left")
    errors = any(summary.errors.get(planned.run_id) for planned in sweep.runs)
    columns = ["run", *(_axis_header(axis["name"]) for axis in sweep.axes), "rep", "status", "s"]
    for column in columns + (["error"] if errors else []):
        table.add_column(column, overflow="fold")
    for planned in sweep.runs:
        seconds = summary.seconds.get(planned.run_id)
        cells = [planned.run_id, *(str(value) for value in planned.point.values()), str(planned.replicate),
                 summary.statuses.get(planned.run_id, "not run"), f"{seconds:.1f}" if seconds is not None else ""]
        table.add_row(*cells, *([summary.errors.get(planned.run_id) or ""] if errors else []))
    console.print(table)


@app.command("reproduce")
def reproduce_command(
    paper: str = typer.Argument(..., help="the paper whose experiments to reproduce: arora2019"),
    scale: str = typer.Option("small", "--scale", help="small (minutes on 2 cores) or full (the paper's scale)"),
    backend: str = typer.Option("local", "--backend", help="local or ray"),
    workers: Optional[int] = typer.Option(None, "--workers", help="runs at once (local: 1 = in-process; ray: CPUs)"),
    address: Optional[str] = typer.Option(None, "--address", help="a running Ray cluster to join (--backend ray)"),
    out: Optional[Path] = typer.Option(None, "--out", help="output directory (default runs/<paper>-<scale>)"),
) -> None:
    """Reproduce a paper's experiments in shape: its tables, figure and claims (resumable, like sweeps)."""
    import signal

    from preadapt.experiment.config import ConfigError
    from preadapt.experiment.executors import make_executor
    from preadapt.experiment.reproduce import plan_arora2019, run_reproduction
    from preadapt.report.reproduction import write_reproduction_report
    from preadapt.report.sweep import write_sweep_report

    try:
        if paper != "arora2019":
            raise ConfigError(f"PAPER: got {paper!r}; allowed: arora2019")
        if backend not in ("local", "ray"):
            raise ConfigError(f"--backend: got {backend!r}; allowed: local, ray")
        plan = plan_arora2019(scale)
        if backend == "local":  # the options are checked before any run (a Ray cluster is joined per sweep)
            make_executor(backend, workers, address).shutdown()
    except ConfigError as error:
        _fail(str(error))
    target = out if out is not None else Path("runs") / f"{paper}-{scale}"
    for label, why in plan.missing.items():
        console.print(f"left out {label}: {why}", markup=False, highlight=False)
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    def progress(part, counts) -> None:
        if counts.stage == "report" and errors.is_terminal:
            errors.print(f"{part}: {counts.finished} finished, {counts.failed} failed", markup=False, highlight=False)

    try:
        summary = run_reproduction(plan, target, lambda: make_executor(backend, workers, address), progress=progress,
                                   report=write_reproduction_report, sweep_report=write_sweep_report)
    except ConfigError as error:
        _fail(str(error))
    for part in summary.summaries.values():
        _print_sweep_summary(part)
    resume = shlex.join(["preadapt", "reproduce", paper, "--scale", scale, "--out", str(target)]
                        + (["--backend", backend] if backend != "local" else [])
                        + (["--workers", str(workers)] if workers is not None else []))
    if summary.interrupted:
        _fail(f"interrupted; resume with: {resume}", code=130)
    if summary.failed:
        _fail(f"{len(summary.failed)} runs failed (see the tables above); the report shows what finished: "
              f"{summary.report}", code=1)
    console.print(f"wrote {target}/ (report: {summary.report})", markup=False, highlight=False)


def _open_store(directory: Path):
    from preadapt.experiment.store import Store

    path = directory / "results.sqlite"
    if not path.is_file():
        _fail(f"{directory}: no results.sqlite here (is it a run or sweep directory?)")
    return Store(path)


@app.command("report")
def report_command(
    directory: Path = typer.Argument(..., help="a run or sweep directory"),
    screenshot: bool = typer.Option(False, "--screenshot",
                                    help="also write report.png: the page's first screen at 1280 x 900 (needs chromium)"),
) -> None:
    """Rebuild report.html and figures/ of a run or sweep directory from its store."""
    from preadapt.report.html import parse_config_yaml, write_report

    store = _open_store(directory)
    try:
        results, runs, sweep, timings = store.results(), store.runs(), store.get_meta("sweep"), store.timings()
    finally:
        store.close()
    if sweep is not None:
        from preadapt.experiment.sweep import sweep_results
        from preadapt.report.sweep import write_sweep_report

        path = write_sweep_report(directory, sweep_results(results, sweep), runs, sweep,
                                  title=f"preadapt sweep: {sweep['name']}")
    else:
        config_file = directory / "config.yaml"
        config_yaml = config_file.read_text() if config_file.is_file() else ""
        name = parse_config_yaml(config_yaml).get("name") or directory.name
        path = write_report(directory, results, runs, config_yaml, title=f"preadapt run: {name}",
                            timings=timings if len(timings) else None)
    console.print(f"wrote {path}", markup=False, highlight=False)
    if screenshot:
        from preadapt.report.browser import BrowserError, screenshot_report

        try:
            image = screenshot_report(path)
        except BrowserError as error:
            _fail(f"--screenshot: {error}", code=1)
        console.print(f"wrote {image}", markup=False, highlight=False)


@app.command("results")
def results_command(
    directory: Path = typer.Argument(..., help="a run or sweep directory"),
    format: str = typer.Option("csv", "--format", help="csv or json"),
) -> None:
    """Print the tidy results table of a run or sweep directory as CSV or JSON (for pandas); a
    sweep's table has its runs' replicate and swept fields as extra columns."""
    if format not in ("csv", "json"):
        _fail(f"--format: got {format!r}; allowed: csv, json")
    store = _open_store(directory)
    try:
        results, runs, sweep, timings = store.results(), store.runs(), store.get_meta("sweep"), store.timings()
    finally:
        store.close()
    if sweep is not None:
        from preadapt.experiment.sweep import sweep_results, with_run_status

        results = with_run_status(sweep_results(results, sweep), runs)
    else:  # a single run's table has no status column: say when its rows are not a finished run's
        for row in runs[runs["status"] != "finished"].itertuples():
            steps = sorted(set(results.loc[results["run"] == row.run_id, "step"].tolist()))
            reason = row.error if isinstance(row.error, str) and row.error else f"marked {row.status}"
            errors.print(f"preadapt: note: run {row.run_id} did not finish ({reason}); its rows are those of "
                         f"{_steps(steps) if steps else 'no checkpoint'}", markup=False, highlight=False, soft_wrap=True)
    text = results.to_csv(index=False) if format == "csv" else results.to_json(orient="records", indent=1)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
