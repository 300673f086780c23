"""Independent float64 references for a Gaussian world seen through the identity encoder.

Written in numpy from THEORY.md, sharing no code with preadapt's torch estimators. With x ~
N(μ_c, σ²I), the margin v = xᵀ(x⁺ − x⁻) is, given x, Gaussian with mean xᵀ(μ_c − μ_c⁻) and variance
2σ²‖x‖², so E[ℓ(v) | x] has a closed form (hinge) or a Gauss–Hermite quadrature (logistic): the
references average that conditional expectation over x (Rao–Blackwell), chunk by chunk.
"""

import math

import numpy as np
from scipy import stats

NODES, WEIGHTS = np.polynomial.hermite.hermgauss(120)


def gaussian_expected_loss(loss: str, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """E ℓ(V) for V ~ N(mean, std²), elementwise (ℓ of one margin)."""
    mean, std = np.broadcast_arrays(np.asarray(mean, float), np.asarray(std, float))
    if loss == "hinge":
        a = 1.0 - mean
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(std > 0, a / np.where(std > 0, std, 1.0), 0.0)
        return np.where(std > 0, a * stats.norm.cdf(z) + std * stats.norm.pdf(z), np.maximum(a, 0.0))
    v = mean[..., None] + math.sqrt(2.0) * std[..., None] * NODES  # (..., nodes)
    return (np.logaddexp(0.0, -v) / math.log(2.0)) @ WEIGHTS / math.sqrt(math.pi)


def pair_weights(prior: np.ndarray, part: str) -> np.ndarray:
    """P(c, c⁻) for L_un (both ~ ρ), L_un^= (c = c⁻, c ~ ν ∝ ρ²) and L_un^≠ (ρ×ρ given c ≠ c⁻)."""
    weights = np.outer(prior, prior)
    if part == "same":
        weights = np.diag(np.diag(weights))
    elif part == "different":
        np.fill_diagonal(weights, 0.0)
    return weights / weights.sum()


def curl_reference(means, noise, prior, loss, part, per_class, seed, chunk=50_000):
    """(value, standard error) of L_un / L_un^= / L_un^≠ for the identity encoder, k = 1, b = 1."""
    rng = np.random.default_rng(seed)
    weights = pair_weights(prior, part)
    value, variance = 0.0, 0.0
    for c in range(len(means)):
        row = weights[c]
        if row.sum() == 0:
            continue
        h_sum, h_sq, count = 0.0, 0.0, 0
        while count < per_class:
            n = min(chunk, per_class - count)
            x = means[c] + noise * rng.standard_normal((n, means.shape[1]))
            std = math.sqrt(2.0) * noise * np.linalg.norm(x, axis=1)  # (n,)
            h = np.zeros(n)
            for other in np.nonzero(row)[0]:
                h += row[other] / row.sum() * gaussian_expected_loss(loss, x @ (means[c] - means[other]), std)
            h_sum += h.sum()
            h_sq += (h**2).sum()
            count += n
        mean_h = h_sum / count
        var_h = max(h_sq / count - mean_h**2, 0.0) * count / (count - 1)
        value += row.sum() * mean_h
        variance += row.sum() ** 2 * var_h / count
    return value, math.sqrt(variance)


def mean_classifier_reference(true_means, classifier_means, noise, prior, loss):
    """L^μ_sup over 2-class tasks drawn from ρ (label uniform on the task), exactly.

    The point x ~ N(μ_c, σ²I) is scored by the rows ``classifier_means`` (μ̂): the margin
    xᵀ(μ̂_c − μ̂_c') is Gaussian with mean μ_cᵀ(μ̂_c − μ̂_c') and std σ‖μ̂_c − μ̂_c'‖.
    """
    weights = pair_weights(prior, "different")
    total = 0.0
    for c in range(len(true_means)):
        for other in range(len(true_means)):
            if weights[c, other] == 0:
                continue
            direction = classifier_means[c] - classifier_means[other]
            total += weights[c, other] * float(gaussian_expected_loss(
                loss, true_means[c] @ direction, noise * np.linalg.norm(direction)))
    return total
