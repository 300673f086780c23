"""Exact AVG-k and TOP-R of a fixed scoring rule, with intervals over test points.

AVG-k of [Arora19] averages, over k-class tasks T, the class-balanced accuracy of the argmax of the
scores restricted to T (a tie counts as an error). THEORY.md section 4: with m(x) the number of
classes a test point x of class a beats strictly, x is right in a uniformly random task containing
a with probability C(m(x), k−1)/C(|C|−1, k−1), so no task is ever enumerated. Under a prior ρ,
P(T) ∝ Π_{c∈T} ρ(c) and the same role is played by elementary symmetric polynomials e_j.

Every quantity is a class-weighted mean Σ_a w_a · mean_{x∈a} p(x) of per-point values p, so the
per-point functions work on any block of rows and ``class_weighted_estimate`` turns the values of a
whole test set (or of blocks streamed and concatenated) into an Estimate.
"""

from __future__ import annotations

import functools
import math
import operator

import numpy as np
import torch

from preadapt.estimate.estimate import Estimate, stratified_mean
from preadapt.worlds.prior import as_prior, elementary_symmetric

BLOCK = 4096
"""Rows of the N × C score matrix handled at once: memory is O(BLOCK · C), not O(N · C)."""


def beaten_mask(scores, labels) -> torch.Tensor:
    """Which classes each point beats: entry [x, b] is b ≠ a and score(x, b) < score(x, a), a = label.

    ``scores: (N, C)``, ``labels: (N,)`` in [0, C) → ``(N, C)`` bool. Strict: a tie is not beaten,
    so it counts as an error (THEORY.md section 4). Comparisons are exact in any float dtype.

    >>> scores = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 5.0], [1.0, 0.0, 4.0]])
    >>> beaten_mask(scores, torch.tensor([0, 1, 2]))
    tensor([[False,  True,  True],
            [ True, False, False],
            [ True,  True, False]])
    """
    scores, labels = _as_inputs(scores, labels)
    own = scores.gather(1, labels[:, None])  # (N, 1)
    return scores < own  # (N, C); the own column is never < itself


def avg_k_point_probabilities(scores, labels, k: int, prior=None, block: int = BLOCK) -> torch.Tensor:
    """p(x) = P(x is classified correctly | a random k-class task contains its class a).

    ``scores: (N, C)``, ``labels: (N,)`` → ``(N,)`` float64. With B(x) the classes x beats and
    m(x) = |B(x)| (THEORY.md section 4, [Arora19]):

    - uniform tasks (``prior=None``): p(x) = C(m(x), k−1) / C(C−1, k−1);
    - P(T) ∝ Π_{c∈T} ρ(c): p(x) = e_{k−1}(ρ|B(x)) / e_{k−1}(ρ without a).

    Rows are independent, so any block of test points may be passed.

    >>> scores = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 5.0], [1.0, 0.0, 4.0]])
    >>> avg_k_point_probabilities(scores, torch.tensor([0, 1, 2]), k=2)
    tensor([1.0000, 0.5000, 1.0000], dtype=torch.float64)
    >>> avg_k_point_probabilities(scores, torch.tensor([0, 1, 2]), k=2, prior=[0.5, 0.25, 0.25])
    tensor([1.0000, 0.6667, 1.0000], dtype=torch.float64)
    """
    scores, labels = _as_inputs(scores, labels)
    k = _check_k(k, scores.shape[1])
    if prior is None:
        table = _uniform_table(scores.shape[1], k)  # (C,) indexed by m(x)
        return torch.from_numpy(table[_beaten_counts(scores, labels, block)])
    weights = _task_weights(prior, scores.shape[1], k)
    out = np.empty(scores.shape[0])
    for rows, beaten in _beaten_blocks(scores, labels, block):
        numerator = _restricted_esp(beaten, weights, k - 1)
        out[rows] = numerator / _leave_one_out_esp(weights, k - 1, labels[rows].cpu().numpy())
    return torch.from_numpy(np.minimum(out, 1.0))


