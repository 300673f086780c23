"""The Estimate every number of preadapt is reported as, and the intervals that build it."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Iterable

import numpy as np
import torch

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
    ``cluster`` (a mean over draws with replacement from a finite set of examples, its variance from
    each example's influence: an interval about the distribution the examples came from),
    ``split_half`` (s(f): a lower side from held-out Rayleigh quotients, an upper side from the
    plug-in; see ``estimate.quantities.intraclass_deviation``).
    ``se`` is the standard error behind a t/normal interval (None otherwise); it lets independent
    estimates be combined. ``df`` is the degrees of freedom of the t quantile behind the interval
    (None: a normal quantile, as for a well-estimated variance); combinations take Welch–Satterthwaite
    degrees of freedom, so a part that rests on few observations widens the interval as it should.

    >>> Estimate.exact(0.05)
    Estimate(value=0.05, lower=0.05, upper=0.05, n=None, level=1.0, method='exact', se=0.0, df=None)
    """

    value: float
    lower: float
    upper: float
    n: int | None
    level: float
    method: str
    se: float | None = None
    df: float | None = None

    @classmethod
    def exact(cls, value: float) -> "Estimate":
        return cls(float(value), float(value), float(value), None, 1.0, "exact", 0.0)

    @property
    def half_width(self) -> float:
        return 0.5 * (self.upper - self.lower)

    def affine(self, scale: float, shift: float = 0.0) -> "Estimate":
        """The estimate of ``scale · X + shift``; the interval maps exactly.

        >>> Estimate(2.0, 1.0, 3.0, 10, 0.95, "t", 0.5, 9.0).affine(-1.0, 1.0)
        Estimate(value=-1.0, lower=-2.0, upper=0.0, n=10, level=0.95, method='t', se=0.5, df=9.0)
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

    def widened(self, variance: float, df: float | None = None) -> "Estimate":
        """The estimate with an independent error of ``variance`` added (a t interval).

        Used for plug-in parts the sample mean does not see, such as the class means μ̂. ``df``: the
        degrees of freedom of the added variance's estimate (None: well estimated); the result takes
        Welch–Satterthwaite degrees of freedom.

        >>> round(Estimate(1.0, 0.9, 1.1, 100, 0.95, "t", 0.03, 99.0).widened(0.04 ** 2).se, 12)
        0.05
        """
        if variance <= 0.0:
            return self
        if self.se is None:
            raise ValueError(f"cannot widen a {self.method!r} interval")
        se = math.sqrt(self.se**2 + variance)
        dof = satterthwaite([(self.se**2, self.df), (variance, df)])
        half = critical(self.level, dof) * se
        return replace(self, lower=self.value - half, upper=self.value + half, method="normal", se=se, df=dof)

    def at_level(self, level: float) -> "Estimate":
        """The same t/normal estimate with its interval recomputed at another level."""
        if self.method == "exact":
            return self
        if self.se is None or self.method not in ("t", "normal", "monte_carlo", "cluster"):
            raise ValueError(f"cannot change the level of a {self.method!r} interval")
        half = critical(level, self.df) * self.se
        return replace(self, lower=self.value - half, upper=self.value + half, level=level)


def satterthwaite(parts: Iterable[tuple[float, float | None]]) -> float | None:
    """Welch–Satterthwaite degrees of freedom of a sum of independent variance estimates.

    ``parts``: (variance v_i, its degrees of freedom df_i, None for a well-estimated one). Returns
    (Σ v_i)² / Σ v_i²/df_i, or None (normal) when every part with v_i > 0 is well estimated.

    >>> satterthwaite([(1.0, 9.0), (1.0, 9.0)])
    18.0
    >>> satterthwaite([(1.0, None), (0.0, 3.0)]) is None
    True
    """
    total = denominator = 0.0
    for variance, df in parts:
        total += variance
        if df is not None and variance > 0.0:
            denominator += variance * variance / max(df, 1.0)
    if denominator == 0.0:
        return None
    return total * total / denominator


def critical(level: float, df: float | None) -> float:
    """Two-sided critical value: Student t with ``df`` degrees of freedom, or normal when df is None.

    >>> round(critical(0.95, None), 4), round(critical(0.95, 9.0), 4)
    (1.96, 2.2622)
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1); got {level}")
    from scipy import stats  # here, not at the top: 0.4 s of imports that validating a config never needs

    q = 0.5 + level / 2.0
    if df is None:
        return float(stats.norm.ppf(q))
    return float(stats.t.ppf(q, df=max(df, 1.0)))


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

    ``units``: when observations are draws from a *finite* set of examples (a world with splits),
    each update names the examples every observation used, ``{family: ids (n,) or (n, r)}`` (e.g.
    ``{"example": ...}``, and ``{"task": ...}`` for per-task heads). The interval is then about the
    distribution the examples came from, not about the resampling: by the linearisation of a mean of
    a function of several examples (a generalised U-statistic), Var ≈ Σ_families G/(G − 1)·Σ_u
    (Σ_{t∋u} (y_t − ȳ))²/n² over the G units of each family, less Σ_t (R_t − 1)(y_t − ȳ)²/n² for a
    draw that touches R_t units (its own noise is in each of their sums but is one draw's: the
    multiway-clustering correction of Cameron, Gelbach and Miller 2011), and never below the variance
    of n independent draws. Degrees of freedom are Welch–Satterthwaite's over the families (G − 1
    each), and ``n`` is the number of distinct units of the first family (distinct examples), method
    "cluster".

    >>> acc = RunningMean(); acc.update([1.0, 2.0]); acc.update([3.0, 4.0])
    >>> acc.estimate(0.95) == mean_estimate([1.0, 2.0, 3.0, 4.0], 0.95)
    True
    >>> draws = RunningMean(); draws.update([1.0, 1.0, 0.0, 0.0], units={"example": [7, 7, 9, 9]})
    >>> e = draws.estimate(0.95); e.n, e.value, round(e.se, 4)  # two examples, each drawn twice
    (2, 0.5, 0.5)
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0  # sum of squared deviations from the mean
        self.units: dict[str, tuple[np.ndarray, np.ndarray]] | None = None  # family → (Σ y, count) per unit
        self.repeats = np.zeros(3)  # Σ w, Σ w·y, Σ w·y² with w = R_t − 1: draws counted in several units

    def update(self, values, units=None) -> None:
        block = _to_numpy(values)
        if block.size == 0:
            return
        if not np.all(np.isfinite(block)):
            raise FloatingPointError("non-finite value in an estimate's sample")
        if (units is not None) != (self.units is not None) and self.count > 0:
            raise ValueError("every update of a clustered mean names its units (or none does)")
        if units is not None:
            self._add_units(block, units)
        n_b = block.size
        mean_b = float(block.mean())
        m2_b = float(((block - mean_b) ** 2).sum())
        total = self.count + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / total
        self.m2 += m2_b + delta * delta * self.count * n_b / total
        self.count = total

    def _add_units(self, block: np.ndarray, units) -> None:
        if self.units is None:
            self.units = {}
        if self.count > 0 and set(units) != set(self.units):
            raise ValueError(f"units of a clustered mean changed: {sorted(units)} after {sorted(self.units)}")
        touched = np.zeros(block.size)
        for family, ids in units.items():
            ids = _to_numpy(ids).astype(np.int64).reshape(block.size, -1)  # (n, r): r units per draw
            touched += ids.shape[1]
            if ids.size and ids.min() < 0:
                raise ValueError(f"unit ids must be ≥ 0; got {ids.min()} in {family!r}")
            sums, counts = self.units.get(family, (np.zeros(0), np.zeros(0)))
            size = max(sums.size, int(ids.max()) + 1 if ids.size else 0)
            flat = ids.reshape(-1)
            weights = np.repeat(block, ids.shape[1])
            add_sums = np.bincount(flat, weights=weights, minlength=size)
            add_counts = np.bincount(flat, minlength=size).astype(np.float64)
            add_sums[:sums.size] += sums
            add_counts[:counts.size] += counts
            self.units[family] = (add_sums, add_counts)
        extra = touched - 1.0
        self.repeats += [extra.sum(), extra @ block, extra @ (block * block)]

    def estimate(self, level: float = 0.95, influence: tuple[np.ndarray, np.ndarray] | None = None) -> Estimate:
        """The mean with its interval at ``level``. ``influence``: (ids (m,), φ (m,)) the influence of
        examples on the mean through a plug-in part estimated from them (``PlugIn``), added to the
        draws' own influence in the first family of units (a clustered mean only)."""
        if self.count < 2:
            raise ValueError(f"an interval needs at least 2 observations; got {self.count}")
        if self.units is not None:
            return self._clustered(level, influence)
        if influence is not None:
            raise ValueError("an influence through a plug-in part needs a clustered mean (units)")
        variance = max(self.m2 / (self.count - 1), 0.0)  # 0 only for an exactly constant sample
        se = math.sqrt(variance / self.count)
        df = float(self.count - 1)
        half = critical(level, df) * se
        return Estimate(self.mean, self.mean - half, self.mean + half, self.count, level, "t", se, df)

    def _clustered(self, level: float, plug_in: tuple[np.ndarray, np.ndarray] | None) -> Estimate:
        parts, first = [], None
        for family, (sums, counts) in self.units.items():
            psi = (sums - counts * self.mean) / self.count  # each unit's influence, Σ_{t∋u} (y_t − ȳ)/n
            used = counts > 0
            if first is None and plug_in is not None:  # the examples behind μ̂ influence it too
                ids, phi = (np.asarray(a).reshape(-1) for a in plug_in)
                size = max(psi.size, int(ids.max()) + 1)
                psi = np.concatenate([psi, np.zeros(size - psi.size)]) + np.bincount(ids, phi, minlength=size)
                used = np.concatenate([used, np.zeros(size - used.size, dtype=bool)]) | (
                    np.bincount(ids, minlength=size) > 0)
            groups = int(used.sum())
            if groups < 2:
                raise ValueError(f"a clustered interval needs at least 2 {family} units; got {groups}")
            variance = groups / (groups - 1) * float(psi[used] @ psi[used])
            parts.append((variance, float(groups - 1)))
            first = groups if first is None else first
        weight, weighted, weighted_square = self.repeats
        repeated = (weighted_square - 2.0 * self.mean * weighted + self.mean**2 * weight) / self.count**2
        independent = self.m2 / (self.count - 1) / self.count  # the variance if the n draws were independent
        variance = max(sum(v for v, _ in parts) - repeated, independent)
        se = math.sqrt(variance)
        df = satterthwaite(parts)
        half = critical(level, df) * se
        return Estimate(self.mean, self.mean - half, self.mean + half, first, level, "cluster", se, df)


