"""Statements of [Arora19] checked on one encoder (THEORY.md section 3)."""

from __future__ import annotations

import math
from dataclasses import replace

from preadapt.bounds.check import BoundCheck, verdict
from preadapt.estimate.collision import CollisionMoments, collision_floor
from preadapt.estimate.estimate import TIE_TOLERANCE, Estimate, PlugIn, combine
from preadapt.estimate.quantities import Evaluation
from preadapt.worlds.prior import tau_k

LIPSCHITZ = {"hinge": 1.0, "logistic": 1.0 / math.log(2.0)}
"""Lipschitz constants L of the losses on a margin (THEORY.md section 3)."""


def lemma_4_3(evaluation: Evaluation, tau: float, level: float = 0.95, verdict_level: float = 0.999,
              rhs_shift: float = 0.0) -> BoundCheck:
    """Lemma 4.3 of [Arora19] (k = 1): L^μ_sup(f) ≤ (L_un(f) − τ)/(1 − τ), for every f.

    lhs: L^μ_sup over 2-class tasks drawn from ρ. rhs: (L_un − τ)/(1 − τ), estimated through the
    decomposition L_un = τ·L_un^= + (1 − τ)·L_un^≠ as L_un^≠ + τ/(1 − τ)·(L_un^= − 1). The slack
    pairs L_un^≠ with L^μ_sup on the same anchors (the finer step L^μ_sup ≤ L_un^≠ is Jensen's
    inequality over x⁺, x⁻), which makes its interval far tighter than that of two independent
    estimates. ``rhs_shift`` moves the right side (a deliberately wrong bound for sensitivity tests).
    On a world of finite examples the L_un^= and L_un^≠ samples draw on the same held-out examples,
    so their sum takes the worst-case standard error (``Evaluation.shared_examples``).
    """
    ratio = tau / (1.0 - tau)

    def right_side(diff_part, lvl: float):
        return combine([(1.0, diff_part(lvl)), (ratio, evaluation.l_un_same(lvl))],
                       shift=rhs_shift - ratio, level=lvl, dependent=evaluation.shared_examples)

    lhs = evaluation.l_sup_mean(level)
    rhs = right_side(evaluation.l_un_diff, level)
    slack = right_side(evaluation.paired_gap, verdict_level)  # includes the error of the plug-in means μ̂
    terms = {"L_un": evaluation.l_un(level), "L_un_same": evaluation.l_un_same(level),
             "L_un_diff": evaluation.l_un_diff(level), "tau": evaluation.tau}
    return BoundCheck("lemma_4_3", "[Arora19] Lemma 4.3", lhs, rhs, slack, verdict(slack), terms)


def jensen_floor(evaluation: Evaluation, level: float = 0.95, verdict_level: float = 0.999,
                 rhs_shift: float = 0.0) -> BoundCheck:
    """The floor of [Arora19] (k = 1): 1 = ℓ(0) ≤ L_un^=(f), for every f.

    Given x, the margin v = f(x)ᵀ(f(x⁺) − f(x⁻)) with x⁺, x⁻ i.i.d. from D_c has E[v | x] = 0, so
    Jensen gives E ℓ(v) ≥ ℓ(0) = 1 for hinge and base-2 logistic; hence also L_un ≥ τ. Written as
    lhs ≤ rhs with lhs = 1 (exact) and rhs = L_un^= (``rhs_shift`` moves it, for sensitivity tests).
    """
    rhs = evaluation.l_un_same(level).affine(1.0, rhs_shift)
    slack = evaluation.l_un_same(verdict_level).affine(1.0, rhs_shift - 1.0)
    return BoundCheck("jensen_floor", "[Arora19] Jensen floor L_un^= ≥ ℓ(0)", Estimate.exact(1.0), rhs, slack,
                      verdict(slack), {"L_un_same": evaluation.l_un_same(level)})


