"""Configs, presets, the run pipeline, sweeps and their executors, and the results store."""

from preadapt.experiment.config import Config, ConfigError, load_config, parse_config
from preadapt.experiment.run import RunResult, evaluate, run
from preadapt.experiment.executors import make_executor
from preadapt.experiment.store import Store
from preadapt.experiment.sweep import Sweep, load_sweep, run_sweep

__all__ = ["Config", "ConfigError", "load_config", "parse_config", "RunResult", "run", "evaluate", "Store",
           "Sweep", "load_sweep", "run_sweep", "make_executor"]
