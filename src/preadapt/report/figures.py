"""Figures of a run's tidy results (PNG, matplotlib's Agg canvas, no pyplot state).

Each function takes the tidy ``results`` frame (DESIGN.md section 3) and a path, draws every
point with its confidence interval, writes the PNG and returns its path; when the quantities it
draws were not measured it writes nothing and returns None.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

from preadapt.report.tables import (
    SPLIT_NAMES,
    STATEMENT_TITLES,
    block_checks,
    bound_checks,
    context_label,
    error_chains,
    is_missing,
    is_vacuous,
    native_value,
    negatives_checks,
    plain_text,
    theory_checks,
    verdict_counts,
)

L_UN = r"$L_{\mathrm{un}}$"
L_SUP_MEAN = r"$L^{\mu}_{\mathrm{sup}}$"
L_SUP = r"$L_{\mathrm{sup}}$"
L_PRE = r"$L_{\mathrm{pre}}$"
L_PRE_TRAIN = r"$\hat{L}_{\mathrm{pre}}$"
L_ADAPT = r"$L_{\mathrm{adapt}}$"
L_ADAPT_STAR = r"$L^{*}_{\mathrm{adapt}}$"
L_ADAPT_TRAIN = r"$\hat{L}_{\mathrm{adapt}}$"
LEMMA_4_3_RHS = r"$(L_{\mathrm{un}} - \tau)\,/\,(1 - \tau)$"
LOSS_UNIT = "bits"
"""The unit of the loss ℓ on the figures' axes: bits for the base-2 logistic ℓ of [Arora19] (the
default); the report passes another (``loss_unit``) when the run's ℓ is another loss."""

STATUS_STYLE = {
    "holds": {"color": "#1b9e4b", "marker": "o"},
    "inconclusive": {"color": "#e08a00", "marker": "s"},
    "violated": {"color": "#d62728", "marker": "X"},
    "premise not met": {"color": "#6a51a3", "marker": "P"},
}
_OTHER_STATUS = {"color": "#777777", "marker": "D"}
ADAPTER_NAMES = {"mean": "mean classifier", "linear": "linear probe", "finetune": "fine-tuning", "lpft": "LP-FT"}
_DPI = 110


def select_rows(results: pd.DataFrame, quantity: str, **context: Any) -> pd.DataFrame:
    """Rows of ``quantity`` whose context columns equal the given values (None: the column is empty;
    absent columns never match), by step.

    >>> rows = pd.DataFrame({"quantity": ["L_un", "L_un", "tau"], "step": [5, 0, 0], "negatives": [1, None, None]})
    >>> select_rows(rows, "L_un", negatives=1)["step"].tolist(), len(select_rows(rows, "L_un", adapter="mean"))
    ([5], 0)
    """
    if len(results) == 0:
        return results
    chosen = results["quantity"] == quantity
    for column, value in context.items():
        if column not in results.columns:
            return results.iloc[0:0]
        if value is None:  # pinned to "not applicable"
            chosen &= results[column].isna()
        else:
            chosen &= (results[column] == value).fillna(False).astype(bool)
    return results[chosen].sort_values("step", kind="stable")


def interval_errors(rows: pd.DataFrame) -> np.ndarray:
    """(2, n) distances from the value to the interval's ends (matplotlib's ``yerr``); 0 where an
    end is not finite.

    >>> interval_errors(pd.DataFrame({"value": [1.0, 2.0], "lower": [0.5, float("-inf")], "upper": [1.25, 3.0]}))
    array([[0.5 , 0.  ],
           [0.25, 1.  ]])
    """
    value = rows["value"].to_numpy(float)
    below = value - rows["lower"].to_numpy(float)
    above = rows["upper"].to_numpy(float) - value
    return np.nan_to_num(np.clip(np.stack([below, above]), 0.0, None), nan=0.0, posinf=0.0)


def _step_axis(ax: Axes, steps: list[int], label: str = "pretraining step (checkpoint)") -> None:
    """Checkpoint steps usually grow geometrically from 0: symlog (linear up to the first positive
    step, so that step 0 shows) when the positive steps span a factor of 10 or more, and the axis
    label says so (equal gaps between ticks are then equal ratios, not equal numbers of steps)."""
    positive = [s for s in steps if s > 0]
    if positive and max(positive) / min(positive) >= 10:
        ax.set_xscale("symlog", linthresh=min(positive), linscale=0.5)
        label = f"{label}, log scale (linear from 0 to {min(positive)})"
    if 0 < len(steps) <= 10:
        ax.xaxis.set_major_locator(FixedLocator(steps))
        ax.xaxis.set_minor_locator(NullLocator())
        formatter = ScalarFormatter()
        formatter.set_scientific(False)
        ax.xaxis.set_major_formatter(formatter)
    ax.set_xlabel(label)


