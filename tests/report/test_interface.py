"""The Interface section (report/interface.py): L_pre against L*_adapt per adapter and task view, the
rank correlation with its cluster bootstrap CI, one sentence per view, the points that break the
pattern, and the figure (read back from its matplotlib artists); in the run report, in the sweep report,
in a real tiny run's report, and in headless Chromium at 1280 px."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection
from scipy import stats

from preadapt.experiment.store import tidy_frame
from preadapt.report.browser import find_chromium, measure_report
from preadapt.report.html import write_report
from preadapt.report.interface import (
    interface_analysis,
    interface_figure,
    interface_points,
    interface_table,
    lemma_4_3_applies,
    pattern_breakers,
    points_table,
)
from preadapt.report.sweep import write_sweep_report
from test_report import CONFIG, synthetic_results, synthetic_runs
from test_sweep_report import make_runs, make_sweep

HALF = 0.005
"""Half-width of every synthetic point's intervals (tight: the points are resolved)."""
TAU = 0.05
CURL = {"objective": {"kind": "curl", "loss": "logistic", "negatives": 1, "block_size": 1}}


def rows_for(points: list[tuple[str, int, float, dict[tuple[str, str], float]]], half: float = HALF,
             tau: float | None = TAU) -> pd.DataFrame:
    """Tidy rows: per (run, step, L_pre, {(adapter, split): L*_adapt}) an L_pre row and the L_adapt_star rows
    (each value ± half), and a tau row per run and step."""
    rows = []
    for run, step, pre, stars in points:
        base = {"run": run, "step": step, "n": 2000, "level": 0.95, "method": "t"}
        rows.append({**base, "quantity": "L_pre", "value": pre, "lower": pre - half, "upper": pre + half,
                     "split": "fresh", "negatives": 1, "block_size": 1})
        for (adapter, split), star in stars.items():
            rows.append({**base, "quantity": "L_adapt_star", "value": star, "lower": star - half, "upper": star + half,
                         "adapter": adapter, "split": split, "task_classes": 2, "n": 200})
        if tau is not None:
            rows.append({**base, "quantity": "tau", "value": tau, "lower": tau, "upper": tau, "n": None, "level": 1.0,
                         "method": "exact"})
    return tidy_frame(rows)


def sweep_points(relation, runs: int = 4, steps=(0, 50, 100), seed: int = 0, adapters=("mean", "linear"),
                 splits=("test",), prefix: str = "r") -> list:
    """runs × steps points; L_pre falls with the step and differs by run; L*_adapt = relation(L_pre, rng)."""
    rng = np.random.default_rng(seed)
    points = []
    for r in range(runs):
        for i, step in enumerate(steps):
            pre = 1.2 + 0.13 * r - 0.1 * i + 0.01 * rng.standard_normal()
            points.append((f"{prefix}{r}", step, pre, {(a, s): relation(pre, rng) for a in adapters for s in splits}))
    return points


RELATIONS = {
    "same": lambda pre, rng: 0.5 * pre + 0.02 * rng.standard_normal(),
    "opposite": lambda pre, rng: 1.5 - 0.5 * pre + 0.02 * rng.standard_normal(),
    "unclear": lambda pre, rng: 0.6 + 0.2 * rng.standard_normal(),
}


def test_points_pair_each_checkpoints_L_pre_with_each_adapters_L_star():
    points = sweep_points(RELATIONS["same"], runs=2, steps=(0, 10), splits=("id", "ood"))
    results = rows_for(points)
    # Rows that are not the interface's: another task size, a shots value, another run's L_pre.
    extra = tidy_frame([{"run": "r0", "step": 0, "quantity": "L_adapt_star", "value": 9.0, "lower": 9.0, "upper": 9.0,
                         "n": 1, "level": 0.95, "method": "t", "adapter": "mean", "split": "id", "task_classes": 10},
                        {"run": "r9", "step": 0, "quantity": "L_adapt_star", "value": 9.0, "lower": 9.0, "upper": 9.0,
                         "n": 1, "level": 0.95, "method": "t", "adapter": "mean", "split": "id", "task_classes": 2}])
    table = interface_points(pd.concat([results, extra], ignore_index=True))
    assert len(table) == 2 * 2 * 2 * 2  # runs × steps × adapters × splits
    for run, step, pre, stars in points:
        for (adapter, split), star in stars.items():
            found = table[(table["run"] == run) & (table["step"] == step) & (table["adapter"] == adapter)
                          & (table["split"] == split)]
            assert found[["L_pre", "L_adapt_star"]].to_numpy().tolist() == [[pre, star]]
            assert found["L_pre_lower"].iat[0] == pre - HALF and found["L_adapt_star_upper"].iat[0] == star + HALF
    assert list(dict.fromkeys(table["adapter"])) == ["mean", "linear"]  # the report's order
    assert list(dict.fromkeys(table["split"])) == ["id", "ood"]


