"""Tables of a run's tidy results: every number with its confidence interval and its n.

The input everywhere is the tidy ``results`` frame of DESIGN.md section 3: one row per measured
quantity with ``run, step, quantity, value, lower, upper, n, level, method`` and the context
columns that apply (NaN/None where they do not). Cells are strings, formatted once here, so the
HTML report and the command line show the same digits.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping

import pandas as pd

CONTEXT_COLUMNS = ("adapter", "split", "negatives", "block_size", "task_classes", "top_r", "shots", "bound", "term")
"""Context columns that tell rows of one quantity apart, in the order a label lists them. (``status``
and ``note`` are remarks on a row, not context.)"""

QUANTITY_GROUPS = (
    ("losses", ("L_pre_train", "L_pre", "L_un", "L_un_block", "L_un_same", "L_un_diff")),
    ("adaptation", ("L_sup_mean", "L_sup", "L_probe", "L_adapt_train", "L_adapt", "L_adapt_star", "acc_avg",
                    "acc_top")),
    ("chain", ("link_pretrain_gap", "link_interface", "link_adapt_excess", "link_adapt_gap", "link_total",
               "chosen_lr", "chosen_steps", "chosen_penalty", "distortion_outside", "distortion_inside")),
    ("diagnostics", ("tau", "tau_k", "s_f", "align", "uniform")),
    ("bounds", ("bound_lhs", "bound_rhs", "bound_slack", "bound_term")),
)
"""Known quantities in the order tables list them; an unknown name goes after the diagnostics
(or with the bounds when it starts with ``bound_``), alphabetically."""

_RANK = {name: (g, i) for g, (_, names) in enumerate(QUANTITY_GROUPS) for i, name in enumerate(names)}
_BOUNDS_GROUP = len(QUANTITY_GROUPS) - 1
_VALUE_ORDER = {
    "adapter": ("mean", "linear", "finetune", "lpft"),
    "split": ("train", "fresh", "test", "id", "ood"),
}

SPLIT_NAMES = {"test": "test samples", "id": "ID tasks", "ood": "OOD tasks"}
"""A reader's name for each task view (``split``) of the adaptation rows."""


def is_missing(value: Any) -> bool:
    """Whether a context or estimate field is unset: None, "", NaN or pandas' NA.

    >>> is_missing(None), is_missing(""), is_missing(float("nan")), is_missing(pd.NA), is_missing(0)
    (True, True, True, True, False)
    """
    if value is None:
        return True
    if isinstance(value, str):
        return value == ""
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def plain_text(value: Any) -> str:
    """A context value as a label shows it: integral floats (from a CSV) without ``.0``.

    >>> plain_text(2.0), plain_text(0.5), plain_text("ood")
    ('2', '0.5', 'ood')
    """
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if hasattr(value, "item") and not isinstance(value, str):
        return plain_text(value.item())
    return str(value)


def context_label(row: Mapping[str, Any]) -> str:
    """The quantity's name followed by the context fields that are set.

    >>> context_label({"quantity": "L_un", "negatives": 1, "task_classes": None})
    'L_un (negatives=1)'
    >>> context_label({"quantity": "acc_avg", "task_classes": 10.0, "adapter": "mean"})
    'acc_avg (adapter=mean, task_classes=10)'
    >>> context_label({"quantity": "tau"})
    'tau'
    """
    parts = [
        f"{column}={plain_text(row[column])}"
        for column in CONTEXT_COLUMNS
        if column in row and not is_missing(row[column])
    ]
    name = str(row["quantity"])
    return f"{name} ({', '.join(parts)})" if parts else name


def _decimals(value: float, lower: float, upper: float) -> int | None:
    """Decimals for fixed notation (None: use scientific notation).

    At least 4 decimals, more when the interval is narrow enough that its half-width needs them
    for 2 significant digits (at most 8); scientific below 1e-3 or from 1e4 in magnitude.
    """
    finite = [abs(x) for x in (value, lower, upper) if math.isfinite(x)]
    magnitude = max(finite, default=0.0)
    if magnitude != 0.0 and not 1e-3 <= magnitude < 1e4:
        return None
    decimals = 4
    half_width = 0.5 * (upper - lower)
    if math.isfinite(half_width) and half_width > 0.0:
        decimals = max(decimals, min(8, 1 - math.floor(math.log10(half_width))))
    return decimals


def _number(x: float, decimals: int | None) -> str:
    if not math.isfinite(x):
        return str(x)
    if decimals is None:
        return f"{x:.3g}" if x == 0.0 else f"{x:.2e}"
    return f"{x:.{decimals}f}"


def format_level(level: Any) -> str:
    """A confidence level as a percentage.

    >>> format_level(0.95), format_level(0.999), format_level(None)
    ('95%', '99.9%', '')
    """
    if is_missing(level):
        return ""
    return f"{100.0 * float(level):.10g}%"


def format_estimate(value: float, lower: float, upper: float, n: Any, method: str, level: Any = None) -> str:
    """``value [lower, upper] n=N``, or ``value (exact)`` for an exact quantity.

    Digits follow the interval (see ``_decimals``); ``level``, when given, is appended for an
    interval whose level differs from the one a table states once (not for a zero-width one,
    such as an ``empirical`` mean over the training tuples).

    >>> format_estimate(0.81234, 0.80501, 0.81962, 20000, "t")
    '0.8123 [0.8050, 0.8196] n=20000'
    >>> format_estimate(0.05, 0.05, 0.05, None, "exact")
    '0.0500 (exact)'
    >>> format_estimate(0.012, -0.003, 0.027, 2000, "normal", level=0.999)
    '0.0120 [-0.0030, 0.0270] n=2000 (99.9%)'
    >>> format_estimate(2.5e-05, 1.0e-05, 4.0e-05, 500, "bootstrap")
    '2.50e-05 [1.00e-05, 4.00e-05] n=500'
    """
    value, lower, upper = float(value), float(lower), float(upper)
    if method == "exact":
        return f"{_number(value, _decimals(value, value, value))} (exact)"
    decimals = _decimals(value, lower, upper)
    text = f"{_number(value, decimals)} [{_number(lower, decimals)}, {_number(upper, decimals)}]"
    if not is_missing(n):
        text += f" n={int(n)}"
    if not is_missing(level) and lower != upper:
        text += f" ({format_level(level)})"
    return text


def context_sort_key(column: str, value: Any) -> tuple:
    """Sort key of one context value: unset first, known orders, then numbers or names.

    >>> sorted(["ood", None, "test", "id"], key=lambda split: context_sort_key("split", split))
    [None, 'test', 'id', 'ood']
    """
    if is_missing(value):
        return (0,)
    order = _VALUE_ORDER.get(column)
    if order is not None:
        return (1, order.index(value) if value in order else len(order), str(value))
    if isinstance(value, str):
        return (1, 0, value)
    return (1, float(value), "")


def _row_key(row: Mapping[str, Any]) -> tuple:
    quantity = str(row["quantity"])
    group, index = _RANK.get(quantity, (_BOUNDS_GROUP if quantity.startswith("bound_") else _BOUNDS_GROUP - 0.5, 99))
    context = tuple(context_sort_key(column, row.get(column)) for column in CONTEXT_COLUMNS if column != "bound")
    if group == _BOUNDS_GROUP:
        # Bound rows read lhs, rhs, slack within each bound.
        return (group, context_sort_key("bound", row.get("bound")), index, quantity, context)
    return (group, index, quantity, context)


def _keyed(results: pd.DataFrame) -> pd.DataFrame:
    """``results`` with a ``label`` (run-prefixed when several runs are present) and a sort ``key``."""
    rows = results.to_dict("records")
    several_runs = "run" in results.columns and results["run"].nunique(dropna=True) > 1
    labels = [
        f"{row['run']}: {context_label(row)}" if several_runs else context_label(row) for row in rows
    ]
    keyed = results.copy()
    keyed["label"] = labels
    keyed["key"] = [(row.get("run", "") if several_runs else "", _row_key(row)) for row in rows]
    return keyed


def _ordered_labels(keyed: pd.DataFrame) -> list[str]:
    firsts = keyed.drop_duplicates("label")
    return [label for _, label in sorted(zip(firsts["key"], firsts["label"]))]


def dominant_level(results: pd.DataFrame) -> float | None:
    """The most common interval level among the non-exact rows (the one a table states once).

    >>> dominant_level(pd.DataFrame({"level": [0.95, 0.95, 0.999, 1.0], "method": ["t", "t", "t", "exact"]}))
    0.95
    """
    levels = results.loc[results["method"] != "exact", "level"].dropna() if len(results) else []
    if len(levels) == 0:
        return None
    return float(pd.Series(levels).mode().iloc[0])


