"""The public entry points that write a report: ``preadapt.run`` and ``preadapt.run_sweep``.

They are the pipeline (``preadapt.experiment.run.run``) and the sweep driver
(``preadapt.experiment.sweep.run_sweep``) with the HTML report writers of ``preadapt.report`` passed
in: experiment sits below report (DESIGN.md section 2) and takes the writer as an argument; this
module, above both, supplies it. The command line passes the same writers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from preadapt.experiment.config import Config
from preadapt.experiment.executors import Executor
from preadapt.experiment.run import RunReportWriter, RunResult
from preadapt.experiment.run import run as run_pipeline
from preadapt.experiment.sweep import Sweep, SweepProgress, SweepReportWriter, SweepSummary
from preadapt.experiment.sweep import run_sweep as run_sweep_driver
from preadapt.report.html import write_report
from preadapt.report.sweep import write_sweep_report


def run(config: Config | dict | str | Path, out: str | Path | None = None, force: bool = False,
        progress: Callable[[str, int, int], None] | None = None,
        report: RunReportWriter | None = write_report) -> RunResult:
    """Pretrain, evaluate every checkpoint and, when ``out`` is given, write the run's files and its
    report (``report.html`` and ``figures/``, by ``report``; None writes no report). Without ``out``
    nothing is written. Every other argument and the outcome are those of
    ``preadapt.experiment.run.run``: ``progress(stage, done, total)``; a failed run is returned with
    status ``failed``; ``out`` must be empty unless ``force``; Ctrl-C raises RunInterrupted.

    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "tiny"
    >>> result = run({"name": "tiny", "world": {"kind": "gaussian", "classes": 4, "dim": 4},
    ...               "encoder": {"kind": "linear", "out_dim": 4},
    ...               "pretrain": {"tuples": 256, "epochs": 1, "batch_size": 128, "checkpoints": [0]},
    ...               "evaluate": {"samples": 512, "mean_samples": 64, "test_per_class": 16,
    ...                            "task_classes": [2, 3], "top_r": [1], "probe_tasks": 4,
    ...                            "probe_shots": 8, "probe_val": 8, "star_samples": 32, "bootstrap": 10}},
    ...              out=out)
    >>> result.status, sorted(p.name for p in out.iterdir() if not p.name.startswith("results.sqlite-"))
    ('finished', ['checkpoints', 'config.yaml', 'figures', 'report.html', 'results.csv', 'results.sqlite'])
    """
    return run_pipeline(config, out, force, progress, report=report)


def run_sweep(sweep: Sweep, out: str | Path, executor: Executor, retry_failed: bool = False,
              progress: Callable[[SweepProgress], None] | None = None,
              report: SweepReportWriter | None = write_sweep_report) -> SweepSummary:
    """Run the sweep's runs not yet finished (failed ones only with ``retry_failed``), then write
    ``results.csv`` and the sweep report (``report.html`` and ``figures/``, by ``report``; None writes
    no report). Resumable, and Ctrl-C returns a summary with ``interrupted`` set: see
    ``preadapt.experiment.sweep.run_sweep``. The report is written by the driver, in this process,
    whichever executor computed the runs.

    >>> import tempfile
    >>> from preadapt.experiment.executors import InProcess
    >>> from preadapt.experiment.sweep import SweepSpec, expand
    >>> base = {"world": {"kind": "gaussian", "classes": 3, "dim": 2}, "encoder": {"kind": "linear", "out_dim": 2},
    ...         "pretrain": {"tuples": 64, "epochs": 1, "batch_size": 64, "checkpoints": []},
    ...         "evaluate": {"samples": 64, "mean_samples": 32, "test_per_class": 8, "task_classes": [2],
    ...                      "top_r": [1], "probe_tasks": 2, "probe_shots": 4, "probe_val": 4, "star_samples": 8,
    ...                      "bootstrap": 10}}
    >>> sweep = expand(SweepSpec(name="doc", base=base, grid={"objective.negatives": [1, 2]}), "doc", Path("."))
    >>> out = Path(tempfile.mkdtemp())
    >>> summary = run_sweep(sweep, out, InProcess())
    >>> sorted(summary.statuses.values()), sorted(p.name for p in out.iterdir() if p.suffix != ".sqlite-wal")
    (['finished', 'finished'], ['.lock', 'figures', 'report.html', 'results.csv', 'results.sqlite'])
    """
    return run_sweep_driver(sweep, out, executor, retry_failed, progress, report=report)