@pytest.mark.parametrize("relation, words", [
    ("same", "lower L_pre went with lower L*_adapt (Spearman "),
    ("opposite", "lower L_pre went with higher L*_adapt (Spearman "),
    ("unclear", "no clear relation between L_pre and L*_adapt (Spearman "),
])
def test_known_relations_give_their_sentence_with_the_correlation_and_its_ci(relation, words):
    points = sweep_points(RELATIONS[relation], seed=3)
    views = interface_analysis(rows_for(points))
    assert [(view.adapter, view.split) for view in views] == [("mean", "test"), ("linear", "test")]
    for view in views:
        x = [pre for _, _, pre, _ in points]
        y = [stars[(view.adapter, "test")] for _, _, _, stars in points]
        rho = view.correlation
        assert rho.value == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
        assert (rho.points, rho.clusters, view.cluster_unit) == (12, 4, "run")
        assert view.direction == relation
        expected = (f"{view.adapter}, test samples: {words}{rho.value:.2f} [{rho.lower:.2f}, {rho.upper:.2f}], "
                    f"12 points from 4 runs")
        assert view.sentence.startswith(expected), view.sentence
        if relation == "unclear":
            assert rho.lower < 0.0 < rho.upper and "the CI contains 0" in view.sentence
        else:
            assert (rho.lower > 0.0) if relation == "same" else (rho.upper < 0.0)


def test_the_bootstrap_of_a_sweep_resamples_runs():
    """Each run's checkpoints move together: the CI is the one of rank_correlation with runs as clusters."""
    from preadapt.estimate.rank import rank_correlation

    points = sweep_points(RELATIONS["same"], seed=5)
    view = interface_analysis(rows_for(points), resamples=300, seed=7)[0]
    direct = rank_correlation([p[2] for p in points], [p[3][("mean", "test")] for p in points],
                              [p[0] for p in points], generator=np.random.default_rng(7), resamples=300)
    assert (view.correlation.lower, view.correlation.upper) == (direct.lower, direct.upper)


def test_runs_that_share_a_pretraining_are_one_cluster():
    """Runs mapped to one pretraining (the severities of a shift sweep) are resampled together: the CI is
    the one of rank_correlation with the pretrainings as clusters, and the sentence counts them."""
    from preadapt.estimate.rank import rank_correlation

    points = sweep_points(RELATIONS["same"], runs=8, seed=3)
    shared = {f"r{r}": f"p{r // 2}" for r in range(8)}  # four pretrainings of two runs each
    view = interface_analysis(rows_for(points), resamples=300, seed=7, pretrainings=shared)[0]
    direct = rank_correlation([p[2] for p in points], [p[3][("mean", "test")] for p in points],
                              [shared[p[0]] for p in points], generator=np.random.default_rng(7), resamples=300)
    assert (view.correlation.lower, view.correlation.upper, view.correlation.clusters) == (direct.lower, direct.upper, 4)
    assert view.cluster_unit == "pretraining" and "24 points from 4 pretrainings" in view.sentence
    apart = interface_analysis(rows_for(points), resamples=300, seed=7, pretrainings={f"r{r}": f"p{r}" for r in range(8)})
    assert apart[0].cluster_unit == "run" and apart[0].correlation.clusters == 8


