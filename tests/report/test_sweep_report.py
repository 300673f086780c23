"""The sweep report on synthetic stores: replicate aggregation against closed forms, series, figures, HTML."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from preadapt.experiment.store import tidy_frame
from preadapt.report.sweep import (
    REPLICATES_METHOD,
    aggregate,
    figure_name,
    plot_sweep_heatmap,
    plot_sweep_lines,
    sweep_table,
    write_sweep_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NEGATIVES = "objective.negatives"
BLOCK = "objective.block_size"


def make_sweep(axes: dict[str, list], replicates: int, quantities: list[str], name: str = "sweep") -> dict:
    """A sweep description as the driver stores it: run ids ``name-p<point>-r<replicate>``."""
    points = [dict(zip(axes, values)) for values in itertools.product(*axes.values())]
    return {
        "name": name,
        "axes": [{"name": axis, "fields": [axis]} for axis in axes],
        "replicates": replicates,
        "quantities": quantities,
        "runs": [{"run_id": f"{name}-p{p}-r{r}", "replicate": r, "point": point}
                 for p, point in enumerate(points) for r in range(replicates)],
    }


def make_runs(sweep: dict, statuses: dict[str, str] | None = None, errors: dict[str, str] | None = None) -> pd.DataFrame:
    """The runs table: every run of the sweep finished unless ``statuses`` says otherwise."""
    statuses, errors = statuses or {}, errors or {}
    ids = [entry["run_id"] for entry in sweep["runs"]]
    return pd.DataFrame({"run_id": ids, "config_hash": "h", "config_json": "{}",
                         "status": [statuses.get(i, "finished") for i in ids],
                         "started_at": "2024-01-01", "finished_at": "2024-01-01",
                         "error": [errors.get(i) for i in ids]})


def row(run: str, quantity: str, value: float, step: int = 100, half: float = 0.05, n: int | None = 500,
        level: float = 0.95, method: str = "t", **context) -> dict:
    return {"run": run, "step": step, "quantity": quantity, "value": value, "lower": value - half,
            "upper": value + half, "n": n, "level": level, "method": method, **context}


def t_interval(values: list[float], level: float) -> tuple[float, float, float]:
    """The oracle: mean ± t_{(1+level)/2, r-1} · s / sqrt(r)."""
    values = np.asarray(values, dtype=float)
    mean = float(np.mean(values))
    half = float(stats.t.ppf(0.5 + level / 2, df=len(values) - 1)) * float(np.std(values, ddof=1)) / np.sqrt(len(values))
    return mean, mean - half, mean + half


@pytest.mark.parametrize("level", [None, 0.9])
def test_three_replicates_give_the_mean_and_the_t_interval_across_them(level):
    sweep = make_sweep({NEGATIVES: [1, 4]}, replicates=3, quantities=["L_un"])
    values = {1: [0.70, 0.74, 0.81], 4: [1.20, 1.10, 1.35]}
    results = tidy_frame([row(entry["run_id"], "L_un", values[entry["point"][NEGATIVES]][entry["replicate"]],
                              level=0.99, negatives=1) for entry in sweep["runs"]])
    table = aggregate(results, make_runs(sweep), sweep, "L_un", level=level)
    assert list(table.columns) == [NEGATIVES, "value", "lower", "upper", "n", "level", "method", "replicates"]
    assert table[NEGATIVES].tolist() == [1, 4]
    for point, got in zip((1, 4), table.to_dict("records")):
        mean, lower, upper = t_interval(values[point], 0.99 if level is None else level)
        assert got["value"] == pytest.approx(mean, rel=1e-12)
        assert (got["lower"], got["upper"]) == pytest.approx((lower, upper), rel=1e-12)
        assert got["level"] == (0.99 if level is None else level)
        assert (got["n"], got["replicates"], got["method"]) == (3, 3, REPLICATES_METHOD)


def test_one_replicate_keeps_the_runs_own_estimate():
    sweep = make_sweep({NEGATIVES: [2]}, replicates=1, quantities=["acc_avg"])
    own = dict(row("sweep-p0-r0", "acc_avg", 0.7, n=123, level=0.9, method="bootstrap"), lower=0.61, upper=0.75)
    table = aggregate(tidy_frame([own]), make_runs(sweep), sweep, "acc_avg")
    got = table.iloc[0]
    assert (got["value"], got["lower"], got["upper"], got["n"], got["level"], got["method"], got["replicates"]) == (
        0.7, 0.61, 0.75, 123, 0.9, "bootstrap", 1)


def test_failed_running_and_unstarted_runs_are_left_out():
    sweep = make_sweep({NEGATIVES: [1]}, replicates=4, quantities=["L_un"])
    results = tidy_frame([row(f"sweep-p0-r{r}", "L_un", value) for r, value in enumerate([0.5, 0.6, 99.0, 42.0])])
    runs = make_runs(sweep, statuses={"sweep-p0-r2": "failed", "sweep-p0-r3": "running"}).iloc[:-1]  # r3 missing too
    table = aggregate(results, runs, sweep, "L_un")
    mean, lower, upper = t_interval([0.5, 0.6], 0.95)
    assert table["replicates"].tolist() == [2]
    assert (table["value"].iloc[0], table["lower"].iloc[0], table["upper"].iloc[0]) == pytest.approx((mean, lower, upper))


def test_each_run_contributes_its_own_last_checkpoint():
    sweep = make_sweep({NEGATIVES: [1]}, replicates=2, quantities=["L_sup_mean"])
    results = tidy_frame([
        row("sweep-p0-r0", "L_sup_mean", 0.9, step=0), row("sweep-p0-r0", "L_sup_mean", 0.3, step=50),
        row("sweep-p0-r1", "L_sup_mean", 0.8, step=0), row("sweep-p0-r1", "L_sup_mean", 0.7, step=50),
        row("sweep-p0-r1", "L_sup_mean", 0.5, step=80),
    ])
    table = aggregate(results, make_runs(sweep), sweep, "L_sup_mean")
    assert table["value"].iloc[0] == pytest.approx(np.mean([0.3, 0.5]))


def test_free_context_splits_series_and_pinned_context_filters():
    sweep = make_sweep({NEGATIVES: [1, 2]}, replicates=2, quantities=["acc_avg[adapter=mean]"])
    rows = []
    for entry in sweep["runs"]:
        base = entry["point"][NEGATIVES] + entry["replicate"]
        for classes in (2, 10):
            rows.append(row(entry["run_id"], "acc_avg", base + classes, adapter="mean", task_classes=classes, shots=5))
            rows.append(row(entry["run_id"], "acc_avg", -1.0, adapter="linear", task_classes=classes, shots=5))
    table = aggregate(tidy_frame(rows), make_runs(sweep), sweep, "acc_avg[adapter=mean]")
    # adapter is pinned and shots takes one value: only task_classes tells series apart.
    assert list(table.columns[:2]) == [NEGATIVES, "task_classes"]
    assert list(zip(table[NEGATIVES], table["task_classes"])) == [(1, 2), (1, 10), (2, 2), (2, 10)]
    expected = [np.mean([k + classes, k + 1 + classes]) for k in (1, 2) for classes in (2, 10)]
    assert table["value"].tolist() == pytest.approx(expected)
    assert (table["replicates"] == 2).all()
    cells = sweep_table(table, sweep, "acc_avg[adapter=mean]", table_level=0.95)
    assert cells["quantity"].tolist() == ["acc_avg[adapter=mean] (task_classes=2)",
                                          "acc_avg[adapter=mean] (task_classes=10)"] * 2
    assert cells["estimate"].iloc[0].endswith("n=2")


def test_verdicts_do_not_split_series():
    """status is a remark on a row (the verdict of each replicate), not context."""
    sweep = make_sweep({NEGATIVES: [1]}, replicates=2, quantities=["bound_slack[bound=lemma_4_3]"])
    results = tidy_frame([row("sweep-p0-r0", "bound_slack", 0.01, bound="lemma_4_3", status="inconclusive"),
                          row("sweep-p0-r1", "bound_slack", 0.2, bound="lemma_4_3", status="holds")])
    table = aggregate(results, make_runs(sweep), sweep, "bound_slack[bound=lemma_4_3]")
    assert len(table) == 1 and "status" not in table.columns and table["replicates"].iloc[0] == 2


def two_axis_store() -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    sweep = make_sweep({NEGATIVES: [1, 2, 8], BLOCK: [1, 4]}, replicates=2, quantities=["L_un[negatives=1]"])
    rng = np.random.default_rng(0)
    results = tidy_frame([row(entry["run_id"], "L_un", 1.0 / entry["point"][NEGATIVES] + entry["point"][BLOCK]
                              + 0.01 * rng.standard_normal(), negatives=1) for entry in sweep["runs"]])
    return sweep, results, make_runs(sweep)


def test_two_axes_give_a_heatmap_and_one_axis_does_not(tmp_path):
    sweep, results, runs = two_axis_store()
    table = aggregate(results, runs, sweep, "L_un[negatives=1]")
    assert list(table.columns[:2]) == [NEGATIVES, BLOCK] and len(table) == 6
    heatmap = plot_sweep_heatmap(table, sweep, "L_un[negatives=1]", tmp_path / "heat.png")
    assert heatmap is not None and heatmap.read_bytes()[:8] == PNG_MAGIC

    one_axis = make_sweep({NEGATIVES: [1, 2]}, replicates=1, quantities=["L_un"])
    one_results = tidy_frame([row(entry["run_id"], "L_un", 0.5) for entry in one_axis["runs"]])
    one_table = aggregate(one_results, make_runs(one_axis), one_axis, "L_un")
    assert plot_sweep_heatmap(one_table, one_axis, "L_un", tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
    lines = plot_sweep_lines(one_table, one_axis, "L_un", NEGATIVES, tmp_path / "lines.png")
    assert lines is not None and lines.read_bytes()[:8] == PNG_MAGIC
    assert plot_sweep_lines(one_table.iloc[0:0], one_axis, "L_un", NEGATIVES, tmp_path / "empty.png") is None


def test_report_names_its_figures_and_escapes_failed_runs_errors(tmp_path):
    sweep, results, _ = two_axis_store()
    failed = sweep["runs"][1]["run_id"]
    runs = make_runs(sweep, statuses={failed: "failed"},
                     errors={failed: "ValueError: <script>alert('x')</script> & more"})
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "sweep_stale.png").write_bytes(PNG_MAGIC)
    path = write_sweep_report(tmp_path, results, runs, sweep, title="Sweep <negatives>")
    assert path == tmp_path / "report.html"
    html = path.read_text(encoding="utf-8")
    assert "<script>" not in html
    assert "ValueError: &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more" in html
    assert "<title>Sweep &lt;negatives&gt;</title>" in html
    assert failed in html and "1 failed" in html and "11 finished" in html
    figures = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert figures == sorted(f"{figure_name('L_un[negatives=1]', axis)}.png" for axis in (NEGATIVES, BLOCK, None))
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+\.png", name) for name in figures)
    for name in figures:
        assert f'src="figures/{name}"' in html
        assert (tmp_path / "figures" / name).read_bytes()[:8] == PNG_MAGIC
    assert "replicates-t" in html and "http://" not in html and "https://" not in html
    assert "<style>" in html  # the shared stylesheet, inline
    assert "<td>1, 2, 8</td>" in html and "<td>1, 4</td>" in html  # each axis's values


def test_categorical_axis_and_single_replicates_still_draw(tmp_path):
    objective = "objective"
    sweep = make_sweep({objective: ["kind=plain", "kind=debiased,tau_plus=0.1"], NEGATIVES: [3, 5]}, replicates=1,
                       quantities=["tau"])
    results = tidy_frame([row(entry["run_id"], "tau", 0.1, method="exact", n=None, half=0.0, level=1.0)
                          for entry in sweep["runs"]])
    table = aggregate(results, make_runs(sweep), sweep, "tau")
    assert table["method"].tolist() == ["exact"] * 4 and table[objective].tolist()[0] == "kind=plain"
    html = write_sweep_report(tmp_path, results, make_runs(sweep), sweep, title="t").read_text(encoding="utf-8")
    assert "one finished replicate" in html
    assert len(list((tmp_path / "figures").glob("sweep_*.png"))) == 3


def test_a_sweep_where_no_run_finished_still_gets_a_page(tmp_path):
    sweep = make_sweep({NEGATIVES: [1, 2]}, replicates=1, quantities=["L_un", "acc_avg[adapter=mean]"])
    runs = make_runs(sweep, statuses={"sweep-p0-r0": "failed", "sweep-p1-r0": "running"},
                     errors={"sweep-p0-r0": "RuntimeError: out of memory"})
    html = write_sweep_report(tmp_path, tidy_frame([]), runs, sweep, title="t").read_text(encoding="utf-8")
    assert "No run of this sweep finished" in html
    assert "No finished run measured L_un" in html and "No finished run measured acc_avg[adapter=mean]" in html
    assert "RuntimeError: out of memory" in html
    assert list((tmp_path / "figures").glob("*.png")) == []
    assert aggregate(tidy_frame([]), runs, sweep, "L_un").empty


def test_finished_runs_without_rows_are_named(tmp_path):
    sweep = make_sweep({NEGATIVES: [1, 2]}, replicates=1, quantities=["L_un"])
    results = tidy_frame([row("sweep-p0-r0", "L_un", 0.4)])
    html = write_sweep_report(tmp_path, results, make_runs(sweep), sweep, title="t").read_text(encoding="utf-8")
    assert "Finished without any recorded result: sweep-p1-r0" in html
    assert html.count('src="figures/sweep_') == 1


def test_paired_contrast_is_the_t_interval_of_the_per_replicate_differences():
    from preadapt.report.sweep import PAIRED_METHOD, paired_contrast

    sweep = make_sweep({NEGATIVES: [1, 4], BLOCK: [1, 2]}, replicates=4, quantities=["L_un"])
    rng = np.random.default_rng(5)
    seed_effect = rng.normal(0, 1.0, size=4)  # shared by every point of a replicate: cancels in the pairs
    values = {}
    for entry in sweep["runs"]:
        point = entry["point"]
        values[entry["run_id"]] = (seed_effect[entry["replicate"]] + 0.1 * point[NEGATIVES] + 0.5 * point[BLOCK]
                                   + rng.normal(0, 0.01))
    results = tidy_frame([row(run, "L_un", v) for run, v in values.items()])
    paired = paired_contrast(results, make_runs(sweep, {"sweep-p3-r2": "failed"}), sweep, "L_un", {NEGATIVES: 1})
    assert sorted(zip(paired[NEGATIVES], paired[BLOCK])) == [(4, 1), (4, 2)]  # baseline points left out
    by_point = {(e["point"][NEGATIVES], e["point"][BLOCK], e["replicate"]): e["run_id"] for e in sweep["runs"]}
    for record in paired.to_dict("records"):
        replicates = [r for r in range(4) if not (record[BLOCK] == 2 and r == 2)]  # p3 = (4, 2) lost replicate 2
        differences = [values[by_point[(4, record[BLOCK], r)]] - values[by_point[(1, record[BLOCK], r)]]
                       for r in replicates]
        mean, lower, upper = t_interval(differences, 0.95)
        assert record["value"] == pytest.approx(mean, abs=1e-12)
        assert (record["lower"], record["upper"]) == pytest.approx((lower, upper), abs=1e-12)
        assert record["n"] == len(replicates) and record["method"] == PAIRED_METHOD
        assert record["lower"] < 0.3 < record["upper"]  # the true difference 0.1 · (4 − 1)
        assert record["upper"] - record["lower"] < 0.1  # far narrower than the seed spread (sd 1)


def test_verdicts_are_counted_per_point_over_the_finished_replicates(tmp_path):
    from preadapt.report.sweep import VERDICTS, sweep_verdicts

    sweep = make_sweep({NEGATIVES: [1, 4]}, replicates=3, quantities=["L_un"])
    statuses = {"sweep-p0-r0": "holds", "sweep-p0-r1": "holds", "sweep-p0-r2": "inconclusive",
                "sweep-p1-r0": "violated", "sweep-p1-r1": "holds", "sweep-p1-r2": "holds"}
    rows = []
    for run, status in statuses.items():
        rows.append(row(run, "L_un", 0.5))
        for quantity in ("bound_lhs", "bound_rhs", "bound_slack"):
            rows.append(row(run, quantity, 0.1, step=0, bound="lemma_4_3", status="holds"))  # an earlier checkpoint
            rows.append(row(run, quantity, 0.1, bound="lemma_4_3", status=status))
            rows.append(row(run, quantity, 0.1, bound="block_below_un", block_size=4, status="holds"))
    runs = make_runs(sweep, statuses={"sweep-p1-r0": "failed"})  # its violated verdict does not count
    table = sweep_verdicts(tidy_frame(rows), runs, sweep)
    assert list(table.columns) == [NEGATIVES, "check", "title", *VERDICTS, "replicates"]
    counts = {(r[NEGATIVES], r["check"]): (r["holds"], r["inconclusive"], r["violated"], r["replicates"])
              for r in table.to_dict("records")}
    assert counts == {(1, "lemma_4_3"): (2, 1, 0, 3), (1, "block_below_un (b=4)"): (3, 0, 0, 3),
                      (4, "lemma_4_3"): (2, 0, 0, 2), (4, "block_below_un (b=4)"): (2, 0, 0, 2)}
    html = write_sweep_report(tmp_path, tidy_frame(rows), runs, sweep, title="t").read_text(encoding="utf-8")
    verdicts = html[html.index('id="verdicts"'):html.index("</header>")]
    assert "<th>Lemma 4.3 <code>lemma_4_3</code></th>" in verdicts
    assert "<th>Proposition 6.2, second step, b=4 <code>block_below_un (b=4)</code></th>" in verdicts
    assert '<span class="status status-inconclusive">inconclusive</span> <span class="note">1/3</span>' in verdicts
    assert '<span class="status status-holds">holds</span> <span class="note">2/2</span>' in verdicts
    assert "violated" not in re.sub(r"<p class=\"note\">.*?</p>", "", verdicts, flags=re.S)


@pytest.mark.parametrize("replicates", [1, 2, 3])
def test_points_with_fewer_than_three_replicates_are_called_out(tmp_path, replicates):
    sweep = make_sweep({NEGATIVES: [1, 2]}, replicates=replicates, quantities=["L_un"])
    results = tidy_frame([row(entry["run_id"], "L_un", 0.5 + 0.1 * entry["replicate"]) for entry in sweep["runs"]])
    html = write_sweep_report(tmp_path, results, make_runs(sweep), sweep, title="t").read_text(encoding="utf-8")
    warned = '<p class="warning">' in html
    assert warned == (replicates < 3)
    if replicates == 2:
        assert "2 points with only 2 replicates:" in html and "t = 12.71, against 4.30 with 3" in html
        assert html.count("only 2 replicates: a t-interval with 1 degree of freedom") == 2  # the table's notes
    if replicates == 1:
        assert "2 points with one replicate:" in html and "without the variation between seeds" in html
    if replicates == 3:
        assert "<th>note</th>" not in html
