"""The report of ``preadapt reproduce arora2019``: [Arora19]'s Tables 1 and 2 and Figure 2 from our
runs, each number beside the paper's, and the claims table (docs/reproduction.md).

The claims and their rules were written before any reproduction was run, and are not changed after
seeing a result. Each compares estimates through an interval for a difference a − b made from the two
intervals' ends, [a.lower − b.upper, a.upper − b.lower]: it covers the difference with probability at
least 1 − 2α whatever the dependence between a and b (they often share test points), so no pairing is
assumed. A verdict is ``held``, ``not held`` or ``inconclusive`` (the interval cannot decide):

(i) *the mean classifier is close to TR on AVG-2*: per data row and representation, d = μ − TR on
    AVG-2; held when d's interval lies inside [−0.03, 0.03] (3 points, about the paper's largest gap on
    AVG-2), not held when it lies outside it, else inconclusive; overall, held when every row holds, not
    held when one does not, else inconclusive;
(ii) *supervised representations are at least as good as CURL's*: per data row, d = supervised − CURL on
    AVG-k with TR (k = 10, or 5 on a world of 10 classes); held when d's lower end ≥ −0.01, not held
    when its upper end < −0.01, else inconclusive; overall as in (i);
(iii) *accuracy rises with the block size*: on Table 2, d = AVG-2 of μ at b = 10 − at b = 2; held when
    d's interval lies above 0, not held when below, else inconclusive;
(iv) *accuracy rises with k and falls once k approaches |C|*: on Figure 2's world (20 classes) at its
    largest amount of unlabeled data, AVG-2 of μ: a = acc(k = 4) − acc(k = 1) and b = acc(largest k) −
    acc(k = 4); held when a lies above 0 and b below 0, not held when a lies below 0 or b above 0, else
    inconclusive;
(v) *the supervised loss tracks the unsupervised test loss over training*: over the checkpoints of
    Table 2's CURL run with blocks of 1, Spearman's ρ between L_sup (the linear probe's loss on 2-class tasks) and L_un
    on fresh (test) tuples, with the bootstrap CI over checkpoints of ``preadapt.estimate.rank``; held
    when the CI lies above 0, not held when below, else inconclusive.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from preadapt.estimate.rank import rank_correlation
from preadapt.experiment.store import Store
from preadapt.report.figures import save_figure, select_rows
from preadapt.report.html import ENVIRONMENT
from preadapt.report.sweep import aggregate

MARGIN_MEAN_TR = 0.03  # claim (i)
MARGIN_SUPERVISED = 0.01  # claim (ii)

PAPER_TABLE1 = {  # [Arora19] Table 1, accuracy % (THEORY.md section 4; quoted second-hand, approximate)
    ("Wiki-3029", "AVG-2"): (97.8, 97.7, 97.0, 97.3, 97.7, 96.9),
    ("Wiki-3029", "AVG-10"): (89.1, 87.2, 83.1, 88.4, 87.4, 83.5),
    ("Wiki-3029", "TOP-10"): (67.4, 59.0, 48.2, 64.7, 59.0, 45.8),
    ("Wiki-3029", "TOP-1"): (43.2, 33.2, 21.7, 38.7, 30.4, 17.0),
    ("CIFAR-100", "AVG-2"): (97.2, 95.9, 95.8, 93.2, 92.0, 90.6),
    ("CIFAR-100", "AVG-5"): (92.7, 89.8, 89.4, 80.9, 79.4, 75.7),
    ("CIFAR-100", "TOP-5"): (88.9, 83.5, 82.5, 70.4, 65.6, 59.0),
    ("CIFAR-100", "TOP-1"): (72.1, 69.9, 67.3, 36.9, 31.8, 25.0),
}
PAPER_COLUMNS = [("supervised", "TR"), ("supervised", "μ"), ("supervised", "μ-5"), ("CURL", "TR"), ("CURL", "μ"),
                 ("CURL", "μ-5")]
PAPER_TABLE2 = {2: 96.6, 5: 97.5, 10: 97.7}  # Wiki-3029 CURL, by block size
MU_AVG2 = "acc_avg[adapter=mean,shots=none,task_classes=2]"  # Table 2's and Figure 2's accuracy


Loaded = tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]] | None
"""A part's store as ``_load`` reads it once: (results, runs, the sweep's plan), or None when absent."""


def _load(folder: Path) -> Loaded:
    path = folder / "results.sqlite"
    if not path.is_file():
        return None
    store = Store(path)
    try:
        return store.results(), store.runs(), store.get_meta("sweep")
    finally:
        store.close()


def _selector(column: str, metric: str, size: int, mu_shots: int, tr_shots: int) -> str:
    """The quantity selector of one cell of Table 1: column TR, μ or μ-5; metric AVG or TOP."""
    if metric == "AVG":
        adapter, shots = {"TR": ("linear", tr_shots), "μ": ("mean", "none"), "μ-5": ("mean", mu_shots)}[column]
        return f"acc_avg[adapter={adapter},shots={shots},task_classes={size}]"
    adapter, shots = {"TR": ("linear", tr_shots), "μ": ("mean", "none"), "μ-5": ("mean", mu_shots)}[column]
    return f"acc_top[adapter={adapter},shots={shots},top_r={size}]"


def _aggregates(loaded: Loaded) -> Callable[[str], pd.DataFrame | None]:
    """``selector`` → its aggregate over a part's grid points (``report.sweep.aggregate``), each
    computed once however many cells read it; None without the part or the quantity."""
    tables: dict[str, pd.DataFrame | None] = {}

    def table(selector: str) -> pd.DataFrame | None:
        if selector not in tables:
            try:
                tables[selector] = None if loaded is None else aggregate(*loaded, selector)
            except (KeyError, ValueError):
                tables[selector] = None
        return tables[selector]

    return table


def _cell(table: pd.DataFrame | None, point: Mapping[str, Any]) -> dict[str, Any] | None:
    """The row of an aggregate ``table`` at the grid point ``point`` (axis → label): value, lower, upper, n."""
    if table is None:
        return None
    for axis, value in point.items():
        if axis not in table.columns:
            return None
        table = table[table[axis].astype(str) == str(value)]
    if len(table) != 1:
        return None
    row = table.iloc[0]
    return {"value": float(row["value"]), "lower": float(row["lower"]), "upper": float(row["upper"]),
            "n": row.get("n"), "level": float(row.get("level", 0.95))}


def _text(cell: Mapping[str, Any] | None, percent: bool = True) -> str:
    """An accuracy in percent with one decimal, or a loss (``percent`` False) with four."""
    if cell is None:
        return "—"
    if percent:
        return f"{100 * cell['value']:.1f} [{100 * cell['lower']:.1f}, {100 * cell['upper']:.1f}]"
    return f"{cell['value']:.4f} [{cell['lower']:.4f}, {cell['upper']:.4f}]"


def difference(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> tuple[float, float, float] | None:
    """a − b with the interval [a.lower − b.upper, a.upper − b.lower] (coverage ≥ 1 − 2α whatever their
    dependence); None when either is missing.

    >>> difference({"value": 0.9, "lower": 0.88, "upper": 0.92}, {"value": 0.8, "lower": 0.79, "upper": 0.81})
    (0.09999999999999998, 0.06999999999999995, 0.13)
    """
    if a is None or b is None:
        return None
    return a["value"] - b["value"], a["lower"] - b["upper"], a["upper"] - b["lower"]


def within(d: tuple[float, float, float] | None, margin: float) -> str:
    """held: the interval inside [−margin, margin]; not held: disjoint from it; else inconclusive."""
    if d is None or not all(map(math.isfinite, d)):
        return "inconclusive"
    if -margin <= d[1] and d[2] <= margin:
        return "held"
    if d[1] > margin or d[2] < -margin:
        return "not held"
    return "inconclusive"


def at_least(d: tuple[float, float, float] | None, margin: float = 0.0) -> str:
    """held: the interval's lower end ≥ −margin (> 0 when margin is 0); not held: its upper end < −margin."""
    if d is None or not all(map(math.isfinite, d)):
        return "inconclusive"
    if (d[1] >= -margin) if margin > 0 else (d[1] > 0):
        return "held"
    if d[2] < -margin:
        return "not held"
    return "inconclusive"


