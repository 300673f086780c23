"""The debiased contrastive loss [Chuang20] against a slow loop written from THEORY.md section 5."""

import math

import numpy as np
import pytest
import torch
from sampled_tuples import assert_trains_on_sampled_tuples, random_encoded
from pydantic import ValidationError

from preadapt.objectives import (
    OBJECTIVES,
    Debiased,
    Encoded,
    debiased_loss,
    infonce_loss,
)


def reference_debiased(e, tau_plus, temperature):
    """One anchor at a time, the formula as written, with every exponent shifted by s⁺ (exact algebra:
    −ln(e^{s⁺}/(e^{s⁺} + N·g)) = ln(1 + N·g·e^{−s⁺})) so that large similarities do not overflow."""
    out, floors = [], 0
    for j in range(e.anchor.shape[0]):
        a = e.anchor[j]
        s_pos = float(a @ e.positives[j, 0]) / temperature
        negs = [float(a @ e.negatives[j, i, 0]) / temperature for i in range(e.negatives.shape[1])]
        extras = [float(a @ e.positives[j, m]) / temperature for m in range(1, e.positives.shape[1])]
        N, M = len(negs), len(extras)
        bracket = (sum(math.exp(s - s_pos) for s in negs) / N
                   - tau_plus * sum(math.exp(s - s_pos) for s in extras) / M) / (1 - tau_plus)
        floor = math.exp(-1.0 / temperature - s_pos)
        floors += bracket <= floor
        g = max(bracket, floor)  # g·e^{−s⁺}
        out.append(math.log(1.0 + N * g))
    return torch.tensor(out, dtype=torch.float64), floors


@pytest.mark.parametrize("N,M,tau_plus,temperature", [
    (1, 1, 0.1, 1.0), (4, 1, 0.0, 0.5), (3, 2, 0.5, 1.0), (8, 3, 0.9, 0.5), (2, 5, 0.25, 2.0)])
def test_matches_loop_reference(N, M, tau_plus, temperature):
    e = random_encoded(30, N, M + 1, 5, seed=N * 10 + M)
    objective = Debiased(tau_plus, temperature, N, M)
    assert (objective.negatives, objective.block_size) == (N, M + 1)
    ours = objective(e)
    expected, _ = reference_debiased(e, tau_plus, temperature)
    assert ours.shape == (30,)
    assert torch.allclose(ours, expected, atol=1e-6, rtol=0)


def test_reference_cases_exercise_both_branches_of_the_max():
    e = random_encoded(30, 8, 4, 5, seed=83)
    _, floors = reference_debiased(e, 0.9, 0.5)
    assert 0 < floors < 30
    expected, _ = reference_debiased(e, 0.9, 0.5)
    assert torch.allclose(Debiased(0.9, 0.5, 8, 3)(e), expected, atol=1e-6, rtol=0)


