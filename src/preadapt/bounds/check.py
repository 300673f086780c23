"""A bound check: both sides as Estimates, their slack, and a verdict (THEORY.md section 3)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from preadapt.estimate.estimate import TIE_TOLERANCE, Estimate
from preadapt.estimate.quantities import Measurement

Status = Literal["holds", "violated", "inconclusive", "premise not met"]
PREMISE_NOT_MET = "premise not met"


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
    context: dict[str, int] = field(default_factory=dict)  # negatives / block_size of an instanced statement
    note: str | None = None  # why a premise is not met; "vacuous"; ...
    term_notes: dict[str, str] = field(default_factory=dict)  # e.g. which function class Rad_S is for

    def measurements(self) -> list[Measurement]:
        """Rows ``bound_lhs``, ``bound_rhs``, ``bound_slack`` and one ``bound_term`` per term."""
        context = {"bound": self.name, "status": self.status, **self.context}
        if self.note:
            context["note"] = self.note
        sides = [Measurement(quantity, estimate, context) for quantity, estimate in
                 (("bound_lhs", self.lhs), ("bound_rhs", self.rhs), ("bound_slack", self.slack))]
        terms = []
        for term, estimate in self.terms.items():
            term_context = {"bound": self.name, "status": self.status, "term": term, **self.context}
            if term in self.term_notes:
                term_context["note"] = self.term_notes[term]
            terms.append(Measurement("bound_term", estimate, term_context))
        return sides + terms

    def without_verdict(self, reason: str) -> "BoundCheck":
        """The same sides with status "premise not met" and the reason as its note."""
        return replace(self, status=PREMISE_NOT_MET, note=reason)
