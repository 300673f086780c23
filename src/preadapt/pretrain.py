"""Pretraining: empirical risk minimisation of an objective over M tuples drawn once.

Because the M training tuples are fixed, the empirical loss L̂_pre (on them) and the population
loss L_pre (on fresh tuples) differ: their gap is the first link of the chain in THEORY.md
section 1. A non-finite loss, gradient or parameter stops training at once (``DivergenceError``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from preadapt.objectives.base import encode_tuples
from preadapt.worlds.sampling import Tuples


class PretrainConfig(BaseModel):
    """How to pretrain (fields documented in docs/config.md).

    Default ``checkpoints`` fit the training: steps beyond the last are dropped and the last step is
    listed instead. Checkpoints given explicitly are kept as given (a run's config rejects a step
    beyond the last).

    >>> PretrainConfig(epochs=0).checkpoints, PretrainConfig(tuples=2560, epochs=10).checkpoints
    ([0], [0, 50, 100])
    >>> PretrainConfig(epochs=0, checkpoints=[0, 50]).checkpoints
    [0, 50]
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    tuples: int = Field(20000, ge=1, description="M, the number of training tuples, drawn once")
    epochs: int = Field(10, ge=0, description="passes over the M tuples")
    batch_size: int = Field(256, ge=1, description="tuples per step")
    optimizer: Literal["adam", "sgd"] = Field("adam", description="adam or sgd")
    lr: float = Field(0.001, gt=0.0, description="learning rate")
    checkpoints: list[int] = Field([0, 50, 200], description="steps to evaluate; the last step is always added")

    @field_validator("checkpoints")
    @classmethod
    def _steps_ok(cls, steps):
        if any(s < 0 for s in steps):
            raise ValueError("checkpoint steps must be ≥ 0")
        return sorted(set(steps))

    @model_validator(mode="after")
    def _default_checkpoints_fit(self) -> "PretrainConfig":
        # the field stays unset: it still reads as a default (Config.defaults_resolved reports it)
        if "checkpoints" not in self.model_fields_set and max(self.checkpoints) > self.total_steps:
            fitted = [step for step in self.checkpoints if step < self.total_steps] + [self.total_steps]
            object.__setattr__(self, "checkpoints", fitted)
        return self

    @property
    def total_steps(self) -> int:
        return self.epochs * math.ceil(self.tuples / self.batch_size)

    @property
    def checkpoint_steps(self) -> list[int]:
        """The configured steps plus the last one."""
        return sorted(set(self.checkpoints) | {self.total_steps})


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss, gradient or parameter."""

    def __init__(self, step: int, reason: str) -> None:
        super().__init__(f"diverged at step {step}: {reason}")
        self.step = step
        self.reason = reason


@dataclass
class TrainHistory:
    """Mean training loss per epoch and the steps at which checkpoints were taken."""

    epoch_losses: list[float] = field(default_factory=list)
    checkpoint_steps: list[int] = field(default_factory=list)


def _make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.SGD(params, lr=lr)


def _first_nonfinite(named: list[tuple[str, torch.Tensor]], what: str) -> str | None:
    """The name of the first tensor with a non-finite entry, found with one fused check per call.

    The check is the largest absolute entry (inf-norm): unlike the 2-norm it cannot overflow on
    finite entries.
    """
    tensors = [t for _, t in named if t is not None]
    if not tensors or bool(torch.isfinite(torch.stack(torch._foreach_norm(tensors, float("inf")))).all()):
        return None
    return next(f"non-finite {what} in {name}" for name, t in named if t is not None and not torch.isfinite(t).all())


def pretrain(
    encoder: nn.Module,
    objective: nn.Module,
    train_tuples: Tuples,
    config: PretrainConfig,
    generator: torch.Generator,
    on_checkpoint: Callable[[int, nn.Module], None] | None = None,
    device: torch.device | str = "cpu",
    progress: Callable[[int, int, float], None] | None = None,
) -> TrainHistory:
    """Minimise the mean objective over ``train_tuples`` (M tuples) with mini-batches, updating the
    encoder's parameters and the objective's (if it has any).

    ``on_checkpoint(step, encoder)`` runs at every step of ``config.checkpoint_steps`` (step 0 is
    before any update). ``generator`` shuffles the tuples each epoch. ``progress(step, total,
    loss)`` is called after every step. Raises ``DivergenceError`` with the step and the reason.
    """
    history = TrainHistory()
    checkpoints = set(config.checkpoint_steps)
    # the objective's own parameters (e.g. the head of a supervised objective) train with the encoder
    named = [(name, p) for name, p in encoder.named_parameters() if p.requires_grad]
    named += [(f"objective.{name}", p) for name, p in objective.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    optimizer = _make_optimizer(config.optimizer, params, config.lr) if params else None
    step = 0

    def checkpoint() -> None:
        if step in checkpoints:
            history.checkpoint_steps.append(step)
            if on_checkpoint is not None:
                encoder.eval()
                on_checkpoint(step, encoder)
                encoder.train()

    encoder.train()
    checkpoint()
    size = len(train_tuples)
    for _ in range(config.epochs):
        order = torch.randperm(size, generator=generator)
        total, count = 0.0, 0
        for start in range(0, size, config.batch_size):
            batch = train_tuples[order[start:start + config.batch_size]].to(device)
            loss = objective(encode_tuples(encoder, batch)).mean()
            if not torch.isfinite(loss):
                raise DivergenceError(step + 1, "non-finite loss")
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                # one fused check of gradients and updated parameters; the reason names the first culprit
                bad = _first_nonfinite([(name, p.grad) for name, p in named] + named, "gradient or parameter")
                if bad:
                    grads = _first_nonfinite([(name, p.grad) for name, p in named], "gradient")
                    raise DivergenceError(step + 1, grads or _first_nonfinite(named, "parameter"))
            step += 1
            value = float(loss.detach())
            total += value * len(batch)
            count += len(batch)
            if progress is not None:
                progress(step, config.total_steps, value)
            checkpoint()
        history.epoch_losses.append(total / max(count, 1))
    return history
