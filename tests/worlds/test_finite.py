"""A labeled data set as a world: stratified splits, uniform draws of a class's split examples,
empirical priors, the bundled digits and config validation."""

import json
import pickle

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from scipy import stats

from preadapt.worlds import SPLITS, WORLDS, FiniteWorld, FiniteWorldConfig, GaussianWorld, draw_tuples, split_of
from preadapt.worlds.finite import check_split, split_counts

P_FLOOR = 1e-3


def _indexed(sizes, seed=0, **kwargs):
    """A world whose example i has the feature (i, i): a draw names its example."""
    labels = np.repeat(np.array([10, 20, 30, 40])[: len(sizes)], sizes)
    features = np.repeat(np.arange(labels.size, dtype=np.float64)[:, None], 2, axis=1)
    world = FiniteWorld.from_arrays(features, labels, generator=torch.Generator().manual_seed(seed), **kwargs)
    return world, labels


def _split_members(world, name):
    x, y = world.split_world(name).examples()
    return x[:, 0].long(), y


def test_split_counts_round_to_the_stated_fractions():
    counts = split_counts([200, 100, 10, 3, 1797], [0.7, 0.1, 0.2])
    assert counts.sum(1).tolist() == [200, 100, 10, 3, 1797]
    assert counts[:3].tolist() == [[140, 20, 40], [70, 10, 20], [7, 1, 2]]
    assert np.all(np.abs(counts - np.array([200, 100, 10, 3, 1797])[:, None] * [0.7, 0.1, 0.2]) < 1)
    assert check_split([1 / 3, 1 / 3, 1 / 3]) == [1 / 3, 1 / 3, 1 / 3]


def test_splits_are_stratified_disjoint_and_cover_the_data():
    world, labels = _indexed([100, 50, 30])
    seen = []
    for name, fraction in zip(SPLITS, [0.7, 0.1, 0.2]):
        index, classes = _split_members(world, name)
        assert np.array_equal(labels[index.numpy()], world.label_values[classes.numpy()])
        assert np.bincount(classes.numpy()).tolist() == [round(n * fraction) for n in (100, 50, 30)]
        seen.append(index.numpy())
    everything = np.concatenate(seen)
    assert np.array_equal(np.sort(everything), np.arange(180))  # disjoint and complete


def test_split_is_determined_by_the_generator():
    a, _ = _indexed([40, 40], seed=0)
    b, _ = _indexed([40, 40], seed=0)
    c, _ = _indexed([40, 40], seed=1)
    assert np.array_equal(a.assignment, b.assignment)
    assert not np.array_equal(a.assignment, c.assignment)
    labels = torch.tensor([0, 1, 1, 0])
    assert torch.equal(a.sample(labels, torch.Generator().manual_seed(3)), b.sample(labels, torch.Generator().manual_seed(3)))


def test_samples_are_uniform_over_the_class_examples_of_the_split():
    world, labels = _indexed([60, 90, 30])
    assert world.classes == 3 and world.input_shape == (2,) and world.label_values.tolist() == [10, 20, 30]
    for name in SPLITS:
        view = world.split_world(name)
        members, classes = _split_members(world, name)
        for c in range(3):
            draws = view.sample(torch.full((3000,), c), torch.Generator().manual_seed(c))[:, 0].long()
            allowed = members[classes == c]
            assert set(draws.tolist()) <= set(allowed.tolist())
            counts = np.array([(draws == i).sum().item() for i in allowed.tolist()])
            assert stats.chisquare(counts).pvalue > P_FLOOR
    mixed = torch.tensor([2, 0, 1, 2, 0])
    x = world.split_world("validation").sample(mixed, torch.Generator().manual_seed(0))
    assert labels[x[:, 0].long().numpy()].tolist() == [30, 10, 20, 30, 10]


def test_priors_are_the_split_frequencies_or_as_asked():
    world, _ = _indexed([70, 20, 10])
    for name in SPLITS:
        view = world.split_world(name)
        assert np.allclose(view.prior, view.counts / view.counts.sum())
        assert view.prior.sum() == pytest.approx(1.0)
    assert world.split_world("train").counts.tolist() == [49, 14, 7]
    uniform, _ = _indexed([70, 20, 10], prior="uniform")
    assert uniform.split_world("train").prior.tolist() == [1 / 3] * 3
    explicit, _ = _indexed([70, 20, 10], prior=[1, 1, 2])
    assert explicit.split_world("validation").prior.tolist() == [0.25, 0.25, 0.5]


def test_views_share_the_data_and_keep_the_requested_dtype():
    features = torch.randn(40, 3, 2, dtype=torch.float64)
    world = FiniteWorld.from_arrays(features, torch.arange(40) % 4, generator=torch.Generator().manual_seed(0),
                                    dtype=torch.float32)
    train = world.split_world("train")
    assert train.features.data_ptr() == features.data_ptr() == world.features.data_ptr()
    assert world.split_name == "test" and train.split_name == "train"
    x = train.sample(torch.tensor([0, 3]), torch.Generator().manual_seed(0))
    assert x.shape == (2, 3, 2) and x.dtype == torch.float32


