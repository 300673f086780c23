"""Spearman's ρ and its cluster bootstrap (estimate/rank.py) against oracles: scipy.stats.spearmanr on
fixed data (ties included), and a slow loop that rebuilds every resample point by point and asks
scipy for its ρ (the same resamples must give the same interval)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from preadapt.estimate.rank import (
    METHOD,
    MIN_CLUSTERS,
    average_ranks,
    cluster_codes,
    rank_correlation,
    spearman,
)

FIXED_X = np.array([0.81, 0.79, 0.93, 0.64, 0.70, 0.88, 0.75, 0.66, 0.91, 0.72, 0.85, 0.69])
FIXED_Y = np.array([0.52, 0.50, 0.61, 0.40, 0.47, 0.49, 0.45, 0.44, 0.66, 0.41, 0.57, 0.43])
TIED_X = np.array([1.0, 2.0, 2.0, 3.0, 4.0, 4.0, 4.0, 5.0, 6.0])
TIED_Y = np.array([2.0, 1.0, 3.0, 3.0, 5.0, 4.0, 5.0, 7.0, 7.0])


@pytest.mark.parametrize("x, y", [(FIXED_X, FIXED_Y), (TIED_X, TIED_Y), (FIXED_X, -FIXED_Y),
                                  (np.arange(5.0), np.array([3.0, 3.0, 1.0, 0.0, 3.0]))])
def test_spearman_equals_scipy(x, y):
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert rank_correlation(x, y, generator=np.random.default_rng(0), resamples=10).value == pytest.approx(
        stats.spearmanr(x, y).statistic, abs=1e-12)


def test_average_ranks_equal_scipy_rankdata():
    assert np.array_equal(average_ranks(TIED_Y), stats.rankdata(TIED_Y))


def test_spearman_is_symmetric_and_invariant_under_monotone_maps():
    assert spearman(FIXED_X, FIXED_Y) == pytest.approx(spearman(FIXED_Y, FIXED_X), abs=1e-15)
    assert spearman(np.exp(FIXED_X), FIXED_Y ** 3) == pytest.approx(spearman(FIXED_X, FIXED_Y), abs=1e-12)
    assert spearman(FIXED_X, -FIXED_Y) == pytest.approx(-spearman(FIXED_X, FIXED_Y), abs=1e-12)


def reference_interval(x, y, clusters, seed, level, resamples):
    """The slow reference: the same draws as the documented ``generator.integers(0, G, size=(B, G))``,
    each resample's points gathered cluster by cluster in a loop, ρ from scipy."""
    codes = cluster_codes(clusters, len(x))
    count = codes.max() + 1
    members = [np.flatnonzero(codes == g) for g in range(count)]
    drawn = np.random.default_rng(seed).integers(0, count, size=(resamples, count))
    rhos = []
    for row in drawn:
        index = np.concatenate([members[g] for g in row])
        xs, ys = x[index], y[index]
        if np.ptp(xs) == 0 or np.ptp(ys) == 0:
            continue  # a constant series: no ρ, left out
        rhos.append(stats.spearmanr(xs, ys).statistic)
    alpha = 1 - level
    return np.quantile(rhos, [alpha / 2, 1 - alpha / 2]), resamples - len(rhos)


@pytest.mark.parametrize("clusters", [
    None,                                                   # each point its own cluster
    ["r0"] * 3 + ["r1"] * 3 + ["r2"] * 3 + ["r3"] * 3,      # 4 runs of 3 checkpoints
    ["a", "b", "a", "c", "b", "c", "d", "d", "e", "e", "a", "c"],  # interleaved, unequal sizes
])
@pytest.mark.parametrize("level", [0.95, 0.8])
def test_the_bootstrap_equals_a_slow_reference_loop(clusters, level):
    result = rank_correlation(FIXED_X, FIXED_Y, clusters, generator=np.random.default_rng(11), level=level,
                              resamples=400)
    (lower, upper), degenerate = reference_interval(FIXED_X, FIXED_Y, clusters, 11, level, 400)
    assert (result.lower, result.upper) == (pytest.approx(lower, abs=1e-12), pytest.approx(upper, abs=1e-12))
    assert result.degenerate == degenerate and result.resamples == 400
    assert result.points == 12 and result.clusters == (12 if clusters is None else len(set(clusters)))
    assert result.level == level and result.lower <= result.value <= result.upper