def draw_series(ax: Axes, rows: pd.DataFrame, label: str, color: Any, marker: str = "o", linestyle: str = "-") -> None:
    """One curve against the ``step`` column of ``rows``: the values with their CIs as error bars
    and as a band."""
    steps = rows["step"].to_numpy(float)
    values = rows["value"].to_numpy(float)
    ax.fill_between(steps, rows["lower"].to_numpy(float), rows["upper"].to_numpy(float), color=color, alpha=0.15,
                    linewidth=0)
    ax.errorbar(steps, values, yerr=interval_errors(rows), color=color, marker=marker, linestyle=linestyle, capsize=3,
                markersize=5, linewidth=1.6, label=label)


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` (its folder made if needed) on an Agg canvas; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=_DPI)
    return path


def _by_context(rows: pd.DataFrame, name: str) -> list[tuple[str, pd.DataFrame]]:
    """Split rows into one series per context label, naming each after ``name`` (and its context)."""
    labels = rows.apply(context_label, axis=1) if len(rows) else pd.Series(dtype=str)
    groups = [(label, rows[labels == label]) for label in dict.fromkeys(labels)]
    if len(groups) == 1:
        return [(name, groups[0][1])]
    return [(f"{name}: {label}", group) for label, group in groups]


def plot_losses(results: pd.DataFrame, path: str | Path, loss_unit: str = LOSS_UNIT) -> Path | None:
    """L_un (negatives = 1), L^μ_sup and L_sup on 2-class tasks, and L_pre / L̂_pre against the step.

    Each curve carries its CI as error bars and a band. Returns None when none was measured.
    """
    l_un = select_rows(results, "L_un", negatives=1)
    if len(l_un) == 0 and "negatives" in results.columns:
        l_un = results[(results["quantity"] == "L_un") & results["negatives"].isna()]
    elif len(l_un) == 0:
        l_un = select_rows(results, "L_un")
    curves = [
        (f"{L_UN} (negatives = 1)", l_un),
        (f"{L_SUP_MEAN} (mean classifier, 2-class tasks)", select_rows(results, "L_sup_mean", task_classes=2)),
        (f"{L_SUP} (best linear head, 2-class tasks)", select_rows(results, "L_sup", task_classes=2)),
        (f"{L_PRE} (training objective, fresh samples)", select_rows(results, "L_pre")),
        (f"{L_PRE_TRAIN} (training objective, training tuples)", select_rows(results, "L_pre_train")),
    ]
    curves = [(label, rows) for name, selected in curves if len(selected) for label, rows in _by_context(selected, name)]
    if not curves:
        return None
    fig = Figure(figsize=(7.5, 5.4), layout="constrained")
    ax = fig.add_subplot()
    colors = [f"C{i}" for i in range(10)]
    markers = ["o", "s", "^", "D", "v", "P", "X"]
    for i, (label, rows) in enumerate(curves):
        draw_series(ax, rows.sort_values("step"), label, colors[i % 10], markers[i % len(markers)])
    _step_axis(ax, sorted(int(s) for s in pd.concat([rows for _, rows in curves])["step"].unique()))
    ax.set_ylabel(f"loss ({loss_unit}), population estimate with CI")
    ax.set_title("Losses across pretraining")
    ax.grid(alpha=0.3)
    fig.legend(fontsize=9, loc="outside lower center", ncols=2)
    return save_figure(fig, path)


def plot_lemma_4_3(results: pd.DataFrame, path: str | Path, loss_unit: str = LOSS_UNIT) -> Path | None:
    """Lemma 4.3 of [Arora19], L^μ_sup(f) ≤ (L_un(f) − τ)/(1 − τ), one point per checkpoint.

    x is the right side (``bound_rhs``), y the left (``bound_lhs``), each with its CI as an error
    bar; the lemma puts every point on or below y = x. Points are marked by their verdict and
    annotated with their step. Returns None when no ``lemma_4_3`` check has both sides.
    """
    checks = [c for c in bound_checks(results) if c["bound"] == "lemma_4_3" and "lhs" in c and "rhs" in c]
    if not checks:
        return None
    fig = Figure(figsize=(6.6, 6.0), layout="constrained")
    ax = fig.add_subplot()
    ends = np.array([float(c[side][end]) for c in checks for side in ("lhs", "rhs")
                     for end in ("value", "lower", "upper")])
    ends = ends[np.isfinite(ends)]
    low, high = float(ends.min()), float(ends.max())
    pad = 0.08 * (high - low) if high > low else 0.05 * max(abs(high), 1.0)
    low, high = low - pad, high + pad
    diagonal = np.array([low, high])
    ax.fill_between(diagonal, diagonal, high, color="#d62728", alpha=0.06, linewidth=0,
                    label="above y = x: would violate Lemma 4.3")
    ax.plot(diagonal, diagonal, color="black", linewidth=1.0, linestyle="--",
            label="y = x (Lemma 4.3: points on or below)")
    seen: set[str] = set()
    for check in checks:
        status = check["status"] or "no verdict"
        style = STATUS_STYLE.get(status, _OTHER_STATUS)
        lhs, rhs = pd.DataFrame([check["lhs"]]), pd.DataFrame([check["rhs"]])
        x, y = float(rhs["value"].iloc[0]), float(lhs["value"].iloc[0])
        ax.errorbar([x], [y], xerr=interval_errors(rhs), yerr=interval_errors(lhs), color=style["color"], marker=style["marker"],
                    markersize=8, capsize=3, linestyle="none", label=None if status in seen else status)
        seen.add(status)
        name = f"step {check['step']}" + (check["name"][len("lemma_4_3"):] if check["name"] != "lemma_4_3" else "")
        # Label on the side with room: left of points in the right third, above points near the bottom.
        right = x > low + 0.67 * (high - low)
        bottom = y < low + 0.1 * (high - low)
        ax.annotate(name, (x, y), xytext=(-8 if right else 8, 8 if bottom else -12), textcoords="offset points",
                    ha="right" if right else "left", fontsize=9, color="#333333")
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel(f"{LEMMA_4_3_RHS}   (right side, {loss_unit}, with CI)")
    ax.set_ylabel(f"{L_SUP_MEAN} on 2-class tasks   (left side, {loss_unit}, with CI)")
    ax.set_title(f"Lemma 4.3: {L_SUP_MEAN} ≤ {LEMMA_4_3_RHS}")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    order = {name: i for i, name in enumerate(["holds", "inconclusive", "violated"])}
    ranked = sorted(zip(handles, labels), key=lambda hl: (hl[1] not in seen, order.get(hl[1], len(order)), hl[1]))
    fig.legend([h for h, _ in ranked], [name for _, name in ranked], loc="outside lower center", ncols=2, fontsize=9)
    return save_figure(fig, path)


def _accuracy_name(row: dict[str, Any], shown: tuple[str, ...]) -> str:
    """Legend text of one acc_avg series: adapter, task size, then any other context that varies."""
    adapter = row.get("adapter")
    parts = [ADAPTER_NAMES.get(adapter, adapter) if isinstance(adapter, str) and adapter else "adapter not recorded"]
    size = row.get("task_classes")
    parts.append(f"{int(size)}-class tasks" if not is_missing(size) else "task size not recorded")
    parts += [f"{column}={plain_text(row[column])}" for column in shown if not is_missing(row.get(column))]
    return ", ".join(str(p) for p in parts)


def plot_accuracy(results: pd.DataFrame, path: str | Path) -> Path | None:
    """AVG accuracy (``acc_avg``) per adapter and task size against the step, with CIs.

    One series per context (adapter, task_classes, and shots or any other context that varies);
    colour is the number of task classes, line style the adapter; a dotted line marks chance
    (1 / task_classes). Returns None when ``acc_avg`` was not measured.
    """
    rows = select_rows(results, "acc_avg")
    if len(rows) == 0:
        return None
    fig = Figure(figsize=(7.5, 5.6), layout="constrained")
    ax = fig.add_subplot()
    records = rows.to_dict("records")
    labels = [context_label(row) for row in records]
    # Context beyond adapter and task size is named only where it tells apart series of one pair.
    pair = rows[[c for c in ("adapter", "task_classes") if c in rows.columns]].astype(object)
    pair_key = pair.where(pair.notna(), None).apply(tuple, axis=1) if pair.shape[1] else pd.Series([()] * len(rows))
    others = tuple(
        c for c in ("shots", "split", "negatives", "block_size", "top_r", "bound") if c in rows.columns
        and rows[c].astype(object).where(rows[c].notna(), None).groupby(pair_key.to_numpy()).nunique(dropna=False).gt(1).any()
    )
    sizes = sorted({int(r["task_classes"]) for r in records if not is_missing(r.get("task_classes"))})
    size_color = {size: f"C{i % 10}" for i, size in enumerate(sizes)}
    adapter_rank = {"mean": 0, "linear": 1}
    adapter_style = {"mean": ("-", "o"), "linear": ("--", "s")}
    firsts = {label: row for label, row in reversed(list(zip(labels, records)))}

    def order(label: str) -> tuple:
        row = firsts[label]
        adapter = row.get("adapter") if isinstance(row.get("adapter"), str) else ""
        size = row.get("task_classes")
        return (adapter_rank.get(adapter, 2), adapter, -1 if is_missing(size) else int(size), label)

    pair_of = {label: key for label, key in zip(labels, pair_key)}
    siblings = pd.Series(list(pair_of.values()), dtype=object).value_counts().to_dict()
    extra_markers = ["^", "v", "D", "P", "X"]
    for i, label in enumerate(sorted(firsts, key=order)):
        row = firsts[label]
        adapter = row.get("adapter") if isinstance(row.get("adapter"), str) else ""
        linestyle, marker = adapter_style.get(adapter, (":", "D"))
        if siblings[pair_of[label]] > 1:  # same colour and line as another series: tell them by marker
            marker = extra_markers[i % len(extra_markers)]
        size = row.get("task_classes")
        color = "C9" if is_missing(size) else size_color[int(size)]
        group = rows[[l == label for l in labels]]
        draw_series(ax, group.sort_values("step"), _accuracy_name(row, others), color, marker, linestyle)
    for size in sizes:
        ax.axhline(1.0 / size, color=size_color[size], linestyle=":", linewidth=1.0, alpha=0.8)
    if sizes:
        ax.plot([], [], color="grey", linestyle=":", label="chance: 1 / task_classes")
    _step_axis(ax, sorted(int(s) for s in rows["step"].unique()))
    ax.set_ylabel("average accuracy over tasks (AVG, fraction correct), with CI")
    ax.set_ylim(top=min(1.02, ax.get_ylim()[1]))
    ax.set_title("Downstream accuracy across pretraining")
    ax.grid(alpha=0.3)
    fig.legend(fontsize=9, loc="outside lower center", ncols=2)
    return save_figure(fig, path)


MAX_THEORY_PANELS = 12
"""At most this many panels in the Theory figure (one per statement; the tables list every check)."""

LHS_STYLE = {"color": "C0", "marker": "o"}
RHS_STYLE = {"color": "C1", "marker": "s"}


def _rows(records: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(records, columns=["step", "value", "lower", "upper"]).astype(float)


def _status_rug(ax: Axes, steps: list[float], statuses: list[str]) -> None:
    """The verdict at each checkpoint as a coloured marker along the bottom of the panel."""
    transform = ax.get_xaxis_transform()
    for step, status in zip(steps, statuses):
        style = STATUS_STYLE.get(status, _OTHER_STATUS)
        ax.plot([step], [0.04], transform=transform, color=style["color"], marker=style["marker"], markersize=6,
                linestyle="none", clip_on=False)


LOG_RATIO = 100.0
"""A panel whose sides differ by this factor or more gets a log y axis (the theorems' right sides are
often hundreds of times their left sides; on a linear axis the left side would be a flat line at 0)."""


def _log_y_if_wide(ax: Axes, checks: list[dict[str, Any]]) -> bool:
    """A log y axis when every value of both sides is positive and they span LOG_RATIO or more."""
    values = np.array([float(check[side]["value"]) for check in checks for side in ("lhs", "rhs")])
    if len(values) and np.isfinite(values).all() and values.min() > 0 and values.max() / values.min() >= LOG_RATIO:
        ax.set_yscale("log", nonpositive="clip")
        return True
    return False


def plot_theory(results: pd.DataFrame, path: str | Path, loss_unit: str = LOSS_UNIT) -> Path | None:
    """Every checked statement across checkpoints: one panel each, lhs and rhs with their CIs
    (bands and error bars) against the step, the verdict of each checkpoint as a marker along the
    bottom, and the title counting the verdicts over the checkpoints (``verdict_counts``). A
    statement checked in several instances (k, b) shows its last (the largest k or b; the tables
    list all); at most ``MAX_THEORY_PANELS`` panels. A panel whose sides differ a hundredfold gets a
    log y axis, labelled so. Returns None when no check has both sides.
    """
    instances: dict[str, dict[tuple, list[dict[str, Any]]]] = {}
    for check in theory_checks(results):
        if "lhs" in check and "rhs" in check:
            instances.setdefault(check["bound"], {}).setdefault((check["run"], check["key"]), []).append(check)
    # The first run's last instance (the largest k or b: at b = 1 the block statements are identities).
    panels = []
    for by_instance in list(instances.values())[:MAX_THEORY_PANELS]:
        first_run = min(run for run, _ in by_instance)
        key = max(key for run, key in by_instance if run == first_run)
        checks = by_instance[(first_run, key)]
        panels.append({"name": checks[-1]["name"], "bound": checks[-1]["bound"], "checks": checks})
    if not panels:
        return None
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    fig = Figure(figsize=(4.4 * columns, 3.3 * rows + 0.7), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False)
    seen: set[str] = set()
    for ax, panel in zip(axes.flat, panels):
        checks = sorted(panel["checks"], key=lambda c: c["step"])
        for side, style, label in (("lhs", LHS_STYLE, "lhs"), ("rhs", RHS_STYLE, "rhs")):
            draw_series(ax, _rows([dict(check[side], step=check["step"]) for check in checks]), label, style["color"],
                    style["marker"])
        log = _log_y_if_wide(ax, checks)
        ax.margins(y=0.18)  # room for the verdict markers along the bottom
        statuses = [check["status"] or "no verdict" for check in checks]
        _status_rug(ax, [check["step"] for check in checks], statuses)
        seen.update(statuses)
        _step_axis(ax, [check["step"] for check in checks], label="step")
        ax.xaxis.label.set_fontsize(8)
        ax.set_ylabel(f"lhs, rhs ({loss_unit}{', log scale' if log else ''})", fontsize=8)
        ax.tick_params(labelsize=8)
        title = STATEMENT_TITLES.get(panel["bound"], panel["bound"])
        ax.set_title(f"{title}: {panel['name']}\n{verdict_counts(statuses)}", fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=style["color"], marker=style["marker"]) for style in (LHS_STYLE, RHS_STYLE)]
    labels = ["lhs (with CI)", "rhs (with CI)"]
    for status in [*STATUS_STYLE, *sorted(seen - set(STATUS_STYLE))]:
        if status in seen:
            style = STATUS_STYLE.get(status, _OTHER_STATUS)
            handles.append(Line2D([], [], color=style["color"], marker=style["marker"], linestyle="none"))
            labels.append(status)
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=9)
    fig.suptitle("Bound checks across pretraining: lhs ≤ rhs; each checkpoint's verdict as a marker along the bottom",
                 fontsize=11)
    return save_figure(fig, path)


def _side_rows(checks: list[dict[str, Any]], x: str, side: str) -> pd.DataFrame:
    """One side (or term) of each check as rows with ``step`` = the check's ``x`` (k or b)."""
    records = []
    for check in checks:
        row = check["terms"].get(side) if side not in ("lhs", "rhs", "slack") else check.get(side)
        if row is not None:
            records.append(dict(row, step=check[x]))
    return _rows(records).sort_values("step")


def _legend_below(ax: Axes) -> None:
    """The axes' legend under its x label, outside the data (constrained layout makes room for it)."""
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncols=2, frameon=False)


def discrete_axis(ax: Axes, values: list[int], label: str, log2: bool) -> None:
    """An x axis with a tick at each of ``values`` (plain numbers), log2-scaled when asked, and the
    scale said in its label."""
    if log2:
        ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(values))
    ax.xaxis.set_minor_locator(NullLocator())
    formatter = ScalarFormatter()
    formatter.set_scientific(False)
    ax.xaxis.set_major_formatter(formatter)
    ax.set_xlabel(f"{label} (log scale)" if log2 and "log" not in label else label)


def plot_negatives(results: pd.DataFrame, path: str | Path, loss_unit: str = LOSS_UNIT) -> Path | None:
    """The k-negative form of Lemma 4.3 against k (log2 axis) at its last checkpoint.

    Left: both sides with CIs, the vacuity threshold (the loss at zero margins on T's distinct
    classes) as a dashed line with its band, and the k from which the note says vacuous shaded.
    Right: the coefficients 1/(1 − τ_k) on L_un and τ_k/(1 − τ_k). Returns None when
    ``lemma_4_3_negatives`` was not checked.
    """
    checks = negatives_checks(results)
    if not checks:
        return None
    ks = sorted({int(check["k"]) for check in checks})
    fig = Figure(figsize=(11.0, 5.4), layout="constrained")
    sides, coefficients = fig.subplots(1, 2)
    for side, style, label in (("lhs", LHS_STYLE, r"lhs: $L^{\mu}_{\mathrm{sup},D}$"),
                               ("rhs", RHS_STYLE, r"rhs: $(L_{\mathrm{un}} - \mathrm{floor})\,/\,(1 - \tau_k)$")):
        rows = _side_rows(checks, "k", side)
        if len(rows):
            draw_series(sides, rows, label, style["color"], style["marker"])
    threshold = _side_rows(checks, "k", "vacuity_threshold")
    if len(threshold):
        sides.fill_between(threshold["step"], threshold["lower"], threshold["upper"], color="black", alpha=0.12,
                           linewidth=0)
        # Dodged a little to the right of k so that its bar does not hide the lhs's.
        sides.errorbar(threshold["step"] * 2 ** 0.06, threshold["value"], yerr=interval_errors(threshold), color="black",
                       linestyle="--",
                       linewidth=1.2, marker="_", markersize=14, capsize=3,
                       label="vacuity threshold (loss at zero margins)")
    vacuous = [int(check["k"]) for check in checks if is_vacuous(check["note"])]
    if vacuous:
        start = min(vacuous)
        sides.axvspan(start / 2 ** 0.25, max(ks) * 2 ** 0.25, color="#d62728", alpha=0.07, linewidth=0,
                      label=f"vacuous from k = {start}")
    discrete_axis(sides, ks, "negatives k (log2 axis)", log2=True)
    log = _log_y_if_wide(sides, [c for c in checks if "lhs" in c and "rhs" in c])
    sides.set_ylabel(f"loss ({loss_unit}{', log scale' if log else ''}), with CI")
    sides.set_title(f"Lemma 4.3 with k negatives, step {checks[0]['step']}", fontsize=10)
    sides.grid(alpha=0.3)
    _legend_below(sides)
    drawn = False
    for term, style, label in (("coef_un", LHS_STYLE, r"$1/(1 - \tau_k)$ (on $L_{\mathrm{un}}$)"),
                               ("coef_tau", RHS_STYLE, r"$\tau_k/(1 - \tau_k)$")):
        rows = _side_rows(checks, "k", term)
        if len(rows):
            draw_series(coefficients, rows, label, style["color"], style["marker"])
            drawn = True
    if drawn:
        values = np.concatenate([line.get_ydata() for line in coefficients.get_lines()]).astype(float)
        values = values[np.isfinite(values)]
        if len(values) and values.min() > 0 and values.max() / values.min() > 20:
            coefficients.set_yscale("log")
        _legend_below(coefficients)
    else:
        coefficients.text(0.5, 0.5, "coefficients not recorded", transform=coefficients.transAxes, ha="center")
    discrete_axis(coefficients, ks, "negatives k (log2 axis)", log2=True)
    coefficients.set_ylabel("coefficient (dimensionless)")
    coefficients.set_title(r"Coefficients of the bound: growth with $\tau_k$", fontsize=10)
    coefficients.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_blocks(results: pd.DataFrame, path: str | Path, loss_unit: str = LOSS_UNIT) -> Path | None:
    """Blocks (Proposition 6.2 of [Arora19]) against the block size b at the last checkpoint.

    Left: L^block_un(b) with CIs (the ``L_un_block`` rows with a block size at that step, else the
    block checks' ``L_un_block`` terms), which the statement puts non-increasing in b, and L_un
    (the ``block_below_un`` term) as a dashed line with its band. Right: the sides of Proposition
    6.2, L^μ_sup ≤ (L^block_un − τ)/(1 − τ), with CIs, and the right side of Lemma 4.3 at that
    step, (L_un − τ)/(1 − τ), which bounds them. Returns None when no block statement was checked.
    """
    by_b = block_checks(results)
    if not by_b:
        return None
    step = next(iter(next(iter(by_b.values())).values()))["step"]
    bs = list(by_b)
    checks = [dict(check, b=b) for b, statements in by_b.items() for check in statements.values()]
    fig = Figure(figsize=(11.0, 5.4), layout="constrained")
    losses, sides = fig.subplots(1, 2)
    measured = results[(results["quantity"] == "L_un_block") & (results["step"] == step)] if len(results) else results
    if len(measured) and "block_size" in measured.columns:
        measured = measured[measured["block_size"].notna()]
        if "negatives" in measured.columns and measured["negatives"].nunique() > 1:
            measured = measured[(measured["negatives"] == measured["negatives"].min()).fillna(False).astype(bool)]
        block = _rows([dict(row, step=native_value(row["block_size"])) for row in measured.to_dict("records")])
    else:
        block = _rows([])
    if len(block) == 0:
        block = _side_rows([c for c in checks if "L_un_block" in c["terms"]], "b", "L_un_block")
        block = block.drop_duplicates("step")
    if len(block):
        draw_series(losses, block.sort_values("step"), r"$L^{\mathrm{block}}_{\mathrm{un}}(b)$", "C2", "o")
    l_un = [c["terms"]["L_un"] for c in checks if c["bound"] == "block_below_un" and "L_un" in c["terms"]]
    if l_un:
        row = l_un[0]
        losses.axhspan(float(row["lower"]), float(row["upper"]), color="black", alpha=0.1, linewidth=0)
        losses.axhline(float(row["value"]), color="black", linestyle="--", linewidth=1.2,
                       label=r"$L_{\mathrm{un}}$ (upper bound for every b)")
    monotone = {c["b"]: c["status"] for c in checks if c["bound"] == "block_monotone"}
    if len(block):
        for b, status in monotone.items():
            at_b = block[block["step"] == b]
            if len(at_b):
                style = STATUS_STYLE.get(status, _OTHER_STATUS)
                last = b == max(bs)
                losses.annotate(f"≤ previous b: {status}", (b, float(at_b["value"].iloc[0])),
                                xytext=(-8 if last else 8, 8), textcoords="offset points", ha="right" if last else "left",
                                fontsize=8, color=style["color"])
    shown = sorted(set(bs) | ({int(b) for b in block["step"]} if len(block) else set()))  # b = 1 has no check
    discrete_axis(losses, shown, "block size b", log2=False)
    losses.set_ylabel(f"loss ({loss_unit}), with CI")
    losses.set_title(rf"$L^{{\mathrm{{block}}}}_{{\mathrm{{un}}}}$ non-increasing in b, step {step}", fontsize=10)
    losses.grid(alpha=0.3)
    _legend_below(losses)
    proposition = [c for c in checks if c["bound"] == "proposition_6_2" and "lhs" in c and "rhs" in c]
    if proposition:
        for side, style, label in (("lhs", LHS_STYLE, rf"lhs: {L_SUP_MEAN}"),
                                   ("rhs", RHS_STYLE, r"rhs: $(L^{\mathrm{block}}_{\mathrm{un}} - \tau)\,/\,(1 - \tau)$")):
            draw_series(sides, _side_rows(proposition, "b", side), label, style["color"], style["marker"])
        lemma = [c for c in bound_checks(results) if c["bound"] == "lemma_4_3" and c["step"] == step and "rhs" in c]
        if lemma:
            row = lemma[0]["rhs"]
            sides.axhspan(float(row["lower"]), float(row["upper"]), color="black", alpha=0.1, linewidth=0)
            sides.axhline(float(row["value"]), color="black", linestyle="--", linewidth=1.2,
                          label=rf"{LEMMA_4_3_RHS} (Lemma 4.3: ≥ rhs for every b)")
        sides.margins(y=0.18)
        for check in proposition:
            style = STATUS_STYLE.get(check["status"], _OTHER_STATUS)
            sides.plot([check["b"]], [0.04], transform=sides.get_xaxis_transform(), color=style["color"],
                       marker=style["marker"], linestyle="none", clip_on=False)
        _legend_below(sides)
    else:
        sides.text(0.5, 0.5, "Proposition 6.2 not checked", transform=sides.transAxes, ha="center")
    discrete_axis(sides, bs, "block size b", log2=False)
    sides.set_ylabel(f"loss ({loss_unit}), with CI")
    sides.set_title("Proposition 6.2: lhs ≤ rhs (verdict along the bottom)", fontsize=10)
    sides.grid(alpha=0.3)
    return save_figure(fig, path)


CHAIN_BARS = {
    "L_pre_train": ("0.62", f"{L_PRE_TRAIN}, training tuples (bar from 0)"),
    "link_pretrain_gap": ("C0", f"+ pretraining gap {L_PRE} − {L_PRE_TRAIN}"),
    "link_interface": ("C1", f"+ interface {L_ADAPT_STAR} − {L_PRE}"),
    "link_adapt_excess": ("C2", f"+ adaptation excess {L_ADAPT} − {L_ADAPT_STAR}"),
    "link_total": ("0.3", f"= total {L_ADAPT} − {L_PRE_TRAIN} (bar from {L_PRE_TRAIN})"),
    "link_adapt_gap": ("C3", f"adaptation gap {L_ADAPT} − {L_ADAPT_TRAIN} (down to {L_ADAPT_TRAIN})"),
}
"""The bars of one adapter's waterfall, left to right: colour and legend text. Each bar's gid is
``chain:ADAPTER:SHOTS:SPLIT:NAME``."""

CHAIN_STEPS = ("link_pretrain_gap", "link_interface", "link_adapt_excess")
"""The links that take L̂_pre to L_pre, L*_adapt and L_adapt, in order."""

_BAR_SLOT = 0.17
"""Inches per bar of a waterfall panel (six bars and a gap per adapter)."""
_MAX_CHAIN_WIDTH = 13.0
"""Inches at most across a row of waterfall panels (the page shows the figure about 1180 px wide)."""


def _chain_base(chain: dict[str, Any]) -> float | None:
    """L̂_pre: its row, else L_pre − the pretraining gap, else L_adapt − the total; None when unknown."""
    levels, links = chain["levels"], chain["links"]
    if "L_pre_train" in levels:
        return float(levels["L_pre_train"]["value"])
    if "L_pre" in levels and "link_pretrain_gap" in links:
        return float(levels["L_pre"]["value"]) - float(links["link_pretrain_gap"]["value"])
    if "L_adapt" in levels and "link_total" in links:
        return float(levels["L_adapt"]["value"]) - float(links["link_total"]["value"])
    return None


def _chain_bar(ax: Axes, x: float, bottom: float, row: dict[str, Any], name: str, gid: str,
               drawn: list[float], flip: bool = False) -> float:
    """One bar of a waterfall from ``bottom`` by the row's value (down by it with ``flip``), its CI as
    an error bar at its end; appends the end and the error bar's ends to ``drawn`` and returns the end."""
    value = float(row["value"])
    height = -value if flip else value
    (bar,) = ax.bar([x], [height], bottom=[bottom], width=0.78, color=CHAIN_BARS[name][0], edgecolor="0.2",
                    linewidth=0.6, hatch="//" if name == "link_adapt_gap" else None)
    bar.set_gid(f"{gid}:{name}")
    below, above = interval_errors(pd.DataFrame([row]))[:, 0]
    if flip:
        below, above = above, below
    end = bottom + height
    ax.errorbar([x], [end], yerr=[[below], [above]], color="black", capsize=3, linewidth=1.0, linestyle="none")
    drawn += [end, end - below, end + above]
    return end


def _connector(ax: Axes, left: float, right: float, level: float) -> None:
    """A dotted line at ``level`` from the bar at ``left`` to the bar at ``right``."""
    ax.plot([left + 0.39, right - 0.39], [level, level], color="0.4", linestyle=":", linewidth=1.0)


def _draw_chain(ax: Axes, chain: dict[str, Any], x0: float) -> list[float]:
    """One adapter's waterfall from x0: L̂_pre, the three links to L_adapt, the total, and the
    adaptation gap down to L̂_adapt, with dotted connectors between levels; returns the levels and
    error bar ends drawn (for the y range)."""
    base = _chain_base(chain)
    if base is None:
        return []
    links, gid = chain["links"], f"chain:{chain['adapter']}:{chain['shots']}:{chain['split']}"
    drawn = [base]
    if "L_pre_train" in chain["levels"]:
        _chain_bar(ax, x0, 0.0, chain["levels"]["L_pre_train"], "L_pre_train", gid, drawn)
    level: float | None = base
    for i, name in enumerate(CHAIN_STEPS, start=1):
        if level is None or name not in links:
            level = None  # a link not measured: the levels after it are unknown
            continue
        _connector(ax, x0 + i - 1, x0 + i, level)
        level = _chain_bar(ax, x0 + i, level, links[name], name, gid, drawn)
    if "link_total" in links:
        _connector(ax, x0, x0 + 4, base)
        top = _chain_bar(ax, x0 + 4, base, links["link_total"], "link_total", gid, drawn)
        level = top if level is None else level
    if level is not None and "link_adapt_gap" in links:
        _connector(ax, x0 + 4, x0 + 5, level)
        _chain_bar(ax, x0 + 5, level, links["link_adapt_gap"], "link_adapt_gap", gid, drawn, flip=True)
    return [x for x in drawn if np.isfinite(x)]


def chain_figure(results: pd.DataFrame, loss_unit: str = LOSS_UNIT) -> Figure | None:
    """The error chain of THEORY.md section 1 as waterfalls at the last checkpoint with adaptation
    rows (``error_chains``): per adapter, a bar for L̂_pre (from 0), the links that take it to L_pre,
    L*_adapt and L_adapt (each from the level the previous one reached, its CI as an error bar at its
    end), the total L_adapt − L̂_pre (from L̂_pre), and the adaptation gap from L_adapt down to
    L̂_adapt. One panel per number of shots (small multiples) and task view (a row of panels per
    split, ID and OOD); the adapters side by side in each. The y axis is shared and starts at 0
    unless the levels lie close together far from it (the label then says so). Returns None when
    no chain can be drawn (no link, or no level to start from).

    Each bar ends where the chain has got to (its gid names it, CHAIN_BARS):

    >>> row = {"step": 5, "n": 100, "level": 0.95, "method": "t"}
    >>> chain = dict(adapter="linear", shots=8, split="test")
    >>> results = pd.DataFrame([dict(row, quantity=q, value=v, lower=v - 0.01, upper=v + 0.01, **c) for q, v, c in (
    ...     ("L_pre_train", 0.6, {}), ("link_pretrain_gap", 0.1, {}),
    ...     ("link_interface", -0.2, dict(adapter="linear", split="test")),
    ...     ("link_adapt_excess", 0.15, chain), ("link_total", 0.05, chain))])
    >>> ax = chain_figure(results).axes[0]
    >>> [(bar.get_gid().rsplit(":", 1)[1], round(float(bar.get_y() + bar.get_height()), 4))
    ...  for bar in ax.patches]  # doctest: +NORMALIZE_WHITESPACE
    [('L_pre_train', 0.6), ('link_pretrain_gap', 0.7), ('link_interface', 0.5), ('link_adapt_excess', 0.65),
     ('link_total', 0.65)]
    """
    chains = [chain for chain in error_chains(results) if _chain_base(chain) is not None]
    if not chains:
        return None
    splits = list(dict.fromkeys(chain["split"] for chain in chains))
    shots = list(dict.fromkeys(chain["shots"] for chain in chains))
    adapters = list(dict.fromkeys(chain["adapter"] for chain in chains))
    per_panel = max(sum(1 for c in chains if c["split"] == split and c["shots"] == shot)
                    for split in splits for shot in shots)
    width = max(3.4, 7 * _BAR_SLOT * per_panel + 1.2)
    columns = max(1, min(len(shots), int(_MAX_CHAIN_WIDTH // width)))
    wraps = -(-len(shots) // columns)
    rows = len(splits) * wraps
    fig = Figure(figsize=(max(10.0, width * columns), 3.2 * rows + 1.5), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False, sharey=True)
    used, drawn = set(), []
    for i, split in enumerate(splits):
        for j, shot in enumerate(shots):
            ax = axes[i * wraps + j // columns, j % columns]
            used.add(id(ax))
            panel = [c for c in chains if c["split"] == split and c["shots"] == shot]
            panel.sort(key=lambda c: adapters.index(c["adapter"]))
            for k, chain in enumerate(panel):
                drawn += _draw_chain(ax, chain, 7.0 * k)
            ax.set_xticks([7.0 * k + 2.5 for k in range(len(panel))],
                          labels=[ADAPTER_NAMES.get(c["adapter"], str(c["adapter"])) for c in panel], fontsize=9)
            ax.set_xlim(-0.8, 7.0 * max(len(panel), 1) - 1.2)
            where = [SPLIT_NAMES.get(split, str(split))] if split is not None else []
            where.append(f"{shot} shots" if shot is not None else "shots not recorded")
            ax.set_title(", ".join(where), fontsize=10)
            ax.grid(axis="y", alpha=0.3)
            ax.tick_params(axis="y", labelsize=8)
    for ax in axes.flat:
        if id(ax) not in used:
            ax.set_visible(False)
    low, high = min(drawn), max(drawn)
    span = high - low if high > low else max(abs(high), 1.0) * 0.1
    cut = low > 0 and span < 0.5 * high
    bottom = low - 0.25 * span if cut else min(0.0, low - 0.05 * span)
    axes[0, 0].set_ylim(bottom, high + 0.12 * span)
    for row in axes:
        row[0].set_ylabel(f"loss ({loss_unit}){', axis not from 0' if cut else ''}", fontsize=9)
    handles = [Patch(facecolor=color, edgecolor="0.2", hatch="//" if name == "link_adapt_gap" else None)
               for name, (color, _) in CHAIN_BARS.items()]
    handles.append(Line2D([], [], color="black", marker="_", markersize=10, linestyle="none"))
    labels = [label for _, label in CHAIN_BARS.values()] + ["CI of each link, at the bar's end"]
    fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=9)
    fig.suptitle(f"Error chain at step {chains[0]['step']}: {L_PRE_TRAIN} → {L_PRE} → {L_ADAPT_STAR} → "
                 f"{L_ADAPT}, per adapter", fontsize=11)
    return fig


def plot_chain(results: pd.DataFrame, path: str | Path, loss_unit: str = LOSS_UNIT) -> Path | None:
    """``chain_figure`` written as a PNG at ``path``; None (nothing written) when it has nothing to draw.

    >>> import tempfile, os
    >>> plot_chain(pd.DataFrame({"quantity": ["L_un"], "step": [0]}), os.path.join(tempfile.mkdtemp(), "c.png")) is None
    True
    """
    fig = chain_figure(results, loss_unit)
    return save_figure(fig, path) if fig is not None else None
