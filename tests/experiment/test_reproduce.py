"""`preadapt reproduce arora2019`: the plan, the claims' rules on hand-made numbers, and a tiny
reproduction end to end (resumed without recomputing)."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest

from preadapt.experiment.config import ConfigError
from preadapt.experiment.reproduce import SCALE_SETTINGS, plan_arora2019, run_reproduction
from preadapt.report.reproduction import at_least, claims, difference, overall, within


def test_the_small_plan_has_the_three_parts_and_the_paired_representations():
    plan = plan_arora2019("small")
    assert list(plan.sweeps) == ["table1", "table2", "figure2"]
    table1 = plan.sweeps["table1"]
    kinds = {(r.point["objective"], r.config.world.kind, r.config.encoder.kind) for r in table1.runs}
    rows = len(plan.rows)
    assert len(table1.runs) == 2 * rows and {k[0] for k in kinds} == {"supervised", "CURL"}
    labels = {str(r.values["encoder"]) for r in table1.runs}
    assert labels == {row.label for row in plan.rows}  # each row named by its own label
    for label in labels:  # supervised and CURL share tuples and steps per row
        pair = [r.config for r in table1.runs if r.values["encoder"] == label]
        assert len({(c.pretrain.model_dump_json(), c.world.model_dump_json(), c.seed) for c in pair}) == 1
    assert sorted(r.config.objective.block_size for r in plan.sweeps["table2"].runs) == [1, 2, 5, 10]
    figure = plan.sweeps["figure2"].runs
    assert {(r.config.objective.negatives, r.config.pretrain.tuples) for r in figure} == {
        (k, n) for k in SCALE_SETTINGS["small"].negatives for n in SCALE_SETTINGS["small"].amounts}
    assert plan.describe()["rows"][0]["label"] == "topics-gru"


def test_rows_of_data_sets_not_installed_are_left_out_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("PREADAPT_DATA_WORDNET", str(tmp_path))  # an empty directory: no WordNet here
    from preadapt.worlds import datasets

    for cached in (getattr(datasets, name) for name in dir(datasets)):
        if hasattr(cached, "cache_clear"):
            cached.cache_clear()
    plan = plan_arora2019("small")
    assert {"wordnet-bow", "wordnet-gru"} <= set(plan.missing)
    assert "wordnet-base" in plan.missing["wordnet-bow"] and all(not r.label.startswith("wordnet") for r in plan.rows)


def test_an_unknown_scale_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"^--scale: got 'huge'; allowed: small, full$"):
        plan_arora2019("huge")


def cell(value, half=0.01):
    return {"value": value, "lower": value - half, "upper": value + half}


def test_the_rules_decide_only_what_the_intervals_decide():
    d = difference(cell(0.90), cell(0.88))  # 0.02 ± 0.02: inside ±0.05, straddles 0
    assert d == pytest.approx((0.02, 0.0, 0.04))
    assert within(d, 0.05) == "held" and within(d, 0.03) == "inconclusive" and within(d, 0.01) == "inconclusive"
    assert within(difference(cell(0.95), cell(0.85)), 0.03) == "not held"  # [0.08, 0.12] outside ±0.03
    assert at_least(d) == "inconclusive" and at_least(difference(cell(0.95), cell(0.90))) == "held"
    assert at_least(difference(cell(0.85), cell(0.90))) == "not held"
    assert at_least(difference(cell(0.89), cell(0.90)), margin=0.01) == "inconclusive"
    assert at_least(difference(cell(0.90, half=0.004), cell(0.90, half=0.004)), margin=0.01) == "held"
    assert at_least(None) == "inconclusive" and within(None, 0.03) == "inconclusive"
    assert overall(["held", "held"]) == "held" and overall(["held", "inconclusive"]) == "inconclusive"
    assert overall(["held", "not held", "inconclusive"]) == "not held" and overall([]) == "inconclusive"


def test_claims_read_the_cells_they_name():
    plan = {"rows": [{"label": "topics-gru", "avg_k": 10, "top_r": 10, "paper": "Wiki-3029", "tr_shots": 50}],
            "negatives": [1, 4, 16], "amounts": [2000, 32000], "figure2_classes": 20}
    cells1 = {("topics-gru", rep, col, "AVG", size): cell(value, half=0.005) for rep, col, size, value in [
        ("supervised", "μ", 2, 0.95), ("supervised", "TR", 2, 0.96), ("CURL", "μ", 2, 0.94), ("CURL", "TR", 2, 0.95),
        ("supervised", "TR", 10, 0.80), ("CURL", "TR", 10, 0.70)]}
    cells2 = {2: cell(0.90), 10: cell(0.95)}
    cells_f2 = {(1, 32000): cell(0.80), (4, 32000): cell(0.90), (16, 32000): cell(0.85)}
    found = {c["claim"][:4]: c["verdict"] for c in claims(plan, cells1, cells2, cells_f2, {})}
    assert found == {"(i) ": "held", "(ii)": "held", "(iii": "held", "(iv)": "held", "(v) ": "inconclusive"}
    cells_f2[(16, 32000)] = cell(0.95)  # still rising at the largest k: (iv) not held
    cells2[10] = cell(0.89)  # b = 10 within b = 2's interval: (iii) cannot decide
    found = {c["claim"][:4]: c["verdict"] for c in claims(plan, cells1, cells2, cells_f2, {})}
    assert found["(iv)"] == "not held" and found["(iii"] == "inconclusive"


TINY = dataclasses.replace(SCALE_SETTINGS["small"], name="tiny", topic_classes=12, tuples=600, epochs=1, samples=300,
                           test_per_class=10, probe_tasks=4, negatives=(1, 4, 8), amounts=(200, 600), note="tiny",
                           loss_checkpoints=(0, 1))


@pytest.mark.slow
def test_a_tiny_reproduction_writes_its_tables_and_claims_and_resumes(tmp_path, monkeypatch):
    """The topic rows only (no MiniLM: its model costs minutes), one seed: every part's runs finish, the
    report has the claims first and Table 1 beside the paper's numbers, and a second call computes nothing."""
    from preadapt.experiment import reproduce
    from preadapt.experiment.executors import InProcess
    from preadapt.report.reproduction import write_reproduction_report

    monkeypatch.setattr(reproduce, "minilm_missing", lambda: "not in this test")
    plan = plan_arora2019(TINY, rows_wanted=())
    summary = run_reproduction(plan, tmp_path, InProcess, report=write_reproduction_report)
    assert not summary.failed and not summary.interrupted
    assert sum(len(s.seconds) for s in summary.summaries.values()) == 2 + 4 + 6
    html = summary.report.read_text(encoding="utf-8")
    assert html.index('id="claims"') < html.index('id="table1"') < html.index('id="table2"') < html.index('id="figure2"')
    assert "Wiki-3029" in html and "97.8" in html and "not in this test" in html
    claims_table = pd.read_csv(tmp_path / "claims.csv")
    assert len(claims_table) == 5 and set(claims_table.verdict) <= {"held", "not held", "inconclusive"}
    tables = pd.read_csv(tmp_path / "tables.csv")
    assert set(tables.metric) == {"AVG-2", "AVG-10", "TOP-1", "TOP-10"} and tables["CURL μ"].str.contains(r"\[").all()
    assert (tmp_path / "figures" / "figure2.png").stat().st_size > 0
    assert json.loads((tmp_path / "plan.json").read_text())["scale"] == "tiny"
    again = run_reproduction(plan, tmp_path, InProcess, report=write_reproduction_report)
    assert sum(len(s.seconds) for s in again.summaries.values()) == 0  # resumed: every run was kept
    from preadapt.report.browser import find_chromium, measure_report

    if find_chromium() is not None:  # read in a real browser at 1280 × 900: the claims first, nothing off to the side
        layout = measure_report(summary.report)
        assert layout.page_width <= layout.width and not layout.tables_too_wide and not layout.broken_images
        assert "Claims" in layout.text_start and "reproduce arora2019" in layout.title


def test_the_command_refuses_an_unknown_paper_or_scale_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from preadapt.cli import app

    for args, message in ((["reproduce", "smith2020"], "PAPER: got 'smith2020'; allowed: arora2019"),
                          (["reproduce", "arora2019", "--scale", "huge"], "--scale: got 'huge'; allowed: small, full")):
        result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out")])
        assert result.exit_code == 2 and message in result.output
        assert not (tmp_path / "out").exists()
