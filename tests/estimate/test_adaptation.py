"""The adaptation protocol and the error chain (estimate/adaptation.py, THEORY.md section 1)."""

from __future__ import annotations

import pytest
import torch

from preadapt import run
from preadapt.estimate.adaptation import shots_schedule
from preadapt.estimate.spec import EvaluateConfig
from preadapt.experiment.config import ConfigError, parse_config

EPS = torch.finfo(torch.float64).eps

SMALL = {"name": "chain", "device": "cpu", "world": {"kind": "gaussian", "classes": 6, "dim": 8},
         "encoder": {"kind": "mlp", "hidden": [32], "out_dim": 8},
         "pretrain": {"tuples": 2048, "epochs": 2, "batch_size": 256, "checkpoints": [0]},
         "evaluate": {"samples": 2000, "mean_samples": 200, "test_per_class": 40, "task_classes": [2, 3],
                      "top_r": [1], "probe_tasks": 30, "probe_shots": 10, "probe_val": 20, "star_samples": 100,
                      "bootstrap": 10, "shots": [1, 5, 20], "draws": 5}}


@pytest.fixture(scope="module")
def small_run():
    return run(SMALL).results


def _rows(results, quantity, **context):
    rows = results[results.quantity == quantity]
    for key, value in context.items():
        rows = rows[rows[key] == value]
    return rows


def test_the_links_add_up_to_the_total(small_run):
    """link_total = link_pretrain_gap + link_interface + link_adapt_excess and L_adapt = L̂_adapt +
    link_adapt_gap, value by value. Each value is a difference of means of at most 2·10⁴ numbers of
    size ≤ 10 (losses of margins ≤ 2R² here), so two computations of one number differ by at most a few
    roundings of such sums: n·ε·Σ|x|/n ≤ 2·10⁴·ε·10 ≈ 4.4e-11."""
    tolerance = 2e4 * EPS * 10
    results = small_run
    for step in results.step.unique():
        at = results[results.step == step]
        gap = float(_rows(at, "link_pretrain_gap").value.iloc[0])
        assert gap == pytest.approx(float(_rows(at, "L_pre").value.iloc[0]) - float(_rows(at, "L_pre_train").value.iloc[0]),
                                    abs=tolerance)
        totals = _rows(at, "link_total")
        assert len(totals) == 2 * 3  # two adapters × three shots values (one view)
        for _, total in totals.iterrows():
            adapter, shots, split = total.adapter, total.shots, total.split
            interface = float(_rows(at, "link_interface", adapter=adapter, split=split).value.iloc[0])
            excess = float(_rows(at, "link_adapt_excess", adapter=adapter, shots=shots, split=split).value.iloc[0])
            assert total.value == pytest.approx(gap + interface + excess, abs=tolerance)
            l_adapt = _rows(at, "L_adapt", adapter=adapter, shots=shots, split=split, task_classes=2)
            l_train = _rows(at, "L_adapt_train", adapter=adapter, shots=shots, task_classes=2)
            l_gap = _rows(at, "link_adapt_gap", adapter=adapter, shots=shots, split=split, task_classes=2)
            assert float(l_adapt.value.iloc[0]) == pytest.approx(
                float(l_train.value.iloc[0]) + float(l_gap.value.iloc[0]), abs=tolerance)
            star = _rows(at, "L_adapt_star", adapter=adapter, split=split)
            assert excess == pytest.approx(float(l_adapt.value.iloc[0]) - float(star.value.iloc[0]), abs=tolerance)


def test_the_best_fit_is_no_worse_than_the_few_shot_fits(small_run):
    """L*_adapt ≤ L_adapt within the interval, for every adapter and shots value: the interval of
    L_adapt − L*_adapt never lies entirely below 0."""
    excess = _rows(small_run, "link_adapt_excess")
    assert len(excess) == 2 * 2 * 3  # two checkpoints × two adapters × three shots values
    assert (excess.upper >= 0).all(), excess[["adapter", "shots", "value", "lower", "upper"]]


def test_more_shots_fit_better(small_run):
    """A probe fitted on 20 points per class has a lower test loss than one fitted on 1, and the mean
    classifier's μ̂ from 20 points classifies better than from 1: large effects for the trained encoder
    (final checkpoint; about 5 and 3 half-widths here), asserted through the intervals."""
    final = small_run[small_run.step == small_run.step.max()]
    one = _rows(final, "L_adapt", adapter="linear", shots=1, task_classes=2).iloc[0]
    twenty = _rows(final, "L_adapt", adapter="linear", shots=20, task_classes=2).iloc[0]
    assert twenty.upper < one.lower
    one = _rows(final, "acc_avg", adapter="mean", shots=1, task_classes=2).iloc[0]
    twenty = _rows(final, "acc_avg", adapter="mean", shots=20, task_classes=2).iloc[0]
    assert one.upper < twenty.lower


