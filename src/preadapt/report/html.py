"""The HTML report of one run, answer first: what was run, every statement's verdict and the headline
numbers (the first screen), the key figures, the detail sections (the adaptation results and the error
chain when they were measured, the interface of L_pre and L*_adapt across checkpoints, then the theory's
checks), then (collapsed) every quantity, the config and the provenance, and last where the run's
wall time went (``time_table``), when the run's timings are given.

The page is self-contained (inline CSS, figures as relative PNG paths, no external resources) and
rendered with jinja2 autoescaping, so a config or an error message can never inject markup. It is
laid out for a 1280 px window: wide tables are transposed (a theorem's terms, the provenance) or
split (at most MAX_STEP_COLUMNS checkpoints per table), and estimate cells wrap between value,
interval and n, so every table, and its verdict column, fits (``preadapt.report.browser`` measures it).
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from collections.abc import Collection
from typing import Any, Mapping

import jinja2
import markupsafe
import pandas as pd
import yaml

from preadapt.report.figures import (
    LOSS_UNIT,
    plot_accuracy,
    plot_blocks,
    plot_chain,
    plot_lemma_4_3,
    plot_losses,
    plot_negatives,
    plot_theory,
)
from preadapt.report.interface import (
    RESAMPLES,
    interface_analysis,
    interface_table,
    lemma_4_3_applies,
    plot_interface,
    points_table,
    pretraining_unit,
)
from preadapt.report.tables import (
    ADAPTATION_COLUMNS,
    CHAIN_LINKS,
    CHOSEN_QUANTITIES,
    SPLIT_NAMES,
    TERM_MEANINGS,
    adaptation_splits,
    adaptation_step,
    adaptation_table,
    blocks_table,
    bound_table,
    chain_table,
    chain_task_classes,
    checkpoint_table,
    chosen_table,
    distortion_table,
    dominant_level,
    format_level,
    format_term,
    headline_numbers,
    headline_verdicts,
    negatives_table,
    split_column,
    summary_table,
    term_breakdown,
    term_notes,
    theory_checks,
    theory_table,
    vacuous_from,
)

FIGURES = {
    "losses": plot_losses,
    "lemma_4_3": plot_lemma_4_3,
    "accuracy": plot_accuracy,
    "theory": plot_theory,
    "negatives": plot_negatives,
    "blocks": plot_blocks,
    "chain": plot_chain,
}
"""Figure name (``figures/NAME.png``) and the function that draws it."""

LOSS_FIGURES = ("losses", "lemma_4_3", "theory", "negatives", "blocks", "chain")
"""The figures whose axes show a loss ℓ (they take ``loss_unit``)."""

HIDDEN_RUN_COLUMNS = ("config_json",)
"""Provenance columns left out of the page (the config is shown once, as YAML)."""

MAX_STEP_COLUMNS = 5
"""At most this many checkpoint columns in one table; more are split into several tables."""


def _estimate(cell: Any) -> markupsafe.Markup:
    """An estimate cell (``format_estimate``'s ``value [lower, upper] n=N (level)``) as HTML whose
    parts never break inside but may wrap between each other, so that a narrow column still fits.

    >>> str(_estimate("0.8123 [0.8050, 0.8196] n=20000 (99.9%)"))
    '<span class="v">0.8123</span> <span>[0.8050, 0.8196]</span> <span>n=20000</span> <span>(99.9%)</span>'
    >>> str(_estimate("<b>"))
    '<span class="v">&lt;b&gt;</span>'
    """
    parts = re.findall(r"\[[^\]]*\]|\([^)]*\)|\S+", str(cell))
    return markupsafe.Markup(" ").join(
        markupsafe.Markup('<span class="v">{}</span>' if i == 0 else "<span>{}</span>").format(part)
        for i, part in enumerate(parts))


ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("preadapt.report", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENVIRONMENT.filters["estimate"] = _estimate
"""The jinja2 environment of every report page (run and sweep): the package's templates, autoescaping,
undefined names an error, and the ``estimate`` filter."""


def cell_text(value: Any) -> str:
    """A table cell as text: "" for a missing value, an integral float (from a CSV) without ``.0``.

    >>> cell_text(None), cell_text(float("nan")), cell_text(20000.0), cell_text("mean")
    ('', '', '20000', 'mean')
    """
    if value is None:
        return ""
    try:
        if pd.isna(value):
            return ""
    except (TypeError, ValueError):
        pass
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _records(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    return [str(c) for c in table.columns], [[cell_text(v) for v in row] for row in table.itertuples(index=False)]


def _verdict_level(results: pd.DataFrame) -> str:
    """The level of the slack intervals (the verdict level), as a percentage."""
    if len(results) == 0 or "bound" not in results.columns:
        return ""
    slack = results[(results["quantity"] == "bound_slack") & results["bound"].notna()]
    levels = slack["level"].dropna().unique()
    return ", ".join(format_level(level) for level in sorted(levels))


THEOREMS = {"theorem_4_1": "Theorem 4.1", "theorem_4_5": "Theorem 4.5"}
"""The theorems whose every term the Theory section tabulates."""

CONSTANT_TERMS = ("rademacher_constant", "confidence_constant", "delta")
"""The parameters of Gen_M that the page states (the constants the O hides, default 1, and δ)."""

THEORY_HEADERS = {"step": "step", "check": "check", "statement": "statement (lhs ≤ rhs)", "lhs": "lhs", "rhs": "rhs",
                  "slack": "slack = rhs − lhs", "status": "status", "note": "note"}
NEGATIVES_HEADERS = {"k": "k", "tau_k": "τ_k", "coef_un": "1/(1 − τ_k)", "coef_tau": "τ_k/(1 − τ_k)",
                     "lhs": "lhs: L^μ_sup,D", "rhs": "rhs", "vacuity_threshold": "vacuity threshold",
                     "status": "status", "vacuous": "vacuous?"}
BLOCKS_HEADERS = {"b": "b", "L_un_block": "L^block_un(b)", "lhs": "Prop. 6.2 lhs: L^μ_sup",
                  "rhs": "Prop. 6.2 rhs: (L^block_un − τ)/(1 − τ)", "proposition_6_2": "Prop. 6.2",
                  "block_below_un": "L^block_un ≤ L_un", "block_monotone": "L^block_un(b) ≤ L^block_un(b_prev)"}
ADAPTATION_HEADERS = {"adapter": "adapter", "task_classes": "task classes", "shots": "shots", "split": "task view",
                      "L_adapt_train": "L̂_adapt (training samples)", "L_adapt": "L_adapt", "L_adapt_star": "L*_adapt"}
CHAIN_HEADERS = {"adapter": "adapter", "task_classes": "task classes", "shots": "shots", "split": "task view",
                 **{link: f"{name}: {CHAIN_LINKS[link]}" for link, name in (
                     ("link_pretrain_gap", "pretraining gap"), ("link_interface", "interface"),
                     ("link_adapt_excess", "adaptation excess"), ("link_adapt_gap", "adaptation gap"),
                     ("link_total", "total"))}}
DISTORTION_HEADERS = {"adapter": "adapter", "task_classes": "task classes", "shots": "shots", "split": "task view",
                      "distortion_outside": "outside S: ‖(B_FT − B_0)·P_S⊥‖",
                      "distortion_inside": "inside S: ‖(B_FT − B_0)·P_S‖"}
CHOSEN_HEADERS = {"adapter": "adapter", "task_classes": "task classes", "shots": "shots",
                  "chosen_lr": "learning rate", "chosen_steps": "steps", "chosen_penalty": "penalty"}
STATUS_COLUMNS = ("status", "proposition_6_2", "block_below_un", "block_monotone")
"""Columns shown as verdict badges; PLAIN_COLUMNS as text; every other column as a number."""
PLAIN_COLUMNS = ("step", "check", "statement", "note", "k", "b", "vacuous", "adapter", "task_classes", "shots", "split")


def _columns(table: pd.DataFrame, headers: dict[str, str]) -> list[dict[str, str]]:
    """Column specs for the template's table macro: key, header, and how a cell is shown."""
    return [{"key": str(c), "header": headers.get(str(c), str(c)),
             "kind": "status" if c in STATUS_COLUMNS else "text" if c in PLAIN_COLUMNS else "num"}
            for c in table.columns]


def _table(table: pd.DataFrame, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {"columns": _columns(table, headers or {}),
            "rows": [{str(k): cell_text(v) for k, v in row.items()} for row in table.to_dict("records")]}


def _without_empty_notes(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` without its ``note`` column when no row has a note (a column of blanks only costs width)."""
    return table.drop(columns=["note"]) if "note" in table.columns and (table["note"] == "").all() else table


def _chunks(items: list[Any], size: int = MAX_STEP_COLUMNS) -> list[list[Any]]:
    """``items`` in consecutive groups of at most ``size``, as even as possible.

    >>> _chunks(list(range(7)), 5)
    [[0, 1, 2, 3], [4, 5, 6]]
    """
    if not items:
        return []
    count = -(-len(items) // size)
    per = -(-len(items) // count)
    return [items[i:i + per] for i in range(0, len(items), per)]


def _transposed(frame: pd.DataFrame, kinds: Mapping[str, str] | None = None, default: str = "num",
                details: Mapping[str, str] | None = None, merge: bool = False) -> list[dict[str, Any]]:
    """A frame whose columns are checkpoints (or runs) as tables for the ``row_table`` macro, split
    so that none has more than MAX_STEP_COLUMNS of them. Each row: label, detail (small text under
    it), kind (num | status | text) and cells; with ``merge``, a row whose cells are all equal is
    one cell spanning the table (``span``)."""
    tables = []
    for columns in _chunks([str(c) for c in frame.columns]):
        rows = []
        for label, values in zip(frame.index, frame[[c for c in frame.columns if str(c) in columns]].to_numpy()):
            cells = [cell_text(v) for v in values]
            same = merge and len(cells) > 1 and len(set(cells)) == 1 and cells[0] != ""
            rows.append({"label": str(label), "detail": (details or {}).get(str(label), ""),
                         "kind": (kinds or {}).get(str(label), default), "cells": cells[:1] if same else cells,
                         "span": len(cells) if same else 1})
        tables.append({"columns": columns, "rows": rows})
    return tables


def _theorems(results: pd.DataFrame) -> list[dict[str, Any]]:
    """Per theorem checked: its term-by-term breakdown (checkpoints as columns), the premise notes of
    its checkpoints, the labels of its terms, and the constants at its last step."""
    table_level = dominant_level(results) if len(results) else None
    theorems = []
    for bound, title in THEOREMS.items():
        breakdown = term_breakdown(results, bound)
        if breakdown.empty or len(breakdown.columns) == 0:
            continue
        checks = [check for check in theory_checks(results) if check["bound"] == bound]
        last = [check for check in theory_checks(results, last=True) if check["bound"] == bound][-1]
        constants = [(name, format_term(last["terms"][name], table_level) if name in last["terms"] else "not recorded")
                     for name in CONSTANT_TERMS]
        premises = {}
        for check in checks:
            if check["note"]:
                premises.setdefault(check["note"], []).append(str(check["step"]))
        theorems.append({
            "bound": bound, "title": title, "step": last["step"], "status": last["status"], "constants": constants,
            "tables": _transposed(breakdown, kinds={"status": "status"}, details=TERM_MEANINGS, merge=True),
            "notes": term_notes(results, bound),
            "premises": [(", ".join(steps), note) for note, steps in premises.items()],
        })
    return theorems


def _split_name(split: str | None) -> str:
    return SPLIT_NAMES.get(split, str(split)) if split is not None else ""


def _adaptation(results: pd.DataFrame) -> dict[str, Any] | None:
    """The Adaptation section at the last checkpoint with adaptation rows: the losses and accuracies
    (one column group per task view), the error chain, the distortion and the chosen hyperparameters
    (None for each table without rows); None when the results have no adaptation rows."""
    step = adaptation_step(results)
    if step is None:
        return None
    table = adaptation_table(results, step)
    adapted = results[(results["quantity"] == "L_adapt") & (results["step"] == step)]
    sizes = sorted({int(size) for size in adapted["task_classes"].dropna()}) if "task_classes" in adapted else []
    accuracy = f"AVG-{sizes[0]} accuracy" if len(sizes) == 1 else "AVG accuracy"
    headers = dict(ADAPTATION_HEADERS, acc_avg=accuracy)
    lead = [column for column in ("adapter", "task_classes", "shots", "L_adapt_train") if column in table.columns]
    groups = []
    for split in adaptation_splits(results, step):
        columns = [{"key": split_column(quantity, split), "header": headers[quantity]}
                   for quantity in ADAPTATION_COLUMNS if split_column(quantity, split) in table.columns]
        if columns:
            groups.append({"label": _split_name(split), "columns": columns})
    chain = chain_table(results, step)
    distortion = distortion_table(results, step)
    chosen = chosen_table(results, step)
    return {
        "step": step,
        "tasks": (f"{sizes[0]}-class tasks" if len(sizes) == 1 else
                  f"tasks of {', '.join(map(str, sizes[:-1]))} and {sizes[-1]} classes" if sizes else ""),
        "chain_classes": chain_task_classes(results, step),
        "table": {"lead": [{"key": c, "header": headers[c], "kind": "text" if c in PLAIN_COLUMNS else "num"}
                           for c in lead],
                  "groups": groups, "grouped": any(group["label"] for group in groups),
                  "rows": [{str(k): cell_text(v) for k, v in row.items()} for row in table.to_dict("records")]},
        "chain": _table(chain, CHAIN_HEADERS) if len(chain) else None,
        "distortion": _table(distortion, DISTORTION_HEADERS) if len(distortion) else None,
        "chosen": _table(chosen, CHOSEN_HEADERS) if len(chosen) and set(chosen.columns) & set(CHOSEN_QUANTITIES)
        else None,
    }


INTERFACE_HEADERS = {"adapter": "adapter", "split": "task view", "spearman": "Spearman ρ [CI]", "points": "points",
                     "clusters": "clusters (resampled)", "breaks": "breaks the pattern", "note": "note",
                     "run": "run", "step": "step", "L_pre": "L_pre", "L_adapt_star": "L*_adapt"}
INTERFACE_NUMBERS = ("spearman", "points", "L_pre", "L_adapt_star")
"""The interface tables' columns shown as numbers (every other column as text)."""


def _interface_page_table(table: pd.DataFrame) -> dict[str, Any]:
    table = _without_empty_notes(table)
    return {"columns": [{"key": str(c), "header": INTERFACE_HEADERS.get(str(c), str(c)),
                         "kind": "num" if c in INTERFACE_NUMBERS else "text"} for c in table.columns],
            "rows": [{str(k): cell_text(v) for k, v in row.items()} for row in table.to_dict("records")]}


def interface_context(results: pd.DataFrame, figure: str | Path, *, pre_unit: str, star_unit: str,
                      theory_runs: Collection[str] = (), labels: Mapping[str, str] | None = None,
                      pretrainings: Mapping[str, str] | None = None,
                      groups: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """The Interface section of a run's or a sweep's page (``preadapt.report.interface``): the sentences,
    the table, every point, and the figure written at ``figure`` (a path ending ``figures/NAME.png``; a
    stale one is removed when there is nothing to draw). None, and no figure, when no adapter and task
    view has at least 3 points with both L_pre and L*_adapt. ``pretrainings``: run → its pretraining,
    for a sweep whose runs share some (``interface_analysis``); ``groups``: run → its grid point, for
    the "same pre-training loss, different downstream" pairs (default: each run its own)."""
    figure = Path(figure)
    views = interface_analysis(results, theory_runs=theory_runs, labels=labels, pretrainings=pretrainings,
                               groups=groups)
    if not views:
        if figure.exists():
            figure.unlink()
        return None
    drawn = plot_interface(views, figure, pre_unit=pre_unit, star_unit=star_unit, labels=labels)
    table_level = dominant_level(results) if len(results) else None
    levels = sorted({view.correlation.level for view in views})
    table = interface_table(views, labels)
    views_of: dict[str, list[str]] = {}  # each note once, with the views it is about
    for row in table.to_dict("records"):
        for note in filter(None, str(row["note"]).split("; ")):
            views_of.setdefault(note, []).append(f"{row['adapter']}, {row['split']}")
    notes: dict[str, list[str]] = {}  # the notes of each set of views, together
    for note, where in views_of.items():
        notes.setdefault("every view" if len(where) == len(table) > 1 else "; ".join(where), []).append(note)
    return {
        "views": [{"direction": view.direction, "sentence": view.sentence} for view in views],
        "contrasts": [{"found": bool(view.contrasts), "sentence": view.contrast_sentence} for view in views],
        # none found in any view: one line instead of one per view
        "contrasts_none": None if any(view.contrasts for view in views) else "; ".join(
            f"{view.label}: {view.compared} pair{'' if view.compared == 1 else 's'}" for view in views),
        "table": _interface_page_table(table.drop(columns=["note"])),
        "notes": [(where.capitalize() if where == "every view" else where, "; ".join(found))
                  for where, found in notes.items()],
        "points": _interface_page_table(points_table(views, labels, table_level)),
        "figure": f"{figure.parent.name}/{figure.name}" if drawn is not None else None,
        "single": views[0].cluster_unit == "checkpoint",
        "level": ", ".join(format_level(level) for level in levels),
        "resamples": RESAMPLES,
        "bound": any(view.bound_taus for view in views),
    }


def _provenance(runs: pd.DataFrame | None) -> list[dict[str, Any]]:
    """The provenance rows transposed (one row per field, one column per run), so they fit the page."""
    if runs is None or len(runs) == 0:
        return []
    shown = runs.drop(columns=[c for c in HIDDEN_RUN_COLUMNS if c in runs.columns])
    label = shown["run_id"].astype(str) if "run_id" in shown.columns else pd.Series(range(len(shown))).astype(str)
    frame = pd.DataFrame(shown.to_numpy().T, index=shown.columns, columns=label.tolist())
    return _transposed(frame, default="text")


RUN_FIELDS = {
    "world": ("classes", "dim", "noise", "separation", "prior", "warp", "vocabulary", "length", "dataset", "split"),
    "encoder": ("hidden", "out_dim", "norm_bound", "channels", "embedding_dim"),
    "objective": ("loss", "negatives", "block_size", "temperature"),
}
"""The config fields the headline sentence names for each component (those present and set)."""


def _component(config: Mapping[str, Any], section: str) -> str:
    part = config.get(section)
    if not isinstance(part, Mapping):
        return ""
    fields = [f"{name}={_value(part[name])}" for name in RUN_FIELDS[section] if part.get(name) not in (None, "")]
    return f"{part.get('kind', section)}" + (f" ({', '.join(fields)})" if fields else "")


def _value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return "true" if value is True else "false" if value is False else cell_text(value)


def run_sentence(config: Mapping[str, Any], steps: list[int]) -> str:
    """What was run, in one sentence: encoder, objective, world, training length and checkpoints.

    >>> run_sentence({"world": {"kind": "gaussian", "classes": 20, "dim": 16}, "encoder": {"kind": "mlp",
    ...     "hidden": [64]}, "objective": {"kind": "curl", "loss": "logistic", "negatives": 1},
    ...     "pretrain": {"tuples": 20000, "epochs": 10, "batch_size": 256}}, [0, 50, 790])
    'Encoder mlp (hidden=[64]) pretrained with objective curl (loss=logistic, negatives=1) on world gaussian (classes=20, dim=16) for 790 steps (10 epochs over 20000 tuples, batches of 256); checked at checkpoints 0, 50 and 790.'
    """
    encoder, objective, world = (_component(config, section) for section in ("encoder", "objective", "world"))
    parts = []
    if encoder:
        parts.append(f"Encoder {encoder}")
    if objective:
        parts.append(f"pretrained with objective {objective}" if parts else f"Objective {objective}")
    if world:
        parts.append(f"on world {world}")
    pretrain = config.get("pretrain") if isinstance(config.get("pretrain"), Mapping) else {}
    if steps:
        length = [f"{pretrain['epochs']} epochs" if pretrain.get("epochs") else "",
                  f"over {pretrain['tuples']} tuples" if pretrain.get("tuples") else "",
                  f"batches of {pretrain['batch_size']}" if pretrain.get("batch_size") else ""]
        detail = " ".join(p for p in length[:2] if p) + (", " if any(length[:2]) and length[2] else "") + length[2]
        parts.append(f"for {steps[-1]} steps" + (f" ({detail.strip()})" if detail.strip() else ""))
    listed = (", ".join(str(s) for s in steps[:-1]) + " and " if len(steps) > 1 else "") + (str(steps[-1]) if steps else "")
    sentence = " ".join(parts) or "A run"
    return sentence + (f"; checked at checkpoint{'s' if len(steps) > 1 else ''} {listed}." if steps else ".")


def loss_unit(config: Mapping[str, Any]) -> str:
    """The unit of the loss ℓ on the figures: bits for the base-2 logistic loss, else ℓ's name
    (docs/quantities.md: ℓ is ``evaluate.loss``, else the CURL objective's loss, else logistic).

    >>> loss_unit({"objective": {"kind": "curl", "loss": "hinge"}}), loss_unit({})
    ('ℓ = hinge', 'bits')
    """
    evaluate = config.get("evaluate") if isinstance(config.get("evaluate"), Mapping) else {}
    objective = config.get("objective") if isinstance(config.get("objective"), Mapping) else {}
    loss = evaluate.get("loss") or (objective.get("loss") if objective.get("kind") == "curl" else None) or "logistic"
    return LOSS_UNIT if loss == "logistic" else f"ℓ = {loss}"


def parse_config_yaml(config_yaml: str) -> dict[str, Any]:
    """A run's ``config.yaml`` text as a mapping; {} when it is empty or not a YAML mapping."""
    try:
        config = yaml.safe_load(config_yaml) if config_yaml else None
    except yaml.YAMLError:
        return {}
    return config if isinstance(config, dict) else {}


TOP_STAGES = ["start-up", "sampling", "pretraining", "evaluation", "bound checks", "storing", "other", "report"]
"""The top-level stages of a run (``preadapt.experiment.run.pipeline``) in the order they happen;
the report lists them so, and any other after them in the stored order."""


def time_table(timings: pd.DataFrame, report_seconds: float | None = None) -> pd.DataFrame:
    """Where a run's time went, as the report shows it: the store's ``timings`` rows (``stage``,
    ``seconds``, ``calls``) with ``name`` (the stage's last part), ``depth`` (0 for a top-level stage)
    and ``share`` (of the total, the sum of the top-level stages, which do not overlap). Top-level
    stages in ``TOP_STAGES`` order, each followed by its parts and, where they leave 0.005 s or more
    of it uncovered, a ``rest`` row (no calls); ``total`` last. ``report_seconds``: the report's own time, when
    ``timings`` has none yet (a report being written; a rebuilt one shows the stored time).

    >>> timings = pd.DataFrame({"stage": ["sampling", "start-up", "pretraining", "evaluation", "evaluation/L_un"],
    ...                         "seconds": [1.0, 2.0, 3.0, 8.0, 6.0], "calls": [1, 1, 1, 2, 2]})
    >>> time_table(timings, report_seconds=2.0)
                 stage         name  depth  seconds   share  calls
    0         start-up     start-up      0      2.0  0.1250      1
    1         sampling     sampling      0      1.0  0.0625      1
    2      pretraining  pretraining      0      3.0  0.1875      1
    3       evaluation   evaluation      0      8.0  0.5000      2
    4  evaluation/L_un         L_un      1      6.0  0.3750      2
    5  evaluation/rest         rest      1      2.0  0.1250   <NA>
    6           report       report      0      2.0  0.1250      1
    7            total        total      0     16.0  1.0000   <NA>
    """
    merged = timings.groupby("stage", sort=False, as_index=False).agg(seconds=("seconds", "sum"), calls=("calls", "sum"))
    rows = [dict(stage=str(stage), seconds=float(seconds), calls=int(calls))
            for stage, seconds, calls in merged[["stage", "seconds", "calls"]].itertuples(index=False)]
    if report_seconds is not None and not any(row["stage"] == "report" for row in rows):
        rows.append(dict(stage="report", seconds=float(report_seconds), calls=1))
    rank = {name: i for i, name in enumerate(TOP_STAGES)}
    top = sorted((row for row in rows if "/" not in row["stage"]),  # stable: other stages keep their order
                 key=lambda row: rank.get(row["stage"], len(TOP_STAGES)))
    total = sum(row["seconds"] for row in top)

    def with_parts(row: dict[str, Any], depth: int) -> list[dict[str, Any]]:
        out = [dict(row, name=row["stage"].rsplit("/", 1)[-1], depth=depth)]
        children = [child for child in rows if child["stage"].rsplit("/", 1)[0] == row["stage"]
                    and child["stage"].count("/") == depth + 1]
        for child in children:
            out.extend(with_parts(child, depth + 1))
        rest = row["seconds"] - sum(child["seconds"] for child in children)
        if children and rest >= 0.005:  # shown as at least 0.01 s
            out.append(dict(stage=f"{row['stage']}/rest", name="rest", depth=depth + 1, seconds=rest, calls=None))
        return out

    table = [part for row in top for part in with_parts(row, 0)]
    table.append(dict(stage="total", name="total", depth=0, seconds=total, calls=None))
    frame = pd.DataFrame(table, columns=["stage", "name", "depth", "seconds", "calls"])
    frame["share"] = frame["seconds"] / total if total > 0 else float("nan")
    frame["calls"] = pd.array(frame["calls"], dtype="Int64")
    return frame[["stage", "name", "depth", "seconds", "share", "calls"]]


def write_report(out_dir: str | Path, results: pd.DataFrame, runs: pd.DataFrame, config_yaml: str, title: str,
                 timings: pd.DataFrame | None = None) -> Path:
    """Write ``out_dir/figures/*.png`` and ``out_dir/report.html``; return the HTML's path.

    ``results`` is the tidy results frame, ``runs`` the store's provenance rows (any columns),
    ``config_yaml`` the resolved config as text (``config_json`` of ``runs`` is not repeated; the
    headline sentence and the figures' loss unit are read from it). Figures whose quantities were
    not measured are left out (and any stale PNG of that name removed); the page says so in their place.

    ``timings``: the run's ``timings`` rows (the store's table): the page ends with where the time
    went (``time_table``). Without a ``report`` row among them (a run writing its report), the report's
    own time is measured here, from the call to the last step before the page is written (figures and
    tables made: rendering and writing the page, after, are not in it); None: no such section.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    figures_dir = out_dir / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    config = parse_config_yaml(config_yaml)
    unit = loss_unit(config)
    figures = {}
    for name, plot in FIGURES.items():
        target = figures_dir / f"{name}.png"
        drawn = plot(results, target, loss_unit=unit) if name in LOSS_FIGURES else plot(results, target)
        if drawn is not None:
            figures[name] = f"figures/{name}.png"
        elif target.exists():
            target.unlink()

    steps = sorted(int(s) for s in results["step"].unique()) if len(results) else []
    table_level = dominant_level(results) if len(results) else None
    run_ids = set(results["run"].astype(str)) if len(results) and "run" in results.columns else set()
    interface = interface_context(results, figures_dir / "interface.png", pre_unit=pretraining_unit(config, unit),
                                  star_unit=unit, theory_runs=run_ids if lemma_4_3_applies(config) else ())
    all_bounds = bound_table(results)
    lemma = all_bounds[all_bounds["bound"].str.match(r"lemma_4_3( \(|$)")] if len(all_bounds) else all_bounds
    per_checkpoint = checkpoint_table(results)
    summary_columns, summary_rows = _records(summary_table(results))

    time_rows = None
    if timings is not None and len(timings):
        time_rows = [dict(row, seconds=f"{row['seconds']:.2f}", share=f"{row['share']:.1%}",
                          calls="" if pd.isna(row["calls"]) else int(row["calls"]))
                     for row in time_table(timings, report_seconds=time.perf_counter() - started).to_dict("records")]
    html = ENVIRONMENT.get_template("report.html").render(
        title=title,
        sentence=run_sentence(config, steps),
        verdicts=headline_verdicts(results),
        numbers=headline_numbers(results),
        provenance=_provenance(runs),
        config_yaml=config_yaml,
        last_step=steps[-1] if steps else None,
        summary_columns=summary_columns,
        summary_rows=summary_rows,
        lemma_rows=lemma.to_dict("records"),
        theory_last=_table(_without_empty_notes(theory_table(results, last=True).drop(columns=["step"])),
                           THEORY_HEADERS),
        theory_all=_table(theory_table(results), THEORY_HEADERS),
        theorems=_theorems(results),
        negatives=_table(negatives_table(results), NEGATIVES_HEADERS),
        vacuous_from=vacuous_from(results),
        blocks=_table(blocks_table(results), BLOCKS_HEADERS),
        verdict_level=_verdict_level(results),
        figures=figures,
        table_level=format_level(table_level) if table_level is not None and math.isfinite(table_level) else "",
        checkpoints=_transposed(per_checkpoint.rename(columns=lambda step: f"step {step}")),
        adaptation=_adaptation(results),
        interface=interface,
        time_rows=time_rows,
    )
    path = out_dir / "report.html"
    path.write_text(html, encoding="utf-8")
    return path