def avg_k_class_weights(classes: int, k: int, prior=None) -> np.ndarray:
    """w_a with AVG-k = Σ_a w_a · mean_{x∈a} p(x): w_a = P(a ∈ T)/k, summing to 1.

    Uniform tasks give w_a = 1/C. Under P(T) ∝ Π_{c∈T} ρ(c), P(a ∈ T) = ρ(a)·e_{k−1}(ρ without a)
    / e_k(ρ); with p(x) above this is THEORY.md's AVG-k_ρ = (1/(k·e_k(ρ))) Σ_a ρ(a) mean_{x∈a}
    e_{k−1}(ρ|B(x)).

    >>> avg_k_class_weights(3, 2, prior=[0.5, 0.25, 0.25]).round(4)
    array([0.4, 0.3, 0.3])
    """
    k = _check_k(k, classes)
    if prior is None:
        return np.full(classes, 1.0 / classes)
    weights = _task_weights(prior, classes, k)
    leave_one_out = _leave_one_out_esp(weights, k - 1, np.arange(classes))
    return weights * leave_one_out / (k * elementary_symmetric(weights, k)[k])


def avg_k_accuracy(scores, labels, k: int, prior=None, block: int = BLOCK) -> float:
    """Exact AVG-k: the mean over k-class tasks of the task's class-balanced restricted accuracy.

    Tasks are uniform over k-subsets, or P(T) ∝ Π_{c∈T} ρ(c) with ``prior`` ρ: (C,) weights or
    anything ``as_prior`` accepts (normalised there). ``scores: (N, C)``, ``labels: (N,)``. Every
    class a task can contain needs a test point.
    THEORY.md section 4, [Arora19].

    >>> scores = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 5.0], [1.0, 0.0, 4.0]])
    >>> round(avg_k_accuracy(scores, torch.tensor([0, 1, 2]), k=2), 4)
    0.8333
    >>> round(avg_k_accuracy(scores, torch.tensor([0, 1, 2]), k=2, prior=[0.5, 0.25, 0.25]), 4)
    0.9
    """
    return avg_k_estimate(scores, labels, k, prior=prior, block=block).value


def avg_k_estimate(
    scores, labels, k: int, prior=None, level: float = 0.95, block: int = BLOCK
) -> Estimate:
    """AVG-k with a normal interval over test points: a stratified mean of p(x), strata = classes.

    The value equals ``avg_k_accuracy``; the interval reflects the finite test set per class
    (the tasks are averaged exactly). ``scores: (N, C)``, ``labels: (N,)``.

    >>> scores = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 5.0], [1.0, 0.0, 4.0], [2.0, 1.0, 0.0]])
    >>> e = avg_k_estimate(scores, torch.tensor([0, 1, 2, 2]), k=2)
    >>> round(e.value, 4), round(e.lower, 4), e.n, e.method  # one class of two points: 1 degree of freedom
    (0.6667, -1.451, 4, 'normal')
    """
    scores, labels = _as_inputs(scores, labels)
    class_weights = avg_k_class_weights(scores.shape[1], k, prior)
    _check_covered(labels, class_weights)
    values = avg_k_point_probabilities(scores, labels, k, prior=prior, block=block)
    return class_weighted_estimate(values, labels, class_weights, level)


def top_r_point_hits(scores, labels, r: int, block: int = BLOCK) -> torch.Tensor:
    """Whether x's class is in the top r of all C scores with ties as errors: m(x) ≥ C − r.

    ``scores: (N, C)``, ``labels: (N,)`` → ``(N,)`` bool; any block of rows may be passed.

    >>> scores = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 5.0], [1.0, 0.0, 4.0]])
    >>> top_r_point_hits(scores, torch.tensor([0, 1, 2]), r=1)
    tensor([ True, False,  True])
    """
    scores, labels = _as_inputs(scores, labels)
    classes = scores.shape[1]
    r = operator.index(r)
    if not 1 <= r <= classes:
        raise ValueError(f"r must be in [1, C] = [1, {classes}]; got {r}")
    return torch.from_numpy(_beaten_counts(scores, labels, block) >= classes - r)


