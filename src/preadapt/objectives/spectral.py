"""The spectral contrastive loss of [HaoChen21] (HaoChen et al. 2021), THEORY.md section 5.

    L(f) = −2·E_{x, x⁺}[f(x)ᵀf(x⁺)] + E_{x, x'}[(f(x)ᵀf(x'))²],  x, x' independent.

Per sample: −2 f(x)ᵀf(x⁺) + (1/k)Σ_i (f(x)ᵀf(x⁻_i))². The sampler draws each x⁻_i from the marginal
(c⁻_i ~ ρ, independently of the anchor's class), so x⁻_i is an independent copy x' and the mean of the
per-sample values is an unbiased estimate of L(f) for every k ≥ 1 (k = 1 is enough; more negatives
only lower the variance). Blocks are not used: b = 1, and with larger blocks only the first point of
each block is read.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from preadapt.objectives.base import Encoded, Objective
from preadapt.registry import ComponentConfig


def spectral_loss(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """Per-sample spectral contrastive losses (n,): anchor (n, d), positive (n, d), negatives (n, k, d).

    A collapsed encoder (all features z) gives −2‖z‖² + ‖z‖⁴, smallest (−1) at ‖z‖ = 1.

    >>> z = torch.ones(2, 2, dtype=torch.float64)
    >>> spectral_loss(z, z, z.view(2, 1, 2))  # −2·2 + 2²
    tensor([0., 0.], dtype=torch.float64)
    """
    attraction = (anchor * positive).sum(-1)  # (n,)
    repulsion = torch.einsum("nd,nkd->nk", anchor, negatives).square().mean(dim=1)  # (n,)
    return -2.0 * attraction + repulsion


class Spectral(Objective):
    """The spectral contrastive objective of [HaoChen21] on encoded tuples: ``negatives`` = k
    marginal draws x' per anchor, ``block_size`` = 1."""

    def __init__(self, negatives: int = 1) -> None:
        super().__init__()
        if negatives < 1:
            raise ValueError(f"negatives must be ≥ 1; got {negatives}")
        self.negatives = negatives
        self.block_size = 1

    def forward(self, encoded: Encoded) -> torch.Tensor:  # -> (n,)
        return spectral_loss(encoded.anchor, encoded.positives[:, 0], encoded.negatives[:, :, 0])


class SpectralConfig(ComponentConfig):
    kind: Literal["spectral"] = "spectral"
    negatives: int = Field(1, ge=1, description="k, independent draws x' per anchor for the squared term (averaged)")


def build_spectral(config: SpectralConfig) -> Spectral:
    return Spectral(config.negatives)