def mean_classifier_below_different_class_loss(evaluation: Evaluation, level: float = 0.95,
                                               verdict_level: float = 0.999, rhs_shift: float = 0.0) -> BoundCheck:
    """The finer step of Lemma 4.3 of [Arora19]: L^μ_sup(f) ≤ L_un^≠(f) (2-class tasks), for every f.

    Jensen over x⁺ and x⁻ given x and the classes (E f(x⁺) = μ_c, E f(x⁻) = μ_c⁻). The two sides are
    measured on the same anchors, so the slack is a paired difference, widened by the error of μ̂.
    """
    lhs = evaluation.l_sup_mean(level)
    rhs = evaluation.l_un_diff(level).affine(1.0, rhs_shift)
    slack = evaluation.paired_gap(verdict_level).affine(1.0, rhs_shift)
    return BoundCheck("mean_below_diff", "[Arora19] Lemma 4.3, step L^μ_sup ≤ L_un^≠", lhs, rhs, slack,
                      verdict(slack), {"L_un_diff": rhs, "L_sup_mean": lhs})


def grows_with_deviation(low_terms: list[tuple[float, Estimate]], high_terms: list[tuple[float, Estimate]],
                         shift: float, level: float, dependent: bool = False) -> Estimate:
    """A linear combination in which s(f) enters with a positive coefficient, from both of its sides.

    ``low_terms`` hold s(f)'s lower side (E s̃ ≤ s(f)) and ``high_terms`` its upper side (the
    plug-in with a log-scale upper end, ``Deviation.upper_side``), the other terms equal: the lower
    end comes from the first, the upper end from the second, so "holds" rests on a lower bound of
    s(f) and "violated" on an upper one. ``dependent`` as in ``combine``.
    """
    low, high = (combine(terms, shift=shift, level=level, dependent=dependent) for terms in (low_terms, high_terms))
    return replace(low, lower=min(low.lower, low.value), upper=max(high.upper, low.value), method="split_half")


def lemma_4_4(evaluation: Evaluation, loss: str, level: float = 0.95, verdict_level: float = 0.999,
              rhs_shift: float = 0.0) -> BoundCheck:
    """Lemma 4.4 of [Arora19] (k = 1): L_un^=(f) − 1 ≤ c'·s(f), for every f, with c' = √2·L.

    ℓ(v) ≤ ℓ(0) + L|v|, and given x the margin v = f(x)ᵀ(f(x⁺) − f(x⁻)) has mean 0 and variance
    2 f(x)ᵀΣf(x) ≤ 2‖Σ‖₂‖f(x)‖², so E|v| ≤ √2·sqrt(‖Σ‖₂)·E‖f(x)‖ class by class (THEORY.md). L is 1
    for hinge and 1/ln 2 for base-2 logistic. The two sides come from independent samples (the
    L_un^= tuples and the class pool; on a world of finite examples both draw on the held-out
    examples, and their difference takes the worst-case standard error). The right side grows with
    s(f): the slack's lower end (a "holds") uses s(f)'s held-out lower side, its upper end (a
    "violated") the upper side (``grows_with_deviation``), so neither verdict rests on the plug-in's
    bias.
    """
    c_prime = math.sqrt(2.0) * LIPSCHITZ[loss]
    deviation = evaluation.deviation
    s_f = deviation.reported(level)
    lhs = evaluation.l_un_same(level).affine(1.0, -1.0)
    rhs = s_f.affine(c_prime, rhs_shift)
    same = evaluation.l_un_same(verdict_level)
    slack = grows_with_deviation([(c_prime, deviation.lower_side), (-1.0, same)],
                                 [(c_prime, deviation.upper_side(verdict_level)), (-1.0, same)], 1.0 + rhs_shift,
                                 verdict_level,
                                 evaluation.shared_examples)
    terms = {"s_f": s_f, "c_prime": Estimate.exact(c_prime), "L_un_same": evaluation.l_un_same(level)}
    return BoundCheck("lemma_4_4", "[Arora19] Lemma 4.4", lhs, rhs, slack, verdict(slack), terms)


