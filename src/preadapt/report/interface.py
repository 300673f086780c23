"""The interface of [FM21] section 4.10, answered from the numbers: did a lower pretraining loss
L_pre(θ̂) go with a lower minimal adaptation loss L*_adapt(θ̂) here?

Points. Each point is one checkpoint of one run: its ``L_pre`` row (the training objective on fresh
tuples) paired with an ``L_adapt_star`` row (one adapter, one task view ``split``: ``test``, or ``id`` and
``ood``; the 2-class tasks of L_sup), each with its CI. A view is one adapter and one task view.

Correlation. Spearman's ρ of the points' values, with a percentile bootstrap CI that resamples
*clusters* (``preadapt.estimate.rank``):

- the results of a sweep (several runs): a cluster is a run, so the checkpoints of one run stay
  together; the CI is about runs like these (seeds, grid points). Runs that share their pretraining
  (``Config.pretraining_hash``: the same seed and pretraining, differing only in what the tasks see,
  as the severities of the ``shift`` preset) are one cluster, a *pretraining*: their L_pre are the
  same numbers, so counting them apart would count one draw several times;
- the results of one run: a cluster is a checkpoint, the only unit there is. The checkpoints share
  the run's seed, world and training path, so the CI is *conditional on the run*: it says how firmly
  these checkpoints order, not whether another seed would order the same way.

Answer. One sentence per view: "lower L_pre went with lower L*_adapt" when the CI of ρ lies above 0,
"lower L_pre went with higher L*_adapt" when it lies below 0, "no clear relation" when it contains 0;
"no conclusion" without a CI (fewer than 3 clusters), and "no rank correlation" when it is undefined
(a constant series).

Points that break the pattern (only when the sentence names a direction d = sign ρ). Two points form
a *clearly discordant* pair when their L_pre CIs are disjoint, their L*_adapt CIs are disjoint, and they
are ordered against d. The points named are found greedily: remove the point in the most clearly
discordant pairs (ties: the larger rank residual, |rank L_pre − rank L*_adapt| with L*_adapt's ranks
reversed when d < 0; then the first listed), until no such pair is left. A point inside the others'
CIs is never named: only what the intervals resolve counts.

Same pre-training loss, different downstream ([FM21]'s question, answered per view). An *encoder* is
one trained state: in a sweep, a grid point at one checkpoint step (its replicates' values averaged,
with the Student-t interval across them, as ``report.sweep.aggregate`` does; one replicate keeps its
run's own CI), compared only with other grid points at the same step (equal training budget); in one
run, a checkpoint, compared with the run's other checkpoints. Two encoders form such a pair when
their L*_adapt CIs are disjoint and the one that adapts worse has an L_pre that is not above the
other's: the two L_pre lie within each other's CIs ("the same"), or the worse one's is lower
("lower", with whether the CIs are apart). The report names the clearest pair (at the latest step,
the widest gap between the L*_adapt CIs) with its numbers, or says that no such pair was found.

The theory's line. Lemma 4.3 of [Arora19], L^μ_sup(f) ≤ (L_un(f) − τ)/(1 − τ), bounds the mean
classifier's supervised loss on the pretraining world's 2-class tasks. It is drawn only where it
speaks about the points: the adapter ``mean``, the view ``test`` (a task section's ID/OOD tasks are not
the pretraining world's), and runs whose L_pre is L_un (the CURL objective with one negative and
blocks of 1, and ℓ of the evaluation equal to the objective's: ``lemma_4_3_applies``), with τ from
their ``tau`` rows. L*_adapt of ``mean`` is L^μ_sup with plug-in means (upward biased by O(1/m)), so
the points should lie on or below the line up to that bias and their CIs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from preadapt.estimate.estimate import mean_estimate
from preadapt.estimate.rank import MIN_CLUSTERS, MIN_POINTS, RankCorrelation, average_ranks, rank_correlation
from preadapt.report.figures import ADAPTER_NAMES, L_ADAPT_STAR, L_PRE, L_SUP_MEAN, LOSS_UNIT, LEMMA_4_3_RHS
from preadapt.report.figures import interval_errors, save_figure
from preadapt.report.tables import (
    CHAIN_TASK_CLASSES,
    SPLIT_NAMES,
    context_sort_key,
    estimate_cell,
    format_estimate,
    is_missing,
    native_value,
)

RESAMPLES = 2000
"""Bootstrap resamples behind each correlation's CI."""

SEED = 0
"""Seed of the bootstrap generator (a fresh ``numpy.random.default_rng(SEED)`` per view), so a report
rebuilt from the same results shows the same intervals."""

DEFAULT_LEVEL = 0.95
"""The CI level when the rows carry none in (0, 1)."""

BOUND_ADAPTER = "mean"
"""The adapter whose L*_adapt Lemma 4.3 bounds (the mean classifier's L^μ_sup)."""

BOUND_SPLITS = (None, "test")
"""The task views on which Lemma 4.3 speaks: tasks of the pretraining world."""

DIRECTIONS = {
    "same": "lower L_pre went with lower L*_adapt",
    "opposite": "lower L_pre went with higher L*_adapt",
    "unclear": "no clear relation between L_pre and L*_adapt",
    "no interval": "no conclusion",
    "undefined": "no rank correlation",
}
"""What each view's sentence says, by its direction."""

