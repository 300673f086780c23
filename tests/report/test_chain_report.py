"""The Adaptation section of the run report on synthetic rows with known values: the adaptation
losses per adapter, shots and task view, the error chain (its table and its waterfall, read back from
the matplotlib artists), the distortion and the chosen hyperparameters; and a report without these
rows, which has no such section."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest

from preadapt.experiment.store import tidy_frame
from preadapt.report.browser import find_chromium, measure_report
from preadapt.report.figures import chain_figure, plot_chain
from preadapt.report.html import write_report
from preadapt.report.tables import (
    CHAIN_LINKS,
    adaptation_splits,
    adaptation_step,
    adaptation_table,
    chain_table,
    checkpoint_table,
    chosen_table,
    distortion_table,
    error_chains,
    format_estimate,
)
from test_report import CONFIG, page_text, synthetic_results, synthetic_runs

STEP = 800
ADAPTERS = ("mean", "linear", "finetune", "lpft")
SHOTS = (8, 64)
L_PRE_TRAIN, L_PRE = 0.62, 0.70
HALF = 0.02
"""The half-width of every synthetic link's interval."""


def l_adapt_star(adapter: str, split: str) -> float:
    return 0.60 + 0.03 * ADAPTERS.index(adapter) + 0.05 * (split == "ood")


def l_adapt(adapter: str, shots: int, split: str, size: int = 2) -> float:
    return l_adapt_star(adapter, split) + 0.2 / math.sqrt(shots) + 0.01 * ADAPTERS.index(adapter) + (size - 2) / 8


def l_adapt_train(adapter: str, shots: int, size: int = 2) -> float:
    return l_adapt(adapter, shots, "id", size) - 0.1 / math.sqrt(shots)


def accuracy(shots: int, split: str, size: int = 2) -> float:
    return 0.9 - 0.1 * (split == "ood") + 0.001 * shots - 0.3 * (size > 2)


def links(adapter: str, shots: int, split: str) -> dict[str, float]:
    """The chain's links from the levels (on 2-class tasks); the total is their sum, as the evaluation records it."""
    values = {"link_pretrain_gap": L_PRE - L_PRE_TRAIN,
              "link_interface": l_adapt_star(adapter, split) - L_PRE,
              "link_adapt_excess": l_adapt(adapter, shots, split) - l_adapt_star(adapter, split),
              "link_adapt_gap": l_adapt(adapter, shots, split) - l_adapt_train(adapter, shots)}
    values["link_total"] = values["link_pretrain_gap"] + values["link_interface"] + values["link_adapt_excess"]
    return values


def chain_rows(splits=("id", "ood"), adapters=ADAPTERS, shots=SHOTS, sizes=(10, 2), run="demo",
               step=STEP) -> list[dict]:
    """The rows the evaluation adds (issue 11), with known values, every interval value ± HALF, and the
    context the evaluation gives them: L_adapt, L̂_adapt, the adaptation gap, the accuracy, the chosen
    hyperparameters and the distortion for every task size (10 first, so that matching by position alone
    would pick the wrong one); L*_adapt and the other links on 2-class tasks only."""
    rows = []

    def add(quantity, value, method="t", half=HALF, n=2000, **context):
        rows.append({"run": run, "step": step, "quantity": quantity, "value": value, "lower": value - half,
                     "upper": value + half, "n": n, "level": 0.95, "method": method, **context})

    add("link_pretrain_gap", L_PRE - L_PRE_TRAIN)
    for size in sizes:
        for adapter in adapters:
            for count in shots:
                context = {"adapter": adapter, "shots": count, "task_classes": size}
                add("L_adapt_train", l_adapt_train(adapter, count, size), **context, split="train")
                for split in splits:
                    add("L_adapt", l_adapt(adapter, count, split, size), **context, split=split)
                    add("acc_avg", accuracy(count, split, size), **context, split=split)
                    add("link_adapt_gap", l_adapt(adapter, count, split, size) - l_adapt_train(adapter, count, size),
                        **context, split=split)
                if adapter != "mean":
                    add("chosen_lr", 0.01 * count * size / 2, method="chosen", half=0.0, n=None, **context,
                        split="train")
                    add("chosen_steps", 100.0 * ADAPTERS.index(adapter), method="chosen", half=0.0, n=None, **context,
                        split="train")
                if adapter == "finetune":
                    add("distortion_outside", 0.3 * size / 2, **context)
                    add("distortion_inside", 1.2 * size / 2, **context)
    for adapter in adapters:
        for split in splits:
            add("L_adapt_star", l_adapt_star(adapter, split), adapter=adapter, task_classes=2, split=split)
            add("link_interface", l_adapt_star(adapter, split) - L_PRE, adapter=adapter, split=split)
            for count in shots:
                values = links(adapter, count, split)
                for link in ("link_adapt_excess", "link_total"):
                    add(link, values[link], adapter=adapter, shots=count, split=split)
    return rows


