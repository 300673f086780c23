"""The hypercube world of [Saunshi22]: exact τ against enumeration, positives that keep their sign
pattern, task labels that read only the first k coordinates, and the task view's sampler."""

import itertools
import pickle
from fractions import Fraction

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from preadapt.worlds import WORLDS, HypercubeConfig, HypercubeWorld, draw_tuples, tau
from preadapt.worlds.hypercube import MAX_DIM, pattern_classes, sign_patterns


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def every_pattern(dim: int) -> torch.Tensor:
    """All 2^d sign patterns as inputs (2^d, d) float32, each once: the input distribution, enumerated."""
    return torch.tensor(list(itertools.product([-1.0, 1.0], repeat=dim)))


def collision_probability(classes: torch.Tensor) -> Fraction:
    """P(class(x) = class(x')) for x, x' independent and uniform over the enumerated inputs: every
    ordered pair counted, as an exact fraction."""
    same = int((classes[:, None] == classes[None, :]).sum())
    return Fraction(same, classes.shape[0] ** 2)


WORLDS_TO_ENUMERATE = [(4, 2, "pattern"), (4, 3, "majority"), (5, 3, "majority"), (6, 1, "pattern")]


@pytest.mark.parametrize("dim,task_dim,label", WORLDS_TO_ENUMERATE)
def test_tau_is_exact_against_enumeration(dim, task_dim, label):
    world = HypercubeWorld(dim, task_dim, label)
    task = world.task_world()
    inputs = every_pattern(dim)  # the inputs' sign patterns are uniform: enumerate them all
    fine = pattern_classes(inputs)
    coarse = world.task_labels(fine)
    # pretraining: the class is the whole pattern, τ = 2^−d
    assert collision_probability(fine) == Fraction(world.tau) == Fraction(1, 2**dim)
    assert tau(world.prior) == world.tau
    counts = np.bincount(fine.numpy(), minlength=world.classes)
    np.testing.assert_array_equal(world.prior, counts / counts.sum())  # ρ is the law of the pattern
    # the task: 2^k first-k patterns or the 2 majorities, τ = 1/|C_task|
    assert collision_probability(coarse) == Fraction(task.tau) == Fraction(1, task.classes)
    assert tau(task.prior) == task.tau
    counts = np.bincount(coarse.numpy(), minlength=task.classes)
    np.testing.assert_array_equal(task.prior, counts / counts.sum())


def test_tau_at_the_largest_dimension():
    world = HypercubeWorld(MAX_DIM, 5)
    prior = world.prior
    assert prior.shape == (2**MAX_DIM,) and prior.dtype == np.float64 and prior.sum() == 1.0
    assert tau(prior) == world.tau == 2.0**-MAX_DIM  # a sum of equal powers of two is exact
    assert world.task_world().tau == 2.0**-5


@pytest.mark.parametrize("dim", [6, MAX_DIM])
def test_positives_never_change_the_sign_pattern(dim):
    world = HypercubeWorld(dim, 2)
    n = 200 if dim < MAX_DIM else 8
    tuples = draw_tuples(world, n, seeded(0), negatives=3, block_size=2)
    assert torch.equal(pattern_classes(tuples.anchor), tuples.anchor_class)
    for j in range(2):
        assert torch.equal(pattern_classes(tuples.positives[:, j]), tuples.anchor_class)
        for i in range(3):
            assert torch.equal(pattern_classes(tuples.negatives[:, i, j]), tuples.negative_class[:, i])


def test_a_draw_scales_the_last_coordinates_by_one_uniform_number():
    world = HypercubeWorld(7, 3)
    labels = torch.randint(0, world.classes, (20000,), generator=seeded(0))
    x = world.sample(labels, seeded(1))  # (n, d)
    assert x.dtype == torch.float32 and x.shape == (20000, 7)
    patterns = sign_patterns(labels, 7)
    assert torch.equal(torch.sign(x), patterns)  # signs unchanged
    assert torch.equal(x[:, :3], patterns[:, :3])  # the first k are never scaled
    scale = x[:, 3:].abs()  # (n, d − k)
    assert torch.equal(scale, scale[:, :1].expand_as(scale))  # one scale per draw
    u = scale[:, 0].double()
    assert bool((u > 0).all() and (u <= 1).all())
    # U(0, 1]: mean 1/2 and P(u ≤ q) = q, each within 5 standard errors
    assert abs(float(u.mean()) - 0.5) < 5 * np.sqrt(1 / 12 / 20000)
    for q in (0.1, 0.5, 0.9):
        assert abs(float((u <= q).double().mean()) - q) < 5 * np.sqrt(q * (1 - q) / 20000)


@pytest.mark.parametrize("dim,task_dim,label", WORLDS_TO_ENUMERATE)
def test_the_task_label_depends_only_on_the_first_k_coordinates(dim, task_dim, label):
    world = HypercubeWorld(dim, task_dim, label)
    inputs = every_pattern(dim)
    labels = world.task_labels(pattern_classes(inputs))
    first = inputs[:, :task_dim]
    if label == "pattern":  # the first k signs, as bits
        expected = pattern_classes(first)
    else:  # the sign of their sum
        expected = (first.sum(dim=1) > 0).long()
    assert torch.equal(labels, expected)
    for j in range(task_dim, dim):  # flipping any later sign keeps the label
        flipped = inputs.clone()
        flipped[:, j] = -flipped[:, j]
        assert torch.equal(world.task_labels(pattern_classes(flipped)), labels)
    # and scaling them too (what a draw does)
    scaled = world.sample(pattern_classes(inputs), seeded(0))
    assert torch.equal(world.task_labels(pattern_classes(scaled)), labels)


