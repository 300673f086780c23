"""Task transforms against their oracles, and their validation messages.

- subspace ([Kumar22]): projector algebra, exact membership of ID inputs in S, the base world's draws
  for OOD and for the ids, the noise's chi-square law, split views of a finite world;
- prior: ρ_task = ρ is the world bit for bit; tasks' classes follow ρ_task (chi-square);
- unseen: no unseen class in any pretraining tuple (sampled labels, and the true labels of the
  examples drawn); which classes are unseen is uniform over the classes;
- covariate: severity 0 is the world bit for bit; R_c(s) is a one-parameter group of rotations with
  the configured largest angle; translations of length s·shift along fixed directions; the noise's
  chi-square law;
- hierarchy: τ = Σ_g ρ_g² against enumeration; subclasses drawn with ρ(c)/ρ_g; finite examples keep
  their ids;
- unseen fraction 0 and compose: the world itself at 0 (and 0, 0), each step on the previous id view,
  moves paired across fractions, refusals of steps that cannot follow;
- the whole path: runs with each transform, and ρ_task = ρ, severity 0 and a composed (0, 0) give the
  rows of the world.
"""

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
from preadapt.worlds.prior import tau
from preadapt.worlds.sampling import draw_examples, sample_tasks
from preadapt.worlds.tasks import (TASKS, CovariateTaskConfig, CovariateWorld, GroupWorld, HierarchyTaskConfig,
                                   PriorTaskConfig, PriorWorld, RestrictedWorld, SubspaceTaskConfig, SubspaceWorld,
                                   TaskViews, UnseenTaskConfig, derive_task, unseen_count)
from preadapt.worlds.tasks import ComposeTaskConfig

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
    with pytest.raises(KeyError, match="unknown task kind 'rotate'; allowed: compose, covariate, hierarchy, prior, subspace, "
                                       "unseen"):
        TASKS.parse({"kind": "rotate"})


def test_build_refuses_a_world_it_cannot_project():
    images = FiniteWorld.from_arrays(torch.zeros(12, 1, 2, 2), [0] * 6 + [1] * 6, split=[1 / 3] * 3,
                                     generator=seeded(0))
    with pytest.raises(ValueError, match=r"^kind: subspace needs vector inputs \(shape \(d,\)\); the world's inputs "
                                         r"have shape \(1, 2, 2\)$"):
        subspace(images, 1)
    with pytest.raises(ValueError, match=r"^rank: got 9; allowed: 1\.\.8 \(the world's input dimension\)$"):
        subspace(Float64Gaussian(dim=8), 9)


# ---------------------------------------------------------------------------------------------------
# shared oracles


def same_draws(mine: World, theirs: World, labels: torch.Tensor, seed: int = 4) -> None:
    """``mine`` draws exactly what ``theirs`` draws (inputs, example ids) and leaves the generator where
    ``theirs`` leaves it."""
    first, second = seeded(seed), seeded(seed)
    x, ids = draw_examples(mine, labels, first)
    y, other_ids = draw_examples(theirs, labels, second)
    assert x.dtype == y.dtype and torch.equal(x, y)
    assert (ids is None and other_ids is None) or torch.equal(ids, other_ids)
    assert torch.equal(torch.rand(3, generator=first), torch.rand(3, generator=second))


def chi_square_fits(counts, probabilities) -> bool:
    """Counts (k,) agree with a multinomial of ``probabilities`` (k,) at level ALPHA (cells of zero
    probability must be empty)."""
    counts, probabilities = np.asarray(counts, dtype=np.float64), np.asarray(probabilities, dtype=np.float64)
    if counts[probabilities == 0].sum() > 0:
        return False
    keep = probabilities > 0
    expected = counts.sum() * probabilities[keep] / probabilities[keep].sum()
    statistic = float(((counts[keep] - expected) ** 2 / expected).sum())
    return statistic <= stats.chi2.ppf(1 - ALPHA, keep.sum() - 1)


def tuple_classes(world: World, n: int, seed: int, **kwargs) -> torch.Tensor:
    """Every class drawn in ``n`` tuples (anchors and negatives; positives share the anchor's), flat."""
    tuples = draw_tuples(world, n, seeded(seed), **kwargs)
    return torch.cat([tuples.anchor_class, tuples.negative_class.reshape(-1)])


# ---------------------------------------------------------------------------------------------------
# prior


@pytest.mark.parametrize("make_world", [Float64Gaussian, finite_vector_world], ids=["fresh", "finite"])
def test_the_worlds_own_prior_changes_nothing(make_world):
    world = make_world()
    task = derive_task(world, {"kind": "prior", "prior": world.prior.tolist()}, seeded(0))
    assert task.ood is None and task.pretrain is None
    np.testing.assert_array_equal(task.id.prior, world.prior)
    labels = torch.tensor([0, 2, 1, 1, 0, 2])
    for name in SPLITS:
        same_draws(split_of(task.id, name), split_of(world, name), labels)
    mine, theirs = draw_tuples(task.id, 40, seeded(2), negatives=2, block_size=2), draw_tuples(world, 40, seeded(2),
                                                                                                negatives=2, block_size=2)
    for name in ("anchor", "positives", "negatives", "anchor_class", "negative_class"):
        assert torch.equal(getattr(mine, name), getattr(theirs, name))


