"""The run report's last section, "Where the time went": the run's stages from the store's ``timings``
table, a share of the run each, the total last, and a line saying these are single wall-clock
measurements (no interval applies). Small: the page grows by a few hundred pixels at most."""

from __future__ import annotations

import re

import pandas as pd
import pytest

import preadapt
from preadapt.report.browser import find_chromium, measure_report
from preadapt.report.html import TOP_STAGES, time_table, write_report
from test_report import page_text, synthetic_results, synthetic_runs

CONFIG = "name: demo\nworld: {kind: gaussian, classes: 20, dim: 16}\n"

TIMINGS = pd.DataFrame({
    "run": "demo",
    "stage": ["sampling", "start-up", "pretraining", "storing", "evaluation", "evaluation/L_un", "evaluation/adapters",
              "evaluation/adapters/linear", "bound checks", "bound checks/every f", "other"],
    "seconds": [2.0, 4.0, 10.0, 1.0, 20.0, 3.0, 12.0, 9.0, 2.0, 1.5, 1.0],
    "calls": [1, 1, 1, 4, 3, 3, 3, 6, 4, 3, 1],
})


def time_section(html: str) -> str:
    return html[html.index('<h2 id="time">'):]


def test_the_table_orders_the_stages_gives_shares_and_a_rest_per_broken_down_stage():
    table = time_table(TIMINGS, report_seconds=2.0)
    top = table[table["depth"] == 0]
    assert top["stage"].tolist() == [*TOP_STAGES, "total"]
    total = TIMINGS.loc[~TIMINGS["stage"].str.contains("/"), "seconds"].sum() + 2.0
    assert top["seconds"].iloc[-1] == total and top["share"].iloc[:-1].sum() == pytest.approx(1.0)
    rows = table.set_index("stage")
    assert rows.loc["evaluation/rest", "seconds"] == 20.0 - 3.0 - 12.0  # what the parts do not cover
    assert rows.loc["evaluation/adapters/rest", "seconds"] == 12.0 - 9.0
    assert pd.isna(rows.loc["evaluation/rest", "calls"]) and rows.loc["evaluation/adapters/linear", "depth"] == 2
    # a part follows its stage
    order = table["stage"].tolist()
    assert order.index("evaluation") < order.index("evaluation/L_un") < order.index("bound checks")


def test_a_stored_report_time_is_shown_as_stored():
    stored = pd.concat([TIMINGS, pd.DataFrame([{"run": "demo", "stage": "report", "seconds": 5.0, "calls": 1}])])
    table = time_table(stored, report_seconds=0.1).set_index("stage")
    assert table.loc["report", "seconds"] == 5.0


def test_the_report_ends_with_where_the_time_went(tmp_path):
    path = write_report(tmp_path, synthetic_results(), synthetic_runs(), CONFIG, title="preadapt run: demo",
                        timings=TIMINGS)
    html = path.read_text()
    headings = re.findall(r'<h2 id="([^"]+)"', html)
    assert headings[-1] == "time" and '<a href="#time">Time</a>' in html
    section = page_text(time_section(html))
    assert "no confidence interval applies" in section and "measured once on this machine" in section
    main = time_section(html).split("<details")[0]
    cells = re.findall(r'<td class="depth-0">([^<]+)</td><td class="num">([^<]+)</td><td class="num">([^<]+)</td>',
                       main)
    assert [name for name, _, _ in cells] == [*TOP_STAGES, "total"]
    shown = dict((name, (float(seconds), share)) for name, seconds, share in cells)
    # The share is computed from the exact total and printed to 0.1 %; the total is printed to 0.01 s (it holds the
    # writer's own measured time, so its digits vary run to run). So the printed share is 20 / total within half
    # its last digit plus what the total's rounding (±0.005 s) moves 20 / total by.
    (seconds, share), total = shown["evaluation"], shown["total"][0]
    assert seconds == 20.0 and shown["total"][1] == "100.0%"
    assert float(share.rstrip("%")) / 100 == pytest.approx(20.0 / total, abs=0.0005 + 20.0 * 0.005 / total ** 2)
    assert shown["report"][0] >= 0  # measured by the writer itself: the stages passed have none
    folded = time_section(html).split("<details")[1]
    assert '<td class="depth-2">linear</td>' in folded and '<td class="depth-1">rest</td>' in folded


def test_without_timings_there_is_no_such_section(tmp_path):
    html = write_report(tmp_path, synthetic_results(), synthetic_runs(), CONFIG, title="preadapt run: demo").read_text()
    assert 'id="time"' not in html and "Where the time went" not in html


def test_a_run_report_shows_its_stages_and_the_store_keeps_the_report_time(tmp_path):
    config = {"name": "timed", "seed": 3, "device": "cpu", "threads": 1,
              "world": {"kind": "gaussian", "classes": 4, "dim": 4},
              "encoder": {"kind": "linear", "out_dim": 4},
              "pretrain": {"tuples": 256, "epochs": 1, "batch_size": 128, "checkpoints": [0]},
              "evaluate": {"samples": 512, "mean_samples": 64, "test_per_class": 16, "task_classes": [2, 3],
                           "top_r": [1], "probe_tasks": 4, "probe_shots": 8, "probe_val": 8, "star_samples": 32,
                           "bootstrap": 10, "adapters": [{"kind": "mean"}]}}
    result = preadapt.run(config, out=tmp_path / "run")
    html = (tmp_path / "run" / "report.html").read_text()
    main = time_section(html).split("<details")[0]
    shown = dict(re.findall(r'<td class="depth-0">([^<]+)</td><td class="num">([^<]+)</td>', main))
    assert set(shown) == {*TOP_STAGES, "total"}
    stored = dict(zip(result.timings["stage"], result.timings["seconds"]))
    # the page's report time ends before the page is written; the stored one after (both measured)
    assert float(shown["report"]) <= round(stored["report"], 2)
    assert float(shown["evaluation"]) == round(stored["evaluation"], 2)


@pytest.mark.skipif(find_chromium() is None, reason="no headless Chromium (Debian package chromium)")
def test_the_section_is_small_and_fits_the_window(tmp_path):
    write_report(tmp_path / "without", synthetic_results(), synthetic_runs(), CONFIG, title="preadapt run: demo")
    write_report(tmp_path / "with", synthetic_results(), synthetic_runs(), CONFIG, title="preadapt run: demo",
                 timings=TIMINGS)
    without = measure_report(tmp_path / "without" / "report.html")
    layout = measure_report(tmp_path / "with" / "report.html")
    assert layout.tables_too_wide == [] and layout.page_width <= layout.width
    grown = layout.page_height - without.page_height
    assert 0 < grown < 400, f"the section adds {grown} px"