def estimate_cell(row: Mapping[str, Any], table_level: float | None) -> str:
    """One tidy row as a ``format_estimate`` cell, naming its level only when it differs from
    ``table_level`` (the level a table states once).

    >>> row = {"value": 0.3, "lower": 0.2, "upper": 0.4, "n": 50, "method": "t", "level": 0.999}
    >>> estimate_cell(row, 0.95), estimate_cell(row, 0.999)
    ('0.3000 [0.2000, 0.4000] n=50 (99.9%)', '0.3000 [0.2000, 0.4000] n=50')
    """
    level = row.get("level")
    differs = not is_missing(level) and table_level is not None and not math.isclose(float(level), table_level)
    return format_estimate(
        row["value"], row["lower"], row["upper"], row.get("n"), row["method"], level if differs else None
    )


def checkpoint_table(results: pd.DataFrame) -> pd.DataFrame:
    """Every quantity (one row per quantity and context) against the checkpoint steps.

    Rows run losses, adaptation, diagnostics, then bounds; cells are ``format_estimate`` strings
    ("" where a quantity was not measured at a step). An interval whose level differs from
    ``dominant_level(results)`` names its level.

    >>> results = pd.DataFrame({
    ...     "run": "r", "step": [0, 10, 0], "quantity": ["tau", "tau", "L_un"],
    ...     "value": [0.05, 0.05, 1.2], "lower": [0.05, 0.05, 1.1], "upper": [0.05, 0.05, 1.3],
    ...     "n": pd.array([None, None, 100], dtype="Int64"), "level": [1.0, 1.0, 0.95],
    ...     "method": ["exact", "exact", "t"], "negatives": pd.array([None, None, 1], dtype="Int64")})
    >>> checkpoint_table(results).to_dict("index")
    {'L_un (negatives=1)': {0: '1.2000 [1.1000, 1.3000] n=100', 10: ''}, 'tau': {0: '0.0500 (exact)', 10: '0.0500 (exact)'}}
    """
    steps = sorted(int(step) for step in results["step"].unique()) if len(results) else []
    if len(results) == 0:
        return pd.DataFrame(columns=pd.Index(steps, name="step"), index=pd.Index([], name="quantity"))
    keyed = _keyed(results)
    table_level = dominant_level(results)
    cells = {(row["label"], int(row["step"])): estimate_cell(row, table_level) for row in reversed(keyed.to_dict("records"))}
    labels = _ordered_labels(keyed)
    table = pd.DataFrame(
        [[cells.get((label, step), "") for step in steps] for label in labels],
        index=pd.Index(labels, name="quantity"),
        columns=pd.Index(steps, name="step"),
    )
    return table


SUMMARY_COLUMNS = ("quantity", "estimate", "lower", "upper", "n", "level", "method")


def summary_table(results: pd.DataFrame, step: int | None = None) -> pd.DataFrame:
    """Every quantity at one checkpoint (the last by default), one string cell per field.

    ``quantity`` is the context label; ``estimate``, ``lower``, ``upper`` share the digits of
    ``format_estimate``; ``n`` and ``level`` are empty for exact values.

    >>> results = pd.DataFrame({
    ...     "run": "r", "step": [0, 10, 10], "quantity": ["L_un", "L_un", "tau"],
    ...     "value": [1.3, 1.2, 0.05], "lower": [1.2, 1.1, 0.05], "upper": [1.4, 1.3, 0.05],
    ...     "n": pd.array([100, 100, None], dtype="Int64"), "level": [0.95, 0.95, 1.0],
    ...     "method": ["t", "t", "exact"]})
    >>> print(summary_table(results).to_string(index=False))
    quantity estimate  lower  upper   n level method
        L_un   1.2000 1.1000 1.3000 100   95%      t
         tau   0.0500 0.0500 0.0500            exact
    """
    if len(results) == 0:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    steps = sorted(int(s) for s in results["step"].unique())
    if step is None:
        step = steps[-1]
    elif int(step) not in steps:
        raise ValueError(f"step must be one of the checkpoints {steps}; got {step}")
    at_step = _keyed(results[results["step"] == step])
    at_step = at_step.iloc[sorted(range(len(at_step)), key=lambda i: at_step["key"].iloc[i])]
    rows = []
    for row in at_step.drop_duplicates("label").to_dict("records"):
        exact = row["method"] == "exact"
        value, lower, upper = float(row["value"]), float(row["lower"]), float(row["upper"])
        decimals = _decimals(value, value, value) if exact else _decimals(value, lower, upper)
        rows.append({
            "quantity": row["label"],
            "estimate": _number(value, decimals),
            "lower": _number(lower, decimals),
            "upper": _number(upper, decimals),
            "n": "" if exact or is_missing(row.get("n")) else str(int(row["n"])),
            "level": "" if exact else format_level(row.get("level")),
            "method": str(row["method"]),
        })
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


BOUND_COLUMNS = ("step", "bound", "lhs", "rhs", "slack", "status")
BOUND_SIDES = {"bound_lhs": "lhs", "bound_rhs": "rhs", "bound_slack": "slack"}


def bound_checks(results: pd.DataFrame) -> list[dict[str, Any]]:
    """The bound rows gathered into checks: one per run, step and statement (``bound``).

    Each check is ``{"run", "step", "bound", "name", "instance", "lhs", "rhs", "slack", "status",
    "note", "terms"}`` with the sides as row dicts (absent sides missing) and ``terms`` the
    ``bound_term`` rows by their ``term``. The sides of one check may carry different context (the
    lhs of Lemma 4.3 names its task size, the rhs its negatives); only when a statement was checked
    in several instances at one step (several rows of one side) are its rows split, by the context
    columns whose values differ between those rows (``negatives`` for k, ``block_size`` for b),
    which then appear in ``name`` and ``instance``. ``status`` and ``note`` are the slack row's,
    else the first set on lhs or rhs.

    >>> results = pd.DataFrame({
    ...     "run": "r", "step": 5, "quantity": ["bound_lhs", "bound_rhs", "bound_slack"] * 2 + ["bound_term"],
    ...     "value": [0.2, 0.3, 0.1, 0.2, 0.25, 0.05, 0.4], "lower": 0.0, "upper": 1.0, "n": 100, "level": 0.95,
    ...     "method": "t", "bound": "b", "negatives": [2, 2, 2, 4, 4, 4, 4], "status": "holds",
    ...     "term": [None] * 6 + ["tau_k"], "note": ""})
    >>> [(c["name"], c["instance"], list(c["terms"])) for c in bound_checks(results)]
    [('b (negatives=2)', {'negatives': 2}, []), ('b (negatives=4)', {'negatives': 4}, ['tau_k'])]
    """
    if len(results) == 0 or "bound" not in results.columns:
        return []
    bound_rows = results[results["quantity"].isin([*BOUND_SIDES, "bound_term"]) & results["bound"].notna()]
    statements: dict[tuple, list[dict[str, Any]]] = {}
    for row in bound_rows.to_dict("records"):
        statements.setdefault((str(row.get("run", "")), int(row["step"]), str(row["bound"])), []).append(row)
    checks = []
    for (run, step, bound), members in statements.items():
        sides = [row for row in members if row["quantity"] in BOUND_SIDES]
        by_side: dict[str, list[dict[str, Any]]] = {}
        for row in sides:
            by_side.setdefault(row["quantity"], []).append(row)
        instance_columns = [
            column for column in CONTEXT_COLUMNS
            if column not in ("bound", "term") and any(
                len({context_sort_key(column, row.get(column)) for row in rows}) > 1 for rows in by_side.values())
        ]
        groups: dict[tuple, dict[str, Any]] = {}
        for row in sides:
            key = tuple(context_sort_key(c, row.get(c)) for c in instance_columns)
            instance = {c: row[c] for c in instance_columns if c in row and not is_missing(row[c])}
            extra = [f"{column}={plain_text(value)}" for column, value in instance.items()]
            check = groups.setdefault(key, {
                "run": run, "step": step, "bound": bound, "key": key, "terms": {},
                "instance": {column: native_value(value) for column, value in instance.items()},
                "name": f"{bound} ({', '.join(extra)})" if extra else bound})
            check[BOUND_SIDES[row["quantity"]]] = row
        for row in members:
            if row["quantity"] == "bound_term" and not is_missing(row.get("term")):
                check = groups.get(tuple(context_sort_key(c, row.get(c)) for c in instance_columns))
                if check is not None:
                    check["terms"][str(row["term"])] = row
        checks.extend(groups.values())
    for check in checks:
        for field in ("status", "note"):
            values = [check[side].get(field) for side in ("slack", "lhs", "rhs") if side in check]
            check[field] = next((str(v) for v in values if not is_missing(v)), "")
    checks.sort(key=lambda c: (c["run"], c["step"], context_sort_key("bound", c["bound"]), c["key"]))
    return checks


def native_value(value: Any) -> Any:
    """A context value as a plain Python scalar (integral floats from a CSV as int).

    >>> import numpy as np
    >>> native_value(np.float64(5.0)), native_value(np.int64(3)), native_value("linear")
    (5, 3, 'linear')
    """
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _side_cells(check: Mapping[str, Any]) -> dict[str, str]:
    """lhs, rhs, slack of a check as ``format_estimate`` strings; a side whose level differs from
    the lhs's (the slack's stricter verdict level) names it."""
    lhs_level = check["lhs"].get("level") if "lhs" in check else None
    cells = {}
    for side in ("lhs", "rhs", "slack"):
        row = check.get(side)
        if row is None:
            cells[side] = ""
            continue
        level = row.get("level")
        differs = not (is_missing(level) or is_missing(lhs_level)) and not math.isclose(float(level), float(lhs_level))
        cells[side] = format_estimate(row["value"], row["lower"], row["upper"], row.get("n"), row["method"],
                                      level if differs else None)
    return cells


