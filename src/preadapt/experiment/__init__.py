"""Configs, presets, the run pipeline and the results store."""

from preadapt.experiment.config import Config, ConfigError, load_config, parse_config
from preadapt.experiment.run import RunResult, evaluate, run
from preadapt.experiment.store import Store

__all__ = ["Config", "ConfigError", "load_config", "parse_config", "RunResult", "run", "evaluate", "Store"]
