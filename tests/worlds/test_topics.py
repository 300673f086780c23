"""Topic worlds (the Wiki-3029 analogue): sentence shapes, word frequencies against p_c (chi-square
at a fixed seed), the guide-table sampler against searchsorted, and the finite split bank."""

import json
import pickle

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from scipy import stats

from preadapt.worlds import SPLITS, WORLDS, TopicWorld, TopicWorldConfig, draw_tuples
from preadapt.worlds.finite import split_counts
from preadapt.worlds.sampling import make_generator

P_FLOOR = 1e-3  # a chi-square p-value below this (the 0.999 level) at the fixed seed fails the test


def _build(**fields):
    config = WORLDS.parse({"kind": "topics", **fields})
    return WORLDS.build(config, make_generator(0, "world"))


def _chi_square(counts, probs, min_expected=5.0):
    """Pearson's test of ``counts`` against ``probs``, pooling outcomes expected fewer than
    ``min_expected`` times into one bin; zero-probability outcomes must never occur."""
    counts, probs = np.asarray(counts, dtype=float), np.asarray(probs, dtype=float)
    assert counts[probs == 0].sum() == 0, "a zero-probability outcome was drawn"
    expected = counts.sum() * probs
    rare = expected < min_expected
    observed = np.append(counts[~rare], counts[rare].sum())
    expected = np.append(expected[~rare], expected[rare].sum())
    if expected[-1] == 0:
        observed, expected = observed[:-1], expected[:-1]
    return stats.chisquare(observed, expected).pvalue


def _rows(x):
    return {tuple(row) for row in x.tolist()}


def test_sentences_have_the_stated_shape_dtype_and_padding():
    world = _build(classes=4, vocab=40, min_length=3, max_length=9)
    assert (world.classes, world.vocab, world.input_shape, world.split_name) == (4, 40, (9,), None)
    x = world.sample(torch.arange(4).repeat(500), torch.Generator().manual_seed(0))
    assert x.shape == (2000, 9) and x.dtype == torch.int64
    assert int(x.min()) >= 0 and int(x.max()) < 40
    lengths = (x != 0).sum(1)
    assert int(lengths.min()) == 3 and int(lengths.max()) == 9
    # words first, then only padding
    assert torch.equal(x != 0, torch.arange(9)[None, :] < lengths[:, None])


def test_world_and_samples_are_determined_by_the_generators():
    a, b, other = _build(classes=3, vocab=20), _build(classes=3, vocab=20), WORLDS.build(
        WORLDS.parse({"kind": "topics", "classes": 3, "vocab": 20}), make_generator(1, "world"))
    assert np.array_equal(a.word_probs, b.word_probs)
    assert not np.allclose(a.word_probs, other.word_probs)
    labels = torch.tensor([0, 2, 1, 1])
    assert torch.equal(a.sample(labels, torch.Generator().manual_seed(5)), b.sample(labels, torch.Generator().manual_seed(5)))
    assert not torch.equal(a.sample(labels, torch.Generator().manual_seed(5)), a.sample(labels, torch.Generator().manual_seed(6)))


def test_word_probabilities_mix_topics_with_a_shared_background():
    world = _build(classes=6, vocab=50, background=0.7, concentration=0.3)
    probs = world.word_probs
    assert probs.shape == (6, 50)
    assert np.allclose(probs.sum(1), 1.0) and np.all(probs[:, 0] == 0)
    # p_a − p_b = (1 − β)(θ_a − θ_b), so ‖p_a − p_b‖₁ ≤ 2(1 − β)
    l1 = np.abs(probs[:, None, :] - probs[None, :, :]).sum(-1)
    assert l1.max() <= 2 * 0.3 + 1e-12  # + the rounding of 50 differences of probabilities: ≲ 50·ε
    assert l1[~np.eye(6, dtype=bool)].min() > 0.01  # the topics still differ
    sparse = _build(classes=4, vocab=200, background=0.0, concentration=0.01).word_probs
    assert np.mean(sparse[:, 1:] < 1e-6) > 0.5  # small α, no background: sparse topics