def test_one_run_resamples_its_checkpoints_and_says_so():
    points = [("demo", step, 1.2 - 0.1 * i, {("mean", "test"): 0.9 - 0.08 * i + 0.01 * (i == 2)})
              for i, step in enumerate((0, 50, 200, 790, 1000))]
    (view,) = interface_analysis(rows_for(points))
    assert view.cluster_unit == "checkpoint" and view.correlation.clusters == 5
    assert "5 checkpoints of one run" in view.sentence
    table = interface_table([view])
    assert table.iloc[0]["clusters"] == "5 checkpoints"


def test_the_points_that_break_the_pattern_are_named():
    points = sweep_points(lambda pre, rng: 0.5 * pre, seed=1)  # exactly monotone, but for:
    # Run r2 at step 100: far below the trend, its intervals apart from the others'.
    points = [(run, step, pre, {key: (0.1 if (run, step) == ("r2", 100) else star) for key, star in stars.items()})
              for run, step, pre, stars in points]
    views = interface_analysis(rows_for(points), labels={"r2": "r2 (k=4, replicate 0)"})
    for view in views:
        assert view.direction == "same"
        named = [(view.points["run"].iat[i], view.points["step"].iat[i]) for i in view.breakers]
        assert named == [("r2", 100)]
        assert view.sentence.endswith("Breaking the pattern: r2 (k=4, replicate 0) at step 100.")
    table = interface_table(views, labels={"r2": "r2 (k=4, replicate 0)"})
    assert table["breaks"].tolist() == ["r2 (k=4, replicate 0) at step 100"] * 2
    assert points_table(views)["breaks"].tolist().count("yes") == 2


def test_a_point_inside_the_others_intervals_breaks_nothing():
    points = pd.DataFrame({"L_pre": [1.0, 2.0, 3.0, 4.0], "L_adapt_star": [1.0, 2.0, 1.9, 4.0]})
    for column, half in (("L_pre", 0.1), ("L_adapt_star", 0.2)):  # the two middle points' L* intervals overlap
        points[column + "_lower"], points[column + "_upper"] = points[column] - half, points[column] + half
    assert pattern_breakers(points, +1) == ()
    assert pattern_breakers(points.assign(L_adapt_star_lower=points["L_adapt_star"] - 0.01,
                                          L_adapt_star_upper=points["L_adapt_star"] + 0.01), +1) == (1,)
    # Against the opposite direction, every rising pair is discordant: all but one point are named.
    assert len(pattern_breakers(points.assign(L_adapt_star_lower=points["L_adapt_star"] - 0.01,
                                              L_adapt_star_upper=points["L_adapt_star"] + 0.01), -1)) == 2
    assert pattern_breakers(points, 0) == ()


def test_no_breakers_without_a_clear_direction():
    views = interface_analysis(rows_for(sweep_points(RELATIONS["unclear"], seed=3)))
    assert all(view.breakers == () for view in views)
    assert all("Breaking" not in view.sentence for view in views)


def test_too_few_points_runs_or_a_constant_series():
    two = [("r", s, 1.0 - 0.1 * i, {("mean", "test"): 0.5 - 0.1 * i}) for i, s in enumerate((0, 10))]
    assert interface_analysis(rows_for(two)) == []
    few_runs = sweep_points(RELATIONS["same"], runs=2)
    view = interface_analysis(rows_for(few_runs))[0]
    assert view.direction == "no interval" and not view.correlation.has_interval
    assert view.sentence.startswith("mean, test samples: no conclusion: Spearman ")
    assert "6 points from 2 runs, too few runs for a bootstrap CI" in view.sentence
    constant = [("r", s, 1.0 - 0.1 * i, {("mean", "test"): 0.5}) for i, s in enumerate((0, 10, 20))]
    view = interface_analysis(rows_for(constant))[0]
    assert view.direction == "undefined" and "y is the same at every point" in view.sentence


def axes_of(fig, adapter: str, split: str):
    prefix = f"interface:{adapter}:{split}:"
    return next(ax for ax in fig.axes if any(str(line.get_gid()).startswith(prefix) for line in ax.lines))


