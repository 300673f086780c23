"""Task transforms: the subspace task of [Kumar22] against its oracles (projector algebra, exact
membership of ID inputs in S, the base world's draws for OOD and for the ids, the noise's chi-square
law, split views of a finite world) and its validation messages."""

import json
import pickle

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from scipy import stats

from preadapt.worlds import (SPLITS, FiniteWorld, FiniteWorldConfig, GaussianWorld, GaussianWorldConfig,
                             TopicWorldConfig, draw_tuples, sample_per_class, split_of)
from preadapt.worlds.base import ExampleWorld, InputSpec, World
from preadapt.worlds.sampling import draw_examples
from preadapt.worlds.tasks import TASKS, SubspaceTaskConfig, SubspaceWorld, TaskViews, derive_task

EPS64 = torch.finfo(torch.float64).eps
EPS32 = torch.finfo(torch.float32).eps
ALPHA = 1e-6  # a fixed-seed statistical check fails by chance with this probability


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Float64Gaussian:
    """A world of fresh float64 draws, x = μ_c + ε, ε ~ N(0, I): no rounding of float32 in the oracles."""

    def __init__(self, classes: int = 3, dim: int = 8) -> None:
        self.means = 2.0 * torch.randn(classes, dim, generator=seeded(99), dtype=torch.float64)
        self.classes, self.input_shape = classes, (dim,)
        self.prior = np.full(classes, 1.0 / classes)

    def sample(self, labels, generator):
        labels = torch.as_tensor(labels, dtype=torch.long)
        return self.means[labels] + torch.randn(labels.shape[0], self.input_shape[0], generator=generator,
                                                dtype=torch.float64)


def finite_vector_world(dim: int = 6, per_class: int = 40) -> FiniteWorld:
    """A small labeled data set of float64 vectors (3 classes) with train/validation/test splits."""
    labels = np.repeat([0, 1, 2], per_class)
    noise = torch.randn(labels.size, dim, generator=seeded(7), dtype=torch.float64)
    features = noise + torch.as_tensor(labels)[:, None]
    return FiniteWorld.from_arrays(features, labels, generator=seeded(8))


def subspace(world, rank, noise=0.0, seed=0) -> TaskViews:
    return derive_task(world, SubspaceTaskConfig(rank=rank, noise=noise), seeded(seed))


def residual(x: torch.Tensor, projector: torch.Tensor) -> torch.Tensor:
    """‖(I − P_S)x‖ per row, in float64."""
    x = x.to(torch.float64)
    return (x - x @ projector).norm(dim=1)


@pytest.mark.parametrize("rank", [1, 5, 16])
def test_projector_is_an_orthogonal_projector_of_trace_rank(rank):
    d = 16
    task = subspace(Float64Gaussian(dim=d), rank)
    projector, basis = task.projector, task.basis
    assert projector.shape == (d, d) and projector.dtype == torch.float64 and basis.shape == (d, rank)
    # Householder QR is backward stable: BᵀB = I, and so P² = P and tr P = r, up to a few d·ε
    tolerance = 10 * d * EPS64
    assert torch.equal(projector, projector.T)
    assert (basis.T @ basis - torch.eye(rank, dtype=torch.float64)).abs().max() <= tolerance
    assert (projector @ projector - projector).abs().max() <= tolerance
    assert abs(float(projector.trace()) - rank) <= tolerance
    assert (projector @ basis - basis).abs().max() <= tolerance  # S = span(basis) is P's range


def test_the_subspace_is_isotropic_on_average():
    # E[P_S] = (r/d)·I for a uniformly random S (the law of S is invariant under rotations)
    d, r, draws = 4, 1, 4000
    projectors = torch.stack([subspace(Float64Gaussian(dim=d), r, seed=s).projector for s in range(draws)])
    mean, se = projectors.mean(0), projectors.std(0) / draws**0.5
    z = stats.norm.ppf(1 - ALPHA / (2 * d * d))  # all d² entries at once (Bonferroni)
    assert ((mean - r / d * torch.eye(d, dtype=torch.float64)).abs() <= z * se).all()