def overall(verdicts: list[str]) -> str:
    if not verdicts:
        return "inconclusive"
    if "not held" in verdicts:
        return "not held"
    return "held" if all(v == "held" for v in verdicts) else "inconclusive"


def _d_text(d: tuple[float, float, float] | None) -> str:
    return "—" if d is None else f"{100 * d[0]:+.1f} [{100 * d[1]:+.1f}, {100 * d[2]:+.1f}] points"


def table1(loaded: Loaded, plan: Mapping[str, Any]) -> tuple[list[dict[str, Any]], dict[tuple, Any]]:
    """Rows of Table 1 (one per data row and metric) with our cells and the paper's, and the cells by
    (row, representation, column, metric, size) for the claims."""
    rows, cells, table = [], {}, _aggregates(loaded)
    for row in plan["rows"]:
        metrics = [("AVG", 2), ("AVG", row["avg_k"]), ("TOP", 1), ("TOP", row["top_r"])]
        for metric, size in metrics:
            name = f"{metric}-{size}"
            ours = []
            for representation, column in PAPER_COLUMNS:
                selector = _selector(column, metric, size, plan["mu_shots"], row.get("tr_shots", plan["tr_shots"]))
                cell = _cell(table(selector), {"encoder": row["label"], "objective": representation})
                cells[(row["label"], representation, column, metric, size)] = cell
                ours.append(_text(cell))
            paper = PAPER_TABLE1.get((row["paper"], name)) if row["paper"] else None
            rows.append({"row": row["label"], "metric": name, "ours": ours,
                         "paper": [f"{v:.1f}" for v in paper] if paper else ["—"] * 6,
                         "paper_name": row["paper"] or "—"})
    return rows, cells


