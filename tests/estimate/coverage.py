"""Shared pieces of the coverage tests (test_coverage_fresh.py, test_coverage_finite.py): a small
Gaussian world with a fixed anisotropic linear encoder, where the truth of every quantity is a closed
form or a sample 100× larger, and the acceptance rule for a coverage rate.

The encoder f(x) = A x with A = diag(2, 1, 1): Σ(f, c) = σ² A Aᵀ has a top eigenvalue 4 well apart
from the others, so s(f) = Σ_c ν_c·2σ·E‖A x‖; an isotropic encoder is the other regime of s(f),
checked on its own (``isotropic_deviation_truth``).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from scipy import special, stats

from preadapt.estimate import EvaluateConfig
from preadapt.worlds import GaussianWorld

REPLICATIONS = 200
LEVEL = 0.95
# the binomial acceptance region of a 95 % interval's coverage over 200 independent replications:
# Binomial(200, 0.95) puts 0.985 of its mass on [182, 196] (issue 10: [0.91, 0.98])
ACCEPT = (182, 196)
# The tolerance fixes the number of replications, not the other way round: with the rates [0.91, 0.98]
# of issue 10, fewer replications accept a calibrated interval less often (Binomial(n, 0.95) on
# [⌈0.91n⌉, ⌊0.98n⌋]: 0.985 at n = 200, 0.963 at 150, 0.935 at 100) and an under-covering one more
# often (coverage 0.88 accepted with 0.113 at 200, 0.127 at 150, 0.226 at 100). So a coverage test is
# made cheaper per replication (test_coverage_finite.py: the mean adapter only), never by fewer of them.
MEANS = torch.tensor([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [0.0, 1.5, 0.0], [0.0, 0.0, 1.5]])
NOISE = 1.0
SCALE = torch.tensor([2.0, 1.0, 1.0], dtype=torch.float64)

CONFIG = EvaluateConfig(samples=2000, mean_samples=300, test_per_class=100, task_classes=[2], top_r=[1],
                        probe_tasks=20, probe_shots=20, probe_val=20, star_samples=50, bootstrap=50, level=LEVEL)


class Anisotropic(torch.nn.Module):
    """f(x) = A x with A = diag(2, 1, 1) (no norm bound)."""

    norm_bound = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (n, 3) -> (n, 3)
        return x * SCALE.to(x.dtype)


def world() -> GaussianWorld:
    return GaussianWorld(MEANS, noise=NOISE)


def logistic_expectation(mean: float, sd: float) -> float:
    """E log₂(1 + e^{−v}) for v ~ N(mean, sd²), by 120-point Gauss–Hermite quadrature (exact to ~1e-12
    for this smooth integrand)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(120)
    v = mean + sd * nodes
    return float((weights * np.logaddexp(0.0, -v) / math.log(2.0)).sum() / math.sqrt(2.0 * math.pi))


def pairwise_margin_mean(rows: np.ndarray, statistic) -> float:
    """The mean over ordered class pairs (a, b), a ≠ b (uniform ρ), of ``statistic(mean, sd)`` of the
    margin f(x)ᵀ(rows_a − rows_b) for x of class a: a normal variable, with mean (Aμ_a)ᵀ(rows_a − rows_b)
    and sd σ‖A(rows_a − rows_b)‖ for f(x) = A x, x ~ N(μ_a, σ²I)."""
    scale = SCALE.numpy()
    means_f = MEANS.double().numpy() * scale
    C = len(means_f)
    gaps = [(a, rows[a] - rows[b]) for a in range(C) for b in range(C) if a != b]
    values = [statistic(float(means_f[a] @ gap), NOISE * float(np.linalg.norm(scale * gap))) for a, gap in gaps]
    return float(np.mean(values))


def mean_classifier_truth() -> float:
    """L^μ_sup of 2-class tasks with the *true* means μ_c = Aμ of f, exact (logistic ℓ of a normal margin)."""
    return pairwise_margin_mean(MEANS.double().numpy() * SCALE.numpy(), logistic_expectation)


def avg2_truth(means_hat: np.ndarray) -> float:
    """The population AVG-2 of the mean classifier with rows ``means_hat`` (a fixed classifier; its
    interval is conditional on them): x of class a beats b iff its margin is > 0, probability Φ(mean/sd)."""
    return pairwise_margin_mean(means_hat, lambda mean, sd: stats.norm.cdf(mean / sd))


def deviation_truth(samples: int = 2_000_000) -> float:
    """s(f) for f = A x: ‖Σ(f, c)‖₂ = (2σ)² for every class and E‖A x‖ by a large sample (its standard
    error, about 1e-3 of the value at this size, is far inside the tested intervals)."""
    generator = torch.Generator().manual_seed(99)
    norms = [(MEANS[c].double() * SCALE + NOISE * SCALE * torch.randn(samples, 3, generator=generator,
                                                                        dtype=torch.float64)).norm(dim=1).mean()
             for c in range(len(MEANS))]
    return float(2.0 * NOISE * torch.stack(norms).mean())


def isotropic_deviation_truth(means: np.ndarray, noise: float) -> float:
    """s(f) of the identity on N(μ_c, σ²I) (uniform ρ), closed form: ‖Σ‖₂ = σ² and E‖x‖ is the mean of
    a noncentral chi distribution, σ·sqrt(π/2)·L_{1/2}^{(d/2 − 1)}(−‖μ_c‖²/(2σ²))."""
    d = means.shape[1]
    norms = [noise * math.sqrt(math.pi / 2.0) * special.eval_genlaguerre(0.5, d / 2.0 - 1.0,
                                                                       -float(mu @ mu) / (2.0 * noise**2))
             for mu in means]
    return float(noise * np.mean(norms))


@functools.cache
def population_truths() -> dict[str, float]:
    """The population values of the quantities without a closed form (L_un and its parts, and L_sup's
    procedure), from one evaluation with 100× the samples, tasks and 10× the test points."""
    from preadapt.estimate import evaluate_encoder

    big = CONFIG.model_copy(update=dict(samples=100 * CONFIG.samples, probe_tasks=100 * CONFIG.probe_tasks,
                                        test_per_class=10 * CONFIG.test_per_class, bootstrap=10))
    evaluation = evaluate_encoder(Anisotropic(), world(), big, seed=10_000)
    truth = {"L_un": evaluation.get("L_un", negatives=1).value, "L_un_same": evaluation.get("L_un_same").value,
             "L_un_diff": evaluation.get("L_un_diff").value, "L_sup": evaluation.get("L_sup").value}
    truth["L_sup_mean"] = mean_classifier_truth()
    truth["s_f"] = deviation_truth()
    return truth


def covered(estimate, truth: float) -> bool:
    return estimate.lower <= truth <= estimate.upper


def assert_coverage(hits: dict[str, int], replications: int = REPLICATIONS, accept: tuple[int, int] = ACCEPT) -> None:
    low, high = accept
    rates = {name: count / replications for name, count in hits.items()}
    print(f"coverage over {replications} replications: {rates}")  # the table of docs/quantities.md (pytest -s)
    outside = {name: rate for name, rate in rates.items() if not low <= hits[name] <= high}
    assert not outside, f"coverage outside [{low / replications}, {high / replications}]: {outside} (all: {rates})"
