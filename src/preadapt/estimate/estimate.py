"""The Estimate every number of preadapt is reported as, and the intervals that build it."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Iterable

import numpy as np
import torch
from scipy import stats

TIE_TOLERANCE = 1e-9
"""Numeric tolerance for exact ties in float64 (a constant f gives L_un^= = 1 exactly)."""


@dataclass(frozen=True)
class Estimate:
    """A number with a confidence interval: ``value`` in ``[lower, upper]`` at ``level``.

    ``n`` is the number of independent observations behind it (None for exact values) and
    ``method`` names the interval: ``exact`` (lower = upper = value), ``t`` (Student t on a sample
    mean), ``normal`` (a sum of independent normal approximations), ``bootstrap`` (percentile),
    ``empirical`` (an exact mean over a fixed finite set, such as the training tuples),
    ``monte_carlo`` (a Student t interval over i.i.d. Monte Carlo draws, e.g. of Rademacher signs).
    ``se`` is the standard error behind a t/normal interval (None otherwise); it lets independent
    estimates be combined.

    >>> Estimate.exact(0.05)
    Estimate(value=0.05, lower=0.05, upper=0.05, n=None, level=1.0, method='exact', se=0.0)
    """

    value: float
    lower: float
    upper: float
    n: int | None
    level: float
    method: str
    se: float | None = None

    @classmethod
    def exact(cls, value: float) -> "Estimate":
        return cls(float(value), float(value), float(value), None, 1.0, "exact", 0.0)

    @property
    def half_width(self) -> float:
        return 0.5 * (self.upper - self.lower)

    def affine(self, scale: float, shift: float = 0.0) -> "Estimate":
        """The estimate of ``scale · X + shift``; the interval maps exactly.

        >>> Estimate(2.0, 1.0, 3.0, 10, 0.95, "t", 0.5).affine(-1.0, 1.0)
        Estimate(value=-1.0, lower=-2.0, upper=0.0, n=10, level=0.95, method='t', se=0.5)
        """
        ends = sorted((scale * self.lower + shift, scale * self.upper + shift))
        se = None if self.se is None else abs(scale) * self.se
        return replace(self, value=scale * self.value + shift, lower=ends[0], upper=ends[1], se=se)

    def clipped(self, low: float, high: float) -> "Estimate":
        """The interval intersected with the range the quantity can take (an accuracy lies in [0, 1]).

        >>> Estimate(0.99, 0.97, 1.01, 100, 0.95, "t", 0.01).clipped(0.0, 1.0).upper
        1.0
        """
        return replace(self, lower=max(self.lower, low), upper=min(self.upper, high))

    def widened(self, variance: float) -> "Estimate":
        """The estimate with an independent error of ``variance`` added (a normal interval).

        Used for plug-in parts the sample mean does not see, such as the class means μ̂.

        >>> Estimate(1.0, 0.9, 1.1, 100, 0.95, "t", 0.03).widened(0.04 ** 2).se
        0.05
        """
        if variance <= 0.0:
            return self
        if self.se is None:
            raise ValueError(f"cannot widen a {self.method!r} interval")
        se = math.sqrt(self.se**2 + variance)
        half = _critical(self.level, None) * se
        return replace(self, lower=self.value - half, upper=self.value + half, method="normal", se=se)

    def at_level(self, level: float) -> "Estimate":
        """The same t/normal estimate with its interval recomputed at another level."""
        if self.method == "exact":
            return self
        if self.se is None or self.method not in ("t", "normal", "monte_carlo"):
            raise ValueError(f"cannot change the level of a {self.method!r} interval")
        half = _critical(level, None if self.method == "normal" else self.n) * self.se
        return replace(self, lower=self.value - half, upper=self.value + half, level=level)


def _critical(level: float, n: int | None) -> float:
    """Two-sided critical value: Student t with n − 1 degrees of freedom, or normal when n is None."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1); got {level}")
    q = 0.5 + level / 2.0
    if n is None:
        return float(stats.norm.ppf(q))
    return float(stats.t.ppf(q, df=max(n - 1, 1)))


def _to_numpy(values: torch.Tensor | np.ndarray | Iterable[float]) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().to("cpu", torch.float64).numpy().reshape(-1)
    return np.asarray(values, dtype=np.float64).reshape(-1)


def mean_estimate(values, level: float = 0.95) -> Estimate:
    """Sample mean with a Student-t interval over i.i.d. observations.

    >>> e = mean_estimate([1.0, 2.0, 3.0, 4.0], level=0.95)
    >>> e.value, e.n, round(e.lower, 4), round(e.upper, 4)
    (2.5, 4, 0.4457, 4.5543)
    """
    acc = RunningMean()
    acc.update(values)
    return acc.estimate(level)