def top_r_estimate(
    scores, labels, r: int, prior=None, level: float = 0.95, block: int = BLOCK
) -> Estimate:
    """TOP-R of [Arora19] on the full C-way problem, class a weighted by ρ(a) (1/C by default).

    A stratified mean of ``top_r_point_hits`` (THEORY.md section 4): the accuracy as if test
    points came from the class marginal ρ. ``scores: (N, C)``, ``labels: (N,)``.

    >>> scores = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 5.0], [1.0, 0.0, 4.0]])
    >>> e = top_r_estimate(scores, torch.tensor([0, 1, 2]), r=2)
    >>> e.value, e.n
    (1.0, 3)
    """
    scores, labels = _as_inputs(scores, labels)
    classes = scores.shape[1]
    class_weights = np.full(classes, 1.0 / classes) if prior is None else as_prior(prior, classes)
    _check_covered(labels, class_weights)
    hits = top_r_point_hits(scores, labels, r, block=block)
    return class_weighted_estimate(hits, labels, class_weights, level)


def top_r_accuracy(scores, labels, r: int, prior=None, block: int = BLOCK) -> float:
    """The value of ``top_r_estimate``: Σ_a ρ(a) · P(x of class a has its class in the top r).

    >>> scores = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 5.0], [1.0, 0.0, 4.0]])
    >>> round(top_r_accuracy(scores, torch.tensor([0, 1, 2]), r=1), 4)
    0.6667
    """
    return top_r_estimate(scores, labels, r, prior=prior, block=block).value


def class_weighted_estimate(point_values, labels, class_weights, level: float = 0.95) -> Estimate:
    """Σ_a w_a · mean_{x∈a} v(x) with a normal interval, via ``stratified_mean`` over classes.

    ``point_values: (N,)``, ``labels: (N,)`` in [0, C), ``class_weights: (C,)`` (summing to 1 for
    a mean). Every class of positive weight needs a point.

    >>> e = class_weighted_estimate([1.0, 0.0, 1.0, 1.0], [0, 0, 1, 1], [0.5, 0.5])
    >>> e.value, round(e.se, 4)
    (0.75, 0.25)
    """
    values = torch.as_tensor(point_values).detach().to("cpu", torch.float64).numpy().reshape(-1)
    labels = _as_labels(labels, len(class_weights)).cpu().numpy()
    if values.shape != labels.shape:
        raise ValueError(f"point_values has {values.size} entries but labels has {labels.size}")
    class_weights = np.asarray(class_weights, dtype=np.float64)
    _check_covered(torch.as_tensor(labels), class_weights)
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=class_weights.size)
    groups = np.split(values[order], np.cumsum(counts)[:-1])  # C groups, by class
    return stratified_mean(groups, class_weights, level)


def _restricted_esp(mask: np.ndarray, weights: np.ndarray, order: int) -> np.ndarray:
    """e_order(weights restricted to each row's mask): ``mask: (n, C)`` bool → ``(n,)``, O(n·C·order).

    The recursion e_j ← e_j + w_c·e_{j−1} over classes c (as ``elementary_symmetric``), vectorised
    over rows; classes of weight 0 are skipped. numpy: torch's per-op overhead dominates here.
    """
    mask_by_class = np.ascontiguousarray(mask.T)  # (C, n)
    e = np.zeros((order + 1, mask.shape[0]))  # (order+1, n)
    e[0] = 1.0
    step = np.empty((order, mask.shape[0]))
    for c in np.flatnonzero(weights):
        np.multiply(e[:-1], weights[c] * mask_by_class[c], out=step)
        e[1:] += step
    return e[order]


def _leave_one_out_esp(weights: np.ndarray, order: int, classes: np.ndarray) -> np.ndarray:
    """e_order(weights without class a) for each a in ``classes: (n,)`` → ``(n,)``."""
    distinct, inverse = np.unique(classes, return_inverse=True)
    out = np.empty(distinct.size)
    for rows in _blocks(distinct.size, BLOCK):
        others = np.arange(weights.size)[None, :] != distinct[rows, None]  # (n, C)
        out[rows] = _restricted_esp(others, weights, order)
    return out[inverse.reshape(-1)]


