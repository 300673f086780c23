"""The supervised baseline of [Arora19] Table 1 ("sup"): the encoder is trained with the
cross-entropy of a linear head over the latent classes, then evaluated like a contrastive one.

Per sample: L = −ln softmax(W f(x) + b)[c], with c the anchor's latent class, W (C, d), b (C,).
Only the anchor and its class are used: the sampler's positive block and negatives are ignored
(it is asked for the fewest it can draw, k = 1 and b = 1).

The head's shape depends on the world (C) and the encoder (d), which the config does not know: the
training loop calls ``attach(classes, dim, generator)`` before training and must optimise the
objective's parameters together with the encoder's.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from preadapt.objectives.base import Encoded, Objective
from preadapt.registry import ComponentConfig


def supervised_loss(features: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor,
                    bias: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy (n,) in nats: features (n, d), labels (n,) in [0, C), weight (C, d), bias (C,).

    A zero head gives ln C.

    >>> supervised_loss(torch.ones(2, 3), torch.tensor([0, 2]), torch.zeros(4, 3), torch.zeros(4))  # ln 4
    tensor([1.3863, 1.3863])
    """
    logits = nn.functional.linear(features, weight, bias)  # (n, C)
    return nn.functional.cross_entropy(logits, labels, reduction="none")


class Supervised(Objective):
    """Cross-entropy of a linear head on f(x) over the latent classes ([Arora19]'s supervised baseline).

    ``head_`` is None until ``attach``; the head computes in the features' dtype (its parameters stay
    in theirs), so float64 evaluation of a float32-trained head works.
    """

    def __init__(self) -> None:
        super().__init__()
        self.negatives = 1
        self.block_size = 1
        self.register_module("head_", None)

    def attach(self, classes: int, dim: int, generator: torch.Generator) -> None:
        """Create the head W (C, d), b (C,) for ``classes`` = C and features of ``dim`` = d.

        Entries are uniform on [−1/√d, 1/√d] (``nn.Linear``'s default range), drawn from ``generator``;
        attaching again replaces the head.
        """
        if classes < 1 or dim < 1:
            raise ValueError(f"classes and dim must be ≥ 1; got {classes} and {dim}")
        bound = 1.0 / math.sqrt(dim)
        head = nn.Linear(dim, classes)
        with torch.no_grad():
            head.weight.copy_((2 * torch.rand(classes, dim, generator=generator, dtype=torch.float64) - 1) * bound)
            head.bias.copy_((2 * torch.rand(classes, generator=generator, dtype=torch.float64) - 1) * bound)
        self.head_ = head

    def forward(self, encoded: Encoded) -> torch.Tensor:  # -> (n,)
        if self.head_ is None:
            raise RuntimeError("the supervised objective has no head yet: call attach(classes, dim, generator) "
                               "with the world's number of classes and the encoder's output dimension first")
        features = encoded.anchor  # (n, d)
        if features.shape[-1] != self.head_.in_features:
            raise ValueError(f"features have dimension {features.shape[-1]} but the head was attached for "
                             f"{self.head_.in_features}: attach again with dim={features.shape[-1]}")
        weight = self.head_.weight.to(features.dtype)
        bias = self.head_.bias.to(features.dtype)
        return supervised_loss(features, encoded.anchor_class, weight, bias)


class SupervisedConfig(ComponentConfig):
    kind: Literal["supervised"] = "supervised"


def build_supervised(config: SupervisedConfig) -> Supervised:
    return Supervised()