def error_bars(ax) -> tuple[set, set]:
    """The error bars of a panel: horizontal ones as (y, x_lower, x_upper), vertical as (x, y_lower, y_upper)."""
    horizontal, vertical = set(), set()
    for collection in ax.collections:
        if isinstance(collection, LineCollection):
            for (x0, y0), (x1, y1) in collection.get_segments():
                if y0 == y1:
                    horizontal.add((round(y0, 12), round(min(x0, x1), 12), round(max(x0, x1), 12)))
                else:
                    vertical.add((round(x0, 12), round(min(y0, y1), 12), round(max(y0, y1), 12)))
    return horizontal, vertical


def test_the_figures_points_and_error_bars_are_the_rows():
    points = sweep_points(RELATIONS["same"], seed=2, splits=("id", "ood"))
    views = interface_analysis(rows_for(points))
    fig = interface_figure(views)
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 4  # 2 adapters × 2 task views
    for view in views:
        ax = axes_of(fig, view.adapter, view.split)
        expected_h, expected_v = set(), set()
        for run in ("r0", "r1", "r2", "r3"):
            (line,) = [line for line in ax.lines if line.get_gid() == f"interface:{view.adapter}:{view.split}:{run}"]
            rows = [(step, pre, stars[(view.adapter, view.split)]) for r, step, pre, stars in points if r == run]
            assert line.get_xydata().tolist() == [[pre, star] for _, pre, star in sorted(rows)]
            for _, pre, star in rows:
                expected_h.add((round(star, 12), round(pre - HALF, 12), round(pre + HALF, 12)))
                expected_v.add((round(pre, 12), round(star - HALF, 12), round(star + HALF, 12)))
        horizontal, vertical = error_bars(ax)
        assert (horizontal, vertical) == (expected_h, expected_v)
        assert "Spearman" in ax.get_title() and "L_{\\mathrm{pre}}" in ax.get_xlabel() and "bits" in ax.get_xlabel()
        assert not [line for line in ax.lines if "lemma_4_3" in str(line.get_gid())]  # no task of the pretraining world
    assert fig.legends, "the legend sits outside the axes, on the figure"


def test_lemma_4_3_is_drawn_for_the_mean_classifier_where_it_applies():
    points = sweep_points(RELATIONS["same"], seed=2)
    views = interface_analysis(rows_for(points), theory_runs={"r0", "r1", "r2", "r3"})
    assert [view.bound_taus for view in views] == [(TAU,), ()]  # mean, then linear
    fig = interface_figure(views, pre_unit="bits", star_unit="bits")
    ax = axes_of(fig, "mean", "test")
    (line,) = [line for line in ax.lines if line.get_gid() == f"interface:mean:test:lemma_4_3:{TAU:g}"]
    x, y = line.get_xdata(), line.get_ydata()
    assert np.allclose(y, (x - TAU) / (1 - TAU), atol=1e-12)  # the formula itself on losses ~1: an ulp is 2e-16
    assert (x.min(), x.max()) == pytest.approx(ax.get_xlim())
    assert "Lemma 4.3: bound on" in " ".join(text.get_text() for text in fig.legends[0].get_texts())
    assert not [line for line in axes_of(fig, "linear", "test").lines if "lemma_4_3" in str(line.get_gid())]
    # Not every run qualifies, or no tau row: no line.
    assert interface_analysis(rows_for(points), theory_runs={"r0"})[0].bound_taus == ()
    assert interface_analysis(rows_for(points, tau=None), theory_runs={"r0", "r1", "r2", "r3"})[0].bound_taus == ()


@pytest.mark.parametrize("config, applies", [
    (CURL, True),
    ({"objective": {"kind": "curl", "loss": "hinge"}, "evaluate": {"loss": "hinge"}}, True),
    ({"objective": {"kind": "curl", "loss": "hinge"}, "evaluate": {"loss": "logistic"}}, False),
    ({"objective": {"kind": "curl", "negatives": 4}}, False),
    ({"objective": {"kind": "curl", "block_size": 2}}, False),
    ({"objective": {"kind": "infonce"}}, False),
    ({}, False),
])
def test_lemma_4_3_applies_only_when_L_pre_is_L_un_with_the_evaluations_loss(config, applies):
    assert lemma_4_3_applies(config) is applies