POINT_COLUMNS = ("adapter", "split", "run", "step", "L_pre", "L_pre_lower", "L_pre_upper", "L_pre_n",
                 "L_adapt_star", "L_adapt_star_lower", "L_adapt_star_upper", "L_adapt_star_n", "level", "method_pre",
                 "method_star")


@dataclass(frozen=True)
class InterfaceView:
    """One adapter and task view: its points, the rank correlation, the answer and the points that
    break the pattern (positions in ``points``), and the τ of the theory's line (empty: none drawn)."""

    adapter: str
    split: str | None
    points: pd.DataFrame
    correlation: RankCorrelation
    cluster_unit: str  # "run", "pretraining" or "checkpoint"
    direction: str  # a key of DIRECTIONS
    breakers: tuple[int, ...]
    sentence: str
    bound_taus: tuple[float, ...] = ()
    contrasts: tuple["Contrast", ...] = ()
    compared: int = 0  # pairs of encoders compared for the contrasts
    contrast_sentence: str = ""

    @property
    def label(self) -> str:
        """``adapter, task view`` as the sentence starts."""
        return f"{self.adapter}, {view_name(self.split)}"


def view_name(split: str | None) -> str:
    """A reader's name for a task view.

    >>> view_name("id"), view_name(None)
    ('ID tasks', 'test samples')
    """
    return SPLIT_NAMES.get(split, str(split)) if split is not None else SPLIT_NAMES["test"]


def _context(row: Mapping[str, Any], column: str) -> Any:
    value = row.get(column)
    return None if is_missing(value) else native_value(value)


def interface_points(results: pd.DataFrame) -> pd.DataFrame:
    """Every (adapter, task view, run, checkpoint) with both an ``L_pre`` and an ``L_adapt_star`` row
    (the 2-class tasks, no shots): the values, CIs and n of both (POINT_COLUMNS), ordered by adapter,
    view, run and step. Empty (with those columns) when either was not measured.

    >>> from preadapt.experiment.store import tidy_frame
    >>> row = dict(run="r", lower=0.0, upper=2.0, n=100, level=0.95, method="t")
    >>> results = tidy_frame([dict(row, step=s, quantity=q, value=v, **c) for s in (0, 10) for q, v, c in (
    ...     ("L_pre", 1.2 - s / 100, dict(split="fresh", negatives=1)),
    ...     ("L_adapt_star", 0.6 - s / 50, dict(adapter="mean", split="test", task_classes=2)))])
    >>> print(interface_points(results)[["adapter", "split", "step", "L_pre", "L_adapt_star"]].round(4).to_string())
      adapter split  step  L_pre  L_adapt_star
    0    mean  test     0    1.2           0.6
    1    mean  test    10    1.1           0.4
    """
    empty = pd.DataFrame(columns=list(POINT_COLUMNS))
    if len(results) == 0 or not {"quantity", "run", "step"} <= set(results.columns):
        return empty
    pre_rows = results[results["quantity"] == "L_pre"]
    star_rows = results[results["quantity"] == "L_adapt_star"]
    if len(pre_rows) == 0 or len(star_rows) == 0:
        return empty
    pre: dict[tuple[str, int], dict[str, Any]] = {}
    for row in pre_rows.to_dict("records"):
        pre.setdefault((str(row["run"]), int(row["step"])), row)  # one L_pre per run and checkpoint
    records = []
    for row in star_rows.to_dict("records"):
        if _context(row, "shots") is not None or _context(row, "task_classes") not in (None, CHAIN_TASK_CLASSES):
            continue
        key = (str(row["run"]), int(row["step"]))
        found = pre.get(key)
        if found is None or _context(row, "adapter") is None:
            continue
        records.append({
            "adapter": str(_context(row, "adapter")), "split": _context(row, "split"), "run": key[0], "step": key[1],
            "L_pre": float(found["value"]), "L_pre_lower": float(found["lower"]),
            "L_pre_upper": float(found["upper"]), "L_pre_n": _context(found, "n"),
            "L_adapt_star": float(row["value"]), "L_adapt_star_lower": float(row["lower"]),
            "L_adapt_star_upper": float(row["upper"]), "L_adapt_star_n": _context(row, "n"),
            "level": float(row["level"]), "method_pre": str(found["method"]), "method_star": str(row["method"]),
        })
    if not records:
        return empty
    frame = pd.DataFrame(records, columns=list(POINT_COLUMNS))
    order = sorted(range(len(frame)), key=lambda i: (context_sort_key("adapter", frame["adapter"].iat[i]),
                                                     context_sort_key("split", frame["split"].iat[i]),
                                                     frame["run"].iat[i], frame["step"].iat[i]))
    frame = frame.iloc[order].drop_duplicates(["adapter", "split", "run", "step"]).reset_index(drop=True)
    return frame


