"""The report layer on a synthetic tidy results frame: labels, formats, tables, figures, HTML."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest

from preadapt.report.figures import (
    plot_accuracy,
    plot_blocks,
    plot_lemma_4_3,
    plot_losses,
    plot_negatives,
    plot_theory,
)
from preadapt.report.html import write_report
from preadapt.report.tables import (
    blocks_table,
    bound_table,
    checkpoint_table,
    context_label,
    format_estimate,
    negatives_table,
    summary_table,
    term_notes,
    term_table,
    theory_table,
    vacuous_from,
)

STEPS = (0, 50, 800)
STATUSES = {0: "inconclusive", 50: "holds", 800: "violated"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
INT_CONTEXT = ("negatives", "block_size", "task_classes", "top_r", "shots")
STR_CONTEXT = ("adapter", "split", "bound", "status", "term", "note")
CLASSES = 16
NEGATIVES = (2, 4, 8, 16, 32, 64)
VACUOUS_FROM = {0: 8, 50: 8, 800: 16}
"""The smallest k whose k-negative bound is vacuous, per step (the report reads the last step's)."""
BLOCKS = (1, 2, 5, 10)
PREMISE_NOTE = "f̂ has higher empirical L_un than the comparator (step 800): 0.91 > 0.85"
RAD_S_NOTE = "linear class {x ↦ Wx : ‖W‖_F ≤ B}, Monte Carlo over σ"
GEN_M = {0: 0.4321, 50: 0.3579, 800: 0.2468}
SIMPLE_CHECKS = {
    "mean_below_diff": ("L_un_diff", "L_sup_mean"),
    "jensen_floor": ("L_un_same",),
    "lemma_4_4": ("s_f", "c_prime", "L_un_same"),
}
ALL_CHECKS = ("lemma_4_3", *SIMPLE_CHECKS, "theorem_4_1", "theorem_4_5", "lemma_4_3_negatives", "proposition_6_2",
              "block_below_un", "block_monotone")


def tau_k(k: int) -> float:
    """τ_k under a uniform prior on CLASSES classes: P(some negative shares the anchor's class)."""
    return 1.0 - (1.0 - 1.0 / CLASSES) ** k


def synthetic_results() -> pd.DataFrame:
    """Three checkpoints, every quantity of DESIGN.md section 3, and a Lemma 4.3 status mix."""
    rows = []

    def add(step, quantity, value, half=0.01, n=20000, method="t", level=0.95, **context):
        if method == "exact":
            half, n, level = 0.0, None, 1.0
        rows.append({"run": "demo", "step": step, "quantity": quantity, "value": value,
                     "lower": value - half, "upper": value + half, "n": n, "level": level,
                     "method": method, **context})

    def check(step, bound, lhs, rhs, status, note="", terms=(), half=0.01, **context):
        """The three side rows of a bound check and its terms (name, value, method)."""
        context = {"bound": bound, "status": status, "note": note, **context}
        add(step, "bound_lhs", lhs, half=half, **context)
        add(step, "bound_rhs", rhs, half=half, **context)
        add(step, "bound_slack", rhs - lhs, half=2 * half, level=0.999, **context)
        for term, value, method in terms:
            add(step, "bound_term", value, method=method, term=term, **context)

    for i, step in enumerate(STEPS):
        drop = 0.2 * i
        add(step, "tau", 0.05, method="exact")
        add(step, "L_pre_train", 0.97 - drop, method="empirical", n=20000)
        add(step, "L_pre", 1.02 - drop)
        add(step, "L_un", 1.0 - drop, negatives=1)
        for k in NEGATIVES:
            add(step, "tau_k", tau_k(k), method="exact", negatives=k)
            add(step, "L_un", 1.5 - drop + 0.3 * k.bit_length(), negatives=k)
        for b in BLOCKS:
            add(step, "L_un_block", 1.0 - drop - 0.02 * (b - 1), negatives=1, block_size=b)
        add(step, "L_un_same", 1.0, negatives=1)
        add(step, "L_un_diff", 1.0 - 1.05 * drop, negatives=1)
        add(step, "s_f", 0.3 + drop, method="bootstrap", n=2000)
        add(step, "align", 1.0 - drop)
        add(step, "uniform", -1.0 - drop)
        for classes in (2, 10):
            add(step, "L_sup_mean", 0.9 - drop + 0.5 * (classes == 10), adapter="mean", task_classes=classes)
        add(step, "L_sup", 0.8 - drop, adapter="linear", task_classes=2)
        for adapter in ("linear", "mean"):
            for classes in (2, 10):
                for shots in ((5, 50) if adapter == "linear" else (None,)):
                    add(step, "acc_avg", 0.6 + 0.1 * i + 0.02 * (adapter == "linear") - 0.2 * (classes == 10)
                        + 0.01 * (shots or 0) / 5, adapter=adapter, task_classes=classes, shots=shots)
            for top_r in (1, 5):
                add(step, "acc_top", 0.4 + 0.1 * i + 0.3 * (top_r == 5), adapter=adapter, top_r=top_r)
        lhs, rhs = 0.9 - drop, (1.0 - drop - 0.05) / 0.95
        slack = {"holds": 0.2, "inconclusive": 0.0, "violated": -0.1}[STATUSES[step]]
        lhs = rhs - slack
        status = STATUSES[step]
        add(step, "bound_lhs", lhs, adapter="mean", task_classes=2, bound="lemma_4_3", status=status)
        add(step, "bound_rhs", rhs, negatives=1, bound="lemma_4_3", status=status)
        add(step, "bound_slack", slack, half=0.02, level=0.999, bound="lemma_4_3", status=status)
        add_theory_checks(check, step, drop)
    frame = pd.DataFrame(rows)
    frame["n"] = frame["n"].astype("Int64")
    for column in INT_CONTEXT:
        frame[column] = (frame[column] if column in frame else pd.Series([None] * len(frame))).astype("Int64")
    for column in STR_CONTEXT:
        frame[column] = (frame[column] if column in frame else None)
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frame


def add_theory_checks(check, step, drop):
    """The checks of the Theory section at one step: the for-every-f statements, the theorems
    (premise not met at step 0), Lemma 4.3 with k negatives (vacuous from VACUOUS_FROM[step]) and
    the block statements (b in BLOCKS)."""
    for bound, terms in SIMPLE_CHECKS.items():
        check(step, bound, 0.7 - drop, 0.9 - drop, "holds", terms=[(t, 0.5 + 0.1 * j, "t") for j, t in enumerate(terms)])
    gen_m = GEN_M[step]
    theorem_terms = [
        ("tau", 0.05, "exact"), ("L_un", 1.0 - drop, "t"), ("L_un_diff", 0.98 - drop, "t"), ("s_f", 0.3, "bootstrap"),
        ("c_prime", 2.0404, "exact"), ("beta", 0.1074, "exact"), ("eta", 1.0526, "exact"), ("Gen_M", gen_m, "t"),
        ("rademacher_part", gen_m - 0.1, "t"), ("confidence_part", 0.1, "exact"), ("Rad_S", 7654.3, "t"),
        ("Rad_S_upper", 9876.5, "exact"), ("R", 5.0, "exact"), ("M", 20000.0, "exact"), ("delta", 0.05, "exact"),
        ("rademacher_constant", 1.0, "exact"), ("confidence_constant", 1.0, "exact"),
        ("comparator_step", 800.0, "exact"), ("L_hat_un", 0.91 - drop, "empirical"),
        ("L_hat_un_comparator", 0.85 - 0.4, "empirical"),
    ]
    premise = step == 0
    for bound, status in (("theorem_4_1", "holds"), ("theorem_4_5", "inconclusive")):
        check(step, bound, 0.6 - drop, 0.9 - drop + gen_m, "premise not met" if premise else status,
              note=PREMISE_NOTE if premise else "", terms=theorem_terms)
    for k in NEGATIVES:
        tau = tau_k(k)
        threshold = math.log2(min(k + 1, CLASSES))
        vacuous = k >= VACUOUS_FROM[step]
        rhs = threshold * (1.2 if vacuous else 0.8)
        check(step, "lemma_4_3_negatives", 0.3 + 0.1 * k.bit_length() - drop / 2, rhs, "holds",
              note="vacuous" if vacuous else "", negatives=k, terms=[
                  ("tau_k", tau, "exact"), ("coef_un", 1 / (1 - tau), "exact"), ("coef_tau", tau / (1 - tau), "exact"),
                  ("L_un", 1.5 - drop + 0.3 * k.bit_length(), "t"), ("collision_floor", 0.5 * tau, "exact"),
                  ("vacuity_threshold", threshold, "exact")])
    previous = None
    for b in BLOCKS:
        block = 1.0 - drop - 0.02 * (b - 1)
        check(step, "proposition_6_2", 0.5 - drop, (block - 0.05) / 0.95, "holds", block_size=b,
              terms=[("tau", 0.05, "exact"), ("L_un_block", block, "t")])
        check(step, "block_below_un", block, 1.0 - drop, "holds" if b > 1 else "inconclusive", block_size=b,
              terms=[("L_un_block", block, "t"), ("L_un", 1.0 - drop, "t")])
        if previous is not None:
            check(step, "block_monotone", block, previous, "holds", block_size=b,
                  terms=[("L_un_block", block, "t"), ("b_prev", float(BLOCKS[BLOCKS.index(b) - 1]), "exact")])
        previous = block


def page_text(html: str) -> str:
    """The page's text without tags (estimate cells split value, interval and n into spans)."""
    return re.sub(r"<[^>]+>", "", html)


def synthetic_runs() -> pd.DataFrame:
    return pd.DataFrame([{
        "run_id": "demo", "config_hash": "abc123", "config_json": '{"name": "demo-json"}', "status": "finished", "started_at": "2025-01-01T00:00:00",
        "finished_at": "2025-01-01T00:01:00", "error": None, "preadapt_version": "0.1.0", "git_revision": "deadbeef",
        "torch_version": "2.13.0", "threads": 2, "device": "cpu", "seed": 0,
    }])


@pytest.fixture(scope="module")
def results() -> pd.DataFrame:
    return synthetic_results()


def test_context_label_lists_only_the_fields_that_are_set(results):
    labels = {context_label(row) for row in results.to_dict("records")}
    assert "L_un (negatives=1)" in labels
    assert "L_un (negatives=2)" in labels
    assert "acc_avg (adapter=mean, task_classes=10)" in labels
    assert "acc_top (adapter=linear, top_r=5)" in labels
    assert "L_un_block (negatives=1, block_size=5)" in labels
    assert "bound_term (bound=theorem_4_1, term=Rad_S)" in labels
    assert "bound_term (negatives=16, bound=lemma_4_3_negatives, term=coef_un)" in labels
    assert "bound_slack (bound=lemma_4_3)" in labels
    assert "tau" in labels
    # A frame read back from CSV has float context columns and NaN.
    assert context_label({"quantity": "L_sup_mean", "adapter": "mean", "task_classes": 2.0,
                          "negatives": float("nan"), "split": None}) == "L_sup_mean (adapter=mean, task_classes=2)"


@pytest.mark.parametrize(("args", "expected"), [
    ((0.81234, 0.80501, 0.81962, 20000, "t"), "0.8123 [0.8050, 0.8196] n=20000"),
    ((0.05, 0.05, 0.05, None, "exact"), "0.0500 (exact)"),
    ((0.05, 0.05, 0.05, pd.NA, "exact"), "0.0500 (exact)"),
    ((1.234567, 1.2345, 1.2346, 10**6, "normal"), "1.234567 [1.234500, 1.234600] n=1000000"),
    ((-0.1, -0.3, 0.1, 30, "bootstrap"), "-0.1000 [-0.3000, 0.1000] n=30"),
    ((12345.6, 12000.0, 12700.0, 40, "t"), "1.23e+04 [1.20e+04, 1.27e+04] n=40"),
    ((0.5, 0.4, 0.6, pd.NA, "empirical"), "0.5000 [0.4000, 0.6000]"),
])
def test_format_estimate(args, expected):
    assert format_estimate(*args) == expected


def test_checkpoint_table_shape_and_order(results):
    table = checkpoint_table(results)
    assert list(table.columns) == list(STEPS)
    labels = list(table.index)
    assert len(labels) == len(set(labels)) == results.drop_duplicates(
        ["quantity", "negatives", "block_size", "task_classes", "top_r", "adapter", "shots", "bound", "term"]).shape[0]
    # Losses, then adaptation, then diagnostics, then bounds.
    position = {label: i for i, label in enumerate(labels)}
    assert labels[:2] == ["L_pre_train", "L_pre"]
    assert position["L_un (negatives=1)"] < position["L_un (negatives=2)"] < position["L_un_same (negatives=1)"]
    assert position["L_un_diff (negatives=1)"] < position["L_sup_mean (adapter=mean, task_classes=2)"]
    assert position["acc_avg (adapter=mean, task_classes=10)"] < position["acc_avg (adapter=linear, task_classes=2, shots=5)"]
    assert position["acc_avg (adapter=linear, task_classes=2, shots=5)"] < position[
        "acc_avg (adapter=linear, task_classes=2, shots=50)"]
    assert position["acc_top (adapter=linear, top_r=5)"] < position["tau"] < position["uniform"]
    # Bounds last, by statement; within one: lhs, rhs, slack, then its terms.
    assert all(label.startswith("bound_") for label in labels[labels.index("uniform") + 1:])
    lemma = [label for label in labels if "bound=lemma_4_3)" in label]
    assert lemma == ["bound_lhs (adapter=mean, task_classes=2, bound=lemma_4_3)",
                     "bound_rhs (negatives=1, bound=lemma_4_3)", "bound_slack (bound=lemma_4_3)"]
    assert position[lemma[-1]] - position[lemma[0]] == 2
    theorem = [label for label in labels if "bound=theorem_4_1" in label]
    assert theorem[:3] == [f"bound_{side} (bound=theorem_4_1)" for side in ("lhs", "rhs", "slack")]
    assert len(theorem) == 3 + 20 and all(label.startswith("bound_term") for label in theorem[3:])
    assert table.loc["tau", 50] == "0.0500 (exact)"
    assert table.loc["L_un (negatives=1)", 0] == "1.0000 [0.9900, 1.0100] n=20000"
    # The slack's stricter level is named; the table's own level (95%) is not.
    assert table.loc["bound_slack (bound=lemma_4_3)", 50].endswith("n=20000 (99.9%)")


def test_unknown_quantities_go_after_diagnostics_and_before_bounds(results):
    extra = results[results["quantity"] == "tau"].assign(quantity="my_metric", method="t", n=10)
    labels = list(checkpoint_table(pd.concat([results, extra], ignore_index=True)).index)
    assert labels.index("uniform") < labels.index("my_metric") < labels.index("bound_slack (bound=lemma_4_3)")


def test_summary_table_last_step_by_default(results):
    summary = summary_table(results)
    assert list(summary.columns) == ["quantity", "estimate", "lower", "upper", "n", "level", "method"]
    assert len(summary) == len(checkpoint_table(results))
    assert summary.equals(summary_table(results, step=800))
    row = summary.set_index("quantity").loc["L_un (negatives=1)"]
    assert (row["estimate"], row["lower"], row["upper"], row["n"], row["level"], row["method"]) == (
        "0.6000", "0.5900", "0.6100", "20000", "95%", "t")
    tau = summary.set_index("quantity").loc["tau"]
    assert (tau["estimate"], tau["n"], tau["method"]) == ("0.0500", "", "exact")
    first = summary_table(results, step=0).set_index("quantity")
    assert first.loc["L_un (negatives=1)", "estimate"] == "1.0000"
    with pytest.raises(ValueError, match="step must be one of the checkpoints"):
        summary_table(results, step=7)


def test_bound_table(results):
    table = bound_table(results)
    assert list(table.columns) == ["step", "bound", "lhs", "rhs", "slack", "status"]
    lemma = table[table["bound"] == "lemma_4_3"]
    assert lemma["step"].tolist() == list(STEPS)
    assert lemma["status"].tolist() == [STATUSES[s] for s in STEPS]
    assert lemma.loc[lemma["step"] == 50, "slack"].item() == "0.2000 [0.1800, 0.2200] n=20000 (99.9%)"
    # Instanced statements are split by the context that tells their instances apart, and only by it.
    names = set(table["bound"])
    assert {f"lemma_4_3_negatives (negatives={k})" for k in NEGATIVES} <= names
    assert {f"proposition_6_2 (block_size={b})" for b in BLOCKS} <= names
    assert "block_monotone (block_size=1)" not in names
    instances = len(SIMPLE_CHECKS) + 3 + len(NEGATIVES) + 2 * len(BLOCKS) + len(BLOCKS) - 1
    assert len(table) == instances * len(STEPS)
    assert (table["lhs"] != "").all() and (table["rhs"] != "").all() and (table["slack"] != "").all()


def test_write_report(tmp_path, results):
    config = "name: demo\nnote: <script>alert('x')</script> & more\n"
    path = write_report(tmp_path, results, synthetic_runs(), config, title="Demo <run>")
    assert path == tmp_path / "report.html"
    html = path.read_text(encoding="utf-8")
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more" in html
    assert "<title>Demo &lt;run&gt;</title>" in html
    lemma = html[html.index('id="lemma-4-3"'):html.index('<h2 id="theory">')]
    for status in ("holds", "violated", "inconclusive"):
        assert f'<span class="status status-{status}">{status}</span></td>' in lemma
    assert "0.2000 [0.1800, 0.2200] n=20000 (99.9%)" in page_text(lemma)
    assert "(99.9%)" in lemma and "entirely below 0" in lemma
    assert "abc123" in html and "deadbeef" in html and "demo-json" not in html
    for name in ("losses", "lemma_4_3", "accuracy"):
        assert f'src="figures/{name}.png"' in html
        assert (tmp_path / "figures" / f"{name}.png").read_bytes().startswith(PNG_MAGIC)
    assert "http://" not in html and "https://" not in html
    # The full table: every quantity at every step.
    assert "bound_slack (bound=lemma_4_3)" in html and "acc_top (adapter=mean, top_r=1)" in html


def test_figures_return_their_path(tmp_path, results):
    for plot in (plot_losses, plot_lemma_4_3, plot_accuracy):
        target = tmp_path / "sub" / f"{plot.__name__}.png"
        assert plot(results, target) == target
        assert target.read_bytes().startswith(PNG_MAGIC)


def test_missing_quantities_are_skipped(tmp_path, results):
    only_tau = results[results["quantity"] == "tau"]
    assert plot_losses(only_tau, tmp_path / "a.png") is None
    assert plot_lemma_4_3(only_tau, tmp_path / "b.png") is None
    assert plot_accuracy(only_tau, tmp_path / "c.png") is None
    assert not list(tmp_path.glob("*.png"))
    assert bound_table(only_tau).empty
    # Without the bound or status columns at all, and with no rows.
    bare = only_tau.drop(columns=["bound", "status", "adapter"])
    assert plot_lemma_4_3(bare, tmp_path / "d.png") is None
    assert bound_table(bare).empty
    empty = results.iloc[0:0]
    assert checkpoint_table(empty).empty and summary_table(empty).empty
    for frame in (only_tau, bare, empty):
        html = write_report(tmp_path / "out", frame, synthetic_runs().iloc[0:0], "", title="t").read_text()
        assert "Lemma 4.3 was not checked in this run." in html
        assert "No losses were measured in this run." in html
        assert not (tmp_path / "out" / "figures" / "losses.png").exists()


def test_partial_quantities(tmp_path, results):
    """Only L_un and the lhs of the bound: losses are drawn, Lemma 4.3 has nothing to pair."""
    partial = results[results["quantity"].isin(["L_un", "bound_lhs"])]
    assert plot_losses(partial, tmp_path / "l.png") is not None
    assert plot_lemma_4_3(partial, tmp_path / "m.png") is None
    assert bound_table(partial)["rhs"].eq("").all()


def _theory(html: str) -> str:
    return html[html.index('<h2 id="theory">Theory</h2>'):html.index('<h2 id="all-quantities">')]


def test_theory_table_lists_every_check_at_its_last_checkpoint(results):
    table = theory_table(results, last=True)
    assert list(table.columns) == ["step", "check", "statement", "lhs", "rhs", "slack", "status", "note"]
    assert set(table["step"]) == {800}
    # Known statements in the order of THEORY.md, instances by k and b in numeric order.
    order = [next(bound for bound in sorted(ALL_CHECKS, key=len, reverse=True) if check.startswith(bound))
             for check in table["check"]]
    assert list(dict.fromkeys(order)) == list(ALL_CHECKS)
    negatives = [check for check in table["check"] if check.startswith("lemma_4_3_negatives")]
    assert negatives == [f"lemma_4_3_negatives (negatives={k})" for k in NEGATIVES]
    assert table.set_index("check").loc["lemma_4_3", "statement"] == "L^μ_sup(f) ≤ (L_un(f) − τ)/(1 − τ)"
    every = theory_table(results)
    assert len(every) == len(bound_table(results)) == len(table) * len(STEPS)
    premise = every[every["status"] == "premise not met"]
    assert premise["check"].tolist() == ["theorem_4_1", "theorem_4_5"] and set(premise["step"]) == {0}
    assert (premise["note"] == PREMISE_NOTE).all()


def test_term_table_has_every_term_of_the_theorems(results):
    terms = term_table(results, "theorem_4_1")
    assert terms["step"].tolist() == list(STEPS)
    assert list(terms.columns)[1:4] == ["tau", "L_un", "L_un_diff"] and list(terms.columns)[-2:] == ["status", "note"]
    assert len(terms.columns) == 1 + 20 + 2
    at_end = terms.set_index("step").loc[800]
    assert at_end["Gen_M"] == format_estimate(GEN_M[800], GEN_M[800] - 0.01, GEN_M[800] + 0.01, 20000, "t")
    assert (at_end["M"], at_end["comparator_step"], at_end["rademacher_constant"], at_end["R"]) == (
        "20000 (exact)", "800 (exact)", "1.0000 (exact)", "5.0000 (exact)")
    assert terms.set_index("step").loc[0, "status"] == "premise not met"
    assert term_notes(results, "theorem_4_1") == {}
    labelled = results.assign(note=results["note"].where(results["term"] != "Rad_S", RAD_S_NOTE))
    assert term_notes(labelled, "theorem_4_1") == {"Rad_S": RAD_S_NOTE}
    assert term_table(results, "no_such_bound").empty


def test_negatives_table_oracle(results):
    """The coefficients are those of τ_k under a uniform prior, read at the last step."""
    table = negatives_table(results)
    assert table["k"].tolist() == list(NEGATIVES)
    for row in table.to_dict("records"):
        tau = tau_k(row["k"])
        for column, value in (("tau_k", tau), ("coef_un", 1 / (1 - tau)), ("coef_tau", tau / (1 - tau))):
            assert row[column] == format_estimate(value, value, value, None, "exact")
        assert row["vacuous"] == ("yes" if row["k"] >= VACUOUS_FROM[800] else "no")
    assert vacuous_from(results) == VACUOUS_FROM[800]
    never = results.assign(note=results["note"].where(results["bound"] != "lemma_4_3_negatives", ""))
    assert vacuous_from(never) is None
    assert negatives_table(results[results["bound"] != "lemma_4_3_negatives"]).empty


def test_blocks_table(results):
    table = blocks_table(results)
    assert table["b"].tolist() == list(BLOCKS)
    assert table["block_monotone"].tolist() == ["", "holds", "holds", "holds"]
    assert table["block_below_un"].tolist() == ["inconclusive", "holds", "holds", "holds"]
    values = [float(cell.split()[0]) for cell in table["L_un_block"]]
    assert values == sorted(values, reverse=True) and (table["lhs"] != "").all()


def test_theory_section(tmp_path, results):
    labelled = results.assign(note=results["note"].where(results["term"] != "Rad_S", RAD_S_NOTE))
    html = write_report(tmp_path, labelled, synthetic_runs(), "name: demo\n", title="t").read_text(encoding="utf-8")
    assert '<a href="#theory">Theory</a>' in html
    theory = _theory(html)
    for bound in ALL_CHECKS:
        assert f"<td>{bound}" in theory
    for k in NEGATIVES:
        assert f"lemma_4_3_negatives (negatives={k})" in theory
    # Every term of the theorems, with its number: one row per term, one column per checkpoint.
    for gen_m in GEN_M.values():
        assert format_estimate(gen_m, gen_m - 0.01, gen_m + 0.01, 20000, "t") in page_text(theory)
    for term in ("Rad_S_upper", "rademacher_constant", "confidence_constant", "L_hat_un_comparator", "comparator_step"):
        assert f'<th scope="row">{term}' in theory
    assert "9876.5000 (exact) at every checkpoint" in page_text(theory) and "20000 (exact)" in page_text(theory)
    assert ("rademacher_constant = 1.0000 (exact), confidence_constant = 1.0000 (exact), delta = 0.0500 (exact)"
            in theory)
    assert "1 = the derived values" in theory
    assert "Rad_S: linear class {x ↦ Wx : ‖W‖_F ≤ B}, Monte Carlo over σ" in theory
    # The premise, with its escaped reason.
    assert '<span class="status status-premise-not-met">premise not met</span>' in theory
    assert "f̂ has higher empirical L_un than the comparator (step 800): 0.91 &gt; 0.85" in theory
    assert "0.91 > 0.85" not in html
    # k negatives: the coefficients' headers and the k from which the bound is vacuous.
    for header in ("1/(1 − τ_k)", "τ_k/(1 − τ_k)", "vacuity threshold", "vacuous?"):
        assert f"<th>{header}</th>" in theory
    assert f"The bound is vacuous from k = {VACUOUS_FROM[800]} on." in theory
    assert "L^block_un(b) ≤ L^block_un(b_prev)" in theory
    for name in ("negatives", "blocks"):
        assert f'src="figures/{name}.png"' in theory
    # The theory figure leads, among the key figures.
    figures = html[html.index('<h2 id="figures">'):html.index('<h2 id="lemma-4-3">')]
    assert 'src="figures/theory.png"' in figures
    for name in ("theory", "negatives", "blocks"):
        assert (tmp_path / "figures" / f"{name}.png").read_bytes().startswith(PNG_MAGIC)
    # The Lemma 4.3 section keeps only Lemma 4.3 (k = 1).
    lemma = html[html.index('id="lemma-4-3"'):html.index('<h2 id="theory">')]
    assert "lemma_4_3_negatives" not in lemma and "theorem_4_1" not in lemma


def test_theory_figures_skip_absent_rows(tmp_path, results):
    write_report(tmp_path, results, synthetic_runs(), "", title="t")
    assert all((tmp_path / "figures" / f"{name}.png").exists() for name in ("theory", "negatives", "blocks"))
    # Without the k-negative and block statements: their figures go (stale PNGs removed), the page says so.
    theory_only = results[~results["bound"].isin(["lemma_4_3_negatives", "proposition_6_2", "block_below_un",
                                                  "block_monotone"])]
    html = write_report(tmp_path, theory_only, synthetic_runs(), "", title="t").read_text(encoding="utf-8")
    assert (tmp_path / "figures" / "theory.png").exists()
    assert not (tmp_path / "figures" / "negatives.png").exists()
    assert not (tmp_path / "figures" / "blocks.png").exists()
    assert "The k-negative form of Lemma 4.3 was not checked in this run." in html
    assert "The block statements were not checked in this run." in html
    assert plot_negatives(theory_only, tmp_path / "n.png") is None and plot_blocks(theory_only, tmp_path / "b.png") is None
    # No vacuous note: the sentence says so.
    never = results[results["bound"] == "lemma_4_3_negatives"].assign(note="")
    html = write_report(tmp_path, never, synthetic_runs(), "", title="t").read_text(encoding="utf-8")
    assert "The bound is not vacuous for any k measured." in html
    # No bound rows at all.
    bare = results[results["bound"].isna()]
    html = write_report(tmp_path, bare, synthetic_runs(), "", title="t").read_text(encoding="utf-8")
    assert '<h2 id="theory">Theory</h2>' in html and "No bound was checked in this run." in html
    assert "Theorems 4.1 and 4.5 were not checked in this run." in html
    assert not list((tmp_path / "figures").glob("theory.png"))
    assert plot_theory(bare, tmp_path / "t.png") is None


def test_theory_figures_return_their_path(tmp_path, results):
    for plot in (plot_theory, plot_negatives, plot_blocks):
        target = tmp_path / f"{plot.__name__}.png"
        assert plot(results, target) == target
        assert target.read_bytes().startswith(PNG_MAGIC)


def test_theory_survives_a_csv_round_trip(tmp_path, results):
    """Read back from CSV, context columns are floats with NaN: names and k, b stay integral."""
    results.to_csv(tmp_path / "results.csv", index=False)
    frame = pd.read_csv(tmp_path / "results.csv")
    assert negatives_table(frame)["k"].tolist() == list(NEGATIVES)
    assert vacuous_from(frame) == VACUOUS_FROM[800]
    assert "proposition_6_2 (block_size=10)" in set(theory_table(frame, last=True)["check"])
    assert theory_table(frame).equals(theory_table(results))
    html = write_report(tmp_path / "csv", frame, synthetic_runs(), "", title="t").read_text(encoding="utf-8")
    assert f"The bound is vacuous from k = {VACUOUS_FROM[800]} on." in html


def test_theory_without_term_and_note_columns(tmp_path, results):
    """A frame from before the ``term`` and ``note`` columns: the checks still show, without terms."""
    old = results[results["quantity"] != "bound_term"].drop(columns=["term", "note"])
    assert len(theory_table(old, last=True)) == len(theory_table(results, last=True))
    assert set(theory_table(old)["note"]) == {""}
    assert vacuous_from(old) is None and term_table(old, "theorem_4_1").columns.tolist() == ["step", "status", "note"]
    html = write_report(tmp_path, old, synthetic_runs(), "", title="t").read_text(encoding="utf-8")
    assert "The bound is not vacuous for any k measured." in html
    assert "Constants at step 800:\nrademacher_constant = not recorded" in html


CONFIG = """name: demo
world: {kind: gaussian, classes: 16, dim: 8}
encoder: {kind: mlp, hidden: [32], out_dim: 8, norm_bound: 5.0}
objective: {kind: curl, loss: logistic, negatives: 1, block_size: 1}
pretrain: {tuples: 2000, epochs: 4, batch_size: 100}
"""


def test_headline_verdicts_and_numbers(results):
    from preadapt.report.tables import headline_numbers, headline_verdicts

    verdicts = {v["bound"]: v for v in headline_verdicts(results)}
    assert list(verdicts) == list(ALL_CHECKS)  # every statement, in the Theory section's order
    assert {v["step"] for v in verdicts.values()} == {800}
    assert verdicts["lemma_4_3"]["status"] == STATUSES[800] and verdicts["lemma_4_3"]["groups"] == [("violated", "")]
    assert verdicts["lemma_4_3"]["slack"] == "-0.1000 [-0.1200, -0.0800] n=20000"
    assert verdicts["lemma_4_3"]["lhs"].startswith("0.6789 [") and verdicts["lemma_4_3"]["rhs"].startswith("0.5789 [")
    # Instances: each verdict with the b it was reached at; the tightest instance's slack and its label.
    below = verdicts["block_below_un"]
    assert below["groups"] == [("inconclusive", "b = 1"), ("holds", "b = 2, 5, 10")]
    assert below["status"] == "3 holds, 1 inconclusive" and below["slack_at"] == "b=1"
    negatives = verdicts["lemma_4_3_negatives"]
    assert negatives["groups"] == [("holds", "k = " + ", ".join(map(str, NEGATIVES)))]
    assert negatives["note"] == "k = 16, 32, 64: vacuous"
    numbers = {n["label"]: n for n in headline_numbers(results)}
    assert list(numbers) == ["L_un", "AVG-2, mean classifier", "AVG-10, mean classifier", "AVG-2, linear probe",
                             "AVG-10, linear probe"]
    assert numbers["L_un"]["cell"] == "0.6000 [0.5900, 0.6100] n=20000"
    assert numbers["AVG-2, linear probe"]["detail"] == "50 shots"  # the probe's largest number of shots
    assert numbers["AVG-2, linear probe"]["cell"].startswith("0.9200 [")


def test_the_page_leads_with_the_answer_and_folds_the_detail(tmp_path, results):
    html = write_report(tmp_path, results, synthetic_runs(), CONFIG, title="preadapt run: demo").read_text(
        encoding="utf-8")
    headline = html[html.index('<header id="headline">'):html.index("</header>")]
    text = page_text(headline)
    assert "<h1>preadapt run: demo</h1>" in headline
    assert ("Encoder mlp (hidden=[32], out_dim=8, norm_bound=5) pretrained with objective curl (loss=logistic, "
            "negatives=1, block_size=1) on world gaussian (classes=16, dim=8) for 800 steps (4 epochs over 2000 "
            "tuples, batches of 100); checked at checkpoints 0, 50 and 800.") in text
    for title in ("Lemma 4.3", "Jensen floor", "Theorem 4.5", "Lemma 4.3, k negatives", "Blocks: monotone in b"):
        assert f"<strong>{title}</strong>" in headline
    assert '<span class="status status-violated">violated</span>' in headline
    assert "-0.1000 [-0.1200, -0.0800] n=20000" in text and "k = 16, 32, 64: vacuous" in text
    assert "AVG-10, linear probe (50 shots)" in text and "0.6000 [0.5900, 0.6100] n=20000" in text
    # Then the key figures, the details, and last, folded: every quantity, the config, the provenance.
    order = [html.index(mark) for mark in ('<header id="headline">', '<h2 id="figures">', '<h2 id="lemma-4-3">',
                                           '<h2 id="theory">', '<h2 id="all-quantities">')]
    assert order == sorted(order)
    tail = html[html.index('<h2 id="all-quantities">'):]
    for anchor in ("summary", "per-checkpoint", "config", "provenance"):
        assert f'<details id="{anchor}">' in tail
    assert "abc123" in tail and "deadbeef" in tail and "name: demo" in tail
    assert 'src="figures/losses.png"' in html[order[1]:order[2]] and 'src="figures/theory.png"' in html[order[1]:order[2]]


def test_wide_tables_are_transposed_or_split(tmp_path, results):
    from preadapt.report.html import MAX_STEP_COLUMNS
    from preadapt.report.tables import term_breakdown

    # A theorem's terms: one row per term, one column per checkpoint; the same cells as term_table.
    breakdown = term_breakdown(results, "theorem_4_1")
    assert list(breakdown.columns) == [f"step {s}" for s in STEPS]
    assert list(breakdown.index[:4]) == ["status", "lhs", "rhs", "slack"] and "Rad_S_upper" in breakdown.index
    terms = term_table(results, "theorem_4_1").set_index("step")
    assert all(breakdown.loc[term, f"step {s}"] == terms.loc[s, term] for term in terms.columns if term != "note"
               for s in STEPS)
    # Nine checkpoints: no table of the page has more than MAX_STEP_COLUMNS of them.
    many = pd.concat([results.assign(step=results["step"] + offset) for offset in (0, 1, 2)], ignore_index=True)
    html = write_report(tmp_path, many, synthetic_runs(), CONFIG, title="t").read_text(encoding="utf-8")
    for head in re.findall(r"<thead><tr>(.*?)</tr></thead>", html):
        assert head.count("<th>step ") <= MAX_STEP_COLUMNS
    assert "<th>step 802</th>" in html and "<th>step 0</th>" in html
    # Every checkpoint of every quantity is still on the page.
    assert page_text(html).count("0.0500 (exact)") >= 9
