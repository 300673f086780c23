"""Spearman's rank correlation between two paired series, with a cluster bootstrap CI.

The interface question of [FM21] (THEORY.md section 1) asks whether a lower pretraining loss goes
with a lower minimal adaptation loss. Its points are not independent: the checkpoints of one run
share a seed, a world and a training path. The bootstrap therefore resamples *clusters* (runs), and
keeps the points of a cluster together; with one point per cluster it is the ordinary bootstrap.

Rules (what ``rank_correlation`` returns in each case):

- ρ is Pearson's correlation of the average ranks (ties get the mean of the ranks they span, as
  ``scipy.stats.spearmanr``). It is undefined (``value`` NaN, with a ``note``) with fewer than
  MIN_POINTS points or when either series is constant.
- The interval is the percentile interval of ρ over ``resamples`` cluster resamples drawn from the
  generator passed in: ``generator.integers(0, G, size=(resamples, G))`` for G clusters, each row
  one resample's clusters. A resample in which either series is constant has no ρ; it is left out
  and counted (``degenerate``), and the note says how many.
- With fewer than MIN_CLUSTERS clusters there is no interval (``lower``, ``upper`` NaN, with a note):
  two clusters resample into at most three distinct data sets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from preadapt.estimate.estimate import Estimate

MIN_POINTS = 3
"""Fewer points than this: no correlation (two points are always perfectly ranked)."""

MIN_CLUSTERS = 3
"""Fewer clusters than this: no bootstrap interval."""

METHOD = "cluster_bootstrap"
"""The ``method`` of the interval: percentile interval over cluster resamples."""


@dataclass(frozen=True)
class RankCorrelation:
    """Spearman's ρ of two paired series with its percentile cluster-bootstrap interval.

    ``points``: pairs (x_i, y_i); ``clusters``: the resampling units they fall into; ``resamples``:
    bootstrap draws made (0 when there is no interval to draw), of which ``degenerate`` had a constant
    series and were left out. ``lower`` and ``upper`` are NaN when there is no interval, ``value`` NaN
    when ρ is undefined; ``note`` says why ("" otherwise).
    """

    value: float
    lower: float
    upper: float
    level: float
    points: int
    clusters: int
    resamples: int
    degenerate: int
    note: str = ""

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.lower) and math.isfinite(self.upper)

    def as_estimate(self) -> Estimate:
        """As an ``Estimate`` (method ``cluster_bootstrap``, ``n`` = clusters, the independent units).

        >>> RankCorrelation(0.5, 0.1, 0.8, 0.95, 12, 4, 1000, 0).as_estimate()
        Estimate(value=0.5, lower=0.1, upper=0.8, n=4, level=0.95, method='cluster_bootstrap', se=None, df=None)
        """
        return Estimate(self.value, self.lower, self.upper, self.clusters, self.level, METHOD)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``values``, ties given the mean of the ranks they span (``scipy.stats.rankdata``).

    >>> average_ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist()
    [3.5, 1.0, 3.5, 2.0]
    """
    return _weighted_ranks(np.asarray(values, float), np.ones((1, len(values))))[0]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's ρ of the paired series ``x``, ``y`` (shape (n,)): Pearson's correlation of their
    average ranks; NaN when n < 2 or either series is constant.

    >>> spearman(np.array([1.0, 2.0, 3.0, 4.0]), np.array([10.0, 30.0, 20.0, 40.0]))
    0.8
    """
    x, y = _paired(x, y)
    if len(x) < 2:
        return math.nan
    return float(_weighted_spearman(x, y, np.ones((1, len(x))))[0])


def cluster_codes(clusters: np.ndarray | list | None, points: int) -> np.ndarray:
    """Each point's cluster as an integer 0..G−1, in order of first appearance (None: one cluster per point).

    >>> cluster_codes(["b", "a", "b"], 3).tolist(), cluster_codes(None, 3).tolist()
    ([0, 1, 0], [0, 1, 2])
    """
    if clusters is None:
        return np.arange(points)
    labels = list(clusters)
    if len(labels) != points:
        raise ValueError(f"clusters must give one label per point; got {len(labels)} labels for {points} points")
    first: dict[object, int] = {}
    return np.array([first.setdefault(label, len(first)) for label in labels], dtype=np.int64)


def rank_correlation(x: np.ndarray, y: np.ndarray, clusters: np.ndarray | list | None = None, *,
                     generator: np.random.Generator, level: float = 0.95,
                     resamples: int = 2000) -> RankCorrelation:
    """Spearman's ρ of the paired series ``x``, ``y`` (shape (n,)) with a percentile bootstrap interval
    at ``level`` that resamples ``clusters`` (one label per point; None: each point its own cluster).

    Each resample draws G clusters with replacement (``generator.integers(0, G, size=(resamples, G))``)
    and takes all the points of each drawn cluster, as often as it is drawn; its ρ is Spearman's on
    those points (repeated points tie). The rules for too few points or clusters, constant series and
    degenerate resamples are in the module's docstring.

    >>> x = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    >>> y = np.array([1.1, 1.9, 3.2, 2.8, 5.5, 6.1])
    >>> runs = ["a", "a", "b", "b", "c", "c"]
    >>> result = rank_correlation(x, y, runs, generator=np.random.default_rng(0), resamples=200)
    >>> round(result.value, 4), result.points, result.clusters, result.lower <= result.value <= result.upper
    (0.9429, 6, 3, True)
    """
    x, y = _paired(x, y)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1; got {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be ≥ 1; got {resamples}")
    codes = cluster_codes(clusters, len(x))
    count = int(codes.max()) + 1 if len(codes) else 0
    nan = math.nan

    def result(value: float, lower: float = nan, upper: float = nan, drawn: int = 0, degenerate: int = 0,
               note: str = "") -> RankCorrelation:
        return RankCorrelation(value, lower, upper, float(level), len(x), count, drawn, degenerate, note)

    if len(x) < MIN_POINTS:
        return result(nan, note=f"{len(x)} point{'s' if len(x) != 1 else ''}: a rank correlation needs at least "
                                f"{MIN_POINTS}")
    constant = [name for name, series in (("x", x), ("y", y)) if np.ptp(series) == 0.0]
    if constant:
        return result(nan, note=f"{' and '.join(constant)} {'is' if len(constant) == 1 else 'are'} the same at "
                                f"every point: no ranks to correlate")
    value = spearman(x, y)
    if count < MIN_CLUSTERS:
        return result(value, note=f"{count} cluster{'s' if count != 1 else ''}: a bootstrap interval needs at least "
                                  f"{MIN_CLUSTERS}")
    drawn = generator.integers(0, count, size=(resamples, count))  # (B, G): the clusters of each resample
    # A resample as multiplicities: point i counts as often as its cluster was drawn.
    multiplicity = np.zeros((resamples, count))
    np.add.at(multiplicity, (np.arange(resamples)[:, None], drawn), 1.0)
    weights = multiplicity[:, codes]  # (B, n)
    rhos = _weighted_spearman(x, y, weights)
    kept = rhos[np.isfinite(rhos)]
    degenerate = resamples - len(kept)
    note = (f"{degenerate} of {resamples} resamples had a constant series and were left out" if degenerate else "")
    if len(kept) == 0:
        return result(value, drawn=resamples, degenerate=degenerate, note=note)
    alpha = 1.0 - level
    lower, upper = np.quantile(kept, [alpha / 2.0, 1.0 - alpha / 2.0])
    return result(value, float(lower), float(upper), resamples, degenerate, note)


def _paired(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, float).ravel(), np.asarray(y, float).ravel()
    if len(x) != len(y):
        raise ValueError(f"x and y must be paired; got {len(x)} and {len(y)} values")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("x and y must be finite; drop the points with a missing value first")
    return x, y


def _weighted_ranks(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average ranks of ``values`` (n,) in the sample where point j appears ``weights[b, j]`` times,
    for every row b of ``weights`` (B, n): (B, n). A point's rank is the count of points below it
    plus (the count of points equal to it, itself included, + 1)/2."""
    below = (values[None, :] < values[:, None]).astype(float)  # (n, n): [i, j] = x_j < x_i
    equal = (values[None, :] == values[:, None]).astype(float)
    return weights @ below.T + (weights @ equal.T + 1.0) / 2.0


def _weighted_spearman(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Spearman's ρ of each weighted sample (rows of ``weights``, (B, n)): the weighted Pearson
    correlation of the weighted average ranks; NaN where either series is constant in the sample."""
    rx, ry = _weighted_ranks(x, weights), _weighted_ranks(y, weights)  # (B, n)
    total = weights.sum(axis=1, keepdims=True)
    dx = rx - (weights * rx).sum(axis=1, keepdims=True) / total
    dy = ry - (weights * ry).sum(axis=1, keepdims=True) / total
    sxx, syy, sxy = ((weights * a * b).sum(axis=1) for a, b in ((dx, dx), (dy, dy), (dx, dy)))
    # Ranks are multiples of 1/2, so a constant series gives a spread of exactly 0 (up to rounding).
    defined = (sxx > 1e-9) & (syy > 1e-9)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(defined, sxy / np.sqrt(np.where(defined, sxx * syy, 1.0)), np.nan)
    return np.clip(rho, -1.0, 1.0)
