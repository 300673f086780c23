"""Statements of [Arora19] checked on one encoder (THEORY.md section 3)."""

from __future__ import annotations

import math

from preadapt.bounds.check import BoundCheck, verdict
from preadapt.estimate.estimate import Estimate, combine
from preadapt.estimate.quantities import Evaluation

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
    """
    ratio = tau / (1.0 - tau)

    def right_side(diff_part: str, lvl: float):
        return combine([(1.0, evaluation.estimate(diff_part, lvl)), (ratio, evaluation.estimate("L_un_same", lvl))],
                       shift=rhs_shift - ratio, level=lvl)

    lhs = evaluation.estimate("L_sup_mean", level)
    rhs = right_side("L_un_diff", level)
    slack = right_side("diff_minus_mean", verdict_level)  # includes the error of the plug-in means μ̂
    terms = {name: evaluation.estimate(name, level) for name in ("L_un", "L_un_same", "L_un_diff")}
    terms["tau"] = evaluation.get("tau")
    return BoundCheck("lemma_4_3", "[Arora19] Lemma 4.3", lhs, rhs, slack, verdict(slack), terms)


def jensen_floor(evaluation: Evaluation, level: float = 0.95, verdict_level: float = 0.999,
                 rhs_shift: float = 0.0) -> BoundCheck:
    """The floor of [Arora19] (k = 1): 1 = ℓ(0) ≤ L_un^=(f), for every f.

    Given x, the margin v = f(x)ᵀ(f(x⁺) − f(x⁻)) with x⁺, x⁻ i.i.d. from D_c has E[v | x] = 0, so
    Jensen gives E ℓ(v) ≥ ℓ(0) = 1 for hinge and base-2 logistic; hence also L_un ≥ τ. Written as
    lhs ≤ rhs with lhs = 1 (exact) and rhs = L_un^= (``rhs_shift`` moves it, for sensitivity tests).
    """
    rhs = evaluation.estimate("L_un_same", level).affine(1.0, rhs_shift)
    slack = evaluation.estimate("L_un_same", verdict_level).affine(1.0, rhs_shift - 1.0)
    return BoundCheck("jensen_floor", "[Arora19] Jensen floor L_un^= ≥ ℓ(0)", Estimate.exact(1.0), rhs, slack,
                      verdict(slack), {"L_un_same": evaluation.estimate("L_un_same", level)})


def mean_classifier_below_different_class_loss(evaluation: Evaluation, level: float = 0.95,
                                               verdict_level: float = 0.999, rhs_shift: float = 0.0) -> BoundCheck:
    """The finer step of Lemma 4.3 of [Arora19]: L^μ_sup(f) ≤ L_un^≠(f) (2-class tasks), for every f.

    Jensen over x⁺ and x⁻ given x and the classes (E f(x⁺) = μ_c, E f(x⁻) = μ_c⁻). The two sides are
    measured on the same anchors, so the slack is a paired difference, widened by the error of μ̂.
    """
    lhs = evaluation.estimate("L_sup_mean", level)
    rhs = evaluation.estimate("L_un_diff", level).affine(1.0, rhs_shift)
    slack = evaluation.estimate("diff_minus_mean", verdict_level).affine(1.0, rhs_shift)
    return BoundCheck("mean_below_diff", "[Arora19] Lemma 4.3, step L^μ_sup ≤ L_un^≠", lhs, rhs, slack,
                      verdict(slack), {"L_un_diff": rhs, "L_sup_mean": lhs})


def lemma_4_4(evaluation: Evaluation, loss: str, level: float = 0.95, verdict_level: float = 0.999,
              rhs_shift: float = 0.0) -> BoundCheck:
    """Lemma 4.4 of [Arora19] (k = 1): L_un^=(f) − 1 ≤ c'·s(f), for every f, with c' = √2·L.

    ℓ(v) ≤ ℓ(0) + L|v|, and given x the margin v = f(x)ᵀ(f(x⁺) − f(x⁻)) has mean 0 and variance
    2 f(x)ᵀΣf(x) ≤ 2‖Σ‖₂‖f(x)‖², so E|v| ≤ √2·sqrt(‖Σ‖₂)·E‖f(x)‖ class by class (THEORY.md). L is 1
    for hinge and 1/ln 2 for base-2 logistic. The two sides come from independent samples (the
    L_un^= tuples and the class pool); the slack's interval is normal, with s(f)'s bootstrap
    standard error. The plug-in ‖Σ̂‖₂ is biased upward, which can hide a violation but not create one.
    """
    c_prime = math.sqrt(2.0) * LIPSCHITZ[loss]
    s_f = evaluation.get("s_f")
    lhs = evaluation.estimate("L_un_same", level).affine(1.0, -1.0)
    rhs = s_f.affine(c_prime, rhs_shift)
    slack = combine([(c_prime, s_f), (-1.0, evaluation.estimate("L_un_same", verdict_level))],
                    shift=1.0 + rhs_shift, level=verdict_level)
    terms = {"s_f": s_f, "c_prime": Estimate.exact(c_prime), "L_un_same": evaluation.estimate("L_un_same", level)}
    return BoundCheck("lemma_4_4", "[Arora19] Lemma 4.4", lhs, rhs, slack, verdict(slack), terms)