def with_chain(results: pd.DataFrame, **options) -> pd.DataFrame:
    """Today's synthetic results (whose L_pre_train and L_pre at the last step are L_PRE_TRAIN, L_PRE)
    with the adaptation rows added."""
    base = results[~((results["step"] == STEP) & results["quantity"].isin(["L_pre_train", "L_pre"]))]
    extra = tidy_frame(chain_rows(**options) + [
        {"run": "demo", "step": STEP, "quantity": "L_pre_train", "value": L_PRE_TRAIN, "lower": L_PRE_TRAIN,
         "upper": L_PRE_TRAIN, "n": 20000, "level": 0.95, "method": "empirical", "split": "train"},
        {"run": "demo", "step": STEP, "quantity": "L_pre", "value": L_PRE, "lower": L_PRE - 0.01,
         "upper": L_PRE + 0.01, "n": 20000, "level": 0.95, "method": "t", "split": "fresh"}])
    frame = pd.concat([base, extra[base.columns]], ignore_index=True)
    for column in ("n", "negatives", "block_size", "task_classes", "top_r", "shots"):
        frame[column] = frame[column].astype("Int64")
    return frame


@pytest.fixture(scope="module")
def today() -> pd.DataFrame:
    return synthetic_results()


@pytest.fixture(scope="module")
def results(today) -> pd.DataFrame:
    return with_chain(today)


def cell(value: float, half: float = HALF, n: int = 2000) -> str:
    return format_estimate(value, value - half, value + half, n, "t")


def test_error_chains_match_rows_by_context(results):
    assert adaptation_step(results) == STEP
    chains = error_chains(results)
    assert [(c["adapter"], c["shots"], c["split"]) for c in chains] == [
        (adapter, count, split) for adapter in ADAPTERS for count in SHOTS for split in ("id", "ood")]
    for chain in chains:
        assert set(chain["links"]) == set(CHAIN_LINKS)
        expected = links(chain["adapter"], chain["shots"], chain["split"])
        assert {name: row["value"] for name, row in chain["links"].items()} == pytest.approx(expected)
        train = chain["levels"]["L_adapt_train"]
        assert train["value"] == pytest.approx(l_adapt_train(chain["adapter"], chain["shots"]))
        assert chain["levels"]["L_pre_train"]["value"] == L_PRE_TRAIN


def test_chain_table_has_the_rows_values(results):
    table = chain_table(results)
    assert list(table.columns) == ["adapter", "shots", "split", *CHAIN_LINKS]
    assert len(table) == len(ADAPTERS) * len(SHOTS) * 2
    assert table[["adapter", "shots", "split"]].drop_duplicates().shape[0] == len(table)
    for row in table.to_dict("records"):
        for link, value in links(row["adapter"], row["shots"], row["split"]).items():
            assert row[link] == cell(value), (row["adapter"], row["shots"], row["split"], link)
    # A task view per run: without a split the column goes.
    single = with_chain(synthetic_results(), splits=(None,))
    assert "split" not in chain_table(single).columns and len(chain_table(single)) == len(ADAPTERS) * len(SHOTS)


