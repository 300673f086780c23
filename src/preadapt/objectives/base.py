"""The objective protocol (DESIGN.md section 2): what every pretraining objective is, and what the
pipeline reads of it.

An objective maps a batch of encoded tuples (``Encoded``) to per-sample losses (n,) and declares,
as plain attributes, what the sampler must draw for it. Every objective subclasses ``Objective``;
its hooks have documented defaults, so the pipeline calls them without probing (no ``getattr``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Encoded:
    """Features of a batch of tuples: anchor (n, d), positives (n, b, d), negatives (n, k, b, d),
    with the latent classes anchor_class (n,) and negative_class (n, k)."""

    anchor: torch.Tensor
    positives: torch.Tensor
    negatives: torch.Tensor
    anchor_class: torch.Tensor
    negative_class: torch.Tensor


def encode_tuples(encoder: nn.Module, tuples, dtype: torch.dtype | None = None) -> Encoded:
    """Encode anchors, positives and negatives in one forward pass; optionally cast the features.

    >>> from preadapt.worlds import GaussianWorld, draw_tuples
    >>> world = GaussianWorld(torch.eye(3), noise=0.1)
    >>> tuples = draw_tuples(world, 5, torch.Generator().manual_seed(0), negatives=2, block_size=3)
    >>> encoded = encode_tuples(nn.Linear(3, 4), tuples)
    >>> tuple(encoded.anchor.shape), tuple(encoded.positives.shape), tuple(encoded.negatives.shape)
    ((5, 4), (5, 3, 4), (5, 2, 3, 4))
    """
    n, k, b = len(tuples), tuples.negatives_count, tuples.block_size
    inputs = torch.cat([
        tuples.anchor,
        tuples.positives.flatten(0, 1),
        tuples.negatives.flatten(0, 2),
    ])
    features = encoder(inputs)
    if dtype is not None:
        features = features.to(dtype)
    anchor, positives, negatives = features.split([n, n * b, n * k * b])
    return Encoded(
        anchor=anchor,
        positives=positives.view(n, b, -1),  # (n, b, d)
        negatives=negatives.view(n, k, b, -1),  # (n, k, b, d)
        anchor_class=tuples.anchor_class,
        negative_class=tuples.negative_class,
    )


class Objective(nn.Module):
    """Base of every pretraining objective: ``forward(encoded)`` maps an ``Encoded`` batch to
    per-sample losses (n,), never reduced (training takes the mean, estimation builds a CI).

    What the sampler draws, as attributes (class attributes here; a subclass may set them in
    ``__init__``), with their defaults:

    - ``negatives = 1``: k, negative blocks per anchor (int ≥ 1);
    - ``block_size = 1``: b, points per positive and per negative block (int ≥ 1);
    - ``true_negatives = False``: True draws every negative's class from ρ(· | ≠ c), c the anchor's
      (the oracle of [Chuang20]), for training and L_pre; L_un keeps negatives from ρ.

    Hooks the run calls before training, with defaults that do nothing:

    - ``use_prior(prior)``: the world's class prior ρ, float64 (C,) (the debiased loss's τ⁺ = ρ(c));
      called for every objective.
    - ``attach(classes, dim, generator)``: for an objective with parameters of its own whose shape
      depends on the world (C = ``classes``) and the encoder (d = ``dim``), e.g. the supervised head,
      drawn from ``generator``. Learning d costs the run one forward pass of the encoder, so it is
      called only when ``needs_attach`` is True, which it is exactly when a subclass overrides
      ``attach``.

    >>> class Collapsed(Objective):
    ...     negatives = 2
    ...     def forward(self, encoded):
    ...         return encoded.anchor.sum(-1) * 0
    >>> objective = Collapsed()
    >>> objective.negatives, objective.block_size, objective.true_negatives, objective.needs_attach
    (2, 1, False, False)
    """

    negatives: int = 1
    block_size: int = 1
    true_negatives: bool = False

    def forward(self, encoded: Encoded) -> torch.Tensor:  # -> (n,)
        raise NotImplementedError(f"{type(self).__name__} must define forward(encoded) -> per-sample losses (n,)")

    def use_prior(self, prior: torch.Tensor) -> None:
        """Read the world's class prior ρ (C,); the default ignores it."""

    def attach(self, classes: int, dim: int, generator: torch.Generator) -> None:
        """Create the parameters that depend on the number of latent classes and the feature
        dimension; the default has none."""

    @property
    def needs_attach(self) -> bool:
        """Whether the run must call ``attach`` (it encodes one input to learn d first): True when a
        subclass overrides ``attach``."""
        return type(self).attach is not Objective.attach


class ObjectiveTypeError(TypeError):
    """A registered objective factory built something that is not an ``Objective``."""


def check_objective(kind: str, built: object) -> Objective:
    """``built`` if it is an ``Objective``; else one line naming the kind and how to fix it.

    >>> try:
    ...     check_objective("triplet", nn.Identity())
    ... except ObjectiveTypeError as error:
    ...     print(error)
    the factory of objective kind 'triplet' built an Identity, not a preadapt.objectives.Objective; subclass preadapt.objectives.Objective (it declares negatives, block_size and the hooks the run calls)
    """
    if not isinstance(built, Objective):
        name = type(built).__name__
        article = "an" if name[:1].lower() in "aeiou" else "a"
        raise ObjectiveTypeError(f"the factory of objective kind {kind!r} built {article} {name}, not a "
                                 f"preadapt.objectives.Objective; subclass preadapt.objectives.Objective (it "
                                 f"declares negatives, block_size and the hooks the run calls)")
    return built
