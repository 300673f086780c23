"""The adapters on frozen features: the mean classifier and the linear probe ([Arora19], THEORY.md
section 4). Both fit every task at once from the features the estimate loop encoded once."""

from __future__ import annotations

from typing import Sequence

import torch

from preadapt.adapt.base import AdaptTask, Adapter, FrozenHeads, LinearAdapterConfig, MeanAdapterConfig
from preadapt.adapt.linear import LinearProbe, fit_linear_heads, keep_best_heads
from preadapt.adapt.mean_classifier import MeanClassifier
from preadapt.objectives.losses import hinge

PROBE_TOL = 1e-4  # gradient tolerance of the fitted heads: scikit-learn's default for LogisticRegression
PROBE_MAX_ITER = 200
FIT_DTYPE = torch.float32
"""The linear adapter fits its heads in float32 (hinge heads excepted), where the batched L-BFGS's
matrix products and exponentials run about twice as fast as in float64; it then scores, chooses and
measures them in float64. On the demo preset's trained encoder this moved every estimate by at most
0.4 % of its interval's half-width (docs/benchmarks.md): both precisions stop at the same gradient
tolerance, which determines the heads only to within what that tolerance allows anyway."""
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
        """Every task's class means at once: one ``MeanClassifier`` over the (task, class) pairs as
        classes, the points in the same order (the same numbers as one fit per task)."""
        features, labels = task.train.features, task.train.labels  # (P, n, d), (P, n)
        tasks, _, dim = features.shape
        pair = (labels + task.classes * torch.arange(tasks, device=labels.device).unsqueeze(1)).reshape(-1)  # (P·n,)
        empty = (torch.bincount(pair, minlength=tasks * task.classes) == 0).nonzero()
        if len(empty):  # said per task, before MeanClassifier says it of a pair
            empty = int(empty[0])
            raise ValueError(f"task {empty // task.classes} has no training point of class {empty % task.classes}; "
                             f"the mean classifier needs at least one point per class")
        means = MeanClassifier().fit(features.reshape(-1, dim), pair, num_classes=tasks * task.classes).means_
        return FrozenHeads(means.view(tasks, task.classes, dim))


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
            probe = LinearProbe(penalties=self.penalties, tol=self.tol, max_iter=self.max_iter, dtype=FIT_DTYPE)
            probe.fit(train.features, train.labels, val.features, val.labels, num_classes=task.classes)
            return FrozenHeads(probe.coef_.double(), probe.intercept_.double(),
                               {"penalty": float(probe.penalty_.double().mean())})
        P, grid = train.tasks, len(SUP_PENALTIES)
        start = task.reference.to(torch.float64)  # (P, K, d): W^μ̂
        # the hinge's exact active-set solver certifies its optimum at float64's resolution: it stays float64
        dtype = torch.float64 if task.loss is hinge else FIT_DTYPE
        fitted, _ = fit_linear_heads(train.features.to(dtype).repeat(grid, 1, 1), train.labels.repeat(grid, 1),
                                     task.classes, task.loss,
                                     penalty=torch.tensor(SUP_PENALTIES, dtype=torch.float64).repeat_interleave(P),
                                     init=start.to(dtype).repeat(grid, 1, 1), max_iter=self.max_iter, tol=self.tol)
        candidates = torch.cat([start.unsqueeze(0), fitted.double().view(grid, P, task.classes, -1)])
        best, _ = keep_best_heads(candidates, val.features, val.labels, task.loss)
        return FrozenHeads(best)


def build_mean(config: MeanAdapterConfig, evaluate) -> MeanAdapter:
    return MeanAdapter()


def build_linear(config: LinearAdapterConfig, evaluate) -> LinearAdapter:
    """``evaluate``: the run's EvaluateConfig (its ``probe_penalties`` unless the adapter sets its own)."""
    penalties = config.penalties if config.penalties is not None else evaluate.probe_penalties
    return LinearAdapter(penalties)
