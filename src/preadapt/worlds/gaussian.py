"""Gaussian latent classes: D_c = warp(N(μ_c, σ²I)), the simplest world of THEORY.md section 2."""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, field_validator, model_validator

from preadapt.registry import ComponentConfig
from preadapt.worlds.base import InputSpec
from preadapt.worlds.prior import as_prior, check_prior_spec

Prior = Literal["uniform"] | dict[Literal["zipf"], float] | list[float]


class GaussianWorldConfig(ComponentConfig):
    """Config of a Gaussian world (fields documented in docs/config.md)."""

    kind: Literal["gaussian"] = "gaussian"
    classes: int = Field(20, ge=2, description="|C|, the number of latent classes")
    dim: int = Field(16, ge=1, description="input dimension")
    noise: float = Field(1.0, ge=0.0, description="σ, the per-coordinate noise standard deviation")
    separation: float = Field(3.0, gt=0.0, description="expected distance between two generated class means")
    prior: Prior = Field("uniform", description="ρ: uniform, {zipf: exponent} or a list of weights")
    warp: bool | float = Field(True, description="a fixed seeded nonlinear map; true = strength 2.0, a number sets it; off by default with explicit means")
    means: list[list[float]] | None = Field(None, description="explicit class means (overrides classes, dim, separation)")

    @field_validator("prior")
    @classmethod
    def _prior_ok(cls, prior):
        return check_prior_spec(prior)

    @model_validator(mode="after")
    def _shapes_agree(self):
        if self.means is not None:
            if len(self.means) < 2 or len({len(m) for m in self.means}) != 1 or len(self.means[0]) == 0:
                raise ValueError("means must be at least two vectors of one common, positive length")
            object.__setattr__(self, "classes", len(self.means))
            object.__setattr__(self, "dim", len(self.means[0]))
            if "warp" not in self.model_fields_set:  # explicit means are meant as they are given
                object.__setattr__(self, "warp", False)
        if isinstance(self.prior, list) and len(self.prior) != self.classes:
            raise ValueError(f"prior has {len(self.prior)} weights; expected one per class ({self.classes})")
        return self

    @property
    def input_spec(self) -> InputSpec:
        """Real vectors x ∈ R^dim."""
        return InputSpec((self.dim,), torch.float32)


WARP_BLOCK = 4096
"""Rows the warp maps at a time: a (4096, 4·dim) hidden layer of float32 is 1 MiB at dim 16."""


class Warp(torch.nn.Module):
    """A fixed nonlinear map z ↦ z + strength·scale·A·tanh(Bz/scale + b)/√h, seeded, never trained.

    With strength > 0 the class-conditional distributions are no longer Gaussian, so a linear
    encoder is not enough to undo the map.
    """

    def __init__(self, dim: int, scale: float, strength: float, generator: torch.Generator) -> None:
        super().__init__()
        hidden = 4 * dim
        self.register_buffer("inner", torch.randn(hidden, dim, generator=generator) / math.sqrt(dim))
        self.register_buffer("bias", 2.0 * torch.rand(hidden, generator=generator) - 1.0)
        self.register_buffer("outer", torch.randn(dim, hidden, generator=generator) / math.sqrt(hidden))
        self.scale = scale
        self.strength = strength

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (n, dim) -> (n, dim)
        """The map, in blocks of ``WARP_BLOCK`` rows whose hidden layer stays in cache.

        tanh(u) = 2σ(2u) − 1, and torch's CPU ``sigmoid`` is about four times as fast as its ``tanh``
        (measured: docs/benchmarks.md); with the factors folded into the two matrix products, each
        block is one fused product-plus-bias, one in-place sigmoid and one fused product-plus-add:
        z + k·(2σ(2u) − 1)·Aᵀ = (z − k·Σ_j A_j) + 2k·σ(2u)·Aᵀ, k = strength·scale. The same map up to
        float32 rounding (about 1e-7 relative).
        """
        inner = (self.inner * (2.0 / self.scale)).T  # (dim, hidden): 2u = z·inner + 2b
        outer = self.outer.T  # (hidden, dim)
        gain = self.strength * self.scale
        shift = gain * outer.sum(dim=0)  # (dim,): k·Σ_j A_j
        bias = 2.0 * self.bias
        out = torch.empty_like(z)
        for start in range(0, z.shape[0], WARP_BLOCK):
            block = z[start:start + WARP_BLOCK]
            hidden = torch.addmm(bias, block, inner).sigmoid_()
            torch.addmm(block - shift, hidden, outer, alpha=2.0 * gain, out=out[start:start + WARP_BLOCK])
        return out


class GaussianWorld:
    """Classes c with x = warp(μ_c + σ·ε), ε ~ N(0, I), and a prior ρ.

    ``means: (C, dim)``. Without a warp this is the world the oracle tests use, where the identity
    encoder has closed forms.

    >>> world = GaussianWorld(torch.eye(2), noise=0.0)
    >>> world.sample(torch.tensor([1, 0]), torch.Generator().manual_seed(0))
    tensor([[0., 1.],
            [1., 0.]])
    """

    def __init__(self, means: torch.Tensor, noise: float = 1.0, prior=None, warp: Warp | None = None) -> None:
        self.means = torch.as_tensor(means, dtype=torch.float32)
        self.classes, dim = self.means.shape
        self.input_shape = (dim,)
        self.noise = float(noise)
        self.prior = as_prior("uniform" if prior is None else prior, self.classes)
        self.warp = warp

    def sample(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        labels = torch.as_tensor(labels, dtype=torch.long)
        eps = torch.randn(labels.shape[0], self.input_shape[0], generator=generator)
        x = self.means[labels].add_(eps, alpha=self.noise)  # (n, dim)
        return x if self.warp is None else self.warp(x)


def build_gaussian_world(config: GaussianWorldConfig, generator: torch.Generator) -> GaussianWorld:
    """A Gaussian world from its config; generated means and the warp use ``generator``."""
    if config.means is not None:
        means = torch.tensor(config.means, dtype=torch.float32)
    else:
        spread = config.separation / math.sqrt(2.0 * config.dim)  # E‖μ_a − μ_b‖ ≈ separation
        means = spread * torch.randn(config.classes, config.dim, generator=generator)
    warp = None
    strength = 2.0 if config.warp is True else float(config.warp)
    if strength > 0:
        scale = float(torch.sqrt(means.pow(2).mean() + config.noise**2).clamp_min(1e-6))
        warp = Warp(config.dim, scale, strength, generator)
    prior = as_prior(config.prior, config.classes)
    return GaussianWorld(means, config.noise, prior, warp)
