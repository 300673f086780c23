"""The ``preadapt`` command line: parses, calls experiment/ and report/, prints.

Exit codes: 0 success; 2 invalid config or arguments (one line, nothing written); 1 a run failed
(recorded in the store).
"""

from __future__ import annotations

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
    from preadapt.experiment.config import ConfigError, load_config
    from preadapt.experiment.run import prepare_output, resolve_device, run

    try:
        resolved = load_config(config, overrides, preset)
        resolve_device(resolved.device)
        target = out if out is not None else Path("runs") / resolved.name
        if dry_run:
            console.print(resolved.to_yaml(), markup=False, highlight=False, end="")
            return
        prepare_output(target, force)
    except ConfigError as error:
        _fail(str(error))

    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=errors, transient=True, disable=not errors.is_terminal) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done)

        result = run(resolved, out=target, force=True, progress=progress)

    if len(result.results):
        _print_summary(result.results, result.run_id)
    if result.status != "finished":
        _fail(f"run {result.run_id} failed: {result.error} (recorded in {target / 'results.sqlite'})", code=1)
    console.print(f"wrote {target}/ (report: {target / 'report.html'})", markup=False, highlight=False)


@app.command("presets")
def presets_command() -> None:
    """List the presets, one line each."""
    from preadapt.experiment.presets import preset_descriptions

    for name, description in preset_descriptions().items():
        console.print(f"{name:20s} {description}", markup=False, highlight=False)


def _open_store(directory: Path):
    from preadapt.experiment.store import Store

    path = directory / "results.sqlite"
    if not path.is_file():
        _fail(f"{directory}: no results.sqlite here (is it a run directory?)")
    return Store(path)


@app.command("report")
def report_command(directory: Path = typer.Argument(..., help="a run directory")) -> None:
    """Rebuild report.html and figures/ of a run directory from its store."""
    from preadapt.report.html import write_report

    store = _open_store(directory)
    try:
        results, runs = store.results(), store.runs()
    finally:
        store.close()
    config_file = directory / "config.yaml"
    config_yaml = config_file.read_text() if config_file.is_file() else ""
    path = write_report(directory, results, runs, config_yaml, title=f"preadapt run: {directory.name}")
    console.print(f"wrote {path}", markup=False, highlight=False)


@app.command("results")
def results_command(
    directory: Path = typer.Argument(..., help="a run directory"),
    format: str = typer.Option("csv", "--format", help="csv or json"),
) -> None:
    """Print the tidy results table of a run directory as CSV or JSON (for pandas)."""
    if format not in ("csv", "json"):
        _fail(f"--format: got {format!r}; allowed: csv, json")
    store = _open_store(directory)
    try:
        results = store.results()
    finally:
        store.close()
    text = results.to_csv(index=False) if format == "csv" else results.to_json(orient="records", indent=1)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
