"""Hinge-loss heads against exact oracles: linear and quadratic programs solved by scipy.

Per task, with point weights ω_i (1/n) and penalty λ, the penalised hinge problem is
    min_θ Σ_i ω_i max(0, max_{j≠y_i} 1 − (θ_{y_i} − θ_j)·x_i) + λ/2·‖θ_W‖²,
x_i with a last 1 when there is an intercept (unpenalised). With slacks ξ_i ≥ 0,
ξ_i ≥ 1 − (θ_{y_i} − θ_j)·x_i it is a linear program for λ = 0 (HiGHS solves it exactly, up to its
feasibility tolerance 1e-7) and a quadratic program for λ > 0 (SLSQP, an SQP method, solves a
small one to rounding). Every oracle's θ is scored with our own exact objective, so an inaccurate
oracle can only loosen a comparison, never fail it falsely.
"""

import math

import numpy as np
import pytest
import scipy.optimize
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from preadapt.adapt import linear
from preadapt.adapt.linear import fit_linear_heads, linear_head_losses
from preadapt.adapt.mean_classifier import MeanClassifier
from preadapt.objectives.losses import hinge

# Our objective and an oracle's, both float64 means of n ≤ 1000 terms of size O(1): each is within
# n·2⁻⁵³ ≈ 1e-13 of its exact value. Where the fit is exact, it may exceed the oracle by that much.
ROUNDING = 1e-12


def gaussian_tasks(seed, tasks=3, num_classes=2, train=30, dim=3, separation=1.0):
    """P tasks of K Gaussian classes: features (P, n, d) float64, labels (P, n)."""
    g = torch.Generator().manual_seed(seed)
    means = separation * torch.randn(tasks, num_classes, dim, generator=g, dtype=torch.float64)
    labels = torch.randint(0, num_classes, (tasks, train), generator=g)
    noise = torch.randn(tasks, train, dim, generator=g, dtype=torch.float64)
    return noise + torch.gather(means, 1, labels.unsqueeze(-1).expand(-1, -1, dim)), labels


def objective(X, y, weights, intercepts, penalty):
    """The exact penalised hinge objective per task: (P,)."""
    losses = linear_head_losses(X, y, weights, intercepts, loss=hinge).mean(-1)
    return losses + 0.5 * penalty * weights.square().sum(dim=(-1, -2))


def slack_program(X, y, num_classes, bias):
    """The constraints A z ≤ −1 of ξ_i ≥ 1 − (θ_{y_i} − θ_j)·x_i over z = (θ (K·w), ξ (n)), and w."""
    x = np.hstack([X, np.ones((len(X), 1))]) if bias else X
    n, width = x.shape
    rows = []
    for i in range(n):
        for j in range(num_classes):
            if j != y[i]:
                row = np.zeros(num_classes * width + n)
                row[y[i] * width:(y[i] + 1) * width] -= x[i]
                row[j * width:(j + 1) * width] += x[i]
                row[num_classes * width + i] = -1.0
                rows.append(row)
    return np.array(rows), width


def lp_oracle(X, y, num_classes, bias):
    """The unpenalised problem as an LP (HiGHS): θ (K, w) and the LP's optimal value."""
    A, width = slack_program(X, y, num_classes, bias)
    n, size = len(X), num_classes * width
    cost = np.r_[np.zeros(size), np.full(n, 1.0 / n)]
    bounds = [(None, None)] * size + [(0, None)] * n
    result = scipy.optimize.linprog(cost, A_ub=A, b_ub=-np.ones(len(A)), bounds=bounds, method="highs")
    assert result.status == 0, result.message
    return torch.tensor(result.x[:size].reshape(num_classes, width)), result.fun


