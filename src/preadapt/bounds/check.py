"""A bound check: both sides as Estimates, their slack, and a verdict (THEORY.md section 3)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from preadapt.estimate.estimate import TIE_TOLERANCE, Estimate
from preadapt.estimate.quantities import Measurement

Status = Literal["holds", "violated", "inconclusive"]


def verdict(slack: Estimate) -> Status:
    """The CI rule for a statement lhs ≤ rhs, given the interval of slack = rhs − lhs.

    "holds" when the interval lies above 0, "violated" only when it lies entirely below 0, else
    "inconclusive". Exact ties within 1e-9 count as holding (a constant f makes Lemma 4.3 an
    equality).

    >>> verdict(Estimate(0.2, 0.1, 0.3, 100, 0.999, "normal"))
    'holds'
    >>> verdict(Estimate(-0.2, -0.3, -0.1, 100, 0.999, "normal"))
    'violated'
    >>> verdict(Estimate(0.0, -0.1, 0.1, 100, 0.999, "normal"))
    'inconclusive'
    """
    if slack.lower >= -TIE_TOLERANCE:
        return "holds"
    if slack.upper < -TIE_TOLERANCE:
        return "violated"
    return "inconclusive"


@dataclass(frozen=True)
class BoundCheck:
    """One statement lhs ≤ rhs evaluated on one encoder.

    ``lhs`` and ``rhs`` are at the reporting level; ``slack`` (rhs − lhs) is at the verdict level,
    estimated from paired samples where the statement allows, and decides ``status``. ``terms``
    holds every number the right side is made of.
    """

    name: str
    source: str
    lhs: Estimate
    rhs: Estimate
    slack: Estimate
    status: Status
    terms: dict[str, Estimate] = field(default_factory=dict)

    def measurements(self) -> list[Measurement]:
        context = {"bound": self.name, "status": self.status}
        return [
            Measurement("bound_lhs", self.lhs, context),
            Measurement("bound_rhs", self.rhs, context),
            Measurement("bound_slack", self.slack, context),
        ]