@dataclass(frozen=True)
class PlugIn:
    """The error that a plug-in part (the class means μ̂ of L^μ_sup) adds to a mean, by the delta method.

    ``variance``: its variance, Σ_a Var(g_aᵀ f(x) | a)/m_a for a mean whose gradient with respect to
    μ̂_a is g_a, when μ̂ comes from points independent of the mean's draws. ``ids``/``influence``:
    when the draws and μ̂ come from one finite set of examples, each example's influence through μ̂,
    g_aᵀ(f(x) − μ̂_a)/m_a, which adds to its influence through the draws (``RunningMean`` units).

    >>> acc = RunningMean(); acc.update([1.0, 3.0])  # se² of the mean: 2/2 = 1
    >>> round(PlugIn(0.5).apply(acc, 0.95).se ** 2, 12)
    1.5
    """

    variance: float = 0.0
    ids: np.ndarray | None = None
    influence: np.ndarray | None = None

    def apply(self, moments: RunningMean, level: float) -> Estimate:
        """The estimate of ``moments`` at ``level`` with this part's error included."""
        if self.ids is not None and moments.units is not None:
            return moments.estimate(level, influence=(self.ids, self.influence))
        return moments.estimate(level).widened(self.variance)


def combine(terms: Iterable[tuple[float, Estimate]], shift: float = 0.0, level: float = 0.95,
            dependent: bool = False) -> Estimate:
    """Σ coef_i · X_i + shift for independent t/normal/exact estimates, with a t interval whose
    degrees of freedom are Welch–Satterthwaite's (normal when every part is well estimated).

    ``dependent``: the estimates may be correlated in any way (e.g. two encoders measured on the
    same samples); the standard error is then the worst case Σ |coef_i|·se_i instead of the root of
    the sum of squares, and the degrees of freedom those of the least-determined part.

    >>> a = Estimate(1.0, 0.9, 1.1, 100, 0.95, "t", 0.05)
    >>> b = Estimate.exact(0.5)
    >>> e = combine([(1.0, a), (-1.0, b)])
    >>> round(e.value, 6), e.method, round(e.se, 6)
    (0.5, 'normal', 0.05)
    >>> few = Estimate(1.0, 0.0, 2.0, 10, 0.95, "t", 0.4, 9.0)
    >>> round(combine([(1.0, few), (1.0, few)]).df, 6)  # two parts of 9 degrees of freedom each
    18.0
    """
    terms = list(terms)
    value = shift
    variance = worst = 0.0
    counts, parts = [], []
    for coef, est in terms:
        if est.se is None:
            raise ValueError(f"cannot combine a {est.method!r} estimate (no standard error)")
        value += coef * est.value
        variance += (coef * est.se) ** 2
        worst += abs(coef) * est.se
        parts.append(((coef * est.se) ** 2, est.df))
        if est.n is not None:
            counts.append(est.n)
    if all(est.method == "exact" for _, est in terms):
        return Estimate.exact(value)
    if dependent:
        se = worst
        finite = [df for v, df in parts if v > 0.0 and df is not None]
        df = min(finite) if finite else None
    else:
        se = math.sqrt(variance)
        df = satterthwaite(parts)
    half = critical(level, df) * se
    n = min(counts) if counts else None
    return Estimate(value, value - half, value + half, n, level, "normal", se, df)


