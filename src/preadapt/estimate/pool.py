"""The points behind the plug-in class means μ̂ of [Arora19]'s mean classifier, and the error μ̂ adds.

L^μ_sup and the statements built on it plug in μ̂_c, a mean of m_c points of class c. Its error moves
a mean loss by Σ_c g_cᵀ(μ̂_c − μ_c) to first order (g_c: the gradient of the mean loss with respect to
μ̂_c), which a sample mean over fresh draws cannot see. ``MeanPool.plug_in(g)`` turns it into a
``PlugIn``: a variance when the pool's points are independent of the draws, or each example's
influence when draws and μ̂ come from one finite split (then both add example by example).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from preadapt.estimate.estimate import PlugIn

F64 = torch.float64


def leave_one_out(scores: torch.Tensor, features: torch.Tensor, own: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Scores f(x)ᵀμ̂ with each point's own class mean taken without the point itself.

    On a finite split the points scored are among the m_c examples behind μ̂_c of their own class c, so
    f(x)ᵀμ̂_c carries f(x)ᵀf(x)/m_c of x itself: an optimistic bias of order tr Σ_c/m_c. Leaving x out,
    f(x)ᵀμ̂_c^{(−x)} = (m_c·f(x)ᵀμ̂_c − ‖f(x)‖²)/(m_c − 1), makes the mean independent of the point, as it
    is for fresh points. ``scores: (n, K)`` with the own class in column ``own: (n,)`` (an index into
    the K columns), ``features: (n, d)``, ``counts: (n,)`` m_c of each point's class (≥ 2).

    >>> features = torch.tensor([[1.0, 0.0]]); means = torch.tensor([[2.0, 0.0], [0.0, 1.0]])  # μ̂_0 of 3 points
    >>> leave_one_out(features @ means.T, features, torch.tensor([0]), torch.tensor([3]))  # μ̂_0 without x: (2.5, 0)
    tensor([[2.5000, 0.0000]])
    """
    own = own.view(-1, 1)
    counts = counts.to(scores.dtype).view(-1, 1)
    left_out = (counts * scores.gather(1, own) - features.pow(2).sum(-1, keepdim=True)) / (counts - 1.0)
    return scores.scatter(1, own, left_out)


def plug_in_variance(gradient: torch.Tensor, pool: torch.Tensor, counts: torch.Tensor | None = None) -> float:
    """Delta-method variance of a mean that plugs in class means μ̂ taken from ``pool: (C, m, d)``.

    ``gradient: (C, d)`` is the derivative of the mean with respect to μ̂; ``counts: (C,)`` the real
    rows of each class (the rest padding; None: all m). The variance is Σ_a Var(g_aᵀ f(x) | a)/m_a.

    >>> pool = torch.tensor([[[0.0], [2.0]], [[1.0], [1.0]]], dtype=torch.float64)  # class 0: var 2; class 1: 0
    >>> plug_in_variance(torch.tensor([[1.0], [5.0]], dtype=torch.float64), pool)
    1.0
    """
    classes, m, _ = pool.shape
    counts = torch.full((classes,), m) if counts is None else torch.as_tensor(counts)
    real = (torch.arange(m)[None, :] < counts[:, None]).to(pool.dtype)  # (C, m)
    means = (pool * real[..., None]).sum(1) / counts[:, None]
    projected = torch.einsum("cmd,cd->cm", pool - means[:, None], gradient) * real  # (C, m)
    return float((projected.pow(2).sum(dim=1) / (counts - 1).clamp_min(1) / counts).sum())  # a single point: 0


@dataclass(frozen=True)
class MeanPool:
    """Features of the points behind μ̂: ``points: (C, m, d)`` float64, ``counts: (C,)`` real rows per
    class (rows beyond are padding), ``ids: (C, m)`` their example ids when they are the examples of a
    finite split (else None)."""

    points: torch.Tensor
    counts: torch.Tensor
    ids: torch.Tensor | None = None

    @classmethod
    def full(cls, points: torch.Tensor) -> "MeanPool":
        """m independent points of every class, no padding."""
        return cls(points, torch.full((points.shape[0],), points.shape[1]))

    @classmethod
    def from_examples(cls, features: torch.Tensor, classes: torch.Tensor, ids: torch.Tensor,
                      num_classes: int) -> "MeanPool":
        """Every example of a split, ``features: (N, d)`` grouped by class (``classes: (N,)``
        non-decreasing, ``ids: (N,)``), padded to the largest class.

        >>> pool = MeanPool.from_examples(torch.tensor([[1.0], [3.0], [5.0]]), torch.tensor([0, 0, 1]),
        ...                               torch.tensor([7, 8, 9]), 2)
        >>> pool.counts.tolist(), pool.means.view(-1).tolist(), pool.ids.tolist()
        ([2, 1], [2.0, 5.0], [[7, 8], [9, 0]])
        """
        counts = torch.bincount(classes, minlength=num_classes)
        start = torch.cumsum(counts, 0) - counts
        width = int(counts.max())
        position = torch.arange(len(classes)) - start[classes]  # rank within the class
        points = torch.zeros(num_classes, width, features.shape[1], dtype=F64)
        points[classes, position] = features.to(F64)
        padded_ids = torch.zeros(num_classes, width, dtype=torch.long)
        padded_ids[classes, position] = ids
        return cls(points, counts, padded_ids)

    @property
    def real(self) -> torch.Tensor:
        """(C, m) True on real rows."""
        return torch.arange(self.points.shape[1])[None, :] < self.counts[:, None]

    @property
    def means(self) -> torch.Tensor:
        """μ̂: (C, d), the mean of each class's real rows."""
        return (self.points * self.real[..., None]).sum(1) / self.counts[:, None]

    def plug_in(self, gradient: torch.Tensor) -> PlugIn:
        """The error μ̂ adds to a mean whose gradient with respect to μ̂ is ``gradient: (C, d)``."""
        variance = plug_in_variance(gradient, self.points, self.counts)
        if self.ids is None:
            return PlugIn(variance)
        real = self.real
        centred = self.points - self.means[:, None]
        influence = torch.einsum("cmd,cd->cm", centred, gradient) / self.counts[:, None]  # g_aᵀ(f(x) − μ̂_a)/m_a
        return PlugIn(variance, self.ids[real].numpy(), influence[real].numpy())
