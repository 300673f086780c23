"""Loss functions ℓ on a margin vector, as in section 3 of THEORY.md ([Arora19]).

Each takes margins ``v: (..., k)`` and returns per-sample losses ``(...)``. A margin is the score of
the right answer minus the score of one wrong answer, so a large margin means a small loss.
"""

from __future__ import annotations

import math

import torch

LN2 = math.log(2.0)


def hinge(margins: torch.Tensor) -> torch.Tensor:
    """Hinge loss ℓ(v) = max(0, 1 + max_i(−v_i)) of [Arora19].

    >>> hinge(torch.tensor([[0.0, 3.0], [2.0, 1.5], [0.5, 0.8]]))
    tensor([1.0000, 0.0000, 0.5000])
    """
    return torch.clamp(1.0 - margins.min(dim=-1).values, min=0.0)


def logistic(margins: torch.Tensor) -> torch.Tensor:
    """Base-2 logistic loss ℓ(v) = log₂(1 + Σ_i exp(−v_i)) of [Arora19]; ℓ(0) = log₂(1 + k).

    >>> [round(v, 12) for v in logistic(torch.zeros(2, 1, dtype=torch.float64)).tolist()]  # log1p(1)/ln 2
    [1.0, 1.0]
    >>> round(float(logistic(torch.zeros(1, 3))[0]), 6)  # log2(4)
    2.0
    """
    if margins.shape[-1] == 1:  # one negative: log(1 + e^{−v}) = softplus(−v), linear only past 40 (error e^{−40})
        return torch.nn.functional.softplus(-margins[..., 0], threshold=40.0) / LN2
    zero = torch.zeros(margins.shape[:-1] + (1,), dtype=margins.dtype, device=margins.device)
    return torch.logsumexp(torch.cat([zero, -margins], dim=-1), dim=-1) / LN2


def cross_entropy(margins: torch.Tensor) -> torch.Tensor:
    """Natural-log logistic loss, ln(1 + Σ_i exp(−v_i)): softmax cross-entropy written on margins.

    It is ``ln 2 · logistic``; the linear probe trains with it so that its penalty has the usual
    scale (scikit-learn's ``LogisticRegression``).

    >>> round(float(cross_entropy(torch.zeros(1, 1))[0]), 6)  # ln 2
    0.693147
    """
    return logistic(margins) * LN2


def margins_from_scores(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Margins of a classifier: ``scores: (..., K)``, ``labels: (...)`` in [0, K) → ``(..., K−1)``.

    Entry j is score[label] − score[j] over the K−1 wrong classes j, in increasing order of j.

    >>> margins_from_scores(torch.tensor([[1.0, 3.0, 0.0]]), torch.tensor([1]))
    tensor([[2., 3.]])
    """
    labels = labels.unsqueeze(-1)  # (..., 1)
    wrong = torch.arange(scores.shape[-1] - 1, device=scores.device)  # (K−1,)
    others = wrong + (wrong >= labels).long()  # (..., K−1): the wrong classes j < y, then j + 1 for j ≥ y
    return scores.gather(-1, labels) - scores.gather(-1, others)  # gathers: a boolean mask is several times slower


LOSSES = {"hinge": hinge, "logistic": logistic}
"""The CURL losses by config name."""
