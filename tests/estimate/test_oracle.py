"""Population estimates against independent float64 references (tests/estimate/reference.py) on a
Gaussian world with explicit means, seen through the identity encoder."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from preadapt.encoders import IdentityEncoder
from preadapt.estimate import EvaluateConfig, evaluate_encoder
from preadapt.estimate.estimate import combine
from preadapt.estimate.quantities import curl_moments, mean_classifier_moments
from preadapt.objectives import LOSSES
from preadapt.worlds import GaussianWorld, as_prior, tau

from reference import curl_reference, gaussian_expected_loss, mean_classifier_reference

MEANS = np.array([[1.0, 0.0, 0.5], [0.0, 1.2, 0.0], [-0.8, 0.3, 0.9], [0.2, -1.0, -0.6]])
NOISE = 0.6
PRIOR = as_prior({"zipf": 0.8}, 4)
Z = stats.norm.ppf(0.9995)  # two-sided 0.999: every comparison here is one of a dozen


def _world():
    return GaussianWorld(torch.tensor(MEANS), noise=NOISE, prior=PRIOR)


def _agree(estimate, reference, reference_se=0.0):
    bound = Z * math.sqrt(estimate.se**2 + reference_se**2)
    assert abs(estimate.value - reference) <= bound, (estimate, reference, bound)


def test_gaussian_expected_loss_matches_monte_carlo():
    rng = np.random.default_rng(0)
    v = 0.3 + 1.7 * rng.standard_normal(2_000_000)
    for loss, f in (("hinge", np.maximum(0, 1 - v)), ("logistic", np.logaddexp(0, -v) / math.log(2))):
        assert float(gaussian_expected_loss(loss, 0.3, 1.7)) == pytest.approx(f.mean(), abs=5 * f.std() / 1414)


def _check_curl_parts(samples, per_class, seed):
    world = _world()
    for loss in ("hinge", "logistic"):
        for i, part in enumerate((None, "same", "different")):
            generator = torch.Generator().manual_seed(seed + i)
            ours = curl_moments(IdentityEncoder(), world, samples, generator, LOSSES[loss], condition=part)
            ref, ref_se = curl_reference(MEANS, NOISE, PRIOR, loss, part or "all", per_class, seed=seed + i)
            _agree(ours.estimate(0.95), ref, ref_se)


def test_curl_loss_and_its_parts_match_the_reference():
    _check_curl_parts(samples=20_000, per_class=20_000, seed=10)


@pytest.mark.slow
def test_curl_loss_and_its_parts_match_the_reference_on_a_million_samples():
    _check_curl_parts(samples=1_000_000, per_class=100_000, seed=20)


@pytest.mark.parametrize("samples", [20_000, pytest.param(1_000_000, marks=pytest.mark.slow)])
@pytest.mark.parametrize("loss", ["hinge", "logistic"])
def test_mean_classifier_loss_matches_the_closed_form(loss, samples):
    true_means = torch.tensor(MEANS)
    ours = mean_classifier_moments(IdentityEncoder(), _world(), true_means, 2, samples,
                                   torch.Generator().manual_seed(3), LOSSES[loss]).estimate(0.95)
    _agree(ours, mean_classifier_reference(MEANS, MEANS, NOISE, PRIOR, loss))


@pytest.mark.parametrize("loss", ["hinge", "logistic"])
def test_pipeline_quantities_match_references_and_the_decomposition_holds(loss):
    config = EvaluateConfig(samples=40_000, mean_samples=500, test_per_class=50, task_classes=[2, 3], top_r=[1],
                            probe_tasks=8, probe_shots=20, probe_val=20, star_samples=100, bootstrap=20)
    evaluation = evaluate_encoder(IdentityEncoder(), _world(), config, seed=5, curl_loss_name=loss)
    # L^μ_sup uses the plug-in means μ̂: the reference is exact given them
    mu_hat = evaluation.means.numpy()
    _agree(evaluation.get("L_sup_mean", task_classes=2), mean_classifier_reference(MEANS, mu_hat, NOISE, PRIOR, loss))
    for quantity, part in (("L_un", "all"), ("L_un_same", "same"), ("L_un_diff", "different")):
        ref, ref_se = curl_reference(MEANS, NOISE, PRIOR, loss, part, 20_000, seed=7)
        _agree(evaluation.get(quantity, negatives=1), ref, ref_se)
    # L_un = τ·L_un^= + (1 − τ)·L_un^≠, each side from its own sample
    t = tau(PRIOR)
    gap = combine([(1.0, evaluation.get("L_un", negatives=1)), (-t, evaluation.get("L_un_same")),
                   (-(1 - t), evaluation.get("L_un_diff"))])
    assert abs(gap.value) <= Z * gap.se