def pattern_breakers(points: pd.DataFrame, direction: int) -> tuple[int, ...]:
    """Positions (in ``points``) of the points that break a relation of sign ``direction`` (+1: lower
    L_pre with lower L*_adapt; −1: the opposite), by the greedy rule of the module's docstring.

    >>> points = pd.DataFrame({"L_pre": [1.0, 2.0, 3.0, 4.0], "L_adapt_star": [1.0, 2.0, 0.2, 4.0]})
    >>> for column in ("L_pre", "L_adapt_star"):
    ...     points[column + "_lower"], points[column + "_upper"] = points[column] - 0.1, points[column] + 0.1
    >>> pattern_breakers(points, +1)
    (2,)
    """
    x, y = points["L_pre"].to_numpy(float), points["L_adapt_star"].to_numpy(float)
    if len(x) < 2 or direction == 0:
        return ()
    x_lower, x_upper = points["L_pre_lower"].to_numpy(float), points["L_pre_upper"].to_numpy(float)
    y_lower, y_upper = points["L_adapt_star_lower"].to_numpy(float), points["L_adapt_star_upper"].to_numpy(float)
    apart_x = (x_upper[:, None] < x_lower[None, :]) | (x_upper[None, :] < x_lower[:, None])  # (n, n): CIs disjoint
    apart_y = (y_upper[:, None] < y_lower[None, :]) | (y_upper[None, :] < y_lower[:, None])
    against = np.sign((x[:, None] - x[None, :]) * (y[:, None] - y[None, :])) == -np.sign(direction)
    clash = apart_x & apart_y & against
    ranks_x, ranks_y = average_ranks(x), average_ranks(y if direction > 0 else -y)
    residual = np.abs(ranks_x - ranks_y)
    named = []
    while clash.any():
        counts = clash.sum(axis=1)
        # The most discordant pairs first, then the largest residual, then the first listed.
        worst = min(range(len(x)), key=lambda i: (-counts[i], -residual[i], i))
        named.append(worst)
        clash[worst, :] = False
        clash[:, worst] = False
    return tuple(sorted(named))


@dataclass(frozen=True)
class TrainedEncoder:
    """One encoder of a view: ``name`` (its grid point, or ``step S`` in one run), its ``group`` (the grid
    point, or the run), its ``step``, the number of ``runs`` behind it, and (value, lower, upper) of
    L_pre and of L*_adapt with the ``method`` of their CIs (``replicates-t`` across runs, else the
    run's own)."""

    name: str
    group: str
    step: int
    runs: int
    pre: tuple[float, float, float]
    star: tuple[float, float, float]
    method_pre: str
    method_star: str


@dataclass(frozen=True)
class Contrast:
    """Two encoders whose L*_adapt CIs are disjoint (``worse`` above ``better``) while the worse one's
    L_pre is not above the better one's: ``relation`` is ``same`` (the two L_pre lie within each other's
    CIs), ``lower`` (the worse one's is lower, CIs apart) or ``lower, CIs overlap``."""

    worse: TrainedEncoder
    better: TrainedEncoder
    relation: str

    @property
    def gap(self) -> float:
        """How far apart the L*_adapt CIs are: the worse one's lower end minus the better one's upper end."""
        return self.worse.star[1] - self.better.star[2]


REPLICATES_METHOD = "replicates-t"
"""The method of an encoder's interval across its runs (as in ``report.sweep.aggregate``)."""


def trained_encoders(points: pd.DataFrame, groups: Mapping[str, str] | None = None,
                     level: float = DEFAULT_LEVEL) -> list[TrainedEncoder]:
    """The encoders of one view's points: the runs of a group (``groups``: run → name; default each run
    its own) at one step, averaged with the t-interval across them at ``level`` when there are several
    (else the run's own CI). With a single group the encoders are its steps, named ``step S``."""
    names = {str(run): (groups or {}).get(str(run), str(run)) for run in points["run"]}
    single = len(set(names.values())) == 1
    found: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in points.to_dict("records"):
        found.setdefault((names[str(row["run"])], int(row["step"])), []).append(row)
    encoders = []
    for (name, step), rows in found.items():
        sides = []
        for column in ("L_pre", "L_adapt_star"):
            if len(rows) >= 2:
                estimate = mean_estimate([float(row[column]) for row in rows], level=level)
                sides.append(((estimate.value, estimate.lower, estimate.upper), REPLICATES_METHOD))
            else:
                row = rows[0]
                method = row["method_pre" if column == "L_pre" else "method_star"]
                sides.append(((float(row[column]), float(row[f"{column}_lower"]), float(row[f"{column}_upper"])),
                              str(method)))
        (pre, method_pre), (star, method_star) = sides
        encoders.append(TrainedEncoder(f"step {step}" if single else name, name, step, len(rows), pre, star,
                                       method_pre, method_star))
    return encoders


def _within(a: tuple[float, float, float], b: tuple[float, float, float]) -> bool:
    """Whether each value lies inside the other's CI."""
    return a[1] <= b[0] <= a[2] and b[1] <= a[0] <= b[2]


