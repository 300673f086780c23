"""The sweep presets: their plans, and reduced versions of them run end to end."""

from __future__ import annotations

import dataclasses

import pytest

import preadapt

from preadapt.experiment.executors import InProcess
from preadapt.experiment.store import Store
from preadapt.api import run_sweep  # the driver with the sweep report writer passed in
from preadapt.experiment.sweep import load_sweep, sweep_preset_names
from preadapt.report.sweep import aggregate


def test_the_sweep_presets_expand_into_the_grids_they_promise():
    assert sweep_preset_names() == ["architecture", "debiased", "lpft-seeds", "sweep-negatives", "sweep-shots"]
    architecture = load_sweep(preset="architecture")  # equal budget: only the encoder changes
    assert len(architecture.runs) == 6 * 3 and len({r.config.encoder.model_dump_json() for r in architecture.runs}) == 6
    assert len({(r.config.pretrain.model_dump_json(), r.config.objective.model_dump_json(), r.config.world.model_dump_json())
                for r in architecture.runs}) == 1
    seeds = load_sweep(preset="lpft-seeds")  # the lpft run preset at five seeds, nothing else changed
    assert len(seeds.runs) == 5 and len({r.config.seed for r in seeds.runs}) == 5
    assert {r.config.model_copy(update={"seed": 0, "name": "lpft"}).config_hash() for r in seeds.runs} == {
        preadapt.load_config(preset="lpft").config_hash()}
    negatives = load_sweep(preset="sweep-negatives")
    assert len(negatives.runs) == 6 * 3 * 3
    assert {(r.point["objective.negatives"], r.point["objective.block_size"]) for r in negatives.runs} == {
        (k, b) for k in (1, 2, 4, 8, 16, 32) for b in (1, 2, 5)}
    shots = load_sweep(preset="sweep-shots")
    assert sorted({r.config.evaluate.probe_shots for r in shots.runs}) == [1, 2, 5, 10, 20, 50, 100]
    assert len(shots.runs) == 21
    debiased = load_sweep(preset="debiased")
    kinds = {(r.point["world.classes"], r.point["objective"]): r.config.objective for r in debiased.runs}
    assert set(kinds) == {(c, o) for c in (2, 5) for o in ("biased", "debiased", "oracle")}
    for classes in (2, 5):  # equal budget: the same tuples, steps and negatives for the three objectives
        assert {objective.negatives for (c, _), objective in kinds.items() if c == classes} == {4}
        assert kinds[(classes, "oracle")].true_negatives and not kinds[(classes, "biased")].true_negatives
    assert len({r.config.pretrain.model_dump_json() for r in debiased.runs}) == 1 and debiased.baseline == {"objective": "biased"}


def _reduced(sweep, keep):
    return dataclasses.replace(sweep, runs=[r for r in sweep.runs if keep(r)])


@pytest.mark.slow
def test_a_reduced_debiased_sweep_reports_paired_differences(tmp_path):
    sweep = _reduced(load_sweep(preset="debiased"), lambda r: r.replicate < 2 and r.point["world.classes"] == 2)
    summary = run_sweep(sweep, tmp_path / "out", InProcess())
    assert sorted(summary.statuses.values()) == ["finished"] * 6
    figures = {path.name for path in (tmp_path / "out" / "figures").glob("*.png")}
    assert "sweep_L_sup_mean_task_classes_2_objective_paired.png" in figures
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Paired differences to the baseline (objective=biased)" in html and "paired-t" in html


@pytest.mark.slow
def test_a_reduced_shots_sweep_shows_a_hundred_shots_beating_one(tmp_path):
    sweep = _reduced(load_sweep(preset="sweep-shots"),
                     lambda r: r.replicate == 0 and r.point["evaluate.probe_shots"] in (1, 100))
    run_sweep(sweep, tmp_path / "out", InProcess())
    store = Store(tmp_path / "out" / "results.sqlite")
    try:
        results, runs = store.results(), store.runs()
    finally:
        store.close()
    for adapter in ("mean", "linear"):  # one replicate: each point is its run's own t-interval across tasks
        table = aggregate(results, runs, sweep.describe(), f"acc_avg[adapter={adapter},task_classes=2,shots=1]")
        one = table.iloc[0]
        table = aggregate(results, runs, sweep.describe(), f"acc_avg[adapter={adapter},task_classes=2,shots=100]")
        hundred = table.iloc[0]
        assert one["upper"] < hundred["lower"], (adapter, one.to_dict(), hundred.to_dict())


@pytest.mark.slow
def test_a_reduced_negatives_sweep_draws_lines_and_a_heatmap_with_bands(tmp_path):
    sweep = _reduced(load_sweep(preset="sweep-negatives"),
                     lambda r: r.replicate < 2 and r.point["objective.negatives"] in (1, 32)
                     and r.point["objective.block_size"] in (1, 5))
    summary = run_sweep(sweep, tmp_path / "out", InProcess())
    assert sorted(summary.statuses.values()) == ["finished"] * 8
    figures = {path.name for path in (tmp_path / "out" / "figures").glob("*.png")}
    stem = "sweep_acc_avg_adapter_mean_shots_none_task_classes_2"
    assert {f"{stem}_objective_negatives.png", f"{stem}_objective_block_size.png", f"{stem}_heatmap.png",
            f"{stem}_objective_negatives_paired.png"} <= figures
    store = Store(tmp_path / "out" / "results.sqlite")
    try:
        table = aggregate(store.results(), store.runs(), sweep.describe(), sweep.quantities[0])
    finally:
        store.close()
    assert len(table) == 4 and (table["replicates"] == 2).all() and (table["lower"] < table["upper"]).all()


@pytest.mark.slow
def test_a_reduced_architecture_sweep_has_the_interface_section(tmp_path):
    """Two encoders × two seeds: 16 (L_pre, L*_adapt) points from 4 runs; the report answers in one
    sentence per adapter with Spearman's ρ and its bootstrap CI, and draws the figure."""
    sweep = _reduced(load_sweep(preset="architecture"),
                     lambda r: r.replicate < 2 and r.point["encoder"] in ("linear", "mlp-64"))
    summary = run_sweep(sweep, tmp_path / "out", InProcess())
    assert sorted(summary.statuses.values()) == ["finished"] * 4
    html = (tmp_path / "out" / "report.html").read_text()
    assert 'id="interface"' in html
    for adapter in ("mean", "linear"):
        assert f"{adapter}, test samples:" in html and "16 points from 4 runs" in html
    assert "Spearman" in html
    assert (tmp_path / "out" / "figures" / "sweep_interface.png").stat().st_size > 0
