"""Checks of the theory's statements: both sides with CIs, a slack and a verdict."""

from preadapt.bounds.arora2019 import lemma_4_3
from preadapt.bounds.check import BoundCheck, verdict

__all__ = ["BoundCheck", "verdict", "lemma_4_3"]