def table2(loaded: Loaded) -> tuple[list[dict[str, Any]], dict[int, Any]]:
    rows, cells = [], {}
    table = _aggregates(loaded)(MU_AVG2)
    for block in (1, 2, 5, 10):
        mu = _cell(table, {"objective.block_size": block})
        cells[block] = mu
        rows.append({"block": block, "mu": _text(mu), "paper": f"{PAPER_TABLE2[block]:.1f}" if block in PAPER_TABLE2 else "—"})
    return rows, cells


def figure2(loaded: Loaded, curves: Mapping[str, pd.DataFrame], plan: Mapping[str, Any],
            figures: Path) -> tuple[dict[str, Any], dict[tuple, Any]]:
    """Left: AVG-2 of μ against the training tuples, one line per k; right: L_sup, L_un (test) and L_pre
    on the training tuples over the checkpoints of Table 2's CURL run with b = 1. Returns the figure's path
    and the cells of the left panel by (k, tuples)."""
    table = _aggregates(loaded)(MU_AVG2)
    cells = {(k, n): _cell(table, {"objective.negatives": k, "pretrain.tuples": n})
             for k in plan["negatives"] for n in plan["amounts"]}
    fig = Figure(figsize=(11, 4.2))
    left, right = fig.subplots(1, 2)
    for k in plan["negatives"]:
        found = [(n, cells[(k, n)]) for n in plan["amounts"] if cells[(k, n)] is not None]
        if not found:
            continue
        x = [n for n, _ in found]
        y = np.array([c["value"] for _, c in found])
        low = np.array([c["lower"] for _, c in found])
        high = np.array([c["upper"] for _, c in found])
        line, = left.plot(x, y, marker="o", label=f"k = {k}")
        left.fill_between(x, low, high, alpha=0.2, color=line.get_color())
    left.set_xscale("log")
    left.set_xlabel("unlabeled data: training tuples")
    left.set_ylabel("AVG-2 of the mean classifier, with CI")
    left.set_title(f"accuracy against unlabeled data ({plan['figure2_classes']} topic classes)")
    left.legend(loc="lower right")
    for name, label in (("L_sup", "L_sup (supervised, 2-class)"), ("L_un", "L_un on fresh tuples (test)"),
                        ("L_pre_train", "L_pre on the training tuples (train)")):
        rows = curves.get(name)
        if rows is None or not len(rows):
            continue
        line, = right.plot(rows["step"], rows["value"], marker="o", label=label)
        right.fill_between(rows["step"], rows["lower"], rows["upper"], alpha=0.2, color=line.get_color())
    right.set_xlabel("training step (Table 2's CURL run, b = 1)")
    right.set_ylabel("loss (bits), with CI")
    right.set_title("supervised loss against unsupervised losses over training")
    right.legend(loc="upper right")
    fig.tight_layout()
    path = save_figure(fig, figures / "figure2.png")
    return {"figure": f"figures/{Path(path).name}"}, cells


