"""InfoNCE / NT-Xent against a slow loop written from its formula, in float64."""

import math

import pytest
import torch
from sampled_tuples import assert_trains_on_sampled_tuples, random_encoded
from pydantic import ValidationError

from preadapt.objectives import (
    OBJECTIVES,
    Encoded,
    InfoNCE,
    curl_loss,
    encode_tuples,
    infonce_logits,
    infonce_loss,
    logistic,
)
from preadapt.objectives.infonce import block_means
from preadapt.worlds import GaussianWorld, as_prior, draw_tuples


def reference_infonce(e, temperature, k, in_batch):
    """One anchor at a time: similarities to block means, then −ln(e^{s⁺} / Σ e^{s})."""
    n, b = e.anchor.shape[0], e.positives.shape[1]
    means_pos = [sum(e.positives[j, p] for p in range(b)) / b for j in range(n)]
    out = []
    for j in range(n):
        s_pos = float(e.anchor[j] @ means_pos[j]) / temperature
        scores = [s_pos]
        if in_batch:
            scores += [float(e.anchor[j] @ means_pos[m]) / temperature for m in range(n) if m != j]
        for i in range(k):
            neg = sum(e.negatives[j, i, p] for p in range(b)) / b
            scores.append(float(e.anchor[j] @ neg) / temperature)
        out.append(-math.log(math.exp(s_pos) / sum(math.exp(s) for s in scores)))
    return torch.tensor(out, dtype=torch.float64)


SHAPES = [(1, 1, 1.0), (3, 1, 0.5), (1, 4, 2.0), (5, 3, 0.7)]


@pytest.mark.parametrize("in_batch", [False, True])
@pytest.mark.parametrize("k,b,temperature", SHAPES)
def test_matches_loop_reference(k, b, temperature, in_batch):
    e = random_encoded(12, k, b, 6, seed=10 * k + b)
    ours = InfoNCE(temperature, k, b, in_batch)(e)
    assert ours.shape == (12,)
    assert torch.allclose(ours, reference_infonce(e, temperature, k, in_batch), atol=1e-6, rtol=0)


@pytest.mark.parametrize("in_batch", [False, True])
@pytest.mark.parametrize("k,b,temperature", SHAPES)
def test_matches_torch_cross_entropy_on_the_logits(k, b, temperature, in_batch):
    e = random_encoded(9, k, b, 5, seed=k + 100 * b)
    positive, negatives = block_means(e.positives, e.negatives)
    logits = infonce_logits(e.anchor, positive, negatives, temperature, in_batch)
    assert logits.shape == (9, (9 if in_batch else 1) + k)
    target = torch.zeros(9, dtype=torch.long)
    expected = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    assert torch.allclose(infonce_loss(e.anchor, positive, negatives, temperature, in_batch), expected, atol=1e-12)


def test_in_batch_logits_equal_the_similarity_matrix_with_the_diagonal_as_target():
    e = random_encoded(7, 1, 1, 4, seed=3)
    positive = e.positives[:, 0]
    logits = infonce_logits(e.anchor, positive, e.negatives[:, :0, 0], 0.5, in_batch=True)  # (n, n)
    full = e.anchor @ positive.T / 0.5
    expected = torch.nn.functional.cross_entropy(full, torch.arange(7), reduction="none")
    assert torch.allclose(torch.logsumexp(logits, 1) - logits[:, 0], expected, atol=1e-12)


@pytest.mark.parametrize("k", [1, 3])
def test_unit_temperature_is_ln2_times_logistic_curl(k):
    e = random_encoded(20, k, 2, 5, seed=k)
    expected = math.log(2.0) * curl_loss(e.anchor, e.positives, e.negatives, logistic)
    assert torch.allclose(InfoNCE(1.0, k, 2)(e), expected, atol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 7])
@pytest.mark.parametrize("temperature", [0.1, 1.0])
def test_collapsed_encoder_gives_log_one_plus_k(k, temperature):
    z = torch.full((6, 3), 0.8, dtype=torch.float64)
    e = Encoded(z, z.view(6, 1, 3), z.view(6, 1, 1, 3).expand(6, k, 1, 3), torch.zeros(6), torch.zeros(6, k))
    assert torch.allclose(InfoNCE(temperature, k)(e), torch.full((6,), math.log(1 + k), dtype=torch.float64))
    in_batch = InfoNCE(temperature, k, in_batch=True)(e)
    assert torch.allclose(in_batch, torch.full((6,), math.log(6 + k), dtype=torch.float64))