def bound_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per checked statement and checkpoint: lhs, rhs, slack = rhs − lhs, and the verdict.

    ``bound`` is the statement's name (with its context when it was checked in several instances,
    see ``bound_checks``). ``lhs``, ``rhs``, ``slack`` are ``format_estimate`` strings ("" for a
    side not recorded); the slack names its level when it differs from the lhs's (the stricter
    verdict level). ``status`` is holds | violated | inconclusive ("" when none is recorded).

    >>> results = pd.DataFrame({
    ...     "run": "r", "step": 5, "quantity": ["bound_lhs", "bound_rhs", "bound_slack"],
    ...     "value": [0.2, 0.3, 0.1], "lower": [0.18, 0.27, 0.05], "upper": [0.22, 0.33, 0.15],
    ...     "n": 1000, "level": [0.95, 0.95, 0.999], "method": "t", "bound": "lemma_4_3",
    ...     "status": [None, None, "holds"]})
    >>> bound_table(results).iloc[0].to_dict()  # doctest: +NORMALIZE_WHITESPACE
    {'step': 5, 'bound': 'lemma_4_3', 'lhs': '0.2000 [0.1800, 0.2200] n=1000',
     'rhs': '0.3000 [0.2700, 0.3300] n=1000', 'slack': '0.1000 [0.0500, 0.1500] n=1000 (99.9%)',
     'status': 'holds'}
    """
    table = [{"step": check["step"], "bound": check["name"], **_side_cells(check), "status": check["status"]}
             for check in bound_checks(results)]
    return pd.DataFrame(table, columns=list(BOUND_COLUMNS))


# The Theory section of the report (THEORY.md section 3).

CHECK_STATEMENTS = {
    "lemma_4_3": "L^μ_sup(f) ≤ (L_un(f) − τ)/(1 − τ)",
    "mean_below_diff": "L^μ_sup(f) ≤ L_un^≠(f)",
    "jensen_floor": "ℓ(0) = 1 ≤ L_un^=(f)",
    "lemma_4_4": "L_un^=(f) − 1 ≤ c′·s(f)",
    "theorem_4_1": "L^μ_sup(f̂) ≤ (L_un(f) − τ)/(1 − τ) + Gen_M/(1 − τ)",
    "theorem_4_5": "L^μ_sup(f̂) ≤ L_un^≠(f) + β·s(f) + η·Gen_M",
    "lemma_4_3_negatives": "L^μ_sup,D(f) ≤ (L_un(f) − collision floor)/(1 − τ_k)",
    "proposition_6_2": "L^μ_sup(f) ≤ (L^block_un(f) − τ)/(1 − τ)",
    "block_below_un": "L^block_un(f) ≤ L_un(f)",
    "block_monotone": "L^block_un(f; b) ≤ L^block_un(f; b_prev), b > b_prev",
}
"""The statement each known check tests, as lhs ≤ rhs, in the order the Theory section lists them
(others follow alphabetically, without a statement)."""

THEORY_COLUMNS = ("step", "check", "statement", "lhs", "rhs", "slack", "status", "note")

THEOREM_TERMS = (
    "tau", "L_un", "L_un_diff", "s_f", "c_prime", "beta", "eta", "Gen_M", "rademacher_part", "confidence_part",
    "Rad_S", "Rad_S_upper", "R", "M", "delta", "rademacher_constant", "confidence_constant", "comparator_step",
    "L_hat_un", "L_hat_un_comparator",
)
"""The order in which a terms table lists the terms of Theorems 4.1 and 4.5 (others follow, in
the order they were recorded)."""

INSTANCED_BY = {"lemma_4_3_negatives": "negatives", "proposition_6_2": "block_size", "block_below_un": "block_size",
               "block_monotone": "block_size"}
"""The context that names an instance of these statements (k or b), shown even where only one was checked."""

_CHECK_RANK = {name: i for i, name in enumerate(CHECK_STATEMENTS)}


def _check_key(check: Mapping[str, Any]) -> tuple:
    bound = check["bound"]
    return (check["run"], _CHECK_RANK.get(bound, len(_CHECK_RANK)), bound, check["key"], check["step"])


def theory_checks(results: pd.DataFrame, last: bool = False) -> list[dict[str, Any]]:
    """``bound_checks`` in the Theory section's order: statement (CHECK_STATEMENTS first), instance
    (k, b), step. With ``last``, only each statement's and instance's last checkpoint (per run).

    >>> row = {"run": "r", "quantity": "bound_slack", "value": 0.1, "lower": 0.0, "upper": 0.2, "n": 10,
    ...        "level": 0.999, "method": "t", "status": "holds"}
    >>> results = pd.DataFrame([dict(row, step=s, bound=b) for s in (0, 5) for b in ("zeta", "theorem_4_1", "lemma_4_3")])
    >>> [(c["step"], c["name"]) for c in theory_checks(results, last=True)]
    [(5, 'lemma_4_3'), (5, 'theorem_4_1'), (5, 'zeta')]

    The statements of INSTANCED_BY name their k or b even where only one was checked:

    >>> [c["name"] for c in theory_checks(pd.DataFrame([dict(row, step=0, bound="block_monotone", block_size=4)]))]
    ['block_monotone (block_size=4)']
    """
    checks = sorted(bound_checks(results), key=_check_key)
    for check in checks:
        column = INSTANCED_BY.get(check["bound"])
        if column is not None and column not in check["instance"]:
            value = _context_value(check, column)
            if value is not None:
                check["name"] = f"{check['name']} ({column}={plain_text(value)})"
    if last:
        final: dict[tuple, dict[str, Any]] = {}
        for check in checks:
            final[(check["run"], check["bound"], check["key"])] = check
        checks = sorted(final.values(), key=_check_key)
    return checks


def theory_table(results: pd.DataFrame, last: bool = False) -> pd.DataFrame:
    """Every bound check: step, check (name with its k/b context), statement, lhs, rhs, slack,
    status (holds | violated | inconclusive | premise not met) and note; with ``last``, each
    check's last checkpoint only. A check's name is prefixed by its run when several runs are present.

    >>> results = pd.DataFrame({
    ...     "run": "r", "step": [0, 0, 0, 9, 9, 9], "quantity": ["bound_lhs", "bound_rhs", "bound_slack"] * 2,
    ...     "value": [0.5, 0.4, -0.1, 0.3, 0.5, 0.2], "lower": [0.5, 0.4, -0.1, 0.3, 0.5, 0.2],
    ...     "upper": [0.5, 0.4, -0.1, 0.3, 0.5, 0.2], "n": None, "level": 1.0, "method": "exact",
    ...     "bound": "theorem_4_1", "status": ["premise not met"] * 3 + ["holds"] * 3,
    ...     "note": ["f̂ has higher empirical L_un than the comparator"] * 3 + [""] * 3})
    >>> table = theory_table(results)
    >>> table[["step", "check", "status", "note"]].to_dict("records")  # doctest: +NORMALIZE_WHITESPACE
    [{'step': 0, 'check': 'theorem_4_1', 'status': 'premise not met',
      'note': 'f̂ has higher empirical L_un than the comparator'},
     {'step': 9, 'check': 'theorem_4_1', 'status': 'holds', 'note': ''}]
    >>> theory_table(results, last=True)[["step", "rhs", "slack"]].to_dict("records")
    [{'step': 9, 'rhs': '0.5000 (exact)', 'slack': '0.2000 (exact)'}]
    """
    checks = theory_checks(results, last=last)
    several_runs = len({check["run"] for check in checks}) > 1
    table = [{
        "step": check["step"],
        "check": f"{check['run']}: {check['name']}" if several_runs else check["name"],
        "statement": CHECK_STATEMENTS.get(check["bound"], ""),
        **_side_cells(check),
        "status": check["status"],
        "note": check["note"],
    } for check in checks]
    return pd.DataFrame(table, columns=list(THEORY_COLUMNS))


INTEGER_TERMS = ("M", "comparator_step", "b_prev")
"""Terms that count something (tuples, a step, a block size): written as integers."""


def format_term(row: Mapping[str, Any], table_level: float | None = None) -> str:
    """One term of a bound as a cell: ``format_estimate``, with an exact integral count (``term``
    in INTEGER_TERMS) or an exact integral value from 1e4 on (which scientific notation would round)
    written as an integer; an interval names its level when it differs from ``table_level``.

    >>> exact = {"n": None, "method": "exact"}
    >>> [format_term(dict(exact, term=term, value=v, lower=v, upper=v)) for term, v in
    ...  (("M", 20000.0), ("comparator_step", 800.0), ("rademacher_constant", 1.0), ("Rad_S_upper", 123456.0))]
    ['20000 (exact)', '800 (exact)', '1.0000 (exact)', '123456 (exact)']
    >>> format_term({"value": 0.3, "lower": 0.2, "upper": 0.4, "n": 50, "method": "t", "level": 0.9}, 0.95)
    '0.3000 [0.2000, 0.4000] n=50 (90%)'
    """
    value = float(row["value"])
    counts = row.get("term") in INTEGER_TERMS or 1e4 <= abs(value) < 1e15
    if row["method"] == "exact" and value.is_integer() and counts:
        return f"{int(value)} (exact)"
    return estimate_cell(row, table_level)


def _ordered_terms(names: list[str]) -> list[str]:
    known = [name for name in THEOREM_TERMS if name in names]
    return known + [name for name in dict.fromkeys(names) if name not in THEOREM_TERMS]


def term_table(results: pd.DataFrame, bound: str) -> pd.DataFrame:
    """The terms of one statement (``bound``) across checkpoints: one row per checkpoint (and
    instance, named in a ``check`` column when there are several), one column per term
    (``format_term`` cells, "" where a term was not recorded), then status and note.

    >>> results = pd.DataFrame({
    ...     "run": "r", "step": [0, 0, 0, 0, 0], "quantity": ["bound_lhs", "bound_rhs", "bound_slack",
    ...     "bound_term", "bound_term"], "value": [0.3, 0.5, 0.2, 1.0, 0.05], "lower": [0.3, 0.5, 0.2, 1.0, 0.05],
    ...     "upper": [0.3, 0.5, 0.2, 1.0, 0.05], "n": None, "level": 1.0, "method": "exact",
    ...     "bound": "theorem_4_5", "status": "holds", "term": [None, None, None, "rademacher_constant", "tau"],
    ...     "note": ""})
    >>> term_table(results, "theorem_4_5").to_dict("records")  # doctest: +NORMALIZE_WHITESPACE
    [{'step': 0, 'tau': '0.0500 (exact)', 'rademacher_constant': '1.0000 (exact)', 'status': 'holds', 'note': ''}]
    """
    checks = [check for check in theory_checks(results) if check["bound"] == bound]
    names = _ordered_terms([name for check in checks for name in check["terms"]])
    instanced = any(check["instance"] for check in checks)
    table_level = dominant_level(results)
    columns = ["step", *(["check"] if instanced else []), *names, "status", "note"]
    rows = []
    for check in sorted(checks, key=lambda c: (c["run"], c["step"], c["key"])):
        row = {"step": check["step"], "check": check["name"], "status": check["status"], "note": check["note"]}
        row.update({name: format_term(check["terms"][name], table_level) if name in check["terms"] else ""
                    for name in names})
        rows.append({column: row[column] for column in columns})
    return pd.DataFrame(rows, columns=columns)


def term_notes(results: pd.DataFrame, bound: str) -> dict[str, str]:
    """The labels on the terms of one statement (e.g. which function class Rad_S is for): term →
    its distinct notes, in the order recorded, joined by "; ". A term row's note equal to its
    check's own note (a premise's reason, copied onto every row) is not a label and is left out.

    >>> row = {"step": 0, "bound": "theorem_4_1", "value": 1.0, "lower": 1.0, "upper": 1.0, "n": None,
    ...        "level": 1.0, "method": "exact", "status": "holds"}
    >>> term_notes(pd.DataFrame([dict(row, quantity="bound_lhs", note="premise"),
    ...     dict(row, quantity="bound_term", term="M", note="premise"),
    ...     dict(row, quantity="bound_term", term="Rad_S", note="linear class, ‖W‖_F ≤ B")]), "theorem_4_1")
    {'Rad_S': 'linear class, ‖W‖_F ≤ B'}
    """
    notes: dict[str, list[str]] = {}
    for check in theory_checks(results):
        if check["bound"] != bound:
            continue
        for term, row in check["terms"].items():
            note = row.get("note")
            if not is_missing(note) and str(note) != check["note"]:
                notes.setdefault(term, [])
                if str(note) not in notes[term]:
                    notes[term].append(str(note))
    return {term: "; ".join(values) for term, values in notes.items()}


def _context_value(check: Mapping[str, Any], column: str) -> Any:
    """The check's value of one context column (its instance's, else the first side's that is set)."""
    if column in check["instance"]:
        return check["instance"][column]
    for side in ("rhs", "lhs", "slack"):
        if side in check and not is_missing(check[side].get(column)):
            return native_value(check[side][column])
    return None


