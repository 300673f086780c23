"""Exact AVG-k and TOP-R (THEORY.md section 4) against task enumeration and independent loops."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import balanced_accuracy_score, top_k_accuracy_score

from preadapt.estimate.avg_k import (
    avg_k_accuracy,
    avg_k_class_weights,
    avg_k_estimate,
    avg_k_point_probabilities,
    beaten_mask,
    class_weighted_estimate,
    top_r_accuracy,
    top_r_estimate,
    top_r_point_hits,
)

# ---------------------------------------------------------------- oracles (plain loops, no shortcuts)


def brute_avg_k(scores: np.ndarray, labels: np.ndarray, k: int, prior=None) -> float:
    """Enumerate every k-subset task, P(T) ∝ Π ρ(c): class-balanced restricted accuracy, ties = errors."""
    classes = scores.shape[1]
    rho = np.ones(classes) if prior is None else np.asarray(prior, dtype=np.float64)
    total, norm = 0.0, 0.0
    for task in itertools.combinations(range(classes), k):
        weight = math.prod(rho[c] for c in task)
        if weight == 0.0:
            continue
        per_class = []
        for a in task:
            points = [i for i in range(len(labels)) if labels[i] == a]
            correct = 0
            for i in points:
                if all(scores[i, b] < scores[i, a] for b in task if b != a):
                    correct += 1
            per_class.append(correct / len(points))
        total += weight * sum(per_class) / k
        norm += weight
    return total / norm


def brute_top_r(scores: np.ndarray, labels: np.ndarray, r: int, prior=None) -> float:
    """Class a's point is a hit iff fewer than r other classes score ≥ it (every tie-break loses)."""
    classes = scores.shape[1]
    rho = np.full(classes, 1.0 / classes) if prior is None else np.asarray(prior) / np.sum(prior)
    value = 0.0
    for a in range(classes):
        if rho[a] == 0.0:
            continue
        hits = []
        for i in np.flatnonzero(labels == a):
            at_least = sum(1 for b in range(classes) if b != a and scores[i, b] >= scores[i, a])
            hits.append(at_least < r)
        value += rho[a] * np.mean(hits)
    return value


def random_world(rng: np.random.Generator, classes: int, ties: bool, max_per_class: int = 5):
    """Unequal test counts per class (1..max) and scores with a class signal, optionally tied."""
    counts = rng.integers(1, max_per_class + 1, size=classes)
    labels = np.repeat(np.arange(classes), counts)
    rng.shuffle(labels)
    scores = rng.normal(size=(labels.size, classes)) + 1.5 * np.eye(classes)[labels]
    if ties:
        scores = np.round(scores)  # few distinct integers: many exact ties
    return scores, labels


def random_prior(rng: np.random.Generator, classes: int, k: int, zeros: bool) -> np.ndarray:
    prior = rng.gamma(0.7, size=classes)
    if zeros:
        off = rng.choice(classes, size=classes - k, replace=False)[: rng.integers(0, classes - k + 1)]
        prior[off] = 0.0
    return prior


# ---------------------------------------------------------------- exactness against enumeration


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", [True, False])
def test_uniform_matches_enumeration(k, seed, ties):
    rng = np.random.default_rng([k, seed, ties])
    scores, labels = random_world(rng, int(rng.integers(k, 13)), ties)
    exact = avg_k_accuracy(torch.as_tensor(scores), torch.as_tensor(labels), k)
    # sums of ≤ C(12, 5) = 792 terms in [0, 1] (≲ 792·ε ≈ 2e-13); one wrong point moves it by ≳ 1e-3
    assert exact == pytest.approx(brute_avg_k(scores, labels, k), abs=1e-9)


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("zeros", [False, True])
def test_prior_matches_enumeration(k, seed, zeros):
    rng = np.random.default_rng([k, seed, zeros, 1])
    classes = int(rng.integers(k, 13))
    scores, labels = random_world(rng, classes, ties=True)
    prior = random_prior(rng, classes, k, zeros)
    if zeros:  # classes no task can contain need no test points
        keep = prior[labels] > 0
        scores, labels = scores[keep], labels[keep]
    exact = avg_k_accuracy(torch.as_tensor(scores), torch.as_tensor(labels), k, prior=prior)
    assert exact == pytest.approx(brute_avg_k(scores, labels, k, prior), abs=1e-9)