def test_in_batch_only_draws_one_negative_and_ignores_it():
    objective = InfoNCE(0.5, negatives=0, in_batch=True)
    assert (objective.negatives, objective.explicit_negatives, objective.block_size) == (1, 0, 1)
    e = random_encoded(8, 1, 1, 4, seed=5)
    other = Encoded(e.anchor, e.positives, torch.randn_like(e.negatives), e.anchor_class, e.negative_class)
    assert torch.equal(objective(e), objective(other))
    assert torch.allclose(objective(e), reference_infonce(e, 0.5, 0, True), atol=1e-6)


def test_large_similarities_stay_finite():
    e = random_encoded(10, 4, 1, 3, seed=9, scale=30.0)
    out = InfoNCE(0.05, 4)(e)
    assert torch.isfinite(out).all() and (out >= 0).all()


@pytest.mark.parametrize("in_batch", [False, True])
def test_gradients_match_finite_differences(in_batch):
    e = random_encoded(4, 2, 2, 3, seed=2)
    inputs = tuple(t.clone().requires_grad_() for t in (e.anchor, e.positives, e.negatives))
    objective = InfoNCE(0.7, 2, 2, in_batch)

    def f(anchor, positives, negatives):
        return objective(Encoded(anchor, positives, negatives, e.anchor_class, e.negative_class))

    assert torch.autograd.gradcheck(f, inputs)


def test_collapsed_gradients_are_finite():
    z = torch.ones(4, 3, dtype=torch.float64, requires_grad=True)
    e = Encoded(z, z.view(4, 1, 3), z.view(4, 1, 1, 3).expand(4, 2, 1, 3), torch.zeros(4), torch.zeros(4, 2))
    InfoNCE(0.2, 2, in_batch=True)(e).mean().backward()
    assert torch.isfinite(z.grad).all()


@pytest.mark.parametrize("bad", [{"temperature": 0.0}, {"temperature": -1.0}, {"negatives": -1}, {"negatives": 0},
                                 {"block_size": 0}, {"in_batch": "maybe"}, {"margin": 1.0},
                                 {"true_negatives": "maybe"}, {"true_negatives": True, "in_batch": True}])
def test_config_validation(bad):
    with pytest.raises(ValidationError):
        OBJECTIVES.parse({"kind": "infonce", **bad})


def test_module_refuses_bad_arguments():
    with pytest.raises(ValueError, match="temperature"):
        InfoNCE(temperature=0.0)
    with pytest.raises(ValueError, match="negatives"):
        InfoNCE(negatives=0)
    with pytest.raises(ValueError, match="in_batch = false"):
        InfoNCE(negatives=2, in_batch=True, true_negatives=True)


@pytest.mark.parametrize("params", [{}, {"negatives": 3, "block_size": 2, "temperature": 0.2},
                                    {"negatives": 0, "in_batch": True}, {"negatives": 3, "true_negatives": True}])
def test_builds_from_the_registry_and_trains_on_sampled_tuples(params):
    objective = assert_trains_on_sampled_tuples("infonce", params)


def test_true_negatives_is_a_sampler_attribute_the_loss_ignores():
    """The oracle of [Chuang20] changes what the sampler draws, never the loss of given tuples."""
    default = OBJECTIVES.build(OBJECTIVES.parse({"kind": "infonce", "negatives": 3}))
    oracle = OBJECTIVES.build(OBJECTIVES.parse({"kind": "infonce", "negatives": 3, "true_negatives": True}))
    assert default.true_negatives is False and oracle.true_negatives is True
    assert (oracle.negatives, oracle.block_size) == (default.negatives, default.block_size)
    e = random_encoded(6, 3, 1, 4, seed=3)
    assert torch.equal(oracle(e), default(e))


def test_true_negative_tuples_drawn_for_the_objective_have_no_same_class_negative():
    world = GaussianWorld(torch.eye(3) * 4.0, noise=0.5, prior=as_prior([0.6, 0.3, 0.1], 3))
    oracle = OBJECTIVES.build(OBJECTIVES.parse({"kind": "infonce", "negatives": 5, "true_negatives": True}))
    tuples = draw_tuples(world, 4000, torch.Generator().manual_seed(2), oracle.negatives, oracle.block_size,
                         true_negatives=oracle.true_negatives)
    assert not (tuples.negative_class == tuples.anchor_class[:, None]).any()
    losses = oracle(encode_tuples(torch.nn.Identity(), tuples, dtype=torch.float64))
    assert losses.shape == (4000,) and torch.isfinite(losses).all()
