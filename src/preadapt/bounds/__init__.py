"""Checks of the theory's statements: both sides with CIs, a slack and a verdict."""

from preadapt.bounds.arora2019 import (
    block_below_un, block_monotone, jensen_floor, lemma_4_3, lemma_4_3_negatives, lemma_4_4,
    mean_classifier_below_different_class_loss, proposition_6_2, theorem_4_1, theorem_4_5,
)
from preadapt.bounds.check import PREMISE_NOT_MET, BoundCheck, verdict
from preadapt.bounds.spec import BoundsConfig
from preadapt.bounds.suite import Training, comparator_step, every_f_checks, theorem_checks

__all__ = ["BoundCheck", "BoundsConfig", "PREMISE_NOT_MET", "Training", "verdict", "lemma_4_3", "jensen_floor",
           "mean_classifier_below_different_class_loss", "lemma_4_4", "lemma_4_3_negatives",
           "proposition_6_2", "block_below_un", "block_monotone", "theorem_4_1", "theorem_4_5", "every_f_checks",
           "theorem_checks", "comparator_step"]