@pytest.mark.parametrize("k", [2, 4])
def test_point_probability_is_the_conditional_over_tasks(k):
    """p(x) = Σ_{T∋a} P(T)·1[x right in T] / Σ_{T∋a} P(T), by enumeration, with and without ρ."""
    rng = np.random.default_rng(k)
    classes = 7
    scores, labels = random_world(rng, classes, ties=True)
    for prior in (None, random_prior(rng, classes, k, zeros=False)):
        rho = np.ones(classes) if prior is None else prior
        got = avg_k_point_probabilities(scores, labels, k, prior=prior).numpy()
        for i, a in enumerate(labels):
            right, norm = 0.0, 0.0
            for task in itertools.combinations(range(classes), k):
                if a in task:
                    weight = math.prod(rho[c] for c in task)
                    norm += weight
                    right += weight * all(scores[i, b] < scores[i, a] for b in task if b != a)
            assert got[i] == pytest.approx(right / norm, abs=1e-12)


def test_uniform_prior_path_equals_combinatorial_path():
    rng = np.random.default_rng(0)
    scores, labels = random_world(rng, 40, ties=True, max_per_class=8)
    for k in (2, 7, 40):
        exact = avg_k_point_probabilities(scores, labels, k)
        via_dp = avg_k_point_probabilities(scores, labels, k, prior=np.full(40, 3.0))
        # the DP only adds and multiplies nonnegative numbers: ≤ 2C roundings, ≤ 2·40·ε ≈ 1.8e-14
        # relative for e_{k−1} of each side, ≲ 3.6e-14 for their ratio; the table is correctly rounded
        torch.testing.assert_close(via_dp, exact, rtol=1e-12, atol=1e-14)


def test_uniform_probabilities_are_exact_binomial_ratios():
    classes, k = 3029, 10
    scores = torch.arange(classes, dtype=torch.float64).repeat(3, 1)  # point of class a beats a classes
    labels = torch.tensor([8, 9, 3028])
    got = avg_k_point_probabilities(scores, labels, k).tolist()
    assert got[0] == 0.0
    assert got[1] == 1 / math.comb(classes - 1, k - 1)  # int / int: the float nearest the exact ratio
    assert got[2] == 1.0


@pytest.mark.parametrize("k", [10, 300])
def test_prior_path_neither_overflows_nor_underflows_at_wiki_scale(k):
    """Equal prior weights on C = 3029 classes must reproduce the exact binomial ratios."""
    classes = 3029
    labels = torch.tensor([k - 1, 1000, 2000, 3027, 3028])
    scores = torch.arange(classes, dtype=torch.float64).repeat(labels.numel(), 1)  # m(x) = label
    exact = avg_k_point_probabilities(scores, labels, k)
    via_dp = avg_k_point_probabilities(scores, labels, k, prior=np.ones(classes))
    assert torch.isfinite(via_dp).all()
    # nonnegative DP over C = 3029 classes: ≤ 2C roundings per e_j, ≲ 2·2·3029·ε ≈ 2.7e-12 for the ratio
    torch.testing.assert_close(via_dp, exact, rtol=1e-9, atol=1e-300)
    assert via_dp[-1] == pytest.approx(1.0, abs=1e-12)


def test_class_weights_sum_to_one_and_are_inclusion_probabilities():
    rng = np.random.default_rng(1)
    classes, k = 8, 3
    prior = random_prior(rng, classes, k, zeros=True)
    weights = avg_k_class_weights(classes, k, prior)
    assert weights.sum() == pytest.approx(1.0, abs=1e-12)
    tasks = list(itertools.combinations(range(classes), k))
    task_weight = np.array([math.prod(prior[c] for c in t) for t in tasks])
    for a in range(classes):
        inclusion = task_weight[[a in t for t in tasks]].sum() / task_weight.sum()
        assert weights[a] == pytest.approx(inclusion / k, abs=1e-12)


