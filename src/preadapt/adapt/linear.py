"""Linear heads on frozen features, many tasks fitted at once as one tensor program.

Everything that fits a linear head W ∈ R^{K×d} (optionally with an intercept b ∈ R^K) on fixed
representations goes through :func:`fit_linear_heads`: the estimate of L_sup(T, f) of [Arora19]
(:func:`best_linear_head`), the TR protocol and the regularised probe (:class:`LinearProbe`).
The P tasks are independent (their summed objective is separable), so every head runs its own
L-BFGS, all heads advancing together as one tensor program with no Python loop over tasks
(THEORY.md section 4: "train many tasks' heads at once as one batched program"). The hinge,
whose kinks stall L-BFGS, is fitted through smoothed versions of itself and then solved exactly
by an active-set method (:func:`fit_linear_heads`).

[Nesterov05]: Y. Nesterov, "Smooth minimization of non-smooth functions", Math. Program. 103 (2005).
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

import torch

from preadapt.objectives.losses import LN2, cross_entropy, hinge, logistic, margins_from_scores

Loss = Callable[[torch.Tensor], torch.Tensor]


def linear_head_losses(
    features: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor,
    intercepts: torch.Tensor | None = None,
    loss: Loss = cross_entropy,
) -> torch.Tensor:
    """Per-sample loss ℓ({(Wz)_y − (Wz)_{c'}}_{c'≠y}) of [Arora19] for P heads at once.

    ``features: (P, n, d)``, ``labels: (P, n)``, ``weights: (P, K, d)``, ``intercepts: (P, K)``
    → ``(P, n)``. Reduce (mean, CI) in the caller.

    >>> Z = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    >>> linear_head_losses(Z, torch.tensor([[0, 1]]), torch.eye(2).unsqueeze(0), loss=cross_entropy)
    tensor([[0.3133, 0.3133]])
    """
    scores = features @ weights.transpose(1, 2)  # (P, n, K)
    if intercepts is not None:
        scores = scores + intercepts.unsqueeze(1)
    return loss(margins_from_scores(scores, labels))  # (P, n)


def fit_linear_heads(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    loss: Loss = cross_entropy,
    penalty: float | torch.Tensor = 0.0,
    bias: bool = False,
    init: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    max_iter: int = 1000,
    tol: float = 1e-8,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Fit P independent linear heads at once, each by its own L-BFGS (weak Wolfe line search).

    Task p minimises ``mean_i ℓ(margins(W_p z_i + b_p, y_i)) + penalty_p / 2 · ‖W_p‖_F²`` (the
    intercept is not penalised). Tasks do not interact: a batched fit equals P separate fits.

    ``features: (P, n, d)``, ``labels: (P, n)`` in [0, K), ``penalty``: a float or ``(P,)``,
    ``init: (P, K, d)`` starting weights (zeros if None; intercepts start at 0). Every task has
    the same n; tasks with fewer points are padded and given ``mask: (P, n)`` (True = a real
    point; the mean runs over real points only; padded labels must still lie in [0, K)).
    A head stops when its largest gradient entry is at most ``tol`` (float64 resolves about
    1e-8), when its loss stops decreasing, or after ``max_iter`` iterations. With
    ``penalty = 0`` on separable data no minimiser exists and W grows until one of those.
    Computes in the dtype of ``features``; float64 gives deterministic, tight optima.

    The hinge has kinks, where L-BFGS's line search stalls far from the optimum. For it, each
    head's start has the mean of W's rows removed (no margin sees it; the penalty does), then is
    fitted in stages to the smoothed hinge ℓ_η (:func:`_smoothed_hinge`, ℓ ≤ ℓ_η ≤ ℓ + η·ln K) at
    η = 1/10, 1/100, ... down to the first η ≤ ``tol``, each stage warm-started from the last and
    run as above (up to ``max_iter`` iterations). After each stage from η = ``EXACT_SMOOTHING`` on
    (or after the last, if the schedule ends above it), a head with ``penalty`` > 0 goes to an
    exact active-set solver (:func:`_hinge_active_set`); where it certifies the
    optimum (KKT conditions hold), the head is done, exactly. A head it does not solve (penalty
    0, degenerate data) keeps whichever of its start and the stages' ends has the lowest exact
    objective; of the last stage, F(W) ≤ F_η(W) ≤ min F_η + e ≤ min F + η·ln K + e, so it is
    within ``tol``·ln K of the optimum plus the smoothed fit's stopping error e (with penalty λ
    and no intercept F_η is λ-strongly convex: e ≤ ‖∇F_η‖²/(2λ) ≤ K·d·tol²/(2λ)).

    Returns ``weights: (P, K, d)`` and ``intercepts: (P, K)`` (None unless ``bias``).

    >>> g = torch.Generator().manual_seed(0)
    >>> labels = torch.randint(0, 3, (2, 60), generator=g)  # P = 2 tasks, K = 3
    >>> features = torch.randn(2, 60, 4, generator=g, dtype=torch.float64)
    >>> features[..., :3] += 3.0 * torch.nn.functional.one_hot(labels, 3)
    >>> weights, intercepts = fit_linear_heads(features, labels, 3, penalty=0.1, bias=True)
    >>> weights.shape, intercepts.shape
    (torch.Size([2, 3, 4]), torch.Size([2, 3]))
    >>> scores = features @ weights.transpose(1, 2) + intercepts.unsqueeze(1)  # (P, n, K)
    >>> (scores.argmax(-1) == labels).double().mean(-1)  # training accuracy per task
    tensor([0.9667, 0.9833], dtype=torch.float64)
    """
    features, labels = _check_tasks(features, labels, num_classes)
    tasks = features.shape[0]
    penalty = torch.as_tensor(penalty, dtype=features.dtype, device=features.device).expand(tasks)
    if init is not None:
        init = init.unsqueeze(1)  # (P, 1, K, d)
    weights, intercepts = _fit_heads(
        features, labels, num_classes, loss, penalty.unsqueeze(1), bias, init, mask, max_iter, tol
    )
    return weights.squeeze(1), None if intercepts is None else intercepts.squeeze(1)


def best_linear_head(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    loss: Loss,
    init_weights: torch.Tensor,
    mask: torch.Tensor | None = None,
    max_iter: int = 1000,
    tol: float = 1e-8,
) -> torch.Tensor:
    """The head behind the estimate of L_sup(T, f) = inf_W E[ℓ] of [Arora19]: ``(P, K, d)``.

    No intercept and no penalty, as in the definition of L_sup. A fitted W only upper-bounds the
    infimum, so the fit starts from ``init_weights: (P, K, d)`` (W^μ, the class means) and each
    task keeps whichever of the start and the fit has the lower training loss: then
    L_sup ≤ L^μ_sup holds in-sample, as it does in the population (THEORY.md section 3).
    ``features: (P, n, d)``, ``labels: (P, n)``; ``mask`` as in :func:`fit_linear_heads`.

    >>> Z = torch.tensor([[[2.0, 1.0], [1.0, 2.0], [2.0, 1.5]]], dtype=torch.float64)
    >>> means = torch.tensor([[[2.0, 1.25], [1.0, 2.0]]], dtype=torch.float64)  # W^μ
    >>> y = torch.tensor([[0, 1, 0]])
    >>> head = best_linear_head(Z, y, 2, cross_entropy, means, max_iter=20)
    >>> bool(linear_head_losses(Z, y, head).mean() < linear_head_losses(Z, y, means).mean())
    True
    """
    fitted, _ = fit_linear_heads(
        features, labels, num_classes, loss, init=init_weights, mask=mask, max_iter=max_iter, tol=tol
    )
    weight = _point_weights(labels, mask, features.dtype)  # (P, n)
    start_loss = (linear_head_losses(features, labels, init_weights, loss=loss) * weight).sum(-1)  # (P,)
    fitted_loss = (linear_head_losses(features, labels, fitted, loss=loss) * weight).sum(-1)  # (P,)
    keep_fit = (fitted_loss < start_loss).view(-1, 1, 1)
    return torch.where(keep_fit, fitted, init_weights.to(fitted.dtype))


PATH_MIN_WORK = 1 << 20
"""``LinearProbe`` fits its penalties along the regularisation path (one after another, each warm-started)
when one evaluation of all its tasks' heads for one penalty touches at least this many elements (tasks ×
points × scores × width), and side by side otherwise. Below it a fit is bound by L-BFGS's per-iteration
overhead, which side-by-side fits share and a path pays once per penalty. Measured on the demo's probes
(docs/benchmarks.md): 100 10-class tasks of 500 points (8.5·10⁶), 1.25–1.31× faster on the path; 100
2-class tasks of 100 points (1.7·10⁵), 0.69–0.74×; one 20-class task of 1000 points (3.4·10⁵), 0.69–0.83×."""


class LinearProbe:
    """Softmax-regression heads on frozen features, with the penalty chosen on validation data.

    Per task: minimise ``mean_i CE_i + penalty / 2 · ‖W‖_F²`` with natural-log cross-entropy and
    an unpenalised intercept: scikit-learn's ``LogisticRegression`` with C = 1/(n·penalty) for
    K > 2 and C = 2/(n·penalty) for K = 2 (derived in tests/adapt/test_linear_probe.py). All
    tasks and all ``penalties`` are fitted as one batched program (P · len(penalties) heads), or, for
    large fits (``PATH_MIN_WORK``), all tasks at once one penalty after another, the strongest first,
    each from the heads of the one before; each fit runs to the same tolerance either way. Each
    task then keeps the penalty with the lowest validation cross-entropy. The penalty is
    chosen on the validation split only: ``fit`` never sees test data. ``dtype``: the precision the
    heads are fitted and chosen in (float64 by default; the linear adapter fits in float32).

    Learned: ``coef_: (P, K, d)``, ``intercept_: (P, K)``, ``penalty_: (P,)`` and
    ``validation_losses_: (P, len(penalties))`` (None without validation data). A 2-D ``X: (n, d)``
    is one task (P = 1); the methods then drop the task axis from their outputs.

    >>> g = torch.Generator().manual_seed(0)
    >>> y = torch.randint(0, 2, (3, 80), generator=g)  # P = 3 binary tasks
    >>> X = torch.randn(3, 80, 5, generator=g) + 1.0 * y.unsqueeze(-1)
    >>> X[2] = torch.randn(80, 5, generator=g)  # task 2: pure noise
    >>> probe = LinearProbe(penalties=(0.01, 1.0)).fit(X[:, :40], y[:, :40], X[:, 40:60], y[:, 40:60])
    >>> probe.coef_.shape, probe.penalty_  # noise favours the large penalty
    (torch.Size([3, 2, 5]), tensor([0.0100, 1.0000, 1.0000], dtype=torch.float64))
    >>> probe.score(X[:, 60:], y[:, 60:])
    tensor([0.9000, 0.8500, 0.5000], dtype=torch.float64)
    """

    def __init__(
        self,
        penalties: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0),
        bias: bool = True,
        max_iter: int = 1000,
        tol: float = 1e-6,
        dtype: torch.dtype = torch.float64,
    ):
        self.penalties = penalties
        self.bias = bias
        self.max_iter = max_iter
        self.tol = tol
        self.dtype = dtype

    def fit(
        self,
        X: torch.Tensor,
        y: torch.Tensor,
        X_val: torch.Tensor | None = None,
        y_val: torch.Tensor | None = None,
        num_classes: int | None = None,
    ) -> "LinearProbe":
        """Fit ``X: (P, n, d)``, ``y: (P, n)``; validation ``X_val: (P, m, d)``, ``y_val: (P, m)``.

        ``num_classes`` (K) defaults to one more than the largest label in ``y`` and ``y_val``.
        """
        penalties = torch.as_tensor(self.penalties, dtype=torch.float64).flatten()  # (L,)
        if penalties.numel() == 0 or bool((penalties < 0).any()):
            raise ValueError(f"penalties must be a non-empty sequence of values >= 0; got {self.penalties}")
        has_val = X_val is not None or y_val is not None
        if has_val and (X_val is None or y_val is None):
            raise ValueError("pass both X_val and y_val, or neither")
        if penalties.numel() > 1 and not has_val:
            raise ValueError(
                f"{penalties.numel()} penalties need a validation split (X_val, y_val) to choose "
                "among them; pass one penalty, or validation data (never the test split)"
            )
        X, y = _as_tasks(X, y, "X", "y", self.dtype)
        if num_classes is None and y.numel() > 0:
            num_classes = 1 + max(int(y.max()), int(y_val.max()) if has_val and y_val.numel() else 0)
        X, y = _check_tasks(X, y, num_classes)
        penalties = penalties.to(X.device)
        if num_classes < 2:
            raise ValueError(f"a probe needs num_classes >= 2; got {num_classes}")
        tasks, _, dim = X.shape
        if has_val:
            X_val, y_val = _check_tasks(*_as_tasks(X_val, y_val, "X_val", "y_val", self.dtype), num_classes)
            if X_val.shape[0] != tasks or X_val.shape[2] != dim:
                raise ValueError(
                    f"X_val must have shape ({tasks}, m, {dim}) to match X; got {tuple(X_val.shape)}"
                )

        grid = penalties.numel()
        work = tasks * X.shape[1] * (dim + self.bias) * (1 if num_classes == 2 else num_classes)  # one evaluation
        if grid > 1 and work >= PATH_MIN_WORK:
            # The regularisation path, the strongest penalty first, each fit started from the heads of the
            # one before: nearer its optimum than zeros are, so the weakly penalised (slow, ill-conditioned)
            # fits need fewer iterations. Each fit still runs to its own tolerance.
            fits, start = {}, (None, None)
            for column in sorted(range(grid), key=lambda j: -float(penalties[j])):
                start = _fit_heads(X, y, num_classes, cross_entropy, penalties[column].expand(tasks, 1), self.bias,
                                   start[0], None, self.max_iter, self.tol, init_intercepts=start[1])
                fits[column] = start  # (P, 1, K, d), (P, 1, K) or None
            weights = torch.cat([fits[column][0] for column in range(grid)], dim=1)
            intercepts = torch.cat([fits[column][1] for column in range(grid)], dim=1) if self.bias else None
        else:  # every penalty side by side, from zeros
            weights, intercepts = _fit_heads(
                X, y, num_classes, cross_entropy, penalties.expand(tasks, grid), self.bias, None, None,
                self.max_iter, self.tol,
            )  # (P, L, K, d), (P, L, K) or None
        if intercepts is None:
            intercepts = torch.zeros(tasks, grid, num_classes, dtype=X.dtype, device=X.device)

        self.validation_losses_ = None
        choice = torch.zeros(tasks, dtype=torch.long, device=X.device)  # (P,)
        if has_val:
            scores = torch.einsum("pmd,plkd->plmk", X_val, weights) + intercepts.unsqueeze(2)  # (P, L, m, K)
            val_labels = y_val.unsqueeze(1).expand(-1, grid, -1)  # (P, L, m)
            self.validation_losses_ = cross_entropy(margins_from_scores(scores, val_labels)).mean(-1)  # (P, L)
            choice = self.validation_losses_.argmin(dim=1)  # the first (smallest-index) penalty on ties
        rows = torch.arange(tasks, device=X.device)
        self.coef_ = weights[rows, choice]  # (P, K, d)
        self.intercept_ = intercepts[rows, choice]  # (P, K)
        self.penalty_ = penalties[choice]  # (P,)
        return self

    def decision_function(self, X: torch.Tensor) -> torch.Tensor:
        """Scores ``W z + b``: ``X: (P, m, d)`` → ``(P, m, K)`` (or ``(m, d)`` → ``(m, K)``)."""
        single = X.dim() == 2
        X = X.to(self.coef_.dtype)
        if single:
            X = X.unsqueeze(0)
        scores = X @ self.coef_.transpose(1, 2) + self.intercept_.unsqueeze(1)  # (P, m, K)
        return scores.squeeze(0) if single else scores

    def predict_proba(self, X: torch.Tensor) -> torch.Tensor:
        """Softmax of the scores: ``(P, m, d)`` → ``(P, m, K)``."""
        return self.decision_function(X).softmax(dim=-1)

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        """The highest-scoring class: ``(P, m, d)`` → ``(P, m)``."""
        return self.decision_function(X).argmax(dim=-1)

    def score(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Accuracy per task: ``X: (P, m, d)``, ``y: (P, m)`` → ``(P,)``."""
        return (self.predict(X) == y).double().mean(dim=-1)


def _fit_heads(
    features: torch.Tensor,  # (P, n, d)
    labels: torch.Tensor,  # (P, n)
    num_classes: int,
    loss: Loss,
    penalty: torch.Tensor,  # (P, L): L penalties per task, fitted side by side on the same data
    bias: bool,
    init: torch.Tensor | None,  # (P, L, K, d)
    mask: torch.Tensor | None,  # (P, n)
    max_iter: int,
    tol: float,
    init_intercepts: torch.Tensor | None = None,  # (P, L, K), with bias: where the intercepts start (else 0)
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Every head's objective and gradient in one pass, minimised by :func:`_batched_lbfgs` (for a
    kinked loss, in smoothed stages finished by its exact solver: see :func:`fit_linear_heads`).

    With ``bias`` the intercept is a last feature column of ones (unpenalised). The L axis
    shares each task's features among its penalties instead of copying them.
    """
    tasks, points, dim = features.shape
    grid = penalty.shape[1]
    penalty = penalty.to(features.dtype)
    if init is not None and init.shape != (tasks, grid, num_classes, dim):
        raise ValueError(f"init must have shape ({tasks}, {num_classes}, {dim}); got {tuple(init.squeeze(1).shape)}")
    if bias:
        features = torch.cat([features, torch.ones_like(features[..., :1])], dim=-1)  # (P, n, d+1)
    width = features.shape[-1]
    theta = torch.zeros(tasks, grid, num_classes, width, dtype=features.dtype, device=features.device)
    if init is not None:
        theta[..., :dim] = init.detach().to(features.dtype)
    if init_intercepts is not None and bias:
        theta[..., dim] = init_intercepts.detach().to(features.dtype)
    point_weight = _point_weights(labels, mask, features.dtype).unsqueeze(-1)  # (P, n, 1)
    # margins_from_scores, with its index work done once instead of at every evaluation
    own, others = _margin_index(labels, num_classes)  # (P, n, 1, 1), (P, n, 1, K−1)

    def objective(loss, features, heads, own, others, point_weight, penalty):
        """Per-head objective ``(G, L')`` of ``heads: (G, L', K, w)`` on ``features: (G, n, w)``."""
        groups, columns = heads.shape[:2]
        scores = features @ heads.reshape(groups, columns * num_classes, width).transpose(1, 2)  # (G, n, L'·K)
        scores = scores.view(groups, points, columns, num_classes)  # (G, n, L', K)
        own, others = own.expand(-1, -1, columns, -1), others.expand(-1, -1, columns, -1)
        margins = scores.gather(-1, own) - scores.gather(-1, others)  # (G, n, L', K−1)
        fit = (loss(margins) * point_weight).sum(1)  # (G, L')
        return fit + 0.5 * penalty * heads[..., :dim].square().sum(dim=(-1, -2))

    def evaluate(loss, flat: torch.Tensor, rows: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Objective ``(h,)`` and gradient ``(h, K·w)`` of heads ``rows`` (None: all P·L) at ``flat``."""
        with torch.enable_grad():
            heads = flat.detach().requires_grad_(True)
            if rows is None:
                value = objective(
                    loss, features, heads.view(tasks, grid, num_classes, width), own, others, point_weight, penalty
                )
            else:  # a few heads left: gather their tasks' data instead of evaluating every head
                task = rows // grid
                value = objective(
                    loss, features[task], heads.view(-1, 1, num_classes, width), own[task], others[task],
                    point_weight[task], penalty[task, rows % grid].unsqueeze(1),
                )
            value = value.flatten()  # (h,)
            (grad,) = torch.autograd.grad(value.sum(), heads)  # heads are independent: per-head gradients
        return value.detach(), grad

    def softmax_evaluate(scale: float, smoothing: float | None, flat: torch.Tensor, rows: torch.Tensor | None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """``evaluate`` in closed form, without autograd's graph, for ``scale`` · cross-entropy
        (``smoothing`` None) or for the smoothed hinge ℓ_η (``smoothing`` η; ``scale`` 1).

        Cross-entropy: scale · ln(1 + Σ_{j≠y} e^{−(s_y − s_j)}) = scale · (logsumexp(s) − s_y), whose
        gradient in head k is scale · Σ_i ω_i (softmax(s_i)_k − [y_i = k]) z_i. The smoothed hinge
        η·ln(1 + Σ_{j≠y} e^{(1 − s_y + s_j)/η}) is η · logsumexp(t) with t_j = (1 − s_y + s_j)/η and
        t_y = 0, and its gradient in the scores is softmax(t) − one-hot(y) again (the 1/η of t cancels
        the η). Either way: two matrix products and a softmax per evaluation, where the margins'
        autograd path gathers, concatenates and differentiates.
        """
        if rows is None:
            data, heads, labels_used, weight, lam = features, flat.view(tasks, grid, num_classes, width), own, \
                point_weight, penalty
        else:
            task = rows // grid
            data, heads, labels_used, weight, lam = features[task], flat.view(-1, 1, num_classes, width), own[task], \
                point_weight[task], penalty[task, rows % grid].unsqueeze(1)
        groups, columns = heads.shape[:2]
        if num_classes == 2:  # one score difference u = s_1 − s_0 per point: half the work of two scores
            return binary_evaluate(scale, smoothing, flat, heads, data, labels_used, weight, lam)
        # scores with the points last, (G, L', K, n): the softmax's reductions over K then run along
        # contiguous rows of n points (over a last axis of K, torch's CPU max and sum are several times slower)
        scores = (heads.reshape(groups, columns * num_classes, width) @ data.transpose(1, 2)).view(
            groups, columns, num_classes, points)
        index = labels_used.view(groups, 1, 1, points).expand(-1, columns, -1, -1)  # (G, L', 1, n)
        if smoothing is not None:  # the smoothed hinge's logits t
            scores = (scores - scores.gather(2, index) + 1.0).div_(smoothing).scatter_(2, index, 0.0)
        # logsumexp by hand, so that its exponentials also give the softmax: e^{s − max}, one pass
        top = scores.amax(dim=2, keepdim=True)  # (G, L', 1, n)
        own_score = scores.gather(2, index)
        residual = scores.sub_(top).exp_()
        total = residual.sum(dim=2, keepdim=True)
        omega = weight.view(groups, 1, 1, points)
        fit = ((total.log() + top - own_score) * omega).sum(dim=(2, 3))  # (G, L')
        scaled = scale * omega
        residual *= scaled / total  # ω·softmax
        residual.scatter_add_(2, index, (-scaled).expand_as(own_score))  # − ω·one-hot of y
        return finish(heads, flat, data, residual.view(groups, columns * num_classes, points).transpose(1, 2),
                      fit * (scale if smoothing is None else smoothing), lam)

    def binary_evaluate(scale, smoothing, flat, heads, data, labels_used, weight, lam):
        """``softmax_evaluate`` for K = 2, with u = (w_1 − w_0)·z and σ_i = 1 for y_i = 0, −1 for y_i = 1:
        ln(1 + e^{−(s_y − s_other)}) = softplus(σ·u), whose gradient in u is σ·sigmoid(σ·u); the smoothed
        hinge η·softplus((1 + σ·u)/η), whose gradient in u is σ·sigmoid((1 + σ·u)/η). In w_1 that times
        z, in w_0 its negative: one matrix product each way instead of two scores."""
        sign = 1.0 - 2.0 * labels_used.squeeze(-1).to(data.dtype)  # (G, n, 1)
        margin = (data @ (heads[..., 1, :] - heads[..., 0, :]).transpose(1, 2)) * sign  # (G, n, L'): σ·u
        if smoothing is not None:
            margin = margin.add_(1.0).div_(smoothing)
        fit = (torch.nn.functional.softplus(margin, threshold=40.0) * weight).sum(1)  # (G, L')
        residual = margin.sigmoid_().mul_(sign * (scale * weight))  # (G, n, L'): the gradient in u, per point
        return finish(heads, flat, data, residual, fit * (scale if smoothing is None else smoothing), lam,
                      difference=True)

    def finish(heads, flat, data, residual, fit, lam, difference: bool = False):
        """Value and gradient from the per-point gradients in the scores ``residual: (G, n, L'·K)`` (or,
        with ``difference``, in u = s_1 − s_0: (G, n, L')), the fitted loss ``fit: (G, L')``, plus the
        penalty's share."""
        groups, columns = heads.shape[:2]
        grad = residual.transpose(1, 2) @ data  # (G, L'·K, w), or (G, L', w): the gradient in w_1
        grad = torch.stack([-grad, grad], dim=2) if difference else grad.view(heads.shape)  # (G, L', K, w)
        weights = heads[..., :dim]
        grad[..., :dim] += lam.view(groups, columns, 1, 1) * weights
        value = fit + 0.5 * lam * weights.square().sum(dim=(-1, -2))
        return value.flatten(), grad.view(flat.shape)

    theta = theta.view(tasks * grid, -1)
    if loss in _SOFTMAX_FAMILY:
        return _split_intercepts(
            _batched_lbfgs(partial(softmax_evaluate, _SOFTMAX_FAMILY[loss], None), theta, max_iter, tol), grid, bias, dim)
    if loss not in _KINKED:
        return _split_intercepts(_batched_lbfgs(partial(evaluate, loss), theta, max_iter, tol), grid, bias, dim)

    # A kinked loss (see fit_linear_heads): continuation on ℓ_η, each stage from η = EXACT_SMOOTHING on
    # (or the last) followed by the exact active-set method on the heads it applies to (penalty > 0); a
    # head it solves is done. Each head keeps the lowest exact objective seen.
    smoothed, exact_solver = _KINKED[loss]
    heads = tasks * grid
    task = torch.arange(heads, device=theta.device) // grid
    flat_penalty, weight = penalty.flatten(), point_weight.squeeze(-1)

    def exact(theta: torch.Tensor) -> torch.Tensor:  # (P·L,)
        return objective(loss, features, theta.view(tasks, grid, num_classes, width), own, others, point_weight,
                         penalty).flatten()

    def restricted(stage_evaluate, rows: torch.Tensor):
        """``stage_evaluate`` for heads ``rows`` only, as _batched_lbfgs calls it (rows of its own x)."""
        if rows.numel() == heads:
            return stage_evaluate
        return lambda points, which: stage_evaluate(points, rows if which is None else rows[which])

    # The losses see only differences of W's rows; the penalty also sees their mean, which is 0 at the
    # optimum. Removing it from the start lowers F and spares the stages a direction that only the
    # penalty, at its small curvature, would pull in.
    start = theta.view(heads, num_classes, width)
    start[..., :dim] -= start[..., :dim].mean(dim=1, keepdim=True)
    best, best_value = theta.clone(), exact(theta)
    fitting = torch.ones(heads, dtype=torch.bool, device=theta.device)
    schedule = _smoothing_schedule(tol)
    for stage_index, smoothing in enumerate(schedule):
        rows = fitting.nonzero().squeeze(-1)
        stage = partial(softmax_evaluate, 1.0, smoothing) if smoothed is _smoothed_hinge \
            else partial(evaluate, partial(smoothed, smoothing=smoothing))
        theta[rows] = _batched_lbfgs(restricted(stage, rows), theta[rows], max_iter, tol)
        rows = rows[flat_penalty[rows] > 0]
        if rows.numel() and (smoothing <= EXACT_SMOOTHING or stage_index + 1 == len(schedule)):
            found, solved = exact_solver(features[task[rows]], labels[task[rows]], weight[task[rows]],
                                         flat_penalty[rows], theta[rows].view(-1, num_classes, width), dim)
            theta[rows] = found.view(len(rows), -1)
            fitting[rows[solved]] = False
        value = exact(theta)
        better = value <= best_value  # ties go to the later stage
        best = torch.where(better.unsqueeze(-1), theta, best)
        best_value = torch.where(better, value, best_value)
        if not bool(fitting.any()):
            break
    return _split_intercepts(best, grid, bias, dim)


def _split_intercepts(theta: torch.Tensor, grid: int, bias: bool, dim: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Flat heads ``(P·L, K·w)`` → weights ``(P, L, K, d)`` and intercepts ``(P, L, K)`` (None without bias)."""
    theta = theta.view(-1, grid, theta.shape[-1] // (dim + bias), dim + bias)
    if bias:
        return theta[..., :dim].contiguous(), theta[..., dim].contiguous()
    return theta, None


def _batched_lbfgs(
    evaluate: Callable[[torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor]],
    x: torch.Tensor,
    max_iter: int,
    tol: float,
    history: int = 10,
    max_line_search: int = 30,
    c1: float = 1e-4,
    c2: float = 0.9,
) -> torch.Tensor:
    """Minimise H independent functions at once, from the rows of ``x: (H, D)``.

    ``evaluate(points, rows)`` returns the values ``(h,)`` and gradients ``(h, D)`` of functions
    ``rows`` (an index ``(h,)``, or None for all H in order) at ``points: (h, D)``.

    Each row runs its own L-BFGS (two-loop recursion over its own last ``history`` pairs, its own
    weak-Wolfe line search by bisection and doubling, its own stop), all as tensor operations,
    one ``evaluate`` per line-search trial. One joint ``torch.optim.LBFGS`` on the summed
    objective would couple the rows: its curvature pairs mix heads of very different
    conditioning (a penalty grid spans 10⁴) and its line search resolves only the sum, so it needs
    many times the iterations and stalls far from each head's optimum as H grows.

    Rows that stop leave the working set, so the last few slow heads are evaluated alone. A row
    stops when its largest gradient entry is at most ``tol``, when a step no longer lowers its
    value beyond rounding, or when its line search finds no decrease (the float64 floor, or a
    kink of a non-smooth function: :func:`_fit_heads` smooths the hinge first).
    """
    total = x.shape[0]
    result = x.clone()
    rows = torch.arange(total, device=x.device)  # the working set: rows still running

    def evaluate_rows(points: torch.Tensor, which: torch.Tensor | None):
        """Evaluate the working-set rows ``which`` (None: all); the others come back as zeros."""
        picked = rows if which is None else rows[which]
        value, grad = evaluate(points if which is None else points[which], None if picked.numel() == total else picked)
        if which is None:
            return value, grad
        full_value, full_grad = torch.zeros_like(points[:, 0]), torch.zeros_like(points)
        full_value[which], full_grad[which] = value, grad
        return full_value, full_grad

    f, g = evaluate_rows(x, None)
    past_s = x.new_zeros(history, *x.shape)
    past_y = x.new_zeros(history, *x.shape)
    past_rho = x.new_zeros(history, total)  # 0 marks an empty or skipped slot, which the recursion ignores
    gamma = x.new_ones(total)  # initial inverse-Hessian scale sᵀy / yᵀy of the newest pair
    first = torch.ones(total, dtype=torch.bool, device=x.device)
    active = g.abs().amax(dim=-1) > tol
    newest, stored = history - 1, 0
    for _ in range(max_iter):
        if 2 * int(active.sum()) <= rows.numel():  # shrink the working set to the running rows
            result[rows] = x
            keep = active.nonzero().squeeze(-1)
            rows, x, f, g, gamma, first, active = (t[keep] for t in (rows, x, f, g, gamma, first, active))
            past_s, past_y, past_rho = past_s[:, keep], past_y[:, keep], past_rho[:, keep]
            if rows.numel() == 0:
                break
        # Two-loop recursion: direction = −H_k g, newest pair first, over the slots written so far (an
        # unwritten slot has ρ = 0 in every row and would change nothing); fused products on the slots'
        # views keep it at four small operations a slot each way (a fit of small tasks is bound by their
        # count: indexing the history and storing α cost as much again).
        order = [(newest - j) % history for j in range(stored)]
        s_slots, y_slots, rho_slots = past_s.unbind(0), past_y.unbind(0), past_rho.unbind(0)  # views, no copies
        q = g.clone()
        alpha = {}
        for j in order:
            alpha[j] = (rho_slots[j] * torch.linalg.vecdot(s_slots[j], q)).unsqueeze(-1)
            q.addcmul_(alpha[j], y_slots[j], value=-1.0)
        r = gamma.unsqueeze(-1) * q
        for j in reversed(order):
            beta = rho_slots[j] * torch.linalg.vecdot(y_slots[j], r)
            r.addcmul_(alpha[j] - beta.unsqueeze(-1), s_slots[j])
        direction = -r
        slope = (g * direction).sum(-1)  # (h,)
        uphill = slope >= 0  # rounding can spoil the recursion: fall back to steepest descent
        direction = torch.where(uphill.unsqueeze(-1), -g, direction)
        slope = torch.where(uphill, -(g * g).sum(-1), slope)
        step = torch.where(first, (1.0 / g.abs().sum(-1)).clamp(max=1.0), torch.ones_like(f))

        # Weak Wolfe line search, every searching row at once.
        low, high = torch.zeros_like(f), torch.full_like(f, float("inf"))
        searching = active.clone()
        new_x, new_f, new_g = x.clone(), f.clone(), g.clone()
        moved = torch.zeros_like(active)
        for _ in range(max_line_search):
            trial = torch.where(searching.unsqueeze(-1), x + step.unsqueeze(-1) * direction, x)
            trial_f, trial_g = evaluate_rows(trial, None if bool(searching.all()) else searching)
            armijo = searching & (trial_f <= f + c1 * step * slope)
            curved = (trial_g * direction).sum(-1) >= c2 * slope
            # keep the latest sufficient decrease (the largest such step so far) as a fallback
            new_x = torch.where(armijo.unsqueeze(-1), trial, new_x)
            new_f = torch.where(armijo, trial_f, new_f)
            new_g = torch.where(armijo.unsqueeze(-1), trial_g, new_g)
            moved |= armijo
            high = torch.where(searching & ~armijo, step, high)
            low = torch.where(armijo & ~curved, step, low)
            searching &= ~(armijo & curved)
            if not bool(searching.any()):
                break
            step = torch.where(torch.isinf(high), 2.0 * step, 0.5 * (low + high))

        s, y = new_x - x, new_g - g
        sy, yy = (s * y).sum(-1), (y * y).sum(-1)
        keep = moved & (sy > 1e-10 * (s * s).sum(-1).sqrt() * yy.sqrt())  # curvature pair usable
        newest = (newest + 1) % history
        stored = min(stored + 1, history)
        past_s[newest] = torch.where(keep.unsqueeze(-1), s, 0.0)
        past_y[newest] = torch.where(keep.unsqueeze(-1), y, 0.0)
        past_rho[newest] = torch.where(keep, 1.0 / torch.where(keep, sy, 1.0), 0.0)
        gamma = torch.where(keep, sy / torch.where(keep, yy, 1.0), gamma)
        first &= ~moved
        change = f - new_f
        x, f, g = new_x, new_f, new_g
        active &= moved & (g.abs().amax(dim=-1) > tol) & (change > 1e-16 * f.abs().clamp(min=1.0))
    result[rows] = x
    return result


def _smoothed_hinge(margins: torch.Tensor, smoothing: float) -> torch.Tensor:
    """The hinge smoothed at scale η = ``smoothing``: ℓ_η(v) = η·ln(1 + Σ_i exp((1 − v_i)/η)).

    The hinge max(0, 1 + max_i(−v_i)) is the largest of the K numbers {0, 1 − v_1, ..., 1 − v_{K−1}};
    ℓ_η is their soft maximum (the entropy smoothing of a max, [Nesterov05]): ℓ ≤ ℓ_η ≤ ℓ + η·ln K,
    equality on the right where all K tie, and ∇ℓ_η is (1/η)-Lipschitz in v.
    ``margins: (..., K−1)`` → ``(...)``.

    >>> v = torch.tensor([[-1.0], [1.0], [3.0]], dtype=torch.float64)  # K = 2
    >>> (_smoothed_hinge(v, 0.01) - hinge(v)).round(decimals=4)  # at most η·ln 2, reached at the kink v = 1
    tensor([0.0000, 0.0069, 0.0000], dtype=torch.float64)
    """
    if margins.shape[-1] == 1:  # K = 2: η·softplus((1 − v)/η), linear past (1 − v)/η = 40 (error η·e^{−40})
        return torch.nn.functional.softplus(1.0 - margins[..., 0], beta=1.0 / smoothing, threshold=40.0)
    zero = margins.new_zeros(margins.shape[:-1] + (1,))
    return smoothing * torch.logsumexp(torch.cat([zero, (1.0 - margins) / smoothing], dim=-1), dim=-1)


def _hinge_active_set(
    features: torch.Tensor,  # (h, n, w): w = d, or d + 1 with the intercept's column of ones
    labels: torch.Tensor,  # (h, n)
    weight: torch.Tensor,  # (h, n): the points' weights ω_i (a mean over the real points; 0 for padding)
    penalty: torch.Tensor,  # (h,), > 0
    theta: torch.Tensor,  # (h, K, w): the start
    dim: int,
    rounds: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact minimiser of F(θ) = Σ_i ω_i·hinge_i(θ) + penalty/2·‖θ_W‖² per head, from ``theta``.

    hinge_i is the largest of K affine pieces of θ, q_i0 = 0 (the own class y_i) and
    q_ij = 1 − (θ_{y_i} − θ_j)·x_i, so F is convex and piecewise quadratic: a primal active-set
    method (Nocedal & Wright, Numerical Optimization, 2nd ed., section 16.5) solves it exactly.
    Its working set holds, for each point, pieces that are equal and largest at θ (one piece for
    most points). Every round: (1) θ* and multipliers β minimise F's quadratic on the manifold
    where each point's working pieces stay tied (:func:`_tied_minimum`); (2) F's exact minimum
    along the segment to θ* (:func:`_line_search`): points whose maximum changes on the way
    get their new piece, and the point where the step stops joins its tie; (3) at θ* itself,
    drop a piece with a negative multiplier; if there is none, β_i weights point i's largest
    pieces, so 0 ∈ ∂F(θ*): θ* is the minimum. F never increases, and from a start near the
    optimum (a smoothed fit) a few rounds per point on the margin suffice.

    Returns θ ``(h, K, w)`` (the last iterate) and ``solved: (h,)``, False where ``rounds`` ran
    out or a linear system was singular (degenerate data).
    """
    count, points, width = features.shape
    num_classes = theta.shape[1]
    rounds = rounds if rounds is not None else 64 + 4 * (num_classes - 1) * width
    own = labels.unsqueeze(-1)  # (h, n, 1)
    wrong = torch.arange(num_classes - 1, device=labels.device)
    piece_class = torch.cat([own, wrong + (wrong >= own).long()], dim=-1)  # (h, n, K): the class of each piece
    offset = torch.ones(num_classes, dtype=features.dtype, device=features.device)
    offset[0] = 0.0  # q_im = offset_m + s_{class m} − s_{y_i}, s = θx the scores
    piece_index = torch.arange(num_classes, device=features.device)
    resolution = torch.finfo(features.dtype).eps ** 0.5
    weighted = weight.unsqueeze(-1) * features  # (h, n, w)
    own_sum = (own == piece_index).to(features.dtype).transpose(1, 2) @ weighted  # Σ_i ω_i e_{y_i} x_iᵀ: (h, K, w)
    result, solved = theta.clone(), torch.zeros(count, dtype=torch.bool, device=features.device)

    def slopes(theta):  # (h', n, K): the linear parts ⟨G_im, θ⟩ of the running heads' pieces
        scores = features @ theta.transpose(1, 2)  # (h', n, K)
        return scores.gather(-1, piece_class) - scores.gather(-1, own)

    run = torch.arange(count, device=features.device)  # the running heads (gathered again as they finish)
    now = offset + slopes(theta)  # (h, n, K): the pieces at θ
    working = torch.zeros(count, points, num_classes, dtype=torch.bool, device=features.device)
    working.scatter_(-1, now.argmax(dim=-1, keepdim=True), True)  # each point's largest piece
    real = (weight > 0).unsqueeze(-1)  # (h, n, 1)
    going = torch.ones(count, dtype=torch.bool, device=features.device)
    for _ in range(rounds):
        if 2 * int(going.sum()) <= going.numel():  # keep only the running heads
            result[run] = theta
            keep = going.nonzero().squeeze(-1)
            run, theta, now, working, going = run[keep], theta[keep], now[keep], working[keep], going[keep]
            features, weight, weighted, penalty = features[keep], weight[keep], weighted[keep], penalty[keep]
            own, piece_class, own_sum, real = own[keep], piece_class[keep], own_sum[keep], real[keep]
            if run.numel() == 0:
                break
        reference = working.to(torch.int8).argmax(dim=-1)  # (h', n): one working piece of each point
        anchored = torch.zeros_like(going)
        target, beta, ok = _tied_minimum(features, weighted, weight, penalty, piece_class, own_sum, working,
                                         reference, dim, theta, anchored)
        if width > dim and not bool(ok.all()):
            # Too few ties to pin the intercepts: F's quadratic is unbounded along them. Head for the
            # minimum with a proximal term λ/2‖θ_b − θ_b(now)‖² instead (still a descent direction);
            # such a target is no certificate, so its head cannot finish this round.
            anchored = ~ok
            again, beta_again, ok_again = _tied_minimum(features, weighted, weight, penalty, piece_class, own_sum,
                                                        working, reference, dim, theta, anchored)
            target = torch.where(anchored.view(-1, 1, 1), again, target)
            beta = torch.where(anchored.view(-1, 1, 1), beta_again, beta)
            ok = torch.where(anchored, ok_again, ok)
        moving = going & ok  # a singular system (degenerate data) stops its head where it is
        direction = torch.where(moving.view(-1, 1, 1), target - theta, 0.0)
        change = slopes(direction)  # along θ + t·direction each piece is now + t·change
        step, crossing, overtaker, stop = _line_search(theta, direction, now, change, working, reference, weight,
                                                       penalty, dim)
        step = torch.where(moving, step, 0.0)
        theta = theta + step.view(-1, 1, 1) * direction
        now = now + step.view(-1, 1, 1) * change
        # Points passed on the way have a new largest piece; the point the step stopped at ties.
        passed = moving.unsqueeze(-1) & (crossing < step.unsqueeze(-1))  # (h', n)
        working = torch.where(passed.unsqueeze(-1), overtaker.unsqueeze(-1) == piece_index, working)
        rows = (moving & (stop >= 0)).nonzero().squeeze(-1)
        working[rows, stop[rows], overtaker[rows, stop[rows]]] = True
        # At θ* itself: done if no multiplier is negative, else drop the most negative one. A zero
        # step that stops at no point means θ* − θ is no descent direction: θ is θ* up to rounding
        # (or, for an anchored target, the head can make no progress and gives up).
        still = moving & (step == 0.0) & (stop < 0)
        arrived = moving & ((step == 1.0) | still) & (stop < 0) & ~passed.any(dim=-1) & ~anchored
        lowest, drop = torch.where(working & real, beta, torch.inf).flatten(1).min(dim=-1)
        done = arrived & (lowest >= -resolution)  # β is computed to about √ε (_tied_minimum)
        rows = (arrived & ~done).nonzero().squeeze(-1)
        working[rows, drop[rows] // num_classes, drop[rows] % num_classes] = False
        solved[run[done]] = True
        going &= moving & ~done & ~(still & anchored)
    result[run] = theta
    return result, solved


def _line_search(theta, direction, now, change, working, reference, weight, penalty, dim):
    """The exact minimum of F along θ(t) = θ + t·direction (to θ*), t ∈ [0, 1], for :func:`_hinge_active_set`.

    F(θ(t)) = Σ_i ω_i max_m(now_im + t·change_im) + λ/2‖θ_W(t)‖² is convex and piecewise
    quadratic in t; its slope jumps up by ω_i·(change_im − change_ir) where a piece m overtakes
    point i's working pieces r (at t_i, the point's first crossing). Sorting the t_i gives the
    slope everywhere, hence the minimiser: inside a segment, or at a crossing where the slope
    turns from negative to non-negative. With K > 2 the overtaking piece may itself be overtaken
    later; the step stays short of the earliest such second crossing, where the first crossings
    stop describing F.

    Returns ``step: (h,)``, each point's first crossing ``t_i: (h, n)`` (inf: none before the
    end), its overtaking piece ``(h, n)``, and the point the step stopped at (−1: none) ``(h,)``.
    """
    count, points, num_classes = now.shape
    ref = reference.unsqueeze(-1)
    behind = now.gather(-1, ref) - now  # ≥ 0 off the working set
    closing = change - change.gather(-1, ref)  # how fast a piece gains on the working pieces
    catch = torch.where((closing > 0) & ~working & (weight > 0).unsqueeze(-1),
                        behind.clamp(min=0.0) / closing.clamp(min=torch.finfo(now.dtype).tiny), torch.inf)
    crossing, overtaker = catch.min(dim=-1)  # (h, n)
    end = torch.ones(count, dtype=now.dtype, device=now.device)
    if num_classes > 2:  # the next piece to overtake the overtaker, after the first crossing
        lead = change.gather(-1, overtaker.unsqueeze(-1))
        gain = change - lead
        again = (now.gather(-1, overtaker.unsqueeze(-1)) - now) / gain.clamp(min=torch.finfo(now.dtype).tiny)
        again = torch.where((gain > 0) & (again > crossing.unsqueeze(-1)), again, torch.inf).amin(dim=-1)
        end = torch.minimum(end, torch.where(crossing <= 1.0, again, torch.inf).amin(dim=-1))
    direction = direction[..., :dim]
    slope = (weight * change.gather(-1, ref).squeeze(-1)).sum(-1) + penalty * (theta[..., :dim] * direction).sum(
        (-1, -2))  # (h,): at t = 0
    curvature = penalty * direction.square().sum((-1, -2))  # (h,)
    # Most points never cross: sort only the c crossings within reach (padded with inf).
    within = crossing <= end.unsqueeze(-1)  # (h, n)
    head, point = within.nonzero(as_tuple=True)
    per_head = within.sum(dim=-1)
    slot = torch.arange(len(head), device=head.device) - (per_head.cumsum(0) - per_head)[head]
    times = torch.full((count, max(int(per_head.max()), 1)), torch.inf, dtype=now.dtype, device=now.device)
    order = torch.full(times.shape, -1, dtype=torch.long, device=now.device)
    gains = weight * closing.gather(-1, overtaker.unsqueeze(-1)).squeeze(-1)  # (h, n): the slope's jump at t_i
    times[head, slot], order[head, slot] = crossing[head, point], point
    times, sort = times.sort(dim=-1)  # (h, c), increasing
    order = order.gather(-1, sort)
    jumps = torch.where(order >= 0, gains.gather(-1, order.clamp(min=0)), 0.0)
    before = slope.unsqueeze(-1) + jumps.cumsum(-1) - jumps  # the slope just before each, less curvature·t
    slope_before = before + curvature.unsqueeze(-1) * torch.where(order >= 0, times, 0.0)
    turns = (order >= 0) & (slope_before + jumps >= 0)  # the slope is non-negative just after this crossing
    first = turns.to(torch.int8).argmax(dim=-1, keepdim=True)  # (h, 1): the earliest such
    has = turns.any(dim=-1)
    base = torch.where(has, before.gather(-1, first).squeeze(-1), slope + jumps.sum(-1))
    zero = -base / curvature.clamp(min=torch.finfo(now.dtype).tiny)  # where the slope's linear part vanishes
    at_crossing = has & (slope_before.gather(-1, first).squeeze(-1) < 0)
    step = torch.where(at_crossing, times.gather(-1, first).squeeze(-1), torch.minimum(zero, end))
    step = torch.where(within.any(dim=-1), step.clamp(0.0, 1.0), end)  # no crossing: θ* itself (or the bound)
    stop = torch.where(at_crossing, order.gather(-1, first).squeeze(-1), -1)
    return step, crossing, overtaker, stop


def _tied_minimum(features, weighted, weight, penalty, piece_class, own_sum, working, reference, dim, theta,
                  anchored):
    """Step (1) of :func:`_hinge_active_set`: θ* ``(h, K, w)``, multipliers β ``(h, n, K)``, solvable ``(h,)``.

    Piece m of point i is q_im = c_m + ⟨u_im x_iᵀ, θ⟩ with u_im = e_{class m} − e_{y_i} and c_m = 1
    (u = 0, c = 0 for the own piece m = 0). Each tie t = (i, m) of a working piece m with the
    point's reference piece r = r_i has a_t = u_im − u_ir, e_t = c_m − c_r and multiplier
    b_t = ω_i β_im; R = Σ_i ω_i u_ir x_iᵀ. Stationarity, λθ_W = −R_W − Σ_t b_t a_t x_tWᵀ, turns the
    ties ⟨a_t x_tᵀ, θ⟩ + e_t = 0 into Σ_s (x_tW·x_sW)(a_t·a_s) b_s − λ a_t·θ_b = λe_t − a_tᵀR_W x_tW,
    one equation per tie. An intercept θ_b (unpenalised) adds R_b + Σ_t b_t a_t = 0, and its common
    shift, which no piece sees, is fixed by Σ_k θ_bk = 0 (kept by every step). Heads ``anchored: (h,)``
    add λ/2‖θ_b − θ_b(now)‖² (``theta``'s intercepts), for when too few ties pin the intercepts.
    Slots beyond a head's ties are identity rows.
    """
    count, points, width = features.shape
    num_classes = own_sum.shape[1]
    ties = working & (reference.unsqueeze(-1) != torch.arange(working.shape[-1], device=working.device))
    per_head = ties.sum(dim=(1, 2))  # (h,)
    size = int(per_head.max())
    head, point, piece = ties.nonzero(as_tuple=True)
    slot = torch.arange(len(head), device=head.device) - (per_head.cumsum(0) - per_head)[head]
    ref = reference[head, point]
    classes = torch.eye(num_classes, dtype=features.dtype, device=features.device)
    x = features.new_zeros(count, size, width)
    a = features.new_zeros(count, size, num_classes)
    e = features.new_zeros(count, size)
    used = torch.zeros(count, size, dtype=torch.bool, device=features.device)
    x[head, slot] = features[head, point]
    a[head, slot] = classes[piece_class[head, point, piece]] - classes[piece_class[head, point, ref]]
    e[head, slot] = (piece > 0).to(e.dtype) - (ref > 0).to(e.dtype)
    used[head, slot] = True
    reference_class = piece_class.gather(-1, reference.unsqueeze(-1))  # (h, n, 1)
    chosen = reference_class == torch.arange(num_classes, device=features.device)  # (h, n, K)
    R = chosen.to(features.dtype).transpose(1, 2) @ weighted - own_sum  # (h, K, w)
    lam = penalty.unsqueeze(-1)  # (h, 1)
    xw = x[..., :dim]
    gram = (xw @ xw.transpose(1, 2)) * (a @ a.transpose(1, 2))  # (h, T, T)
    gram = torch.where(used.unsqueeze(-1) & used.unsqueeze(-2), gram, torch.diag_embed((~used).to(x.dtype)))
    rhs = torch.where(used, lam * e - ((a @ R[..., :dim]) * xw).sum(-1), 0.0)  # (h, T)
    if width > dim:  # the intercept's unknowns θ_b (K) after the T multipliers
        a_b = (a * used.unsqueeze(-1)).transpose(1, 2)  # (h, K, T)
        proximal = torch.where(anchored, penalty, 0.0).view(-1, 1, 1)  # (h, 1, 1)
        block = features.new_ones(count, num_classes, num_classes) + proximal * torch.eye(
            num_classes, dtype=features.dtype, device=features.device)
        system = torch.cat([torch.cat([gram, -lam.unsqueeze(-1) * a_b.transpose(1, 2)], dim=-1),
                            torch.cat([a_b, block], dim=-1)], dim=1)
        rhs = torch.cat([rhs, proximal.squeeze(-1) * theta[..., dim] - R[..., dim]], dim=-1)
    else:
        system = gram
    # Ties whose gradients are (nearly) dependent, as copies of one point, make the system singular:
    # such a head reports failure instead of following a meaningless solution. Pivots spanning more
    # than 1/√ε lose over half the digits; short of that, β is good to about √ε.
    solution, solvable = rhs, torch.ones(count, dtype=torch.bool, device=features.device)
    if system.shape[-1]:  # else no ties and no intercept: θ* = −R_W/λ
        factors, pivots, info = torch.linalg.lu_factor_ex(system)
        diagonal = factors.diagonal(dim1=-2, dim2=-1).abs()
        resolution = torch.finfo(system.dtype).eps ** 0.5
        solvable = (info == 0) & (diagonal.amin(dim=-1) > resolution * diagonal.amax(dim=-1))
        factors = torch.where(solvable.view(-1, 1, 1), factors, torch.eye(system.shape[-1], dtype=system.dtype,
                                                                           device=system.device))
        solution = torch.linalg.lu_solve(factors, pivots, rhs.unsqueeze(-1)).squeeze(-1)
    b = solution[:, :size]
    theta = torch.empty_like(own_sum)
    theta[..., :dim] = -(R[..., :dim] + (b.unsqueeze(-1) * a).transpose(1, 2) @ xw) / lam.unsqueeze(-1)
    if width > dim:
        theta[..., dim] = solution[:, size:]
    beta = features.new_zeros(count, points, num_classes)
    beta[head, point, piece] = b[head, slot] / weight[head, point]
    beta.scatter_(-1, reference.unsqueeze(-1), 1.0 - beta.sum(dim=-1, keepdim=True))
    return theta, beta, solvable

_SOFTMAX_FAMILY: dict[Loss, float] = {cross_entropy: 1.0, logistic: 1.0 / LN2}
"""Losses that are a multiple of the softmax cross-entropy ln(1 + Σ_j e^{−v_j}) (``logistic`` is it in
base 2): their heads are fitted with the closed-form gradient of ``_fit_heads``' ``softmax_evaluate``."""

_KINKED: dict[Loss, tuple[Callable[..., torch.Tensor], Callable[..., tuple[torch.Tensor, torch.Tensor]]]] = {
    hinge: (_smoothed_hinge, _hinge_active_set),
}
"""Losses with kinks: their smoothed family ``f(margins, smoothing)`` and their exact solver."""

EXACT_SMOOTHING = 0.01
"""A kinked loss's exact solver first runs after the stage at this η (or after the last stage, if the
schedule ends above it), then after every stage. Its rounds add the points reaching the margin about one
at a time, so a closer start saves more rounds than the extra smoothed stage costs: measured on the L_sup
heads of benchmarks/bench_hinge.py (one thread), 170 → 156 ms (small config) and 285 → 210 ms (default)
from η = 1/10 to 1/100; from 1/1000, 247 and 258 ms."""

MIN_SMOOTHING = 1e-12
"""The finest η of a schedule, whatever ``tol``: below it η·ln K is lost in the rounding of objectives."""


def _smoothing_schedule(tol: float) -> list[float]:
    """η = 1/10, 1/100, ... down to the first η ≤ ``tol`` (or ``MIN_SMOOTHING``).

    In the hinge's margin unit (1), η = 1/10 already smooths each kink over a tenth of it, close
    enough for the exact solver to finish from (it starts one stage later, at ``EXACT_SMOOTHING``,
    where that is faster); each tenfold step keeps the previous stage's end a good start.

    >>> _smoothing_schedule(1e-3)
    [0.1, 0.01, 0.001]
    """
    stages = [0.1]
    while stages[-1] > max(tol, MIN_SMOOTHING):
        stages.append(10.0 ** -(len(stages) + 1))
    return stages


def _margin_index(labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather indices of the true class ``(..., 1, 1)`` and of the wrong ones ``(..., 1, K−1)``.

    The wrong classes of label y, in increasing order, are j for j < y and j + 1 for j ≥ y: the
    order of :func:`~preadapt.objectives.losses.margins_from_scores`.
    """
    wrong = torch.arange(num_classes - 1, device=labels.device)  # (K−1,)
    own = labels.unsqueeze(-1)  # (..., 1)
    others = wrong + (wrong >= own).long()  # (..., K−1)
    return own.unsqueeze(-2), others.unsqueeze(-2)


def _point_weights(labels: torch.Tensor, mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """Weights ``(P, n)`` that turn a sum over points into each task's mean over its real points."""
    if mask is None:
        return torch.full(labels.shape, 1.0 / labels.shape[1], dtype=dtype, device=labels.device)
    if mask.shape != labels.shape:
        raise ValueError(f"mask must have the shape of labels {tuple(labels.shape)}; got {tuple(mask.shape)}")
    mask = mask.to(dtype)
    counts = mask.sum(dim=1, keepdim=True)
    if bool((counts == 0).any()):
        raise ValueError("every task needs at least one point with mask True")
    return mask / counts


def _as_tasks(X: torch.Tensor, y: torch.Tensor, x_name: str, y_name: str,
              dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Accept one task ``(n, d)``/``(n,)`` as P = 1; cast features to ``dtype``."""
    if X.dim() == 2:
        X, y = X.unsqueeze(0), y.unsqueeze(0)
    if X.dim() != 3:
        raise ValueError(f"{x_name} must be (P, n, d) or (n, d); got shape {tuple(X.shape)}")
    if y.shape != X.shape[:2]:
        raise ValueError(f"{y_name} must have shape {tuple(X.shape[:2])} to match {x_name}; got {tuple(y.shape)}")
    return X.to(dtype), y


def _check_tasks(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    if features.dim() != 3 or not features.is_floating_point():
        raise ValueError(
            f"features must be a floating (P, n, d) tensor; got shape {tuple(features.shape)}, dtype {features.dtype}"
        )
    if labels.shape != features.shape[:2]:
        raise ValueError(f"labels must have shape {tuple(features.shape[:2])}; got {tuple(labels.shape)}")
    if labels.numel() == 0:
        raise ValueError("no training points: n must be >= 1")
    labels = labels.long()
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}); got range [{low}, {high}]")
    return features, labels


def keep_best_heads(candidates: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor, loss) -> tuple[
        torch.Tensor, torch.Tensor]:
    """For each task the candidate head with the lowest mean loss on its validation points.

    ``candidates: (L, P, K, d)`` heads (the first is W^μ̂ for L_sup), ``val_x: (P, n, d)``, ``val_y: (P, n)``
    → the kept heads (P, K, d) and every candidate's validation loss (L, P). A fitted W only
    upper-bounds inf_W; keeping W^μ̂ among the candidates makes L_sup ≤ L^μ_sup hold on validation,
    task by task (THEORY.md section 3).
    """
    val_losses = torch.stack([linear_head_losses(val_x, val_y, w, loss=loss).mean(-1) for w in candidates])  # (L, P)
    return candidates[val_losses.argmin(0), torch.arange(candidates.shape[1])], val_losses