def _task_weights(prior, classes: int, k: int) -> np.ndarray:
    """ρ scaled to total (k−1)/e, a positive constant the ratios p(x) and w_a do not depend on.

    e_j of weights with total s is at most s^j/j!, so e_{k−1} of the whole prior is at most
    about 1/√(2πk) and no e_j exceeds e^s: float64 neither overflows nor loses the ratio for k up
    to ~1900 (scaling by C instead overflows near k ≈ 180 for C = 3029).
    """
    rho = as_prior(prior, classes)
    support = int(np.count_nonzero(rho))
    if support < k:
        raise ValueError(
            f"prior puts positive weight on {support} classes; a {k}-class task needs at least {k}"
        )
    return rho * max(k - 1, 1) / math.e


@functools.lru_cache(maxsize=32)
def _uniform_table_values(classes: int, k: int) -> tuple[float, ...]:
    """C(m, k−1)/C(C−1, k−1) for m = 0..C−1, from exact integers (int / int rounds correctly)."""
    j = k - 1
    binomials = [0] * classes  # C(m, j) for m = 0..C−1; j ≤ C − 1 as k ≤ C
    binomials[j] = 1
    for m in range(j, classes - 1):
        binomials[m + 1] = binomials[m] * (m + 1) // (m + 1 - j)
    total = binomials[classes - 1]
    return tuple(b / total for b in binomials)


def _uniform_table(classes: int, k: int) -> np.ndarray:
    return np.array(_uniform_table_values(classes, k))


def _beaten_counts(scores: torch.Tensor, labels: torch.Tensor, block: int) -> np.ndarray:
    """m(x) = number of classes x beats strictly, ``(N,)`` int64."""
    counts = np.empty(scores.shape[0], dtype=np.int64)
    for rows, beaten in _beaten_blocks(scores, labels, block):
        counts[rows] = np.count_nonzero(beaten, axis=1)
    return counts


def _beaten_blocks(scores: torch.Tensor, labels: torch.Tensor, block: int):
    """(rows, ``beaten_mask`` of those rows as a numpy (n, C) array), block by block."""
    if scores.device.type == "cpu" and scores.dtype != torch.bfloat16:
        # numpy's compare is several times faster than torch's on CPU; comparisons are exact
        values = scores.detach().numpy()
        own = np.take_along_axis(values, labels.numpy()[:, None], axis=1)  # (N, 1)
        for rows in _blocks(scores.shape[0], block):
            yield rows, values[rows] < own[rows]
    else:
        for rows in _blocks(scores.shape[0], block):
            yield rows, beaten_mask(scores[rows], labels[rows]).cpu().numpy()


def _blocks(n: int, block: int):
    if block < 1:
        raise ValueError(f"block must be ≥ 1; got {block}")
    return (slice(start, min(start + block, n)) for start in range(0, n, block))


def _check_k(k: int, classes: int) -> int:
    k = operator.index(k)
    if not 2 <= k <= classes:
        raise ValueError(f"k must be in [2, C] = [2, {classes}] (classes per task); got {k}")
    return k


def _check_covered(labels: torch.Tensor, class_weights: np.ndarray) -> None:
    counts = torch.bincount(labels.cpu(), minlength=class_weights.size).numpy()
    empty = np.flatnonzero((np.asarray(class_weights) > 0) & (counts == 0))
    if empty.size:
        raise ValueError(
            f"classes {empty[:10].tolist()} have positive weight (they can be in a task) but no test "
            "point; give each at least one test point, or pass a prior with weight 0 on them"
        )


def _as_inputs(scores, labels) -> tuple[torch.Tensor, torch.Tensor]:
    scores = torch.as_tensor(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (N, C); got shape {tuple(scores.shape)}")
    labels = _as_labels(labels, scores.shape[1]).to(scores.device)
    if labels.shape[0] != scores.shape[0]:
        raise ValueError(f"labels has {labels.shape[0]} entries but scores has {scores.shape[0]} rows")
    return scores, labels


def _as_labels(labels, classes: int) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(
            f"labels must be a 1-d integer array; got {labels.dtype} of shape {tuple(labels.shape)}"
        )
    labels = labels.long()
    if labels.numel() and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(
            f"labels must be in [0, {classes}) (one column of scores per class); "
            f"got values in [{int(labels.min())}, {int(labels.max())}]"
        )
    return labels