def test_same_seed_same_subspace_and_the_global_rng_is_not_used():
    world = Float64Gaussian(dim=8)
    torch.manual_seed(1)
    state = torch.random.get_rng_state()
    first = subspace(world, 3, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(2)
    assert torch.equal(subspace(world, 3, seed=5).basis, first.basis)
    other = subspace(world, 3, seed=6).projector
    assert (other - first.projector).abs().max() > 0.1


@pytest.mark.parametrize("make_world", [Float64Gaussian, lambda: GaussianWorld(3.0 * torch.eye(8)),
                                        finite_vector_world], ids=["float64", "float32", "finite"])
def test_id_inputs_lie_in_the_subspace_at_noise_zero(make_world):
    world = make_world()
    d = world.input_shape[0]
    task = subspace(world, 2)
    labels = torch.arange(world.classes).repeat(200)
    x = task.id.sample(labels, seeded(1))
    base = world.sample(labels, seeded(1))
    assert x.dtype == base.dtype and x.shape == base.shape
    # the projection is computed in float64 (a few d·ε of rounding); a float32 result adds its own
    # rounding, ≤ ε₃₂/2 per coordinate relative to ‖x‖
    cast = EPS32 if x.dtype == torch.float32 else 0.0
    tolerance = (8 * d * EPS64 + cast) * x.to(torch.float64).norm(dim=1)
    assert (residual(x, task.projector) <= tolerance).all()
    # the same draws, projected: x = P_S·x_base
    expected = (base.to(torch.float64) @ task.projector).to(base.dtype)
    torch.testing.assert_close(x, expected, atol=8 * d * EPS64 + cast * 10, rtol=cast + 8 * d * EPS64)
    assert residual(base, task.projector).min() > 0.1  # the base's inputs are not in S: the test has teeth


def test_ood_view_is_the_world_and_draws_what_it_draws():
    world = Float64Gaussian()
    task = subspace(world, 2)
    labels = torch.tensor([0, 2, 1, 1, 0])
    assert task.ood is world
    assert torch.equal(task.ood.sample(labels, seeded(3)), world.sample(labels, seeded(3)))


def test_id_view_uses_the_random_numbers_of_the_world():
    # at noise 0 the ID view consumes the generator exactly as the world does: what follows is the same
    for world in (Float64Gaussian(), finite_vector_world()):
        task, labels = subspace(world, 2), torch.tensor([0, 2, 1, 1])
        mine, theirs = seeded(4), seeded(4)
        task.id.sample(labels, mine)
        world.sample(labels, theirs)
        assert torch.equal(torch.rand(3, generator=mine), torch.rand(3, generator=theirs))


def test_classes_prior_and_tuple_labels_are_unchanged():
    world = finite_vector_world()
    task = subspace(world, 3)
    assert isinstance(task.id, World) and isinstance(task.id, ExampleWorld)
    assert task.id.classes == world.classes and task.id.input_shape == world.input_shape
    np.testing.assert_array_equal(task.id.prior, world.prior)
    mine = draw_tuples(task.id, 50, seeded(2), negatives=2, block_size=2)
    theirs = draw_tuples(world, 50, seeded(2), negatives=2, block_size=2)
    assert torch.equal(mine.anchor_class, theirs.anchor_class)
    assert torch.equal(mine.negative_class, theirs.negative_class)
    assert torch.equal(mine.ids, theirs.ids)  # the examples drawn are the world's, ids preserved
    torch.testing.assert_close(mine.negatives, (theirs.negatives @ task.projector), atol=1e-12, rtol=0)


def test_split_views_of_a_finite_world_are_the_projected_split_views():
    world = finite_vector_world()
    task = subspace(world, 2)
    for name in SPLITS:
        view, base = split_of(task.id, name), split_of(world, name)
        assert isinstance(view, SubspaceWorld) and view.base.split_name == name
        assert torch.equal(view.basis, task.basis)
        np.testing.assert_array_equal(view.prior, base.prior)  # the split's empirical prior
        ids, classes = view.example_ids()
        base_ids, base_classes = base.example_ids()
        assert torch.equal(ids, base_ids) and torch.equal(classes, base_classes)
        x, drawn = draw_examples(view, classes, seeded(5))
        x_base, drawn_base = draw_examples(base, classes, seeded(5))
        assert torch.equal(drawn, drawn_base)
        torch.testing.assert_close(x, x_base @ task.projector, atol=1e-12, rtol=0)
        points, labels = sample_per_class(view, 4, seeded(6))
        assert points.shape == (4 * world.classes, world.input_shape[0])
        assert (residual(points, task.projector) <= 1e-12 * points.norm(dim=1)).all()
    infinite = subspace(Float64Gaussian(), 2)
    assert split_of(infinite.id, "train") is infinite.id  # no splits: every split is the population
    assert draw_examples(infinite.id, torch.tensor([0, 1]), seeded(0))[1] is None


def test_noise_on_fresh_draws_has_the_configured_deviation_in_the_whole_space():
    d, r, sigma, n = 8, 3, 0.3, 4000
    world = Float64Gaussian(dim=d)
    clean, noisy = subspace(world, r, seed=2), subspace(world, r, noise=sigma, seed=2)
    assert torch.equal(clean.basis, noisy.basis)  # S is drawn first: the noise does not move it
    labels = torch.arange(world.classes).repeat(n // world.classes + 1)[:n]
    generator = seeded(9)
    x = noisy.id.sample(labels, generator)
    noise = x - clean.id.sample(labels, seeded(9))  # the same base draws: what is left is σ·ε
    # σ·ε with ε ~ N(0, I_d): ‖P ε‖² ~ χ²_r and ‖(I − P) ε‖² ~ χ²_{d−r} per point, independently
    inside = (noise @ noisy.projector).pow(2).sum() / sigma**2
    outside = residual(x, noisy.projector).pow(2).sum() / sigma**2  # (I − P)x = σ(I − P)ε exactly
    for value, dof in ((inside, n * r), (outside, n * (d - r))):
        low, high = stats.chi2.ppf([ALPHA / 2, 1 - ALPHA / 2], dof)
        assert low <= float(value) <= high, (float(value), dof, low, high)


def test_noise_on_finite_examples_is_kept_per_example():
    d, sigma = 6, 0.5
    world = finite_vector_world(dim=d, per_class=200)
    task, clean = subspace(world, 2, noise=sigma, seed=3), subspace(world, 2, seed=3)
    ids = torch.cat([split_of(world, name).example_ids()[0] for name in SPLITS])  # every example once
    x = task.id.take(ids)
    assert torch.equal(x, task.id.take(ids))  # an example is one point, whatever draws it
    noise = x - clean.id.take(ids)
    statistic = noise.pow(2).sum() / sigma**2  # χ² with N·d degrees of freedom
    low, high = stats.chi2.ppf([ALPHA / 2, 1 - ALPHA / 2], ids.numel() * d)
    assert low <= float(statistic) <= high
    labels = torch.tensor([0, 1, 2, 2])
    drawn, drawn_ids = draw_examples(task.id, labels, seeded(1))
    assert torch.equal(drawn_ids, draw_examples(world, labels, seeded(1))[1])
    assert torch.equal(drawn, task.id.take(drawn_ids))
    train = split_of(task.id, "train")
    train_ids = train.example_ids()[0]
    assert torch.equal(train.take(train_ids), task.id.take(train_ids))  # the views share the noise


def test_config_round_trips_and_views_pickle():
    config = SubspaceTaskConfig(rank=3, noise=0.25)
    assert TASKS.parse(config.model_dump()) == config
    assert TASKS.parse(json.loads(config.model_dump_json())) == config
    assert pickle.loads(pickle.dumps(config)) == config
    task = subspace(finite_vector_world(), 2, noise=0.1)
    ids = task.id.example_ids()[0]
    assert torch.equal(pickle.loads(pickle.dumps(task.id)).take(ids), task.id.take(ids))


@pytest.mark.parametrize("spec,rank,message", [
    (InputSpec((16,)), 50, "rank: got 50; allowed: 1..16 (the world's input dimension)"),
    (GaussianWorldConfig(dim=8).input_spec, 9, "rank: got 9; allowed: 1..8 (the world's input dimension)"),
    (FiniteWorldConfig().input_spec, 2,
     "kind: subspace needs vector inputs (shape (d,)); the world's inputs have shape (1, 8, 8)"),
    (TopicWorldConfig().input_spec, 2,
     "kind: subspace needs real-valued vector inputs; the world gives int64 token ids of shape (32,) in [0, 1000)"),
])
def test_validation_refuses_inputs_the_transform_cannot_take(spec, rank, message):
    with pytest.raises(ValueError) as error:
        SubspaceTaskConfig(rank=rank).check_input(spec)
    assert str(error.value) == message


def test_validation_accepts_what_it_can_take():
    SubspaceTaskConfig(rank=16).check_input(GaussianWorldConfig(dim=16).input_spec)
    SubspaceTaskConfig(rank=1).check_input(InputSpec((3,), torch.float64))


@pytest.mark.parametrize("fields,field", [({"rank": 0}, "rank"), ({"rank": -2}, "rank"), ({}, "rank"),
                                          ({"rank": 2, "noise": -0.1}, "noise"),
                                          ({"rank": 2, "noise": float("inf")}, "noise")])
def test_invalid_fields_are_refused(fields, field):
    with pytest.raises(ValidationError) as error:
        TASKS.parse({"kind": "subspace", **fields})
    assert error.value.errors()[0]["loc"] == (field,)


def test_unknown_kind_is_refused_naming_the_allowed_ones():
    with pytest.raises(KeyError, match="unknown task kind 'rotate'; allowed: .*subspace"):
        TASKS.parse({"kind": "rotate"})


def test_build_refuses_a_world_it_cannot_project():
    images = FiniteWorld.from_arrays(torch.zeros(12, 1, 2, 2), [0] * 6 + [1] * 6, split=[1 / 3] * 3,
                                     generator=seeded(0))
    with pytest.raises(ValueError, match=r"^kind: subspace needs vector inputs \(shape \(d,\)\); the world's inputs "
                                         r"have shape \(1, 2, 2\)$"):
        subspace(images, 1)
    with pytest.raises(ValueError, match=r"^rank: got 9; allowed: 1\.\.8 \(the world's input dimension\)$"):
        subspace(Float64Gaussian(dim=8), 9)