def test_k_equals_c_is_full_balanced_accuracy():
    rng = np.random.default_rng(2)
    classes = 9
    scores, labels = random_world(rng, classes, ties=False, max_per_class=30)
    predicted = scores.argmax(axis=1)
    expected = balanced_accuracy_score(labels, predicted)
    assert avg_k_accuracy(scores, labels, classes) == pytest.approx(expected, abs=1e-12)
    # the only task is all classes, whatever the (positive) prior
    prior = random_prior(rng, classes, classes, zeros=False)
    assert avg_k_accuracy(scores, labels, classes, prior=prior) == pytest.approx(expected, abs=1e-12)
    tied = np.round(scores)
    top_1 = top_r_accuracy(tied, labels, 1)
    assert avg_k_accuracy(tied, labels, classes) == pytest.approx(top_1, abs=1e-12)


def test_avg_k_non_increasing_in_k():
    rng = np.random.default_rng(3)
    scores, labels = random_world(rng, 10, ties=True)
    values = [avg_k_accuracy(scores, labels, k) for k in range(2, 11)]
    assert all(b <= a + 1e-12 for a, b in zip(values, values[1:]))


def test_blocks_numpy_and_torch_agree():
    rng = np.random.default_rng(4)
    scores, labels = random_world(rng, 11, ties=True)
    prior = random_prior(rng, 11, 3, zeros=False)
    for p in (None, prior):
        whole = avg_k_point_probabilities(torch.as_tensor(scores), torch.as_tensor(labels), 3, prior=p)
        blocked = avg_k_point_probabilities(scores, labels, 3, prior=p, block=3)
        # p(x) of a row takes only elementwise operations on that row, whatever the block: bitwise equal
        torch.testing.assert_close(blocked, whole, rtol=0, atol=1e-15)
    assert torch.equal(top_r_point_hits(scores, labels, 2, block=4), top_r_point_hits(scores, labels, 2))


def test_streamed_blocks_give_the_same_estimate():
    rng = np.random.default_rng(5)
    scores, labels = random_world(rng, 12, ties=True, max_per_class=20)
    prior = random_prior(rng, 12, 4, zeros=False)
    starts = range(0, len(labels), 17)
    values = torch.cat(
        [avg_k_point_probabilities(scores[s : s + 17], labels[s : s + 17], 4, prior) for s in starts]
    )
    streamed = class_weighted_estimate(values, labels, avg_k_class_weights(12, 4, prior), 0.9)
    # exact: each row's p(x) is elementwise work on that row alone, and the same values then go
    # through the same class_weighted_estimate
    assert streamed == avg_k_estimate(scores, labels, 4, prior=prior, level=0.9)


def test_beaten_mask_is_strict():
    scores = torch.tensor([[1.0, 1.0, 0.0, 2.0]])
    assert beaten_mask(scores, torch.tensor([0])).tolist() == [[False, False, True, False]]


# ---------------------------------------------------------------- TOP-R


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("r", [1, 2, 4])
def test_top_r_matches_loop(seed, r):
    rng = np.random.default_rng([seed, r])
    classes = int(rng.integers(r, 12))
    scores, labels = random_world(rng, classes, ties=True)
    assert top_r_accuracy(scores, labels, r) == pytest.approx(brute_top_r(scores, labels, r), abs=1e-12)
    prior = random_prior(rng, classes, 1, zeros=False)
    assert top_r_accuracy(scores, labels, r, prior=prior) == pytest.approx(
        brute_top_r(scores, labels, r, prior), abs=1e-12
    )


