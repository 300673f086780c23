"""The latent-class world of [Arora19] (THEORY.md section 2).

A world is a finite set of latent classes C, a prior ρ over them, and for each class c a
distribution D_c over inputs. Sampling always takes an explicit ``torch.Generator``.
"""

from __future__ import annotations

from dataclasses import dataclass
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


@runtime_checkable
class ExampleWorld(World, Protocol):
    """A world whose D_c are uniform over a finite set of examples: a split of a data set (a
    ``FiniteWorld``, a topic world's sentence bank). The optional hook of the world protocol: a world
    without it draws fresh inputs, and ``worlds.sampling.draw_examples`` gives no ids for it.

    ``sample_ids(labels, generator)``: the examples of a draw, as ids (n,) long, or None when this
    world draws fresh inputs after all; ``take(ids)``: their inputs (n, *input_shape);
    ``example_ids()``: the ids and classes of every example of the split, grouped by class, or None.
    With the ids, estimates count distinct examples, the draws of one tuple are distinct examples,
    and intervals are about the distribution the examples came from (docs/quantities.md).
    """

    def sample_ids(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor | None: ...

    def take(self, ids: torch.Tensor) -> torch.Tensor: ...

    def example_ids(self) -> tuple[torch.Tensor, torch.Tensor] | None: ...


@runtime_checkable
class TaskedWorld(World, Protocol):
    """A world whose downstream task is a world of its own: the optional hook of the world protocol
    for a structural shift by construction, where pretraining's latent classes are not the task's
    (the hypercube of [Saunshi22]: 2^d sign patterns, a task that reads k coordinates).

    ``task_world()``: the world of the task's classes, with the same inputs. A run without a ``task``
    section draws its downstream tasks from it (the ``id`` view; there is no ``ood`` one); a world
    without the hook has its tasks drawn over its own latent classes.
    """

    def task_world(self) -> World: ...


MAX_ENUMERATED_CLASSES = 2**12
"""The most latent classes a world may have for evaluation to visit every class. Beyond it (a
hypercube world with d > 12) a world is too big to enumerate (``enumerable``): per-class pools of
``evaluate.mean_samples`` points, sampled tasks over its classes (a loop over every class) and the full
problem would take time and memory in proportion to |C|. Evaluation then measures only what needs
tuples on it, and an objective with a parameter per latent class (``supervised``) is refused."""


def enumerable(world: World) -> bool:
    """Whether evaluation may visit every class of ``world``: |C| ≤ ``MAX_ENUMERATED_CLASSES``.

    >>> from preadapt.worlds.hypercube import HypercubeWorld
    >>> enumerable(HypercubeWorld(dim=12, task_dim=5)), enumerable(HypercubeWorld(dim=13, task_dim=5))
    (True, False)
    """
    return world.classes <= MAX_ENUMERATED_CLASSES


@dataclass(frozen=True)
class InputSpec:
    """What one input x of a world looks like, known from the world's *config* alone (no data are
    loaded, nothing is built), so that validation can check an encoder against it.

    ``shape``: the world's ``input_shape``. ``dtype``: what ``sample`` returns. ``vocabulary``: for
    token ids, V (ids lie in [0, V), 0 = padding); None otherwise. ``signs``: real inputs that never
    have an entry 0 and are meant to be told apart by their sign pattern sgn(x) ∈ {±1}^shape, a finite
    key (the ``hypercube`` world of [Saunshi22]; a table encoder, ``lookup``, indexes by it); False,
    the default, promises nothing. A world config gives the spec as ``input_spec``
    (``preadapt.registry.ComponentConfig``; None, the default, means unknown).

    >>> print(InputSpec((16,), torch.float32))
    float32 inputs of shape (16,)
    >>> print(InputSpec((32,), torch.int64, vocabulary=1000))
    int64 token ids of shape (32,) in [0, 1000)
    >>> print(InputSpec((24,), torch.float32, signs=True))
    float32 inputs of shape (24,) with no entry 0 (keyed by their sign pattern)
    """

    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32
    vocabulary: int | None = None
    signs: bool = False

    @property
    def real(self) -> bool:
        """Real-valued inputs (a floating dtype), as opposed to integer ids."""
        return self.dtype.is_floating_point

    def __str__(self) -> str:
        dtype, shape = str(self.dtype).removeprefix("torch."), tuple(self.shape)
        if self.real:
            return f"{dtype} inputs of shape {shape}" + (" with no entry 0 (keyed by their sign pattern)" if self.signs else "")
        ids = f"{dtype} token ids of shape {shape}"
        return ids if self.vocabulary is None else f"{ids} in [0, {self.vocabulary})"
