"""The latent-class world of [Arora19] (THEORY.md section 2).

A world is a finite set of latent classes C, a prior ρ over them, and for each class c a
distribution D_c over inputs. Sampling always takes an explicit ``torch.Generator``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch


@runtime_checkable
class World(Protocol):
    """What every world provides.

    ``classes``: |C|. ``prior``: ρ, float64 array (C,). ``input_shape``: the shape of one input x.
    ``sample(labels, generator)``: ``labels: (n,)`` long → inputs ``(n, *input_shape)``, x ~ D_label.
    """

    classes: int
    prior: np.ndarray
    input_shape: tuple[int, ...]

    def sample(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor: ...

