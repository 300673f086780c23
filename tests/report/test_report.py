"""The report layer on a synthetic tidy results frame: labels, formats, tables, figures, HTML."""

from __future__ import annotations

import pandas as pd
import pytest

from preadapt.report.figures import plot_accuracy, plot_lemma_4_3, plot_losses
from preadapt.report.html import write_report
from preadapt.report.tables import (
    bound_table,
    checkpoint_table,
    context_label,
    format_estimate,
    summary_table,
)

STEPS = (0, 50, 800)
STATUSES = {0: "inconclusive", 50: "holds", 800: "violated"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
INT_CONTEXT = ("negatives", "block_size", "task_classes", "top_r", "shots")
STR_CONTEXT = ("adapter", "split", "bound", "status")


def synthetic_results() -> pd.DataFrame:
    """Three checkpoints, every quantity of DESIGN.md section 3, and a Lemma 4.3 status mix."""
    rows = []

    def add(step, quantity, value, half=0.01, n=20000, method="t", level=0.95, **context):
        if method == "exact":
            half, n, level = 0.0, None, 1.0
        rows.append({"run": "demo", "step": step, "quantity": quantity, "value": value,
                     "lower": value - half, "upper": value + half, "n": n, "level": level,
                     "method": method, **context})

    for i, step in enumerate(STEPS):
        drop = 0.2 * i
        add(step, "tau", 0.05, method="exact")
        add(step, "tau_k", 0.0975, method="exact", negatives=2)
        add(step, "L_pre_train", 0.97 - drop, method="empirical", n=20000)
        add(step, "L_pre", 1.02 - drop)
        add(step, "L_un", 1.0 - drop, negatives=1)
        add(step, "L_un", 1.5 - drop, negatives=2)
        add(step, "L_un_block", 0.98 - drop, negatives=1, block_size=4)
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
    frame = pd.DataFrame(rows)
    frame["n"] = frame["n"].astype("Int64")
    for column in INT_CONTEXT:
        frame[column] = (frame[column] if column in frame else pd.Series([None] * len(frame))).astype("Int64")
    for column in STR_CONTEXT:
        frame[column] = (frame[column] if column in frame else None)
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frame


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
    assert "L_un_block (negatives=1, block_size=4)" in labels
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
        ["quantity", "negatives", "block_size", "task_classes", "top_r", "adapter", "shots"]).shape[0]
    # Losses, then adaptation, then diagnostics, then bounds.
    position = {label: i for i, label in enumerate(labels)}
    assert labels[:2] == ["L_pre_train", "L_pre"]
    assert position["L_un (negatives=1)"] < position["L_un (negatives=2)"] < position["L_un_same (negatives=1)"]
    assert position["L_un_diff (negatives=1)"] < position["L_sup_mean (adapter=mean, task_classes=2)"]
    assert position["acc_avg (adapter=mean, task_classes=10)"] < position["acc_avg (adapter=linear, task_classes=2, shots=5)"]
    assert position["acc_avg (adapter=linear, task_classes=2, shots=5)"] < position[
        "acc_avg (adapter=linear, task_classes=2, shots=50)"]
    assert position["acc_top (adapter=linear, top_r=5)"] < position["tau"] < position["uniform"]
    assert labels[-3:] == [f"bound_{side} (adapter=mean, task_classes=2, bound=lemma_4_3)" if side == "lhs" else
                           "bound_rhs (negatives=1, bound=lemma_4_3)" if side == "rhs" else
                           "bound_slack (bound=lemma_4_3)" for side in ("lhs", "rhs", "slack")]
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
    assert table["step"].tolist() == list(STEPS)
    assert table["bound"].unique().tolist() == ["lemma_4_3"]
    assert table["status"].tolist() == [STATUSES[s] for s in STEPS]
    assert table.loc[table["step"] == 50, "slack"].item() == "0.2000 [0.1800, 0.2200] n=20000 (99.9%)"


def test_write_report(tmp_path, results):
    config = "name: demo\nnote: <script>alert('x')</script> & more\n"
    path = write_report(tmp_path, results, synthetic_runs(), config, title="Demo <run>")
    assert path == tmp_path / "report.html"
    html = path.read_text(encoding="utf-8")
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more" in html
    assert "<title>Demo &lt;run&gt;</title>" in html
    lemma = html[html.index('id="lemma-4-3"'):html.index('id="losses"')]
    for status in ("holds", "violated", "inconclusive"):
        assert f'<span class="status status-{status}">{status}</span></td>' in lemma
    assert "0.2000 [0.1800, 0.2200] n=20000 (99.9%)" in lemma
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