def qp_oracle(X, y, num_classes, bias, penalty):
    """The penalised problem as a QP (SLSQP from θ = 0, ξ = 1): θ (K, w)."""
    A, width = slack_program(X, y, num_classes, bias)
    n, size, dim = len(X), num_classes * width, X.shape[1]
    penalised = np.zeros(size)
    for k in range(num_classes):
        penalised[k * width:k * width + dim] = 1.0

    def value_and_gradient(z):
        theta = z[:size]
        value = z[size:].sum() / n + penalty / 2 * (penalised * theta**2).sum()
        return value, np.r_[penalty * penalised * theta, np.full(n, 1.0 / n)]

    constraints = [{"type": "ineq", "fun": lambda z: -1.0 - A @ z, "jac": lambda z: -A}]
    bounds = [(None, None)] * size + [(0, None)] * n
    result = scipy.optimize.minimize(value_and_gradient, np.r_[np.zeros(size), np.ones(n)], jac=True,
                                     method="SLSQP", constraints=constraints, bounds=bounds,
                                     options={"ftol": 1e-13, "maxiter": 1000})
    return torch.tensor(result.x[:size].reshape(num_classes, width))  # however it stopped: it is scored


def oracle_objective(X, y, theta, bias, penalty):
    """The exact objective of an oracle's θ ``(K, w)`` on one task ``X: (n, d)``, ``y: (n,)``."""
    dim = X.shape[-1]
    intercepts = theta[None, :, dim] if bias else None
    return float(objective(X[None], y[None], theta[None, :, :dim], intercepts, penalty))


@settings(max_examples=50, deadline=None, derandomize=True, database=None)
@given(wrong=st.integers(1, 5), smoothing=st.sampled_from([1.0, 0.1, 1e-3, 1e-8]), seed=st.integers(0, 2**16))
def test_smoothed_hinge_brackets_the_hinge(wrong, smoothing, seed):
    # ℓ ≤ ℓ_η ≤ ℓ + η·ln K: a soft maximum of K numbers lies between their maximum and it plus η·ln K.
    g = torch.Generator().manual_seed(seed)
    margins = 3.0 * torch.randn(20, wrong, generator=g, dtype=torch.float64)
    margins[:5] = 1.0  # every piece tied: the upper bound is reached
    gap = linear._smoothed_hinge(margins, smoothing) - hinge(margins)
    assert bool((gap >= -ROUNDING).all())
    assert bool((gap <= smoothing * math.log(wrong + 1) + ROUNDING).all())


@pytest.mark.parametrize("num_classes,bias", [(2, False), (3, False), (2, True), (3, True)])
def test_penalised_fit_is_the_qp_optimum(num_classes, bias):
    # With λ > 0 the active-set solver ends each head at a certified optimum (KKT), so no other θ,
    # the oracle's included, scores lower beyond rounding.
    X, y = gaussian_tasks(10 * num_classes + bias, num_classes=num_classes)
    penalty = 0.05
    weights, intercepts = fit_linear_heads(X, y, num_classes, hinge, penalty=penalty, bias=bias)
    ours = objective(X, y, weights, intercepts, penalty)
    for p in range(X.shape[0]):
        theirs = oracle_objective(X[p], y[p], qp_oracle(X[p].numpy(), y[p].numpy(), num_classes, bias, penalty),
                                  bias, penalty)
        assert float(ours[p]) <= theirs + ROUNDING
        assert theirs - float(ours[p]) <= 1e-7  # the oracle agrees: the comparison is a tight one


@pytest.mark.parametrize("num_classes,bias", [(2, False), (3, True)])
def test_unpenalised_fit_is_the_lp_optimum_within_its_smoothing(num_classes, bias):
    # λ = 0: no exact solver; the last smoothing stage has η ≤ tol. For any θ', by convexity of F_η,
    # F(θ) ≤ F_η(θ) ≤ F_η(θ') + ⟨∇F_η(θ), θ − θ'⟩ ≤ F(θ') + η·ln K + ‖∇F_η(θ)‖·‖θ − θ'‖, and the
    # stage stops at max|∇F_η| ≤ tol, so ‖∇F_η‖₂ ≤ √(K·w)·tol. With θ' the LP's optimum:
    X, y = gaussian_tasks(20 + num_classes, num_classes=num_classes)
    tol = 1e-8
    weights, intercepts = fit_linear_heads(X, y, num_classes, hinge, bias=bias, tol=tol)
    ours = objective(X, y, weights, intercepts, 0.0)
    for p in range(X.shape[0]):
        oracle, optimum = lp_oracle(X[p].numpy(), y[p].numpy(), num_classes, bias)
        theirs = oracle_objective(X[p], y[p], oracle, bias, 0.0)
        mine = torch.cat([weights[p]] + ([] if intercepts is None else [intercepts[p].unsqueeze(-1)]), dim=-1)
        stopping = math.sqrt(oracle.numel()) * tol * float((mine - oracle).norm())
        assert float(ours[p]) <= theirs + tol * math.log(num_classes) + stopping + ROUNDING
        assert float(ours[p]) >= optimum - 1e-7  # nothing beats the LP's optimum (HiGHS's tolerance)


