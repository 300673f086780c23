"""The conformance suite, continued (tests/test_conformance.py has worlds, encoders and objectives):
every registered adapter and task transform, and every bound statement a run checks, gets the same
checks of its contract. A registered kind without an entry in the tables below FAILS.

Checks:
- adapters (``preadapt.adapt.ADAPTERS``): ``preadapt.adapt.checks.check_adapter`` (the config
  round-trips; few-shot and L*_adapt fits score (P, n, K) finite float64; the fit ignores torch's
  global seed; the encoder is left unchanged; chosen values are floats; ``encoder_change`` as
  documented), and the config is accepted in ``evaluate.adapters``.
- task transforms (``preadapt.worlds.tasks.TASKS``): the config round-trips; every view is a world
  of at least two classes with a prior over them and the world's input shape (a transform may change
  the classes and the prior: ``prior``, ``unseen``, ``hierarchy``); the same generator seed gives
  the same views.
- bound statements (``preadapt.bounds.every_f_checks``): each check's status is the CI rule applied
  to its slack; its sides and terms are finite estimates at the stated levels; its rows are named as
  docs/quantities.md says.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from preadapt.adapt import ADAPTERS
from preadapt.adapt.checks import AdapterContractError, check_adapter
from preadapt.bounds import every_f_checks
from preadapt.bounds.check import verdict
from preadapt.encoders import ENCODERS
from preadapt.estimate import EvaluateConfig, evaluate_encoder
from preadapt.worlds import WORLDS
from preadapt.worlds.tasks import TASKS, derive_task
from test_conformance import Case, case_of, config_of, seeded

ADAPTER_CASES = {
    "mean": Case({}),
    "linear": Case({"penalties": [0.01, 0.1]}),
    "finetune": Case({"c0": 0.5, "max_steps": 6, "eval_every": 3, "lrs": [0.01]}),
    "lpft": Case({"c0": 0.5, "max_steps": 6, "eval_every": 3, "lrs": [0.01]}),
}

TASK_CASES = {
    "subspace": Case({"rank": 2}),
    "prior": Case({"prior": [4, 3, 2, 1]}),
    "unseen": Case({"fraction": 0.5, "tasks": "unseen"}),
    "covariate": Case({"severity": 0.5}),
    "hierarchy": Case({"groups": 2, "direction": "fine_to_coarse"}),
    "compose": Case({"steps": [{"kind": "unseen", "fraction": 0.25}, {"kind": "covariate", "severity": 0.5}]}),
}


def _world():
    return WORLDS.build(WORLDS.parse({"kind": "gaussian", "classes": 4, "dim": 5}), seeded(0))


@pytest.mark.parametrize("kind", ADAPTERS.names())
def test_adapter_keeps_the_contract(kind):
    case = case_of(ADAPTER_CASES, "ADAPTER_CASES", ADAPTERS, kind)
    config = config_of(ADAPTERS, kind, case)
    check_adapter(config, EvaluateConfig())
    assert EvaluateConfig(adapters=[config.model_dump()]).adapters == [config]


def test_check_adapter_catches_a_broken_adapter():
    """An adapter that reads torch's global generator breaks the contract and the check says so."""
    from preadapt.adapt import FrozenHeads, MeanAdapter

    class Noisy(MeanAdapter):
        def fit(self, task):
            heads = super().fit(task)
            return FrozenHeads(heads.weights + torch.randn(heads.weights.shape, dtype=torch.float64))

    config = ADAPTERS.parse({"kind": "mean"})
    original = ADAPTERS.entry("mean")
    ADAPTERS.register("mean", lambda config, evaluate: Noisy(), type(config))
    try:
        with pytest.raises(AdapterContractError, match="global seed"):
            check_adapter(config, EvaluateConfig())
    finally:
        ADAPTERS.register("mean", original.factory, original.params)


def test_an_unlisted_kind_fails_the_suite():
    with pytest.raises(pytest.fail.Exception, match="no entry in ADAPTER_CASES"):
        case_of({}, "ADAPTER_CASES", ADAPTERS, "mean")


@pytest.mark.parametrize("kind", TASKS.names())
def test_task_transform_gives_worlds(kind):
    """Every view (id, ood, pretrain) is a world of at least two classes with a prior over them (ρ ≥ 0,
    summing to 1, two classes positive) and the world's input shape; the same seed gives the same views."""
    case = case_of(TASK_CASES, "TASK_CASES", TASKS, kind)
    config = config_of(TASKS, kind, case)
    assert TASKS.parse(json.loads(config.model_dump_json())) == config and pickle.loads(pickle.dumps(config)) == config
    world = _world()
    views = derive_task(world, config, seeded(5))
    again = derive_task(world, config, seeded(5))
    for name in ("id", "ood", "pretrain"):
        view, twin = getattr(views, name), getattr(again, name)
        if view is None:
            assert twin is None and name != "id", name
            continue
        prior = np.asarray(view.prior)
        assert view.classes >= 2 and prior.shape == (view.classes,) and (prior >= 0).all(), name
        assert abs(prior.sum() - 1.0) < 1e-12 and np.count_nonzero(prior) >= 2, name
        labels = torch.arange(view.classes).repeat(2)
        x = view.sample(labels, seeded(6))
        assert tuple(x.shape) == (len(labels), *world.input_shape) and torch.isfinite(x.float()).all(), name
        assert torch.equal(x, twin.sample(labels, seeded(6))), name


def test_every_bound_statement_follows_the_ci_rule():
    world = _world()
    encoder = ENCODERS.build(ENCODERS.parse({"kind": "mlp", "hidden": [8], "out_dim": 3}), world.input_shape, seeded(1))
    config = EvaluateConfig(samples=600, mean_samples=40, test_per_class=10, task_classes=[2, 3], top_r=[1],
                            probe_tasks=4, probe_shots=5, probe_val=5, star_samples=10, bootstrap=10,
                            negatives=[2], block_sizes=[2])
    checks = every_f_checks(evaluate_encoder(encoder, world, config, 0), world.prior, config, "logistic")
    assert {c.name for c in checks} >= {"lemma_4_3", "jensen_floor", "lemma_4_4"}
    for check in checks:
        assert check.status == verdict(check.slack), check.name
        assert check.slack.level == config.verdict_level and check.lhs.level in (config.level, 1.0)
        for estimate in (check.lhs, check.rhs, check.slack, *check.terms.values()):
            assert np.isfinite([estimate.value, estimate.lower, estimate.upper]).all()
            assert estimate.lower <= estimate.value <= estimate.upper
        rows = check.measurements()
        assert [m.quantity for m in rows[:3]] == ["bound_lhs", "bound_rhs", "bound_slack"]
        assert all(m.quantity == "bound_term" and m.context["bound"] == check.name for m in rows[3:])