def test_tasks_are_drawn_from_the_task_prior():
    world = Float64Gaussian(classes=4)
    task = derive_task(world, PriorTaskConfig(prior=[6, 3, 1, 0]), seeded(0))
    np.testing.assert_allclose(task.id.prior, [0.6, 0.3, 0.1, 0.0], rtol=0, atol=1e-15)
    assert isinstance(task.id, PriorWorld) and task.id.classes == 4
    # the classes of 2-class tasks: P(T) ∝ Π ρ(c), enumerated over the three pairs of positive prior
    tasks = sample_tasks(task.id.prior, 20000, 2, seeded(1))
    pairs = [(0, 1), (0, 2), (1, 2)]
    counts = [int(((tasks.min(1).values == a) & (tasks.max(1).values == b)).sum()) for a, b in pairs]
    assert sum(counts) == 20000 and chi_square_fits(counts, [0.18, 0.06, 0.03])
    # the anchors of pretraining-style tuples drawn on the view follow ρ_task too
    anchors = draw_tuples(task.id, 20000, seeded(2)).anchor_class
    assert chi_square_fits(anchors.bincount(minlength=4), task.id.prior)


def test_a_task_prior_on_a_finite_world_holds_in_every_split():
    world = finite_vector_world()
    task = derive_task(world, {"kind": "prior", "prior": "uniform"}, seeded(0))
    for name in SPLITS:
        view = split_of(task.id, name)
        assert isinstance(view, PriorWorld) and view.base.split_name == name
        np.testing.assert_array_equal(view.prior, np.full(3, 1 / 3))
        assert torch.equal(view.example_ids()[0], split_of(world, name).example_ids()[0])


@pytest.mark.parametrize("prior,message", [
    ([1.0, 0.0, 0.0], "allowed: weights with at least two classes positive"),
    ([1.0, -1.0, 1.0], "allowed: weights that are finite and ≥ 0"),
    ([1.0, float("nan"), 1.0], "allowed: weights that are finite and ≥ 0"),
])
def test_invalid_task_priors_are_refused(prior, message):
    with pytest.raises(ValidationError, match=message):
        PriorTaskConfig(prior=prior)


def test_a_task_prior_of_the_wrong_length_is_refused():
    with pytest.raises(ValueError, match=r"^prior: got 2 weights; expected one per class \(3\)$"):
        derive_task(Float64Gaussian(), {"kind": "prior", "prior": [1, 1]}, seeded(0))
    assert PriorTaskConfig(prior=[1, 0, 2]).task_support(3) == 2 and PriorTaskConfig(prior="uniform").task_support(5) == 5


# ---------------------------------------------------------------------------------------------------
# unseen


def unseen_task(world, fraction, tasks="all", seed=0) -> TaskViews:
    return derive_task(world, UnseenTaskConfig(fraction=fraction, tasks=tasks), seeded(seed))


def unseen_set(task: TaskViews) -> set[int]:
    assert isinstance(task.pretrain, RestrictedWorld)
    return set(np.flatnonzero(~task.pretrain.kept).tolist())


@pytest.mark.parametrize("kwargs", [dict(negatives=3, block_size=2), dict(negatives=4, true_negatives=True),
                                    dict(condition="same"), dict(condition="different")],
                         ids=["blocks", "true-negatives", "same", "different"])