def _collision_sides(part: CollisionMoments, plug_ins: dict[str, PlugIn], floor: float, scale: float, level: float,
                     verdict_level: float, rhs_shift: float) -> tuple[Estimate, Estimate, Estimate]:
    """The sides and slack of a collision statement L^μ_sup,D ≤ (L − E g(m))/P(m = 0) on one sample.

    lhs = E[h·1{m = 0} + g(m) − E g(m)]/P(m = 0) (g(m) a control variate with known mean ``floor``,
    which makes a constant f exact), rhs = (E ℓ − E g(m))/P(m = 0) and slack = E[ℓ − g(m) −
    h·1{m = 0}]/P(m = 0) = rhs − lhs tuple by tuple; lhs and slack widened by the error of μ̂.
    """
    lhs = plug_ins["lifted"].apply(part.lifted, level).affine(scale, -floor * scale)
    rhs = part.loss.estimate(level).affine(scale, rhs_shift - floor * scale)
    slack = plug_ins["slack"].apply(part.slack.moments, verdict_level).affine(scale, rhs_shift)
    return lhs, rhs, slack


def lemma_4_3_negatives(evaluation: Evaluation, prior, negatives: int, loss: str, level: float = 0.95,
                        verdict_level: float = 0.999, rhs_shift: float = 0.0) -> BoundCheck:
    """Lemma 4.3 of [Arora19] with k negatives, for every f (THEORY.md section 3):
    hinge: L^μ_sup,D(f) ≤ (L_un(f) − τ_k)/(1 − τ_k); logistic: L^μ_sup,D(f) ≤ (L_un(f) − E[log₂(1+m)])/(1 − τ_k).

    D draws c, c⁻_1..c⁻_k from ρ given c ∉ {c⁻_i}; T is their distinct classes and the label is c.
    Given the collision count m, Jensen over x⁺, x⁻_i gives E[ℓ | m ≥ 1] ≥ g(m) and, on m = 0, the
    mean classifier on T (duplicates only raise the logistic loss). All parts come from one sample of
    k-negative tuples (``Evaluation.negatives``), so the slack is one paired mean and equals rhs − lhs
    (``_collision_sides``; the ``collision_floor`` term is E g(m), exact from ρ). The bound is
    vacuous once the right side reaches ℓ at zero margins on T (1 for hinge, E log₂|T| for logistic):
    then ``note`` says so (decided by the CIs).
    """
    part = evaluation.negatives[negatives]
    t_k = tau_k(prior, negatives)
    scale = 1.0 / (1.0 - t_k)
    floor = collision_floor(prior, negatives, loss)
    lhs, rhs, slack = _collision_sides(part, evaluation.collision_plug_ins[("negatives", negatives)], floor, scale,
                                       level, verdict_level, rhs_shift)
    l_un = part.loss.estimate(level)
    threshold = Estimate.exact(1.0) if loss == "hinge" else part.threshold.estimate(level).affine(scale)
    terms = {"tau_k": Estimate.exact(t_k), "coef_un": Estimate.exact(scale), "coef_tau": Estimate.exact(t_k * scale),
             "L_un": l_un, "collision_floor": Estimate.exact(floor), "vacuity_threshold": threshold}
    vacuous = rhs.lower >= threshold.upper - TIE_TOLERANCE  # a constant f ties them exactly (hinge: 1 = 1)
    note = "vacuous: the right side has reached ℓ at zero margins on T" if vacuous else None
    return BoundCheck("lemma_4_3_negatives", "[Arora19] Lemma 4.3, k negatives", lhs, rhs, slack, verdict(slack),
                      terms, {"negatives": negatives}, note)


def proposition_6_2(evaluation: Evaluation, tau: float, block_size: int, level: float = 0.95,
                    verdict_level: float = 0.999, rhs_shift: float = 0.0) -> BoundCheck:
    """Proposition 6.2 of [Arora19], first step, for every f: L^μ_sup(f) ≤ (L^block_un(f) − τ)/(1 − τ).

    The block means of f over b positives (negatives) have expectation μ_c (μ_c⁻), so the proof of
    Lemma 4.3 goes through with the block margin; paired on one sample of block tuples
    (``_collision_sides`` with g(m) = 1{c⁻ = c}, E g = τ).
    """
    part = evaluation.blocks[block_size]
    scale = 1.0 / (1.0 - tau)
    lhs, rhs, slack = _collision_sides(part, evaluation.collision_plug_ins[("blocks", block_size)], tau, scale,
                                       level, verdict_level, rhs_shift)
    return BoundCheck("proposition_6_2", "[Arora19] Proposition 6.2", lhs, rhs, slack, verdict(slack),
                      {"tau": Estimate.exact(tau), "L_un_block": part.loss.estimate(level)}, {"block_size": block_size})


