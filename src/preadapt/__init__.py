"""preadapt: measure the pretraining-adaptation interface of representation learning.

The public surface: ``run``, ``load_config``, ``evaluate``, sweeps (``load_sweep``, ``run_sweep``,
``make_executor``) and the building blocks below. Anything
not re-exported here may change.

The names load lazily (PEP 562): ``import preadapt.worlds`` runs this file first, and must not pull
in the layers above worlds (experiment, report; DESIGN.md section 2), so each name is imported from
its module when it is first used.
"""

from __future__ import annotations

import importlib
from typing import Any

_SOURCES = {
    "preadapt.api": ["run", "run_sweep"],
    "preadapt.experiment": ["load_config", "evaluate", "Config", "ConfigError", "RunResult", "load_sweep",
                            "make_executor"],
    "preadapt.worlds": ["World", "GaussianWorld", "TopicWorld", "FiniteWorld", "split_of", "draw_tuples", "tau",
                        "tau_k", "register_world"],
    "preadapt.encoders": ["IdentityEncoder", "LinearEncoder", "MLPEncoder", "register_encoder"],
    "preadapt.objectives": ["Objective", "CURL", "curl_loss", "hinge", "logistic", "register_objective"],
    "preadapt.adapt": ["MeanClassifier", "LinearProbe"],
    "preadapt.estimate": ["Estimate", "EvaluateConfig", "avg_k_accuracy", "top_r_accuracy", "evaluate_encoder"],
    "preadapt.bounds": ["BoundCheck", "lemma_4_3", "every_f_checks", "verdict"],
}
_SOURCE_OF = {name: module for module, names in _SOURCES.items() for name in names}

_SUBPACKAGES = ("adapt", "api", "bounds", "cli", "encoders", "estimate", "experiment", "objectives", "pretrain",
                "registry", "report", "worlds")
"""Modules reachable as attributes (``preadapt.report``) without being imported by name first."""

__all__ = [name for names in _SOURCES.values() for name in names]


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    if name not in _SOURCE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_SOURCE_OF[name]), name)
    globals()[name] = value  # later uses skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