def test_adaptation_table_puts_id_and_ood_side_by_side(results):
    assert adaptation_splits(results) == ["id", "ood"]
    table = adaptation_table(results)
    assert list(table.columns) == ["adapter", "task_classes", "shots", "L_adapt_train", "L_adapt (id)",
                                   "L_adapt_star (id)", "acc_avg (id)", "L_adapt (ood)", "L_adapt_star (ood)",
                                   "acc_avg (ood)"]
    assert [(row["adapter"], row["task_classes"], row["shots"]) for row in table.to_dict("records")] == [
        (adapter, size, count) for adapter in ADAPTERS for size in (2, 10) for count in SHOTS]
    for row in table.to_dict("records"):
        adapter, size, count = row["adapter"], row["task_classes"], row["shots"]
        assert row["L_adapt_train"] == cell(l_adapt_train(adapter, count, size))
        for split in ("id", "ood"):
            assert row[f"L_adapt ({split})"] == cell(l_adapt(adapter, count, split, size))
            # L*_adapt is measured on 2-class tasks only.
            assert row[f"L_adapt_star ({split})"] == (cell(l_adapt_star(adapter, split)) if size == 2 else "")
            assert row[f"acc_avg ({split})"] == cell(accuracy(count, split, size))
    # One task size: said once by the page, not in a column.
    two = adaptation_table(results[results["task_classes"].isna() | (results["task_classes"] == 2)])
    assert "task_classes" not in two.columns and len(two) == len(ADAPTERS) * len(SHOTS)


def test_distortion_and_chosen_tables(results):
    distortion = distortion_table(results)
    assert distortion.to_dict("records") == [
        {"adapter": "finetune", "task_classes": size, "shots": count, "distortion_outside": cell(0.3 * size / 2),
         "distortion_inside": cell(1.2 * size / 2)} for size in (2, 10) for count in SHOTS]
    chosen = chosen_table(results)
    assert list(chosen.columns) == ["adapter", "task_classes", "shots", "chosen_lr", "chosen_steps"]  # no penalty
    assert chosen.set_index(["adapter", "task_classes", "shots"]).loc[("finetune", 2, 64)].tolist() == ["0.64", "200"]
    assert "mean" not in set(chosen["adapter"])
    two = chosen_table(results[results["task_classes"].isna() | (results["task_classes"] == 2)])
    assert list(two.columns) == ["adapter", "shots", "chosen_lr", "chosen_steps"]


def test_the_new_quantities_are_listed_after_the_adaptation_ones(results):
    labels = list(checkpoint_table(results).index)
    position = {label: i for i, label in enumerate(labels)}
    adapt = position["L_adapt (adapter=linear, split=id, task_classes=2, shots=8)"]
    link = position["link_total (adapter=linear, split=id, shots=8)"]
    assert position["acc_top (adapter=linear, top_r=5)"] < link < position["tau"]
    assert position["L_sup (adapter=linear, task_classes=2)"] < adapt
    assert adapt < position["acc_avg (adapter=mean, task_classes=2)"]


def bar_ends(ax) -> dict[tuple[str, ...], tuple[float, float, float]]:
    """Each waterfall bar by (adapter, shots, split, bar): its x, start (bottom) and end (start + height)."""
    ends = {}
    for patch in ax.patches:
        gid = patch.get_gid()
        if isinstance(gid, str) and gid.startswith("chain:"):
            _, adapter, shots, split, name = gid.split(":")
            ends[(adapter, shots, split, name)] = (patch.get_x() + patch.get_width() / 2, patch.get_y(),
                                                   patch.get_y() + patch.get_height())
    return ends


def error_bar_segments(ax) -> list[tuple[float, float, float]]:
    """Every vertical error bar of the axes as (x, low, high)."""
    segments = []
    for container in ax.containers:
        for collection in getattr(container, "lines", (None, None, ()))[2]:
            for segment in collection.get_segments():
                (x0, y0), (_, y1) = segment
                segments.append((float(x0), min(y0, y1), max(y0, y1)))
    return segments


