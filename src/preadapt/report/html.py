"""The HTML report of one run: provenance, config, summary, Lemma 4.3, Theory, figures, every quantity.

The page is self-contained (inline CSS, figures as relative PNG paths, no external resources) and
rendered with jinja2 autoescaping, so a config or an error message can never inject markup.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from preadapt.report.figures import (
    plot_accuracy,
    plot_blocks,
    plot_lemma_4_3,
    plot_losses,
    plot_negatives,
    plot_theory,
)
from preadapt.report.tables import (
    blocks_table,
    bound_table,
    checkpoint_table,
    dominant_level,
    format_level,
    format_term,
    negatives_table,
    summary_table,
    term_notes,
    term_table,
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
}
"""Figure name (``figures/NAME.png``) and the function that draws it."""

HIDDEN_RUN_COLUMNS = ("config_json",)
"""Provenance columns left out of the page (the config is shown once, as YAML)."""

_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("preadapt.report", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _text(value: Any) -> str:
    """A provenance cell as text ("" for a missing value)."""
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
    return [str(c) for c in table.columns], [[_text(v) for v in row] for row in table.itertuples(index=False)]


def _verdict_level(results: pd.DataFrame) -> str:
    """The level of the Lemma 4.3 slack intervals (the verdict level), as a percentage."""
    if len(results) == 0 or "bound" not in results.columns:
        return ""
    slack = results[(results["quantity"] == "bound_slack") & (results["bound"] == "lemma_4_3").fillna(False)]
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
STATUS_COLUMNS = ("status", "proposition_6_2", "block_below_un", "block_monotone")
"""Columns shown as verdict badges; PLAIN_COLUMNS as text; every other column as a number."""
PLAIN_COLUMNS = ("step", "check", "statement", "note", "k", "b", "vacuous")


def _columns(table: pd.DataFrame, headers: dict[str, str]) -> list[dict[str, str]]:
    """Column specs for the template's table macro: key, header, and how a cell is shown."""
    return [{"key": str(c), "header": headers.get(str(c), str(c)),
             "kind": "status" if c in STATUS_COLUMNS else "text" if c in PLAIN_COLUMNS else "num"}
            for c in table.columns]


def _table(table: pd.DataFrame, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {"columns": _columns(table, headers or {}),
            "rows": [{str(k): _text(v) for k, v in row.items()} for row in table.to_dict("records")]}


def _theorems(results: pd.DataFrame) -> list[dict[str, Any]]:
    """Per theorem checked: its terms table, the notes on its terms, and the constants at its last step."""
    table_level = dominant_level(results) if len(results) else None
    theorems = []
    for bound, title in THEOREMS.items():
        terms = term_table(results, bound)
        if terms.empty:
            continue
        last = [check for check in theory_checks(results, last=True) if check["bound"] == bound][-1]
        constants = [(name, format_term(last["terms"][name], table_level) if name in last["terms"] else "not recorded")
                     for name in CONSTANT_TERMS]
        theorems.append({"bound": bound, "title": title, "table": _table(terms), "notes": term_notes(results, bound),
                         "constants": constants, "step": last["step"]})
    return theorems


def write_report(out_dir: str | Path, results: pd.DataFrame, runs: pd.DataFrame, config_yaml: str, title: str) -> Path:
    """Write ``out_dir/figures/*.png`` and ``out_dir/report.html``; return the HTML's path.

    ``results`` is the tidy results frame, ``runs`` the store's provenance rows (any columns),
    ``config_yaml`` the resolved config as text (``config_json`` of ``runs`` is not repeated). Figures whose quantities were not measured are
    left out (and any stale PNG of that name removed); the page says so in their place.
    """
    out_dir = Path(out_dir)
    figures_dir = out_dir / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    figures = {}
    for name, plot in FIGURES.items():
        target = figures_dir / f"{name}.png"
        if plot(results, target) is not None:
            figures[name] = f"figures/{name}.png"
        elif target.exists():
            target.unlink()

    steps = sorted(int(s) for s in results["step"].unique()) if len(results) else []
    table_level = dominant_level(results) if len(results) else None
    all_bounds = bound_table(results)
    lemma = all_bounds[all_bounds["bound"].str.match(r"lemma_4_3( \(|$)")] if len(all_bounds) else all_bounds
    per_checkpoint = checkpoint_table(results)
    provenance = runs if runs is not None else pd.DataFrame()
    runs_columns, runs_rows = _records(provenance.drop(columns=[c for c in HIDDEN_RUN_COLUMNS if c in provenance]))
    summary_columns, summary_rows = _records(summary_table(results))

    html = _ENVIRONMENT.get_template("report.html").render(
        title=title,
        runs_columns=runs_columns,
        runs_rows=runs_rows,
        config_yaml=config_yaml,
        last_step=steps[-1] if steps else None,
        summary_columns=summary_columns,
        summary_rows=summary_rows,
        lemma_rows=lemma.to_dict("records"),
        theory_last=_table(theory_table(results, last=True), THEORY_HEADERS),
        theory_all=_table(theory_table(results), THEORY_HEADERS),
        theorems=_theorems(results),
        negatives=_table(negatives_table(results), NEGATIVES_HEADERS),
        vacuous_from=vacuous_from(results),
        blocks=_table(blocks_table(results), BLOCKS_HEADERS),
        verdict_level=_verdict_level(results),
        figures=figures,
        table_level=format_level(table_level) if table_level is not None and math.isfinite(table_level) else "",
        checkpoint_steps=[str(s) for s in per_checkpoint.columns],
        checkpoint_rows=[(label, list(cells)) for label, cells in zip(per_checkpoint.index, per_checkpoint.values)],
    )
    path = out_dir / "report.html"
    path.write_text(html, encoding="utf-8")
    return path
