"""The contrastive unsupervised (CURL) loss of [Arora19], THEORY.md section 3.

L_un(f) = E[ ℓ({ f(x)ᵀ(f(x⁺) − f(x⁻_i)) }_{i=1..k}) ]; with blocks, f(x⁺) and f(x⁻_i) are replaced
by the means of f over the positive block and over the i-th negative block.
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
from pydantic import Field

from preadapt.objectives.base import Encoded, Objective
from preadapt.objectives.base import encode_tuples  # noqa: F401  (re-exported: it lived here before base.py)
from preadapt.objectives.losses import LOSSES, logistic
from preadapt.registry import ComponentConfig

MarginLoss = Callable[[torch.Tensor], torch.Tensor]


def curl_margins(anchor: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """Margins f(x)ᵀ(f̄⁺ − f̄⁻_i): anchor (n, d), positives (n, b, d), negatives (n, k, b, d) → (n, k).

    f̄ is the mean over a block (b = 1: the point itself).
    """
    positive = positives[:, 0] if positives.shape[1] == 1 else positives.mean(dim=1)  # (n, d)
    negative = negatives[:, :, 0] if negatives.shape[2] == 1 else negatives.mean(dim=2)  # (n, k, d)
    return (anchor.unsqueeze(1) * (positive.unsqueeze(1) - negative)).sum(-1)  # (n, k)


def curl_loss(anchor: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor,
              loss: MarginLoss = logistic) -> torch.Tensor:
    """Per-sample CURL losses (n,) of [Arora19]; shapes as in ``curl_margins``.

    A collapsed encoder has zero margins, so every loss is ℓ(0): 1 for hinge and for base-2
    logistic with one negative.

    >>> z = torch.ones(4, 3)
    >>> curl_loss(z, z.view(4, 1, 3), z.view(4, 1, 1, 3))
    tensor([1., 1., 1., 1.])
    """
    return loss(curl_margins(anchor, positives, negatives))


class CURL(Objective):
    """The CURL objective: per-sample ``curl_loss`` of encoded tuples.

    ``negatives`` (k) and ``block_size`` (b) tell the sampler what to draw.
    """

    def __init__(self, loss: MarginLoss = logistic, negatives: int = 1, block_size: int = 1) -> None:
        super().__init__()
        if negatives < 1 or block_size < 1:
            raise ValueError(f"negatives and block_size must be ≥ 1; got {negatives} and {block_size}")
        self.loss = loss
        self.negatives = negatives
        self.block_size = block_size

    def forward(self, encoded: Encoded) -> torch.Tensor:  # -> (n,)
        return curl_loss(encoded.anchor, encoded.positives, encoded.negatives, self.loss)


class CURLConfig(ComponentConfig):
    kind: Literal["curl"] = "curl"
    loss: Literal["hinge", "logistic"] = Field("logistic", description="ℓ: hinge or base-2 logistic")
    negatives: int = Field(1, ge=1, description="k, negatives per anchor")
    block_size: int = Field(1, ge=1, description="b, points per positive and per negative block")

    @property
    def curl_loss_name(self) -> str:
        return self.loss


def build_curl(config: CURLConfig) -> CURL:
    return CURL(LOSSES[config.loss], config.negatives, config.block_size)