def test_large_similarities_are_computed_stably():
    e = random_encoded(20, 4, 3, 3, seed=4)
    big = torch.tensor([25.0, 0.0, 0.0], dtype=torch.float64)  # adds 625 to every similarity: e^{625/0.5} overflows
    shifted = Encoded(e.anchor + big, e.positives + big, e.negatives + big, e.anchor_class, e.negative_class)
    ours = Debiased(0.3, 0.5, 4, 2)(shifted)
    expected, _ = reference_debiased(shifted, 0.3, 0.5)
    assert torch.isfinite(ours).all()
    assert torch.allclose(ours, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("tau_plus", [0.0, 0.3, 0.9])
@pytest.mark.parametrize("N", [1, 5])
def test_collapsed_encoder_gives_log_one_plus_n(tau_plus, N):
    """All features z: the bracket is (1 − τ⁺)e^{s}/(1 − τ⁺) = e^{s} ≥ e^{−1/t}, so L = ln(1 + N)."""
    z = torch.full((4, 3), 0.6, dtype=torch.float64)
    e = Encoded(z, z.view(4, 1, 3).expand(4, 3, 3), z.view(4, 1, 1, 3).expand(4, N, 3, 3),
                torch.zeros(4), torch.zeros(4, N))
    out = Debiased(tau_plus, 0.5, N, 2)(e)
    assert torch.allclose(out, torch.full((4,), math.log(1 + N), dtype=torch.float64), atol=1e-12)


def test_floor_closed_form_when_the_bracket_is_negative():
    """Negatives orthogonal to the anchor (s = 0), extra positives aligned (s = 4/t): the bracket
    1 − τ⁺e^{4/t} < 0, so g = e^{−1/t} and L = ln(1 + N·e^{−1/t − s⁺})."""
    t, N, tau_plus = 0.5, 3, 0.5
    e1, e2 = torch.eye(2, dtype=torch.float64)
    anchor = (2 * e1).view(1, 2)
    positives = torch.stack([e1, 2 * e1]).view(1, 2, 2)  # x⁺ then one extra positive
    negatives = e2.view(1, 1, 1, 2).expand(1, N, 1, 2)
    out = debiased_loss(anchor, positives[:, 0], positives[:, 1:], negatives[:, :, 0], tau_plus, t)
    s_pos = 2.0 / t
    assert float(out[0]) == pytest.approx(math.log(1 + N * math.exp(-1 / t - s_pos)), abs=1e-12)


def test_zero_class_prior_is_infonce_where_the_floor_is_inactive():
    e = random_encoded(25, 6, 2, 4, seed=7)
    positive, extra, negatives = e.positives[:, 0], e.positives[:, 1:], e.negatives[:, :, 0]
    ours = debiased_loss(e.anchor, positive, extra, negatives, 0.0, 1.0)
    active = torch.logsumexp(torch.einsum("nd,nkd->nk", e.anchor, negatives), 1) - math.log(6) > -1.0
    assert active.sum() >= 20
    assert torch.allclose(ours[active], infonce_loss(e.anchor, positive, negatives)[active], atol=1e-12)


def test_only_the_first_point_of_each_negative_block_is_used():
    e = random_encoded(10, 3, 3, 4, seed=11)
    negatives = e.negatives.clone()
    negatives[:, :, 1:] = torch.randn_like(negatives[:, :, 1:])
    other = Encoded(e.anchor, e.positives, negatives, e.anchor_class, e.negative_class)
    assert torch.equal(Debiased(0.2, 1.0, 3, 2)(e), Debiased(0.2, 1.0, 3, 2)(other))


def test_gradients_match_finite_differences():
    e = random_encoded(5, 3, 3, 3, seed=12)
    inputs = tuple(t.clone().requires_grad_() for t in (e.anchor, e.positives, e.negatives))
    objective = Debiased(0.4, 0.8, 3, 2)

    def f(anchor, positives, negatives):
        return objective(Encoded(anchor, positives, negatives, e.anchor_class, e.negative_class))

    assert torch.autograd.gradcheck(f, inputs)


@pytest.mark.parametrize("tau_plus", [0.0, 0.5, 0.99])
def test_gradients_are_finite_at_collapse_and_on_the_floor(tau_plus):
    z = torch.ones(3, 2, dtype=torch.float64, requires_grad=True)
    e = Encoded(z, z.view(3, 1, 2).expand(3, 3, 2), z.view(3, 1, 1, 2).expand(3, 2, 3, 2),
                torch.zeros(3), torch.zeros(3, 2))
    Debiased(tau_plus, 0.5, 2, 2)(e).sum().backward()
    assert torch.isfinite(z.grad).all()
    anchor = torch.tensor([[2.0, 0.0]], dtype=torch.float64, requires_grad=True)
    positives = torch.tensor([[[1.0, 0.0], [2.0, 0.0]]], dtype=torch.float64)
    negatives = torch.tensor([[[[0.0, 1.0]]]], dtype=torch.float64)
    on_floor = debiased_loss(anchor, positives[:, 0], positives[:, 1:], negatives[:, :, 0], max(tau_plus, 0.5), 0.5)
    on_floor.sum().backward()
    assert torch.isfinite(anchor.grad).all()


@pytest.mark.parametrize("bad", [{"tau_plus": 1.0}, {"tau_plus": -0.1}, {"tau_plus": 1.5}, {"temperature": 0.0},
                                 {"negatives": 0}, {"extra_positives": 0}, {"block_size": 2}])
def test_config_validation(bad):
    with pytest.raises(ValidationError):
        OBJECTIVES.parse({"kind": "debiased", **bad})


def test_function_and_module_refuse_bad_arguments():
    with pytest.raises(ValueError, match="tau_plus"):
        Debiased(tau_plus=1.0)
    with pytest.raises(ValueError, match="extra positives"):
        z = torch.ones(2, 3)
        debiased_loss(z, z, z.view(2, 1, 3)[:, :0], z.view(2, 1, 3), tau_plus=0.1)


@pytest.mark.parametrize("params", [{}, {"negatives": 4, "extra_positives": 3, "tau_plus": 0.25, "temperature": 0.5}])
def test_builds_from_the_registry_and_trains_on_sampled_tuples(params):
    objective = assert_trains_on_sampled_tuples("debiased", params)


def test_tau_plus_null_uses_each_anchors_own_class_prior():
    """Exact debiasing in the latent-class world: a negative drawn from ρ shares the anchor's class c
    with probability ρ(c), so τ⁺ = ρ(c) anchor by anchor; the losses equal the reference with that τ⁺."""
    from preadapt.objectives import OBJECTIVES

    objective = OBJECTIVES.build(OBJECTIVES.parse({"kind": "debiased", "tau_plus": None, "negatives": 3,
                                                   "extra_positives": 2, "temperature": 0.7}))
    with pytest.raises(ValueError, match="call use_prior"):
        objective(None)
    prior = np.array([0.5, 0.3, 0.2])
    objective.use_prior(prior)
    assert objective.tau_plus is None  # no single τ⁺: it follows the anchor's class
    e = random_encoded(6, 3, 3, 4, seed=21)
    e = Encoded(e.anchor, e.positives, e.negatives, torch.tensor([0, 1, 2, 0, 1, 2]), e.negative_class)
    out = objective(e)
    for i in range(6):
        one = Encoded(e.anchor[i:i + 1], e.positives[i:i + 1], e.negatives[i:i + 1], e.anchor_class[i:i + 1],
                      e.negative_class[i:i + 1])
        expected, _ = reference_debiased(one, float(prior[int(e.anchor_class[i])]), 0.7)
        assert float(out[i]) == pytest.approx(float(expected[0]), rel=1e-10)