def stratified_mean(
    group_values: list[np.ndarray], weights: np.ndarray, level: float = 0.95
) -> Estimate:
    """Σ_g w_g · mean(group g) with a t interval: Var = Σ_g w_g² s_g² / n_g, Welch–Satterthwaite
    degrees of freedom (n_g − 1 per group).

    Used for class-weighted quantities (AVG-k, TOP-R): the groups are the classes.

    >>> e = stratified_mean([np.array([1.0, 1.0]), np.array([0.0, 0.0])], np.array([0.5, 0.5]))
    >>> e.value, e.lower, e.upper, e.n
    (0.5, 0.5, 0.5, 4)
    """
    weights = np.asarray(weights, dtype=np.float64)
    value = 0.0
    parts = []
    total = 0
    for w, group in zip(weights, group_values):
        group = _to_numpy(group)
        if w == 0.0:
            continue
        if group.size == 0:
            raise ValueError("a group with positive weight has no observations")
        value += w * group.mean()
        if group.size > 1:
            parts.append((w * w * group.var(ddof=1) / group.size, float(group.size - 1)))
        total += group.size
    variance = sum(v for v, _ in parts)
    se = math.sqrt(variance)
    df = satterthwaite(parts)
    half = critical(level, df) * se
    return Estimate(float(value), float(value - half), float(value + half), total, level, "normal", se, df)
