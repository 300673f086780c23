"""Every statement of [Arora19] that applies to a run, at every checkpoint (THEORY.md section 3).

``every_f_checks`` are the statements that hold for every encoder, whatever trained it;
``theorem_checks`` are Theorems 4.1 and 4.5, which compare the trained f̂ with a comparator f and
assume f̂ minimises the empirical CURL loss: when that premise fails they say why, without a verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from preadapt.bounds.arora2019 import (
    block_below_un, block_monotone, jensen_floor, lemma_4_3, lemma_4_3_negatives, lemma_4_4,
    mean_classifier_below_different_class_loss, proposition_6_2, theorem_4_1, theorem_4_5,
)
from preadapt.bounds.check import TIE_TOLERANCE, BoundCheck
from preadapt.bounds.rademacher import ClassComplexity, generalisation_term, loss_range
from preadapt.bounds.spec import BoundsConfig
from preadapt.estimate.estimate import Estimate
from preadapt.estimate.quantities import Evaluation
from preadapt.estimate.spec import EvaluateConfig
from preadapt.worlds.prior import tau


def every_f_checks(evaluation: Evaluation, prior: np.ndarray, evaluate_config: EvaluateConfig,
                   loss: str) -> list[BoundCheck]:
    """Lemma 4.3 and its step L^μ_sup ≤ L_un^≠, the floor, Lemma 4.4, the k-negative form
    at every k of the grid and the block statements at every b > 1 of the grid.

    On an evaluation without the class-level quantities (``Evaluation.class_level`` False: a world too
    big to enumerate its classes) only the floor, which needs L_un^= alone, is checked: every other
    statement needs μ̂ of the same world (L^μ_sup, s(f), the grids' lifted losses), and a bound is never
    formed from quantities of two worlds."""
    levels = (evaluate_config.level, evaluate_config.verdict_level)
    if not evaluation.class_level:
        return [jensen_floor(evaluation, *levels)]
    t = tau(prior)
    checks = [lemma_4_3(evaluation, t, *levels),
              mean_classifier_below_different_class_loss(evaluation, *levels),
              jensen_floor(evaluation, *levels),
              lemma_4_4(evaluation, loss, *levels)]
    checks += [lemma_4_3_negatives(evaluation, prior, k, loss, *levels) for k in sorted(evaluation.negatives)]
    for b in sorted(evaluation.blocks):
        if b > 1:
            checks += [proposition_6_2(evaluation, t, b, *levels), block_below_un(evaluation, t, b, *levels),
                       block_monotone(evaluation, b, *levels)]
    return checks


@dataclass(frozen=True)
class Training:
    """What the theorems need to know of pretraining: the objective (kind, ℓ, k, b), the number M of
    training tuples and the function class the checkpoints lie in (None: no complexity known)."""

    objective: str
    objective_loss: str | None
    negatives: int
    block_size: int
    tuples: int
    complexity: ClassComplexity | None


def comparator_step(evaluations: dict[int, Evaluation], choice: str | int) -> int:
    """The comparator f: the checkpoint with the lowest held-out L_un (negatives = 1), or the named step."""
    if choice == "best":
        return min(evaluations, key=lambda step: (evaluations[step].l_un_reported.value, step))
    if choice not in evaluations:
        raise ValueError(f"bounds.comparator: got {choice}; allowed: 'best' or a checkpoint step {sorted(evaluations)}")
    return int(choice)


def _empirical(evaluation: Evaluation) -> Estimate | None:
    return evaluation.l_pre_train


def _premise(training: Training, loss: str, hat_step: int, comparator: int, l_hat: Estimate | None,
             l_comparator: Estimate | None) -> str | None:
    """Why f̂ at ``hat_step`` is not the empirical CURL minimiser the theorems assume (None: it may be)."""
    if training.objective != "curl":
        return f"trained with objective '{training.objective}', not the CURL loss that f̂ must minimise"
    if training.objective_loss != loss:
        return f"trained with ℓ = {training.objective_loss}, but L_un is measured with ℓ = {loss}"
    if training.negatives != 1 or training.block_size != 1:
        return (f"the theorems are stated for negatives = 1 and block_size = 1; the objective has "
                f"negatives = {training.negatives}, block_size = {training.block_size}")
    if training.complexity is None:
        return "no Rademacher complexity is known for this encoder class (Gen_M shown as 0)"
    if l_hat is None or l_comparator is None:
        return "the empirical CURL loss on the training tuples was not measured"
    if l_hat.value > l_comparator.value + TIE_TOLERANCE:
        return (f"f̂ (step {hat_step}) has a higher empirical CURL loss on the training tuples than the "
                f"comparator f (step {comparator}): {l_hat.value:.4f} > {l_comparator.value:.4f}")
    return None


def gen_m_note(bounds_config: BoundsConfig, radius_measured: bool = False) -> str:
    """The label of the ``Gen_M`` term: whether it is the rigorous upper bound of docs/theory.md
    ("Gen_M with explicit constants"), which needs the derived constants (both multipliers ≥ 1) and R
    enforced by the encoder (``radius_measured``: R is the largest norm seen, a lower bound on sup‖f‖).

    >>> gen_m_note(BoundsConfig())
    'rigorous upper bound for a class fixed in advance (derived constants)'
    >>> gen_m_note(BoundsConfig(rademacher_constant=0.1), radius_measured=True)
    'not a proven bound: derived constants scaled by 0.1 and 1; R measured, not enforced'
    """
    scales = (bounds_config.rademacher_constant, bounds_config.confidence_constant)
    scaled = f"derived constants scaled by {scales[0]:g} and {scales[1]:g}"
    if min(scales) < 1.0 or radius_measured:
        reasons = [scaled] if min(scales) < 1.0 else []
        reasons += ["R measured, not enforced"] if radius_measured else []
        return "not a proven bound: " + "; ".join(reasons)
    kind = "derived constants" if scales == (1.0, 1.0) else scaled
    return f"rigorous upper bound for a class fixed in advance ({kind})"


def theorem_checks(evaluations: dict[int, Evaluation], prior: np.ndarray, training: Training, loss: str,
                   evaluate_config: EvaluateConfig, bounds_config: BoundsConfig) -> dict[int, list[BoundCheck]]:
    """Theorems 4.1 and 4.5 at every checkpoint f̂ against one comparator f (``bounds.comparator``).

    Gen_M (``generalisation_term``, with the constants derived for ℓ = ``loss``) uses the class that
    contains every checkpoint (``training.complexity``) and R, the largest norm bound over the
    checkpoints; its term note says whether the constants are the rigorous ones (``gen_m_note``). A
    check whose premise fails keeps its sides and terms and gets status "premise not met" with the
    reason. None is checked (an empty mapping) unless every evaluation has the class-level
    quantities (``Evaluation.class_level``): both sides are about L^μ_sup of the pretraining world.
    """
    if not all(evaluation.class_level for evaluation in evaluations.values()):
        return {}
    levels = dict(level=evaluate_config.level, verdict_level=evaluate_config.verdict_level)
    t = tau(prior)
    chosen = comparator_step(evaluations, bounds_config.comparator)
    reference = evaluations[chosen]
    radius = max(e.radius.value for e in evaluations.values())
    complexity = training.complexity
    if complexity is None:  # the premise check below says so; the sides are shown with Gen_M = 0
        rad, gen, parts = Estimate.exact(0.0), Estimate.exact(0.0), {}
    else:
        rad = complexity.rad
        gen, parts = generalisation_term(rad, radius, training.tuples, bounds_config.delta, loss,
                                         rademacher_constant=bounds_config.rademacher_constant,
                                         confidence_constant=bounds_config.confidence_constant,
                                         level=evaluate_config.level)
    common = {"Gen_M": gen, **parts, "Rad_S": rad, "R": Estimate.exact(radius), "M": Estimate.exact(training.tuples),
              "delta": Estimate.exact(bounds_config.delta),
              "rademacher_constant": Estimate.exact(bounds_config.rademacher_constant),
              "confidence_constant": Estimate.exact(bounds_config.confidence_constant),
              "loss_range": Estimate.exact(loss_range(loss, radius)),
              "comparator_step": Estimate.exact(chosen)}
    if complexity is not None and complexity.upper is not None and complexity.rad.method != "exact":
        common["Rad_S_upper"] = Estimate.exact(complexity.upper)
    measured = any(e.radius.method != "exact" for e in evaluations.values())
    notes = {"Rad_S": complexity.label, "Gen_M": gen_m_note(bounds_config, measured)} if complexity is not None else {}
    l_comparator = _empirical(reference)
    out = {}
    for step, hat in evaluations.items():
        l_hat = _empirical(hat)
        terms = dict(common)
        if l_hat is not None and l_comparator is not None:
            terms.update(L_hat_un=l_hat, L_hat_un_comparator=l_comparator)
        same = step == chosen
        checks = [theorem_4_1(hat, reference, t, gen, terms, same, **levels),
                  theorem_4_5(hat, reference, t, loss, gen, terms, same, **levels)]
        reason = _premise(training, loss, step, chosen, l_hat, l_comparator)
        out[step] = [check if reason is None else check.without_verdict(reason) for check in checks]
        out[step] = [_with_notes(check, notes) for check in out[step]]
    return out


def _with_notes(check: BoundCheck, notes: dict[str, str]) -> BoundCheck:
    return replace(check, term_notes={**check.term_notes, **notes})