def test_the_waterfall_bars_end_at_the_cumulative_sums_of_the_links(results):
    fig = chain_figure(results)
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.patches]
    titles = sorted(ax.get_title() for ax in panels)
    assert titles == sorted(f"{view} tasks, {count} shots" for view in ("ID", "OOD") for count in SHOTS)
    checked = 0
    for ax in panels:
        ends = bar_ends(ax)
        segments = error_bar_segments(ax)
        view, count = re.match(r"(ID|OOD) tasks, (\d+) shots", ax.get_title()).groups()
        split, count = view.lower(), int(count)
        for adapter in ADAPTERS:
            values = links(adapter, count, split)
            key = (adapter, str(count), split)
            # L̂_pre from 0, then each link from where the previous one ended.
            assert ends[(*key, "L_pre_train")][1:] == pytest.approx((0.0, L_PRE_TRAIN))
            level = L_PRE_TRAIN
            for name in ("link_pretrain_gap", "link_interface", "link_adapt_excess"):
                x, start, end = ends[(*key, name)]
                assert start == pytest.approx(level)
                level += values[name]
                assert end == pytest.approx(level)
                # The link's CI as an error bar at the bar's end (x: the same float the bar was drawn at,
                # read back from matplotlib's float64 segments: equal up to its transforms' rounding, ≪ 1e-9)
                assert any(abs(sx - x) < 1e-9 and lo == pytest.approx(end - HALF) and hi == pytest.approx(end + HALF)
                           for sx, lo, hi in segments), (key, name)
            assert level == pytest.approx(l_adapt(adapter, count, split))
            # The total from L̂_pre reaches the same level; the adaptation gap goes down to L̂_adapt.
            assert ends[(*key, "link_total")][1:] == pytest.approx((L_PRE_TRAIN, L_PRE_TRAIN + values["link_total"]))
            assert ends[(*key, "link_total")][2] == pytest.approx(level)
            assert ends[(*key, "link_adapt_gap")][1:] == pytest.approx((level, l_adapt_train(adapter, count)))
            checked += 1
    assert checked == len(ADAPTERS) * len(SHOTS) * 2
    # Labelled axes with the loss unit; the legend outside the panels.
    assert all("bits" in ax.get_ylabel() for ax in panels if ax.get_ylabel())
    assert fig.legends and all(ax.get_legend() is None for ax in fig.axes)
    assert {label.get_text() for label in panels[0].get_xticklabels()} == {
        "mean classifier", "linear probe", "fine-tuning", "LP-FT"}


def test_a_negative_link_goes_down(results):
    """The interface is negative for the mean classifier on ID tasks: its bar ends below where it starts."""
    ax = next(ax for ax in chain_figure(results).axes if ax.get_title() == "ID tasks, 8 shots")
    _, start, end = bar_ends(ax)[("mean", "8", "id", "link_interface")]
    assert end < start and end == pytest.approx(l_adapt_star("mean", "id"))


def test_one_panel_per_shots_value_for_a_single_task_view(tmp_path):
    frame = with_chain(synthetic_results(), splits=("test",), adapters=("mean", "linear"), shots=(4, 16, 64))
    fig = chain_figure(frame, loss_unit="ℓ = hinge")
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == [f"test samples, {count} shots" for count in (4, 16, 64)]
    assert "ℓ = hinge" in panels[0].get_ylabel()
    width, _ = fig.get_size_inches()
    assert width * 110 <= 13.5 * 110  # drawn for the page's width, not wider
    assert plot_chain(frame, tmp_path / "chain.png") == tmp_path / "chain.png"


def test_no_chain_without_links(tmp_path, today):
    assert chain_figure(today) is None and plot_chain(today, tmp_path / "c.png") is None
    assert not (tmp_path / "c.png").exists()
    assert chain_table(today).empty and adaptation_table(today).empty and error_chains(today) == []


def section(html: str) -> str:
    return html[html.index('<h2 id="adaptation">'):html.index('<h2 id="lemma-4-3">')]


def test_the_report_has_an_adaptation_section(tmp_path, results):
    html = write_report(tmp_path, results, synthetic_runs(), CONFIG, title="preadapt run: demo").read_text(
        encoding="utf-8")
    assert '<a href="#adaptation">Adaptation</a>' in html and '<a href="#chain">Error chain</a>' in html
    # After the key figures, before the theory's detail; the headline unchanged in its place.
    order = [html.index(mark) for mark in ('<header id="headline">', '<h2 id="figures">', '<h2 id="adaptation">',
                                           '<h2 id="lemma-4-3">')]
    assert order == sorted(order)
    adaptation = section(html)
    text = page_text(adaptation)
    assert f"At step {STEP}" in text and "on tasks of 2 and 10 classes" in text
    # ID and OOD side by side: one column group each.
    assert '<th colspan="3" class="group">ID tasks</th><th colspan="3" class="group">OOD tasks</th>' in adaptation
    assert "AVG accuracy" in adaptation and '<th rowspan="2">task classes</th>' in adaptation
    for adapter in ADAPTERS:
        for count in SHOTS:
            for split in ("id", "ood"):
                assert cell(l_adapt(adapter, count, split)) in text.replace("\n", " ")
                assert cell(links(adapter, count, split)["link_total"]) in text
    # The chain table, its figure, the distortion and the chosen hyperparameters.
    assert "<th>pretraining gap: L_pre − L̂_pre</th>" in adaptation
    assert "<th>total: L_adapt − L̂_pre</th>" in adaptation
    assert 'src="figures/chain.png"' in adaptation and (tmp_path / "figures" / "chain.png").is_file()
    assert 'id="distortion"' in adaptation and "outside S: ‖(B_FT − B_0)·P_S⊥‖" in adaptation
    assert 'id="chosen"' in adaptation and "<th>learning rate</th>" in adaptation and "0.64" in text
    # Every estimate with its CI and n (the chosen hyperparameters are choices: values alone).
    estimates = adaptation[:adaptation.index('id="chosen"')]
    cells = [page_text(c) for c in re.findall(r'<td class="num">(.*?)</td>', estimates, flags=re.S)]
    filled = [c for c in cells if c]
    assert len(filled) > 100 and all(re.fullmatch(r"\S+ \[\S+, \S+\] n=\d+", c) for c in filled), filled[:3]
    assert len(cells) - len(filled) == len(ADAPTERS) * len(SHOTS) * 2  # L*_adapt of the 10-class rows


