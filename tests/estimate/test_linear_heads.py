"""L_sup = inf_W E[ℓ] ≤ L^μ_sup in the population: the estimate of L_sup must not exceed the
mean-classifier loss by more than their intervals allow, even on well-separated worlds where an
unpenalised fit would run off to a huge norm."""

import math

import pytest
from scipy import stats

from preadapt.encoders import IdentityEncoder
from preadapt.estimate import EvaluateConfig, evaluate_encoder
from preadapt.worlds import WORLDS
from preadapt.worlds.sampling import make_generator


@pytest.mark.parametrize("separation", [3.0, 6.0, 10.0])
def test_l_sup_is_not_above_the_mean_classifier_loss(separation):
    world = WORLDS.build(WORLDS.parse({"kind": "gaussian", "classes": 12, "dim": 8, "separation": separation,
                                       "warp": False}), make_generator(0, "world"))
    config = EvaluateConfig(samples=4000, mean_samples=500, test_per_class=100, task_classes=[2], top_r=[1],
                            probe_tasks=60, probe_shots=20, probe_val=50, sup_samples=300, bootstrap=10)
    evaluation = evaluate_encoder(IdentityEncoder(), world, config, seed=1, curl_loss_name="logistic")
    l_sup, l_mean = evaluation.get("L_sup"), evaluation.get("L_sup_mean", task_classes=2)
    excess = l_sup.value - l_mean.value
    assert excess <= stats.norm.ppf(0.9995) * math.hypot(l_sup.se, l_mean.se), (l_sup, l_mean)
