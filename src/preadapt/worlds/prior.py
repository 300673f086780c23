"""Class priors ρ and the exact quantities they determine ([Arora19], THEORY.md section 2)."""

from __future__ import annotations

import numpy as np


def check_prior_spec(prior):
    """Validate a config's prior (uniform, {zipf: exponent} or a list of weights); return it unchanged.

    >>> check_prior_spec([1.0, 0.0])
    [1.0, 0.0]
    """
    if isinstance(prior, dict) and prior.get("zipf", 0.0) < 0:
        raise ValueError("zipf exponent must be ≥ 0")
    if isinstance(prior, list) and (any(w < 0 for w in prior) or sum(prior) <= 0):
        raise ValueError("prior weights must be ≥ 0 and not all zero")
    return prior


def as_prior(prior, classes: int) -> np.ndarray:
    """A prior as a float64 probability vector of length ``classes``.

    ``prior`` is ``"uniform"``, ``{"zipf": exponent}`` (ρ(c) ∝ (c+1)^−exponent) or a list of
    non-negative weights (normalised here).

    >>> as_prior({"zipf": 1.0}, 3).round(4)
    array([0.5455, 0.2727, 0.1818])
    """
    if isinstance(prior, str):
        if prior != "uniform":
            raise ValueError(f"prior must be 'uniform', {{zipf: exponent}} or a list; got {prior!r}")
        weights = np.ones(classes)
    elif isinstance(prior, dict):
        if set(prior) != {"zipf"}:
            raise ValueError(f"prior must be 'uniform', {{zipf: exponent}} or a list; got {prior!r}")
        weights = np.arange(1, classes + 1, dtype=np.float64) ** (-float(prior["zipf"]))
    else:
        weights = np.asarray(prior, dtype=np.float64)
        if weights.shape != (classes,):
            raise ValueError(f"prior has {weights.size} weights; expected one per class ({classes})")
        if np.any(weights < 0) or not np.isfinite(weights).all() or weights.sum() <= 0:
            raise ValueError("prior weights must be finite, non-negative and not all zero")
    return weights / weights.sum()


def uniform_prior(classes: int) -> np.ndarray:
    """ρ(c) = 1/|C| for every class, as a read-only float64 view of one number (stride 0): O(1) memory
    whatever |C| (a hypercube world's 2^24 sign patterns would take 128 MB as an array). The samplers
    and the exact quantities here recognise it (``is_implicit_uniform``) and never read its entries.

    >>> prior = uniform_prior(2**24)
    >>> prior.shape, float(prior[123]) == 2.0**-24, is_implicit_uniform(prior), is_implicit_uniform(np.full(4, 0.25))
    ((16777216,), True, True, False)
    """
    return np.broadcast_to(np.float64(1.0 / classes), (classes,))


def is_implicit_uniform(prior) -> bool:
    """Whether ``prior`` is a ``uniform_prior`` view: a 1-d array of stride 0, which is constant, so a
    distribution only when uniform. An ordinary array, uniform or not, is not one (its entries are read)."""
    return isinstance(prior, np.ndarray) and prior.ndim == 1 and prior.strides == (0,)


def positive_classes(prior) -> int:
    """The number of classes of positive prior (every class of a ``uniform_prior``, without reading it).

    >>> positive_classes(np.array([0.5, 0.0, 0.5])), positive_classes(uniform_prior(2**24))
    (2, 16777216)
    """
    if is_implicit_uniform(prior):
        return int(prior.shape[0])
    return int(np.count_nonzero(prior))


def tau(prior: np.ndarray) -> float:
    """τ = P(c = c⁻) = Σ_c ρ(c)² ([Arora19]); 1/|C| for a uniform prior (exactly so, without reading
    its entries, for a ``uniform_prior``).

    >>> tau(np.full(4, 0.25)), tau(uniform_prior(2**24)) == 2.0**-24
    (0.25, True)
    """
    if is_implicit_uniform(prior):
        return 1.0 / prior.shape[0]
    return float(np.sum(np.asarray(prior, dtype=np.float64) ** 2))


def tau_k(prior: np.ndarray, negatives: int) -> float:
    """τ_k = P(c ∈ {c⁻_1..c⁻_k}) = 1 − Σ_c ρ(c)(1 − ρ(c))^k for k = ``negatives``; for a
    ``uniform_prior`` of |C| classes, 1 − (1 − 1/|C|)^k.

    >>> round(tau_k(np.full(4, 0.25), 1), 12) == tau(np.full(4, 0.25))
    True
    >>> round(tau_k(uniform_prior(4), 3), 12) == round(tau_k(np.full(4, 0.25), 3), 12)
    True
    """
    if is_implicit_uniform(prior):
        return float(1.0 - (1.0 - 1.0 / prior.shape[0]) ** negatives)
    prior = np.asarray(prior, dtype=np.float64)
    return float(1.0 - np.sum(prior * (1.0 - prior) ** negatives))


def collision_prior(prior: np.ndarray) -> np.ndarray:
    """ν(c) ∝ ρ(c)²: the class distribution of a similar pair whose negative shares its class (a
    ``uniform_prior`` is its own: ν = ρ when ρ is uniform)."""
    if is_implicit_uniform(prior):
        return prior
    squared = np.asarray(prior, dtype=np.float64) ** 2
    return squared / squared.sum()


def elementary_symmetric(weights: np.ndarray, order: int) -> np.ndarray:
    """e_0..e_order of ``weights: (..., C)`` along the last axis, by the O(C · order) recursion.

    Returns ``(..., order + 1)`` with e_0 = 1. P(T) ∝ Π_{c∈T} ρ(c) over k-subsets T has
    normaliser e_k(ρ) (THEORY.md section 4).

    >>> elementary_symmetric(np.array([1.0, 2.0, 3.0]), 3)
    array([ 1.,  6., 11.,  6.])
    """
    weights = np.asarray(weights, dtype=np.float64)
    e = np.zeros(weights.shape[:-1] + (order + 1,))
    e[..., 0] = 1.0
    for c in range(weights.shape[-1]):
        w = weights[..., c : c + 1]
        e[..., 1:] = e[..., 1:] + w * e[..., :-1]
    return e
