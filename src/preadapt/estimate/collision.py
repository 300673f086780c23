"""Running moments behind the k-negative and block statements of [Arora19] (THEORY.md section 3).

Both families bound the mean classifier by the CURL loss through the *collision* count m: the number
of negatives (negative blocks) that share the anchor's class c. With a sample of tuples drawn from
the marginal, every tuple contributes to both sides, so each statement's slack is the mean of one
per-tuple variable and gets a paired interval:

- k negatives: with g(m) = 1{m ≥ 1} (hinge) or log₂(1 + m) (logistic) and h the loss of the mean
  classifier on the distinct classes T = {c, c⁻_1..c⁻_k} at label c,
  (1 − τ_k)·(rhs − lhs) = E[ℓ − g(m) − h·1{m = 0}], because P(m = 0) = 1 − τ_k exactly.
- blocks (k = 1): the same with the block margin, and, by convexity of ℓ, pointwise inequalities
  between block sizes (a mean over b margins is a mean of means over shorter windows).

One sample with k_max negatives (b_max positives and negatives) serves every smaller k (b) as a
prefix, so the statements are also paired across k (b).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from preadapt.estimate.estimate import PlugIn, RunningMean
from preadapt.estimate.pool import MeanPool, leave_one_out
from preadapt.objectives.base import encode_tuples
from preadapt.worlds.base import World
from preadapt.worlds.sampling import draw_tuples

F64 = torch.float64


def collision_penalty(collisions: torch.Tensor, loss_name: str) -> torch.Tensor:
    """g(m), the least ℓ given m negatives of the anchor's class: 1{m ≥ 1} for hinge, log₂(1 + m)
    for base-2 logistic (Jensen over those m margins of mean 0)."""
    if loss_name == "hinge":
        return (collisions >= 1).to(F64)
    return torch.log2(1.0 + collisions.to(F64))


def collision_floor(prior: np.ndarray, negatives: int, loss_name: str) -> float:
    """E[g(m)], m = #{i : c⁻_i = c} ~ Binomial(k, ρ(c)) given c ~ ρ: τ_k for hinge, and
    E[log₂(1 + m)] for base-2 logistic (THEORY.md section 3, k negatives).

    >>> round(collision_floor(np.full(4, 0.25), 1, "logistic"), 6)  # τ·log₂ 2 = τ
    0.25
    >>> round(collision_floor(np.full(4, 0.25), 3, "hinge"), 6)  # τ_3 = 1 − (3/4)³
    0.578125
    """
    from scipy import stats  # here, not at the top: 0.4 s of imports that validating a config never needs

    prior = np.asarray(prior, dtype=np.float64)
    m = np.arange(negatives + 1)
    g = collision_penalty(torch.from_numpy(m), loss_name).numpy()
    pmf = stats.binom.pmf(m[None, :], negatives, prior[:, None])  # (C, k + 1)
    return float((prior[:, None] * pmf * g[None, :]).sum())


def task_mean_losses(anchor: torch.Tensor, classes: torch.Tensor, means: torch.Tensor, loss,
                     leave_out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss of the mean classifier on each tuple's distinct classes, at the anchor's class.

    ``anchor: (n, d)`` features; ``classes: (n, 1 + k)`` the anchor's class then the negatives';
    ``means: (C, d)``. Negatives of the anchor's class and repeated classes are left out (their
    margins are +inf), so the loss is over T = the distinct classes. Returns the losses (n,) and the
    losses at zero margins on T (n,): ℓ(0) on |T| classes, the value at which a bound is vacuous.
    ``leave_out: (C,)``: the anchors are among the examples behind ``means``, this many per class;
    each is scored against its own class's mean without itself (``pool.leave_one_out``).
    """
    scores = torch.einsum("nd,nkd->nk", anchor, means[classes])  # (n, 1 + k)
    if leave_out is not None:
        first = torch.zeros(len(classes), dtype=torch.long)
        scores = leave_one_out(scores, anchor, first, leave_out[classes[:, 0]])
    k = classes.shape[1] - 1
    repeated = (classes.unsqueeze(2) == classes.unsqueeze(1)).tril(diagonal=-1).any(dim=2)  # (n, 1 + k)
    drop = repeated[:, 1:] | (classes[:, 1:] == classes[:, :1])  # (n, k)
    margins = (scores[:, :1] - scores[:, 1:]).masked_fill(drop, float("inf"))
    zero = torch.zeros(len(classes), k, dtype=anchor.dtype).masked_fill(drop, float("inf"))
    return loss(margins), loss(zero)


