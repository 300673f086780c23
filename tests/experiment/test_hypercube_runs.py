"""Runs on the hypercube world of [Saunshi22]: the downstream tasks come from its task world, a world
too big to enumerate its classes gives the tuple quantities on it and the adapters on the task world,
and an objective with a parameter per latent class is refused there.

The oracle encoder reads the first k coordinates, f(x) = x_{1:k} = s_{1:k}: they are never scaled, so
everything it gives has a closed form. With s, s' the first k signs of two patterns and H their Hamming
distance, f(x)ᵀf(x') = k − 2H:

- a positive shares the anchor's pattern, so the CURL margin against a negative is 2H, with
  H ~ Binomial(k, 1/2) for a negative of a uniform pattern: L_un = Σ_h C(k, h)/2^k · log2(1 + e^{−2h});
  a same-class negative has margin 0: L_un^= = log2 2 = 1 exactly, on every sample;
- a task class of the task world *is* the first k signs, so μ_c = s_c exactly and the mean classifier
  scores the true class k and any other k − 2H ≤ k − 2: every task of the task world is solved
  exactly (accuracy 1, no sampling error);
- on the pretraining world's own 2-class tasks, two distinct full patterns share their first k signs
  with probability (2^{d−k} − 1)/(2^d − 1); their means tie, and a tie is an error, so exact AVG-2
  is 1 − (2^{d−k} − 1)/(2^d − 1).
"""

import math
from fractions import Fraction

import pytest
import torch
import yaml
from torch import nn

from command_line import cli
from preadapt.experiment.config import ConfigError, parse_config
from preadapt.experiment.run import evaluate, run
from preadapt.worlds.base import MAX_ENUMERATED_CLASSES

TINY_EVALUATION = {"samples": 2000, "mean_samples": 8, "test_per_class": 8, "task_classes": [2, 3], "top_r": [1],
                   "probe_tasks": 20, "probe_shots": 4, "probe_val": 4, "star_samples": 8, "bootstrap": 10}
"""Small enough for seconds at d = 24: nothing here is sized by the 2^24 classes."""

ADAPTER_QUANTITIES = {"acc_avg", "L_adapt", "L_adapt_train", "L_adapt_star", "link_adapt_gap", "link_adapt_excess",
                      "link_interface", "link_total", "chosen_penalty"}


class FirstSigns(nn.Module):
    """f(x) = x_{1:k}: the first k coordinates, the task's, never scaled (the oracle encoder)."""

    def __init__(self, task_dim: int) -> None:
        super().__init__()
        self.task_dim = task_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (n, d) -> (n, k)
        return x[:, :self.task_dim]


def curl_loss_of_first_signs(task_dim: int) -> float:
    """L_un of ``FirstSigns`` with a uniform negative: E log2(1 + e^{−2H}), H ~ Binomial(k, 1/2)."""
    return sum(math.comb(task_dim, h) / 2**task_dim * math.log2(1.0 + math.exp(-2.0 * h)) for h in range(task_dim + 1))


def rows(results, quantity, **context):
    chosen = results[results["quantity"] == quantity]
    for column, value in context.items():
        chosen = chosen[chosen[column] == value]
    return chosen


def within_five_standard_errors(row, exact: float) -> bool:
    """|estimate − exact| ≤ 5 se, se read off the row's own t-interval at 95% (half-width / 1.96, the
    normal quantile; the t quantile at n = 2000 is 1.961): a 5-se miss has probability below 1e-6."""
    se = (float(row["upper"]) - float(row["lower"])) / (2 * 1.96)
    return abs(float(row["value"]) - exact) <= 5 * se