def downstream_contrasts(encoders: list[TrainedEncoder]) -> tuple[list[Contrast], int]:
    """("same pre-training loss, different downstream" pairs, pairs compared): every two encoders of
    different groups at one step (or, when all are of one group, every two steps), by the rule of the
    module's docstring; the clearest first (the latest step, then the widest L*_adapt gap).

    >>> linear = TrainedEncoder("linear", "linear", 10, 3, (-11.0, -11.3, -10.7), (0.05, 0.03, 0.07), "t", "t")
    >>> lookup = TrainedEncoder("lookup", "lookup", 10, 3, (-15.8, -16.1, -15.4), (1.03, 1.02, 1.04), "t", "t")
    >>> (found,), compared = downstream_contrasts([linear, lookup])
    >>> found.worse.name, found.better.name, found.relation, round(found.gap, 2), compared
    ('lookup', 'linear', 'lower', 0.95, 1)
    """
    across_steps = len({encoder.group for encoder in encoders}) == 1
    found, compared = [], 0
    for i, first in enumerate(encoders):
        for second in encoders[i + 1:]:
            if not across_steps and (first.group == second.group or first.step != second.step):
                continue
            compared += 1
            worse, better = (first, second) if first.star[0] >= second.star[0] else (second, first)
            if not worse.star[1] > better.star[2]:  # L*_adapt CIs not apart
                continue
            if _within(worse.pre, better.pre):
                found.append(Contrast(worse, better, "same"))
            elif worse.pre[0] < better.pre[0]:
                apart = worse.pre[2] < better.pre[1]
                found.append(Contrast(worse, better, "lower" if apart else "lower, CIs overlap"))
    found.sort(key=lambda contrast: (-max(contrast.worse.step, contrast.better.step), -contrast.gap))
    return found, compared


def _cell(encoder: TrainedEncoder, side: str) -> str:
    value, lower, upper = encoder.pre if side == "pre" else encoder.star
    method = encoder.method_pre if side == "pre" else encoder.method_star
    return format_estimate(value, lower, upper, None, method)


def _runs_text(encoder: TrainedEncoder) -> str:
    return f" ({encoder.runs} runs)" if encoder.runs > 1 else ""


def contrast_sentence(label: str, contrasts: list[Contrast], compared: int) -> str:
    """The answer to "same pre-training loss, different downstream?" for one view (``label``: adapter
    and task view), naming the clearest pair with its numbers, or saying that none was found.

    >>> linear = TrainedEncoder("linear", "linear", 10, 3, (-11.0, -11.3, -10.7), (0.05, 0.03, 0.07), "t", "t")
    >>> lookup = TrainedEncoder("lookup", "lookup", 10, 3, (-15.8, -16.1, -15.4), (1.03, 1.02, 1.04), "t", "t")
    >>> print(contrast_sentence("mean, ID tasks", *downstream_contrasts([linear, lookup])))
    mean, ID tasks: same pre-training loss, different downstream: at step 10, lookup (3 runs) has L_pre -15.8000 [-16.1000, -15.4000], lower than linear's -11.0000 [-11.3000, -10.7000] (CIs apart), yet L*_adapt 1.0300 [1.0200, 1.0400] against 0.0500 [0.0300, 0.0700] (CIs apart).
    >>> later = replace(linear, step=20, pre=(-12.0, -12.3, -11.7), star=(0.04, 0.02, 0.06))  # lower L_pre, L* within
    >>> print(contrast_sentence("mean, ID tasks", *downstream_contrasts([linear, later])))
    mean, ID tasks: no such pair: no two encoders whose L_pre lie within each other's CIs, or are ordered against their L*_adapt, have L*_adapt CIs apart (1 pair compared).
    """
    if not contrasts:
        return (f"{label}: no such pair: no two encoders whose L_pre lie within each other's CIs, or are ordered "
                f"against their L*_adapt, have L*_adapt CIs apart ({_count(compared, 'pair')} compared).")
    best = contrasts[0]
    worse, better = best.worse, best.better
    when = f"at step {worse.step}, " if worse.step == better.step else ""
    if best.relation == "same":
        pre = f"L_pre {_cell(worse, 'pre')} and {better.name}'s {_cell(better, 'pre')} within each other's CIs"
    else:
        apart = "CIs apart" if best.relation == "lower" else "the CIs overlap"
        pre = f"L_pre {_cell(worse, 'pre')}, lower than {better.name}'s {_cell(better, 'pre')} ({apart})"
    text = (f"{label}: same pre-training loss, different downstream: {when}{worse.name}{_runs_text(worse)} has {pre}, "
            f"yet L*_adapt {_cell(worse, 'star')} against {_cell(better, 'star')} (CIs apart)")
    if len(contrasts) > 1:
        text += f"; {_count(len(contrasts), 'such pair')} of {compared} compared"
    return text + "."


def _direction(correlation: RankCorrelation) -> str:
    if not math.isfinite(correlation.value):
        return "undefined"
    if not correlation.has_interval:
        return "no interval"
    if correlation.lower > 0.0:
        return "same"
    if correlation.upper < 0.0:
        return "opposite"
    return "unclear"


def format_rho(correlation: RankCorrelation) -> str:
    """ρ with its CI at two decimals: ``0.82 [0.41, 0.97]``; ``0.80 (no CI)``; ``undefined``.

    >>> format_rho(RankCorrelation(0.8167, 0.4102, 0.9733, 0.95, 12, 4, 2000, 0))
    '0.82 [0.41, 0.97]'
    """
    if not math.isfinite(correlation.value):
        return "undefined"
    if not correlation.has_interval:
        return f"{correlation.value:.2f} (no CI)"
    return f"{correlation.value:.2f} [{correlation.lower:.2f}, {correlation.upper:.2f}]"