def _last_step_checks(results: pd.DataFrame, bounds: tuple[str, ...]) -> list[dict[str, Any]]:
    """The checks of the given statements at the last checkpoint where any of them was checked."""
    checks = [check for check in theory_checks(results) if check["bound"] in bounds]
    if not checks:
        return []
    step = max(check["step"] for check in checks)
    return [check for check in checks if check["step"] == step]


def is_vacuous(note: Any) -> bool:
    """Whether a check's note says the bound is vacuous ("vacuous", not "not vacuous").

    >>> is_vacuous("vacuous"), is_vacuous("vacuous: rhs ≥ E log2|T|"), is_vacuous("not vacuous"), is_vacuous(None)
    (True, True, False, False)
    """
    return not is_missing(note) and re.search(r"(?<!not )\bvacuous\b", str(note), flags=re.IGNORECASE) is not None


NEGATIVES_BOUND = "lemma_4_3_negatives"
NEGATIVES_COLUMNS = ("k", "tau_k", "coef_un", "coef_tau", "lhs", "rhs", "vacuity_threshold", "status", "vacuous")


def negatives_checks(results: pd.DataFrame) -> list[dict[str, Any]]:
    """The ``lemma_4_3_negatives`` checks at their last checkpoint, each with ``"k"`` set, by k."""
    checks = [dict(check, k=_context_value(check, "negatives")) for check in _last_step_checks(results, (NEGATIVES_BOUND,))]
    return sorted((check for check in checks if check["k"] is not None), key=lambda c: (c["run"], c["k"]))


def negatives_table(results: pd.DataFrame) -> pd.DataFrame:
    """The k-negative form of Lemma 4.3 at its last checkpoint, one row per k: τ_k, the
    coefficients 1/(1 − τ_k) (on L_un) and τ_k/(1 − τ_k), both sides, the vacuity threshold (the
    loss at zero margins on T's distinct classes), the verdict, and whether the note says vacuous.

    >>> row = {"value": 0.5, "lower": 0.5, "upper": 0.5, "n": None, "level": 1.0, "method": "exact"}
    >>> results = pd.DataFrame([
    ...     dict(row, quantity=q, step=3, negatives=4, bound="lemma_4_3_negatives", status="holds", note="vacuous")
    ...     for q in ("bound_lhs", "bound_rhs", "bound_slack")] + [
    ...     dict(row, quantity="bound_term", step=3, negatives=4, bound="lemma_4_3_negatives", term="coef_un", value=2.0)])
    >>> negatives_table(results).iloc[0].to_dict()  # doctest: +NORMALIZE_WHITESPACE
    {'k': 4, 'tau_k': '', 'coef_un': '2.0000 (exact)', 'coef_tau': '', 'lhs': '0.5000 (exact)',
     'rhs': '0.5000 (exact)', 'vacuity_threshold': '', 'status': 'holds', 'vacuous': 'yes'}
    """
    table_level = dominant_level(results) if len(results) else None
    rows = []
    for check in negatives_checks(results):
        terms = check["terms"]
        cells = _side_cells(check)
        rows.append({
            "k": check["k"],
            **{name: format_term(terms[name], table_level) if name in terms else ""
               for name in ("tau_k", "coef_un", "coef_tau")},
            "lhs": cells["lhs"], "rhs": cells["rhs"],
            "vacuity_threshold": format_term(terms["vacuity_threshold"], table_level)
            if "vacuity_threshold" in terms else "",
            "status": check["status"],
            "vacuous": "yes" if is_vacuous(check["note"]) else "no",
        })
    return pd.DataFrame(rows, columns=list(NEGATIVES_COLUMNS))


def vacuous_from(results: pd.DataFrame) -> int | None:
    """The smallest k whose ``lemma_4_3_negatives`` check (at its last checkpoint) is noted vacuous,
    or None when none is.

    >>> row = {"quantity": "bound_rhs", "step": 1, "bound": "lemma_4_3_negatives", "value": 1.0, "lower": 1.0,
    ...        "upper": 1.0, "n": None, "level": 1.0, "method": "exact", "status": "inconclusive"}
    >>> vacuous_from(pd.DataFrame([dict(row, negatives=k, note="vacuous" if k >= 16 else "") for k in (2, 16, 64)]))
    16
    """
    vacuous = [check["k"] for check in negatives_checks(results) if is_vacuous(check["note"])]
    return min(vacuous) if vacuous else None


BLOCK_BOUNDS = ("proposition_6_2", "block_below_un", "block_monotone")
BLOCKS_COLUMNS = ("b", "L_un_block", "lhs", "rhs", "proposition_6_2", "block_below_un", "block_monotone")