def test_the_rows_carry_their_context(small_run):
    results = small_run
    assert set(_rows(results, "L_adapt_train").split) == {"train"}
    assert set(_rows(results, "L_adapt").shots) == {1, 5, 20}
    assert set(_rows(results, "L_adapt").task_classes) == {2, 3}
    assert _rows(results, "L_adapt_star").shots.isna().all()
    chosen = _rows(results, "chosen_penalty")
    assert set(chosen.adapter) == {"linear"} and (chosen.method == "chosen").all()
    assert (chosen.lower <= chosen.value).all() and (chosen.value <= chosen.upper).all()
    # L_sup is the linear adapter's L*_adapt (the same estimate, reported under both names)
    sup = _rows(results, "L_sup").set_index("step").value
    star = _rows(results, "L_adapt_star", adapter="linear").set_index("step").value
    assert sup.equals(star)


def test_shots_schedule_and_draws():
    assert shots_schedule(EvaluateConfig(probe_shots=7)) == [(7, 1)]
    assert shots_schedule(EvaluateConfig(shots=[10, 2, 2], draws=6)) == [(2, 6), (10, 6)]
    with pytest.raises(ValueError, match="draws"):
        EvaluateConfig(shots=[1], draws=4)


@pytest.mark.parametrize("evaluate, message", [
    ({"adapters": [{"kind": "nope"}]}, "evaluate.adapters.0.kind: got 'nope'; allowed: finetune, linear, lpft, mean"),
    ({"adapters": [{"kind": "mean"}, {"kind": "mean"}]}, "evaluate.adapters: two adapters are labelled 'mean'"),
    ({"adapters": [{"kind": "mean"}, {"kind": "finetune", "c0": -1}]},
     "evaluate.adapters.1.c0: got -1; c0 must be a number ≥ 0, or null for no constraint"),
    ({"adapters": [{"kind": "linear", "penalties": [-1.0]}]},
     "evaluate.adapters.0.penalties: got [-1.0]; penalties must be a non-empty list of values ≥ 0"),
    ({"adapters": [{"kind": "mean", "colour": 1}]}, "evaluate.adapters.0.colour: unknown field of adapter kind 'mean'"),
    ({"shots": [0]}, "evaluate.shots: got [0]; shots must be ≥ 1"),
    ({"shots": [1990]}, "evaluate.shots: got 1990; allowed: 1..1950"),
    ({"shots": [5], "draws": 2}, "evaluate.draws: got 2; input should be greater than or equal to 5"),
])
def test_bad_adapter_configs_are_one_line(evaluate, message):
    with pytest.raises(ConfigError) as failure:
        parse_config({"world": {"kind": "gaussian", "classes": 4, "dim": 4}, "evaluate": evaluate})
    text = str(failure.value)
    assert message in text and "\n" not in text


@pytest.mark.parametrize("world, task, message", [
    ({"kind": "gaussian", "classes": 4, "dim": 4}, {"kind": "subspace", "rank": 9},
     "task.rank: got 9; allowed: 1..4 (the world's input dimension)"),
    ({"kind": "finite", "dataset": "digits"}, {"kind": "subspace", "rank": 2},
     "task.kind: subspace needs vector inputs (shape (d,)); the world's inputs have shape (1, 8, 8)"),
    ({"kind": "gaussian", "classes": 4, "dim": 4}, {"kind": "rotate"}, "task.kind: got 'rotate'; allowed: compose, covariate, hierarchy, prior, subspace, unseen"),
])
def test_a_task_the_world_cannot_take_is_one_line(world, task, message):
    with pytest.raises(ConfigError) as failure:
        parse_config({"world": world, "task": task})
    assert str(failure.value) == message


