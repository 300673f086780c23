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

from preadapt.objectives.base import Encoded
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
    """Adam or SGD with their defaults. Adam takes torch's fused implementation (one kernel per step for
    all parameters; the same update, up to rounding) where the parameters allow it (floating tensors
    on one CPU or CUDA device): its default for-loop over parameters costs about 0.1 ms a step on a
    small encoder, a tenth of the demo's step (docs/benchmarks.md)."""
    params = list(params)
    if name == "adam":
        fusable = len({(p.device.type, p.dtype) for p in params}) == 1 and params[0].device.type in ("cpu", "cuda") \
            and params[0].is_floating_point()
        return torch.optim.Adam(params, lr=lr, fused=True if fusable else None)
    return torch.optim.SGD(params, lr=lr)


def _first_nonfinite(named: list[tuple[str, torch.Tensor]], what: str) -> str | None:
    """The name of the first tensor with a non-finite entry (None if every entry is finite).

    Fast path: the sum of the tensors' 2-norms (one fused pass, ``torch._foreach_norm``) is
    non-finite whenever any entry is (a NaN propagates, an infinity gives an infinite norm), so a
    finite sum proves every entry finite. The 2-norm can also overflow on finite entries (beyond
    about 1e19 in float32); only then, or on a real non-finite entry, does the exact per-tensor
    check run, so the verdict is the exact one at the cost of a 2-norm on the common path (the
    inf-norm the exact check used before costs about 15 times as much on the CPU).
    """
    tensors = [t for _, t in named if t is not None]
    if not tensors or bool(torch.isfinite(torch.stack(torch._foreach_norm(tensors)).sum())):
        return None
    return next((f"non-finite {what} in {name}" for name, t in named if t is not None and not torch.isfinite(t).all()),
                None)


class _Batches:
    """The training tuples laid out for one index operation per step, on the training device.

    The inputs become one tensor ``(r, M, *X)`` of the r = 1 + b + k·b roles (anchor, the b positives,
    the k·b negatives block by block): a batch is ``inputs[:, index]``, encoded as one ``(r·n, *X)``
    forward pass. With b = k = 1 the encoder sees the rows in the order of ``encode_tuples``
    (anchors, positives, negatives), so training is the same computation; in general the order within
    a role is the same and the roles come slot by slot. This costs one copy of the inputs.
    """

    def __init__(self, tuples: Tuples, device) -> None:
        self.negatives, self.block = tuples.negatives_count, tuples.block_size
        self.inputs = torch.cat([tuples.anchor.unsqueeze(0), tuples.positives.transpose(0, 1),
                                 tuples.negatives.flatten(1, 2).transpose(0, 1)]).to(device)  # (r, M, *X)
        self.anchor_class, self.negative_class = tuples.anchor_class.to(device), tuples.negative_class.to(device)

    def encode(self, encoder: nn.Module, index: torch.Tensor) -> Encoded:
        k, b, n = self.negatives, self.block, len(index)
        inputs = self.inputs.index_select(1, index)  # (r, n, *X); index_select: a few times faster than [:, index]
        features = encoder(inputs.flatten(0, 1)).reshape(inputs.shape[0], n, -1)  # (r, n, d)
        # one split (its backward is one concatenation) rather than an index per role
        anchor, positives, negatives = features.split([1, b, k * b])
        return Encoded(anchor=anchor.squeeze(0), positives=positives.transpose(0, 1),
                       negatives=negatives.view(k, b, n, -1).permute(2, 0, 1, 3),
                       anchor_class=self.anchor_class.index_select(0, index),
                       negative_class=self.negative_class.index_select(0, index))


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
    batches = _Batches(train_tuples, device)
    for _ in range(config.epochs):
        order = torch.randperm(size, generator=generator)
        total, count = 0.0, 0
        for start in range(0, size, config.batch_size):
            index = order[start:start + config.batch_size]
            loss = objective(batches.encode(encoder, index)).mean()
            if optimizer is None:
                if not torch.isfinite(loss):
                    raise DivergenceError(step + 1, "non-finite loss")
            else:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                # One fused check per step, of the loss and the updated parameters: the step carries every
                # non-finite gradient entry into its parameter (SGD: p − lr·g; Adam: a NaN stays NaN and
                # an infinity gives ∞/∞ = NaN in m̂/√v̂), and a non-finite loss has non-finite gradients.
                # When it fires, the exact checks name the first culprit: loss, then gradient, then parameter.
                if _first_nonfinite([("loss", loss.detach())] + named, "loss or parameter"):
                    if not torch.isfinite(loss):
                        raise DivergenceError(step + 1, "non-finite loss")
                    grads = [(name, p.grad) for name, p in named]
                    raise DivergenceError(step + 1, _first_nonfinite(grads, "gradient") or _first_nonfinite(named, "parameter"))
            step += 1
            value = float(loss.detach())
            total += value * len(index)
            count += len(index)
            if progress is not None:
                progress(step, config.total_steps, value)
            checkpoint()
        history.epoch_losses.append(total / max(count, 1))
    return history
