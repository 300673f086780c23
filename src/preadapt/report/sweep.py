"""The report of a sweep: every selected quantity aggregated over replicates per grid point, drawn
against each axis (and as a heatmap over two axes), tabulated, and written as one HTML page.

A sweep is many runs in one store (one per grid point and replicate seed); its description (the
driver's plan, a dict) names the axes, the replicates, the quantities as selectors
(``acc_avg[adapter=mean,task_classes=2]``, see ``preadapt.experiment.selector``) and each run's
point. Only finished runs count; each contributes the selected rows at its last checkpoint that
measured them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from preadapt.estimate.estimate import mean_estimate
from preadapt.experiment.config import ConfigError, parse_config
from preadapt.experiment.selector import Selector, parse_selector
from preadapt.report.figures import discrete_axis, draw_series, interval_errors, save_figure, select_rows
from preadapt.report.html import ENVIRONMENT, cell_text, interface_context, loss_unit
from preadapt.report.interface import lemma_4_3_applies, pretraining_unit
from preadapt.report.tables import (
    CONTEXT_COLUMNS,
    STATEMENT_TITLES,
    context_sort_key,
    dominant_level,
    estimate_cell,
    format_level,
    instance_label,
    is_missing,
    native_value,
    plain_text,
    theory_checks,
)

REPLICATES_METHOD = "replicates-t"
"""The method of an aggregate over two or more replicates: a Student-t interval across them."""

DEFAULT_LEVEL = 0.95
"""The replicate interval's level when the selected rows carry none in (0, 1) (exact values only)."""

ESTIMATE_FIELDS = ("value", "lower", "upper", "n", "level", "method", "replicates")
"""The columns of an aggregate after the axes and the free context columns."""

MAX_HEATMAP_PANELS = 12
"""At most this many free-context panels in one heatmap (the table lists every combination)."""

RUN_STATUSES = ("finished", "failed", "running", "not started")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
_FIGSIZE = (7.5, 5.2)


def axis_names(sweep: Mapping[str, Any]) -> list[str]:
    """The sweep's axes in order (a zipped group is named after its first field).

    >>> axis_names({"axes": [{"name": "objective.negatives", "fields": ["objective.negatives"]}]})
    ['objective.negatives']
    """
    return [str(axis["name"]) for axis in sweep.get("axes", [])]


def _as_selector(selector: Selector | str) -> Selector:
    return selector if isinstance(selector, Selector) else parse_selector(selector)


def _numeric(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, (bool, np.bool_)) and math.isfinite(float(value))


def _axis_values(sweep: Mapping[str, Any], axis: str) -> list[Any]:
    """The axis's values: ascending when all are numbers, else in the order the sweep lists them."""
    values = list(dict.fromkeys(entry.get("point", {}).get(axis) for entry in sweep.get("runs", [])))
    if values and all(_numeric(v) for v in values):
        return sorted(values, key=float)
    return values


def _axis_rank(sweep: Mapping[str, Any], axis: str) -> dict[Any, int]:
    return {value: i for i, value in enumerate(_axis_values(sweep, axis))}


def _statuses(runs: pd.DataFrame | None) -> dict[str, str]:
    if runs is None or len(runs) == 0 or not {"run_id", "status"} <= set(runs.columns):
        return {}
    return dict(zip(runs["run_id"].astype(str), runs["status"].astype(str)))


def _replicate_level(rows: list[Mapping[str, Any]], level: float | None) -> float:
    """``level`` when given, else the most common level of the rows in (0, 1), else DEFAULT_LEVEL."""
    if level is not None:
        return float(level)
    levels = [float(row["level"]) for row in rows if not is_missing(row["level"]) and 0.0 < float(row["level"]) < 1.0]
    return max(dict.fromkeys(levels), key=levels.count) if levels else DEFAULT_LEVEL


def _context_value(value: Any) -> Any:
    """A context cell as a plain scalar, None when missing (integral floats as int)."""
    return None if is_missing(value) else native_value(value)


TIED = "per point"
"""The value shown for a free context column that the point sets (see ``aggregate``)."""


def _tied_columns(picked: list[tuple[Mapping[str, Any], pd.DataFrame]], free: list[str], axes: list[str]) -> set[str]:
    """The free columns with at most one value per point where they apply and several across points."""
    tied = set()
    for column in free:
        per_point: dict[tuple, set] = {}
        for entry, rows in picked:
            point = tuple(entry.get("point", {}).get(axis) for axis in axes)
            per_point.setdefault(point, set()).update(
                v for v in (_context_value(value) for value in rows[column]) if v is not None)
        values = set().union(*per_point.values()) if per_point else set()
        if len(values) > 1 and all(len(found) <= 1 for found in per_point.values()):
            tied.add(column)
    return tied


