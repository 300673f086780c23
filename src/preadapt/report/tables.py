"""Tables of a run's tidy results: every number with its confidence interval and its n.

The input everywhere is the tidy ``results`` frame of DESIGN.md section 3: one row per measured
quantity with ``run, step, quantity, value, lower, upper, n, level, method`` and the context
columns that apply (NaN/None where they do not). Cells are strings, formatted once here, so the
HTML report and the command line show the same digits.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import pandas as pd

CONTEXT_COLUMNS = ("adapter", "split", "negatives", "block_size", "task_classes", "top_r", "shots", "bound")
"""Context columns that tell rows of one quantity apart, in the order a label lists them."""

QUANTITY_GROUPS = (
    ("losses", ("L_pre_train", "L_pre", "L_un", "L_un_block", "L_un_same", "L_un_diff")),
    ("adaptation", ("L_sup_mean", "L_sup", "L_probe", "L_adapt", "L_adapt_star", "acc_avg", "acc_top")),
    ("diagnostics", ("tau", "tau_k", "s_f", "align", "uniform")),
    ("bounds", ("bound_lhs", "bound_rhs", "bound_slack")),
)
"""Known quantities in the order tables list them; an unknown name goes after the diagnostics
(or with the bounds when it starts with ``bound_``), alphabetically."""

_RANK = {name: (g, i) for g, (_, names) in enumerate(QUANTITY_GROUPS) for i, name in enumerate(names)}
_BOUNDS_GROUP = len(QUANTITY_GROUPS) - 1
_VALUE_ORDER = {
    "adapter": ("mean", "linear"),
    "split": ("train", "fresh", "test"),
}


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return value == ""
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _plain(value: Any) -> str:
    """A context value as a label shows it: integral floats (from a CSV) without ``.0``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if hasattr(value, "item") and not isinstance(value, str):
        return _plain(value.item())
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
        f"{column}={_plain(row[column])}"
        for column in CONTEXT_COLUMNS
        if column in row and not _missing(row[column])
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
    if _missing(level):
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
    if not _missing(n):
        text += f" n={int(n)}"
    if not _missing(level) and lower != upper:
        text += f" ({format_level(level)})"
    return text


def _context_key(column: str, value: Any) -> tuple:
    """Sort key of one context value: unset first, known orders, then numbers or names."""
    if _missing(value):
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
    context = tuple(_context_key(column, row.get(column)) for column in CONTEXT_COLUMNS if column != "bound")
    if group == _BOUNDS_GROUP:
        # Bound rows read lhs, rhs, slack within each bound.
        return (group, _context_key("bound", row.get("bound")), index, quantity, context)
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


def _cell(row: Mapping[str, Any], table_level: float | None) -> str:
    level = row.get("level")
    differs = not _missing(level) and table_level is not None and not math.isclose(float(level), table_level)
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
    cells = {(row["label"], int(row["step"])): _cell(row, table_level) for row in reversed(keyed.to_dict("records"))}
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
            "n": "" if exact or _missing(row.get("n")) else str(int(row["n"])),
            "level": "" if exact else format_level(row.get("level")),
            "method": str(row["method"]),
        })
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


BOUND_COLUMNS = ("step", "bound", "lhs", "rhs", "slack", "status")
BOUND_SIDES = {"bound_lhs": "lhs", "bound_rhs": "rhs", "bound_slack": "slack"}


def bound_checks(results: pd.DataFrame) -> list[dict[str, Any]]:
    """The bound rows gathered into checks: one per run, step and statement (``bound``).

    Each check is ``{"step", "bound", "name", "lhs", "rhs", "slack", "status"}`` with the sides as
    row dicts (absent sides missing). The sides of one check may carry different context (the lhs
    of Lemma 4.3 names its task size, the rhs its negatives); only when a statement was checked in
    several instances at one step (several rows of one side) are its rows split by their context,
    which then appears in ``name``. ``status`` is the slack row's, else the first set on lhs or rhs.
    """
    if len(results) == 0 or "bound" not in results.columns:
        return []
    rows = results[results["quantity"].isin(list(BOUND_SIDES)) & results["bound"].notna()].to_dict("records")
    statements: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        statements.setdefault((str(row.get("run", "")), int(row["step"]), str(row["bound"])), []).append(row)
    checks = []
    for (run, step, bound), members in statements.items():
        sides = [row["quantity"] for row in members]
        instanced = len(sides) != len(set(sides))
        groups: dict[tuple, dict[str, Any]] = {}
        for row in members:
            extra = [
                f"{column}={_plain(row[column])}"
                for column in CONTEXT_COLUMNS
                if instanced and column != "bound" and column in row and not _missing(row[column])
            ]
            key = tuple(_context_key(c, row.get(c)) for c in CONTEXT_COLUMNS if instanced and c != "bound")
            check = groups.setdefault(key, {"run": run, "step": step, "bound": bound, "key": key,
                                            "name": f"{bound} ({', '.join(extra)})" if extra else bound})
            check[BOUND_SIDES[row["quantity"]]] = row
        checks.extend(groups.values())
    for check in checks:
        statuses = [check[side].get("status") for side in ("slack", "lhs", "rhs") if side in check]
        check["status"] = next((str(s) for s in statuses if not _missing(s)), "")
    checks.sort(key=lambda c: (c["run"], c["step"], _context_key("bound", c["bound"]), c["key"]))
    return checks


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
    table = []
    for check in bound_checks(results):
        lhs_level = check["lhs"].get("level") if "lhs" in check else None
        cells = {}
        for side in ("lhs", "rhs", "slack"):
            row = check.get(side)
            if row is None:
                cells[side] = ""
                continue
            level = row.get("level")
            differs = not (_missing(level) or _missing(lhs_level)) and not math.isclose(float(level), float(lhs_level))
            cells[side] = format_estimate(row["value"], row["lower"], row["upper"], row.get("n"), row["method"],
                                          level if differs else None)
        table.append({"step": check["step"], "bound": check["name"], **cells, "status": check["status"]})
    return pd.DataFrame(table, columns=list(BOUND_COLUMNS))