def test_a_small_hypercube_measures_its_classes_on_itself_and_adapts_on_its_task_world():
    dim, task_dim = 5, 2  # 32 patterns, 4 task classes
    results = evaluate(FirstSigns(task_dim), {"kind": "hypercube", "dim": dim, "task_dim": task_dim}, TINY_EVALUATION)
    # the pretraining world's own classes: the mean classifier's exact AVG-2 counts the ties of patterns
    # that share their first k signs as errors
    (avg_2,) = rows(results, "acc_avg", adapter="mean", task_classes=2, split="test").to_dict("records")
    share = Fraction(2 ** (dim - task_dim) - 1, 2**dim - 1)
    assert avg_2["value"] == pytest.approx(float(1 - share), abs=1e-12)  # an exact count: rounding only
    # the adapters' tasks are the task world's (split id), where the first k signs are the label:
    # every task is solved, by the mean classifier and by the linear probe alike
    adapted = results[results["quantity"].isin(ADAPTER_QUANTITIES) & results["shots"].notna()]  # sampled tasks
    assert set(adapted["split"]) == {"id", "train", "validation"}
    assert set(rows(results, "L_adapt_star")["split"]) == {"id"}
    accuracy = rows(results, "acc_avg", split="id")
    assert set(accuracy["adapter"]) == {"mean", "linear"} and set(accuracy["task_classes"]) == {2, 3}
    assert (accuracy["value"] == 1.0).all()
    assert rows(results, "tau")["value"].item() == 2.0**-dim


def test_a_run_on_a_small_hypercube_draws_its_tasks_from_the_task_world():
    config = {"name": "cube", "world": {"kind": "hypercube", "dim": 6, "task_dim": 2},
              "encoder": {"kind": "linear", "out_dim": 4}, "objective": {"kind": "spectral"},
              "pretrain": {"tuples": 256, "epochs": 1, "batch_size": 128, "checkpoints": [0]},
              "evaluate": {**TINY_EVALUATION, "task_classes": [2, 4]}}
    result = run(config)
    assert result.status == "finished"
    results = result.results
    # the adapters on the task world (id), the class-level quantities and Lemma 4.3 on the 64 patterns
    assert set(rows(results, "L_adapt_star")["split"]) == {"id"}
    assert set(rows(results, "acc_avg", adapter="linear")["split"]) == {"id"}
    assert set(rows(results, "acc_avg", adapter="mean")["split"]) == {"id", "test"}
    assert len(rows(results, "L_sup_mean")) and len(rows(results, "s_f"))
    assert "lemma_4_3" in set(results["bound"].dropna())
    # a task of 4 classes is as many as the task world has (2^2 first-k patterns); 5 is refused
    with pytest.raises(ConfigError, match=r"^evaluate.task_classes: got 5; allowed: 2..4 \(4 classes in the tasks "
                                          r"of world.kind hypercube, which come from its task world\)$"):
        parse_config({**config, "evaluate": {**TINY_EVALUATION, "task_classes": [2, 5]}})


def test_defaults_fit_the_task_world_and_explicit_sizes_beyond_it_are_refused():
    world = {"kind": "hypercube", "dim": 8, "task_dim": 3, "label": "majority"}  # 256 patterns, 2 task classes
    config = parse_config({"world": world})
    assert config.evaluate.task_classes == [2] and config.evaluate.top_r == [1]
    assert "evaluate.top_r [1, 5] → [1] (2 classes in the tasks of world.kind hypercube, which come from its task " \
           "world)" in config.defaults_resolved()
    parse_config({"world": world, "evaluate": {"top_r": [2]}})  # both majorities
    with pytest.raises(ConfigError, match=r"^evaluate.top_r: got 3; allowed: 1..2 .*task world\)$"):
        parse_config({"world": world, "evaluate": {"top_r": [3]}})
    with pytest.raises(ConfigError, match=r"^evaluate.top_r: got 3; allowed: 1..2 .*task world\)$"):
        evaluate(FirstSigns(3), world, {**TINY_EVALUATION, "task_classes": [2], "top_r": [3]})