def test_without_the_rows_the_report_is_as_today(tmp_path, today, results):
    html = write_report(tmp_path, today, synthetic_runs(), CONFIG, title="t").read_text(encoding="utf-8")
    assert 'id="adaptation"' not in html and 'href="#adaptation"' not in html and "chain.png" not in html
    # A stale figure from an earlier report of the same directory goes.
    write_report(tmp_path, results, synthetic_runs(), CONFIG, title="t")
    assert (tmp_path / "figures" / "chain.png").exists()
    again = write_report(tmp_path, today, synthetic_runs(), CONFIG, title="t").read_text(encoding="utf-8")
    assert not (tmp_path / "figures" / "chain.png").exists() and again == html


def test_adaptation_losses_without_links(tmp_path, today, results):
    """An evaluation that records the losses but no link, no distortion and no chosen hyperparameter: the
    section says the chain was not measured and has no table for the others."""
    partial = results[~results["quantity"].str.match("link_|distortion_|chosen_")]
    html = write_report(tmp_path, partial, synthetic_runs(), CONFIG, title="t").read_text(encoding="utf-8")
    adaptation = section(html)
    assert "The links of the error chain were not measured in this run." in adaptation
    assert "chain.png" not in html and 'href="#chain"' not in html
    assert 'id="distortion"' not in adaptation and 'id="chosen"' not in adaptation
    assert "<th>L_adapt</th>" in adaptation


def test_the_section_survives_a_csv_round_trip(tmp_path, results):
    """Read back from CSV, shots are floats: the cells and the chain are those of the frame."""
    results.to_csv(tmp_path / "results.csv", index=False)
    frame = pd.read_csv(tmp_path / "results.csv")
    assert chain_table(frame).equals(chain_table(results))
    assert adaptation_table(frame).equals(adaptation_table(results))
    ends = {key: value for ax in chain_figure(frame).axes for key, value in bar_ends(ax).items()}
    assert ("linear", "8", "ood", "link_total") in ends


@pytest.mark.skipif(find_chromium() is None, reason="no headless Chromium (Debian package chromium; `make test` "
                                                     "installs it where apt is available)")
def test_the_report_with_the_adaptation_section_reads_in_a_1280_px_window(tmp_path, results):
    from test_browser import assert_reads_well
    from test_report import ALL_CHECKS

    write_report(tmp_path, results, synthetic_runs(), CONFIG, title="preadapt run: demo")
    layout = measure_report(tmp_path / "report.html")
    assert_reads_well(layout, "demo", statements=len(ALL_CHECKS))
    assert "AVG-2, mean classifier" in layout.text_start
    # Stricter than the window: no table reaches beyond the page's column (where its scroll box would hide
    # it), whose right edge is that of the headline's full-width verdict table.
    column = max(table["right"] for table in layout.tables if table["header"].startswith("statement"))
    wide = [(table["header"], round(table["right"])) for table in layout.tables if table["right"] > column + 0.5]
    assert wide == [], f"tables beyond the page's column (x = {column:.0f}): {wide}"
    assert any(table["header"] == "adapter" for table in layout.tables)
