"""preadapt: measure the pretraining-adaptation interface of representation learning.

The public surface: ``run``, ``load_config``, ``evaluate``, sweeps (``load_sweep``, ``run_sweep``,
``make_executor``) and the building blocks below. Anything
not re-exported here may change.
"""

from preadapt.adapt import LinearProbe, MeanClassifier
from preadapt.bounds import BoundCheck, every_f_checks, lemma_4_3, verdict
from preadapt.encoders import IdentityEncoder, LinearEncoder, MLPEncoder, register_encoder
from preadapt.estimate import Estimate, EvaluateConfig, avg_k_accuracy, evaluate_encoder, top_r_accuracy
from preadapt.experiment import (
    Config, ConfigError, RunResult, evaluate, load_config, load_sweep, make_executor, run, run_sweep,
)
from preadapt.objectives import CURL, curl_loss, hinge, logistic, register_objective
from preadapt.worlds import (
    FiniteWorld, GaussianWorld, TopicWorld, World, draw_tuples, register_world, split_of, tau, tau_k,
)

__all__ = [
    "run", "load_config", "evaluate", "Config", "ConfigError", "RunResult", "load_sweep", "run_sweep", "make_executor",
    "World", "GaussianWorld", "TopicWorld", "FiniteWorld", "split_of", "draw_tuples", "tau", "tau_k", "register_world",
    "IdentityEncoder", "LinearEncoder", "MLPEncoder", "register_encoder",
    "CURL", "curl_loss", "hinge", "logistic", "register_objective",
    "MeanClassifier", "LinearProbe",
    "Estimate", "EvaluateConfig", "avg_k_accuracy", "top_r_accuracy", "evaluate_encoder",
    "BoundCheck", "lemma_4_3", "every_f_checks", "verdict",
]