def test_top_r_matches_sklearn_without_ties():
    rng = np.random.default_rng(6)
    classes = 15
    labels = np.repeat(np.arange(classes), 20)  # equal counts: class-balanced = pooled
    scores = rng.normal(size=(labels.size, classes)) + np.eye(classes)[labels]
    for r in (1, 3, 5):
        assert top_r_accuracy(scores, labels, r) == pytest.approx(
            top_k_accuracy_score(labels, scores, k=r, labels=np.arange(classes)), abs=1e-12
        )
    assert top_r_accuracy(scores, labels, classes) == pytest.approx(1.0, abs=1e-12)


# ---------------------------------------------------------------- intervals


def test_interval_contains_value_and_shrinks_with_more_points():
    rng = np.random.default_rng(7)
    widths = []
    for per_class in (10, 1000):
        labels = np.repeat(np.arange(10), per_class)
        scores = rng.normal(size=(labels.size, 10)) + np.eye(10)[labels]
        for estimate in (avg_k_estimate(scores, labels, 3), top_r_estimate(scores, labels, 2)):
            assert estimate.lower <= estimate.value <= estimate.upper
            assert estimate.n == labels.size and estimate.level == 0.95
        prior = rng.gamma(1.0, size=10)
        weighted = avg_k_estimate(scores, labels, 3, prior=prior)
        assert weighted.lower <= weighted.value <= weighted.upper
        assert weighted.value == avg_k_accuracy(scores, labels, 3, prior=prior)
        widths.append(avg_k_estimate(scores, labels, 3).half_width)
    assert widths[1] < widths[0] / 5


def test_interval_covers_the_population_value():
    """Sub-sampled test sets: the 90% interval covers the population AVG-3 near 90% of the time."""
    rng = np.random.default_rng(8)
    classes, population = 8, 3000
    labels = np.repeat(np.arange(classes), population)
    scores = rng.normal(size=(labels.size, classes)) + 0.8 * np.eye(classes)[labels]
    truth = avg_k_accuracy(scores, labels, 3)
    covered = 0
    trials = 300
    for _ in range(trials):
        pick = np.concatenate(
            [rng.choice(np.flatnonzero(labels == a), 25, replace=False) for a in range(classes)]
        )
        estimate = avg_k_estimate(scores[pick], labels[pick], 3, level=0.9)
        covered += estimate.lower <= truth <= estimate.upper
    assert 0.84 <= covered / trials <= 0.96


# ---------------------------------------------------------------- errors at the boundary


def test_bad_inputs_say_how_to_fix_them():
    scores = np.zeros((4, 3))
    labels = np.array([0, 1, 2, 2])
    with pytest.raises(ValueError, match=r"k must be in \[2, C\] = \[2, 3\].*got 1"):
        avg_k_accuracy(scores, labels, 1)
    with pytest.raises(ValueError, match=r"k must be in \[2, C\].*got 4"):
        avg_k_accuracy(scores, labels, 4)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        avg_k_accuracy(scores, np.array([0, 1, 3, 2]), 2)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        avg_k_accuracy(scores, np.array([0, -1, 1, 2]), 2)
    with pytest.raises(ValueError, match="1-d integer"):
        avg_k_accuracy(scores, labels.astype(float), 2)
    with pytest.raises(ValueError, match=r"labels has 3 entries but scores has 4 rows"):
        avg_k_accuracy(scores, labels[:3], 2)
    with pytest.raises(ValueError, match=r"classes \[2\] have positive weight .* no test point"):
        avg_k_accuracy(scores, np.array([0, 1, 1, 0]), 2)
    with pytest.raises(ValueError, match=r"classes \[1\] have positive weight"):
        avg_k_accuracy(scores, np.array([0, 2, 2, 0]), 2, prior=[0.5, 0.1, 0.4])
    # zero prior weight: the class may lack test points
    assert avg_k_accuracy(scores, np.array([0, 2, 2, 0]), 2, prior=[0.5, 0.0, 0.5]) == 0.0
    with pytest.raises(ValueError, match="positive weight on 2 classes; a 3-class task needs at least 3"):
        avg_k_accuracy(scores, labels, 3, prior=[0.5, 0.0, 0.5])
    with pytest.raises(ValueError, match=r"classes \[1\] have positive weight"):
        top_r_accuracy(scores, np.array([0, 2, 2, 0]), 1, prior={"zipf": 1.0})
    assert top_r_accuracy(scores, np.array([0, 2, 2, 0]), 1, prior=[0.5, 0.0, 0.5]) == 0.0
    with pytest.raises(ValueError, match=r"r must be in \[1, C\] = \[1, 3\]; got 0"):
        top_r_accuracy(scores, labels, 0)
    with pytest.raises(ValueError, match=r"scores must be \(N, C\)"):
        avg_k_accuracy(np.zeros(4), labels, 2)