def loss_curves(loaded: Loaded) -> dict[str, pd.DataFrame]:
    """Table 2's run with blocks of 1 (CURL on the topic world; ``loaded``: Table 2's store), per
    checkpoint: L_sup (linear, 2-class), L_un (k = 1, fresh) and L_pre_train, each sorted by step."""
    if loaded is None:
        return {}
    results, runs, sweep = loaded
    plan_runs = [r for r in sweep.get("runs", []) if str(r.get("values", {}).get("objective.block_size")) == "1"
                 and r.get("replicate") == 0]
    if not plan_runs:
        return {}
    mine = results[results["run"].astype(str) == plan_runs[0]["run_id"]]
    picks = {"L_sup": (mine["quantity"] == "L_sup") & (mine["adapter"].astype(str) == "linear"),
             "L_un": (mine["quantity"] == "L_un") & (pd.to_numeric(mine["negatives"], errors="coerce") == 1),
             "L_pre_train": mine["quantity"] == "L_pre_train"}
    curves = {}
    for name, mask in picks.items():
        rows = mine[mask].drop_duplicates("step").sort_values("step")
        curves[name] = rows[["step", "value", "lower", "upper", "n", "level"]].astype(
            {"value": float, "lower": float, "upper": float})
    return curves


def claims(plan: Mapping[str, Any], cells1: Mapping[tuple, Any], cells2: Mapping[int, Any],
           cells_f2: Mapping[tuple, Any], curves: Mapping[str, pd.DataFrame]) -> list[dict[str, str]]:
    """The five claims of this module's docstring, each with its verdict and the numbers behind it."""
    found = []
    per_row = []
    for row in plan["rows"]:
        for representation in ("supervised", "CURL"):
            d = difference(cells1.get((row["label"], representation, "μ", "AVG", 2)),
                           cells1.get((row["label"], representation, "TR", "AVG", 2)))
            per_row.append((f"{row['label']}, {representation}: μ − TR {_d_text(d)}", within(d, MARGIN_MEAN_TR)))
    found.append({"claim": "(i) the mean classifier is close to TR on AVG-2",
                  "rule": f"μ − TR within ±{100 * MARGIN_MEAN_TR:.0f} points, every row",
                  "verdict": overall([v for _, v in per_row]),
                  "numbers": "; ".join(f"{text}: {v}" for text, v in per_row)})
    per_row = []
    for row in plan["rows"]:
        k = row["avg_k"]
        d = difference(cells1.get((row["label"], "supervised", "TR", "AVG", k)),
                       cells1.get((row["label"], "CURL", "TR", "AVG", k)))
        per_row.append((f"{row['label']}: supervised − CURL (TR, AVG-{k}) {_d_text(d)}", at_least(d, MARGIN_SUPERVISED)))
    found.append({"claim": "(ii) supervised representations are at least as good as CURL's",
                  "rule": f"supervised − CURL (TR, AVG-k) ≥ −{100 * MARGIN_SUPERVISED:.0f} point, every row",
                  "verdict": overall([v for _, v in per_row]),
                  "numbers": "; ".join(f"{text}: {v}" for text, v in per_row)})
    d = difference(cells2.get(10), cells2.get(2))
    found.append({"claim": "(iii) accuracy rises with the block size", "rule": "AVG-2 (μ) at b = 10 − at b = 2 > 0",
                  "verdict": at_least(d), "numbers": f"b = 10 − b = 2: {_d_text(d)}"})
    most = max(plan["amounts"])
    largest = max(plan["negatives"])
    a = difference(cells_f2.get((4, most)), cells_f2.get((1, most)))
    b = difference(cells_f2.get((largest, most)), cells_f2.get((4, most)))
    if a is None or b is None:
        verdict = "inconclusive"
    elif a[2] < 0 or b[1] > 0:
        verdict = "not held"
    elif a[1] > 0 and b[2] < 0:
        verdict = "held"
    else:
        verdict = "inconclusive"
    found.append({"claim": "(iv) accuracy rises with k, then falls as k approaches |C|",
                  "rule": f"at {most} tuples: acc(k = 4) − acc(k = 1) > 0 and acc(k = {largest}) − acc(k = 4) < 0 "
                          f"({plan['figure2_classes']} classes)",
                  "verdict": verdict, "numbers": f"k = 4 − k = 1: {_d_text(a)}; k = {largest} − k = 4: {_d_text(b)}"})
    rho = None
    if curves.get("L_sup") is not None and curves.get("L_un") is not None:
        both = curves["L_sup"].merge(curves["L_un"], on="step", suffixes=("_sup", "_un"))
        if len(both) >= 3:
            rho = rank_correlation(both["value_sup"].to_numpy(float), both["value_un"].to_numpy(float),
                                   both["step"].tolist(), generator=np.random.default_rng(0))
    if rho is None or not math.isfinite(rho.value):
        verdict, numbers = "inconclusive", "fewer than 3 checkpoints with both losses"
    else:
        verdict = "held" if rho.lower > 0 else "not held" if rho.upper < 0 else "inconclusive"
        numbers = (f"Spearman ρ(L_sup, L_un test) {rho.value:.2f} [{rho.lower:.2f}, {rho.upper:.2f}] over "
                   f"{rho.points} checkpoints (a CI conditional on the run)")
    found.append({"claim": "(v) the supervised loss tracks the unsupervised test loss over training",
                  "rule": "Spearman ρ(L_sup, L_un on fresh tuples) over checkpoints > 0", "verdict": verdict,
                  "numbers": numbers})
    return found