def _grouped(results: pd.DataFrame, runs: pd.DataFrame | None, sweep: Mapping[str, Any],
             selector: Selector) -> tuple[list[str], dict[tuple, dict[str, Mapping[str, Any]]]]:
    """The free context columns and, per (point, free context) key, the rows of the selector at each
    finished run's last step, by run id (the rows behind ``aggregate`` and ``paired_contrast``)."""
    axes = axis_names(sweep)
    statuses = _statuses(runs)
    selected = select_rows(results, selector.quantity, **selector.context) if results is not None else pd.DataFrame()
    by_run = dict(tuple(selected.groupby("run", sort=False))) if len(selected) else {}
    picked: list[tuple[Mapping[str, Any], pd.DataFrame]] = []
    for entry in sweep.get("runs", []):
        rows = by_run.get(str(entry["run_id"]))
        if statuses.get(str(entry["run_id"])) == "finished" and rows is not None:
            picked.append((entry, rows[rows["step"] == rows["step"].max()]))
    last_rows = pd.concat([rows for _, rows in picked]) if picked else selected.iloc[0:0]
    free = [column for column in CONTEXT_COLUMNS if column not in selector.context and column in last_rows.columns
            and len({_context_value(v) for v in last_rows[column]}) > 1]
    tied = _tied_columns(picked, free, axes)

    def context_key(row: Mapping[str, Any], column: str) -> Any:
        value = _context_value(row[column])
        return TIED if column in tied and value is not None else value

    groups: dict[tuple, dict[str, Mapping[str, Any]]] = {}
    for entry, rows in picked:
        point = tuple(entry.get("point", {}).get(axis) for axis in axes)
        for row in rows.to_dict("records"):
            key = point + tuple(context_key(row, column) for column in free)
            groups.setdefault(key, {}).setdefault(str(entry["run_id"]), row)  # one row per run and series
    return free, groups


def aggregate(results: pd.DataFrame, runs: pd.DataFrame | None, sweep: Mapping[str, Any], selector: Selector | str,
              level: float | None = None) -> pd.DataFrame:
    """One estimate of ``selector`` per grid point (and free-context combination), over replicates.

    Each finished run (``runs.status == "finished"``; failed and running runs are left out)
    contributes its rows of the selector at the last checkpoint that measured it. Context columns
    the selector leaves free and that take several values there split the rows into series. Per
    point and series, with r ≥ 2 replicates the value is the mean of the replicates' values and the
    interval the Student-t interval of that mean across them (r − 1 degrees of freedom, at ``level``,
    by default the rows' own level; method ``replicates-t``, n = r). That interval is valid because
    each replicate's estimate is an unbiased noisy estimate of its seed's quantity: the spread across
    replicates holds both the variation between seeds (world, initialisation, training) and each
    run's estimation noise, so the mean over seeds is covered without reusing the runs' own CIs. With
    one replicate the run's own estimate (value, lower, upper, n, level, method) is kept.

    A free column that the point sets (one value per point where it applies, several across points,
    e.g. ``shots`` when the axis is ``evaluate.probe_shots``) does not split the rows per value: it
    reads ``per point`` where it applies, so the few-shot rows form one curve beside the rows where
    it does not apply (the population mean classifier, a flat reference).

    Columns: one per axis, the free context columns, then value, lower, upper, n, level, method,
    replicates; rows ordered by the axes (numbers ascending, other values as the sweep lists them).

    >>> from preadapt.experiment.store import tidy_frame
    >>> sweep = {"axes": [{"name": "objective.negatives", "fields": ["objective.negatives"]}],
    ...          "runs": [{"run_id": f"r{i}", "replicate": i, "point": {"objective.negatives": 2}} for i in range(3)]}
    >>> runs = pd.DataFrame({"run_id": ["r0", "r1", "r2"], "status": ["finished", "finished", "failed"]})
    >>> results = tidy_frame([{"run": f"r{i}", "step": 10, "quantity": "L_un", "value": v, "lower": v - 0.1,
    ...     "upper": v + 0.1, "n": 100, "level": 0.95, "method": "t"} for i, v in enumerate([1.0, 1.2, 9.0])])
    >>> print(aggregate(results, runs, sweep, "L_un").round(4).to_string(index=False))
     objective.negatives  value   lower  upper  n  level       method  replicates
                       2    1.1 -0.1706 2.3706  2   0.95 replicates-t           2
    """
    selector = _as_selector(selector)
    axes = axis_names(sweep)
    free, groups = _grouped(results, runs, sweep, selector)

    records = []
    for key, members in groups.items():
        rows = list(members.values())
        if len(rows) >= 2:
            chosen = _replicate_level(rows, level)
            estimate = mean_estimate([float(row["value"]) for row in rows], level=chosen)
            fields = (estimate.value, estimate.lower, estimate.upper, len(rows), chosen, REPLICATES_METHOD)
        else:
            row = rows[0]
            fields = (float(row["value"]), float(row["lower"]), float(row["upper"]), _context_value(row["n"]),
                      float(row["level"]), str(row["method"]))
        records.append((*key, *fields, len(rows)))

    frame = _frame(records, sweep, axes, free)
    if selector.quantity.startswith("acc_"):  # an accuracy lies in [0, 1]: so does its interval
        frame["lower"], frame["upper"] = frame["lower"].clip(lower=0.0), frame["upper"].clip(upper=1.0)
    return frame


