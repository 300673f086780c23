"""Encoders f: X → R^d with ‖f(x)‖ ≤ R (THEORY.md section 2).

Learned encoders enforce R by construction with a norm clip, f(x) = g(x)·min(1, R/‖g(x)‖). The
identity has no built-in bound (``norm_bound = None``); the evaluation reports R as measured.
Parameters are initialised from an explicit generator, never from torch's global RNG.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from preadapt.registry import ComponentConfig

if TYPE_CHECKING:
    from preadapt.worlds.base import InputSpec


def clip_norm(z: torch.Tensor, bound: float | None) -> torch.Tensor:
    """Rows of ``z: (n, d)`` scaled down to norm at most ``bound`` (unchanged when None).

    >>> clip_norm(torch.tensor([[3.0, 4.0], [0.3, 0.4]]), 1.0)
    tensor([[0.6000, 0.8000],
            [0.3000, 0.4000]])
    """
    if bound is None:
        return z
    norms = z.norm(dim=-1, keepdim=True)
    return z * torch.clamp(bound / norms.clamp_min(1e-12), max=1.0)


def init_linear(layer: nn.Linear, generator: torch.Generator) -> None:
    """PyTorch's default (Kaiming-uniform) ranges, drawn from ``generator``."""
    bound = 1.0 / math.sqrt(layer.in_features)
    with torch.no_grad():
        layer.weight.copy_((2 * torch.rand(layer.weight.shape, generator=generator) - 1) * bound)
        if layer.bias is not None:
            layer.bias.copy_((2 * torch.rand(layer.bias.shape, generator=generator) - 1) * bound)


class IdentityEncoder(nn.Module):
    """f(x) = x (flattened). No norm bound: R is measured."""

    norm_bound = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (n, *X) -> (n, d)
        return x.flatten(1)


class LinearEncoder(nn.Module):
    """f(x) = clip_R(W x) with W: (d, D) and no bias (the linear class of THEORY.md section 3)."""

    def __init__(self, in_dim: int, out_dim: int, norm_bound: float | None, generator: torch.Generator) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim, bias=False)
        init_linear(self.linear, generator)
        self.norm_bound = norm_bound

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (n, D) -> (n, d)
        return clip_norm(self.linear(x.flatten(1)), self.norm_bound)


class MLPEncoder(nn.Module):
    """f(x) = clip_R(MLP(x)): ReLU hidden layers of the given widths, then a linear output layer."""

    def __init__(self, in_dim: int, hidden: list[int], out_dim: int, norm_bound: float | None,
                 generator: torch.Generator) -> None:
        super().__init__()
        widths = [in_dim, *hidden, out_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            linear = nn.Linear(a, b)
            init_linear(linear, generator)
            layers.append(linear)
            if i < len(widths) - 2:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)
        self.norm_bound = norm_bound

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (n, D) -> (n, d)
        return clip_norm(self.net(x.flatten(1)), self.norm_bound)


class IdentityEncoderConfig(ComponentConfig):
    kind: Literal["identity"] = "identity"


class LinearEncoderConfig(ComponentConfig):
    kind: Literal["linear"] = "linear"
    out_dim: int = Field(16, ge=1, description="d, the representation dimension")
    norm_bound: float | None = Field(5.0, gt=0.0, description="R: ‖f(x)‖ ≤ R by a norm clip; null for none")

    def check_input(self, spec: InputSpec) -> None:
        """Real-valued inputs of any shape (flattened); token ids would be cast to numbers."""
        if not spec.real:
            raise ValueError(f"kind: got {self.kind!r}, which needs real-valued inputs; the world gives {spec} "
                             f"(bow, gru and minilm take token ids)")


class MLPEncoderConfig(LinearEncoderConfig):
    kind: Literal["mlp"] = "mlp"
    hidden: list[int] = Field([64], description="widths of the ReLU hidden layers")

    @field_validator("hidden")
    @classmethod
    def _widths_positive(cls, hidden):
        if any(h < 1 for h in hidden):
            raise ValueError("hidden widths must be ≥ 1")
        return hidden


def _input_dim(input_shape: tuple[int, ...]) -> int:
    return int(math.prod(input_shape))


def build_identity(config: IdentityEncoderConfig, input_shape, generator) -> IdentityEncoder:
    return IdentityEncoder()


def build_linear(config: LinearEncoderConfig, input_shape, generator) -> LinearEncoder:
    return LinearEncoder(_input_dim(input_shape), config.out_dim, config.norm_bound, generator)


def build_mlp(config: MLPEncoderConfig, input_shape, generator) -> MLPEncoder:
    return MLPEncoder(_input_dim(input_shape), config.hidden, config.out_dim, config.norm_bound, generator)
