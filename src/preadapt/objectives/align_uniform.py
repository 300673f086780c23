"""Alignment and uniformity of [Wang20] (Wang and Isola 2020), THEORY.md section 5.

On unit-normalised features u = f(x)/‖f(x)‖ (a zero feature stays 0):

    L_align   = E_{x, x⁺} ‖u(x) − u(x⁺)‖^α                     (α = 2 in THEORY.md),
    L_uniform = ln E_{x, y} e^{−t‖u(x) − u(y)‖²}               (x, y independent; t = 2).

L_uniform is the log of a mean, not a mean of per-sample values, so it has no exact per-sample form.
The per-sample surrogate used here, with the tuple's k negatives y_i (drawn from the marginal,
independently of x), is

    ℓ_uniform(x) = ln (1/k)Σ_i e^{−t‖u(x) − u(y_i)‖²},

and the objective is ℓ_align + λ·ℓ_uniform. By Jensen (ln is concave) twice,
E[ℓ_uniform] ≤ E_x ln E_y[e^{−t‖u(x) − u(y)‖²} | x] ≤ L_uniform: the mean of the surrogate is biased
downward, by O(1/k) in the first step, and its k → ∞ limit is the per-anchor form that appears in
[Wang20]'s asymptotics of InfoNCE; the second gap closes when E_y[· | x] does not depend on x.
To report L_uniform itself, pool the pairs first (``pooled_uniformity``: ln of the mean over all
anchor–negative pairs of a sample), a consistent plug-in estimate.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from preadapt.objectives.base import Encoded, Objective
from preadapt.registry import ComponentConfig


def _unit(features: torch.Tensor) -> torch.Tensor:
    return nn.functional.normalize(features, dim=-1)


def _neg_sq_distances(anchor: torch.Tensor, negatives: torch.Tensor, t: float) -> torch.Tensor:
    """−t‖u(x) − u(y_i)‖² on unit features: anchor (n, d), negatives (n, k, d) → (n, k)."""
    return -t * (anchor.unsqueeze(1) - negatives).square().sum(-1)


def align_loss(anchor: torch.Tensor, positive: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    """Per-sample alignment ‖u(x) − u(x⁺)‖^α (n,): anchor (n, d), positive (n, d), normalised here.

    >>> align_loss(torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 3.0]]))  # ‖e₁ − e₂‖² = 2
    tensor([2.])
    """
    difference = _unit(anchor) - _unit(positive)  # (n, d)
    if alpha == 2.0:
        return difference.square().sum(-1)
    return torch.linalg.vector_norm(difference, dim=-1).pow(alpha)  # the norm's gradient at 0 is taken as 0


def uniform_loss(anchor: torch.Tensor, negatives: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """Per-sample uniformity surrogate ln (1/k)Σ_i e^{−t‖u(x) − u(y_i)‖²} (n,): anchor (n, d),
    negatives (n, k, d), normalised here. Identical features give 0, the maximum.

    >>> uniform_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[[-1.0, 0.0]]]), t=2.0)  # −2·2²
    tensor([-8.])
    """
    exponents = _neg_sq_distances(_unit(anchor), _unit(negatives), t)  # (n, k)
    return torch.logsumexp(exponents, dim=1) - math.log(exponents.shape[1])


def pooled_uniformity(anchor: torch.Tensor, negatives: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """Plug-in L_uniform: ln of the mean of e^{−t‖u(x) − u(y)‖²} over all n·k pairs (a scalar).

    >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> y = torch.tensor([[[1.0, 0.0]], [[0.0, -1.0]]])  # distances² 0 and 4
    >>> round(float(pooled_uniformity(x, y)), 4)  # ln((1 + e^{−8})/2)
    -0.6928
    """
    exponents = _neg_sq_distances(_unit(anchor), _unit(negatives), t)  # (n, k)
    return torch.logsumexp(exponents.flatten(), dim=0) - math.log(exponents.numel())


def align_uniform_loss(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor,
                       alpha: float = 2.0, t: float = 2.0, uniform_weight: float = 1.0) -> torch.Tensor:
    """Per-sample ℓ_align + λ·ℓ_uniform (n,); λ = ``uniform_weight``, shapes as in the two parts.

    >>> z = torch.ones(3, 4)
    >>> align_uniform_loss(z, z, z.view(3, 1, 4))  # collapsed: both parts 0
    tensor([0., 0., 0.])
    """
    return align_loss(anchor, positive, alpha) + uniform_weight * uniform_loss(anchor, negatives, t)


class AlignUniform(Objective):
    """ℓ_align + λ·ℓ_uniform of [Wang20] on encoded tuples: the positive is positives[:, 0], the k
    negatives are negatives[:, :, 0]; ``block_size`` = 1."""

    def __init__(self, alpha: float = 2.0, t: float = 2.0, uniform_weight: float = 1.0, negatives: int = 1) -> None:
        super().__init__()
        if alpha < 1.0:
            raise ValueError(f"alpha must be ≥ 1 (‖·‖^α has an infinite slope at 0 below 1); got {alpha}")
        if t <= 0:
            raise ValueError(f"t must be > 0; got {t}")
        if uniform_weight < 0:
            raise ValueError(f"uniform_weight must be ≥ 0; got {uniform_weight}")
        if negatives < 1:
            raise ValueError(f"negatives must be ≥ 1; got {negatives}")
        self.alpha = alpha
        self.t = t
        self.uniform_weight = uniform_weight
        self.negatives = negatives
        self.block_size = 1

    def forward(self, encoded: Encoded) -> torch.Tensor:  # -> (n,)
        return align_uniform_loss(encoded.anchor, encoded.positives[:, 0], encoded.negatives[:, :, 0],
                                  self.alpha, self.t, self.uniform_weight)


class AlignUniformConfig(ComponentConfig):
    kind: Literal["align_uniform"] = "align_uniform"
    alpha: float = Field(2.0, ge=1.0, description="α, power of the alignment distance (≥ 1: finite gradient)")
    t: float = Field(2.0, gt=0.0, description="t, scale of the squared distances in the uniformity term")
    uniform_weight: float = Field(1.0, ge=0.0, description="λ, weight of the uniformity term")
    negatives: int = Field(1, ge=1, description="k, marginal draws y per anchor in the per-sample uniformity surrogate")


def build_align_uniform(config: AlignUniformConfig) -> AlignUniform:
    return AlignUniform(config.alpha, config.t, config.uniform_weight, config.negatives)