def test_no_unseen_class_is_ever_drawn_in_pretraining(kwargs):
    world = GaussianWorld(torch.randn(10, 4, generator=seeded(1)), prior=[1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    task = unseen_task(world, 0.3)
    unseen = unseen_set(task)
    assert len(unseen) == 3
    classes = tuple_classes(split_of(task.pretrain, "train"), 20000, 3, **kwargs)
    assert not set(classes.unique().tolist()) & unseen
    seen = sorted(set(range(10)) - unseen)
    expected = np.asarray(world.prior)[seen] / np.asarray(world.prior)[seen].sum()
    if "condition" not in kwargs and not kwargs.get("true_negatives"):  # every seen class, at its renormalised ρ
        anchors = draw_tuples(task.pretrain, 20000, seeded(4)).anchor_class
        assert chi_square_fits(anchors.bincount(minlength=10)[seen], expected)


def test_no_unseen_example_is_ever_drawn_in_pretraining_on_a_finite_world():
    labels = np.repeat(np.arange(6), 20)
    world = FiniteWorld.from_arrays(torch.randn(labels.size, 3, generator=seeded(0)), labels, generator=seeded(1))
    task = unseen_task(world, 0.5)
    unseen = torch.tensor(sorted(unseen_set(task)))
    for name in SPLITS:  # the run draws training tuples from the train view
        tuples = draw_tuples(split_of(task.pretrain, name), 3000, seeded(2), negatives=2, block_size=2)
        true_classes = world.labels[tuples.ids]  # the examples' own labels, not the sampler's
        assert not torch.isin(true_classes, unseen).any()
        assert set(world.assignment[tuples.ids.reshape(-1).numpy()].tolist()) == {SPLITS.index(name)}


def test_which_classes_are_unseen_is_uniform_and_seeded():
    world = Float64Gaussian(classes=5)
    draws = [unseen_set(unseen_task(world, 0.4, seed=seed)) for seed in range(2000)]
    assert all(len(chosen) == 2 for chosen in draws)
    counts = np.bincount([c for chosen in draws for c in chosen], minlength=5)
    assert chi_square_fits(counts, np.full(5, 0.2))
    assert unseen_set(unseen_task(world, 0.4, seed=7)) == draws[7]


@pytest.mark.parametrize("tasks", ["all", "seen", "unseen"])
def test_the_tasks_draw_from_the_chosen_classes(tasks):
    world = Float64Gaussian(classes=8)
    task = unseen_task(world, 0.25, tasks=tasks, seed=3)
    unseen = unseen_set(task)
    support = set(np.flatnonzero(task.id.prior > 0).tolist())
    expected = {"all": set(range(8)), "seen": set(range(8)) - unseen, "unseen": unseen}[tasks]
    assert support == expected and task.ood is None and task.id.classes == 8
    assert task.id is world if tasks == "all" else abs(task.id.prior.sum() - 1) < 1e-12
    assert UnseenTaskConfig(fraction=0.25, tasks=tasks).task_support(8) == len(expected)
    assert UnseenTaskConfig(fraction=0.25, tasks=tasks).pretrain_support(8) == 6
    drawn = sample_tasks(task.id.prior, 500, 2, seeded(0))
    assert set(drawn.unique().tolist()) <= expected


@pytest.mark.parametrize("fraction,tasks,classes,message", [
    (0.9, "all", 10, "fraction: got 0.9; leaves 1 of the 10 classes for pretraining (9 unseen); allowed: 0, or 0.05 ≤ "
                     "fraction < 0.85 (at least 2 seen and 1 unseen of 10 classes)"),
    (0.04, "all", 10, "fraction: got 0.04; makes 0 of the 10 classes unseen; allowed: 0, or 0.05 ≤ fraction < 0.85 "
                      "(at least 2 seen and 1 unseen of 10 classes)"),
    (0.1, "unseen", 10, "fraction: got 0.1; makes 1 of the 10 classes unseen; allowed: 0.15 ≤ fraction < 0.85 "
                        "(at least 2 seen and 2 unseen of 10 classes, tasks: unseen)"),
    (0.5, "unseen", 3, "fraction: got 0.5; leaves 1 of the 3 classes for pretraining (2 unseen); allowed: no fraction "
                       "(at least 2 seen and 2 unseen of 3 classes, tasks: unseen)"),
])
def test_a_fraction_that_leaves_too_few_classes_is_refused(fraction, tasks, classes, message):
    config = UnseenTaskConfig(fraction=fraction, tasks=tasks)
    with pytest.raises(ValueError) as error:
        config.check_classes(classes)
    assert str(error.value) == message
    with pytest.raises(ValueError) as error:  # a world whose config does not say: refused when derived
        derive_task(Float64Gaussian(classes=classes), config, seeded(0))
    assert str(error.value) == message


def test_the_bounds_of_the_message_are_the_exact_bounds():
    for classes in (4, 7, 10, 33):
        for tasks, need in (("all", 1), ("unseen", 2)):
            low, high = (need - 0.5) / classes, (classes - 1.5) / classes
            for fraction, ok in ((low, True), (low - 1e-9, False), (high - 1e-9, True), (high, False)):
                if not 0 < fraction < 1:
                    continue
                config = UnseenTaskConfig(fraction=fraction, tasks=tasks)
                n = unseen_count(fraction, classes)
                assert (n >= need and classes - n >= 2) == ok, (classes, tasks, fraction)
                if ok:
                    config.check_classes(classes)
                else:
                    with pytest.raises(ValueError):
                        config.check_classes(classes)


def test_seen_classes_without_prior_mass_are_refused_when_derived():
    world = GaussianWorld(torch.eye(4), prior=[1.0, 1.0, 0.0, 0.0])
    for seed in range(12):
        generator = seeded(seed)
        unseen = set(torch.randperm(4, generator=generator)[:1].tolist())  # what the factory draws first
        if unseen & {0, 1}:  # one of the two classes of positive prior unseen: one left for pretraining
            with pytest.raises(ValueError, match=r"^fraction: got 0.25; the seen classes .* have 1 of positive prior; "
                                                 r"at least 2 needed$"):
                unseen_task(world, 0.25, seed=seed)
        else:
            assert unseen_set(unseen_task(world, 0.25, seed=seed)) == unseen


def test_invalid_fractions_are_refused():
    for fraction in (1.0, -0.1, float("nan")):
        with pytest.raises(ValidationError, match="allowed: 0 ≤ fraction < 1"):
            UnseenTaskConfig(fraction=fraction)
    with pytest.raises(ValidationError):
        TASKS.parse({"kind": "unseen", "fraction": 0.5, "tasks": "some"})


# ---------------------------------------------------------------------------------------------------
# covariate


def covariate(world, severity, seed=0, **fields) -> TaskViews:
    return derive_task(world, CovariateTaskConfig(severity=severity, **fields), seeded(seed))


@pytest.mark.parametrize("make_world", [Float64Gaussian, lambda: GaussianWorld(3.0 * torch.eye(8)),
                                        finite_vector_world], ids=["float64", "float32", "finite"])
def test_severity_zero_is_the_world_bit_for_bit(make_world):
    world = make_world()
    task = covariate(world, 0.0, angle=3.0, shift=5.0, noise=2.0)
    assert task.ood is world and task.pretrain is None
    labels = torch.arange(world.classes).repeat(50)
    for name in SPLITS:
        same_draws(split_of(task.id, name), split_of(world, name), labels)
    mine, theirs = draw_tuples(task.id, 60, seeded(2), negatives=2, block_size=3), draw_tuples(world, 60, seeded(2),
                                                                                                negatives=2, block_size=3)
    for name in ("anchor", "positives", "negatives", "anchor_class", "negative_class", "ids"):
        first, second = getattr(mine, name), getattr(theirs, name)
        assert (first is None and second is None) or torch.equal(first, second)


def test_rotations_are_a_one_parameter_group_with_the_configured_angle():
    world, angle = Float64Gaussian(classes=3, dim=5), 1.2
    half, full = covariate(world, 0.5, seed=4, angle=angle).id, covariate(world, 1.0, seed=4, angle=angle).id
    eye = torch.eye(5, dtype=torch.float64)
    for c in range(3):
        rotation = full.rotations[c]
        assert (rotation.T @ rotation - eye).abs().max() < 1e-13  # orthogonal
        assert abs(float(torch.linalg.det(rotation)) - 1.0) < 1e-13  # a rotation, no reflection
        assert (half.rotations[c] @ half.rotations[c] - rotation).abs().max() < 1e-13  # R(1/2)² = R(1)
        turns = torch.linalg.eigvals(rotation).angle().abs()  # each invariant plane's angle
        assert abs(float(turns.max()) - angle) < 1e-12
    assert (covariate(world, 1.0, seed=5, angle=angle).id.rotations - full.rotations).abs().max() > 0.1


def test_translations_have_length_severity_times_shift_along_fixed_directions():
    world = Float64Gaussian(classes=4, dim=6)
    tasks = {s: covariate(world, s, seed=2, shift=3.0).id for s in (0.25, 1.0)}
    for s, view in tasks.items():
        torch.testing.assert_close(view.shifts.norm(dim=1), torch.full((4,), 3.0 * s, dtype=torch.float64),
                                   atol=1e-14, rtol=0)
    torch.testing.assert_close(tasks[0.25].shifts * 4, tasks[1.0].shifts, atol=1e-14, rtol=0)  # paired severities


def test_moved_inputs_are_the_rotated_and_translated_draws_of_the_world():
    # noise 0: x' = R_c·x + t_c for the very draws of the world, so distances within a class are kept
    world = Float64Gaussian(classes=3, dim=4)
    task = covariate(world, 0.7, seed=1, noise=0.0)
    labels = torch.arange(3).repeat_interleave(100)
    moved, base = task.id.sample(labels, seeded(3)), world.sample(labels, seeded(3))
    expected = torch.stack([task.id.rotations[c] @ x + task.id.shifts[c] for x, c in zip(base, labels)])
    torch.testing.assert_close(moved, expected, atol=1e-12, rtol=0)
    for c in range(3):
        rows = labels == c
        distances = [(x[rows][:, None] - x[rows][None]).norm(dim=-1) for x in (moved, base)]
        torch.testing.assert_close(*distances, atol=1e-12, rtol=0)
    assert (moved - base).norm(dim=1).min() > 1e-3  # the inputs did move


def test_the_added_noise_has_deviation_severity_times_noise():
    d, n, severity, sigma = 6, 3000, 0.6, 0.5
    world = Float64Gaussian(classes=3, dim=d)
    task = covariate(world, severity, seed=2, angle=0.0, shift=0.0, noise=sigma)
    labels = torch.arange(3).repeat(n // 3)
    residual_noise = task.id.sample(labels, seeded(5)) - world.sample(labels, seeded(5))
    statistic = residual_noise.pow(2).sum() / (severity * sigma) ** 2
    low, high = stats.chi2.ppf([ALPHA / 2, 1 - ALPHA / 2], n * d)
    assert low <= float(statistic) <= high


def test_moved_examples_keep_their_ids_and_their_noise():
    world = finite_vector_world(dim=5, per_class=60)
    task = covariate(world, 0.8, seed=3)
    assert isinstance(task.id, CovariateWorld) and isinstance(task.id, ExampleWorld)
    ids = torch.cat([split_of(world, name).example_ids()[0] for name in SPLITS])
    x = task.id.take(ids)
    assert torch.equal(x, task.id.take(ids))  # an example is one point, whatever draws it
    assert torch.equal(split_of(task.id, "train").take(ids), x)  # the views share the geometry and the noise
    labels = torch.tensor([0, 1, 2, 2, 1])
    drawn, drawn_ids = draw_examples(task.id, labels, seeded(1))
    assert torch.equal(drawn_ids, draw_examples(world, labels, seeded(1))[1])
    assert torch.equal(world.labels[drawn_ids], labels) and torch.equal(drawn, task.id.take(drawn_ids))
    assert (x - world.take(ids)).norm(dim=1).min() > 1e-3


@pytest.mark.parametrize("severity", [1.5, -0.1, float("nan"), float("inf")])
def test_severity_outside_zero_one_is_refused(severity):
    with pytest.raises(ValidationError, match="allowed: 0..1"):
        CovariateTaskConfig(severity=severity)


@pytest.mark.parametrize("spec,message", [
    (FiniteWorldConfig().input_spec,
     "kind: covariate needs vector inputs (shape (d,)); the world's inputs have shape (1, 8, 8)"),
    (TopicWorldConfig().input_spec,
     "kind: covariate needs real-valued vector inputs; the world gives int64 token ids of shape (32,) in [0, 1000)"),
])
def test_covariate_needs_real_vector_inputs(spec, message):
    with pytest.raises(ValueError) as error:
        CovariateTaskConfig(severity=0.5).check_input(spec)
    assert str(error.value) == message
    CovariateTaskConfig(severity=0.5).check_input(GaussianWorldConfig().input_spec)


# ---------------------------------------------------------------------------------------------------
# hierarchy


def hierarchy(world, groups, direction) -> TaskViews:
    return derive_task(world, HierarchyTaskConfig(groups=groups, direction=direction), seeded(0))


def test_the_superclass_tau_is_exact_against_enumeration():
    prior = np.array([0.05, 0.15, 0.2, 0.1, 0.3, 0.0, 0.12, 0.08])
    world = GaussianWorld(torch.eye(8), prior=prior)
    for groups in (2, 4):
        coarse = hierarchy(world, groups, "coarse_to_fine").pretrain
        block = 8 // groups
        enumerated = sum(prior[a] * prior[b] for a in range(8) for b in range(8) if a // block == b // block)
        assert abs(tau(coarse.prior) - enumerated) < 1e-15
        # and the sampler's collisions c = c⁻ happen at that rate (binomial, level ALPHA)
        n = 40000
        tuples = draw_tuples(coarse, n, seeded(groups))
        hits = int((tuples.anchor_class == tuples.negative_class[:, 0]).sum())
        low, high = stats.binom.ppf([ALPHA / 2, 1 - ALPHA / 2], n, enumerated)
        assert low <= hits <= high


def test_a_superclass_draws_its_subclasses_with_their_relative_prior():
    prior = np.array([0.1, 0.3, 0.2, 0.2, 0.15, 0.05])
    world = GaussianWorld(10.0 * torch.eye(6), noise=0.0, prior=prior)  # an input is its class's mean
    coarse = GroupWorld(world, 2)
    np.testing.assert_allclose(coarse.prior, [0.6, 0.4], atol=1e-15, rtol=0)
    labels = torch.tensor([0, 1]).repeat(20000)
    subclass = coarse.sample(labels, seeded(1)).argmax(dim=1)
    for g in (0, 1):
        drawn = subclass[labels == g]
        assert set(drawn.unique().tolist()) <= {3 * g, 3 * g + 1, 3 * g + 2}
        assert chi_square_fits((drawn - 3 * g).bincount(minlength=3), prior[3 * g:3 * g + 3])
    # a positive shares the anchor's superclass, and its subclass is drawn afresh: P(same subclass | g)
    # = Σ_{c∈g} (ρ(c)/ρ_g)²
    tuples = draw_tuples(coarse, 20000, seeded(2))
    anchor, positive = tuples.anchor.argmax(dim=1), tuples.positives[:, 0].argmax(dim=1)
    assert torch.equal(anchor // 3, positive // 3) and torch.equal(anchor // 3, tuples.anchor_class)
    within = prior.reshape(2, 3) / prior.reshape(2, 3).sum(1, keepdims=True)
    same = float(((within ** 2).sum(1) * coarse.prior).sum())
    hits = int((anchor == positive).sum())
    low, high = stats.binom.ppf([ALPHA / 2, 1 - ALPHA / 2], 20000, same)
    assert low <= hits <= high


@pytest.mark.parametrize("direction", ["coarse_to_fine", "fine_to_coarse"])
def test_the_views_of_each_direction(direction):
    world = Float64Gaussian(classes=6)
    task = hierarchy(world, 3, direction)
    coarse, fine = (task.pretrain, task.id) if direction == "coarse_to_fine" else (task.id, world)
    assert fine is world and isinstance(coarse, GroupWorld) and task.ood is None
    assert (task.pretrain is None) == (direction == "fine_to_coarse")
    assert coarse.classes == 3 and coarse.input_shape == world.input_shape
    np.testing.assert_allclose(coarse.prior, np.full(3, 1 / 3), atol=1e-15, rtol=0)
    config = HierarchyTaskConfig(groups=3, direction=direction)
    assert (config.pretrain_support(6), config.task_support(6)) == ((3, 6) if direction == "coarse_to_fine" else (6, 3))


def test_superclasses_of_finite_examples_keep_their_ids():
    labels = np.repeat(np.arange(4), 30)
    world = FiniteWorld.from_arrays(torch.randn(labels.size, 3, generator=seeded(0)), labels, generator=seeded(1))
    coarse = hierarchy(world, 2, "fine_to_coarse").id
    for name in SPLITS:
        view, base = split_of(coarse, name), split_of(world, name)
        assert isinstance(view, GroupWorld) and view.base.split_name == name
        ids, classes = view.example_ids()
        base_ids, base_classes = base.example_ids()
        assert torch.equal(ids, base_ids) and torch.equal(classes, base_classes // 2)
        tuples = draw_tuples(view, 2000, seeded(2), negatives=2, block_size=2)
        true_group = world.labels[tuples.ids] // 2  # (n, 1 + b + k·b): the examples' own superclasses
        assert torch.equal(true_group[:, :3], tuples.anchor_class[:, None].expand(-1, 3))
        assert torch.equal(true_group[:, 3:], tuples.negative_class.repeat_interleave(2, dim=1))
        x, drawn = draw_examples(view, torch.tensor([0, 1, 1]), seeded(3))
        assert torch.equal(x, world.take(drawn)) and torch.equal(world.labels[drawn] // 2, torch.tensor([0, 1, 1]))


def test_superclasses_of_fresh_draws_consume_one_uniform_then_the_world():
    world = Float64Gaussian(classes=4)
    coarse = GroupWorld(world, 2)
    labels = torch.tensor([0, 1, 1, 0])
    mine, theirs = seeded(6), seeded(6)
    x = coarse.sample(labels, mine)
    uniform = torch.rand(4, generator=theirs, dtype=torch.float64)
    fine = labels * 2 + (uniform >= 0.5).long()  # uniform ρ: each subclass with probability 1/2
    assert torch.equal(x, world.sample(fine, theirs))
    assert torch.equal(torch.rand(2, generator=mine), torch.rand(2, generator=theirs))
    assert coarse.sample_ids(labels, seeded(0)) is None


def test_groups_that_do_not_divide_the_classes_are_refused():
    message = "groups: got 4; allowed: a divisor of the world's 6 classes (superclasses are equal blocks of classes)"
    with pytest.raises(ValueError) as error:
        HierarchyTaskConfig(groups=4, direction="fine_to_coarse").check_classes(6)
    assert str(error.value) == message
    with pytest.raises(ValueError) as error:
        hierarchy(Float64Gaussian(classes=6), 4, "coarse_to_fine")
    assert str(error.value) == message
    with pytest.raises(ValidationError):
        HierarchyTaskConfig(groups=1, direction="fine_to_coarse")
    with pytest.raises(ValidationError):
        TASKS.parse({"kind": "hierarchy", "groups": 2})  # the direction is required


# ---------------------------------------------------------------------------------------------------
# unseen fraction 0, and compose


def test_fraction_zero_is_the_world_and_draws_the_permutation_all_the_same():
    world = Float64Gaussian(classes=6)
    generator = seeded(4)
    views = derive_task(world, UnseenTaskConfig(fraction=0.0, tasks="seen"), generator)
    assert views.id is world and views.pretrain is None and views.ood is None
    after = torch.rand(3, generator=generator)
    reference = seeded(4)
    torch.randperm(6, generator=reference)  # what a positive fraction draws first
    assert torch.equal(after, torch.rand(3, generator=reference))
    assert UnseenTaskConfig(fraction=0.0).pretrain_support(6) == UnseenTaskConfig(fraction=0.0).task_support(6) == 6
    with pytest.raises(ValueError, match=r"^fraction: got 0; makes 0 of the 6 classes unseen; allowed: 0.25 ≤ "):
        UnseenTaskConfig(fraction=0.0, tasks="unseen").check_classes(6)


def composed(world, fraction, severity, seed=0, **fields) -> TaskViews:
    config = ComposeTaskConfig(steps=[{"kind": "unseen", "fraction": fraction},
                                      {"kind": "covariate", "severity": severity, **fields}])
    return derive_task(world, config, seeded(seed))


def test_compose_applies_each_step_to_the_previous_id_view():
    world = Float64Gaussian(classes=10, dim=4)
    views = composed(world, 0.3, 0.7, seed=2)
    alone = unseen_task(world, 0.3, seed=2)  # the first step alone, from the same generator
    assert unseen_set(views) == unseen_set(alone)
    assert isinstance(views.id, CovariateWorld) and views.id.base is world and views.ood is world
    # no unseen class in a pretraining tuple, while the moved tasks draw from every class
    classes = tuple_classes(views.pretrain, 5000, 1, negatives=2)
    assert not set(classes.unique().tolist()) & unseen_set(views)
    assert np.count_nonzero(views.id.prior) == 10
    # the second step drew after the first: its moves are a covariate step's on a generator that has
    # drawn the permutation
    generator = seeded(2)
    torch.randperm(10, generator=generator)
    second = derive_task(world, CovariateTaskConfig(severity=0.7), generator)
    assert torch.equal(views.id.rotations, second.id.rotations) and torch.equal(views.id.shifts, second.id.shifts)


def test_compose_moves_are_paired_across_fractions_and_zero_zero_is_the_world():
    world = Float64Gaussian(classes=10, dim=4)
    moves = [composed(world, fraction, 1.0, seed=5).id for fraction in (0.0, 0.2, 0.4)]
    for other in moves[1:]:  # the same rotations and translations whatever the fraction
        assert torch.equal(other.rotations, moves[0].rotations) and torch.equal(other.shifts, moves[0].shifts)
    nested = [unseen_set(composed(world, fraction, 1.0, seed=5)) for fraction in (0.2, 0.4)]
    assert nested[0] < nested[1]  # prefixes of one permutation
    still = composed(world, 0.0, 0.0, seed=5)
    assert still.pretrain is None and still.ood is world
    same_draws(still.id, world, torch.arange(10).repeat(20))


@pytest.mark.parametrize("steps,message", [
    ([{"kind": "covariate", "severity": 1}, {"kind": "unseen", "fraction": 0.3}],
     ".1.kind: got 'unseen'; allowed: the first step only (it changes what pretraining sees)"),
    ([{"kind": "prior", "prior": "uniform"}, {"kind": "hierarchy", "groups": 2, "direction": "fine_to_coarse"}],
     ".1.kind: got 'hierarchy'; allowed: the first step only (it changes the classes)"),
    ([{"kind": "covariate", "severity": 1}, {"kind": "compose", "steps": []}],
     ".1.kind: got 'compose'; allowed: covariate, hierarchy, prior, subspace, unseen"),
    ([{"kind": "covariate", "severity": 1}, {"kind": "covariate", "severity": 2}], ".1.severity: got 2; allowed: 0..1"),
    ([{"kind": "covariate", "severity": 1}], "expected a list of two or more task sections"),
])
def test_compose_refuses_steps_it_cannot_chain(steps, message):
    with pytest.raises(ValidationError) as error:
        ComposeTaskConfig(steps=steps)
    assert error.value.errors()[0]["msg"] == "Value error, " + message


def test_compose_checks_later_steps_against_the_first_steps_classes():
    config = ComposeTaskConfig(steps=[{"kind": "hierarchy", "groups": 5, "direction": "fine_to_coarse"},
                                      {"kind": "prior", "prior": [1, 1, 1, 1, 1]}])
    config.check_classes(10)  # the prior step sees the 5 superclasses
    assert (config.pretrain_support(10), config.task_support(10), config.id_classes(10)) == (10, 5, 5)
    with pytest.raises(ValueError, match=r"^steps\.0\.groups: got 5; allowed: a divisor of the world's 12 classes"):
        config.check_classes(12)
    views = derive_task(GaussianWorld(torch.eye(10)), config, seeded(0))
    assert views.id.classes == 5 and views.pretrain is None
    assert views.id.prior.tolist() == [0.2] * 5


# ---------------------------------------------------------------------------------------------------
# the whole path: a run with each transform


RUN = {
    "name": "tasks", "seed": 3, "device": "cpu", "threads": 1,
    "world": {"kind": "gaussian", "classes": 8, "dim": 6, "warp": True},
    "encoder": {"kind": "mlp", "hidden": [8], "out_dim": 4, "norm_bound": 3.0},
    "objective": {"kind": "curl", "loss": "logistic"},
    "pretrain": {"tuples": 256, "epochs": 1, "batch_size": 64, "checkpoints": [0]},
    "evaluate": {"samples": 600, "mean_samples": 60, "test_per_class": 12, "task_classes": [2, 3], "top_r": [1, 2],
                 "probe_tasks": 4, "probe_shots": 10, "probe_val": 10, "star_samples": 30, "bootstrap": 10},
}
KEYS = ["step", "quantity", "negatives", "block_size", "task_classes", "top_r", "adapter", "shots", "bound", "term"]


def run_rows(task):
    from preadapt.api import run

    result = run({**RUN, "task": task})
    assert result.status == "finished", result.error
    return result.results


def split_rows(frame, split):
    rows = frame[frame.split == split].drop(columns=["run", "split"])
    return rows.sort_values(KEYS, kind="stable").reset_index(drop=True)


@pytest.fixture(scope="module")
def world_rows():
    return run_rows(None)


def test_the_worlds_own_prior_and_severity_zero_give_the_worlds_rows(world_rows):
    import pandas as pd

    same_prior = run_rows({"kind": "prior", "prior": "uniform"})
    still = run_rows({"kind": "covariate", "severity": 0.0})
    composed = run_rows({"kind": "compose", "steps": [{"kind": "unseen", "fraction": 0.0},
                                                      {"kind": "covariate", "severity": 0.0}]})
    # the id rows of the three transforms are the same, value for value
    pd.testing.assert_frame_equal(split_rows(same_prior, "id"), split_rows(still, "id"))
    pd.testing.assert_frame_equal(split_rows(same_prior, "id"), split_rows(composed, "id"))
    # and those of the world's own tasks: every adaptation row except the linear adapter's L*_adapt fit (and
    # the links made from it), which starts from the task's class means with a task section (adaptation.py)
    mine = split_rows(same_prior, "id")
    theirs = mine[KEYS].merge(split_rows(world_rows, "test"), on=KEYS, how="left")[mine.columns]
    assert len(mine) > 20 and theirs.value.notna().all()
    star = (mine.adapter == "linear") & mine.quantity.isin(["L_adapt_star", "link_interface", "link_adapt_excess"])
    pd.testing.assert_frame_equal(mine[~star], theirs[~star])
    assert star.sum() == 6
    # pretraining and the theory's quantities are untouched
    for split in ("fresh", "train", "validation"):
        pd.testing.assert_frame_equal(split_rows(same_prior, split), split_rows(world_rows, split))


@pytest.mark.parametrize("task,splits,tau_value", [
    ({"kind": "prior", "prior": {"zipf": 1.0}}, {"id"}, 1 / 8),
    ({"kind": "unseen", "fraction": 0.25}, {"id"}, 1 / 6),
    ({"kind": "unseen", "fraction": 0.5, "tasks": "unseen"}, {"id"}, 1 / 4),
    ({"kind": "covariate", "severity": 1.0}, {"id", "ood"}, 1 / 8),
    ({"kind": "subspace", "rank": 3}, {"id", "ood"}, 1 / 8),
    ({"kind": "hierarchy", "groups": 4, "direction": "coarse_to_fine"}, {"id"}, 1 / 4),
    ({"kind": "hierarchy", "groups": 4, "direction": "fine_to_coarse"}, {"id"}, 1 / 8),
    ({"kind": "compose", "steps": [{"kind": "unseen", "fraction": 0.25}, {"kind": "covariate", "severity": 1.0}]},
     {"id", "ood"}, 1 / 6),
], ids=lambda value: value["kind"] + "-" + "-".join(str(v) for k, v in value.items() if k != "kind")
    if isinstance(value, dict) else None)
def test_a_run_with_each_transform(task, splits, tau_value):
    rows = run_rows(task)
    adaptation = rows[rows.quantity.isin(["L_adapt", "L_adapt_star", "acc_avg"]) & rows.adapter.notna()]
    assert set(adaptation.split) - {"test"} == splits
    assert np.isfinite(rows.value.astype(float)).all()
    # τ is pretraining's: the world's, the seen classes' (uniform ρ) or the superclasses'
    assert np.allclose(rows[rows.quantity == "tau"].value.astype(float), tau_value, rtol=0, atol=1e-12)


@pytest.mark.parametrize("task", [{"kind": "prior", "prior": [1, 2, 3]}, {"kind": "unseen", "fraction": 0.34},
                                  {"kind": "covariate", "severity": 0.5},
                                  {"kind": "hierarchy", "groups": 3, "direction": "fine_to_coarse"}],
                         ids=lambda task: task["kind"])
def test_views_pickle_and_draw_the_same(task):
    world = finite_vector_world()
    views = derive_task(world, task, seeded(1))
    for view in (views.id, views.ood, views.pretrain):
        if view is None:
            continue
        again = pickle.loads(pickle.dumps(view))
        labels = torch.arange(view.classes).repeat(3)
        assert torch.equal(again.sample(labels, seeded(2)), view.sample(labels, seeded(2)))
        np.testing.assert_array_equal(again.prior, view.prior)


# ---------------------------------------------------------------------------------------------------
# a run's config: one line naming the field


@pytest.mark.parametrize("task,evaluate,message", [
    ({"kind": "covariate", "severity": 1.5}, {}, "task.severity: got 1.5; allowed: 0..1"),
    ({"kind": "unseen", "fraction": 0.95}, {}, "task.fraction: got 0.95; leaves 0 of the 10 classes for pretraining "
                                               "(10 unseen); allowed: 0, or 0.05 ≤ fraction < 0.85 (at least 2 seen and 1 "
                                               "unseen of 10 classes)"),
    ({"kind": "hierarchy", "groups": 3, "direction": "coarse_to_fine"}, {},
     "task.groups: got 3; allowed: a divisor of the world's 10 classes (superclasses are equal blocks of classes)"),
    ({"kind": "prior", "prior": [1, 1]}, {}, "task.prior: got 2 weights; expected one per class (10)"),
    ({"kind": "hierarchy", "groups": 5, "direction": "coarse_to_fine"}, {"task_classes": [2, 6]},
     "evaluate.task_classes: got 6; allowed: 2..5 (5 classes of positive prior in both pretraining and the tasks of "
     "task.kind hierarchy)"),
    ({"kind": "unseen", "fraction": 0.3, "tasks": "unseen"}, {"task_classes": [2, 4], "top_r": [1]},
     "evaluate.task_classes: got 4; allowed: 2..3 (3 classes of positive prior in both pretraining and the tasks of "
     "task.kind unseen)"),
    ({"kind": "compose", "steps": [{"kind": "unseen", "fraction": 0.2}, {"kind": "covariate", "severity": -0.5}]}, {},
     "task.steps.1.severity: got -0.5; allowed: 0..1"),
    ({"kind": "compose", "steps": [{"kind": "unseen", "fraction": 0.85}, {"kind": "covariate", "severity": 0.5}]}, {},
     "task.steps.0.fraction: got 0.85; leaves 1 of the 10 classes for pretraining (9 unseen); allowed: 0, or 0.05 ≤ "
     "fraction < 0.85 (at least 2 seen and 1 unseen of 10 classes)"),
    ({"kind": "prior", "prior": [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]}, {"task_classes": [2], "top_r": [5]},
     "evaluate.top_r: got 5; allowed: 1..3 (3 classes of positive prior in both pretraining and the tasks of "
     "task.kind prior)"),
])
def test_a_config_the_task_cannot_serve_is_one_line(task, evaluate, message):
    from preadapt.experiment.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as failure:
        parse_config({"world": {"kind": "gaussian", "classes": 10}, "task": task, "evaluate": evaluate})
    assert str(failure.value) == message


def test_defaulted_task_sizes_fit_the_tasks_classes():
    from preadapt.experiment.config import parse_config

    config = parse_config({"world": {"kind": "gaussian", "classes": 12},
                           "task": {"kind": "hierarchy", "groups": 3, "direction": "fine_to_coarse"}})
    assert (config.evaluate.task_classes, config.evaluate.top_r) == ([2], [1])
    reason = "3 classes of positive prior in both pretraining and the tasks of task.kind hierarchy"
    assert config.defaults_resolved() == [f"evaluate.task_classes [2, 10] → [2] ({reason})",
                                          f"evaluate.top_r [1, 5] → [1] ({reason})"]
    config = parse_config({"world": {"kind": "gaussian", "classes": 12}, "task": {"kind": "covariate", "severity": 1}})
    assert config.evaluate.task_classes == [2, 10] and config.defaults_resolved() == []