def test_ties_in_the_data_and_degenerate_resamples_match_the_reference():
    """Three clusters: a ninth of the resamples draw one cluster three times (one point value each
    way here: constant), and are left out and counted, as in the reference."""
    x, y = np.array([1.0, 2.0, 3.0]), np.array([1.0, 3.0, 2.0])
    result = rank_correlation(x, y, generator=np.random.default_rng(3), resamples=900)
    (lower, upper), degenerate = reference_interval(x, y, None, 3, 0.95, 900)
    assert degenerate > 0 and result.degenerate == degenerate
    assert f"{degenerate} of 900 resamples" in result.note
    assert (result.lower, result.upper) == (pytest.approx(lower, abs=1e-12), pytest.approx(upper, abs=1e-12))
    tied = rank_correlation(TIED_X, TIED_Y, [0, 0, 1, 1, 2, 2, 3, 3, 3], generator=np.random.default_rng(5),
                            resamples=300)
    (lower, upper), _ = reference_interval(TIED_X, TIED_Y, [0, 0, 1, 1, 2, 2, 3, 3, 3], 5, 0.95, 300)
    assert (tied.lower, tied.upper) == (pytest.approx(lower, abs=1e-12), pytest.approx(upper, abs=1e-12))


def test_the_same_generator_seed_gives_the_same_interval_and_another_seed_another():
    def run(seed):
        return rank_correlation(FIXED_X, FIXED_Y, generator=np.random.default_rng(seed), resamples=300)
    assert run(1) == run(1)
    assert (run(1).lower, run(1).upper) != (run(2).lower, run(2).upper)


def test_a_clear_monotone_relation_gives_an_interval_away_from_zero_and_noise_one_around_it():
    rng = np.random.default_rng(0)
    x = np.linspace(0.0, 1.0, 30)
    rising = rank_correlation(x, x + 0.02 * rng.standard_normal(30), generator=np.random.default_rng(0))
    falling = rank_correlation(x, -x + 0.02 * rng.standard_normal(30), generator=np.random.default_rng(0))
    noise = rank_correlation(x, rng.standard_normal(30), generator=np.random.default_rng(0))
    assert rising.lower > 0.8 and falling.upper < -0.8
    assert noise.lower < 0.0 < noise.upper


def test_too_few_points_a_constant_series_and_too_few_clusters_say_so():
    rng = np.random.default_rng(0)
    two = rank_correlation([1.0, 2.0], [1.0, 2.0], generator=rng)
    assert math.isnan(two.value) and not two.has_interval and "needs at least 3" in two.note and two.points == 2
    constant = rank_correlation([1.0, 2.0, 3.0], [5.0, 5.0, 5.0], generator=rng)
    assert math.isnan(constant.value) and "y is the same at every point" in constant.note
    few = rank_correlation(FIXED_X, FIXED_Y, ["a"] * 6 + ["b"] * 6, generator=rng)
    assert few.value == pytest.approx(stats.spearmanr(FIXED_X, FIXED_Y).statistic, abs=1e-12)
    assert not few.has_interval and few.clusters == 2 < MIN_CLUSTERS and few.resamples == 0
    assert "2 clusters" in few.note


def test_as_estimate_counts_the_clusters():
    result = rank_correlation(FIXED_X, FIXED_Y, [i // 3 for i in range(12)], generator=np.random.default_rng(0),
                              resamples=100)
    estimate = result.as_estimate()
    assert (estimate.value, estimate.lower, estimate.upper) == (result.value, result.lower, result.upper)
    assert estimate.n == 4 and estimate.method == METHOD and estimate.level == 0.95


@pytest.mark.parametrize("kwargs, message", [
    (dict(x=[1.0, 2.0, 3.0], y=[1.0, 2.0]), "x and y must be paired; got 3 and 2 values"),
    (dict(x=[1.0, float("nan"), 3.0], y=[1.0, 2.0, 3.0]), "x and y must be finite"),
    (dict(x=[1.0, 2.0, 3.0], y=[1.0, 2.0, 3.0], clusters=["a"]), "one label per point; got 1 labels for 3 points"),
    (dict(x=[1.0, 2.0, 3.0], y=[1.0, 2.0, 3.0], level=1.0), "level must lie strictly between 0 and 1; got 1.0"),
    (dict(x=[1.0, 2.0, 3.0], y=[1.0, 2.0, 3.0], resamples=0), "resamples must be ≥ 1; got 0"),
])
def test_bad_inputs_say_how_to_fix_them(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        rank_correlation(generator=np.random.default_rng(0), **kwargs)
