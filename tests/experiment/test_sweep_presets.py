"""The sweep presets: their plans, and reduced versions of them run end to end."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

import preadapt

from preadapt.experiment.executors import InProcess
from preadapt.experiment.store import Store
from preadapt.api import run_sweep  # the driver with the sweep report writer passed in
from preadapt.experiment.sweep import load_sweep, sweep_preset_names
from preadapt.report.sweep import aggregate


def test_the_sweep_presets_expand_into_the_grids_they_promise():
    assert sweep_preset_names() == ["architecture", "debiased", "inductive-bias", "lpft-seeds", "shift", "sweep-negatives",
                                    "sweep-shots"]
    bias = load_sweep(preset="inductive-bias")  # linear vs lookup, 3 seeds; only the function class changes
    assert len(bias.runs) == 2 * 3 and {r.config.encoder.kind for r in bias.runs} == {"linear", "lookup"}
    assert len({(r.config.pretrain.model_dump_json(), r.config.objective.model_dump_json(), r.config.world.model_dump_json())
                for r in bias.runs}) == 1 and bias.runs[0].config.world.dim == 24
    architecture = load_sweep(preset="architecture")  # equal budget: only the encoder changes
    assert len(architecture.runs) == 6 * 3 and len({r.config.encoder.model_dump_json() for r in architecture.runs}) == 6
    assert len({(r.config.pretrain.model_dump_json(), r.config.objective.model_dump_json(), r.config.world.model_dump_json())
                for r in architecture.runs}) == 1
    shift = load_sweep(preset="shift")  # severity × unseen fraction × seeds; pretraining ignores the severity
    fraction, severity = "task.steps.0.fraction", "task.steps.1.severity"
    assert len(shift.runs) == 5 * 3 * 3 and {r.point[severity] for r in shift.runs} == {0.0, 0.25, 0.5, 0.75, 1.0}
    assert {r.point[fraction] for r in shift.runs} == {0.0, 0.2, 0.4}
    pretraining = {(r.config.seed, r.point[fraction], r.config.world.model_dump_json(), r.config.encoder.model_dump_json(),
                    r.config.objective.model_dump_json(), r.config.pretrain.model_dump_json(),
                    r.config.task.steps[0].model_dump_json()) for r in shift.runs}
    assert len(pretraining) == 3 * 3  # one pretraining per seed and fraction, shared by the five severities
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


@pytest.mark.slow
def test_a_reduced_shift_sweep_pairs_its_runs_and_draws_severity_with_bands(tmp_path):
    """Severity 0 and 1 × fraction 0 and 0.4, one seed: the two severities of a fraction pretrain the
    same encoder (their L_pre rows are equal to the last bit, at every checkpoint), the report draws
    L*_adapt and L_pre against severity with CI bands and has the Interface section."""
    fraction, severity = "task.steps.0.fraction", "task.steps.1.severity"
    sweep = _reduced(load_sweep(preset="shift"),
                     lambda r: r.replicate == 0 and r.point[severity] in (0.0, 1.0) and r.point[fraction] in (0.0, 0.4))
    summary = run_sweep(sweep, tmp_path / "out", InProcess())
    assert sorted(summary.statuses.values()) == ["finished"] * 4
    results = pd.read_csv(tmp_path / "out" / "results.csv")  # the tidy rows with one column per swept field
    pre = results[results.quantity.isin(["L_pre", "L_pre_train"])]
    for share, rows in pre.groupby(fraction):
        by_severity = [part.sort_values(["quantity", "step"])[["quantity", "step", "value", "lower", "upper"]]
                       .reset_index(drop=True) for _, part in rows.groupby(severity)]
        assert len(by_severity) == 2 and by_severity[0].equals(by_severity[1]), share
    figures = tmp_path / "out" / "figures"
    for name in ("sweep_L_pre_task_steps_1_severity.png", "sweep_L_adapt_star_adapter_linear_split_id_task_steps_1_severity.png",
                 "sweep_L_adapt_star_adapter_mean_split_id_task_steps_1_severity.png", "sweep_interface.png"):
        assert (figures / name).stat().st_size > 0, name
    html = (tmp_path / "out" / "report.html").read_text()
    assert 'id="interface"' in html and "Spearman" in html


@pytest.mark.slow
def test_a_reduced_inductive_bias_sweep_finds_the_same_loss_with_a_different_downstream(tmp_path):
    """Linear vs lookup on the d = 24 hypercube, two seeds each (the preset's settings, 4 of its 6 runs):
    the report has the Interface section and names the lookup table as the encoder that adapts worse
    with a pretraining loss that is not higher.

    No tolerance to choose: the claim is the report's own, from its CIs. The preset's full run gives
    the lookup table L_pre ≈ −15.8 and the linear encoder ≈ −11.0 (each ±0.4 within a run), and
    L*_adapt ≈ 1.03 against ≈ 0.04 (mean) and 0.0008 (linear), so even the t-interval of two replicates
    (t = 12.7 at 1 degree of freedom) keeps both pairs of CIs apart by far."""
    sweep = _reduced(load_sweep(preset="inductive-bias"), lambda r: r.replicate < 2)
    summary = run_sweep(sweep, tmp_path / "out", InProcess())
    assert sorted(summary.statuses.values()) == ["finished"] * 4
    html = (tmp_path / "out" / "report.html").read_text()
    assert 'id="interface"' in html and 'id="interface-contrasts"' in html and "16 points from 4 runs" in html
    for adapter in ("mean", "linear"):
        assert (f"{adapter}, ID tasks: same pre-training loss, different downstream: at step 316, encoder=lookup "
                f"(2 runs) has L_pre ") in html, adapter
    assert (tmp_path / "out" / "figures" / "sweep_interface.png").stat().st_size > 0