def with_interface_rows(results: pd.DataFrame, steps=(0, 50, 800)) -> pd.DataFrame:
    """The run report's synthetic results (L_pre at 0, 50, 800) with L_adapt_star rows at ``steps``."""
    l_pre = results[results["quantity"] == "L_pre"].set_index("step")["value"]
    stars = [{"run": "demo", "step": step, "quantity": "L_adapt_star", "value": 0.5 * float(l_pre[step]) + 0.01 * k,
              "lower": 0.5 * float(l_pre[step]) + 0.01 * k - 0.02, "upper": 0.5 * float(l_pre[step]) + 0.01 * k + 0.02,
              "n": 200, "level": 0.95, "method": "t", "adapter": adapter, "split": "test", "task_classes": 2}
             for step in steps for k, adapter in enumerate(("mean", "linear"))]
    return pd.concat([results, tidy_frame(stars)[results.columns]], ignore_index=True)


def section(html: str) -> str:
    match = re.search(r'<h2 id="interface">.*?(?=<h2 id=)', html, re.S)
    assert match, "no Interface section"
    return match.group(0)


def test_the_run_report_has_the_section_after_the_answer_first_part(tmp_path):
    results = with_interface_rows(synthetic_results())
    write_report(tmp_path, results, synthetic_runs(), CONFIG, title="preadapt run: demo")
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    text = section(html)
    assert html.index('<header id="headline">') < html.index("</header>") < html.index('<h2 id="interface">')
    assert html.index('id="adaptation"') < html.index('<h2 id="interface">') < html.index('<h2 id="lemma-4-3">')
    assert '<a href="#interface">Interface</a>' in html
    assert ("mean, test samples: lower L_pre went with lower L*_adapt (Spearman 1.00 [1.00, 1.00], "
            "3 checkpoints of one run).") in text
    assert "the CI is conditional on this" in text and "run</strong>" in text
    assert 'src="figures/interface.png"' in text and (tmp_path / "figures" / "interface.png").exists()
    assert "a CI of width 0: every resample kept this order" in text  # what a CI of no width leaves out
    # The first screen (the answer-first header) is as it was without the section.
    write_report(tmp_path / "without", synthetic_results(), synthetic_runs(), CONFIG, title="preadapt run: demo")
    header = re.compile(r'<header id="headline">.*?</header>', re.S)
    before = (tmp_path / "without" / "report.html").read_text(encoding="utf-8")
    assert header.search(html).group(0) == header.search(before).group(0)
    for step in (0, 50, 800):  # every point with its CIs, folded
        assert f"<td>{step}</td>" in text


@pytest.mark.parametrize("steps", [(0, 50), ()])
def test_no_section_below_three_points(tmp_path, steps):
    results = with_interface_rows(synthetic_results(), steps) if steps else synthetic_results()
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "interface.png").write_bytes(b"stale")
    write_report(tmp_path, results, synthetic_runs(), CONFIG, title="preadapt run: demo")
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert 'id="interface"' not in html and 'href="#interface"' not in html
    assert not (tmp_path / "figures" / "interface.png").exists()


def sweep_frame(relation="same", statuses=None, config=CURL):
    sweep = make_sweep({"objective.negatives": [1, 4]}, replicates=2, quantities=["L_pre"])
    runs = make_runs(sweep, statuses)
    runs["config_json"] = [json.dumps({**config, "seed": seed}) for seed in range(len(runs))]  # four pretrainings
    rng = np.random.default_rng(4)
    points = []
    for i, entry in enumerate(sweep["runs"]):
        for j, step in enumerate((0, 50, 100)):
            pre = 1.3 + 0.15 * i - 0.1 * j
            points.append((entry["run_id"], step, pre, {("mean", "test"): RELATIONS[relation](pre, rng),
                                                        ("linear", "test"): RELATIONS[relation](pre, rng) - 0.1}))
    return sweep, rows_for(points), runs


