"""Batched linear heads and LinearProbe against scikit-learn, separate fits and known optima.

Penalty mapping to scikit-learn's ``LogisticRegression`` (L2, lbfgs), per task with n points:
- ours: (1/n)·Σ_i CE_i + λ/2·‖W‖_F², W ∈ R^{K×d}, intercept unpenalised.
- scikit-learn: C·Σ_i CE_i + ½·‖W‖_F², intercept unpenalised.
- K > 2 (multinomial, K rows in both): multiply ours by 1/λ: (1/(nλ))·Σ CE + ½‖W‖²,
  so C = 1/(n·λ), with the same W (both optima have rows summing to zero).
- K = 2: scikit-learn fits one vector w (the score of class 1 minus that of class 0). Ours has
  rows w_0, w_1 and CE depends on w = w_1 − w_0 only; for a given w, ‖w_0‖² + ‖w_1‖² is
  smallest at w_1 = −w_0 = w/2, where it is ‖w‖²/2. So ours is (1/n)·Σ CE + λ/4·‖w‖²;
  multiplying by 2/λ gives (2/(nλ))·Σ CE + ½‖w‖²: C = 2/(n·λ), coef = w_1 − w_0, and
  intercept = b_1 − b_0.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from preadapt.adapt import linear
from preadapt.adapt.linear import LinearProbe, best_linear_head, fit_linear_heads, linear_head_losses
from preadapt.adapt.mean_classifier import MeanClassifier
from preadapt.objectives.losses import cross_entropy, hinge, logistic, margins_from_scores

TIGHT = 1e-9  # below what float64 resolves here: each head runs until its loss stops decreasing


def gaussian_tasks(seed, tasks=3, num_classes=2, train=60, test=200, dim=5, separation=1.0):
    """P tasks of K Gaussian classes: features (P, n, d), labels (P, n) for train and test."""
    g = torch.Generator().manual_seed(seed)
    means = separation * torch.randn(tasks, num_classes, dim, generator=g, dtype=torch.float64)  # (P, K, d)
    labels = torch.randint(0, num_classes, (tasks, train + test), generator=g)  # (P, n + m)
    noise = torch.randn(tasks, train + test, dim, generator=g, dtype=torch.float64)
    features = noise + torch.gather(means, 1, labels.unsqueeze(-1).expand(-1, -1, dim))
    return features[:, :train], labels[:, :train], features[:, train:], labels[:, train:]


def sklearn_c(num_classes, train, penalty):
    return (2.0 if num_classes == 2 else 1.0) / (train * penalty)


@pytest.mark.parametrize("num_classes", [2, 4])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_sklearn_logistic_regression(num_classes, seed):
    penalty, train = 0.05, 60
    X, y, X_test, y_test = gaussian_tasks(seed, num_classes=num_classes, train=train)
    probe = LinearProbe(penalties=(penalty,), tol=TIGHT).fit(X, y, num_classes=num_classes)
    ours_acc = probe.score(X_test, y_test).numpy()  # (P,)
    ours_proba = probe.predict_proba(X_test).numpy()  # (P, m, K)
    C = sklearn_c(num_classes, train, penalty)
    for p in range(X.shape[0]):
        oracle = LogisticRegression(C=C, tol=1e-12, max_iter=10_000).fit(X[p].numpy(), y[p].numpy())
        assert abs(ours_acc[p] - oracle.score(X_test[p].numpy(), y_test[p].numpy())) <= 0.005
        np.testing.assert_allclose(ours_proba[p], oracle.predict_proba(X_test[p].numpy()), atol=1e-3)
        coef, intercept = probe.coef_[p].numpy(), probe.intercept_[p].numpy()
        if num_classes == 2:
            np.testing.assert_allclose(coef[0], -coef[1], atol=1e-6)  # the step w_0 = −w_1 above
            np.testing.assert_allclose(coef[1] - coef[0], oracle.coef_[0], atol=1e-5)
            np.testing.assert_allclose(intercept[1] - intercept[0], oracle.intercept_[0], atol=1e-5)
        else:
            np.testing.assert_allclose(coef, oracle.coef_, atol=1e-5)
            np.testing.assert_allclose(  # intercepts are identified only up to a common shift
                intercept - intercept.mean(), oracle.intercept_ - oracle.intercept_.mean(), atol=1e-5
            )


def test_batched_fit_equals_separate_fits():
    X, y, _, _ = gaussian_tasks(4, tasks=4, num_classes=3, train=40)
    penalty = torch.tensor([1e-3, 1e-2, 1e-1, 1.0], dtype=torch.float64)  # (P,)
    weights, intercepts = fit_linear_heads(X, y, 3, penalty=penalty, bias=True, tol=TIGHT)
    for p in range(X.shape[0]):
        alone, alone_b = fit_linear_heads(X[p : p + 1], y[p : p + 1], 3, penalty=float(penalty[p]), bias=True, tol=TIGHT)
        torch.testing.assert_close(weights[p], alone[0], rtol=0, atol=1e-6)
        torch.testing.assert_close(intercepts[p], alone_b[0], rtol=0, atol=1e-6)


def test_probe_candidates_equal_single_penalty_fits():
    X, y, X_val, y_val = gaussian_tasks(5, tasks=3, num_classes=3, train=40, test=40)
    penalties = (1e-3, 1e-1, 1.0)
    probe = LinearProbe(penalties=penalties, tol=TIGHT).fit(X, y, X_val, y_val)
    for p in range(X.shape[0]):
        alone = LinearProbe(penalties=(float(probe.penalty_[p]),), tol=TIGHT).fit(X[p], y[p], num_classes=3)
        torch.testing.assert_close(probe.coef_[p], alone.coef_[0], rtol=0, atol=1e-6)
        torch.testing.assert_close(probe.intercept_[p], alone.intercept_[0], rtol=0, atol=1e-6)
        for j, penalty in enumerate(penalties):  # validation losses: scikit-learn's log_loss oracle
            candidate = LinearProbe(penalties=(penalty,), tol=TIGHT).fit(X[p], y[p], num_classes=3)
            expected = log_loss(y_val[p].numpy(), candidate.predict_proba(X_val[p]).numpy(), labels=[0, 1, 2])
            assert abs(float(probe.validation_losses_[p, j]) - expected) < 1e-9


def test_validation_picks_the_known_best_penalty():
    # Task 0: pure noise with d = 20 and n = 40: a weak penalty overfits, the strongest one wins.
    # Task 1: well-separated classes: the strong penalty shrinks W towards chance, the weak wins.
    g = torch.Generator().manual_seed(6)
    y = torch.randint(0, 2, (2, 240), generator=g)  # (P, n + m)
    X = torch.randn(2, 240, 20, generator=g, dtype=torch.float64)
    X[1] += 2.0 * (2 * y[1] - 1).unsqueeze(-1).double()
    probe = LinearProbe(penalties=(1e-3, 1.0)).fit(X[:, :40], y[:, :40], X[:, 40:], y[:, 40:])
    assert probe.penalty_.tolist() == [1.0, 1e-3]


def test_fit_depends_only_on_its_own_task_and_splits():
    X, y, X_val, y_val = gaussian_tasks(7, tasks=3, train=40, test=40, dim=8)
    probe = LinearProbe(penalties=(1e-3, 1e-1, 10.0)).fit(X, y, X_val, y_val)
    # Tasks are permutation-equivariant: a task's result does not depend on its neighbours.
    order = torch.tensor([2, 0, 1])
    permuted = LinearProbe(penalties=(1e-3, 1e-1, 10.0)).fit(X[order], y[order], X_val[order], y_val[order])
    torch.testing.assert_close(permuted.coef_, probe.coef_[order], rtol=0, atol=1e-6)
    assert torch.equal(permuted.penalty_, probe.penalty_[order])
    # Other tasks' validation data cannot move task 0's choice.
    X_val_other = X_val.clone()
    X_val_other[1:] = torch.randn_like(X_val_other[1:])
    other = LinearProbe(penalties=(1e-3, 1e-1, 10.0)).fit(X, y, X_val_other, y_val)
    torch.testing.assert_close(other.validation_losses_[0], probe.validation_losses_[0], rtol=0, atol=1e-6)
    # With one penalty, validation data changes nothing.
    with_val = LinearProbe(penalties=(0.1,)).fit(X, y, X_val, y_val)
    assert torch.equal(with_val.coef_, LinearProbe(penalties=(0.1,)).fit(X, y).coef_)


def test_probe_argument_errors():
    X, y, X_val, y_val = gaussian_tasks(8, tasks=2, train=20, test=10)
    with pytest.raises(ValueError, match="validation split"):
        LinearProbe(penalties=(0.1, 1.0)).fit(X, y)
    with pytest.raises(ValueError, match="both X_val and y_val"):
        LinearProbe(penalties=(0.1, 1.0)).fit(X, y, X_val=X_val)
    with pytest.raises(ValueError, match="X_val must have shape"):
        LinearProbe(penalties=(0.1, 1.0)).fit(X, y, X_val[:1], y_val[:1])
    with pytest.raises(ValueError, match="penalties must be"):
        LinearProbe(penalties=(-1.0,)).fit(X, y)


def test_single_task_drops_the_task_axis():
    X, y, X_test, y_test = gaussian_tasks(9, tasks=1, num_classes=3)
    batched = LinearProbe(penalties=(0.1,)).fit(X, y)
    single = LinearProbe(penalties=(0.1,)).fit(X[0], y[0])
    assert single.coef_.shape == (1, 3, 5)
    assert torch.equal(single.coef_, batched.coef_)
    assert single.decision_function(X_test[0]).shape == (200, 3)
    assert single.score(X_test[0], y_test[0]).shape == ()
    assert torch.equal(single.predict(X_test[0]), batched.predict(X_test)[0])


def test_masked_tasks_equal_unpadded_fits():
    X, y, _, _ = gaussian_tasks(10, tasks=2, num_classes=3, train=50)
    sizes = [50, 30]
    mask = torch.arange(50) < torch.tensor(sizes).unsqueeze(1)  # (P, n)
    y_padded = torch.where(mask, y, 0)
    weights, intercepts = fit_linear_heads(X, y_padded, 3, penalty=0.1, bias=True, mask=mask, tol=TIGHT)
    for p, size in enumerate(sizes):
        alone, alone_b = fit_linear_heads(X[p : p + 1, :size], y[p : p + 1, :size], 3, penalty=0.1, bias=True, tol=TIGHT)
        torch.testing.assert_close(weights[p], alone[0], rtol=0, atol=1e-6)
        torch.testing.assert_close(intercepts[p], alone_b[0], rtol=0, atol=1e-6)


def class_means(X, y, num_classes):
    """W^μ per task: (P, K, d) from MeanClassifier."""
    return torch.stack([MeanClassifier().fit(X[p], y[p], num_classes).means_ for p in range(X.shape[0])])


def mean_loss(X, y, W, loss):
    return linear_head_losses(X, y, W, loss=loss).mean(-1)  # (P,)


def test_hinge_fit_lowers_the_objective():
    X, y, _, _ = gaussian_tasks(11, tasks=4, num_classes=3, train=60, separation=0.7)
    start = class_means(X, y, 3)
    weights, intercepts = fit_linear_heads(X, y, 3, loss=hinge, init=start, max_iter=200)
    assert intercepts is None
    assert bool((mean_loss(X, y, weights, hinge) < mean_loss(X, y, start, hinge)).all())


@pytest.mark.parametrize("loss", [hinge, logistic])
def test_best_linear_head_is_never_worse_than_the_mean_classifier(loss):
    # In-sample L_sup ≤ L^μ_sup ([Arora19]; THEORY.md section 3), task by task.
    X, y, _, _ = gaussian_tasks(12, tasks=6, num_classes=2, train=40, separation=0.6)
    start = class_means(X, y, 2)
    head = best_linear_head(X, y, 2, loss, start, max_iter=100)
    assert bool((mean_loss(X, y, head, loss) <= mean_loss(X, y, start, loss)).all())


def test_best_linear_head_keeps_the_start_where_the_fit_is_worse(monkeypatch):
    X, y, _, _ = gaussian_tasks(13, tasks=2, num_classes=2, train=40)
    start = class_means(X, y, 2)
    good, _ = fit_linear_heads(X, y, 2, loss=logistic, init=start, max_iter=50)
    worse_for_task_0 = torch.stack([-start[0], good[1]])
    monkeypatch.setattr(linear, "fit_linear_heads", lambda *args, **kwargs: (worse_for_task_0, None))
    head = best_linear_head(X, y, 2, logistic, start)
    assert torch.equal(head[0], start[0])
    assert torch.equal(head[1], good[1])


def test_batched_lbfgs_finds_each_quadratic_minimum():
    # Closed form: f_h(x) = ½ (x − c_h)ᵀ A_h (x − c_h) has its minimum at c_h. Conditioning from
    # 1 to 1e4 across rows, which one joint L-BFGS on the summed objective handles badly.
    g = torch.Generator().manual_seed(16)
    centres = torch.randn(4, 6, generator=g, dtype=torch.float64)  # (H, D)
    curvature = torch.logspace(0, 4, 6, dtype=torch.float64) ** torch.linspace(0, 1, 4, dtype=torch.float64).unsqueeze(1)

    def evaluate(points, rows):
        a, c = (curvature, centres) if rows is None else (curvature[rows], centres[rows])
        return 0.5 * (a * (points - c) ** 2).sum(-1), a * (points - c)

    found = linear._batched_lbfgs(evaluate, torch.zeros(4, 6, dtype=torch.float64), max_iter=500, tol=1e-10)
    torch.testing.assert_close(found, centres, rtol=0, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(num_classes=st.integers(2, 6), seed=st.integers(0, 2**16))
def test_margin_index_matches_margins_from_scores(num_classes, seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(3, 7, 1, num_classes, generator=g, dtype=torch.float64)  # (P, n, L, K)
    labels = torch.randint(0, num_classes, (3, 7), generator=g)
    own, others = linear._margin_index(labels, num_classes)
    margins = scores.gather(-1, own) - scores.gather(-1, others)
    assert torch.equal(margins, margins_from_scores(scores, labels.unsqueeze(-1)))


def test_deterministic():
    X, y, X_val, y_val = gaussian_tasks(14, tasks=3, num_classes=3, train=40, test=40)
    first = LinearProbe(penalties=(1e-2, 1.0)).fit(X, y, X_val, y_val)
    second = LinearProbe(penalties=(1e-2, 1.0)).fit(X, y, X_val, y_val)
    for name in ("coef_", "intercept_", "penalty_", "validation_losses_"):
        assert torch.equal(getattr(first, name), getattr(second, name))
    start = class_means(X, y, 3)
    hinge_head = best_linear_head(X, y, 3, hinge, start, max_iter=100)
    assert torch.equal(hinge_head, best_linear_head(X, y, 3, hinge, start, max_iter=100))


def test_cross_entropy_objective_value():
    # The objective at W = 0 is ln K per point (uniform softmax): a closed form for the loss path.
    X, y, _, _ = gaussian_tasks(15, tasks=2, num_classes=4)
    zero = torch.zeros(2, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(mean_loss(X, y, zero, cross_entropy), torch.full((2,), np.log(4.0), dtype=torch.float64))
