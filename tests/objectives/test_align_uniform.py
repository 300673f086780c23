"""Alignment and uniformity [Wang20] against a slow loop written from their formulas."""

import math

import pytest
import torch
from sampled_tuples import assert_trains_on_sampled_tuples, random_encoded
from pydantic import ValidationError

from preadapt.objectives import (
    OBJECTIVES,
    AlignUniform,
    Encoded,
    align_loss,
    pooled_uniformity,
    uniform_loss,
)


def unit(v):
    v = [float(x) for x in v]
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v]


def sq_dist(u, v):
    return sum((x - y) ** 2 for x, y in zip(u, v))


def reference(e, alpha, t, weight):
    """Per anchor: ‖u − u⁺‖^α + λ·ln((1/k)Σ_i e^{−t‖u − u⁻_i‖²}) on unit vectors."""
    aligns, uniforms = [], []
    for j in range(e.anchor.shape[0]):
        u = unit(e.anchor[j])
        aligns.append(math.sqrt(sq_dist(u, unit(e.positives[j, 0]))) ** alpha)
        k = e.negatives.shape[1]
        uniforms.append(math.log(sum(math.exp(-t * sq_dist(u, unit(e.negatives[j, i, 0]))) for i in range(k)) / k))
    total = [a + weight * m for a, m in zip(aligns, uniforms)]
    return (torch.tensor(total, dtype=torch.float64), torch.tensor(aligns, dtype=torch.float64),
            torch.tensor(uniforms, dtype=torch.float64))


@pytest.mark.parametrize("n,k,d,alpha,t,weight", [
    (1, 1, 2, 2.0, 2.0, 1.0), (12, 1, 4, 2.0, 2.0, 1.0), (10, 5, 3, 1.0, 1.0, 0.5), (8, 3, 6, 3.0, 4.0, 2.0)])
def test_matches_loop_reference(n, k, d, alpha, t, weight):
    e = random_encoded(n, k, 1, d, seed=n + k + d)
    total, aligns, uniforms = reference(e, alpha, t, weight)
    ours = AlignUniform(alpha, t, weight, k)(e)
    assert ours.shape == (n,)
    assert torch.allclose(ours, total, atol=1e-6, rtol=0)
    assert torch.allclose(align_loss(e.anchor, e.positives[:, 0], alpha), aligns, atol=1e-6, rtol=0)
    assert torch.allclose(uniform_loss(e.anchor, e.negatives[:, :, 0], t), uniforms, atol=1e-6, rtol=0)


def test_pooled_uniformity_matches_loop_and_bounds_the_mean_surrogate():
    """ln of the pooled mean over all pairs; by Jensen it is ≥ the mean of the per-sample surrogate."""
    e = random_encoded(15, 4, 1, 3, seed=5)
    negatives = e.negatives[:, :, 0]
    exps = [math.exp(-2.0 * sq_dist(unit(e.anchor[j]), unit(negatives[j, i]))) for j in range(15) for i in range(4)]
    pooled = pooled_uniformity(e.anchor, negatives)
    assert float(pooled) == pytest.approx(math.log(sum(exps) / len(exps)), abs=1e-9)
    assert float(uniform_loss(e.anchor, negatives).mean()) <= float(pooled)


def test_scale_invariance():
    e = random_encoded(10, 3, 1, 4, seed=6)
    scales = torch.rand(10, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.1
    scaled = Encoded(e.anchor * scales, e.positives * 3.0, e.negatives * 0.2, e.anchor_class, e.negative_class)
    assert torch.allclose(AlignUniform(negatives=3)(e), AlignUniform(negatives=3)(scaled), atol=1e-12)


@pytest.mark.parametrize("alpha", [1.0, 2.0])
def test_identical_features_give_zero_with_finite_gradients(alpha):
    z = torch.full((4, 3), 0.3, dtype=torch.float64, requires_grad=True)
    e = Encoded(z, z.view(4, 1, 3), z.view(4, 1, 1, 3).expand(4, 2, 1, 3), torch.zeros(4), torch.zeros(4, 2))
    assert torch.allclose(align_loss(z, z, alpha), torch.zeros(4, dtype=torch.float64))
    assert torch.allclose(uniform_loss(z, e.negatives[:, :, 0]), torch.zeros(4, dtype=torch.float64))
    out = AlignUniform(alpha, 2.0, 1.0, 2)(e)
    assert torch.allclose(out, torch.zeros(4, dtype=torch.float64))
    out.sum().backward()
    assert torch.isfinite(z.grad).all()


def test_antipodal_negatives_reach_the_uniformity_minimum():
    u = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    assert float(uniform_loss(u, -u.view(1, 1, 2), t=2.0)[0]) == pytest.approx(-8.0)


@pytest.mark.parametrize("alpha", [1.0, 2.0, 3.0])
def test_gradients_match_finite_differences(alpha):
    e = random_encoded(4, 2, 1, 3, seed=7)
    inputs = tuple(t.clone().requires_grad_() for t in (e.anchor, e.positives, e.negatives))
    objective = AlignUniform(alpha, 2.0, 0.7, 2)

    def f(anchor, positives, negatives):
        return objective(Encoded(anchor, positives, negatives, e.anchor_class, e.negative_class))

    assert torch.autograd.gradcheck(f, inputs)


@pytest.mark.parametrize("bad", [{"alpha": 0.5}, {"t": 0.0}, {"t": -2.0}, {"uniform_weight": -1.0},
                                 {"negatives": 0}, {"temperature": 1.0}])
def test_config_validation(bad):
    with pytest.raises(ValidationError):
        OBJECTIVES.parse({"kind": "align_uniform", **bad})


def test_module_refuses_bad_arguments():
    with pytest.raises(ValueError, match="alpha"):
        AlignUniform(alpha=0.5)
    with pytest.raises(ValueError, match="t must"):
        AlignUniform(t=0.0)


@pytest.mark.parametrize("params", [{}, {"negatives": 4, "alpha": 1.0, "t": 3.0, "uniform_weight": 0.5}])
def test_builds_from_the_registry_and_trains_on_sampled_tuples(params):
    objective = assert_trains_on_sampled_tuples("align_uniform", params)
    assert objective.block_size == 1