def block_below_un(evaluation: Evaluation, tau: float, block_size: int, level: float = 0.95,
                   verdict_level: float = 0.999, rhs_shift: float = 0.0) -> BoundCheck:
    """Proposition 6.2 of [Arora19], second step, for every f:
    (L^block_un(f) − τ)/(1 − τ) ≤ (L_un(f) − τ)/(1 − τ).

    ℓ is convex and the block margin is the mean of b single-pair margins, so ℓ(block margin) is at
    most the mean of the b single-pair losses, tuple by tuple; that mean estimates L_un.
    """
    part = evaluation.blocks[block_size]
    scale = 1.0 / (1.0 - tau)
    block, un = part.loss.estimate(level), part.un.estimate(level)
    lhs = block.affine(scale, -tau * scale)
    rhs = un.affine(scale, rhs_shift - tau * scale)
    slack = part.below_un.estimate(verdict_level).affine(scale, rhs_shift)
    return BoundCheck("block_below_un", "[Arora19] Proposition 6.2, L^block_un ≤ L_un", lhs, rhs, slack,
                      verdict(slack), {"L_un_block": block, "L_un": un, "tau": Estimate.exact(tau)},
                      {"block_size": block_size})


def block_monotone(evaluation: Evaluation, block_size: int, level: float = 0.95, verdict_level: float = 0.999,
                   rhs_shift: float = 0.0) -> BoundCheck:
    """L^block_un is non-increasing in b ([Arora19] section 6), for every f: L^block_un(b) ≤ L^block_un(b')
    for the previous block size b' < b of the grid.

    The mean of b margins is the mean of the b cyclic windows' means of b' margins, so by convexity
    ℓ(block of b) is at most the windows' mean loss, tuple by tuple (a paired slack). The right side
    is L^block_un(b') estimated by those windows on the same tuples (the ``L_un_block`` row at b'
    estimates it by the first b' of each block instead).
    """
    part = evaluation.blocks[block_size]
    lhs = part.loss.estimate(level)
    rhs = part.window.estimate(level).affine(1.0, rhs_shift)
    slack = part.monotone.estimate(verdict_level).affine(1.0, rhs_shift)
    return BoundCheck("block_monotone", "[Arora19] L^block_un non-increasing in b", lhs, rhs, slack, verdict(slack),
                      {"L_un_block": lhs, "L_un_block_prev": rhs, "b_prev": Estimate.exact(part.previous)},
                      {"block_size": block_size})


def _decomposed_un(evaluation: Evaluation, tau: float, level: float) -> list[tuple[float, Estimate]]:
    """(L_un − τ)/(1 − τ) = L_un^≠ + τ/(1 − τ)·(L_un^= − 1) as combine terms (the shift −τ/(1 − τ) apart)."""
    return [(1.0, evaluation.l_un_diff(level)), (tau / (1.0 - tau), evaluation.l_un_same(level))]