def _frame(records: list[tuple], sweep: Mapping[str, Any], axes: list[str], free: list[str]) -> pd.DataFrame:
    """Records (point, free context, value, lower, upper, n, level, method, replicates) as a frame
    ordered by the axes, then the context."""
    ranks = [_axis_rank(sweep, axis) for axis in axes]
    records.sort(key=lambda record: (
        tuple(rank.get(value, len(rank)) for rank, value in zip(ranks, record)),
        tuple(context_sort_key(column, value) for column, value in zip(free, record[len(axes):]))))
    frame = pd.DataFrame(records, columns=[*axes, *free, *ESTIMATE_FIELDS])
    frame["n"] = pd.array([None if is_missing(n) else int(n) for n in frame["n"]], dtype="Int64")
    frame["replicates"] = frame["replicates"].astype(int)
    for column in ("value", "lower", "upper", "level"):
        frame[column] = frame[column].astype(float)
    return frame


PAIRED_METHOD = "paired-t"
"""Method of a contrast to the baseline: a t-interval over the replicates' paired differences."""


def paired_contrast(results: pd.DataFrame, runs: pd.DataFrame | None, sweep: Mapping[str, Any],
                    selector: Selector | str, baseline: Mapping[str, Any], level: float | None = None) -> pd.DataFrame:
    """Each point's difference to its baseline point, paired within replicates.

    The baseline point of a point is the point with the ``baseline`` axes (axis → value) set to
    their baseline values. Replicate r of every point shares its seed (world, initialisation), so
    per replicate the difference value(point) − value(baseline) cancels what the points share; the
    estimate is the mean difference with a Student-t interval across the replicates that finished
    both (method ``paired-t``, n = pairs; needs two pairs). Paired intervals are much narrower than
    the difference of two unpaired ones where the seed explains much of the spread. The baseline
    points themselves (difference 0) are left out. Columns as in ``aggregate``.

    >>> from preadapt.experiment.store import tidy_frame
    >>> sweep = {"axes": [{"name": "objective", "fields": ["objective"]}], "runs": [
    ...     {"run_id": f"{o}{r}", "replicate": r, "point": {"objective": o}} for o in "ab" for r in range(3)]}
    >>> runs = pd.DataFrame({"run_id": [e["run_id"] for e in sweep["runs"]], "status": "finished"})
    >>> values = {"a0": 1.0, "a1": 2.0, "a2": 3.0, "b0": 1.5, "b1": 2.4, "b2": 3.6}
    >>> results = tidy_frame([{"run": run, "step": 1, "quantity": "L", "value": v, "lower": v, "upper": v,
    ...     "n": 10, "level": 0.95, "method": "t"} for run, v in values.items()])
    >>> print(paired_contrast(results, runs, sweep, "L", {"objective": "a"}).round(4).to_string(index=False))
    objective  value  lower  upper  n  level   method  replicates
            b    0.5 0.2516 0.7484  3   0.95 paired-t           3
    """
    selector = _as_selector(selector)
    axes = axis_names(sweep)
    free, groups = _grouped(results, runs, sweep, selector)
    replicate = {str(entry["run_id"]): entry.get("replicate") for entry in sweep.get("runs", [])}
    positions = {axis: i for i, axis in enumerate(axes)}
    records = []
    for key, members in groups.items():
        base_key = list(key)
        for axis, value in baseline.items():
            base_key[positions[axis]] = value
        base_key = tuple(base_key)
        if base_key == key or base_key not in groups:
            continue
        base = {replicate[run]: float(row["value"]) for run, row in groups[base_key].items()}
        differences = [float(row["value"]) - base[replicate[run]] for run, row in members.items()
                       if replicate[run] in base]
        if len(differences) < 2:
            continue
        rows = list(members.values())
        chosen = _replicate_level(rows, level)
        estimate = mean_estimate(differences, level=chosen)
        records.append((*key, estimate.value, estimate.lower, estimate.upper, len(differences), chosen,
                        PAIRED_METHOD, len(differences)))
    return _frame(records, sweep, axes, free)


def _series_columns(aggregated: pd.DataFrame, exclude: tuple[str, ...]) -> list[str]:
    return [c for c in aggregated.columns if c not in ESTIMATE_FIELDS and c not in exclude]


def _series_label(row: Mapping[str, Any], columns: list[str]) -> str:
    return ", ".join(f"{column}={plain_text(row[column])}" for column in columns if not is_missing(row[column]))


def _by_series(aggregated: pd.DataFrame, columns: list[str]) -> list[tuple[str, pd.DataFrame]]:
    """The rows split by their values of ``columns``, labelled ``column=value, ...``, in order of appearance."""
    labels = pd.Series([_series_label(row, columns) for row in aggregated.to_dict("records")], index=aggregated.index,
                       dtype=object)
    return [(label, aggregated[labels == label]) for label in dict.fromkeys(labels)]


def _what(aggregated: pd.DataFrame) -> str:
    """What a figure's values are: means over replicates, single runs' estimates, or both."""
    replicated = aggregated["replicates"] >= 2
    return "mean over replicates" if replicated.all() else "one run's estimate" if not replicated.any() else (
        "mean over replicates (one run's estimate where only one finished)")


def _log2_scale(values: list[float]) -> bool:
    """A log2 axis when every value is a positive power of 2 or the positive values span 10× or more."""
    if not values or min(values) <= 0.0:
        return False
    powers = all(float(np.log2(v)).is_integer() for v in values)
    return powers or max(values) / min(values) >= 10.0