def test_the_sweep_report_has_the_section_with_runs_as_clusters(tmp_path):
    sweep, results, runs = sweep_frame()
    path = write_sweep_report(tmp_path, results, runs, sweep, title="preadapt sweep: sweep")
    html = path.read_text(encoding="utf-8")
    text = section(html)
    assert html.index("</header>") < html.index('<h2 id="grid">') < html.index('<h2 id="interface">')
    assert "12 points from 4 runs" in text and "each run's checkpoints kept together" in text
    assert 'src="figures/sweep_interface.png"' in text and (tmp_path / "figures" / "sweep_interface.png").exists()
    assert "Dashed: Lemma 4.3" in text  # every run is CURL with one negative
    assert "sweep-p1-r0 (objective.negatives=4, replicate 0)" in text  # runs named by point and replicate


def test_the_sweep_section_counts_finished_runs_only(tmp_path):
    sweep, results, runs = sweep_frame(statuses={"sweep-p1-r1": "failed"}, config={"objective": {"kind": "infonce"}})
    html = write_sweep_report(tmp_path, results, runs, sweep, title="preadapt sweep: sweep").read_text(encoding="utf-8")
    text = section(html)
    assert "9 points from 3 runs" in text and "sweep-p1-r1" not in text
    assert "Dashed: Lemma 4.3" not in text  # InfoNCE's L_pre is not L_un


def test_the_section_survives_a_csv_round_trip(tmp_path):
    results = with_interface_rows(synthetic_results())
    results.to_csv(tmp_path / "results.csv", index=False)
    reread = pd.read_csv(tmp_path / "results.csv")
    assert [view.sentence for view in interface_analysis(reread)] == [view.sentence for view in
                                                                       interface_analysis(results)]


@pytest.mark.slow
def test_a_real_tiny_runs_report_has_the_section(tmp_path):
    import preadapt

    result = preadapt.run({
        "name": "tiny", "world": {"kind": "gaussian", "classes": 4, "dim": 4},
        "encoder": {"kind": "linear", "out_dim": 4},
        "pretrain": {"tuples": 256, "epochs": 1, "batch_size": 64, "checkpoints": [0, 2, 4]},
        "evaluate": {"samples": 512, "mean_samples": 64, "test_per_class": 16, "task_classes": [2], "top_r": [1],
                     "probe_tasks": 4, "probe_shots": 8, "probe_val": 8, "star_samples": 32}}, out=tmp_path)
    assert result.status == "finished"
    text = section((tmp_path / "report.html").read_text(encoding="utf-8"))
    for adapter in ("mean", "linear"):
        assert re.search(rf"{adapter}, test samples: [^<]*\(Spearman [^<]*, 3 checkpoints of one run", text), adapter
    assert "Dashed: Lemma 4.3" in text  # the default objective: CURL, one negative
    assert (tmp_path / "figures" / "interface.png").exists()
    views = interface_analysis(result.results)
    assert [(view.adapter, view.correlation.points) for view in views] == [("mean", 3), ("linear", 3)]
    assert all(math.isfinite(view.correlation.value) or view.direction == "undefined" for view in views)


needs_chromium = pytest.mark.skipif(find_chromium() is None, reason="no headless Chromium (Debian package chromium)")


@needs_chromium
def test_the_reports_with_the_section_read_in_a_1280_px_window(tmp_path):
    from test_browser import assert_reads_well
    from test_report import ALL_CHECKS

    write_report(tmp_path / "run", with_interface_rows(synthetic_results()), synthetic_runs(), CONFIG,
                 title="preadapt run: demo")
    layout = measure_report(tmp_path / "run" / "report.html")
    assert_reads_well(layout, "demo", statements=len(ALL_CHECKS))

    sweep, results, runs = sweep_frame()
    rows = [{"run": entry["run_id"], "step": 100, "quantity": "bound_slack", "value": 0.1, "lower": 0.05,
             "upper": 0.15, "n": 100, "level": 0.999, "method": "t", "bound": "lemma_4_3", "status": "holds"}
            for entry in sweep["runs"]]
    results = pd.concat([results, tidy_frame(rows)], ignore_index=True)
    path = write_sweep_report(tmp_path / "sweep", results, runs, sweep, title="preadapt sweep: sweep")
    assert_reads_well(measure_report(path), "sweep", statements=2)  # one statement at 2 grid points