class RunningMean:
    """Streaming mean and variance (Chan et al.'s parallel update, float64), block by block.

    Memory stays flat in the number of observations; the estimate equals ``mean_estimate`` of all
    observations at once.

    >>> acc = RunningMean(); acc.update([1.0, 2.0]); acc.update([3.0, 4.0])
    >>> acc.estimate(0.95) == mean_estimate([1.0, 2.0, 3.0, 4.0], 0.95)
    True
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0  # sum of squared deviations from the mean

    def update(self, values) -> None:
        block = _to_numpy(values)
        if block.size == 0:
            return
        if not np.all(np.isfinite(block)):
            raise FloatingPointError("non-finite value in an estimate's sample")
        n_b = block.size
        mean_b = float(block.mean())
        m2_b = float(((block - mean_b) ** 2).sum())
        total = self.count + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / total
        self.m2 += m2_b + delta * delta * self.count * n_b / total
        self.count = total

    def estimate(self, level: float = 0.95) -> Estimate:
        if self.count < 2:
            raise ValueError(f"an interval needs at least 2 observations; got {self.count}")
        variance = max(self.m2 / (self.count - 1), 0.0)  # 0 only for an exactly constant sample
        se = math.sqrt(variance / self.count)
        half = _critical(level, self.count) * se
        return Estimate(self.mean, self.mean - half, self.mean + half, self.count, level, "t", se)


def combine(terms: Iterable[tuple[float, Estimate]], shift: float = 0.0, level: float = 0.95,
            dependent: bool = False) -> Estimate:
    """Σ coef_i · X_i + shift for independent t/normal/exact estimates, with a normal interval.

    ``dependent``: the estimates may be correlated in any way (e.g. two encoders measured on the
    same samples); the standard error is then the worst case Σ |coef_i|·se_i instead of the root of
    the sum of squares.

    >>> a = Estimate(1.0, 0.9, 1.1, 100, 0.95, "t", 0.05)
    >>> b = Estimate.exact(0.5)
    >>> e = combine([(1.0, a), (-1.0, b)])
    >>> round(e.value, 6), e.method, round(e.se, 6)
    (0.5, 'normal', 0.05)
    """
    terms = list(terms)
    value = shift
    variance = worst = 0.0
    counts = []
    for coef, est in terms:
        if est.se is None:
            raise ValueError(f"cannot combine a {est.method!r} estimate (no standard error)")
        value += coef * est.value
        variance += (coef * est.se) ** 2
        worst += abs(coef) * est.se
        if est.n is not None:
            counts.append(est.n)
    se = worst if dependent else math.sqrt(variance)
    if all(est.method == "exact" for _, est in terms):
        return Estimate.exact(value)
    half = _critical(level, None) * se
    n = min(counts) if counts else None
    return Estimate(value, value - half, value + half, n, level, "normal", se)


def stratified_mean(
    group_values: list[np.ndarray], weights: np.ndarray, level: float = 0.95
) -> Estimate:
    """Σ_g w_g · mean(group g) with a normal interval: Var = Σ_g w_g² s_g² / n_g.

    Used for class-weighted quantities (AVG-k, TOP-R): the groups are the classes.

    >>> e = stratified_mean([np.array([1.0, 1.0]), np.array([0.0, 0.0])], np.array([0.5, 0.5]))
    >>> e.value, e.lower, e.upper, e.n
    (0.5, 0.5, 0.5, 4)
    """
    weights = np.asarray(weights, dtype=np.float64)
    value = 0.0
    variance = 0.0
    total = 0
    for w, group in zip(weights, group_values):
        group = _to_numpy(group)
        if w == 0.0:
            continue
        if group.size == 0:
            raise ValueError("a group with positive weight has no observations")
        value += w * group.mean()
        if group.size > 1:
            variance += w * w * group.var(ddof=1) / group.size
        total += group.size
    se = math.sqrt(variance)
    half = _critical(level, None) * se
    return Estimate(float(value), float(value - half), float(value + half), total, level, "normal", se)


def bootstrap_estimate(value: float, replicates: np.ndarray, n: int, level: float = 0.95) -> Estimate:
    """A plug-in value with a percentile-bootstrap interval from ``replicates`` of the statistic.

    ``se`` is the bootstrap standard error (the replicates' standard deviation), so the estimate can
    be combined with independent ones in a normal interval at another level.

    >>> e = bootstrap_estimate(1.0, np.array([0.8, 0.9, 1.0, 1.1, 1.2]), n=50, level=0.5)
    >>> round(e.lower, 2), round(e.upper, 2), round(e.se, 4)
    (0.9, 1.1, 0.1581)
    """
    replicates = np.asarray(replicates, dtype=np.float64)
    alpha = (1.0 - level) / 2.0
    lower, upper = np.quantile(replicates, [alpha, 1.0 - alpha])
    se = float(replicates.std(ddof=1)) if replicates.size > 1 else None
    return Estimate(float(value), float(min(lower, value)), float(max(upper, value)), n, level, "bootstrap", se)