@pytest.mark.parametrize("dim,task_dim,label", [(4, 2, "pattern"), (5, 3, "majority")])
def test_the_task_view_draws_uniform_patterns_of_the_label(dim, task_dim, label):
    world = HypercubeWorld(dim, task_dim, label)
    task = world.task_world()
    fibre = world.task_labels(torch.arange(world.classes))  # the task label of every pattern
    sizes = torch.bincount(fibre, minlength=task.classes)
    assert bool((sizes == world.classes // task.classes).all())  # equal fibres: the marginal is uniform patterns
    draws = 4000
    for c in range(task.classes):
        patterns = task.pattern_classes_of(torch.full((draws,), c), seeded(c))
        assert bool((world.task_labels(patterns) == c).all())
        counts = torch.bincount(patterns, minlength=world.classes)[fibre == c].double()  # every pattern of c drawn
        expected = draws / int(sizes[c])
        # Pearson's χ² over the fibre's m patterns: mean m − 1, sd √(2(m − 1)); 6 sd is far in the tail
        m = int(sizes[c])
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        assert chi2 < (m - 1) + 6 * np.sqrt(2 * (m - 1))
    labels = torch.arange(task.classes).repeat(50)
    x = task.sample(labels, seeded(1))
    assert x.shape == (labels.shape[0], dim) and x.dtype == torch.float32
    assert torch.equal(world.task_labels(pattern_classes(x)), labels)


def test_the_task_view_is_a_world_of_few_classes_with_the_same_inputs():
    world = HypercubeWorld(10, 3)
    task = world.task_world()
    assert task.classes == 8 and task.input_shape == world.input_shape
    assert task.prior.dtype == np.float64 and task.prior.sum() == 1.0
    x = task.sample(torch.arange(8).repeat(1000), seeded(0))
    assert torch.equal(x[:, :3].abs(), torch.ones(8000, 3))
    u = x[:, 3].abs()
    assert bool((u > 0).all() and (u <= 1).all()) and abs(float(u.mean()) - 0.5) < 0.02
    first = torch.equal(x, task.sample(torch.arange(8).repeat(1000), seeded(0)))
    assert first and not torch.equal(x, task.sample(torch.arange(8).repeat(1000), seeded(1)))
    again = pickle.loads(pickle.dumps(task))
    assert torch.equal(x, again.sample(torch.arange(8).repeat(1000), seeded(0)))


def test_config_builds_the_world_and_describes_its_inputs():
    config = WORLDS.parse({"kind": "hypercube", "dim": 6, "task_dim": 3, "label": "majority"})
    assert isinstance(config, HypercubeConfig) and config.classes == 64 and config.label_classes == 2
    world = WORLDS.build(config, seeded(0))
    assert (world.dim, world.task_dim, world.label) == (6, 3, "majority")
    spec = config.input_spec
    assert spec.shape == world.input_shape and spec.dtype == torch.float32 and spec.signs
    assert len(pickle.dumps(HypercubeWorld(MAX_DIM, 5))) < 1000  # nothing of size 2^d is kept


@pytest.mark.parametrize("fields,message", [
    ({"dim": MAX_DIM + 1}, f"dim: got {MAX_DIM + 1}; allowed: 2..{MAX_DIM}"),
    ({"dim": 1, "task_dim": 1}, "dim: got 1; allowed: 2.."),
    ({"dim": 6, "task_dim": 6}, "task_dim: got 6; allowed: 1..5"),
    ({"dim": 6, "task_dim": 0}, "task_dim: got 0; allowed: 1..5"),
    ({"dim": 6, "task_dim": 2, "label": "majority"}, "task_dim: got 2; a majority label needs it odd"),
])
def test_bad_configs_are_refused_in_one_line(fields, message):
    with pytest.raises(ValidationError) as error:
        WORLDS.parse({"kind": "hypercube", **fields})
    (problem,) = error.value.errors()
    assert message in problem["msg"] and "\n" not in problem["msg"]


def test_the_largest_world_draws_every_kind_of_tuple_without_reading_its_prior():
    world = HypercubeWorld(MAX_DIM, 5)
    assert world.prior.strides == (0,)  # a uniform_prior: one number, whatever 2^d
    n = 20000
    plain = draw_tuples(world, n, seeded(0))
    same = draw_tuples(world, n, seeded(1), condition="same")
    different = draw_tuples(world, n, seeded(2), condition="different")
    true_negatives = draw_tuples(world, n, seeded(3), negatives=3, true_negatives=True)
    assert torch.equal(same.negative_class[:, 0], same.anchor_class)  # ν ∝ ρ² is ρ: the anchor's own class
    assert bool((different.negative_class[:, 0] != different.anchor_class).all())
    assert bool((true_negatives.negative_class != true_negatives.anchor_class[:, None]).all())
    # classes uniform over the 2^24 patterns: each of the 24 bits of the anchors' and negatives' classes
    # is set with probability 1/2; 6 binomial standard deviations (p < 2e-9 each, 24 bits × 8 sets) is loose
    # enough never to fail by chance and tight enough to see a class sampler that favours any half
    for tuples in (plain, same, different, true_negatives):
        for classes in (tuples.anchor_class, tuples.negative_class.reshape(-1)):
            bits = ((classes[:, None] >> torch.arange(MAX_DIM)) & 1).double().mean(dim=0)  # (d,)
            assert float((bits - 0.5).abs().max()) < 6 * np.sqrt(0.25 / len(classes))
    assert torch.equal(pattern_classes(different.negatives[:, 0, 0]), different.negative_class[:, 0])
