"""The adapter seam: what every way of adapting an encoder to a downstream task implements.

An adapter fits, for P tasks at once, adaptation parameters γ_task (a head; or a head and the
encoder's parameters) on each task's labeled training points, may choose its hyperparameters on
the task's validation points (never on test points), and then scores points ([FM21] §4.10,
THEORY.md section 1). The estimate loop (``preadapt.estimate.adaptation``) iterates over the
configured adapters (``evaluate.adapters``) and never names one; an adapter is usable as
``{kind: NAME}`` once it is registered (``register_adapter``, docs/extending.md).

Frozen-feature adapters (``trains_encoder = False``) see only the features f(x) the loop encoded
once; an adapter that trains the encoder gets the inputs and a copy of the encoder per task.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Literal

import torch
from pydantic import ConfigDict, Field, field_validator
from torch import nn

from preadapt.registry import ComponentConfig

MarginLoss = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TaskPoints:
    """Labeled points of P tasks of K classes each.

    ``features: (P, n, d)`` float64, f(x) under the frozen encoder θ_FM; ``labels: (P, n)`` in
    [0, K); ``inputs: (P, n, *X)`` the raw inputs, present when some configured adapter trains the
    encoder (else None).
    """

    features: torch.Tensor
    labels: torch.Tensor
    inputs: torch.Tensor | None = None

    @property
    def tasks(self) -> int:
        return self.features.shape[0]


@dataclass(frozen=True)
class AdaptTask:
    """What an adapter fits on: P tasks of ``classes`` classes.

    ``train`` and ``validation``: the tasks' labeled points (the validation points are for choosing
    hyperparameters only). ``encoder``: θ_FM, frozen (an adapter that trains the encoder copies it).
    ``reference: (P, K, d)``: the rows of W^μ̂ (the run's class means of each task's classes), a
    starting point an adapter may use or ignore. ``loss``: ℓ of the adaptation loss (margins →
    losses, the ℓ of L_sup). ``star``: True for the fit of L*_adapt (a large labeled sample; the best
    the adapter class reaches), False for the few-shot fits. ``generator``: the only source of
    randomness an adapter may use (fixed by the run's seed, never the global one). ``device``: where
    the encoder runs.
    """

    train: TaskPoints
    validation: TaskPoints
    classes: int
    encoder: nn.Module
    reference: torch.Tensor
    loss: MarginLoss
    star: bool
    generator: torch.Generator
    device: torch.device | str = "cpu"


class Adapted(ABC):
    """An adapter fitted on P tasks: scores points of the same tasks.

    ``chosen``: the hyperparameters the adapter chose on the validation points (name → value, one
    value for all tasks or the mean over tasks), reported as rows; empty when nothing was chosen.
    """

    chosen: dict[str, float]

    def __init__(self) -> None:
        self.chosen = {}

    @abstractmethod
    def scores(self, points: TaskPoints) -> torch.Tensor:
        """Scores ``(P, n, K)`` of ``points`` (the same P tasks it was fitted on), float64."""

    def encoder_change(self) -> dict[str, torch.Tensor]:
        """For an adapter that trains the encoder: each encoder parameter's change θ_task − θ_FM,
        stacked over tasks (name → (P, *shape)). Default: nothing changed."""
        return {}


class Adapter(ABC):
    """A way of adapting θ_FM to P tasks at once (``fit``).

    ``trains_encoder``: whether it changes the encoder's parameters (then the loop gives it the
    inputs and it must copy the encoder). ``star_quantity``: a theory quantity that its L*_adapt on
    the world's own 2-class tasks also is, reported under that name too (the linear adapter's is
    ``L_sup`` of [Arora19]); None for most.
    """

    trains_encoder: bool = False
    star_quantity: str | None = None

    @abstractmethod
    def fit(self, task: AdaptTask) -> Adapted:
        """Fit on ``task.train`` (choosing on ``task.validation`` only)."""


class AdapterConfig(ComponentConfig):
    """Base of every adapter's config: ``kind`` and an optional ``name``, the ``adapter`` column of
    its rows (default: the kind; two adapters of one kind need different names)."""

    name: str | None = Field(None, description="the `adapter` column of this adapter's rows (default: its kind)")

    @property
    def label(self) -> str:
        return self.name or self.kind


class OpenAdapterConfig(AdapterConfig):
    """Config of a user adapter registered without a params model: any extra field passes through."""

    model_config = ConfigDict(extra="allow", frozen=True)


class MeanAdapterConfig(AdapterConfig):
    kind: Literal["mean"] = "mean"


class LinearAdapterConfig(AdapterConfig):
    kind: Literal["linear"] = "linear"
    penalties: list[float] | None = Field(
        None, description="L2 penalties tried by the few-shot probe, chosen on validation (null: evaluate.probe_penalties)")

    @field_validator("penalties")
    @classmethod
    def _penalties_ok(cls, values):
        if values is not None and (not values or any(p < 0 for p in values)):
            raise ValueError("penalties must be a non-empty list of values ≥ 0")
        return values


@dataclass
class FrozenHeads(Adapted):
    """Linear heads on frozen features: scores = W z + b (``weights: (P, K, d)``, ``intercepts:
    (P, K)`` or None)."""

    weights: torch.Tensor
    intercepts: torch.Tensor | None = None
    chosen: dict[str, float] = field(default_factory=dict)

    def scores(self, points: TaskPoints) -> torch.Tensor:
        scores = points.features.to(self.weights.dtype) @ self.weights.transpose(1, 2)
        return scores if self.intercepts is None else scores + self.intercepts.unsqueeze(1)