def block_checks(results: pd.DataFrame) -> dict[int, dict[str, dict[str, Any]]]:
    """The block statements at their last checkpoint: b → statement → check."""
    by_b: dict[int, dict[str, dict[str, Any]]] = {}
    for check in _last_step_checks(results, BLOCK_BOUNDS):
        b = _context_value(check, "block_size")
        if b is not None:
            by_b.setdefault(int(b), {})[check["bound"]] = check
    return dict(sorted(by_b.items()))


def blocks_table(results: pd.DataFrame) -> pd.DataFrame:
    """Blocks (Proposition 6.2 of [Arora19]) at the last checkpoint, one row per block size b:
    L^block_un(b) (the ``L_un_block`` term of the block checks), the sides of Proposition 6.2
    and the verdicts of the three block statements ("" where one was not checked at b).

    >>> row = {"value": 0.5, "lower": 0.4, "upper": 0.6, "n": 10, "level": 0.95, "method": "t", "step": 0}
    >>> results = pd.DataFrame([dict(row, quantity=q, bound="proposition_6_2", block_size=2, status="holds")
    ...     for q in ("bound_lhs", "bound_rhs", "bound_slack")] + [dict(row, quantity="bound_term",
    ...     bound="proposition_6_2", block_size=2, status="holds", term="L_un_block", value=0.9)])
    >>> blocks_table(results).iloc[0].to_dict()  # doctest: +NORMALIZE_WHITESPACE
    {'b': 2, 'L_un_block': '0.9000 [0.4000, 0.6000] n=10', 'lhs': '0.5000 [0.4000, 0.6000] n=10',
     'rhs': '0.5000 [0.4000, 0.6000] n=10', 'proposition_6_2': 'holds', 'block_below_un': '',
     'block_monotone': ''}
    """
    table_level = dominant_level(results) if len(results) else None
    rows = []
    for b, checks in block_checks(results).items():
        term = next((check["terms"]["L_un_block"] for check in checks.values() if "L_un_block" in check["terms"]),
                    None)
        sides = _side_cells(checks["proposition_6_2"]) if "proposition_6_2" in checks else {}
        rows.append({
            "b": b,
            "L_un_block": format_term(term, table_level) if term is not None else "",
            "lhs": sides.get("lhs", ""), "rhs": sides.get("rhs", ""),
            **{bound: checks[bound]["status"] if bound in checks else "" for bound in BLOCK_BOUNDS},
        })
    return pd.DataFrame(rows, columns=list(BLOCKS_COLUMNS))


# The headline of the report: every statement's verdict and the few numbers a reader looks for first.

STATEMENT_TITLES = {
    "lemma_4_3": "Lemma 4.3",
    "mean_below_diff": "Lemma 4.3, second step",
    "jensen_floor": "Jensen floor",
    "lemma_4_4": "Lemma 4.4",
    "theorem_4_1": "Theorem 4.1",
    "theorem_4_5": "Theorem 4.5",
    "lemma_4_3_negatives": "Lemma 4.3, k negatives",
    "proposition_6_2": "Proposition 6.2",
    "block_below_un": "Proposition 6.2, second step",
    "block_monotone": "Blocks: monotone in b",
}
"""A reader's name for each checked statement (docs/theory.md section 2)."""

STATUS_ORDER = ("violated", "inconclusive", "premise not met", "holds")
"""Verdicts from the most to the least alarming: the order in which counts of them are listed."""

_INSTANCE_LETTER = {"negatives": "k", "block_size": "b"}


def verdict_counts(statuses: list[str], unit: str = "checkpoints") -> str:
    """The verdicts of one statement across checkpoints (or instances), counted honestly.

    >>> verdict_counts(["premise not met", "premise not met", "premise not met", "holds"])
    '3 premise not met, 1 holds'
    >>> verdict_counts(["holds"] * 4)
    'holds at all 4 checkpoints'
    >>> verdict_counts(["holds"])
    'holds'
    """
    statuses = [status or "no verdict" for status in statuses]
    if len(set(statuses)) == 1:
        return statuses[0] if len(statuses) == 1 else f"{statuses[0]} at all {len(statuses)} {unit}"
    counts = {status: statuses.count(status) for status in dict.fromkeys(statuses)}
    rank = {status: i for i, status in enumerate(STATUS_ORDER)}
    ranked = sorted(counts, key=lambda s: (-counts[s], rank.get(s, len(rank))))
    return ", ".join(f"{counts[status]} {status}" for status in ranked)


def instance_label(check: Mapping[str, Any]) -> str:
    """``k=4`` or ``b=5`` for an instanced check (INSTANCED_BY), "" otherwise."""
    column = INSTANCED_BY.get(check["bound"])
    value = _context_value(check, column) if column is not None else None
    return f"{_INSTANCE_LETTER[column]}={plain_text(value)}" if value is not None else ""


def instances_text(labels: list[str]) -> str:
    """Instance labels gathered by their letter.

    >>> instances_text(["k=4", "k=8", "k=16"]), instances_text([""])
    ('k = 4, 8, 16', '')
    """
    groups: dict[str, list[str]] = {}
    for label in labels:
        if label:
            letter, _, value = label.partition("=")
            groups.setdefault(letter, []).append(value)
    return "; ".join(f"{letter} = {', '.join(values)}" for letter, values in groups.items())


def headline_verdicts(results: pd.DataFrame) -> list[dict[str, Any]]:
    """Every checked statement at its last checkpoint, one entry per statement (``bound``):
    ``{"bound", "title", "statement", "step", "status", "groups", "lhs", "rhs", "slack", "slack_at", "note"}``.

    ``groups`` lists ``(status, instances)`` per distinct verdict, with the k or b it was reached at
    (``instances_text``; "" for a statement checked once); ``status`` is the verdict, or
    ``verdict_counts`` of the instances' verdicts when they differ. ``lhs``, ``rhs`` and ``slack``
    are the cells (``format_estimate``; the slack's at the verdict level, which the page states once)
    of the tightest instance (the lowest slack interval), ``slack_at`` that instance's label; ``note``
    the checks' notes (why a premise is not met, that a bound is vacuous), each after the instances it
    applies to.

    >>> row = {"run": "r", "quantity": "bound_slack", "lower": 0.0, "upper": 0.2, "n": 10, "level": 0.999,
    ...        "method": "t", "status": "holds", "bound": "lemma_4_3_negatives"}
    >>> results = pd.DataFrame([dict(row, step=5, value=0.1 * k, negatives=k, lower=0.05 * k,
    ...                              note="vacuous" if k > 2 else "") for k in (2, 4)])
    >>> [(v["title"], v["status"], v["groups"], v["slack"], v["slack_at"], v["note"])
    ...  for v in headline_verdicts(results)]  # doctest: +NORMALIZE_WHITESPACE
    [('Lemma 4.3, k negatives', 'holds', [('holds', 'k = 2, 4')], '0.2000 [0.1000, 0.2000] n=10', 'k=2',
      'k = 4: vacuous')]
    """
    checks = theory_checks(results, last=True)
    verdicts: dict[str, dict[str, Any]] = {}
    for check in (c for c in checks if c["run"] == checks[0]["run"]):  # one run's report
        if check["bound"] not in verdicts:
            verdicts[check["bound"]] = {"bound": check["bound"],
                                        "title": STATEMENT_TITLES.get(check["bound"], check["bound"]),
                                        "statement": CHECK_STATEMENTS.get(check["bound"], ""), "checks": []}
        verdicts[check["bound"]]["checks"].append(check)
    table = []
    for entry in verdicts.values():
        checks = entry.pop("checks")
        with_slack = [check for check in checks if "slack" in check]
        tightest = min(with_slack, key=lambda c: (float(c["slack"]["lower"]), float(c["slack"]["value"])),
                       default=checks[0])
        statuses = [check["status"] for check in checks]
        by_status: dict[str, list[str]] = {}
        by_note: dict[str, list[str]] = {}
        for check in checks:
            by_status.setdefault(check["status"], []).append(instance_label(check))
            if check["note"]:
                by_note.setdefault(check["note"], []).append(instance_label(check))
        sides = _side_cells(tightest)
        slack = tightest.get("slack")
        notes = [f"{instances_text(labels)}: {note}" if len(checks) > 1 and instances_text(labels) else note
                 for note, labels in by_note.items()]
        table.append(dict(
            entry,
            step=max(check["step"] for check in checks),
            status=verdict_counts(statuses, unit="instances") if len(set(statuses)) > 1 else statuses[0],
            groups=[(status, instances_text(labels) if len(checks) > 1 else "")
                    for status, labels in by_status.items()],
            lhs=sides["lhs"], rhs=sides["rhs"],
            slack=format_estimate(slack["value"], slack["lower"], slack["upper"], slack.get("n"), slack["method"])
            if slack is not None else "",
            slack_at=instance_label(tightest) if len(checks) > 1 else "",
            note="; ".join(notes),
        ))
    return table