def class_means(X, y, num_classes):
    return torch.stack([MeanClassifier().fit(X[p], y[p], num_classes).means_ for p in range(X.shape[0])])


def test_fit_is_no_worse_than_plain_lbfgs():
    # The L_sup setting of estimate/quantities.py: binary tasks, no intercept, starting from the class
    # means, L penalties, its tolerance. Before the smoothing and the exact solver, the hinge went to
    # L-BFGS as it is; the same loss under another name still does. The exact solver's heads are
    # optimal, so no L-BFGS run, however long, scores lower beyond rounding.
    X, y = gaussian_tasks(30, tasks=6, train=200, dim=5, separation=0.8)
    penalties = torch.tensor([1e-4, 1e-3, 1e-2, 1e-1], dtype=torch.float64).repeat_interleave(6)
    X, y, start = X.repeat(4, 1, 1), y.repeat(4, 1), class_means(X, y, 2).repeat(4, 1, 1)
    ours, _ = fit_linear_heads(X, y, 2, hinge, penalty=penalties, init=start, max_iter=200, tol=1e-4)
    plain, _ = fit_linear_heads(X, y, 2, lambda margins: hinge(margins), penalty=penalties, init=start,
                                max_iter=5000, tol=1e-10)
    assert bool((objective(X, y, ours, None, penalties) <= objective(X, y, plain, None, penalties) + ROUNDING).all())


def test_masked_fit_equals_unpadded_fits():
    X, y = gaussian_tasks(40, tasks=2, num_classes=3, train=40)
    sizes = [40, 25]
    mask = torch.arange(40) < torch.tensor(sizes).unsqueeze(1)
    weights, _ = fit_linear_heads(X, torch.where(mask, y, 0), 3, hinge, penalty=0.1, mask=mask)
    for p, size in enumerate(sizes):  # both exact optima of the same objective
        alone, _ = fit_linear_heads(X[p:p + 1, :size], y[p:p + 1, :size], 3, hinge, penalty=0.1)
        masked, unpadded = (objective(X[p:p + 1, :size], y[p:p + 1, :size], w, None, 0.1) for w in
                            (weights[p:p + 1], alone))
        assert abs(float(masked) - float(unpadded)) <= ROUNDING


def test_degenerate_data_falls_back_to_smoothing():
    # Every point twice: two copies tie together, and the active set's linear system is singular.
    # The fit then keeps its smoothed stages, within tol·ln K + K·d·tol²/(2λ) of the optimum
    # (fit_linear_heads: the smoothing's bound and the λ-strongly convex stopping error).
    X, y = gaussian_tasks(50, train=20)
    X, y = torch.cat([X, X], dim=1), torch.cat([y, y], dim=1)
    penalty, tol = 0.05, 1e-8
    weights, _ = fit_linear_heads(X, y, 2, hinge, penalty=penalty, tol=tol)
    ours = objective(X, y, weights, None, penalty)
    bound = tol * math.log(2) + 2 * X.shape[-1] * tol**2 / (2 * penalty) + ROUNDING
    for p in range(X.shape[0]):
        oracle = qp_oracle(X[p].numpy(), y[p].numpy(), 2, False, penalty)
        assert float(ours[p]) <= oracle_objective(X[p], y[p], oracle, False, penalty) + bound


def test_penalised_fit_is_deterministic():
    X, y = gaussian_tasks(60, tasks=4, num_classes=3, train=50)
    start = class_means(X, y, 3)
    first = fit_linear_heads(X, y, 3, hinge, penalty=0.01, bias=True, init=start)
    second = fit_linear_heads(X, y, 3, hinge, penalty=0.01, bias=True, init=start)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