@dataclass
class PairedPart:
    """Running moments of a per-tuple variable and the summed gradient of its values with respect
    to the plug-in means μ̂ (for ``MeanPool.plug_in``)."""

    moments: RunningMean = field(default_factory=RunningMean)
    gradient: torch.Tensor | None = None

    def update(self, values: torch.Tensor, gradient: torch.Tensor | None = None, units=None) -> None:
        self.moments.update(values.detach(), units)
        if gradient is not None:
            self.gradient = gradient if self.gradient is None else self.gradient + gradient

    def plug_in(self, pool: MeanPool) -> PlugIn:
        """The error μ̂ adds to the mean of the values."""
        if self.gradient is None:
            return PlugIn()
        return pool.plug_in(self.gradient / max(self.moments.count, 1))


@dataclass
class CollisionMoments:
    """Per-tuple moments for one (k, b): ``loss`` ℓ (the CURL loss), ``mean_part`` h·1{m = 0},
    ``lifted`` h·1{m = 0} + g(m), ``slack`` ℓ − g(m) − h·1{m = 0} (= loss − lifted, tuple by
    tuple), ``threshold`` ℓ(0 on T)·1{m = 0}, and for blocks ``un`` (the mean of the b single-pair
    losses), ``below_un`` (un − ℓ, ≥ 0 pointwise), ``window`` (the mean loss of the cyclic windows of
    the previous block size) and ``monotone`` (window − ℓ, ≥ 0 pointwise)."""

    negatives: int
    block_size: int
    loss: RunningMean = field(default_factory=RunningMean)
    lifted: RunningMean = field(default_factory=RunningMean)
    mean_part: PairedPart = field(default_factory=PairedPart)
    slack: PairedPart = field(default_factory=PairedPart)
    threshold: RunningMean = field(default_factory=RunningMean)
    un: RunningMean = field(default_factory=RunningMean)
    below_un: RunningMean = field(default_factory=RunningMean)
    window: RunningMean = field(default_factory=RunningMean)
    monotone: RunningMean = field(default_factory=RunningMean)
    previous: int | None = None


def _mean_part(anchor, classes, collided, means, loss, leave_out=None):
    """h·1{m = 0} per tuple with its gradient sum with respect to μ̂, and the vacuity values."""
    mu = means.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        losses, zero = task_mean_losses(anchor, classes, mu, loss, leave_out)
        part = losses * (~collided)
        (gradient,) = torch.autograd.grad(part.sum(), mu)
    return part.detach(), gradient, zero * (~collided)


