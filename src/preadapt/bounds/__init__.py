"""Checks of the theory's statements: both sides with CIs, a slack and a verdict."""

from preadapt.bounds.arora2019 import (
    jensen_floor, lemma_4_3, lemma_4_4, mean_classifier_below_different_class_loss,
)
from preadapt.bounds.check import BoundCheck, verdict

__all__ = ["BoundCheck", "verdict", "lemma_4_3", "jensen_floor", "mean_classifier_below_different_class_loss", "lemma_4_4"]