PRETRAINED_COLUMNS = ("glosses", "τ", "L_un", "L^μ_sup (Lemma 4.3 lhs)", "(L_un − τ)/(1 − τ) (rhs)", "Lemma 4.3",
                      "AVG-2 (μ)", "AVG-10 (μ)", "TOP-1 (μ)")


def _last(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["step"] == rows["step"].max()] if len(rows) else rows


def _pick(rows: pd.DataFrame, quantity: str, **context) -> dict[str, Any] | None:
    """The first row of ``quantity`` with this context (``report.figures.select_rows``) as a cell."""
    found = select_rows(rows, quantity, **context)
    if not len(found):
        return None
    row = found.iloc[0]
    return {"value": float(row["value"]), "lower": float(row["lower"]), "upper": float(row["upper"]),
            "status": row.get("status")}


def pretrained_row(name: str, rows: pd.DataFrame, glosses: Any) -> dict[str, Any]:
    """One encoder's line of the MiniLM table, from its tidy rows at the last step."""
    rows = _last(rows)
    tau = _pick(rows, "tau")
    l_un = _pick(rows, "L_un", negatives=1)
    lhs = _pick(rows, "bound_lhs", bound="lemma_4_3")
    rhs = _pick(rows, "bound_rhs", bound="lemma_4_3")
    values = [str(glosses), "—" if tau is None else f"{tau['value']:.4f}", _text(l_un, percent=False),
              _text(lhs, percent=False), _text(rhs, percent=False), "—" if lhs is None else str(lhs["status"]),
              _text(_pick(rows, "acc_avg", adapter="mean", shots=None, task_classes=2)),
              _text(_pick(rows, "acc_avg", adapter="mean", shots=None, task_classes=10)),
              _text(_pick(rows, "acc_top", adapter="mean", shots=None, top_r=1))]
    return {"encoder": name, "columns": list(PRETRAINED_COLUMNS), "values": values}