def theorem_4_1(hat: Evaluation, comparator: Evaluation, tau: float, generalisation: Estimate,
                terms: dict[str, Estimate], same: bool = False, level: float = 0.95, verdict_level: float = 0.999,
                rhs_shift: float = 0.0) -> BoundCheck:
    """Theorem 4.1 of [Arora19]: L^μ_sup(f̂) ≤ (L_un(f) − τ)/(1 − τ) + Gen_M/(1 − τ), for f̂ the
    empirical minimiser of the CURL loss and any f in the class, with probability ≥ 1 − δ.

    ``hat`` and ``comparator`` are the evaluations of f̂ and f (``same``: one checkpoint, then the
    slack pairs L^μ_sup with L_un^≠ as in Lemma 4.3); ``generalisation`` is Gen_M; ``terms`` are the
    numbers it is made of. The premise (f̂ minimises the empirical loss) is the caller's to check.
    Sides of different encoders come from the same fresh samples, correlated in an unknown way, so
    their slack takes the worst-case standard error (``combine(..., dependent=True)``); so do the
    parts of one encoder on a world of finite examples (``Evaluation.shared_examples``).
    """
    ratio, scale = tau / (1.0 - tau), 1.0 / (1.0 - tau)
    shared = comparator.shared_examples

    def right(lvl: float) -> list[tuple[float, Estimate]]:
        return _decomposed_un(comparator, tau, lvl) + [(scale, generalisation)]

    lhs = hat.l_sup_mean(level)
    rhs = combine(right(level), shift=rhs_shift - ratio, level=level, dependent=shared)
    if same:
        paired = [(1.0, hat.paired_gap(verdict_level)), *right(verdict_level)[1:]]
        slack = combine(paired, shift=rhs_shift - ratio, level=verdict_level, dependent=shared)
    else:
        slack = combine([*right(verdict_level), (-1.0, hat.l_sup_mean(verdict_level))],
                        shift=rhs_shift - ratio, level=verdict_level, dependent=True)
    terms = {"tau": Estimate.exact(tau), "L_un": comparator.l_un_reported,
             "L_un_same": comparator.l_un_same(level), "L_un_diff": comparator.l_un_diff(level),
             **terms}
    return BoundCheck("theorem_4_1", "[Arora19] Theorem 4.1", lhs, rhs, slack, verdict(slack), terms)


def theorem_4_5(hat: Evaluation, comparator: Evaluation, tau: float, loss: str, generalisation: Estimate,
                terms: dict[str, Estimate], same: bool = False, level: float = 0.95, verdict_level: float = 0.999,
                rhs_shift: float = 0.0) -> BoundCheck:
    """Theorem 4.5 of [Arora19]: L^μ_sup(f̂) ≤ L_un^≠(f) + β·s(f) + η·Gen_M with β = c'·τ/(1 − τ),
    η = 1/(1 − τ) and c' = √2·L (Lemma 4.4); arguments as in ``theorem_4_1``.

    s(f) enters from both sides (``grows_with_deviation``). At the comparator's own step the paired
    L_un^≠ − L^μ_sup carries the error of μ̂, and s(f) comes from the same pool of points as μ̂: the
    two are combined with the worst-case standard error, then Gen_M (independent) is added. On a
    world of finite examples every part draws on the same held-out examples: worst case throughout.
    """
    c_prime = math.sqrt(2.0) * LIPSCHITZ[loss]
    beta, eta = c_prime * tau / (1.0 - tau), 1.0 / (1.0 - tau)
    deviation = comparator.deviation
    shared = comparator.shared_examples

    def right(lvl: float, s_side: Estimate) -> list[tuple[float, Estimate]]:
        return [(1.0, comparator.l_un_diff(lvl)), (beta, s_side), (eta, generalisation)]

    def sides(build, dependent: bool = False) -> Estimate:
        return grows_with_deviation(build(deviation.lower_side), build(deviation.upper_side(verdict_level)), rhs_shift,
                                    verdict_level,
                                    dependent)

    lhs = hat.l_sup_mean(level)
    rhs = grows_with_deviation(right(level, deviation.lower_side), right(level, deviation.upper_side(level)), rhs_shift,
                               level,
                               shared)
    if same:
        def paired(s_side: Estimate) -> list[tuple[float, Estimate]]:
            pool_part = combine([(1.0, hat.paired_gap(verdict_level)), (beta, s_side)],
                                level=verdict_level, dependent=True)  # μ̂ and s(f) share one pool
            return [(1.0, pool_part), (eta, generalisation)]
        slack = sides(paired, shared)
    else:
        def unpaired(s_side: Estimate) -> list[tuple[float, Estimate]]:
            return right(verdict_level, s_side) + [(-1.0, hat.l_sup_mean(verdict_level))]
        slack = sides(unpaired, dependent=True)  # two encoders on the same samples
    terms = {"tau": Estimate.exact(tau), "L_un_diff": comparator.l_un_diff(level),
             "s_f": deviation.reported(level), "c_prime": Estimate.exact(c_prime), "beta": Estimate.exact(beta),
             "eta": Estimate.exact(eta), **terms}
    return BoundCheck("theorem_4_5", "[Arora19] Theorem 4.5", lhs, rhs, slack, verdict(slack), terms)
