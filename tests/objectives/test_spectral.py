"""The spectral contrastive loss [HaoChen21] against a slow loop written from its formula."""

import pytest
import torch
from sampled_tuples import assert_trains_on_sampled_tuples, random_encoded
from pydantic import ValidationError

from preadapt.objectives import (
    OBJECTIVES,
    Encoded,
    Spectral,
    spectral_loss,
)


def reference_spectral(e):
    """−2 f(x)ᵀf(x⁺) + (1/k)Σ_i (f(x)ᵀf(x⁻_i))², first point of each block, one anchor at a time."""
    out = []
    for j in range(e.anchor.shape[0]):
        a = [float(v) for v in e.anchor[j]]
        k = e.negatives.shape[1]
        attraction = sum(x * float(y) for x, y in zip(a, e.positives[j, 0]))
        repulsion = sum(sum(x * float(y) for x, y in zip(a, e.negatives[j, i, 0])) ** 2 for i in range(k)) / k
        out.append(-2 * attraction + repulsion)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("n,k,d", [(1, 1, 1), (20, 1, 4), (15, 3, 6), (8, 10, 2)])
def test_matches_loop_reference(n, k, d):
    e = random_encoded(n, k, 1, d, seed=n + 10 * k + 100 * d)
    ours = Spectral(k)(e)
    assert ours.shape == (n,)
    assert torch.allclose(ours, reference_spectral(e), atol=1e-6, rtol=0)


def test_many_negatives_average_single_negative_losses():
    e = random_encoded(10, 4, 1, 3, seed=1)
    singles = [spectral_loss(e.anchor, e.positives[:, 0], e.negatives[:, i:i + 1, 0]) for i in range(4)]
    assert torch.allclose(Spectral(4)(e), torch.stack(singles).mean(0), atol=1e-12)


def test_larger_blocks_use_their_first_point():
    e = random_encoded(10, 2, 3, 4, seed=2)
    first = Encoded(e.anchor, e.positives[:, :1], e.negatives[:, :, :1], e.anchor_class, e.negative_class)
    assert torch.equal(Spectral(2)(e), Spectral(2)(first))


@pytest.mark.parametrize("value,d", [(0.0, 3), (0.5, 2), (1.0, 1), (2.0, 4)])
def test_collapsed_encoder_closed_form(value, d):
    z = torch.full((5, d), value, dtype=torch.float64)
    e = Encoded(z, z.view(5, 1, d), z.view(5, 1, 1, d).expand(5, 3, 1, d), torch.zeros(5), torch.zeros(5, 3))
    sq = value ** 2 * d  # ‖z‖²
    assert torch.allclose(Spectral(3)(e), torch.full((5,), -2 * sq + sq ** 2, dtype=torch.float64), atol=1e-12)


def test_gradients_match_finite_differences():
    e = random_encoded(4, 2, 1, 3, seed=3)
    inputs = tuple(t.clone().requires_grad_() for t in (e.anchor, e.positives, e.negatives))
    objective = Spectral(2)

    def f(anchor, positives, negatives):
        return objective(Encoded(anchor, positives, negatives, e.anchor_class, e.negative_class))

    assert torch.autograd.gradcheck(f, inputs)


@pytest.mark.parametrize("bad", [{"negatives": 0}, {"block_size": 2}, {"temperature": 1.0}])
def test_config_validation(bad):
    with pytest.raises(ValidationError):
        OBJECTIVES.parse({"kind": "spectral", **bad})
    with pytest.raises(ValueError, match="negatives"):
        Spectral(0)


@pytest.mark.parametrize("params", [{}, {"negatives": 3}])
def test_builds_from_the_registry_and_trains_on_sampled_tuples(params):
    objective = assert_trains_on_sampled_tuples("spectral", params)
    assert objective.block_size == 1
