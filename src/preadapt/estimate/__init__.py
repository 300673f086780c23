"""Estimates with confidence intervals, exact AVG-k / TOP-R, and population quantities."""

from preadapt.estimate.avg_k import avg_k_accuracy, avg_k_estimate, top_r_accuracy, top_r_estimate
from preadapt.estimate.estimate import Estimate, RunningMean, combine, mean_estimate, stratified_mean
from preadapt.estimate.quantities import Evaluation, Measurement, evaluate_encoder
from preadapt.estimate.spec import EvaluateConfig

__all__ = [
    "Estimate", "RunningMean", "mean_estimate", "combine", "stratified_mean", "avg_k_accuracy", "avg_k_estimate",
    "top_r_accuracy", "top_r_estimate", "Evaluation", "Measurement", "evaluate_encoder", "EvaluateConfig",
]