def test_each_class_emits_its_word_distribution():
    world = _build(classes=3, vocab=30, background=0.3, concentration=0.5, min_length=2, max_length=12,
                   prior={"zipf": 1.0})
    x = world.sample(torch.arange(3).repeat_interleave(4000), torch.Generator().manual_seed(1)).view(3, 4000, 12)
    for c in range(3):
        words = x[c][x[c] != 0].numpy()
        assert _chi_square(np.bincount(words, minlength=30), world.word_probs[c]) > P_FLOOR
        lengths = (x[c] != 0).sum(1).numpy()
        assert _chi_square(np.bincount(lengths, minlength=13)[2:], np.full(11, 1 / 11)) > P_FLOOR


def test_guide_table_draws_agree_with_searchsorted():
    probs = np.array([
        [0.0, 0.5, 0.0, 0.0, 0.25, 0.25, 0.0],   # zeros inside and at the end of the support
        [0.0, 1e-300, 0.0, 1.0, 0.0, 0.0, 1e-17],
        [0.0, 1 / 3, 1 / 3, 1 / 3, 0.0, 0.0, 0.0],
    ])
    worlds = [TopicWorld(probs, 1, 4), _build(classes=5, vocab=300, background=0.0, concentration=0.02)]
    for world in worlds:
        cdf = world._cdf.reshape(world.classes, world.vocab)
        random_labels = np.repeat(np.arange(world.classes), 4000)
        random_u = torch.rand(random_labels.size, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
        # every cdf value and its predecessor, where the word changes, and both ends of [0, 1)
        edge_u = np.concatenate([cdf.ravel(), np.nextafter(cdf.ravel(), 0.0), [0.0, 0.0, 1 - 2**-53, 1 - 2**-53]])
        edge_labels = np.concatenate([np.tile(np.repeat(np.arange(world.classes), world.vocab), 2),
                                      [0, world.classes - 1, 0, world.classes - 1]])
        labels = np.concatenate([random_labels, edge_labels])
        uniform = np.clip(np.concatenate([random_u.numpy(), edge_u]), 0.0, 1 - 2**-53)
        words = world._inverse_cdf(labels, uniform)
        reference = np.array([np.searchsorted(cdf[c], u, side="right") for c, u in zip(labels, uniform)])
        assert np.array_equal(words, reference)
        assert np.all(world.word_probs[labels, words] > 0)


def test_infinite_world_has_every_split_as_the_population():
    world = _build(classes=3, vocab=20)
    assert all(world.split_world(name) is world for name in SPLITS)
    with pytest.raises(ValueError, match="allowed: train, validation, test"):
        world.split_world("dev")
    with pytest.raises(ValueError, match="finite mode"):
        world.examples()


def test_finite_mode_splits_a_bank_of_sentences_per_class():
    world = _build(classes=5, vocab=60, min_length=6, max_length=10, sentences_per_class=20, prior=[1, 2, 3, 4, 5])
    assert world.split_name == "test"
    assert world.bank.features.shape == (100, 10) and world.bank.features.dtype == torch.int16
    bank = _rows(world.bank.features.long())
    assert len(bank) == 100  # distinct sentences, so a draw names its bank entry
    expected = split_counts([20], [0.7, 0.1, 0.2])[0]
    assert expected.tolist() == [14, 2, 4]
    parts = {}
    for name, count in zip(SPLITS, expected):
        view = world.split_world(name)
        assert view.split_name == name and view.classes == 5 and np.array_equal(view.prior, world.prior)
        assert np.array_equal(view.word_probs, world.word_probs)
        x, y = view.examples()
        assert x.dtype == torch.int64 and torch.equal(y, torch.arange(5).repeat_interleave(int(count)))
        parts[name] = [_rows(x[y == c]) for c in range(5)]
    for c in range(5):
        sets = [parts[name][c] for name in SPLITS]
        assert sum(map(len, sets)) == 20 and len(set.union(*sets)) == 20  # disjoint, cover the class's bank
    assert set.union(*(s for name in SPLITS for s in parts[name])) == bank
    # a draw is a sentence of the requested class and split, uniformly
    train = world.split_world("train")
    draws = train.sample(torch.full((2800,), 3), torch.Generator().manual_seed(3))
    assert _rows(draws) <= parts["train"][3]
    members = sorted(parts["train"][3])
    counts = np.bincount([members.index(row) for row in map(tuple, draws.tolist())], minlength=14)
    assert _chi_square(counts, np.full(14, 1 / 14)) > P_FLOOR
    assert _rows(world.sample(torch.tensor([0, 4] * 50), torch.Generator().manual_seed(4))) <= (
        parts["test"][0] | parts["test"][4])


def test_finite_bank_is_determined_by_the_world_generator():
    a = _build(classes=3, vocab=30, sentences_per_class=10)
    b = _build(classes=3, vocab=30, sentences_per_class=10)
    assert torch.equal(a.bank.features, b.bank.features)
    assert np.array_equal(a.bank.assignment, b.bank.assignment)


@pytest.mark.parametrize("finite", [None, 12])
def test_draw_tuples_works_on_topic_worlds(finite):
    world = _build(classes=4, vocab=50, min_length=3, max_length=7, sentences_per_class=finite).split_world("train")
    t = draw_tuples(world, 30, torch.Generator().manual_seed(0), negatives=2, block_size=3)
    assert (t.anchor.shape, t.positives.shape, t.negatives.shape) == ((30, 7), (30, 3, 7), (30, 2, 3, 7))
    assert t.anchor.dtype == torch.int64
    if finite:
        x, y = world.examples()
        for c in range(4):
            members = _rows(x[y == c])
            assert _rows(t.anchor[t.anchor_class == c]) <= members
            assert _rows(t.positives[t.anchor_class == c].reshape(-1, 7)) <= members


def test_wiki_3029_sized_bank_is_compact():
    world = _build(classes=3029, vocab=500, min_length=4, max_length=16, sentences_per_class=200)
    features = world.bank.features
    assert features.shape == (3029 * 200, 16) and features.dtype == torch.int16
    assert features.nbytes == 3029 * 200 * 16 * 2  # 19 MB; int64 would take four times that
    assert world.split_world("train").bank.counts.tolist() == [140] * 3029
    assert world.bank.counts.tolist() == [40] * 3029
    x = world.split_world("train").sample(torch.arange(3029), torch.Generator().manual_seed(0))
    assert x.shape == (3029, 16) and x.dtype == torch.int64


def test_world_pickles():
    world = _build(classes=3, vocab=20, sentences_per_class=10).split_world("validation")
    copy = pickle.loads(pickle.dumps(world))
    labels = torch.tensor([0, 1, 2, 2])
    assert torch.equal(copy.sample(labels, torch.Generator().manual_seed(0)),
                       world.sample(labels, torch.Generator().manual_seed(0)))


def test_configs_round_trip_through_the_registry():
    config = WORLDS.parse({"kind": "topics", "classes": 7, "vocab": 99, "prior": {"zipf": 1.1},
                           "sentences_per_class": 30, "split": [0.6, 0.2, 0.2]})
    assert isinstance(config, TopicWorldConfig)
    assert WORLDS.parse(config) == config
    assert WORLDS.parse(json.loads(config.model_dump_json())) == config
    assert TopicWorldConfig().sentences_per_class is None and TopicWorldConfig().split == [0.7, 0.1, 0.2]


@pytest.mark.parametrize("bad", [
    {"vocab": 1}, {"classes": 1}, {"min_length": 10, "max_length": 5}, {"min_length": 0},
    {"background": 1.0}, {"background": -0.1}, {"concentration": 0.0}, {"prior": [1.0, 2.0]},
    {"prior": {"zipf": -1.0}}, {"split": [0.7, 0.2, 0.2]}, {"split": [0.8, 0.2]}, {"split": [1.1, -0.2, 0.1]},
    {"sentences_per_class": 0}, {"sentences_per_class": 2}, {"colour": "red"},
])
def test_bad_topic_configs_are_refused(bad):
    with pytest.raises(ValidationError):
        TopicWorldConfig(**{"classes": 3, **bad})


def test_bad_word_distributions_are_refused():
    with pytest.raises(ValueError, match="padding"):
        TopicWorld(np.array([[0.5, 0.5], [0.0, 1.0]]), 1, 2)
    with pytest.raises(ValueError, match="positive probability"):
        TopicWorld(np.array([[0.0, 0.0], [0.0, 1.0]]), 1, 2)
    with pytest.raises(ValueError, match="min_length"):
        TopicWorld(np.array([[0.0, 1.0]]), 3, 2)
