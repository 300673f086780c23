"""The debiased contrastive loss of [Chuang20] (Chuang et al. 2020), THEORY.md section 5.

With class prior τ⁺ (the probability that a negative shares the anchor's class), N negatives u_i,
M extra positives v_i and temperature t:

    g = max{ (1/(1−τ⁺))·[ (1/N)Σ_i e^{f(x)ᵀf(u_i)/t} − τ⁺·(1/M)Σ_i e^{f(x)ᵀf(v_i)/t} ], e^{−1/t} },
    L = −ln( e^{f(x)ᵀf(x⁺)/t} / (e^{f(x)ᵀf(x⁺)/t} + N·g) ).

The bracket estimates the mean of e^{s} over true negatives: from the mean over drawn ones (a mix of
true negatives and, with probability τ⁺, same-class points) it removes the same-class part, estimated
from the extra positives. The floor e^{−1/t} is [Chuang20]'s lower bound for unit-norm features; it is
kept as written although our features have norm ≤ R. τ⁺ = 0 gives InfoNCE with N negatives wherever
the floor is inactive. In the latent-class world of [Arora19] a negative drawn from ρ shares the
anchor's class c with probability ρ(c): with the classes known, ``tau_plus: null`` uses each anchor's
own ρ(c) (exact debiasing); one τ⁺ for all anchors, as in [Chuang20], is exact only for a uniform
prior (τ⁺ = 1/|C|).

Sampler mapping: k = N negative blocks and b = M + 1. The positive block is x⁺ followed by the M
extra positives; only the first point of each negative block is used, since the points of a negative
block share a class.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from preadapt.objectives.base import Encoded, Objective
from preadapt.registry import ComponentConfig


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """ln(1 − e^x) for x < 0, accurate at both ends (Mächler 2012)."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def debiased_loss(anchor: torch.Tensor, positive: torch.Tensor, extra_positives: torch.Tensor,
                  negatives: torch.Tensor, tau_plus: float | torch.Tensor = 0.1, temperature: float = 1.0) -> torch.Tensor:
    """Per-sample debiased losses (n,) in nats: anchor (n, d), positive x⁺ (n, d), extra positives
    v (n, M, d), negatives u (n, N, d); ``tau_plus`` τ⁺ in [0, 1), one for all anchors or one per
    anchor (n,); ``temperature`` t > 0.

    Computed in the log domain: ln g = max(ln bracket − ln(1 − τ⁺), −1/t), with the bracket's log
    from log-sum-exps (−∞ where the bracket is ≤ 0), and L = softplus(ln N + ln g − s⁺). A collapsed
    encoder gives ln(1 + N) for every τ⁺ (the bracket is then (1 − τ⁺)·e^{s}).

    >>> z = torch.ones(2, 3, dtype=torch.float64)
    >>> debiased_loss(z, z, z.view(2, 1, 3), z.view(2, 1, 3).expand(2, 4, 3), tau_plus=0.2)  # ln 5
    tensor([1.6094, 1.6094], dtype=torch.float64)
    """
    tau = torch.as_tensor(tau_plus, dtype=anchor.dtype, device=anchor.device).expand(anchor.shape[0])  # (n,)
    if not bool(((tau >= 0.0) & (tau < 1.0)).all()):
        raise ValueError(f"tau_plus must be in [0, 1); got {tau_plus}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")
    count_neg, count_extra = negatives.shape[1], extra_positives.shape[1]
    if count_neg < 1:
        raise ValueError("debiased_loss needs N ≥ 1 negatives; got 0")
    if bool((tau > 0).any()) and count_extra < 1:
        raise ValueError("debiased_loss with tau_plus > 0 needs M ≥ 1 extra positives "
                         "(block_size = M + 1 ≥ 2); got 0")
    s_pos = (anchor * positive).sum(-1) / temperature  # (n,)
    s_neg = torch.einsum("nd,nkd->nk", anchor, negatives) / temperature  # (n, N)
    log_neg_mean = torch.logsumexp(s_neg, dim=1) - math.log(count_neg)  # (n,) ln (1/N)Σe^{s(u_i)}
    log_bracket = log_neg_mean
    if count_extra > 0:
        s_extra = torch.einsum("nd,nmd->nm", anchor, extra_positives) / temperature  # (n, M)
        biased = tau > 0.0  # τ⁺ = 0 leaves the bracket as the negatives' mean
        log_tau = torch.log(torch.where(biased, tau, torch.ones_like(tau)))
        log_same = log_tau + torch.logsumexp(s_extra, dim=1) - math.log(count_extra)  # (n,)
        gap = log_same - log_neg_mean  # (n,) the bracket is positive iff gap < 0
        positive_bracket = gap < 0
        # a placeholder where the bracket is ≤ 0 keeps the unused branch's gradient finite
        safe_gap = torch.where(positive_bracket & biased, gap, torch.full_like(gap, -1.0))
        debiased = torch.where(positive_bracket, log_neg_mean + _log1mexp(safe_gap), torch.full_like(gap, -math.inf))
        log_bracket = torch.where(biased, debiased, log_neg_mean)
    log_g = torch.clamp(log_bracket - torch.log1p(-tau), min=-1.0 / temperature)  # (n,)
    return nn.functional.softplus(math.log(count_neg) + log_g - s_pos, threshold=40.0)