def negatives_moments(encoder: nn.Module, world: World, means: torch.Tensor, negatives: list[int], samples: int,
                      generator: torch.Generator, loss, loss_name: str, block: int = 8192,
                      device="cpu", leave_out: torch.Tensor | None = None) -> dict[int, CollisionMoments]:
    """Moments for every k in ``negatives`` from one sample of max(k)-negative tuples (b = 1).
    ``leave_out``: as in ``task_mean_losses``.

    The first k negatives of a tuple are a tuple with k negatives, so every k uses the same anchors.
    """
    k_max = max(negatives)
    out = {k: CollisionMoments(k, 1) for k in negatives}
    per_block = max(1, block // (2 + k_max))
    for start in range(0, samples, per_block):
        n = min(per_block, samples - start)
        tuples = draw_tuples(world, n, generator, k_max, 1)
        with torch.no_grad():
            encoded = encode_tuples(encoder, tuples.to(device), dtype=F64)
        anchor = encoded.anchor.cpu()
        positive = encoded.positives[:, 0].cpu()
        negative = encoded.negatives[:, :, 0].cpu()  # (n, k_max, d)
        margins = (anchor.unsqueeze(1) * (positive.unsqueeze(1) - negative)).sum(-1)  # (n, k_max)
        classes = torch.cat([tuples.anchor_class.view(-1, 1), tuples.negative_class], dim=1).cpu()
        same = tuples.negative_class.cpu() == tuples.anchor_class.cpu().view(-1, 1)  # (n, k_max)
        for k, moments in out.items():
            units = tuples.example_units(negatives=k)  # the examples a k-negative tuple uses
            losses = loss(margins[:, :k])
            collisions = same[:, :k].sum(dim=1)
            part, gradient, zero = _mean_part(anchor, classes[:, :k + 1], collisions > 0, means, loss, leave_out)
            lifted = part + collision_penalty(collisions, loss_name)
            moments.loss.update(losses, units)
            moments.lifted.update(lifted, units)
            moments.mean_part.update(part, gradient, units)
            moments.slack.update(losses - lifted, -gradient, units)
            moments.threshold.update(zero, units)
    return out


def _window_losses(margins: torch.Tensor, width: int, loss) -> torch.Tensor:
    """Mean over the b cyclic windows of ``width`` consecutive margins of ℓ(window mean).

    ``margins: (n, b)``; every margin lies in exactly ``width`` windows, so the window means
    average to the block mean and, ℓ being convex, the result is ≥ ℓ(block mean) pointwise.
    """
    b = margins.shape[1]
    index = (torch.arange(b).view(-1, 1) + torch.arange(width).view(1, -1)) % b  # (b, width)
    window_means = margins[:, index].mean(dim=-1)  # (n, b)
    return loss(window_means.reshape(-1, 1)).view(-1, b).mean(dim=1)


def block_moments(encoder: nn.Module, world: World, means: torch.Tensor, block_sizes: list[int], samples: int,
                  generator: torch.Generator, loss, block: int = 8192, device="cpu",
                  leave_out: torch.Tensor | None = None) -> dict[int, CollisionMoments]:
    """Moments for every b in ``block_sizes`` (k = 1) from one sample of max(b)-blocks.
    ``leave_out``: as in ``task_mean_losses``.

    The block margin of the first b positives and negatives is the mean of the b single-pair
    margins v_j = f(x)ᵀ(f(x⁺_j) − f(x⁻_j)); a prefix of a block is a block.
    """
    sizes = sorted(block_sizes)
    b_max = sizes[-1]
    out = {b: CollisionMoments(1, b, previous=p) for b, p in zip(sizes, [None, *sizes[:-1]])}
    per_block = max(1, block // (1 + 2 * b_max))
    for start in range(0, samples, per_block):
        n = min(per_block, samples - start)
        tuples = draw_tuples(world, n, generator, 1, b_max)
        with torch.no_grad():
            encoded = encode_tuples(encoder, tuples.to(device), dtype=F64)
        anchor = encoded.anchor.cpu()
        single = (anchor.unsqueeze(1) * (encoded.positives.cpu() - encoded.negatives[:, 0].cpu())).sum(-1)  # (n, b)
        classes = torch.cat([tuples.anchor_class.view(-1, 1), tuples.negative_class], dim=1).cpu()
        collided = classes[:, 1] == classes[:, 0]
        part, gradient, _ = _mean_part(anchor, classes, collided, means, loss, leave_out)
        single_losses = loss(single.reshape(-1, 1)).view(n, b_max)
        for b, moments in out.items():
            units = tuples.example_units(block_size=b)  # the examples of the first b of each block
            losses = loss(single[:, :b].mean(dim=1, keepdim=True))
            lifted = part + collided.to(F64)
            un = single_losses[:, :b].mean(dim=1)
            moments.loss.update(losses, units)
            moments.lifted.update(lifted, units)
            moments.mean_part.update(part, gradient, units)
            moments.slack.update(losses - lifted, -gradient, units)
            moments.un.update(un, units)
            moments.below_un.update(un - losses, units)
            if moments.previous is not None:
                window = _window_losses(single[:, :b], moments.previous, loss)
                moments.window.update(window, units)
                moments.monotone.update(window - losses, units)
    return out