def pretrained_rows(out: Path, loaded: Loaded) -> list[dict[str, Any]]:
    """The frozen MiniLM on WordNet glosses (``out/minilm``), then the CURL encoders trained here on the
    wordnet world (Table 1's wordnet rows, CURL), each at its last step."""
    found = []
    path = out / "minilm" / "results.csv"
    if path.is_file():
        rows = pd.read_csv(path)
        found.append(pretrained_row("MiniLM (frozen, all-MiniLM-L6-v2)", rows, rows["glosses"].iloc[0]))
    if loaded is not None:
        results, _, sweep = loaded
        for entry in sweep.get("runs", []):
            values = entry.get("values", {})
            if values.get("objective") == "CURL" and str(values.get("encoder", "")).startswith("wordnet") \
                    and entry.get("replicate") == 0:
                label = str(values["encoder"])
                found.append(pretrained_row(f"{label}, CURL (trained here)",
                                            results[results["run"].astype(str) == entry["run_id"]], "all"))
    return found


def write_reproduction_report(out: str | Path, plan: Mapping[str, Any], title: str = "preadapt reproduce arora2019") -> Path:
    """``out/report.html`` (and ``figures/figure2.png``, ``tables.csv``, ``claims.csv``) from the parts'
    folders of ``out`` and the plan's description; returns the page's path."""
    out = Path(out)
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    parts = {name: _load(out / name) for name in ("table1", "table2", "figure2")}  # each store read once
    curves = loss_curves(parts["table2"])
    rows1, cells1 = table1(parts["table1"], plan)
    rows2, cells2 = table2(parts["table2"])
    figure, cells_f2 = figure2(parts["figure2"], curves, plan, figures)
    found = claims(plan, cells1, cells2, cells_f2, curves)
    pd.DataFrame(found).to_csv(out / "claims.csv", index=False)
    pd.DataFrame([{"row": r["row"], "metric": r["metric"], "paper": r["paper_name"],
                   **{f"{rep} {col}": ours for (rep, col), ours in zip(PAPER_COLUMNS, r["ours"])},
                   **{f"paper {rep} {col}": p for (rep, col), p in zip(PAPER_COLUMNS, r["paper"])}}
                  for r in rows1]).to_csv(out / "tables.csv", index=False)
    extra = pretrained_rows(out, parts["table1"])
    html = ENVIRONMENT.get_template("reproduction.html").render(
        title=title, plan=plan, claims=found, table1=rows1, columns=PAPER_COLUMNS, table2=rows2, figure=figure,
        extra=extra, missing=plan.get("missing", {}))
    path = out / "report.html"
    path.write_text(html, encoding="utf-8")
    return path


__all__ = ["write_reproduction_report", "claims", "difference", "within", "at_least", "overall", "PAPER_TABLE1"]