def _count(number: int, unit: str) -> str:
    return f"{number} {unit}{'' if number == 1 else 's'}"


def support_text(correlation: RankCorrelation, cluster_unit: str) -> str:
    """How many points and clusters a correlation rests on.

    >>> support_text(RankCorrelation(0.8, 0.4, 1.0, 0.95, 12, 4, 2000, 0), "run")
    '12 points from 4 runs'
    >>> support_text(RankCorrelation(0.8, 0.4, 1.0, 0.95, 4, 4, 2000, 0), "checkpoint")
    '4 checkpoints of one run'
    """
    if cluster_unit == "checkpoint":
        return f"{_count(correlation.points, 'checkpoint')} of one run"
    return f"{_count(correlation.points, 'point')} from {_count(correlation.clusters, cluster_unit)}"


def point_name(points: pd.DataFrame, position: int, cluster_unit: str,
               labels: Mapping[str, str] | None = None) -> str:
    """A point as the report names it: ``step 50`` in one run, ``RUN (step 50)`` in a sweep (RUN from
    ``labels`` when given)."""
    run, step = str(points["run"].iat[position]), int(points["step"].iat[position])
    if cluster_unit == "checkpoint":
        return f"step {step}"
    return f"{(labels or {}).get(run, run)} (step {step})"


def breakers_text(view: InterfaceView, labels: Mapping[str, str] | None = None) -> str:
    """The points that break the pattern, grouped by run in a sweep (``RUN at steps 0, 50``); "" for none."""
    if not view.breakers:
        return ""
    if view.cluster_unit == "checkpoint":
        return ", ".join(point_name(view.points, i, view.cluster_unit) for i in view.breakers)
    steps: dict[str, list[int]] = {}
    for i in view.breakers:
        steps.setdefault(str(view.points["run"].iat[i]), []).append(int(view.points["step"].iat[i]))
    return "; ".join(f"{(labels or {}).get(run, run)} at step{'s' if len(found) > 1 else ''} "
                     f"{', '.join(map(str, found))}" for run, found in steps.items())


def interface_sentence(view: InterfaceView, labels: Mapping[str, str] | None = None) -> str:
    """The answer for one view, from its numbers.

    >>> rho = RankCorrelation(0.8167, 0.4102, 0.9733, 0.95, 12, 4, 2000, 0)
    >>> view = InterfaceView("linear", "id", pd.DataFrame(), rho, "run", "same", (), "")
    >>> interface_sentence(view)
    'linear, ID tasks: lower L_pre went with lower L*_adapt (Spearman 0.82 [0.41, 0.97], 12 points from 4 runs).'
    """
    rho, support = view.correlation, support_text(view.correlation, view.cluster_unit)
    head = f"{view.label}: {DIRECTIONS[view.direction]}"
    if view.direction == "undefined":
        return f"{head}: {rho.note} ({support})."
    if view.direction == "no interval":
        return (f"{head}: Spearman {rho.value:.2f} over {support}, too few "
                f"{view.cluster_unit}s for a bootstrap CI (at least {MIN_CLUSTERS}).")
    text = f"{head} (Spearman {format_rho(rho)}, {support}"
    text += "; the CI contains 0)." if view.direction == "unclear" else ")."
    if view.breakers:
        which = breakers_text(view, labels)
        text += f" Breaking the pattern: {which}."
    return text


def lemma_4_3_applies(config: Mapping[str, Any]) -> bool:
    """Whether a run's L_pre is L_un of [Arora19] with the evaluation's ℓ, so that Lemma 4.3's right
    side, (L_un − τ)/(1 − τ), is a function of the x of the interface's points: the CURL objective with
    one negative and blocks of 1, and ``evaluate.loss`` unset or equal to the objective's loss.

    >>> lemma_4_3_applies({"objective": {"kind": "curl", "loss": "logistic", "negatives": 1, "block_size": 1}})
    True
    >>> lemma_4_3_applies({"objective": {"kind": "curl", "negatives": 4}})
    False
    >>> lemma_4_3_applies({"objective": {"kind": "infonce"}})
    False
    """
    objective = config.get("objective") if isinstance(config.get("objective"), Mapping) else {}
    evaluate = config.get("evaluate") if isinstance(config.get("evaluate"), Mapping) else {}
    if objective.get("kind") != "curl":
        return False
    if int(objective.get("negatives") or 1) != 1 or int(objective.get("block_size") or 1) != 1:
        return False
    loss = objective.get("loss") or "logistic"
    return evaluate.get("loss") in (None, loss)