def _pick(results: pd.DataFrame, quantity: str, step: int, **context: Any) -> dict[str, Any] | None:
    """The row of ``quantity`` at ``step`` whose context columns equal ``context`` (None: unset),
    preferring the ``test`` split, then ``fresh``; None when there is none."""
    if len(results) == 0:
        return None
    chosen = (results["quantity"] == quantity) & (results["step"] == step)
    for column, value in context.items():
        if column not in results.columns:
            if value is not None:
                return None
            continue
        chosen &= results[column].isna() if value is None else (results[column] == value).fillna(False).astype(bool)
    rows = results[chosen].to_dict("records")
    if not rows:
        return None
    order = {"test": 0, "fresh": 1, "id": 2}
    return min(rows, key=lambda row: order.get(row.get("split"), 3))


def headline_numbers(results: pd.DataFrame) -> list[dict[str, str]]:
    """The few numbers a reader looks for first, at the last checkpoint: L_un (negatives = 1), the
    mean classifier's AVG-K and the linear probe's (at its largest number of shots) for the smallest
    and the largest task size K measured. Each ``{"label", "detail", "cell"}`` with ``cell`` a
    ``format_estimate`` string (value, CI and n); quantities not measured are left out.

    >>> row = {"run": "r", "step": 9, "lower": 0.7, "upper": 0.9, "n": 100, "level": 0.95, "method": "t"}
    >>> results = pd.DataFrame([dict(row, quantity="L_un", value=0.8, negatives=1),
    ...     dict(row, quantity="acc_avg", value=0.8, adapter="mean", task_classes=2)])
    >>> [(number["label"], number["cell"]) for number in headline_numbers(results)]
    [('L_un', '0.8000 [0.7000, 0.9000] n=100'), ('AVG-2, mean classifier', '0.8000 [0.7000, 0.9000] n=100')]
    """
    if len(results) == 0:
        return []
    step = int(results["step"].max())
    table_level = dominant_level(results)
    numbers = []
    l_un = _pick(results, "L_un", step, negatives=1) or _pick(results, "L_un", step)
    if l_un is not None:
        numbers.append({"label": "L_un", "detail": "1 negative", "cell": estimate_cell(l_un, table_level)})
    averages = results[(results["quantity"] == "acc_avg") & (results["step"] == step)]
    sizes = sorted({int(v) for v in averages["task_classes"].dropna()}) if "task_classes" in averages else []
    sizes = sorted({sizes[0], sizes[-1]}) if sizes else []
    shots = averages["shots"].dropna() if "shots" in averages else pd.Series(dtype=float)
    probe_shots = int(shots.max()) if len(shots) else None
    for adapter, name in (("mean", "mean classifier"), ("linear", "linear probe")):
        for size in sizes:
            row = (_pick(results, "acc_avg", step, adapter=adapter, task_classes=size, shots=None)
                   if adapter == "mean" else None)
            detail = ""
            if row is None and probe_shots is not None:
                row = _pick(results, "acc_avg", step, adapter=adapter, task_classes=size, shots=probe_shots)
                detail = f"{probe_shots} shots"
            if row is not None:
                view = SPLIT_NAMES.get(row.get("split")) if row.get("split") in ("id", "ood") else None
                detail = ", ".join(part for part in (detail, view) if part)
                numbers.append({"label": f"AVG-{size}, {name}", "detail": detail,
                                "cell": estimate_cell(row, table_level)})
    return numbers


TERM_MEANINGS = {
    "tau": "τ: a negative shares the anchor's class",
    "L_un": "L_un(f) of the comparator f",
    "L_un_same": "L_un^=(f), same-class part",
    "L_un_diff": "L_un^≠(f), different-class part",
    "s_f": "s(f): spread within classes",
    "c_prime": "c′ of Lemma 4.4",
    "beta": "β = c′τ/(1 − τ)",
    "eta": "η = 1/(1 − τ)",
    "Gen_M": "generalisation term",
    "rademacher_part": "4√3·L·R·Rad_S/M",
    "confidence_part": "2√2·Δ_ℓ(R)·sqrt(ln(1/δ)/M)",
    "Rad_S": "Rademacher complexity on the M tuples",
    "Rad_S_upper": "upper bound on Rad_S",
    "R": "norm bound on f(x)",
    "M": "training tuples",
    "delta": "δ: failure probability",
    "rademacher_constant": "multiplies the Rademacher part (1 = derived)",
    "confidence_constant": "multiplies the confidence part (1 = derived)",
    "loss_range": "Δ_ℓ(R): range of ℓ on the ball of radius R",
    "comparator_step": "the checkpoint used as f",
    "L_hat_un": "empirical L_un of f̂ on the M tuples",
    "L_hat_un_comparator": "empirical L_un of f on the M tuples",
}
"""What each term of a theorem is, in a few words (docs/theory.md sections 4 and 5)."""

BREAKDOWN_SIDES = {"lhs": "lhs", "rhs": "rhs", "slack": "slack = rhs − lhs"}


def term_breakdown(results: pd.DataFrame, bound: str) -> pd.DataFrame:
    """One statement (``bound``) term by term, one column per checkpoint (``step N``, with the check's
    name when it was checked in several instances): the status, lhs, rhs, slack, then every term
    (``format_term`` cells, "" where one was not recorded). The transpose of ``term_table``, which
    stays narrow however many terms a theorem has.

    >>> results = pd.DataFrame({
    ...     "run": "r", "step": [0, 0, 0, 0], "quantity": ["bound_lhs", "bound_rhs", "bound_slack", "bound_term"],
    ...     "value": [0.3, 0.5, 0.2, 0.05], "lower": [0.3, 0.5, 0.2, 0.05], "upper": [0.3, 0.5, 0.2, 0.05],
    ...     "n": None, "level": 1.0, "method": "exact", "bound": "theorem_4_5", "status": "holds",
    ...     "term": [None, None, None, "tau"], "note": ""})
    >>> term_breakdown(results, "theorem_4_5").to_dict("index")  # doctest: +NORMALIZE_WHITESPACE
    {'status': {'step 0': 'holds'}, 'lhs': {'step 0': '0.3000 (exact)'}, 'rhs': {'step 0': '0.5000 (exact)'},
     'slack': {'step 0': '0.2000 (exact)'}, 'tau': {'step 0': '0.0500 (exact)'}}
    """
    checks = sorted((check for check in theory_checks(results) if check["bound"] == bound),
                    key=lambda c: (c["run"], c["step"], c["key"]))
    names = _ordered_terms([name for check in checks for name in check["terms"]])
    instanced = any(check["instance"] for check in checks)
    table_level = dominant_level(results) if len(results) else None
    columns = {}
    for check in checks:
        sides = _side_cells(check)
        header = f"step {check['step']}" + (f", {instance_label(check) or check['name']}" if instanced else "")
        columns[header] = {"status": check["status"], **{side: sides[side] for side in BREAKDOWN_SIDES},
                           **{name: format_term(check["terms"][name], table_level) if name in check["terms"] else ""
                              for name in names}}
    index = ["status", *BREAKDOWN_SIDES, *names]
    return pd.DataFrame(columns, index=pd.Index(index, name="term"), columns=list(columns)) if columns else \
        pd.DataFrame(index=pd.Index([], name="term"))


# The Adaptation section: the adaptation losses and the error chain of THEORY.md section 1.

CHAIN_LINKS = {
    "link_pretrain_gap": "L_pre − L̂_pre",
    "link_interface": "L*_adapt − L_pre",
    "link_adapt_excess": "L_adapt − L*_adapt",
    "link_adapt_gap": "L_adapt − L̂_adapt",
    "link_total": "L_adapt − L̂_pre",
}
"""The links of the error chain (THEORY.md section 1), in the order the chain table lists them, and
what each is. By values, link_total = link_pretrain_gap + link_interface + link_adapt_excess; the
adaptation generalization gap link_adapt_gap stands beside the chain (L̂_adapt is not on its path)."""

CHAIN_LEVELS = ("L_pre_train", "L_pre", "L_adapt_star", "L_adapt", "L_adapt_train")
"""The losses the links connect: L̂_pre, L_pre, L*_adapt, L_adapt and L̂_adapt."""

CHOSEN_QUANTITIES = ("chosen_lr", "chosen_steps", "chosen_penalty")
"""Hyperparameters of an adapter chosen on validation points (method ``chosen``)."""

DISTORTION_QUANTITIES = ("distortion_outside", "distortion_inside")
"""‖(B_FT − B_0)·P_S⊥‖ and ‖(B_FT − B_0)·P_S‖: how far fine-tuning moved a linear encoder outside and
inside the task's subspace S."""

ADAPTATION_QUANTITIES = ("L_adapt_train", "L_adapt", "L_adapt_star", *CHAIN_LINKS, *CHOSEN_QUANTITIES,
                         *DISTORTION_QUANTITIES)
"""The rows whose presence makes the report's Adaptation section (without them it is left out)."""

ADAPTATION_COLUMNS = ("L_adapt", "L_adapt_star", "acc_avg")
"""The adaptation table's columns per task view (split); ``L_adapt_train`` comes once, before them."""


def _context(row: Mapping[str, Any], column: str) -> Any:
    """One context field of a row as a plain scalar, None when unset."""
    value = row.get(column)
    return None if is_missing(value) else native_value(value)