def test_a_big_hypercube_gives_tuple_quantities_on_itself_and_adapters_on_its_task_world():
    dim, task_dim = 24, 3  # 2^24 patterns: far beyond MAX_ENUMERATED_CLASSES
    assert 2**dim > MAX_ENUMERATED_CLASSES
    results = evaluate(FirstSigns(task_dim), {"kind": "hypercube", "dim": dim, "task_dim": task_dim}, TINY_EVALUATION)
    measured = set(results["quantity"])
    assert {"tau", "R", "L_un", "L_un_same", "L_un_diff", "align", "uniform"} <= measured
    # nothing that needs every one of the 2^24 classes, and no bound built from them
    assert not measured & {"L_sup_mean", "s_f", "acc_top", "L_sup", "tau_k"}
    assert set(results["bound"].dropna()) == {"jensen_floor"}
    assert rows(results, "tau")["value"].item() == 2.0**-dim
    assert rows(results, "R")["value"].item() == pytest.approx(math.sqrt(task_dim), abs=1e-6)  # ±1 entries, float32
    (l_un,) = rows(results, "L_un", negatives=1).to_dict("records")
    exact = curl_loss_of_first_signs(task_dim)
    assert within_five_standard_errors(l_un, exact)
    (l_diff,) = rows(results, "L_un_diff").to_dict("records")  # L_un given c⁻ ≠ c: (L_un − τ·1)/(1 − τ)
    assert within_five_standard_errors(l_diff, (exact - 2.0**-dim) / (1 - 2.0**-dim))
    assert (rows(results, "L_un_same")["value"] == 1.0).all()  # margin 0 on every sample
    # the adapters ran on the task world (2^3 first-k patterns), where the oracle solves every task
    adapted = results[results["quantity"].isin(ADAPTER_QUANTITIES)]
    assert len(adapted) and set(adapted["split"].dropna()) <= {"id", "train", "validation"}
    accuracy = rows(results, "acc_avg")
    assert set(accuracy["split"]) == {"id"} and (accuracy["value"] == 1.0).all()
    assert set(rows(results, "L_adapt_star")["adapter"]) == {"mean", "linear"}


def test_a_run_on_a_big_hypercube_measures_l_pre_there_and_skips_the_theorems():
    config = {"name": "big-cube", "world": {"kind": "hypercube", "dim": 24, "task_dim": 5},
              "encoder": {"kind": "lookup", "out_dim": 4}, "objective": {"kind": "spectral"},
              "pretrain": {"tuples": 256, "epochs": 1, "batch_size": 128, "checkpoints": [0]},
              "evaluate": {**TINY_EVALUATION, "samples": 512}}
    result = run(config)
    assert result.status == "finished", result.error
    results = result.results
    for quantity in ("L_pre", "L_pre_train", "L_un", "L_un_same", "L_un_diff"):
        assert len(rows(results, quantity)) == 2, quantity  # at step 0 and at the last step, 2
    assert set(rows(results, "L_adapt_star")["split"]) == {"id"}
    assert set(results["bound"].dropna()) == {"jensen_floor"}  # no Lemma 4.3 nor Theorems 4.1, 4.5
    assert all(check.name == "jensen_floor" for checks in result.checks.values() for check in checks)


@pytest.mark.parametrize("where", ["config", "cli"])
def test_an_objective_with_a_parameter_per_class_is_refused_on_a_big_world(tmp_path, where):
    config = {"name": "sup", "world": {"kind": "hypercube", "dim": 13, "task_dim": 3},
              "encoder": {"kind": "linear", "out_dim": 4}, "objective": {"kind": "supervised"}}
    message = ("objective.kind: got 'supervised', which learns a parameter per latent class; the world has 8192 "
               "classes; allowed: at most 4096 classes for it (an objective without class labels: curl, infonce, "
               "spectral, ...)")
    if where == "config":
        with pytest.raises(ConfigError) as error:
            parse_config(config)
        assert str(error.value) == message
        parse_config({**config, "world": {**config["world"], "dim": 12}})  # 4096 classes: still allowed
        return
    path = tmp_path / "sup.yaml"
    path.write_text(yaml.safe_dump(config))
    result = cli("run", str(path), "--out", "out", cwd=tmp_path)  # the command line's entry point, in this process
    assert result.returncode == 2 and result.stderr.strip() == f"preadapt: {message}"
    assert not (tmp_path / "out").exists()