# ---------------------------------------------------------------- properties


@settings(derandomize=True, max_examples=60, deadline=None, database=None)
@given(
    classes=st.integers(2, 7),
    data=st.data(),
    seed=st.integers(0, 2**32 - 1),
    with_prior=st.booleans(),
)
def test_invariant_under_relabelling(classes, data, seed, with_prior):
    k = data.draw(st.integers(2, classes), label="k")
    permutation = np.array(data.draw(st.permutations(range(classes)), label="permutation"))
    rng = np.random.default_rng(seed)
    scores, labels = random_world(rng, classes, ties=True)
    prior = rng.gamma(0.7, size=classes) + 1e-3 if with_prior else None
    # class c becomes class permutation[c]: column c moves to column permutation[c]
    new_scores = np.empty_like(scores)
    new_scores[:, permutation] = scores
    new_prior = None
    if with_prior:
        new_prior = np.empty_like(prior)
        new_prior[permutation] = prior
    before = avg_k_accuracy(scores, labels, k, prior=prior)
    after = avg_k_accuracy(new_scores, permutation[labels], k, prior=new_prior)
    assert after == pytest.approx(before, abs=1e-12)
    assert top_r_accuracy(new_scores, permutation[labels], 1, prior=new_prior) == pytest.approx(
        top_r_accuracy(scores, labels, 1, prior=prior), abs=1e-12
    )


# ---------------------------------------------------------------- scale


def test_wiki_3029_scale_smoke():
    """C = 3029, 40 points per class, k = 10: finite, in [0, 1], and equal to sampled tasks. (Its speed
    is a ratio in benchmarks/bench_avg_k.py, never a wall-clock bound here.)"""
    generator = torch.Generator().manual_seed(0)
    classes, per_class, k = 3029, 40, 10
    labels = torch.arange(classes).repeat_interleave(per_class)
    means = torch.randn(classes, 16, generator=generator)
    embeddings = means[labels] * 0.3 + torch.randn(labels.numel(), 16, generator=generator)
    scores = embeddings @ means.T  # (N, C)
    estimate = avg_k_estimate(scores, labels, k)
    assert 0.0 <= estimate.lower <= estimate.value <= estimate.upper <= 1.0
    assert math.isfinite(estimate.se) and estimate.se > 0
    # a Monte-Carlo check over sampled tasks (class-balanced restricted accuracy, ties = errors)
    rng = np.random.default_rng(0)
    by_class = torch.arange(labels.numel()).view(classes, per_class)  # (C, 40) row indices by class
    sampled = []
    for _ in range(400):
        task = torch.as_tensor(rng.choice(classes, size=k, replace=False))
        rows = by_class[task].reshape(-1)  # (k·40,)
        restricted = scores[rows][:, task]  # (k·40, k)
        own = restricted[torch.arange(rows.numel()), torch.arange(k).repeat_interleave(per_class)]
        wins = (restricted < own[:, None]).sum(dim=1) == k - 1
        sampled.append(wins.double().mean().item())
    sampled = np.array(sampled)
    assert abs(sampled.mean() - estimate.value) < 4 * sampled.std(ddof=1) / math.sqrt(sampled.size)