def _first(rows: list[dict[str, Any]], quantity: str, **context: Any) -> dict[str, Any] | None:
    """The first row of ``quantity`` whose context fields equal ``context`` (None: unset)."""
    return next((row for row in rows if row["quantity"] == quantity
                 and all(_context(row, column) == value for column, value in context.items())), None)


def _rows_at(results: pd.DataFrame, step: int, quantities: tuple[str, ...]) -> list[dict[str, Any]]:
    if len(results) == 0:
        return []
    return results[results["quantity"].isin(quantities) & (results["step"] == step)].to_dict("records")


def _key_order(keys: list[tuple], columns: tuple[str, ...]) -> list[tuple]:
    """Context keys (one value per column) in the report's order, without repeats."""
    return sorted(dict.fromkeys(keys), key=lambda key: tuple(context_sort_key(c, v) for c, v in zip(columns, key)))


def adaptation_step(results: pd.DataFrame) -> int | None:
    """The last checkpoint with adaptation rows (ADAPTATION_QUANTITIES), the step the Adaptation
    section reports; None when there are none (a run from before adaptation was measured).

    >>> adaptation_step(pd.DataFrame({"quantity": ["L_adapt", "L_adapt", "L_un"], "step": [0, 9, 12]}))
    9
    >>> adaptation_step(pd.DataFrame({"quantity": ["acc_avg"], "step": [9]})) is None
    True
    """
    if len(results) == 0:
        return None
    steps = results.loc[results["quantity"].isin(ADAPTATION_QUANTITIES), "step"]
    return int(steps.max()) if len(steps) else None


CHAIN_TASK_CLASSES = 2
"""The task size of the error chain when no L_adapt_star row names one (the tasks of L_sup and Lemma 4.3)."""


def chain_task_classes(results: pd.DataFrame, step: int | None = None) -> int:
    """The number of classes of the tasks the error chain is measured on: that of the L_adapt_star rows
    at ``step`` (by default ``adaptation_step``), else CHAIN_TASK_CLASSES.

    >>> chain_task_classes(pd.DataFrame({"quantity": ["L_adapt_star"], "step": [3], "task_classes": [2.0]}))
    2
    """
    step = adaptation_step(results) if step is None else step
    rows = _rows_at(results, step, ("L_adapt_star",)) if step is not None else []
    return next((_context(row, "task_classes") for row in rows if _context(row, "task_classes") is not None),
                CHAIN_TASK_CLASSES)


def error_chains(results: pd.DataFrame, step: int | None = None) -> list[dict[str, Any]]:
    """The error chain of THEORY.md section 1 per adapter, number of shots and task view (split) at
    ``step`` (by default ``adaptation_step``): one ``{"step", "adapter", "shots", "split", "links",
    "levels"}`` per chain that has a link, in the report's order (adapter, shots, split).

    ``links`` maps each link measured (CHAIN_LINKS) to its row and ``levels`` each loss it connects
    (CHAIN_LEVELS) to its row. Rows are matched on their context: link_pretrain_gap, L_pre_train and
    L_pre have no adapter; link_interface and L_adapt_star have the adapter and split but no shots;
    L_adapt_train has the adapter and shots (split ``train``); the other links and L_adapt all three.
    The chain is measured on the tasks of L*_adapt (``chain_task_classes``, 2 classes): rows of other
    task sizes (L_adapt and the adaptation gap are measured for every size) are left out.

    >>> row = {"step": 5, "lower": 0.0, "upper": 1.0, "n": 100, "level": 0.95, "method": "t"}
    >>> results = pd.DataFrame([dict(row, quantity="link_pretrain_gap", value=0.1),
    ...     dict(row, quantity="link_interface", value=-0.2, adapter="linear", split="id"),
    ...     dict(row, quantity="link_total", value=0.3, adapter="linear", shots=8, split="id")])
    >>> [(c["adapter"], c["shots"], c["split"], sorted(c["links"])) for c in error_chains(results)]
    [('linear', 8, 'id', ['link_interface', 'link_pretrain_gap', 'link_total'])]
    """
    step = adaptation_step(results) if step is None else step
    if step is None:
        return []
    size = chain_task_classes(results, step)
    rows = [row for row in _rows_at(results, step, (*CHAIN_LINKS, *CHAIN_LEVELS))
            if _context(row, "task_classes") in (None, size)]
    with_shots = [(_context(r, "adapter"), _context(r, "shots"), _context(r, "split")) for r in rows
                  if r["quantity"] in ("link_adapt_excess", "link_adapt_gap", "link_total", "L_adapt")
                  and _context(r, "adapter") is not None]
    pairs = {(adapter, split) for adapter, _, split in with_shots}
    without = [(_context(r, "adapter"), None, _context(r, "split")) for r in rows
               if r["quantity"] in ("link_interface", "L_adapt_star") and _context(r, "adapter") is not None
               and (_context(r, "adapter"), _context(r, "split")) not in pairs]
    pretrain_gap = _first(rows, "link_pretrain_gap", adapter=None, split=None) or _first(
        rows, "link_pretrain_gap", adapter=None)
    chains = []
    for adapter, shots, split in _key_order(with_shots + without, ("adapter", "shots", "split")):
        links = {
            "link_pretrain_gap": pretrain_gap,
            "link_interface": _first(rows, "link_interface", adapter=adapter, split=split),
            **{link: _first(rows, link, adapter=adapter, shots=shots, split=split)
               for link in ("link_adapt_excess", "link_adapt_gap", "link_total")},
        }
        levels = {
            "L_pre_train": _first(rows, "L_pre_train", adapter=None),
            "L_pre": _first(rows, "L_pre", adapter=None),
            "L_adapt_star": _first(rows, "L_adapt_star", adapter=adapter, split=split),
            "L_adapt": _first(rows, "L_adapt", adapter=adapter, shots=shots, split=split),
            "L_adapt_train": _first(rows, "L_adapt_train", adapter=adapter, shots=shots, split="train")
            or _first(rows, "L_adapt_train", adapter=adapter, shots=shots),
        }
        links = {name: row for name, row in links.items() if row is not None}
        if set(links) - {"link_pretrain_gap"}:
            chains.append({"step": step, "adapter": adapter, "shots": shots, "split": split, "links": links,
                           "levels": {name: row for name, row in levels.items() if row is not None}})
    return chains


def _without_blank_columns(table: pd.DataFrame, keep: tuple[str, ...]) -> pd.DataFrame:
    """``table`` without the columns (other than ``keep``) that are "" in every row."""
    blank = [c for c in table.columns if c not in keep and len(table) and (table[c] == "").all()]
    return table.drop(columns=blank)


def chain_table(results: pd.DataFrame, step: int | None = None) -> pd.DataFrame:
    """The error chain at ``step`` (by default the last with adaptation rows), one row per adapter,
    number of shots and task view (``error_chains``): each link of CHAIN_LINKS as an estimate cell
    (value [lower, upper] n=N; "" where it was not measured), the total last. The ``split`` column is
    left out when no row has one.

    >>> row = {"step": 5, "lower": 0.0, "upper": 0.2, "n": 100, "level": 0.95, "method": "t"}
    >>> results = pd.DataFrame([dict(row, quantity="link_pretrain_gap", value=0.1),
    ...     dict(row, quantity="link_interface", value=0.05, adapter="mean", split="test"),
    ...     dict(row, quantity="link_total", value=0.15, adapter="mean", shots=4, split="test")])
    >>> chain_table(results).iloc[0].to_dict()  # doctest: +NORMALIZE_WHITESPACE
    {'adapter': 'mean', 'shots': 4, 'split': 'test', 'link_pretrain_gap': '0.1000 [0.0000, 0.2000] n=100',
     'link_interface': '0.0500 [0.0000, 0.2000] n=100', 'link_adapt_excess': '', 'link_adapt_gap': '',
     'link_total': '0.1500 [0.0000, 0.2000] n=100'}
    """
    table_level = dominant_level(results) if len(results) else None
    rows = [{"adapter": chain["adapter"] or "", "shots": "" if chain["shots"] is None else chain["shots"],
             "split": chain["split"] or "",
             **{link: estimate_cell(chain["links"][link], table_level) if link in chain["links"] else ""
                for link in CHAIN_LINKS}}
            for chain in error_chains(results, step)]
    table = pd.DataFrame(rows, columns=["adapter", "shots", "split", *CHAIN_LINKS])
    return table.drop(columns=["split"]) if len(table) and (table["split"] == "").all() else table


def adaptation_splits(results: pd.DataFrame, step: int | None = None) -> list[str | None]:
    """The task views of the adaptation rows at ``step``, in order (``test``; ``id``, ``ood``), or
    ``[None]`` when they name none.

    >>> adaptation_splits(pd.DataFrame({"quantity": ["L_adapt", "L_adapt", "L_adapt_train"], "step": 1,
    ...                                 "split": ["ood", "id", "train"]}))
    ['id', 'ood']
    """
    step = adaptation_step(results) if step is None else step
    if step is None:
        return []
    splits = [_context(row, "split") for row in _rows_at(results, step, ("L_adapt", "L_adapt_star"))]
    named = _key_order([(split,) for split in splits if split is not None], ("split",))
    return [split for split, in named] or [None]


