"""Configs, presets, the run pipeline, sweeps and their executors, and the results store.

``run`` and ``run_sweep`` here write a report only when given a writer (``report=``): report/ is a
layer above this one. ``preadapt.run`` and ``preadapt.run_sweep`` (``preadapt/api.py``) pass the
HTML writers.
"""

from preadapt.experiment.config import Config, ConfigError, load_config, parse_config
from preadapt.experiment.run import RunReportWriter, RunResult, evaluate, run
from preadapt.experiment.executors import make_executor
from preadapt.experiment.store import Store
from preadapt.experiment.sweep import Sweep, SweepReportWriter, load_sweep, run_sweep

__all__ = ["Config", "ConfigError", "load_config", "parse_config", "RunResult", "run", "evaluate", "Store",
           "Sweep", "load_sweep", "run_sweep", "make_executor", "RunReportWriter", "SweepReportWriter"]
