"""Lemma 4.3 of [Arora19] holds for every f: it must never come out "violated" (a violation is a
bug), and a deliberately wrong right side must (a check that cannot fail proves nothing)."""

import numpy as np
import pytest
import torch

from preadapt.bounds import jensen_floor, lemma_4_3, lemma_4_4, mean_classifier_below_different_class_loss, verdict
from preadapt.encoders import ENCODERS, IdentityEncoder
from preadapt.estimate import Estimate, EvaluateConfig, evaluate_encoder
from preadapt.worlds import WORLDS, GaussianWorld, tau
from preadapt.worlds.sampling import make_generator

SMALL = EvaluateConfig(samples=4000, mean_samples=400, test_per_class=20, task_classes=[2], top_r=[1],
                       probe_tasks=4, probe_shots=10, probe_val=10, star_samples=50, bootstrap=10)


class Scaled(torch.nn.Module):
    """f = scale · g: small scales make every margin small and Lemma 4.3 nearly tight."""

    def __init__(self, inner, scale):
        super().__init__()
        self.inner, self.scale = inner, scale

    def forward(self, x):
        return self.scale * self.inner(x)


def _check(encoder, world, loss="logistic", seed=0, shift=0.0, config=SMALL):
    return _checks(encoder, world, loss, seed, shift, config)[0]


def _checks(encoder, world, loss="logistic", seed=0, shift=0.0, config=SMALL):
    """Every statement that holds for every f: Lemma 4.3, its finer step L^μ_sup ≤ L_un^≠, the floor,
    Lemma 4.4."""
    evaluation = evaluate_encoder(encoder, world, config, seed, curl_loss_name=loss)
    levels = dict(level=config.level, verdict_level=config.verdict_level, rhs_shift=shift)
    return [lemma_4_3(evaluation, tau(world.prior), **levels),
            mean_classifier_below_different_class_loss(evaluation, **levels), jensen_floor(evaluation, **levels),
            lemma_4_4(evaluation, loss, **levels)]


def test_status_rule_on_constructed_estimates():
    def slack(lower, upper):
        return Estimate(0.5 * (lower + upper), lower, upper, 100, 0.999, "normal")

    assert verdict(slack(0.01, 0.2)) == "holds"
    assert verdict(slack(-1e-12, 0.0)) == "holds"  # an exact tie within tolerance
    assert verdict(slack(-0.2, -0.01)) == "violated"
    assert verdict(slack(-0.2, 0.01)) == "inconclusive"


def _random_case(seed):
    rng = np.random.default_rng(seed)
    world_config = WORLDS.parse({
        "kind": "gaussian", "classes": int(rng.integers(2, 12)), "dim": int(rng.integers(2, 10)),
        "noise": float(rng.uniform(0.2, 2.0)), "separation": float(rng.uniform(0.5, 5.0)),
        "prior": ["uniform", {"zipf": float(rng.uniform(0.2, 2.0))}][int(rng.integers(2))],
        "warp": bool(rng.integers(2)),
    })
    world = WORLDS.build(world_config, make_generator(seed, "world"))
    encoder_config = ENCODERS.parse({
        "kind": "mlp", "hidden": [int(rng.integers(4, 64))], "out_dim": int(rng.integers(2, 16)),
        "norm_bound": float(rng.choice([0.5, 2.0, 5.0, 20.0])),
    })
    encoder = ENCODERS.build(encoder_config, world.input_shape, make_generator(seed, "encoder"))
    scale = float(rng.choice([1e-4, 1e-3, 0.1, 1.0, 10.0]))  # rescaled encoders, near-collapsed included
    return world, Scaled(encoder, scale), ["hinge", "logistic"][int(rng.integers(2))]


@pytest.mark.parametrize("seed", range(20))
def test_lemma_4_3_is_never_violated_by_untrained_mlps_on_random_worlds(seed):
    world, encoder, loss = _random_case(seed)
    for check in _checks(encoder, world, loss, seed=seed):
        assert check.status != "violated", check
        assert check.slack.level == SMALL.verdict_level


def test_constant_encoder_makes_lemma_4_3_an_exact_equality():
    world = GaussianWorld(torch.randn(5, 3, generator=torch.Generator().manual_seed(0)), noise=1.0)
    constant = Scaled(IdentityEncoder(), 0.0)
    for check in _checks(constant, world, "hinge"):
        assert check.lhs.value == pytest.approx(check.rhs.value)  # 1 = 1 (Lemma 4.4: 0 = 0)
        # exact, not just close: f = 0 makes every hinge loss max(0, 1 − 0) = 1 and every paired
        # difference 0 with exact operations, means of 0s and 1s are exact, and −r + r·1 = 0
        assert check.slack.value == 0.0 and check.status == "holds"


@pytest.mark.parametrize("loss", ["hinge", "logistic"])
def test_a_wrong_right_side_is_reported_violated(loss):
    # near-collapsed features: the true slack is O(scale²), far below 0.05
    world = GaussianWorld(torch.randn(6, 4, generator=torch.Generator().manual_seed(1)), noise=1.0)
    encoder = Scaled(IdentityEncoder(), 0.05)
    for honest, wrong in zip(_checks(encoder, world, loss), _checks(encoder, world, loss, shift=-0.05)):
        assert honest.status != "violated"
        assert honest.slack.upper < 0.05
        assert wrong.status == "violated", wrong
        assert wrong.slack.value == pytest.approx(honest.slack.value - 0.05)


@pytest.mark.parametrize("loss", ["hinge", "logistic"])
def test_nearly_collapsed_encoders_are_never_violated(loss):
    # slack of order 1e-9: the interval must keep its width instead of collapsing to a point
    world = GaussianWorld(torch.randn(6, 4, generator=torch.Generator().manual_seed(1)), noise=1.0)
    for seed in range(5):
        for check in _checks(Scaled(IdentityEncoder(), 1e-4), world, loss, seed=seed):
            assert check.status != "violated", check


@pytest.mark.slow
def test_the_slack_interval_accounts_for_the_plug_in_means():
    """With few points per class behind μ̂ (m = 100) and many samples (S = 20000), μ̂'s error
    dominates. In hinge's linear region (margins ≪ 1) Lemma 4.3 is an equality, so slack / se is
    centred on 0 with unit spread when the interval is honest; ignoring μ̂ made the spread ≈ 3."""
    world = GaussianWorld(torch.randn(6, 4, generator=torch.Generator().manual_seed(1)), noise=1.0)
    config = SMALL.model_copy(update={"samples": 20000, "mean_samples": 100})
    z = []
    for seed in range(20):
        check = _check(Scaled(IdentityEncoder(), 0.05), world, "hinge", seed=seed, config=config)
        assert check.status != "violated", check
        z.append(check.slack.value / check.slack.se)
    # sd of 20 standard normals exceeds 1.5 with probability < 1e-3
    assert np.std(z) < 1.5, z