def _finite_band(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows whose non-finite interval ends are drawn at the value (no band, no bar there)."""
    value = rows["value"].to_numpy(float)
    return rows.assign(lower=np.where(np.isfinite(rows["lower"].to_numpy(float)), rows["lower"], value),
                       upper=np.where(np.isfinite(rows["upper"].to_numpy(float)), rows["upper"], value))


def plot_sweep_lines(aggregated: pd.DataFrame, sweep: Mapping[str, Any], selector: Selector | str, axis: str,
                     path: str | Path, ylabel: str | None = None,
                     reference: float | None = None) -> Path | None:
    """The aggregate of ``selector`` against one axis, with its CI as a band and error bars.

    One line per combination of the other axes' values and the free context columns. A numeric
    axis is drawn at its values (log2 scale when all are positive powers of 2 or span 10× or more),
    any other axis at categorical positions; ticks at the values. Returns None when there is
    nothing to draw.

    >>> import tempfile, os
    >>> sweep = {"axes": [{"name": "k", "fields": ["k"]}], "runs": []}
    >>> table = pd.DataFrame({"k": [1, 4], "value": [0.5, 0.4], "lower": [0.4, 0.3], "upper": [0.6, 0.5],
    ...     "n": [3, 3], "level": 0.95, "method": "replicates-t", "replicates": 3})
    >>> plot_sweep_lines(table, sweep, "L_un", "k", os.path.join(tempfile.mkdtemp(), "k.png")).name
    'k.png'
    """
    selector = _as_selector(selector)
    if len(aggregated) == 0 or axis not in aggregated.columns:
        return None
    present = set(aggregated[axis])
    values = [v for v in _axis_values(sweep, axis) if v in present] or list(dict.fromkeys(aggregated[axis]))
    numeric = all(_numeric(v) for v in values)
    position = {v: float(v) for v in values} if numeric else {v: float(i) for i, v in enumerate(values)}
    lines = _by_series(aggregated, _series_columns(aggregated, (axis,)))

    fig = Figure(figsize=_FIGSIZE, layout="constrained")
    ax = fig.add_subplot()
    for i, (label, rows) in enumerate(lines):
        rows = _finite_band(rows.assign(step=[position[v] for v in rows[axis]]).sort_values("step"))
        # figures._series draws against the "step" column: here the axis positions.
        draw_series(ax, rows, label or str(selector), f"C{i % 10}", _MARKERS[i % len(_MARKERS)],
                ("-", "--", ":", "-.")[(i // 10) % 4])
    if numeric:
        discrete_axis(ax, [position[v] for v in values], axis, log2=_log2_scale(list(position.values())))
    else:
        ax.set_xticks([position[v] for v in values], labels=[plain_text(v) for v in values],
                      rotation=20 if max(len(plain_text(v)) for v in values) > 8 else 0)
        ax.set_xlim(-0.5, len(values) - 0.5)
        ax.set_xlabel(axis)
    if reference is not None:  # e.g. 0 for differences to a baseline
        ax.axhline(reference, color="0.4", linewidth=0.9, linestyle="--")
    ax.set_ylabel(ylabel or f"{selector.quantity}: {_what(aggregated)}, with CI")
    ax.set_title(str(selector))
    ax.grid(alpha=0.3)
    # Outside the axes, where it cannot cover a band: below for a few lines, to the right for many.
    if len(lines) <= 6:
        fig.legend(fontsize=8, loc="outside lower center", ncols=min(3, len(lines)))
    else:
        fig.legend(fontsize=8, loc="outside right upper")
    return save_figure(fig, path)


def plot_sweep_heatmap(aggregated: pd.DataFrame, sweep: Mapping[str, Any], selector: Selector | str,
                       path: str | Path) -> Path | None:
    """The aggregate of ``selector`` over a two-axis sweep: first axis across, second up.

    Each cell is coloured by its value and annotated ``value`` and ``±half-width`` (the larger
    distance from the value to an end of its CI); one panel per free-context combination (at most
    MAX_HEATMAP_PANELS). Returns None unless the sweep has exactly two axes and there is a value.

    >>> import tempfile, os
    >>> sweep = {"axes": [{"name": "k", "fields": ["k"]}, {"name": "b", "fields": ["b"]}], "runs": []}
    >>> table = pd.DataFrame({"k": [1, 1, 4], "b": [1, 2, 1], "value": [0.5, 0.4, 0.3], "lower": 0.2,
    ...     "upper": 0.6, "n": 3, "level": 0.95, "method": "replicates-t", "replicates": 3})
    >>> plot_sweep_heatmap(table, sweep, "L_un", os.path.join(tempfile.mkdtemp(), "h.png")).name
    'h.png'
    """
    selector = _as_selector(selector)
    axes = axis_names(sweep)
    if len(axes) != 2 or len(aggregated) == 0 or not set(axes) <= set(aggregated.columns):
        return None
    x_axis, y_axis = axes
    ticks = []
    for axis in axes:
        present = set(aggregated[axis])
        ticks.append([v for v in _axis_values(sweep, axis) if v in present] or list(dict.fromkeys(aggregated[axis])))
    x_index = {v: i for i, v in enumerate(ticks[0])}
    y_index = {v: i for i, v in enumerate(ticks[1])}
    panels = [(label, rows) for label, rows in _by_series(aggregated, _series_columns(aggregated, tuple(axes)))
              if np.isfinite(rows["value"].to_numpy(float)).any()][:MAX_HEATMAP_PANELS]
    if not panels:
        return None
    columns = min(3, len(panels))
    grid_rows = -(-len(panels) // columns)
    width = max(4.8, 0.9 * len(ticks[0]) + 2.6)
    height = max(3.6, 0.6 * len(ticks[1]) + 1.8)
    fig = Figure(figsize=(width * columns, height * grid_rows + 0.4), layout="constrained")
    grid = fig.subplots(grid_rows, columns, squeeze=False)
    for ax, (label, rows) in zip(grid.flat, panels):
        values = np.full((len(ticks[1]), len(ticks[0])), np.nan)  # (y values, x values)
        halves = np.full_like(values, np.nan)
        for row, half in zip(rows.to_dict("records"), interval_errors(rows).max(axis=0)):
            values[y_index[row[y_axis]], x_index[row[x_axis]]] = row["value"]
            halves[y_index[row[y_axis]], x_index[row[x_axis]]] = half
        image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", aspect="auto", origin="lower")
        for (i, j), value in np.ndenumerate(values):
            if math.isfinite(value):
                red, green, blue, _ = image.cmap(image.norm(value))
                ink = "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white"
                ax.text(j, i, f"{value:.3g}\n±{halves[i, j]:.2g}", ha="center", va="center", fontsize=8, color=ink)
        ax.set_xticks(range(len(ticks[0])), labels=[plain_text(v) for v in ticks[0]])
        ax.set_yticks(range(len(ticks[1])), labels=[plain_text(v) for v in ticks[1]])
        ax.set_xlabel(x_axis)
        ax.set_ylabel(y_axis)
        ax.set_title(label or str(selector), fontsize=9)
        fig.colorbar(image, ax=ax, label=selector.quantity)
    for ax in list(grid.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"{selector}: {_what(aggregated)} ± CI half-width", fontsize=11)
    return save_figure(fig, path)


def sweep_table(aggregated: pd.DataFrame, sweep: Mapping[str, Any], selector: Selector | str,
                table_level: float | None = None) -> pd.DataFrame:
    """The aggregate as page cells: the point (one column per axis), ``quantity`` (the selector,
    with the free context of the row), ``estimate`` (``format_estimate``, naming its level when it
    differs from ``table_level``), ``method`` and ``replicates``.

    >>> sweep = {"axes": [{"name": "k", "fields": ["k"]}], "runs": []}
    >>> table = pd.DataFrame({"k": [2], "adapter": ["mean"], "value": [0.8], "lower": [0.7], "upper": [0.9],
    ...     "n": [3], "level": [0.95], "method": ["replicates-t"], "replicates": [3]})
    >>> sweep_table(table, sweep, "acc_avg", table_level=0.9).to_dict("records")  # doctest: +NORMALIZE_WHITESPACE
    [{'k': 2, 'quantity': 'acc_avg (adapter=mean)', 'estimate': '0.8000 [0.7000, 0.9000] n=3 (95%)',
      'method': 'replicates-t', 'replicates': 3}]
    """
    selector = _as_selector(selector)
    axes = [axis for axis in axis_names(sweep) if axis in aggregated.columns]
    context = _series_columns(aggregated, tuple(axes))
    rows = []
    for row in aggregated.to_dict("records"):
        label = _series_label(row, context)
        rows.append({**{axis: row[axis] for axis in axes},
                     "quantity": f"{selector} ({label})" if label else str(selector),
                     "estimate": estimate_cell(row, table_level),
                     "method": str(row["method"]),
                     "replicates": int(row["replicates"])})
    return pd.DataFrame(rows, columns=[*axes, "quantity", "estimate", "method", "replicates"])


VERDICTS = ("holds", "inconclusive", "violated", "premise not met")
"""The verdicts a check can reach, in the order the sweep's verdict table counts them."""


def sweep_verdicts(results: pd.DataFrame, runs: pd.DataFrame | None, sweep: Mapping[str, Any]) -> pd.DataFrame:
    """Every checked statement's verdicts per grid point: each finished run's verdict at its last
    checkpoint, counted over the point's replicates.

    Columns: one per axis, ``check`` (the statement, with its k or b), ``title`` (a reader's name for
    it), one count per verdict (VERDICTS) and ``replicates`` (the finished runs that checked it
    there); rows by point (as the grid lists them), then by statement in the Theory section's order.

    >>> from preadapt.experiment.store import tidy_frame
    >>> sweep = {"axes": [{"name": "k", "fields": ["k"]}],
    ...          "runs": [{"run_id": f"r{i}", "replicate": i, "point": {"k": 1}} for i in range(3)]}
    >>> runs = pd.DataFrame({"run_id": ["r0", "r1", "r2"], "status": ["finished", "finished", "failed"]})
    >>> results = tidy_frame([{"run": f"r{i}", "step": 10, "quantity": "bound_slack", "value": 0.1, "lower": 0.0,
    ...     "upper": 0.2, "n": 100, "level": 0.999, "method": "t", "bound": "lemma_4_3", "status": status}
    ...     for i, status in enumerate(["holds", "inconclusive", "holds"])])
    >>> sweep_verdicts(results, runs, sweep)[["k", "check", "holds", "inconclusive", "replicates"]].to_dict("records")
    [{'k': 1, 'check': 'lemma_4_3', 'holds': 1, 'inconclusive': 1, 'replicates': 2}]
    """
    axes = axis_names(sweep)
    columns = [*axes, "check", "title", *VERDICTS, "replicates"]
    statuses = _statuses(runs)
    point_of = {str(entry["run_id"]): tuple(entry.get("point", {}).get(axis) for axis in axes)
                for entry in sweep.get("runs", []) if statuses.get(str(entry["run_id"])) == "finished"}
    if results is None or len(results) == 0 or "bound" not in results.columns or not point_of:
        return pd.DataFrame(columns=columns)
    bound_rows = results[results["run"].astype(str).isin(point_of)]
    counts: dict[tuple, dict[str, Any]] = {}
    order: dict[str, int] = {}
    for check in theory_checks(bound_rows, last=True):
        label = instance_label(check)
        name = check["bound"] + (f" ({label})" if label else "")
        order.setdefault(name, len(order))
        entry = counts.setdefault((point_of[check["run"]], name), {
            "check": name,
            "title": STATEMENT_TITLES.get(check["bound"], check["bound"]) + (f", {label}" if label else ""),
            **{verdict: 0 for verdict in VERDICTS}, "replicates": 0})
        if check["status"] in VERDICTS:
            entry[check["status"]] += 1
        entry["replicates"] += 1
    ranks = [_axis_rank(sweep, axis) for axis in axes]
    keys = sorted(counts, key=lambda key: (tuple(rank.get(v, len(rank)) for rank, v in zip(ranks, key[0])),
                                           order[key[1]]))
    return pd.DataFrame([{**dict(zip(axes, key[0])), **counts[key]} for key in keys], columns=columns)


def _verdict_tables(verdicts: pd.DataFrame, axes: list[str], per_table: int = 6) -> list[dict[str, Any]]:
    """The verdict counts as page tables: one row per grid point (a column per axis), one column per statement (at most
    ``per_table`` to a table, so that each fits the page); each cell the verdicts reached there with
    their counts over the replicates."""
    if len(verdicts) == 0:
        return []
    checks = list(dict.fromkeys(verdicts["check"]))
    titles = dict(zip(verdicts["check"], verdicts["title"]))
    points = list(dict.fromkeys(tuple(row[axis] for axis in axes) for row in verdicts.to_dict("records")))
    cells = {(tuple(row[axis] for axis in axes), row["check"]): row for row in verdicts.to_dict("records")}
    tables = []
    count = -(-len(checks) // per_table)
    size = -(-len(checks) // count)
    for start in range(0, len(checks), size):
        chosen = checks[start:start + size]
        rows = []
        for point in points:
            row_cells = []
            for check in chosen:
                found = cells.get((point, check))
                row_cells.append([] if found is None else [
                    (verdict, f"{found[verdict]}/{found['replicates']}") for verdict in VERDICTS if found[verdict]])
            rows.append({"point": [plain_text(value) for value in point], "cells": row_cells})
        tables.append({"axes": axes, "columns": [{"check": check, "title": titles[check]} for check in chosen],
                       "rows": rows})
    return tables


def replicate_notes(replicates: int, level: float) -> str:
    """Why the interval of a point with fewer than 3 replicates reads as it does ("" from 3 on).

    >>> replicate_notes(2, 0.95)
    'only 2 replicates: a t-interval with 1 degree of freedom (t = 12.71, against 4.30 with 3), wide for that reason'
    >>> replicate_notes(3, 0.95)
    ''
    """
    if replicates >= 3:
        return ""
    if replicates == 1:
        return "one replicate: that run's own CI, without the variation between seeds"
    return (f"only 2 replicates: a t-interval with 1 degree of freedom (t = {_t_quantile(level, 1):.2f}, "
            f"against {_t_quantile(level, 2):.2f} with 3), wide for that reason")


def _t_quantile(level: float, df: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, df))


def figure_name(selector: Selector | str, axis: str | None = None) -> str:
    """The file stem of a sweep figure: ``sweep_SELECTOR_AXIS`` (``_heatmap`` without an axis),
    every run of characters outside [A-Za-z0-9_-] replaced by one ``_``.

    >>> figure_name("acc_avg[adapter=mean,task_classes=2]", "objective.negatives")
    'sweep_acc_avg_adapter_mean_task_classes_2_objective_negatives'
    >>> figure_name("L_un")
    'sweep_L_un_heatmap'
    """
    text = f"sweep_{_as_selector(selector)}_{axis if axis is not None else 'heatmap'}"
    return re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_-]+", "_", text)).strip("_")


def _point_text(point: Mapping[str, Any]) -> str:
    return ", ".join(f"{axis}={plain_text(value)}" for axis, value in point.items())


def _page_table(table: pd.DataFrame, numeric: tuple[str, ...]) -> dict[str, Any]:
    """A table for the shared ``data_table`` macro: key, header and kind of each column, text cells."""
    return {"columns": [{"key": str(c), "header": str(c), "kind": "num" if c in numeric else "text"}
                        for c in table.columns],
            "rows": [{str(k): cell_text(v) for k, v in row.items()} for row in table.to_dict("records")]}


def _level(aggregated: pd.DataFrame) -> float:
    """The level of the replicate intervals of an aggregate (DEFAULT_LEVEL when it has none)."""
    levels = aggregated.loc[aggregated["replicates"] >= 2, "level"] if len(aggregated) else []
    return float(pd.Series(levels).mode().iloc[0]) if len(levels) else DEFAULT_LEVEL


def _noted_table(aggregated: pd.DataFrame, sweep: Mapping[str, Any], selector: Selector,
                 table_level: float | None) -> dict[str, Any]:
    """``sweep_table`` as a page table, with a ``note`` column on the points whose interval rests on
    fewer than 3 replicates (``replicate_notes``) when there are any."""
    table = sweep_table(aggregated, sweep, selector, table_level)
    across = (REPLICATES_METHOD, PAIRED_METHOD)
    notes = [replicate_notes(int(row["replicates"]), float(row["level"]))
             if row["method"] in across or int(row["replicates"]) == 1 else "" for row in aggregated.to_dict("records")]
    if any(notes):
        table["note"] = notes
    return _page_table(table, numeric=("estimate",))


def _runs_summary(results: pd.DataFrame, runs: pd.DataFrame | None, sweep: Mapping[str, Any]) -> dict[str, Any]:
    statuses = _statuses(runs)
    errors = dict(zip(runs["run_id"].astype(str), runs["error"])) if statuses and "error" in runs.columns else {}
    entries = list(sweep.get("runs", []))
    status_of = {str(entry["run_id"]): statuses.get(str(entry["run_id"]), "not started") for entry in entries}
    counts = {status: sum(s == status for s in status_of.values()) for status in RUN_STATUSES}
    recorded = set(results["run"].astype(str)) if results is not None and len(results) else set()
    return {
        "total": len(entries),
        "finished": counts["finished"],
        "counts": [(status, count) for status, count in counts.items() if count or status != "not started"],
        "failed": [{"run_id": str(entry["run_id"]), "replicate": cell_text(entry.get("replicate")),
                    "point": _point_text(entry.get("point", {})), "error": cell_text(errors.get(str(entry["run_id"])))}
                   for entry in entries if status_of[str(entry["run_id"])] == "failed"],
        "empty": [run_id for run_id, status in status_of.items() if status == "finished" and run_id not in recorded],
    }


def _axes_rows(sweep: Mapping[str, Any]) -> list[dict[str, str]]:
    return [{"name": str(axis["name"]),
             "fields": " + ".join(str(f) for f in axis.get("fields", [axis["name"]])),
             "grid_values": ", ".join(plain_text(v) for v in _axis_values(sweep, str(axis["name"])))}
            for axis in sweep.get("axes", [])]


def _run_configs(runs: pd.DataFrame | None) -> dict[str, dict[str, Any]]:
    """Each run's resolved config (``config_json`` of the store's runs rows); {} for one without."""
    if runs is None or len(runs) == 0 or not {"run_id", "config_json"} <= set(runs.columns):
        return {}
    configs = {}
    for run_id, text in zip(runs["run_id"].astype(str), runs["config_json"]):
        try:
            config = json.loads(text) if isinstance(text, str) and text else {}
        except ValueError:
            config = {}
        configs[run_id] = config if isinstance(config, dict) else {}
    return configs


def _pretrainings(configs: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Each run's pretraining (``Config.pretraining_hash`` of its resolved config); a run whose config
    does not validate here (a user's kind not registered in this process) is left out: its own cluster."""
    found = {}
    for run, data in configs.items():
        try:
            found[run] = parse_config(dict(data)).pretraining_hash()
        except ConfigError:
            continue
    return found


def _one_unit(units: list[str]) -> str:
    """The loss unit the runs share, or a word that it varies."""
    found = list(dict.fromkeys(units))
    return found[0] if len(found) == 1 else "unit varies by run" if found else "bits"


def sweep_interface(results: pd.DataFrame, runs: pd.DataFrame | None, sweep: Mapping[str, Any],
                    figure: str | Path) -> dict[str, Any] | None:
    """The Interface section of a sweep (``preadapt.report.interface``): the points are run × checkpoint
    of the finished runs, the clusters of the bootstrap the runs (their checkpoints kept together; runs
    that share a pretraining, ``Config.pretraining_hash``, together), each run named by its id, point
    and replicate. Lemma 4.3's line is drawn where every run of a view
    qualifies (``lemma_4_3_applies`` of its config). None when no view has 3 points."""
    statuses = _statuses(runs)
    entries = {str(entry["run_id"]): entry for entry in sweep.get("runs", [])
               if statuses.get(str(entry["run_id"])) == "finished"}
    chosen = (results[results["run"].astype(str).isin(entries)] if results is not None and len(results)
              else pd.DataFrame())
    configs = {run: config for run, config in _run_configs(runs).items() if run in entries}
    labels = {run: f"{run} ({_point_text(entry.get('point', {}))}, replicate {cell_text(entry.get('replicate'))})"
              if entry.get("point") else run for run, entry in entries.items()}
    present = set(chosen["run"].astype(str)) if len(chosen) else set()
    return interface_context(
        chosen, figure,
        pre_unit=_one_unit([pretraining_unit(configs[run], loss_unit(configs[run]))
                            for run in present if run in configs]),
        star_unit=_one_unit([loss_unit(configs[run]) for run in present if run in configs]),
        theory_runs={run for run, config in configs.items() if lemma_4_3_applies(config)}, labels=labels,
        pretrainings=_pretrainings(configs),
        groups={run: _point_text(entry.get("point", {})) or run for run, entry in entries.items()})


def write_sweep_report(out_dir: str | Path, results: pd.DataFrame, runs: pd.DataFrame | None,
                       sweep: Mapping[str, Any], title: str) -> Path:
    """Write ``out_dir/figures/sweep_*.png`` and ``out_dir/report.html``; return the HTML's path.

    ``results`` is the store's tidy results frame, ``runs`` its provenance rows (``run_id``,
    ``status``, ``error``, ...), ``sweep`` the sweep's description (axes, replicates, quantities,
    runs). Per quantity: one line figure per axis, a heatmap when there are exactly two axes, and
    the aggregate table. Stale ``sweep_*.png`` files are removed first. A sweep where no run
    finished, or a quantity no run measured, still gets its page, which says so.

    >>> import tempfile
    >>> sweep = {"name": "s", "axes": [{"name": "k", "fields": ["k"]}], "replicates": 1, "quantities": ["L_un"],
    ...          "runs": [{"run_id": "s-1", "replicate": 0, "point": {"k": 1}}]}
    >>> runs = pd.DataFrame({"run_id": ["s-1"], "status": ["failed"], "error": ["ValueError: k"]})
    >>> write_sweep_report(tempfile.mkdtemp(), pd.DataFrame(), runs, sweep, title="s").name
    'report.html'
    """
    out_dir = Path(out_dir)
    figures_dir = out_dir / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    for stale in figures_dir.glob("sweep_*.png"):
        stale.unlink()
    axes = axis_names(sweep)
    baseline = sweep.get("baseline") or {}
    selectors = [_as_selector(text) for text in sweep.get("quantities", [])]
    aggregates = [aggregate(results, runs, sweep, selector) for selector in selectors]
    levels = pd.concat([frame[["level", "method"]] for frame in aggregates]) if aggregates else pd.DataFrame()
    table_level = dominant_level(levels) if len(levels) else None

    used: set[str] = set()

    def unique(stem: str) -> str:
        name, i = stem, 1
        while name in used:
            i += 1
            name = f"{stem}_{i}"
        used.add(name)
        return name

    sections = []
    for selector, aggregated in zip(selectors, aggregates):
        figures = []
        for axis in axes:
            target = figures_dir / f"{unique(figure_name(selector, axis))}.png"
            if plot_sweep_lines(aggregated, sweep, selector, axis, target) is not None:
                figures.append({"src": f"figures/{target.name}", "alt": f"{selector} against {axis}",
                                "caption": f"{selector} against {axis}: one line per value of the other axes"
                                           " (and free context), with its CI as a band and error bars."})
        target = figures_dir / f"{unique(figure_name(selector))}.png"
        if plot_sweep_heatmap(aggregated, sweep, selector, target) is not None:
            figures.append({"src": f"figures/{target.name}", "alt": f"{selector} over {' and '.join(axes)}",
                            "caption": f"{selector} over {axes[0]} (across) and {axes[1]} (up): each cell its"
                                       " value and ± the larger distance to an end of its CI."})
        contrast = None
        if baseline:
            paired = paired_contrast(results, runs, sweep, selector, baseline)
            contrast_figures = []
            for axis in axes:
                target = figures_dir / f"{unique(figure_name(selector, axis) + '_paired')}.png"
                if plot_sweep_lines(paired, sweep, selector, axis, target,
                                    ylabel=f"Δ {selector.quantity} vs {_point_text(baseline)}", reference=0.0) is not None:
                    contrast_figures.append({
                        "src": f"figures/{target.name}", "alt": f"{selector} minus the baseline, against {axis}",
                        "caption": f"{selector} minus its value at the baseline ({_point_text(baseline)}) of the same "
                                   f"replicate, against {axis}: mean paired difference with its t-interval."})
            contrast = {"figures": contrast_figures, "table": _noted_table(paired, sweep, selector, table_level),
                        "two": int((paired["replicates"] == 2).sum())}
        replicated = aggregated["replicates"]
        sections.append({
            "contrast": contrast,
            "selector": str(selector),
            "anchor": figure_name(selector, "section"),
            "figures": figures,
            "table": _noted_table(aggregated, sweep, selector, table_level),
            "replicated": int((replicated >= 2).sum()),
            "single": int((replicated == 1).sum()),
            "two": int((replicated == 2).sum()),
            "t_two": f"{_t_quantile(_level(aggregated), 1):.2f}",
            "t_three": f"{_t_quantile(_level(aggregated), 2):.2f}",
            "levels": ", ".join(format_level(v) for v in
                                sorted(set(aggregated.loc[replicated >= 2, "level"]))),
        })

    interface = sweep_interface(results, runs, sweep, figures_dir / "sweep_interface.png")
    html = ENVIRONMENT.get_template("sweep.html").render(
        title=title,
        interface=interface,
        verdicts=_verdict_tables(sweep_verdicts(results, runs, sweep), axes),
        name=str(sweep.get("name", "")),
        runs=_runs_summary(results, runs, sweep),
        axes=_axes_rows(sweep),
        replicates=cell_text(sweep.get("replicates")),
        sections=sections,
        table_level=format_level(table_level) if table_level is not None else "",
        baseline=_point_text(baseline) if baseline else "",
    )
    path = out_dir / "report.html"
    path.write_text(html, encoding="utf-8")
    return path