class Debiased(Objective):
    """The debiased contrastive objective of [Chuang20] on encoded tuples.

    The sampler draws ``negatives`` = N negative blocks and ``block_size`` = M + 1 points per block:
    positives[:, 0] is x⁺, positives[:, 1:] the M extra positives, negatives[:, i, 0] is u_i.
    """

    def __init__(self, tau_plus: float | None = 0.1, temperature: float = 1.0, negatives: int = 1,
                 extra_positives: int = 1) -> None:
        super().__init__()
        if tau_plus is not None and not 0.0 <= tau_plus < 1.0:
            raise ValueError(f"tau_plus must be in [0, 1); got {tau_plus}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0; got {temperature}")
        if negatives < 1 or extra_positives < 1:
            raise ValueError(f"negatives and extra_positives must be ≥ 1; got {negatives} and {extra_positives}")
        self.tau_plus = tau_plus
        self.temperature = temperature
        self.negatives = negatives
        self.extra_positives = extra_positives
        self.block_size = extra_positives + 1
        self.prior: torch.Tensor | None = None  # ρ, for tau_plus None

    def use_prior(self, prior: torch.Tensor) -> None:
        """``tau_plus`` None: each anchor's τ⁺ is ρ(c) of its class c, the probability that a negative
        drawn from the world's prior ρ shares it (exact debiasing; 1/|C| for uniform ρ)."""
        self.prior = torch.as_tensor(prior, dtype=torch.float64)

    def forward(self, encoded: Encoded) -> torch.Tensor:  # -> (n,)
        if self.tau_plus is not None:
            tau_plus = self.tau_plus
        elif self.prior is None:
            raise ValueError("tau_plus: null takes τ⁺ = ρ(c) from the world's prior; call use_prior(prior) first")
        else:
            tau_plus = self.prior.to(encoded.anchor.device, encoded.anchor.dtype)[encoded.anchor_class]  # (n,)
        positives = encoded.positives  # (n, M + 1, d)
        return debiased_loss(encoded.anchor, positives[:, 0], positives[:, 1:], encoded.negatives[:, :, 0],
                             tau_plus, self.temperature)


class DebiasedConfig(ComponentConfig):
    kind: Literal["debiased"] = "debiased"
    tau_plus: float | None = Field(0.1, ge=0.0, lt=1.0,
                                   description="τ⁺, class prior: P(a negative shares the anchor's class); 1/|C| for "
                                               "uniform ρ; null: each anchor's ρ(c) from the world's prior (exact)")
    temperature: float = Field(1.0, gt=0.0, description="t, similarities are divided by it")
    negatives: int = Field(1, ge=1, description="N, negatives per anchor (first point of each negative block)")
    extra_positives: int = Field(1, ge=1, description="M, extra positives per anchor (the sampler draws b = M + 1)")


def build_debiased(config: DebiasedConfig) -> Debiased:
    return Debiased(config.tau_plus, config.temperature, config.negatives, config.extra_positives)