def test_draw_tuples_works_on_a_finite_world():
    world, labels = _indexed([30, 30, 30, 30])
    train = world.split_world("train")
    t = draw_tuples(train, 50, torch.Generator().manual_seed(0), negatives=3, block_size=2)
    assert (t.anchor.shape, t.positives.shape, t.negatives.shape) == ((50, 2), (50, 2, 2), (50, 3, 2, 2))
    members = set(_split_members(world, "train")[0].tolist())
    for inputs, classes in ((t.anchor, t.anchor_class), (t.positives, t.anchor_class[:, None].expand(50, 2)),
                            (t.negatives, t.negative_class[:, :, None].expand(50, 3, 2))):
        index = inputs[..., 0].long().reshape(-1)
        assert set(index.tolist()) <= members
        assert np.array_equal(labels[index.numpy()], world.label_values[classes.reshape(-1).numpy()])


def test_split_of_any_world():
    gaussian = GaussianWorld(torch.eye(2))
    assert split_of(gaussian, "train") is gaussian
    world, _ = _indexed([10, 10])
    assert split_of(world, "validation").split_name == "validation"
    with pytest.raises(ValueError, match="allowed: train, validation, test"):
        split_of(world, "held-out")


def test_world_pickles():
    world, _ = _indexed([10, 10])
    view = world.split_world("train")
    copy = pickle.loads(pickle.dumps(view))
    labels = torch.tensor([0, 1, 1])
    assert torch.equal(copy.sample(labels, torch.Generator().manual_seed(0)),
                       view.sample(labels, torch.Generator().manual_seed(0)))


def test_bad_arrays_are_refused():
    generator = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="must agree"):
        FiniteWorld.from_arrays(np.zeros((5, 2)), np.zeros(4, dtype=int), generator=generator)
    with pytest.raises(ValueError, match="integers"):
        FiniteWorld.from_arrays(np.zeros((4, 2)), np.array([0.0, 1.0, 0.0, 1.0]), generator=generator)
    with pytest.raises(ValueError, match="at least two classes"):
        FiniteWorld.from_arrays(np.zeros((10, 2)), np.zeros(10, dtype=int), generator=generator)
    with pytest.raises(ValueError, match="class 7 has no example in the validation split"):
        FiniteWorld.from_arrays(np.zeros((22, 2)), np.array([3] * 20 + [7] * 2), generator=generator)
    with pytest.raises(ValueError, match="summing to 1"):
        FiniteWorld.from_arrays(np.zeros((30, 2)), np.arange(30) % 2, split=[0.5, 0.5, 0.5], generator=generator)
    with pytest.raises(ValueError, match="Generator"):
        FiniteWorld.from_arrays(np.zeros((30, 2)), np.arange(30) % 2)


def test_digits_load_offline_as_a_world():
    pytest.importorskip("sklearn", reason="the digits data set ships with scikit-learn")
    config = WORLDS.parse({"kind": "finite", "dataset": "digits"})
    assert config.classes == 10
    world = WORLDS.build(config, torch.Generator().manual_seed(0))
    assert world.classes == 10 and world.input_shape == (1, 8, 8) and world.split_name == "test"
    assert sum(world.split_world(name).counts.sum() for name in SPLITS) == 1797
    assert world.split_world("train").counts.sum() == pytest.approx(0.7 * 1797, abs=10)
    x = world.split_world("train").sample(torch.arange(10), torch.Generator().manual_seed(0))
    assert x.shape == (10, 1, 8, 8) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert np.allclose(world.prior, world.counts / world.counts.sum())
    uniform = WORLDS.build(WORLDS.parse({"kind": "finite", "prior": "uniform"}), torch.Generator().manual_seed(0))
    assert np.allclose(uniform.prior, 0.1)


def test_configs_round_trip_through_the_registry():
    config = WORLDS.parse({"kind": "finite", "split": [0.5, 0.25, 0.25], "prior": "uniform"})
    assert isinstance(config, FiniteWorldConfig)
    assert WORLDS.parse(config) == config
    assert WORLDS.parse(json.loads(config.model_dump_json())) == config
    assert FiniteWorldConfig().split == [0.7, 0.1, 0.2] and FiniteWorldConfig().prior == "empirical"


@pytest.mark.parametrize("bad", [
    {"dataset": "mnist"}, {"prior": "zipf"}, {"split": [0.7, 0.3]}, {"split": [0.7, 0.3, 0.0]},
    {"split": [0.6, 0.1, 0.2]}, {"colour": "red"},
])
def test_bad_finite_configs_are_refused(bad):
    with pytest.raises(ValidationError):
        FiniteWorldConfig(**bad)
