"""Shared pieces of the objectives' tests: random encoded tuples, and the check that an objective
built from the registry trains on tuples drawn by the sampler it asks for."""

import torch

from preadapt.objectives import OBJECTIVES, Encoded, encode_tuples
from preadapt.worlds import GaussianWorld, draw_tuples


def assert_trains_on_sampled_tuples(kind: str, params: dict) -> torch.nn.Module:
    """Build ``kind`` with ``params``, draw 16 tuples with its k, b and (if it has one) true-negative
    sampler, and check finite per-sample losses (16,) and finite encoder gradients; returns the objective."""
    objective = OBJECTIVES.build(OBJECTIVES.parse({"kind": kind, **params}))
    world = GaussianWorld(torch.randn(4, 5, generator=torch.Generator().manual_seed(0)), noise=1.0)
    tuples = draw_tuples(world, 16, torch.Generator().manual_seed(1), objective.negatives, objective.block_size,
                         true_negatives=objective.true_negatives)
    encoder = torch.nn.Linear(5, 3)
    losses = objective(encode_tuples(encoder, tuples, dtype=torch.float64))
    assert losses.shape == (16,) and torch.isfinite(losses).all()
    losses.mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters())
    return objective


def random_encoded(n: int, k: int, b: int, d: int, seed: int, scale: float = 1.0, classes: int = 5) -> Encoded:
    """Random float64 features of n tuples: anchor (n, d), positives (n, b, d), negatives (n, k, b, d),
    and latent classes in [0, classes) for the anchors (n,) and negative blocks (n, k)."""
    g = torch.Generator().manual_seed(seed)
    draw = lambda *shape: scale * torch.randn(*shape, generator=g, dtype=torch.float64)
    return Encoded(draw(n, d), draw(n, b, d), draw(n, k, b, d),
                   torch.randint(0, classes, (n,), generator=g), torch.randint(0, classes, (n, k), generator=g))
