"""InfoNCE (van den Oord et al. 2018, "Representation learning with contrastive predictive coding")
and its in-batch form NT-Xent (Chen et al. 2020, SimCLR), THEORY.md section 5.

Per sample, with similarities s⁺ = f(x)ᵀf̄⁺/t and s_i = f(x)ᵀf̄⁻_i/t (t the temperature):

    L = −ln( e^{s⁺} / (e^{s⁺} + Σ_i e^{s_i}) ),

the natural-log softmax cross-entropy of the positive among the positive and the negatives. f̄ is
the mean of f over a block, as in the block version of [Arora19] (b = 1: the point itself). At
t = 1 the margins are s⁺ − s_i = f(x)ᵀ(f̄⁺ − f̄⁻_i), so InfoNCE is ln 2 times the base-2 logistic CURL
loss. Features are used as the encoder gives them (norm ≤ R), not renormalised to the unit sphere.

In-batch negatives: the block means of the other n − 1 anchors' positives in the batch join the k
explicit negatives. They are drawn from the marginal like explicit ones (and may share the anchor's
class), but a sample's loss then depends on the rest of its batch: the mean over a batch is the usual
in-batch InfoNCE, its expectation grows with n (ln(n + k) for a collapsed encoder), and the n values
of one batch are not independent.

True negatives (``true_negatives``): the oracle of [Chuang20], InfoNCE whose explicit negatives come
from p⁻_x, the data restricted to the classes other than the anchor's (the sampler draws each
negative's class from ρ(· | ≠ c)). The loss is the same function; only the sampler differs, so
L_pre and L_pre_train are measured on such tuples while L_un keeps negatives from ρ. It is what the
debiased loss estimates from biased negatives, and the reference it is compared with.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from preadapt.objectives.base import Encoded, Objective
from preadapt.registry import ComponentConfig


def block_means(positives: torch.Tensor, negatives: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """f̄⁺ (n, d) and f̄⁻ (n, k, d) from positives (n, b, d) and negatives (n, k, b, d)."""
    positive = positives[:, 0] if positives.shape[1] == 1 else positives.mean(dim=1)  # (n, d)
    negative = negatives[:, :, 0] if negatives.shape[2] == 1 else negatives.mean(dim=2)  # (n, k, d)
    return positive, negative


def infonce_logits(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor,
                   temperature: float = 1.0, in_batch: bool = False) -> torch.Tensor:
    """Logits of InfoNCE with the positive in column 0: anchor (n, d), positive (n, d), negatives (n, k, d).

    Returns (n, 1 + k); with ``in_batch``, (n, n + k): column 0 the own positive, columns 1..n−1 the
    other anchors' positives in batch order, then the k explicit negatives.

    >>> z = torch.eye(2)
    >>> infonce_logits(z, z, z.flip(0).view(2, 1, 2), temperature=0.5)
    tensor([[2., 0.],
            [2., 0.]])
    """
    explicit = torch.einsum("nd,nkd->nk", anchor, negatives)  # (n, k)
    if not in_batch:
        own = (anchor * positive).sum(-1, keepdim=True)  # (n, 1)
        return torch.cat([own, explicit], dim=1) / temperature
    n = anchor.shape[0]
    similarity = anchor @ positive.T  # (n, n): row j against every anchor's positive
    own = similarity.diagonal().unsqueeze(1)  # (n, 1)
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=anchor.device)
    others = similarity[off_diagonal].view(n, n - 1)  # (n, n − 1)
    return torch.cat([own, others, explicit], dim=1) / temperature


def infonce_loss(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor,
                 temperature: float = 1.0, in_batch: bool = False) -> torch.Tensor:
    """Per-sample InfoNCE losses (n,) in nats; arguments as in ``infonce_logits``.

    A collapsed encoder gives ln(1 + k) (ln(n + k) with ``in_batch``).

    >>> z = torch.ones(3, 2, dtype=torch.float64)
    >>> infonce_loss(z, z, z.view(3, 1, 2).expand(3, 4, 2))  # ln 5
    tensor([1.6094, 1.6094, 1.6094], dtype=torch.float64)
    """
    logits = infonce_logits(anchor, positive, negatives, temperature, in_batch)  # (n, 1 + k) or (n, n + k)
    return torch.logsumexp(logits, dim=1) - logits[:, 0]


TRUE_NEGATIVES_IN_BATCH = ("true_negatives = true draws the explicit negatives from other classes, but in-batch "
                           "negatives (other anchors' positives) may share the anchor's class: set in_batch = false")


class InfoNCE(Objective):
    """The InfoNCE objective on encoded tuples (module docstring for the formula).

    ``negatives`` and ``block_size`` are what the sampler draws: k negative blocks of b points,
    except that with ``explicit_negatives = 0`` (in-batch negatives only) it draws one negative
    block, which is ignored. ``explicit_negatives`` is how many of the drawn blocks the loss uses.
    ``true_negatives`` asks the sampler for negatives of classes other than the anchor's ([Chuang20]'s
    oracle); the loss itself does not read it.
    """

    def __init__(self, temperature: float = 1.0, negatives: int = 1, block_size: int = 1,
                 in_batch: bool = False, true_negatives: bool = False) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0; got {temperature}")
        if block_size < 1:
            raise ValueError(f"block_size must be ≥ 1; got {block_size}")
        if negatives < 0 or (negatives == 0 and not in_batch):
            raise ValueError(f"negatives must be ≥ 1 (≥ 0 with in_batch = true); got {negatives}")
        if true_negatives and in_batch:
            raise ValueError(TRUE_NEGATIVES_IN_BATCH)
        self.temperature = temperature
        self.in_batch = in_batch
        self.explicit_negatives = negatives
        self.negatives = max(negatives, 1)
        self.block_size = block_size
        self.true_negatives = true_negatives

    def forward(self, encoded: Encoded) -> torch.Tensor:  # -> (n,)
        positive, negative = block_means(encoded.positives, encoded.negatives[:, :self.explicit_negatives])
        return infonce_loss(encoded.anchor, positive, negative, self.temperature, self.in_batch)


class InfoNCEConfig(ComponentConfig):
    kind: Literal["infonce"] = "infonce"
    temperature: float = Field(1.0, gt=0.0, description="t, divides the similarities; t = 1: ln 2 × logistic CURL")
    negatives: int = Field(1, ge=0, description="k, explicit negative blocks per anchor; 0 only with in_batch")
    block_size: int = Field(1, ge=1, description="b, points per positive and negative block (f̄ = block mean)")
    in_batch: bool = Field(False, description="also use the other anchors' positives in the batch as negatives")
    true_negatives: bool = Field(False, description="the oracle of [Chuang20]: negatives only from classes other "
                                                    "than the anchor's (c⁻ ~ ρ(· | ≠ c)), for L_pre and training")

    @model_validator(mode="after")
    def _some_negatives(self):
        if self.negatives == 0 and not self.in_batch:
            raise ValueError("negatives = 0 leaves no negatives: set negatives ≥ 1 or in_batch = true")
        if self.true_negatives and self.in_batch:
            raise ValueError(TRUE_NEGATIVES_IN_BATCH)
        return self


def build_infonce(config: InfoNCEConfig) -> InfoNCE:
    return InfoNCE(config.temperature, config.negatives, config.block_size, config.in_batch, config.true_negatives)
