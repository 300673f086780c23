"""The hypercube world of [Saunshi22]: positives share a sign pattern, tasks read k coordinates.

Inputs have sign patterns s ∈ {±1}^d, uniform. A draw of pattern s is s with its last d − k
coordinates multiplied by one scale u ~ U(0, 1] (the augmentation's τ in [Saunshi22]; u here, τ
being the collision probability of THEORY.md section 2), signs unchanged:

    x = (s_1, …, s_k, u·s_{k+1}, …, u·s_d).

As a latent-class world ([Arora19], THEORY.md section 2) the classes are the 2^d sign patterns, ρ
uniform, and D_s the law of x above; a similar pair (x, x⁺) is two independent draws of one pattern,
so positives never connect two patterns (the augmentation graph has 2^d components) and τ = 2^−d.
The downstream task reads only the first k coordinates (``task_world``): its classes are the 2^k
patterns of those coordinates (``label="pattern"``) or the sign of their sum (``label="majority"``,
k odd). Pretraining's classes are far finer than the task's: a structural shift by construction.
A linear encoder that aligns positives must ignore the last d − k coordinates (they move with u
along one direction per pattern) and so keeps only the first k, all the task needs; a table indexed by the
sign pattern (``encoders.lookup``) aligns positives as well without learning anything about
patterns it never saw in pretraining.

The 2^d classes are represented implicitly: class c is the pattern with s_j = +1 iff bit j of c is
set (``sign_patterns``; ``pattern_classes`` is the inverse), and the prior is a ``uniform_prior``, a
view of one number, so the world stores and pickles nothing of size 2^d. What the rest of preadapt
can do with such a world: ``draw_tuples`` works at any d here (classes drawn with ``torch.randint``,
never reading ρ), and so does everything measured on tuples (τ exact, L_pre, L_un, L_un^=, L_un^≠,
alignment and uniformity); anything that visits every class (``sample_per_class``, ``sample_tasks``,
the class means μ̂, L^μ_sup, s(f), the adapters on the world's own tasks) does not scale to 2^d.
Beyond 2^12 classes (d > 12) the world is too big to enumerate (``worlds.base.enumerable``): a run
measures only the tuple quantities on it, and the adapters on ``task_world()``, which is where a
run's tasks come from at every d (``worlds.base.TaskedWorld``; docs/config.md).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from preadapt.registry import ComponentConfig
from preadapt.worlds.base import InputSpec
from preadapt.worlds.prior import uniform_prior

MAX_DIM = 24  # the largest d supported (class ids are exact longs and lookup keys exact far beyond it)
Label = Literal["pattern", "majority"]


def sign_patterns(classes: torch.Tensor, dim: int) -> torch.Tensor:
    """The sign pattern of each class id: ``classes: (n,)`` long → (n, d) float32 in {±1}, with
    s_j = +1 iff bit j of the id is set.

    >>> sign_patterns(torch.tensor([0, 1, 6]), 3)
    tensor([[-1., -1., -1.],
            [ 1., -1., -1.],
            [-1.,  1.,  1.]])
    """
    bits = (torch.as_tensor(classes, dtype=torch.long)[:, None] >> torch.arange(dim)) & 1  # (n, d)
    return 2.0 * bits.to(torch.float32) - 1.0


def pattern_classes(x: torch.Tensor) -> torch.Tensor:
    """The class id of each input's sign pattern, Σ_j [x_j > 0]·2^j: ``x: (n, d)`` → (n,) long. The
    inverse of ``sign_patterns`` (d ≤ 62).

    >>> pattern_classes(torch.tensor([[-1.0, 0.5, 0.2], [1.0, -0.3, -0.9]]))
    tensor([6, 1])
    """
    bits = (x > 0).long()  # (n, d)
    return (bits << torch.arange(x.shape[1])).sum(dim=1)


def _popcount(values: torch.Tensor, width: int) -> torch.Tensor:
    """The number of set bits among the low ``width`` bits of each entry of ``values`` (long)."""
    return ((values[:, None] >> torch.arange(width)) & 1).sum(dim=1)


class HypercubeWorld:
    """The pretraining world: class c is the sign pattern of its bits, ρ uniform over the 2^d classes.

    ``dim``: d. ``task_dim``: k < d, the coordinates that are never scaled (and that the task reads).
    ``label``: the task of ``task_world`` (``pattern`` or ``majority``). Sampling class c: its
    pattern, the last d − k coordinates times one u ~ U(0, 1] per draw (the generator's only draw).

    >>> world = HypercubeWorld(dim=4, task_dim=2)
    >>> world.classes, world.tau, world.task_world().classes
    (16, 0.0625, 4)
    >>> x = world.sample(torch.tensor([5, 5]), torch.Generator().manual_seed(0))  # (n, d) = (2, 4)
    >>> x[:, :2], pattern_classes(x)
    (tensor([[ 1., -1.],
            [ 1., -1.]]), tensor([5, 5]))
    """

    def __init__(self, dim: int, task_dim: int, label: Label = "pattern") -> None:
        check_dims(dim, task_dim, label)
        self.dim, self.task_dim, self.label = int(dim), int(task_dim), label
        self.classes = 2**self.dim
        self.input_shape = (self.dim,)

    @property
    def prior(self) -> np.ndarray:
        """ρ(c) = 2^−d for every class, float64 (C,): a ``uniform_prior``, a read-only view of one
        number (O(1) memory at any d), which the samplers draw from with ``torch.randint``."""
        return uniform_prior(self.classes)

    @property
    def tau(self) -> float:
        """τ = P(c = c⁻) = Σ_c ρ(c)² = 2^−d ([Arora19]; exact, a power of two)."""
        return 2.0**-self.dim

    def sample(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        labels = torch.as_tensor(labels, dtype=torch.long)
        x = sign_patterns(labels, self.dim)  # (n, d)
        scale = 1.0 - torch.rand(labels.shape[0], 1, generator=generator)  # (n, 1), U(0, 1]: 1 − U[0, 1)
        x[:, self.task_dim:] *= scale
        return x

    def task_labels(self, classes: torch.Tensor) -> torch.Tensor:
        """The task's class of each pattern class id ``classes: (n,)`` → (n,) long; reads only the
        low k bits (the first k coordinates). ``pattern``: those bits as a number in [0, 2^k);
        ``majority``: 1 when the first k signs sum to more than 0, else 0.

        >>> world = HypercubeWorld(dim=4, task_dim=3, label="majority")
        >>> world.task_labels(torch.tensor([0b0011, 0b1100, 0b1000]))  # sums +1, −1, −3 over the first 3
        tensor([1, 0, 0])
        """
        low = torch.as_tensor(classes, dtype=torch.long) & (2**self.task_dim - 1)
        if self.label == "pattern":
            return low
        return (_popcount(low, self.task_dim) > self.task_dim // 2).long()  # Σ s_j = 2·popcount − k > 0

    def task_world(self) -> "HypercubeTaskWorld":
        """The downstream world over the task's classes, with the same inputs (see ``HypercubeTaskWorld``)."""
        return HypercubeTaskWorld(self)


class HypercubeTaskWorld:
    """The task view of a hypercube world: classes are the task's labels (2^k first-k patterns, or
    the 2 signs of their sum), ρ uniform, and D_c the pretraining world's inputs given that label:
    a pattern drawn uniformly among those with task class c, then scaled as in pretraining. Its
    input marginal is the pretraining world's (uniform patterns), so only the classes change.

    ``sample`` draws the pattern's class id first (``pattern_classes_of``), then the scale.

    >>> task = HypercubeWorld(dim=5, task_dim=3, label="majority").task_world()
    >>> task.classes, task.tau
    (2, 0.5)
    >>> x = task.sample(torch.tensor([1, 1, 0]), torch.Generator().manual_seed(0))  # (n, d) = (3, 5)
    >>> (x[:, :3].sum(dim=1) > 0).tolist()
    [True, True, False]
    """

    def __init__(self, pretraining: HypercubeWorld) -> None:
        self.pretraining = pretraining
        self.input_shape = pretraining.input_shape
        k = pretraining.task_dim
        self.classes = 2**k if pretraining.label == "pattern" else 2
        self.prior = np.full(self.classes, 1.0 / self.classes)

    @property
    def tau(self) -> float:
        """τ = Σ_c ρ(c)² = 1/|C|: 2^−k for ``pattern``, 1/2 for ``majority`` (exact)."""
        return 1.0 / self.classes

    def pattern_classes_of(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """For each task label, a pretraining class (pattern) drawn uniformly among those with that
        label: ``labels: (n,)`` → (n,) long. The last d − k bits are uniform; the first k are the
        label (``pattern``), or uniform and all flipped when their majority disagrees with the label
        (``majority``: s ↦ −s maps one majority onto the other one to one, so the result is uniform)."""
        world = self.pretraining
        labels = torch.as_tensor(labels, dtype=torch.long)
        n, k = labels.shape[0], world.task_dim
        high = torch.randint(0, 2 ** (world.dim - k), (n,), generator=generator) << k
        if world.label == "pattern":
            return high | labels
        low = torch.randint(0, 2**k, (n,), generator=generator)
        wrong = world.task_labels(low) != labels
        return high | torch.where(wrong, low ^ (2**k - 1), low)

    def sample(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.pretraining.sample(self.pattern_classes_of(labels, generator), generator)


def check_dims(dim: int, task_dim: int, label: str) -> None:
    """Raise a one-line ValueError, naming the field, unless 2 ≤ d ≤ 24, 1 ≤ k < d and a majority
    label has k odd.

    >>> check_dims(8, 8, "pattern")
    Traceback (most recent call last):
    ...
    ValueError: task_dim: got 8; allowed: 1..7 (k < dim: the last dim − k coordinates are the scaled ones)
    """
    if label not in ("pattern", "majority"):
        raise ValueError(f"label: got {label!r}; allowed: pattern, majority")
    if not 2 <= dim <= MAX_DIM:
        raise ValueError(f"dim: got {dim}; allowed: 2..{MAX_DIM} (the 2^dim sign patterns are the latent classes)")
    if not 1 <= task_dim < dim:
        raise ValueError(f"task_dim: got {task_dim}; allowed: 1..{dim - 1} (k < dim: the last dim − k coordinates "
                         f"are the scaled ones)")
    if label == "majority" and task_dim % 2 == 0:
        raise ValueError(f"task_dim: got {task_dim}; a majority label needs it odd (the sign of a sum of k signs)")


class HypercubeConfig(ComponentConfig):
    """Config of the hypercube world of [Saunshi22] (fields documented in docs/config.md).

    >>> HypercubeConfig(dim=6, task_dim=2).input_spec
    InputSpec(shape=(6,), dtype=torch.float32, vocabulary=None, signs=True)
    """

    kind: Literal["hypercube"] = "hypercube"
    dim: int = Field(24, description=f"d: inputs have sign patterns in {{±1}}^d, the 2^d latent classes (2..{MAX_DIM})")
    task_dim: int = Field(5, description="k < d: the task reads the first k coordinates; the last d − k are "
                                         "scaled by one u ~ U(0, 1] in every draw")
    label: Label = Field("pattern", description="the task's label: the first k signs' pattern (2^k classes) or "
                                                "the sign of their sum (majority, k odd)")

    @model_validator(mode="after")
    def _dims_ok(self):
        check_dims(self.dim, self.task_dim, self.label)
        return self

    @property
    def classes(self) -> int:
        """|C| of the pretraining world: 2^d."""
        return 2**self.dim

    @property
    def label_classes(self) -> int:
        """|C| of the task world: 2^k (pattern) or 2 (majority)."""
        return 2**self.task_dim if self.label == "pattern" else 2

    @property
    def input_spec(self) -> InputSpec:
        """Real vectors (d,) with no entry 0, told apart by their sign pattern."""
        return InputSpec((self.dim,), torch.float32, signs=True)


def build_hypercube_world(config: HypercubeConfig, generator: torch.Generator) -> HypercubeWorld:
    """The pretraining world of a config; nothing is random in it (``generator`` is not used)."""
    return HypercubeWorld(config.dim, config.task_dim, config.label)