def pretraining_unit(config: Mapping[str, Any], loss_unit: str = LOSS_UNIT) -> str:
    """The unit of L_pre on an axis: the CURL objective's ℓ (bits for base-2 logistic), else the
    objective's own loss, named.

    >>> pretraining_unit({"objective": {"kind": "curl", "loss": "hinge"}})
    'ℓ = hinge'
    >>> pretraining_unit({"objective": {"kind": "spectral"}})
    'objective spectral'
    """
    objective = config.get("objective") if isinstance(config.get("objective"), Mapping) else {}
    kind = objective.get("kind")
    if kind == "curl":
        loss = objective.get("loss") or "logistic"
        return LOSS_UNIT if loss == "logistic" else f"ℓ = {loss}"
    return f"objective {kind}" if kind else loss_unit


def _bound_taus(results: pd.DataFrame, points: pd.DataFrame, adapter: str, split: str | None,
                theory_runs: Collection[str]) -> tuple[float, ...]:
    """The τ of each line to draw in a view (one per distinct τ of its runs); () when Lemma 4.3 does
    not speak about every point of the view."""
    if adapter != BOUND_ADAPTER or split not in BOUND_SPLITS or len(points) == 0:
        return ()
    runs = set(points["run"].astype(str))
    if not runs <= {str(run) for run in theory_runs}:
        return ()
    tau_rows = results[(results["quantity"] == "tau") & results["run"].astype(str).isin(runs)]
    found = {str(run): float(rows["value"].iloc[0]) for run, rows in tau_rows.groupby("run")}
    if set(found) != runs or not all(0.0 <= tau < 1.0 for tau in found.values()):
        return ()
    return tuple(sorted({round(tau, 12) for tau in found.values()}))


def interface_analysis(results: pd.DataFrame, *, level: float | None = None, resamples: int = RESAMPLES,
                       seed: int = SEED, theory_runs: Collection[str] = (),
                       labels: Mapping[str, str] | None = None,
                       pretrainings: Mapping[str, str] | None = None,
                       groups: Mapping[str, str] | None = None) -> list[InterfaceView]:
    """The interface per adapter and task view, for the views with at least MIN_POINTS points.

    ``results``: the tidy results of one run (clusters: its checkpoints) or of several runs (a sweep's
    finished runs; clusters: the runs). ``level``: of the correlations' CIs (default: the points' own
    level). ``theory_runs``: the runs for which Lemma 4.3's line applies (``lemma_4_3_applies`` of
    their configs); ``labels``: how to name a run in the sentences (default its id). ``pretrainings``:
    run → its pretraining (``Config.pretraining_hash``); runs that share one are one cluster, and the
    unit is then called a pretraining (a run missing from the mapping is its own). ``groups``: run →
    the encoder it trains (its grid point; the runs of one group are replicates), for the "same
    pre-training loss, different downstream" pairs (``downstream_contrasts``; default each run its own).

    >>> from preadapt.experiment.store import tidy_frame
    >>> row = dict(run="r", lower=0.0, upper=0.0, n=100, level=0.95, method="t")
    >>> results = tidy_frame([dict(row, step=s, quantity=q, value=v, lower=v - 0.01, upper=v + 0.01, **c)
    ...     for s in (0, 10, 20, 30, 40) for q, v, c in (("L_pre", 1.2 - s / 100, dict(split="fresh")),
    ...     ("L_adapt_star", 0.6 - s / 80, dict(adapter="mean", split="test", task_classes=2)))])
    >>> print(interface_analysis(results)[0].sentence)
    mean, test samples: lower L_pre went with lower L*_adapt (Spearman 1.00 [1.00, 1.00], 5 checkpoints of one run).
    """
    points = interface_points(results)
    if len(points) == 0:
        return []
    several = points["run"].nunique() > 1
    unit = "run" if several else "checkpoint"
    cluster_of = {run: (pretrainings or {}).get(run, run) for run in points["run"].astype(str).unique()}
    if several and len(set(cluster_of.values())) < len(cluster_of):
        unit = "pretraining"
    views = []
    for (adapter, split), rows in points.groupby(["adapter", points["split"].fillna("")], sort=False):
        rows = rows.reset_index(drop=True)
        split = split or None
        if len(rows) < MIN_POINTS:
            continue
        chosen = level if level is not None else _level(rows)
        clusters = [cluster_of[run] for run in rows["run"].astype(str)] if several else rows["step"].tolist()
        correlation = rank_correlation(rows["L_pre"].to_numpy(float), rows["L_adapt_star"].to_numpy(float), clusters,
                                       generator=np.random.default_rng(seed), level=chosen, resamples=resamples)
        direction = _direction(correlation)
        breakers = pattern_breakers(rows, {"same": 1, "opposite": -1}.get(direction, 0))
        contrasts, compared = downstream_contrasts(trained_encoders(rows, groups, chosen))
        view = InterfaceView(str(adapter), split, rows, correlation, unit, direction, breakers, "",
                             _bound_taus(results, rows, str(adapter), split, theory_runs), tuple(contrasts), compared)
        views.append(replace(view, sentence=interface_sentence(view, labels),
                             contrast_sentence=contrast_sentence(view.label, contrasts, compared)))
    return views


def _level(points: pd.DataFrame) -> float:
    levels = [float(v) for v in points["level"] if 0.0 < float(v) < 1.0]
    return max(dict.fromkeys(levels), key=levels.count) if levels else DEFAULT_LEVEL


INTERFACE_COLUMNS = ("adapter", "split", "spearman", "points", "clusters", "breaks", "note")
"""The columns of ``interface_table``."""