def test_fine_tuning_on_a_finite_world_with_a_subspace_task():
    """The whole path on a world of finite vector examples: split views of the projected id view,
    example ids (clustered intervals, n = distinct held-out examples), inputs kept for fine-tuning, and
    L_sup still of the world's own tasks."""
    import numpy as np

    import preadapt
    from preadapt.encoders import ENCODERS

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 60)
    inputs = rng.normal(scale=2.0, size=(4, 6))[labels] + rng.normal(size=(240, 6))
    world = preadapt.FiniteWorld.from_arrays(torch.tensor(inputs), labels, generator=torch.Generator().manual_seed(1))
    encoder = ENCODERS.build(ENCODERS.parse({"kind": "linear", "out_dim": 3}), (6,), torch.Generator().manual_seed(2))
    results = preadapt.evaluate(encoder.double(), world, {
        "samples": 300, "mean_samples": 20, "test_per_class": 10, "task_classes": [2], "top_r": [1], "probe_tasks": 6,
        "probe_shots": 5, "probe_val": 5, "star_samples": 10, "bootstrap": 10,
        "adapters": [{"kind": "linear"}, {"kind": "finetune", "optimizer": "sgd", "max_steps": 5, "eval_every": 5}]},
        task={"kind": "subspace", "rank": 2})
    l_adapt = _rows(results, "L_adapt")
    assert set(zip(l_adapt.adapter, l_adapt.split)) == {(a, s) for a in ("linear", "finetune") for s in ("id", "ood")}
    assert (l_adapt.method == "cluster").all() and (l_adapt.n <= 240).all()  # distinct held-out examples
    assert _rows(results, "L_sup").split.tolist() == ["test"]
    outside = float(_rows(results, "distortion_outside").value.iloc[0])
    inside = float(_rows(results, "distortion_inside").value.iloc[0])
    # float64 inputs projected in float64: off S by ≲ 8·d·ε·‖x‖, so the change outside S is rounding
    assert outside < 1e-10 < inside


def test_shots_beyond_a_finite_train_split_are_refused():
    import numpy as np

    import preadapt
    from preadapt.encoders import IdentityEncoder

    labels = np.repeat(np.arange(3), 30)  # 70% of 30 = 21 train examples per class
    world = preadapt.FiniteWorld.from_arrays(torch.randn(90, 4, generator=torch.Generator().manual_seed(0)), labels,
                                             generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match=r"evaluate.shots: got 25; allowed: 1..\d+ \(the smallest class of the train"):
        preadapt.evaluate(IdentityEncoder(), world, {"samples": 100, "mean_samples": 40, "test_per_class": 5,
                                                     "task_classes": [2], "top_r": [1], "probe_tasks": 2,
                                                     "probe_shots": 5, "probe_val": 5, "star_samples": 5,
                                                     "bootstrap": 10, "shots": [25]})


def test_few_shot_top_r_is_the_mean_over_disjoint_draws_of_single_fits():
    """μ-5 on the full problem: the value is the mean over the disjoint draws of what a single fit on each
    draw gives (the mean classifier is deterministic, so each draw's fit is reproduced exactly), the
    interval is over the test points (n = their number), and the probe's own shot count is left to the
    single fit. Tolerance: the two sides average the same 0/1 hits in another order, float64 rounding
    of a mean of ≤ 120 terms, far below 1e-12."""
    from torch import nn

    from preadapt.estimate.adaptation import Drawn, few_shot_full_problem, full_problem_measurements
    from preadapt.estimate.quantities import build_adapters
    from preadapt.estimate.spec import EvaluateConfig
    from preadapt.objectives.losses import LOSSES

    config = EvaluateConfig(shots=[5, 20], draws=5, probe_shots=20, probe_val=10, mean_samples=60, top_r=[1, 2],
                            task_classes=[2], probe_tasks=4, star_samples=10)
    g = torch.Generator().manual_seed(0)
    classes, dim = 4, 3
    centers = 1.5 * torch.randn(classes, dim, generator=g, dtype=torch.float64)
    pool = centers[None, :, None] + torch.randn(1, classes, 60, dim, generator=g, dtype=torch.float64)
    validation = centers[None, :, None] + torch.randn(1, classes, 10, dim, generator=g, dtype=torch.float64)
    test_y = torch.arange(classes).repeat_interleave(30)
    test = centers[test_y] + torch.randn(len(test_y), dim, generator=g, dtype=torch.float64)
    adapters = [spec for spec in build_adapters(config) if spec.label == "mean"]
    args = (Drawn(validation, None, None), Drawn(test[None, None], None, None), test_y, pool[0].mean(1), config, 0,
            LOSSES["logistic"], None, "cpu")
    rows = few_shot_full_problem(nn.Identity(), adapters, Drawn(pool, None, None), *args)
    assert {(m.context["shots"], m.context["top_r"]) for m in rows} == {(5, 1), (5, 2)}  # 20 is the single fit's
    for row in rows:
        singles = [m.estimate.value for draw in range(5)
                   for m in full_problem_measurements(nn.Identity(), adapters, Drawn(pool, None, None).part(5 * draw, 5 * draw + 5),
                                                      *args)
                   if m.context["top_r"] == row.context["top_r"]]
        assert len(singles) == 5 and abs(row.estimate.value - sum(singles) / 5) < 1e-12
        assert row.estimate.n == len(test_y) and row.estimate.lower <= row.estimate.value <= row.estimate.upper
