"""Sampling from a latent-class world exactly as THEORY.md section 2 says ([Arora19]).

- similar pair: c ~ ρ, then x, x⁺ i.i.d. from D_c;
- negatives: each c⁻_i ~ ρ independently (it may equal c), x⁻_i ~ D_{c⁻_i};
- true negatives (the oracle of [Chuang20], p⁻_x): each c⁻_i ~ ρ(· | ≠ c) independently;
- blocks of size b: b positives from D_c, and for each negative b points from one D_{c⁻_i}.

Tensors are laid out as anchor (n, *X), positives (n, b, *X), negatives (n, k, b, *X).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from typing import Literal

import numpy as np
import torch

from preadapt.worlds.base import ExampleWorld, World
from preadapt.worlds.prior import collision_prior, is_implicit_uniform, positive_classes


def derive_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed for one purpose, derived from a root seed and names (stable across runs).

    >>> derive_seed(0, "world") == derive_seed(0, "world") != derive_seed(0, "encoder")
    True
    """
    digest = hashlib.blake2b(repr((int(seed),) + keys).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def make_generator(seed: int, *keys: object) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``derive_seed(seed, *keys)``."""
    return torch.Generator().manual_seed(derive_seed(seed, *keys))


def sample_classes(probs: np.ndarray, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` i.i.d. class indices from the distribution ``probs: (C,)`` → (n,) long.

    ``torch.multinomial`` over the C weights; a ``uniform_prior`` (``worlds.prior``) is drawn with
    ``torch.randint`` instead, without reading its entries (any C, e.g. a hypercube's 2^24 patterns).

    >>> from preadapt.worlds.prior import uniform_prior
    >>> sample_classes(uniform_prior(2**24), 3, torch.Generator().manual_seed(0)).shape
    torch.Size([3])
    """
    if is_implicit_uniform(probs):
        return torch.randint(0, probs.shape[0], (n,), generator=generator)
    weights = torch.as_tensor(np.asarray(probs, dtype=np.float64))
    return torch.multinomial(weights, n, replacement=True, generator=generator)


def sample_distinct_pairs(prior: np.ndarray, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(c, c⁻) ~ ρ × ρ conditioned on c ≠ c⁻, exactly: each (n,) long.

    c has marginal ρ(c)(1 − ρ(c))/(1 − τ) (ρ itself when ρ is uniform: a ``uniform_prior`` is drawn
    as it is); then c⁻ ~ ρ restricted to the other classes (drawn by rejection, which needs
    1/(1 − ρ(c)) tries on average).
    """
    prior = np.asarray(prior, dtype=np.float64)  # a uniform_prior stays a view of one number
    if positive_classes(prior) < 2:
        raise ValueError("distinct class pairs need at least two classes with positive prior")
    marginal = prior if is_implicit_uniform(prior) else prior * (1.0 - prior)
    anchor = sample_classes(marginal, n, generator)
    return anchor, sample_other_classes(prior, anchor, generator)


def sample_other_classes(prior: np.ndarray, classes: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """For every entry c of ``classes`` (any shape, long), an independent c' ~ ρ(· | c' ≠ c).

    Drawn by rejection, all entries at once: every entry draws from ρ and the ones that hit their own
    class draw again, 1/(1 − ρ(c)) tries on average. Needs two classes with positive prior.

    >>> other = sample_other_classes(np.array([0.5, 0.5]), torch.tensor([[0, 1], [1, 1]]), torch.Generator())
    >>> other
    tensor([[1, 0],
            [0, 0]])
    """
    if positive_classes(prior) < 2:
        raise ValueError(f"a class other than the given one needs at least two classes with positive prior; "
                         f"got {positive_classes(prior)}")
    prior = np.asarray(prior, dtype=np.float64)  # a uniform_prior stays a view of one number
    other = sample_classes(prior, classes.numel(), generator).view(classes.shape)
    clash = other == classes
    while clash.any():
        other[clash] = sample_classes(prior, int(clash.sum()), generator)
        clash = other == classes
    return other


def sample_tasks(prior: np.ndarray, n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` tasks of ``size`` distinct classes with P(T) ∝ Π_{c∈T} ρ(c) → (n, size) long.

    This is "T drawn from ρ and conditioned on being distinct" (THEORY.md section 3). Exact
    sequential sampling: going through the classes in order, class c joins with probability
    ρ(c)·e_{j−1}(ρ_{>c}) / e_j(ρ_{≥c}) when j classes are still missing. Columns come in random order.
    """
    prior = np.asarray(prior, dtype=np.float64)
    classes = prior.size
    if not 1 <= size <= np.count_nonzero(prior):
        raise ValueError(f"a task of {size} distinct classes needs {size} classes with positive prior")
    # rescaled to total size/e: then e_j(weights) ≤ (size/e)^j / j! stays finite for every j ≤ size
    weights = prior / prior.sum() * size / np.e
    # suffix[c, j] = e_j(weights[c:]), shape (C + 1, size + 1)
    suffix = np.zeros((classes + 1, size + 1))
    suffix[classes, 0] = 1.0
    for c in range(classes - 1, -1, -1):
        suffix[c] = suffix[c + 1]
        suffix[c, 1:] += weights[c] * suffix[c + 1, :-1]
    missing = np.full(n, size)
    tasks = np.empty((n, size), dtype=np.int64)
    for c in range(classes):
        uniforms = torch.rand(n, generator=generator, dtype=torch.float64).numpy()
        need = missing > 0
        take = np.zeros(n)
        take[need] = weights[c] * suffix[c + 1, missing[need] - 1] / suffix[c, missing[need]]
        joins = uniforms < take
        tasks[joins, size - missing[joins]] = c
        missing -= joins
    tasks = torch.as_tensor(tasks)
    order = torch.rand(n, size, generator=generator).argsort(dim=1)
    return tasks.gather(1, order)


def sample_per_class(world: World, per_class: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` points of every class: inputs (C·m, *X) grouped by class, labels (C·m,)."""
    labels = torch.arange(world.classes).repeat_interleave(per_class)
    return world.sample(labels, generator), labels


def draw_examples(world: World, labels: torch.Tensor, generator: torch.Generator
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """x ~ D_label for ``labels: (n,)``, with the ids of the examples drawn when ``world`` samples a
    finite set of examples (``ExampleWorld``), else None → inputs (n, *X), ids (n,) or None.
    The same random numbers as ``world.sample``."""
    if isinstance(world, ExampleWorld):
        ids = world.sample_ids(labels, generator)
        if ids is not None:
            return world.take(ids), ids
    return world.sample(labels, generator), None


def example_ids(world: World) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The ids and classes of every example ``world`` samples (grouped by class), or None for a world
    that draws fresh inputs."""
    return world.example_ids() if isinstance(world, ExampleWorld) else None


def distinct_within_rows(world: ExampleWorld, ids: torch.Tensor, classes: torch.Tensor,
                         generator: torch.Generator) -> torch.Tensor:
    """Redraw examples until the entries of every row of ``ids: (n, r)`` (of ``classes: (n, r)``) are
    distinct examples, as independent draws from a population are (almost surely). An entry that
    repeats an earlier one of its row is drawn again from its class; a row that has more entries of a
    class than the split has examples of it keeps its repeats. Distinct draws make an estimate on a
    split an unbiased estimate of the population value (a U-statistic), not of the split's own.

    >>> from preadapt.worlds.finite import FiniteWorld
    >>> world = FiniteWorld(torch.arange(10.0).view(10, 1), [0] * 5 + [1] * 5, [0, 1, 2, 2, 2] * 2)
    >>> ids = torch.tensor([[2, 2, 3, 7]]); classes = torch.tensor([[0, 0, 0, 1]])  # test examples 2-4 of class 0
    >>> row = distinct_within_rows(world, ids, classes, torch.Generator().manual_seed(0))
    >>> sorted(row[0, :3].tolist()), row[0, 3].item()  # three distinct examples of class 0
    ([2, 3, 4], 7)
    """
    ids = ids.clone()
    same_class = classes[:, :, None] == classes[:, None, :]  # (n, r, r)
    counts = world.example_ids()[1].bincount(minlength=int(classes.max()) + 1)
    feasible = same_class.sum(-1) <= counts[classes]  # (n, r): enough examples of the class for the row
    earlier = torch.ones(ids.shape[1], ids.shape[1], dtype=torch.bool).tril(-1)  # [i, j]: j < i
    while True:
        repeat = ((ids[:, :, None] == ids[:, None, :]) & earlier).any(-1) & feasible
        if not repeat.any():
            return ids
        ids[repeat] = world.sample_ids(classes[repeat], generator)


@dataclass
class Tuples:
    """Contrastive tuples: the inputs and their latent classes.

    anchor (n, *X); positives (n, b, *X); negatives (n, k, b, *X);
    anchor_class (n,); negative_class (n, k); ``ids`` (n, 1 + b + k·b): the example ids of the anchor,
    positives and negatives (in that order, negatives block by block) when the world samples a finite
    set of examples, else None.
    """

    anchor: torch.Tensor
    positives: torch.Tensor
    negatives: torch.Tensor
    anchor_class: torch.Tensor
    negative_class: torch.Tensor
    ids: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.anchor.shape[0]

    def __getitem__(self, index) -> "Tuples":
        ids = None if self.ids is None else self.ids[index]
        return Tuples(self.anchor[index], self.positives[index], self.negatives[index], self.anchor_class[index],
                      self.negative_class[index], ids)

    def to(self, device: torch.device | str) -> "Tuples":
        if self.anchor.device == torch.device(device):
            return self
        return Tuples(*(None if getattr(self, f.name) is None else getattr(self, f.name).to(device)
                        for f in fields(self)))

    def example_units(self, negatives: int | None = None, block_size: int | None = None) -> dict | None:
        """The examples behind each tuple's first ``negatives`` negative blocks and first ``block_size``
        points of each block (None: all), as ``RunningMean`` units ``{"example": (n, r)}``; None for
        fresh draws."""
        if self.ids is None:
            return None
        n, k, b = len(self), self.negatives_count, self.block_size
        k_used, b_used = negatives or k, block_size or b
        positives = self.ids[:, 1:1 + b][:, :b_used]
        negatives_ids = self.ids[:, 1 + b:].view(n, k, b)[:, :k_used, :b_used].reshape(n, -1)
        return {"example": torch.cat([self.ids[:, :1], positives, negatives_ids], dim=1)}

    @property
    def negatives_count(self) -> int:
        return self.negatives.shape[1]

    @property
    def block_size(self) -> int:
        return self.positives.shape[1]


Condition = Literal["same", "different"] | None


def draw_tuples(
    world: World,
    n: int,
    generator: torch.Generator,
    negatives: int = 1,
    block_size: int = 1,
    condition: Condition = None,
    true_negatives: bool = False,
) -> Tuples:
    """Draw ``n`` contrastive tuples with k = ``negatives`` negative blocks of b = ``block_size``.

    ``condition`` samples the parts of the decomposition L_un = τ·L_un^= + (1 − τ)·L_un^≠:
    ``"same"``: c ~ ν (ν ∝ ρ²) and every negative from c; ``"different"``: (c, c⁻) ~ ρ × ρ given
    c ≠ c⁻. Both need ``negatives = 1``.

    ``true_negatives``: the negatives of the oracle in [Chuang20], from p⁻_x, the data restricted to
    the classes other than the anchor's: c ~ ρ as usual, then each c⁻_i ~ ρ(· | ≠ c) independently.
    (With k = 1 this is ``condition="different"`` except that c keeps its marginal ρ.)

    >>> from preadapt.worlds.gaussian import GaussianWorld
    >>> world = GaussianWorld(torch.eye(3), noise=0.1)
    >>> t = draw_tuples(world, 5, torch.Generator().manual_seed(0), negatives=2, block_size=4)
    >>> tuple(t.anchor.shape), tuple(t.positives.shape), tuple(t.negatives.shape)
    ((5, 3), (5, 4, 3), (5, 2, 4, 3))
    >>> t = draw_tuples(world, 1000, torch.Generator().manual_seed(0), negatives=3, true_negatives=True)
    >>> bool((t.negative_class != t.anchor_class[:, None]).all())
    True
    """
    if negatives < 1 or block_size < 1:
        raise ValueError(f"negatives and block_size must be ≥ 1; got {negatives} and {block_size}")
    if true_negatives and condition is not None:
        raise ValueError(f"true_negatives draws negatives from ρ(· | ≠ c); it cannot be combined with "
                         f"condition = {condition!r}: pass one or the other")
    if true_negatives:
        anchor_class = sample_classes(world.prior, n, generator)
        anchors = anchor_class.view(n, 1).expand(n, negatives)
        negative_class = sample_other_classes(world.prior, anchors, generator)  # (n, k)
    elif condition is None:
        anchor_class = sample_classes(world.prior, n, generator)
        negative_class = sample_classes(world.prior, n * negatives, generator).view(n, negatives)
    elif negatives != 1:
        raise ValueError(f"conditional tuples ({condition!r}) are defined for negatives = 1; got {negatives}")
    elif condition == "same":
        anchor_class = sample_classes(collision_prior(world.prior), n, generator)
        negative_class = anchor_class.view(n, 1).clone()
    elif condition == "different":
        anchor_class, other = sample_distinct_pairs(world.prior, n, generator)
        negative_class = other.view(n, 1)
    else:
        raise ValueError(f"condition must be None, 'same' or 'different'; got {condition!r}")
    shape = world.input_shape
    anchor, anchor_ids = draw_examples(world, anchor_class, generator)
    positives, positive_ids = draw_examples(world, anchor_class.repeat_interleave(block_size), generator)
    negs, negative_ids = draw_examples(world, negative_class.reshape(-1).repeat_interleave(block_size), generator)
    ids = None
    if anchor_ids is not None:  # a finite set of examples: the draws of a tuple are distinct examples
        ids = torch.cat([anchor_ids.view(n, 1), positive_ids.view(n, block_size),
                         negative_ids.view(n, negatives * block_size)], dim=1)  # (n, 1 + b + k·b)
        classes = torch.cat([anchor_class.view(n, 1).expand(n, 1 + block_size),
                             negative_class.repeat_interleave(block_size, dim=1)], dim=1)
        redrawn = distinct_within_rows(world, ids, classes, generator)
        if not torch.equal(redrawn, ids):
            ids = redrawn
            inputs = world.take(ids.reshape(-1)).view(n, -1, *shape)
            anchor, positives, negs = inputs[:, 0], inputs[:, 1:1 + block_size], inputs[:, 1 + block_size:]
    return Tuples(
        anchor=anchor,
        positives=positives.reshape(n, block_size, *shape),
        negatives=negs.reshape(n, negatives, block_size, *shape),
        anchor_class=anchor_class,
        negative_class=negative_class,
        ids=ids,
    )