def interface_table(views: list[InterfaceView], labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per view: adapter, task view, Spearman's ρ with its CI, points, clusters (``4 runs`` or
    ``4 checkpoints``), the points that break the pattern, and a note (why there is no CI, resamples
    left out)."""
    rows = [{"adapter": view.adapter, "split": view_name(view.split), "spearman": format_rho(view.correlation),
             "points": view.correlation.points,
             "clusters": _count(view.correlation.clusters, view.cluster_unit),
             "breaks": breakers_text(view, labels) or ("none" if view.direction in ("same", "opposite") else ""),
             "note": _note(view.correlation)} for view in views]
    return pd.DataFrame(rows, columns=list(INTERFACE_COLUMNS))


def _note(correlation: RankCorrelation) -> str:
    """The correlation's own note, and a word when every resample kept one order (a CI of no width)."""
    if correlation.degenerate:  # short for the table: "24/2000 resamples constant, left out"
        notes = [f"{correlation.degenerate}/{correlation.resamples} resamples constant, left out"]
    else:
        notes = [correlation.note] if correlation.note else []
    if correlation.has_interval and correlation.lower == correlation.upper:
        notes.append("a CI of width 0: every resample kept this order (the bootstrap resamples the points, "
                     "not their own errors)")
    return "; ".join(notes)


def points_table(views: list[InterfaceView], labels: Mapping[str, str] | None = None,
                 table_level: float | None = None) -> pd.DataFrame:
    """Every point of every view: adapter, task view, run (in a sweep), step, L_pre and L*_adapt as
    estimate cells (value [lower, upper] n=N), and whether it breaks the pattern."""
    rows = []
    for view in views:
        for i, point in enumerate(view.points.to_dict("records")):
            pre = {"value": point["L_pre"], "lower": point["L_pre_lower"], "upper": point["L_pre_upper"],
                   "n": point["L_pre_n"], "method": point["method_pre"], "level": point["level"]}
            star = {"value": point["L_adapt_star"], "lower": point["L_adapt_star_lower"],
                    "upper": point["L_adapt_star_upper"], "n": point["L_adapt_star_n"], "method": point["method_star"],
                    "level": point["level"]}
            rows.append({"adapter": view.adapter, "split": view_name(view.split),
                         "run": (labels or {}).get(point["run"], point["run"]), "step": point["step"],
                         "L_pre": estimate_cell(pre, table_level), "L_adapt_star": estimate_cell(star, table_level),
                         "breaks": "yes" if i in view.breakers else ""})
    table = pd.DataFrame(rows, columns=["adapter", "split", "run", "step", "L_pre", "L_adapt_star", "breaks"])
    if len(table) and table["run"].nunique() == 1:
        table = table.drop(columns=["run"])
    return table


_MAX_RUN_COLOURS = 10
_PANEL = (4.3, 2.9)
"""Inches per panel, titles and axis labels included (the page shows the figure at most about 1180 px wide)."""


