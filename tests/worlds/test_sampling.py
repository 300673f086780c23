"""The sampler draws exactly the distributions of THEORY.md section 2 (checked with exact
probabilities and chi-square tests at a fixed seed)."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

from preadapt.worlds import GaussianWorld, as_prior, draw_tuples, sample_distinct_pairs, sample_tasks, tau, tau_k
from preadapt.worlds.prior import collision_prior, elementary_symmetric
from preadapt.worlds.finite import FiniteWorld
from preadapt.worlds.sampling import derive_seed, make_generator, sample_other_classes

P_FLOOR = 1e-4  # a chi-square p-value below this at the fixed seed fails the test


def _world(prior, classes=5, dim=3):
    means = torch.randn(classes, dim, generator=torch.Generator().manual_seed(1))
    return GaussianWorld(means, noise=0.5, prior=prior)


def _chi_square(counts, probs):
    counts = np.asarray(counts, dtype=float)
    expected = counts.sum() * np.asarray(probs)
    keep = expected > 0
    assert counts[~keep].sum() == 0, "a zero-probability outcome was drawn"
    return stats.chisquare(counts[keep], expected[keep]).pvalue


def test_tau_and_tau_k_match_enumeration():
    prior = as_prior({"zipf": 1.3}, 4)
    for k in (1, 2, 3):
        hit = 0.0
        for draw in itertools.product(range(4), repeat=k + 1):
            weight = np.prod(prior[list(draw)])
            hit += weight * (draw[0] in draw[1:])
        assert tau_k(prior, k) == pytest.approx(hit, abs=1e-12)
    assert tau(prior) == pytest.approx(tau_k(prior, 1), abs=1e-12)
    assert tau(np.full(7, 1 / 7)) == pytest.approx(1 / 7)


def test_elementary_symmetric_matches_enumeration():
    w = np.array([0.3, 1.2, 2.0, 0.7, 0.1])
    e = elementary_symmetric(w, 5)
    for j in range(6):
        brute = sum(np.prod(w[list(s)]) for s in itertools.combinations(range(5), j))
        assert e[j] == pytest.approx(brute, rel=1e-12)


def test_marginal_negatives_collide_with_probability_tau():
    prior = as_prior({"zipf": 1.0}, 5)
    t = draw_tuples(_world(prior), 40000, torch.Generator().manual_seed(0), negatives=3)
    collisions = (t.negative_class == t.anchor_class[:, None]).double()
    anchor_counts = np.bincount(t.anchor_class.numpy(), minlength=5)
    assert _chi_square(anchor_counts, prior) > P_FLOOR
    negative_counts = np.bincount(t.negative_class.reshape(-1).numpy(), minlength=5)
    assert _chi_square(negative_counts, prior) > P_FLOOR
    # each negative collides with probability τ; at least one of k with τ_k
    for observed, expected in ((collisions.mean(), tau(prior)), (collisions.max(1).values.mean(), tau_k(prior, 3))):
        se = math.sqrt(expected * (1 - expected) / 40000)
        assert abs(float(observed) - expected) < 4 * se


def test_same_class_tuples_draw_the_collision_prior():
    prior = as_prior([0.5, 0.2, 0.2, 0.1, 0.0], 5)
    t = draw_tuples(_world(prior), 30000, torch.Generator().manual_seed(1), condition="same")
    assert torch.equal(t.negative_class[:, 0], t.anchor_class)
    counts = np.bincount(t.anchor_class.numpy(), minlength=5)
    assert _chi_square(counts, collision_prior(prior)) > P_FLOOR


def test_different_class_pairs_are_rho_times_rho_given_distinct():
    prior = as_prior({"zipf": 1.5}, 4)
    anchor, other = sample_distinct_pairs(prior, 60000, torch.Generator().manual_seed(2))
    assert not torch.any(anchor == other)
    probs = np.outer(prior, prior)
    np.fill_diagonal(probs, 0.0)
    probs /= probs.sum()
    counts = np.zeros((4, 4))
    np.add.at(counts, (anchor.numpy(), other.numpy()), 1)
    assert _chi_square(counts.ravel(), probs.ravel()) > P_FLOOR


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_tasks_are_drawn_proportional_to_the_product_of_the_prior(size):
    prior = as_prior([0.35, 0.25, 0.2, 0.1, 0.06, 0.04], 6)
    tasks = sample_tasks(prior, 30000, size, torch.Generator().manual_seed(3))
    assert tasks.shape == (30000, size)
    subsets = list(itertools.combinations(range(6), size))
    index = {s: i for i, s in enumerate(subsets)}
    counts = np.zeros(len(subsets))
    for row in tasks.numpy():
        assert len(set(row)) == size
        counts[index[tuple(sorted(row))]] += 1
    probs = np.array([np.prod(prior[list(s)]) for s in subsets])
    assert _chi_square(counts, probs / probs.sum()) > P_FLOOR
    # the order within a task is random: the first column is not the smallest class
    if size > 1:
        assert (tasks[:, 0] != tasks.min(1).values).any()


def test_tasks_skip_classes_with_zero_prior_and_refuse_impossible_sizes():
    prior = as_prior([0.5, 0.0, 0.5], 3)
    tasks = sample_tasks(prior, 200, 2, torch.Generator().manual_seed(0))
    assert set(tasks.reshape(-1).tolist()) == {0, 2}
    with pytest.raises(ValueError):
        sample_tasks(prior, 10, 3, torch.Generator().manual_seed(0))


def test_blocks_draw_one_class_per_block():
    world = GaussianWorld(torch.eye(4) * 100.0, noise=0.01)  # the class of a point is obvious
    t = draw_tuples(world, 500, torch.Generator().manual_seed(4), negatives=3, block_size=5)
    assert t.positives.shape == (500, 5, 4) and t.negatives.shape == (500, 3, 5, 4)
    assert torch.equal(t.positives.argmax(-1), t.anchor_class[:, None].expand(500, 5))
    assert torch.equal(t.negatives.argmax(-1), t.negative_class[:, :, None].expand(500, 3, 5))


def test_same_generator_same_tuples():
    world = _world(as_prior("uniform", 5))
    a = draw_tuples(world, 100, make_generator(7, "x"), negatives=2, block_size=2)
    b = draw_tuples(world, 100, make_generator(7, "x"), negatives=2, block_size=2)
    assert torch.equal(a.negatives, b.negatives) and torch.equal(a.anchor_class, b.anchor_class)
    assert derive_seed(7, "x") != derive_seed(8, "x")


def test_conditional_tuples_need_one_negative():
    with pytest.raises(ValueError, match="negatives = 1"):
        draw_tuples(_world(as_prior("uniform", 5)), 10, torch.Generator(), negatives=2, condition="same")


def test_large_tasks_on_many_classes_stay_uniform():
    # 400 of 3029 classes: e_j of unscaled weights would overflow; each class is in a task w.p. K/C
    tasks = sample_tasks(np.full(3029, 1 / 3029), 200, 400, torch.Generator().manual_seed(5))
    assert all(len(set(row)) == 400 for row in tasks.tolist())
    values = tasks.double().reshape(-1)
    se = math.sqrt((3029**2 - 1) / 12 / values.numel())  # sampling without replacement only shrinks it
    assert abs(float(values.mean()) - 1514.0) < 5 * se


# ---------------------------------------------------------------- true negatives ([Chuang20]'s oracle)

def _true_negative_worlds():
    """Worlds whose classes the tests read from the tuples: Gaussian ones with several priors (one with
    a zero-prior class, one with two classes only) and a finite world whose examples are their labels."""
    labels = np.repeat(np.arange(4), 30)
    finite = FiniteWorld.from_arrays(torch.tensor(labels, dtype=torch.float64).view(-1, 1), labels,
                                     generator=torch.Generator().manual_seed(0), prior=[0.1, 0.2, 0.3, 0.4])
    return {
        "zipf-5": _world(as_prior({"zipf": 1.0}, 5)),
        "zero-class": _world(as_prior([0.5, 0.0, 0.2, 0.2, 0.1], 5)),
        "two-classes": _world(as_prior([0.8, 0.2], 2), classes=2),
        "finite": finite,
    }


@pytest.mark.parametrize("name", list(_true_negative_worlds()))
def test_true_negatives_never_share_the_anchors_class(name):
    world = _true_negative_worlds()[name]
    t = draw_tuples(world, 20000, torch.Generator().manual_seed(6), negatives=4, block_size=2, true_negatives=True)
    assert t.negative_class.shape == (20000, 4)
    assert not (t.negative_class == t.anchor_class[:, None]).any()
    assert np.all(world.prior[t.negative_class.numpy()] > 0)  # and never a class of zero prior
    if world.classes == 2:  # every negative is the other class
        assert torch.equal(t.negative_class, (1 - t.anchor_class)[:, None].expand(20000, 4))
    if name == "finite":  # the points themselves: each example is its label, one class per block
        assert torch.equal(t.negatives[..., 0].long(), t.negative_class[:, :, None].expand(20000, 4, 2))
        assert torch.equal(t.positives[..., 0].long(), t.anchor_class[:, None].expand(20000, 2))


def test_true_negatives_follow_the_prior_given_another_class():
    prior = as_prior([0.35, 0.25, 0.2, 0.12, 0.08], 5)
    n, k, classes = 40000, 3, 5
    t = draw_tuples(_world(prior), n, torch.Generator().manual_seed(8), negatives=k, true_negatives=True)
    anchor = t.anchor_class.numpy()
    assert _chi_square(np.bincount(anchor, minlength=classes), prior) > P_FLOOR  # anchors still ~ ρ
    # Given the anchor classes, the n_c·k negatives of the anchors of class c are independent draws from
    # q_c = ρ(· | ≠ c), so the count N_{c,c'} of class c' among them is Binomial(n_c·k, q_c(c')), with
    # standard deviation σ = sqrt(n_c·k·q(1 − q)). Here n_c·k·q ≥ 40000·0.08·3·0.08 ≈ 770, so the
    # normal approximation is accurate, and |N − n_c·k·q| ≤ z·σ fails for a given cell with probability
    # α/m at z = Φ⁻¹(1 − α/(2m)). By the union bound over the m = C(C − 1) cells c' ≠ c, all pass with
    # probability ≥ 1 − α; α = P_FLOOR. The seed is fixed, so the test is deterministic; the bound says a
    # correct sampler would fail it at fewer than 1 in 10⁴ seeds.
    cells = classes * (classes - 1)
    z = stats.norm.ppf(1 - P_FLOOR / (2 * cells))  # ≈ 4.9
    counts = np.zeros((classes, classes))
    np.add.at(counts, (np.repeat(anchor, k), t.negative_class.numpy().reshape(-1)), 1)
    assert np.all(np.diag(counts) == 0)
    for c in range(classes):
        trials = counts[c].sum()
        assert trials == k * np.sum(anchor == c)
        q = np.where(np.arange(classes) == c, 0.0, prior) / (1 - prior[c])
        for other in set(range(classes)) - {c}:
            sigma = math.sqrt(trials * q[other] * (1 - q[other]))
            assert abs(counts[c, other] - trials * q[other]) <= z * sigma, (c, other, counts[c], trials * q)


def test_true_negatives_are_deterministic_under_a_seed():
    world = _world(as_prior({"zipf": 1.2}, 5))
    a = draw_tuples(world, 300, make_generator(7, "t"), negatives=3, block_size=2, true_negatives=True)
    b = draw_tuples(world, 300, make_generator(7, "t"), negatives=3, block_size=2, true_negatives=True)
    for part in ("anchor", "positives", "negatives", "anchor_class", "negative_class"):
        assert torch.equal(getattr(a, part), getattr(b, part)), part
    c = draw_tuples(world, 300, make_generator(8, "t"), negatives=3, block_size=2, true_negatives=True)
    assert not torch.equal(a.negative_class, c.negative_class)


def test_without_true_negatives_the_draw_is_unchanged():
    """The default keeps the marginal sampler: the same generator gives the same tuples, clashes included."""
    world = _world(as_prior("uniform", 5))
    t = draw_tuples(world, 2000, torch.Generator().manual_seed(9), negatives=2, true_negatives=False)
    u = draw_tuples(world, 2000, torch.Generator().manual_seed(9), negatives=2)
    assert torch.equal(t.negatives, u.negatives)
    assert (t.negative_class == t.anchor_class[:, None]).any()


def test_true_negatives_refuse_a_condition_and_a_single_class():
    world = _world(as_prior("uniform", 5))
    for condition in ("same", "different"):
        with pytest.raises(ValueError, match="true_negatives .* condition") as error:
            draw_tuples(world, 10, torch.Generator(), condition=condition, true_negatives=True)
        assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="at least two classes with positive prior"):
        draw_tuples(_world(as_prior([0.0, 1.0, 0.0, 0.0, 0.0], 5)), 10, torch.Generator(), true_negatives=True)


def test_other_classes_keep_the_shape_and_avoid_each_entry():
    classes = torch.tensor([[0, 1, 2], [2, 2, 0]])
    other = sample_other_classes(as_prior("uniform", 3), classes, torch.Generator().manual_seed(0))
    assert other.shape == classes.shape and not (other == classes).any()
