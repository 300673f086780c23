"""The adapters on frozen features: the mean classifier and the linear probe ([Arora19], THEORY.md
section 4). Both fit every task at once from the features the estimate loop encoded once."""

from __future__ import annotations

from typing import Sequence

import torch

from preadapt.adapt.base import AdaptTask, Adapter, FrozenHeads, LinearAdapterConfig, MeanAdapterConfig
from preadapt.adapt.linear import LinearProbe, fit_linear_heads, keep_best_heads
from preadapt.adapt.mean_classifier import MeanClassifier

PROBE_TOL = 1e-4  # gradient tolerance of the fitted heads: scikit-learn's default for LogisticRegression
PROBE_MAX_ITER = 200
SUP_PENALTIES = (1e-4, 1e-3, 1e-2, 1e-1)
"""Penalties of the candidate heads of the linear adapter's L*_adapt fit (L_sup); with W^μ̂ itself,
the best on validation is kept. No zero penalty: on (nearly) separable tasks the unpenalised fit runs
off to a huge norm and its test loss explodes on the few points it gets wrong."""


class MeanAdapter(Adapter):
    """The mean classifier W^μ̂ of each task: μ̂_c the mean of the task's training points of class c,
    scored by inner product ([Arora19]; μ-5 is this adapter at 5 shots). It chooses nothing and
    ignores the validation points.

    >>> from preadapt.adapt.base import TaskPoints
    >>> train = TaskPoints(torch.tensor([[[1.0, 0.0], [3.0, 0.0], [0.0, 1.0]]], dtype=torch.float64),
    ...                    torch.tensor([[0, 0, 1]]))
    >>> task = AdaptTask(train, train, 2, None, None, None, False, None)
    >>> MeanAdapter().fit(task).weights  # μ̂_0 = (2, 0), μ̂_1 = (0, 1)
    tensor([[[2., 0.],
             [0., 1.]]], dtype=torch.float64)
    """

    def fit(self, task: AdaptTask) -> FrozenHeads:
        means = [MeanClassifier().fit(x, y, num_classes=task.classes).means_
                 for x, y in zip(task.train.features, task.train.labels)]
        return FrozenHeads(torch.stack(means))


class LinearAdapter(Adapter):
    """Linear heads on frozen features.

    Few-shot fits (``task.star`` False): the softmax-regression probe with an intercept, its L2
    penalty chosen per task among ``penalties`` on the validation points (``LinearProbe``). The fit
    of L*_adapt (``task.star``): the best linear head without bias, L_sup of [Arora19]: candidates
    W^μ̂ (``task.reference``) and heads fitted from it with the penalties ``SUP_PENALTIES`` under ℓ;
    each task keeps the candidate with the lowest ℓ on its validation points. A fitted W only
    upper-bounds inf_W E ℓ; keeping W^μ̂ among the candidates makes L_sup ≤ L^μ_sup on validation,
    task by task (THEORY.md section 3).
    """

    star_quantity = "L_sup"

    def __init__(self, penalties: Sequence[float], tol: float = PROBE_TOL, max_iter: int = PROBE_MAX_ITER) -> None:
        self.penalties = tuple(penalties)
        self.tol = tol
        self.max_iter = max_iter

    def fit(self, task: AdaptTask) -> FrozenHeads:
        train, val = task.train, task.validation
        if not task.star:
            probe = LinearProbe(penalties=self.penalties, tol=self.tol, max_iter=self.max_iter)
            probe.fit(train.features, train.labels, val.features, val.labels, num_classes=task.classes)
            return FrozenHeads(probe.coef_, probe.intercept_, {"penalty": float(probe.penalty_.double().mean())})
        P, grid = train.tasks, len(SUP_PENALTIES)
        start = task.reference.to(torch.float64)  # (P, K, d): W^μ̂
        fitted, _ = fit_linear_heads(train.features.repeat(grid, 1, 1), train.labels.repeat(grid, 1), task.classes,
                                     task.loss, penalty=torch.tensor(SUP_PENALTIES, dtype=torch.float64).repeat_interleave(P),
                                     init=start.repeat(grid, 1, 1), max_iter=self.max_iter, tol=self.tol)
        candidates = torch.cat([start.unsqueeze(0), fitted.view(grid, P, task.classes, -1)])
        best, _ = keep_best_heads(candidates, val.features, val.labels, task.loss)
        return FrozenHeads(best)


def build_mean(config: MeanAdapterConfig, evaluate) -> MeanAdapter:
    return MeanAdapter()


def build_linear(config: LinearAdapterConfig, evaluate) -> LinearAdapter:
    """``evaluate``: the run's EvaluateConfig (its ``probe_penalties`` unless the adapter sets its own)."""
    penalties = config.penalties if config.penalties is not None else evaluate.probe_penalties
    return LinearAdapter(penalties)