def split_column(quantity: str, split: str | None) -> str:
    """The adaptation table's column of ``quantity`` in one task view.

    >>> split_column("L_adapt", "ood"), split_column("acc_avg", None)
    ('L_adapt (ood)', 'acc_avg')
    """
    return quantity if split is None else f"{quantity} ({split})"


def adaptation_table(results: pd.DataFrame, step: int | None = None) -> pd.DataFrame:
    """The adaptation results at ``step`` (by default the last with adaptation rows), one row per
    adapter, task size (``task_classes``, a column only when several were measured) and number of
    shots: L̂_adapt (``L_adapt_train``, on the labeled training samples), then per task view
    (``adaptation_splits``, ID and OOD side by side) L_adapt, L*_adapt (``L_adapt_star``, measured on
    2-class tasks and independent of the shots) and the AVG accuracy (``acc_avg``; a row without a
    split stands for the only view, or ``test``). Estimate cells ("" where not measured); a column
    with no value in any row is left out.

    >>> row = {"step": 5, "lower": 0.5, "upper": 0.7, "n": 100, "level": 0.95, "method": "t", "task_classes": 2}
    >>> results = pd.DataFrame([dict(row, quantity="L_adapt", value=0.6, adapter="linear", shots=8, split=split)
    ...     for split in ("id", "ood")] + [dict(row, quantity="L_adapt_train", value=0.55, adapter="linear",
    ...     shots=8, split="train")])
    >>> list(adaptation_table(results).columns)
    ['adapter', 'shots', 'L_adapt_train', 'L_adapt (id)', 'L_adapt (ood)']
    """
    step = adaptation_step(results) if step is None else step
    splits = adaptation_splits(results, step)
    rows = _rows_at(results, step, ("L_adapt_train", "L_adapt", "L_adapt_star", "acc_avg")) if step is not None else []
    keys = [(_context(r, "adapter"), _context(r, "task_classes"), _context(r, "shots")) for r in rows
            if r["quantity"] in ("L_adapt", "L_adapt_train") and _context(r, "adapter") is not None]
    measured = {(adapter, size) for adapter, size, _ in keys}
    keys += [(_context(r, "adapter"), _context(r, "task_classes"), None) for r in rows
             if r["quantity"] == "L_adapt_star" and _context(r, "adapter") is not None
             and (_context(r, "adapter"), _context(r, "task_classes")) not in measured]
    table_level = dominant_level(results) if len(results) else None

    def cell(quantity: str, **context: Any) -> str:
        row = _first(rows, quantity, **context)
        return estimate_cell(row, table_level) if row is not None else ""

    columns = ["adapter", "task_classes", "shots", "L_adapt_train",
               *(split_column(quantity, split) for split in splits for quantity in ADAPTATION_COLUMNS)]
    table = []
    for adapter, size, shots in _key_order(keys, ("adapter", "task_classes", "shots")):
        entry = {"adapter": adapter, "task_classes": "" if size is None else size,
                 "shots": "" if shots is None else shots,
                 "L_adapt_train": cell("L_adapt_train", adapter=adapter, task_classes=size, shots=shots)}
        for split in splits:
            accuracy = cell("acc_avg", adapter=adapter, task_classes=size, shots=shots, split=split)
            if not accuracy and (len(splits) == 1 or split == "test"):
                accuracy = cell("acc_avg", adapter=adapter, task_classes=size, shots=shots, split=None)
            entry.update({
                split_column("L_adapt", split): cell("L_adapt", adapter=adapter, task_classes=size, shots=shots,
                                                     split=split),
                split_column("L_adapt_star", split): cell("L_adapt_star", adapter=adapter, task_classes=size,
                                                          split=split),
                split_column("acc_avg", split): accuracy,
            })
        table.append(entry)
    frame = _without_blank_columns(pd.DataFrame(table, columns=columns), keep=("adapter", "shots"))
    return _without_constant(frame, "task_classes")


def _without_constant(table: pd.DataFrame, column: str) -> pd.DataFrame:
    """``table`` without ``column`` when it holds one value (or none): a task size measured alone
    is said once, by the page, not in every row."""
    return table.drop(columns=[column]) if column in table.columns and table[column].nunique() <= 1 else table


INTEGER_HYPERPARAMETERS = ("chosen_steps",)
"""Chosen hyperparameters that count something: written as integers."""


def format_chosen(row: Mapping[str, Any]) -> str:
    """A hyperparameter chosen on validation points: a choice, not an estimate, so its value alone
    (an integer for a count), with its range [lower, upper] over the n tasks when it varies across them.

    >>> format_chosen({"quantity": "chosen_lr", "value": 0.003, "lower": 0.003, "upper": 0.003, "n": 20})
    '0.003'
    >>> format_chosen({"quantity": "chosen_steps", "value": 1233.3, "lower": 100.0, "upper": 3000.0, "n": 20})
    '1233 [100, 3000] n=20'
    """
    def number(x: Any) -> str:
        x = float(x)  # a count (a mean over tasks, perhaps) to the nearest integer from 10 on
        counts = row.get("quantity") in INTEGER_HYPERPARAMETERS and (x.is_integer() or abs(x) >= 10)
        return str(round(x)) if counts else f"{x:.3g}"

    text = number(row["value"])
    lower, upper = row.get("lower"), row.get("upper")
    if not is_missing(lower) and not is_missing(upper) and float(lower) < float(upper):
        text += f" [{number(row['lower'])}, {number(row['upper'])}]"
        if not is_missing(row.get("n")):
            text += f" n={int(row['n'])}"
    return text


def _context_table(results: pd.DataFrame, step: int | None, quantities: tuple[str, ...],
                   keys: tuple[str, ...], cell: Any) -> pd.DataFrame:
    """``quantities`` at ``step`` as one row per value of the ``keys`` context columns and one
    column per quantity (``cell(row)``; "" where not measured); key columns that no row sets are left
    out, and ``task_classes`` when it takes one value."""
    step = adaptation_step(results) if step is None else step
    rows = _rows_at(results, step, quantities) if step is not None else []
    by_key: dict[tuple, dict[str, Any]] = {}
    for row in rows:
        by_key.setdefault(tuple(_context(row, column) for column in keys), {}).setdefault(row["quantity"], row)
    table = [{**{column: "" if value is None else value for column, value in zip(keys, key)},
              **{quantity: cell(by_key[key][quantity]) if quantity in by_key[key] else "" for quantity in quantities}}
             for key in _key_order(list(by_key), keys)]
    frame = pd.DataFrame(table, columns=[*keys, *quantities])
    frame = frame.drop(columns=[c for c in keys if len(frame) and (frame[c] == "").all()])
    return _without_constant(frame, "task_classes")


def distortion_table(results: pd.DataFrame, step: int | None = None) -> pd.DataFrame:
    """How far fine-tuning moved a linear encoder B from its pretrained B_0, outside and inside the
    task's subspace S (DISTORTION_QUANTITIES), at ``step`` (by default the last with adaptation rows):
    one row per adapter, number of shots (and task size and split, when they vary or are set), estimate cells.

    >>> row = {"step": 5, "lower": 0.1, "upper": 0.3, "n": 20, "level": 0.95, "method": "t", "adapter": "finetune"}
    >>> distortion_table(pd.DataFrame([dict(row, quantity=q, value=0.2, shots=8) for q in DISTORTION_QUANTITIES]
    ...                               )).iloc[0].to_dict()  # doctest: +NORMALIZE_WHITESPACE
    {'adapter': 'finetune', 'shots': 8, 'distortion_outside': '0.2000 [0.1000, 0.3000] n=20',
     'distortion_inside': '0.2000 [0.1000, 0.3000] n=20'}
    """
    table_level = dominant_level(results) if len(results) else None
    return _context_table(results, step, DISTORTION_QUANTITIES, ("adapter", "task_classes", "shots", "split"),
                          lambda row: estimate_cell(row, table_level))


def chosen_table(results: pd.DataFrame, step: int | None = None) -> pd.DataFrame:
    """The hyperparameters chosen on validation points (CHOSEN_QUANTITIES, ``format_chosen`` cells) at
    ``step`` (by default the last with adaptation rows), one row per adapter and number of shots (and
    task size, when several); a hyperparameter no adapter has is left out.

    >>> row = {"step": 5, "n": 20, "level": 1.0, "method": "chosen", "adapter": "linear", "shots": 8,
    ...        "split": "validation"}
    >>> chosen_table(pd.DataFrame([dict(row, quantity="chosen_lr", value=0.01, lower=0.01, upper=0.01)]
    ...                           )).to_dict("records")
    [{'adapter': 'linear', 'shots': 8, 'chosen_lr': '0.01'}]
    """
    table = _context_table(results, step, CHOSEN_QUANTITIES, ("adapter", "task_classes", "shots"), format_chosen)
    return _without_blank_columns(table, keep=("adapter", "shots"))
