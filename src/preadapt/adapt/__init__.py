"""Adapters on frozen features: the mean classifier and linear heads (batched over many tasks)."""

from preadapt.adapt.linear import LinearProbe, best_linear_head, fit_linear_heads
from preadapt.adapt.mean_classifier import MeanClassifier

__all__ = ["MeanClassifier", "LinearProbe", "fit_linear_heads", "best_linear_head"]
