"""The supervised baseline ([Arora19] Table 1): cross-entropy of a linear head over the latent classes."""

import copy
import math
import pickle

import pytest
import torch
from pydantic import ValidationError
from sampled_tuples import random_encoded

from preadapt.objectives import (
    OBJECTIVES,
    Encoded,
    Supervised,
    encode_tuples,
    supervised_loss,
)
from preadapt.worlds import GaussianWorld, draw_tuples


def reference_supervised(e, weight, bias):
    """Per sample: −ln(e^{score[c]} / Σ_c' e^{score[c']}) with score = W f(x) + b, by loops."""
    out = []
    for j in range(e.anchor.shape[0]):
        scores = [sum(float(weight[c, i]) * float(e.anchor[j, i]) for i in range(weight.shape[1])) + float(bias[c])
                  for c in range(weight.shape[0])]
        label = int(e.anchor_class[j])
        out.append(-math.log(math.exp(scores[label]) / sum(math.exp(s) for s in scores)))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("n,d,classes", [(1, 1, 2), (12, 4, 3), (20, 6, 10)])
def test_matches_loop_reference(n, d, classes):
    e = random_encoded(n, 1, 1, d, seed=n + d + classes, classes=classes)
    objective = Supervised()
    objective.attach(classes, d, torch.Generator().manual_seed(0))
    ours = objective(e)
    assert ours.shape == (n,)
    head = objective.head_
    assert torch.allclose(ours, reference_supervised(e, head.weight.detach(), head.bias.detach()), atol=1e-6, rtol=0)


@pytest.mark.parametrize("classes", [2, 5, 17])
def test_zero_head_gives_log_c(classes):
    e = random_encoded(6, 1, 1, 3, seed=classes, classes=classes)
    out = supervised_loss(e.anchor, e.anchor_class, torch.zeros(classes, 3, dtype=torch.float64),
                          torch.zeros(classes, dtype=torch.float64))
    assert torch.allclose(out, torch.full((6,), math.log(classes), dtype=torch.float64), atol=1e-12)


def test_forward_before_attach_says_how_to_fix_it():
    e = random_encoded(3, 1, 1, 2, seed=0, classes=2)
    with pytest.raises(RuntimeError, match=r"attach\(classes, dim, generator\)"):
        Supervised()(e)


def test_attach_is_deterministic_under_the_generator_and_in_range():
    heads = []
    for _ in range(2):
        objective = Supervised()
        objective.attach(4, 9, torch.Generator().manual_seed(3))
        heads.append(objective.head_)
    assert torch.equal(heads[0].weight, heads[1].weight) and torch.equal(heads[0].bias, heads[1].bias)
    assert heads[0].weight.shape == (4, 9) and heads[0].bias.shape == (4,)
    assert float(heads[0].weight.detach().abs().max()) <= 1 / 3 and float(heads[0].weight.detach().std()) > 0.05
    other = Supervised()
    other.attach(4, 9, torch.Generator().manual_seed(4))
    assert not torch.equal(other.head_.weight, heads[0].weight)


def test_head_is_a_trainable_submodule_that_survives_copies():
    objective = Supervised()
    assert list(objective.parameters()) == []
    objective.attach(3, 2, torch.Generator().manual_seed(0))
    assert {name for name, _ in objective.named_parameters()} == {"head_.weight", "head_.bias"}
    e = random_encoded(5, 1, 1, 2, seed=1, classes=3)
    for clone in (copy.deepcopy(objective), pickle.loads(pickle.dumps(objective))):
        assert torch.equal(clone(e), objective(e))


def test_float64_features_with_a_float32_head_and_gradients_reach_both():
    objective = Supervised()
    objective.attach(3, 4, torch.Generator().manual_seed(0))
    assert objective.head_.weight.dtype == torch.float32
    e = random_encoded(8, 1, 1, 4, seed=2, classes=3)
    features = e.anchor.clone().requires_grad_()
    out = objective(Encoded(features, e.positives, e.negatives, e.anchor_class, e.negative_class))
    assert out.dtype == torch.float64
    out.mean().backward()
    assert torch.isfinite(features.grad).all() and torch.isfinite(objective.head_.weight.grad).all()


def test_only_the_anchor_and_its_class_are_used():
    objective = Supervised()
    assert (objective.negatives, objective.block_size) == (1, 1)
    objective.attach(3, 4, torch.Generator().manual_seed(0))
    e = random_encoded(8, 1, 1, 4, seed=2, classes=3)
    other = Encoded(e.anchor, torch.randn_like(e.positives), torch.randn_like(e.negatives), e.anchor_class,
                    torch.zeros_like(e.negative_class))
    assert torch.equal(objective(e), objective(other))


def test_wrong_dimension_says_how_to_fix_it():
    objective = Supervised()
    objective.attach(3, 5, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="dim=4"):
        objective(random_encoded(2, 1, 1, 4, seed=0, classes=3))
    with pytest.raises(ValueError, match="classes and dim"):
        objective.attach(0, 5, torch.Generator())


def test_training_encoder_and_head_lowers_the_loss():
    world = GaussianWorld(torch.randn(4, 5, generator=torch.Generator().manual_seed(0)) * 2, noise=1.0)
    objective = OBJECTIVES.build(OBJECTIVES.parse({"kind": "supervised"}))
    tuples = draw_tuples(world, 128, torch.Generator().manual_seed(1), objective.negatives, objective.block_size)
    torch.manual_seed(0)
    encoder = torch.nn.Linear(5, 3)
    objective.attach(world.classes, 3, torch.Generator().manual_seed(2))
    params = list(encoder.parameters()) + list(objective.parameters())
    losses = []
    for _ in range(60):  # plain gradient descent (torch.optim's first use costs seconds of imports)
        loss = objective(encode_tuples(encoder, tuples)).mean()
        losses.append(float(loss.detach()))
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p -= 0.5 * g
    assert losses[-1] < 0.6 * losses[0]


def test_config_validation_and_registry():
    config = OBJECTIVES.parse({"kind": "supervised"})
    assert isinstance(OBJECTIVES.build(config), Supervised)
    with pytest.raises(ValidationError):
        OBJECTIVES.parse({"kind": "supervised", "negatives": 2})