def interface_figure(views: list[InterfaceView], pre_unit: str = LOSS_UNIT, star_unit: str = LOSS_UNIT,
                     labels: Mapping[str, str] | None = None) -> Figure | None:
    """L_pre (x, with its CI as horizontal bars) against L*_adapt (y, vertical bars), one panel per view:
    columns the adapters, rows the task views. The checkpoints of a run are joined in step order (in a
    sweep each run has its colour while there are at most 10). Points that break the pattern are ringed
    in red. In a view where Lemma 4.3 applies (``InterfaceView.bound_taus``), its right side
    (L_un − τ)/(1 − τ) is drawn as a dashed line over the panel's x range, labelled as the bound on L^μ_sup.
    Returns None for no views.

    Each run's points are one line whose gid is ``interface:ADAPTER:SPLIT:RUN`` (its data are the
    points in step order); the ring of the breakers ``interface:ADAPTER:SPLIT:breaks``; Lemma 4.3's line
    ``interface:ADAPTER:SPLIT:lemma_4_3:TAU``.
    """
    if not views:
        return None
    adapters = list(dict.fromkeys(view.adapter for view in views))
    splits = list(dict.fromkeys(view.split for view in views))
    columns = min(len(adapters), 3)
    wraps = -(-len(adapters) // columns)
    width, height = max(7.0, _PANEL[0] * columns), _PANEL[1] * len(splits) * wraps
    fig = Figure(figsize=(width, height), layout="constrained")
    grid = fig.subplots(len(splits) * wraps, columns, squeeze=False)
    runs = list(dict.fromkeys(run for view in views for run in view.points["run"].astype(str)))
    colour = {run: f"C{i % 10}" for i, run in enumerate(runs)} if len(runs) <= _MAX_RUN_COLOURS else {}
    handles: dict[str, Any] = {}
    used = set()
    for view in views:
        j = adapters.index(view.adapter)
        ax = grid[splits.index(view.split) * wraps + j // columns, j % columns]
        used.add(id(ax))
        where = f"{view.adapter}:{view.split or ''}"
        for run, rows in view.points.groupby(view.points["run"].astype(str), sort=False):
            rows = rows.sort_values("step")
            pre = rows.rename(columns={"L_pre": "value", "L_pre_lower": "lower", "L_pre_upper": "upper"})
            star = rows.rename(columns={"L_adapt_star": "value", "L_adapt_star_lower": "lower",
                                        "L_adapt_star_upper": "upper"})
            name = (labels or {}).get(run, run) if len(runs) > 1 else "checkpoints (joined in step order)"
            if len(runs) > _MAX_RUN_COLOURS:
                name = "runs (each run's checkpoints joined in step order)"
            container = ax.errorbar(rows["L_pre"].to_numpy(float), rows["L_adapt_star"].to_numpy(float),
                                    xerr=interval_errors(pre), yerr=interval_errors(star), color=colour.get(run, "C0"),
                                    marker="o", markersize=5, linewidth=0.9, elinewidth=1.0, capsize=2.5, alpha=0.9)
            container.lines[0].set_gid(f"interface:{where}:{run}")
            handles.setdefault(name, container)
        if view.breakers:
            broken = view.points.iloc[list(view.breakers)]
            (ring,) = ax.plot(broken["L_pre"].to_numpy(float), broken["L_adapt_star"].to_numpy(float), linestyle="none",
                              marker="o", markersize=13, markerfacecolor="none", markeredgecolor="#d62728",
                              markeredgewidth=1.8)
            ring.set_gid(f"interface:{where}:breaks")
            handles.setdefault("breaks the pattern (CIs resolve it)", ring)
        if view.bound_taus:
            low, high = ax.get_xlim()
            xs = np.linspace(low, high, 50)
            for k, tau in enumerate(view.bound_taus):
                (line,) = ax.plot(xs, (xs - tau) / (1.0 - tau), color="black", linestyle=("--", ":", "-.")[k % 3],
                                  linewidth=1.2)
                line.set_gid(f"interface:{where}:lemma_4_3:{tau:g}")
                handles.setdefault(f"Lemma 4.3: bound on {L_SUP_MEAN}, {LEMMA_4_3_RHS}, τ = {tau:.4g}", line)
            ax.set_xlim(low, high)
        if len(runs) == 1:
            _label_steps(ax, view.points.sort_values("step"))
        rho = view.correlation
        ax.set_title(f"{ADAPTER_NAMES.get(view.adapter, view.adapter)}, {view_name(view.split)}: "
                     f"Spearman {format_rho(rho)}", fontsize=9)
        ax.set_xlabel(f"{L_PRE} ({pre_unit}), with CI", fontsize=9)
        ax.set_ylabel(f"{L_ADAPT_STAR} ({star_unit}), with CI", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for ax in grid.flat:
        if id(ax) not in used:
            ax.set_visible(False)
    # Outside the axes, below; as many columns as the longest entry leaves room for (a page is ~1180 px wide).
    longest = max(len(_plain_label(name)) for name in handles)
    ncols = min(len(handles), 3 if longest <= 40 else 2 if longest <= 75 else 1)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", fontsize=8, ncols=ncols)
    fig.set_size_inches(width, height + 0.2 + 0.2 * -(-len(handles) // ncols))  # room for the legend's rows
    return fig


def _plain_label(label: str) -> str:
    """A legend entry's length as drawn, roughly: mathtext markup counts as the letters it shows."""
    return re.sub(r"\\mathrm|[{}$\\^_]", "", label)


_LABEL_GAP = 0.08
"""Least distance (in axes fractions) between two step labels of a panel; closer labels are left out."""


def _label_steps(ax: Any, rows: pd.DataFrame) -> None:
    """Label a run's checkpoints with their steps: the first and the last always, the others where they
    do not crowd a label already placed (distances in axes fractions, so they hold after layout)."""
    (x_low, x_high), (y_low, y_high) = ax.get_xlim(), ax.get_ylim()
    xs = (rows["L_pre"].to_numpy(float) - x_low) / ((x_high - x_low) or 1.0)
    ys = (rows["L_adapt_star"].to_numpy(float) - y_low) / ((y_high - y_low) or 1.0)
    order = [0, len(rows) - 1, *range(1, len(rows) - 1)] if len(rows) > 1 else [0]
    placed: list[int] = []
    for i in dict.fromkeys(order):
        if all(math.hypot(xs[i] - xs[j], ys[i] - ys[j]) >= _LABEL_GAP for j in placed):
            placed.append(i)
            left = xs[i] < xs.mean()  # on the side away from the other points
            point = (float(rows["L_pre"].iat[i]), float(rows["L_adapt_star"].iat[i]))
            ax.annotate(f"step {int(rows['step'].iat[i])}", point,
                        xytext=(-5 if left else 5, 5), textcoords="offset points", ha="right" if left else "left",
                        fontsize=8, color="#333333")


def plot_interface(views: list[InterfaceView], path: str | Path, pre_unit: str = LOSS_UNIT,
                   star_unit: str = LOSS_UNIT, labels: Mapping[str, str] | None = None) -> Path | None:
    """``interface_figure`` written as a PNG at ``path``; None (nothing written) without views."""
    fig = interface_figure(views, pre_unit, star_unit, labels)
    return save_figure(fig, path) if fig is not None else None

