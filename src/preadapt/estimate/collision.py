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
    return _losses_on_distinct(_left_out(scores, anchor, classes, leave_out), _dropped(classes), loss)


def _left_out(scores, anchor, classes, leave_out):
    """The scores ``(n, 1 + k)`` with the anchor's own class mean taken without the anchor (``leave_out``
    given; as in ``task_mean_losses``)."""
    if leave_out is None:
        return scores
    return leave_one_out(scores, anchor, torch.zeros(len(classes), dtype=torch.long), leave_out[classes[:, 0]])


def _dropped(classes: torch.Tensor) -> torch.Tensor:
    """``(n, k)``: the negatives whose margins ``task_mean_losses`` leaves out, those of the anchor's
    class and repeats of an earlier class. Column j depends only on columns ≤ j + 1 of ``classes``, so
    the first k columns are those of the first k negatives."""
    # A repeat is an entry equal to its predecessor once each row is sorted; a stable sort puts a class's
    # first occurrence first among its equals. O(k log k) a row, where comparing all pairs is O(k²).
    ordered, index = classes.sort(dim=1, stable=True)
    repeat = torch.zeros_like(classes, dtype=torch.bool)
    repeat[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    repeated = torch.zeros_like(repeat).scatter_(1, index, repeat)  # (n, 1 + k)
    return repeated[:, 1:] | (classes[:, 1:] == classes[:, :1])


def _losses_on_distinct(scores: torch.Tensor, drop: torch.Tensor, loss) -> tuple[torch.Tensor, torch.Tensor]:
    """``task_mean_losses``' two results from the scores ``(n, 1 + k)`` and the dropped negatives ``(n, k)``."""
    margins = (scores[:, :1] - scores[:, 1:]).masked_fill(drop, float("inf"))
    zero = torch.zeros(drop.shape, dtype=scores.dtype).masked_fill(drop, float("inf"))
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


def _mean_parts(anchor, classes, collided: dict[int, torch.Tensor], means, loss, leave_out=None
                ) -> dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """For each k of ``collided`` (k → the tuples with m ≥ 1 among their first k negatives, (n,)):
    h·1{m = 0} per tuple on the first k negatives (``classes: (n, 1 + k_max)``), the sum of its
    gradients with respect to μ̂ ``(C, d)``, and the vacuity values.

    The scores f(x)ᵀμ̂_c are computed once for all k_max negatives (a prefix serves each k), and they
    are h's only path from μ̂: the gradient in μ̂_c is the sum, over the tuples' score slots of class c,
    of ∂(Σ part)/∂score times the anchor. Autograd gives it in the scores, (n, 1 + k_max), instead of
    through a (n, 1 + k, d) gather of μ̂ for every k."""
    raw = torch.einsum("nd,nkd->nk", anchor, means.detach()[classes]).requires_grad_(True)  # (n, 1 + k_max)
    drop = _dropped(classes)
    out = {}
    with torch.enable_grad():
        scores = _left_out(raw, anchor, classes, leave_out)
        for k, hit in collided.items():
            losses, zero = _losses_on_distinct(scores[:, :k + 1], drop[:, :k], loss)
            part = losses * (~hit)
            (slots,) = torch.autograd.grad(part.sum(), raw, retain_graph=True)  # (n, 1 + k_max)
            out[k] = part.detach(), _per_class(slots, classes, anchor, len(means)), zero * (~hit)
    return out


def _per_class(slots: torch.Tensor, classes: torch.Tensor, anchor: torch.Tensor, count: int) -> torch.Tensor:
    """Σ over the score slots ``(n, 1 + k)`` of class c (``classes``) of the slot's value times the
    anchor ``(n, d)``: ``(count, d)``. Through per-tuple class totals (n, C), one product, when they are no
    larger than the slots' (n, 1 + k, d) anchor copies; else by adding those copies up by class."""
    if count <= classes.shape[1] * anchor.shape[1]:
        return slots.new_zeros(len(classes), count).scatter_add_(1, classes, slots).T @ anchor
    return anchor.new_zeros(count, anchor.shape[1]).index_add_(
        0, classes.flatten(), (slots.unsqueeze(-1) * anchor.unsqueeze(1)).flatten(0, 1))


CHUNK_ELEMENTS = 2**20
"""The grids' per-k (per-b) work runs on chunks of consecutive encoder blocks, whose largest array holds
about this many elements (tuples × (1 + k_max) × d: the gathered means; tuples × b_max × max(b_max, d):
the cyclic windows; 8 MB in float64), not on each block: a block of ``block`` = 8192 inputs holds only
124 tuples with 64 negatives, and per block the work was mostly the fixed cost of its small tensor
operations and autograd calls. The draws, and so the estimates, are those of the blocks; only the order
of float64 sums changes. Measured: docs/benchmarks.md, third round (2**18: 1.8×, 2**20: 2.5×, 2**22:
2.6× on the bounds-negatives grid)."""


def _chunk_tuples(per_block: int, per_tuple: int) -> int:
    """Tuples per chunk: whole blocks of ``per_block`` tuples, about ``CHUNK_ELEMENTS`` elements if a
    tuple holds ``per_tuple``."""
    return per_block * max(1, CHUNK_ELEMENTS // max(per_tuple * per_block, 1))


def _chunks(blocks, size: int):
    """The items of ``blocks`` (tuples of tensors with one row per tuple, or of lists of units dicts,
    one per k or b, each None or ``{family: ids}``), concatenated row-wise into chunks of ``size`` rows
    and a last, smaller one."""
    buffer, rows = [], 0
    for item in blocks:
        buffer.append(item)
        rows += len(item[0])
        if rows >= size:
            yield _concatenate(buffer)
            buffer, rows = [], 0
    if buffer:
        yield _concatenate(buffer)


def _concatenate(items: list[tuple]) -> tuple:
    """One item of ``_chunks`` from several: tensors joined row-wise, per k (b) the units dicts joined
    family by family."""
    if len(items) == 1:
        return items[0]
    joined = []
    for parts in zip(*items):
        if isinstance(parts[0], torch.Tensor):
            joined.append(torch.cat(parts))
        else:  # per k (b): the blocks' units dicts, or None on a world without examples
            joined.append([None if units[0] is None else {family: torch.cat([u[family] for u in units])
                                                           for family in units[0]} for units in zip(*parts)])
    return tuple(joined)


def negatives_moments(encoder: nn.Module, world: World, means: torch.Tensor, negatives: list[int], samples: int,
                      generator: torch.Generator, loss, loss_name: str, block: int = 8192,
                      device="cpu", leave_out: torch.Tensor | None = None) -> dict[int, CollisionMoments]:
    """Moments for every k in ``negatives`` from one sample of max(k)-negative tuples (b = 1).
    ``leave_out``: as in ``task_mean_losses``.

    The first k negatives of a tuple are a tuple with k negatives, so every k uses the same anchors.
    The tuples are drawn and encoded ``block`` inputs at a time; the per-k work runs on chunks of
    blocks (``CHUNK_ELEMENTS``).
    """
    k_max = max(negatives)
    out = {k: CollisionMoments(k, 1) for k in negatives}
    per_block = max(1, block // (2 + k_max))

    def blocks():
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
            # the examples a k-negative tuple uses, per k
            yield anchor, margins, classes, same, [tuples.example_units(negatives=k) for k in out]

    for anchor, margins, classes, same, units in _chunks(blocks(), _chunk_tuples(per_block, (1 + k_max) * means.shape[1])):
        collisions = {k: same[:, :k].sum(dim=1) for k in out}
        parts = _mean_parts(anchor, classes, {k: m > 0 for k, m in collisions.items()}, means, loss, leave_out)
        for (k, moments), k_units in zip(out.items(), units):
            losses = loss(margins[:, :k])
            part, gradient, zero = parts[k]
            lifted = part + collision_penalty(collisions[k], loss_name)
            moments.loss.update(losses, k_units)
            moments.lifted.update(lifted, k_units)
            moments.mean_part.update(part, gradient, k_units)
            moments.slack.update(losses - lifted, -gradient, k_units)
            moments.threshold.update(zero, k_units)
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

    def blocks():
        for start in range(0, samples, per_block):
            n = min(per_block, samples - start)
            tuples = draw_tuples(world, n, generator, 1, b_max)
            with torch.no_grad():
                encoded = encode_tuples(encoder, tuples.to(device), dtype=F64)
            anchor = encoded.anchor.cpu()
            single = (anchor.unsqueeze(1) * (encoded.positives.cpu() - encoded.negatives[:, 0].cpu())).sum(-1)  # (n, b)
            classes = torch.cat([tuples.anchor_class.view(-1, 1), tuples.negative_class], dim=1).cpu()
            # the examples of the first b of each block, per b
            yield anchor, single, classes, [tuples.example_units(block_size=b) for b in out]

    for anchor, single, classes, units in _chunks(blocks(), _chunk_tuples(per_block, b_max * max(b_max, means.shape[1]))):
        n = len(anchor)
        collided = classes[:, 1] == classes[:, 0]
        part, gradient, _ = _mean_parts(anchor, classes, {1: collided}, means, loss, leave_out)[1]
        single_losses = loss(single.reshape(-1, 1)).view(n, b_max)
        for (b, moments), b_units in zip(out.items(), units):
            losses = loss(single[:, :b].mean(dim=1, keepdim=True))
            lifted = part + collided.to(F64)
            un = single_losses[:, :b].mean(dim=1)
            moments.loss.update(losses, b_units)
            moments.lifted.update(lifted, b_units)
            moments.mean_part.update(part, gradient, b_units)
            moments.slack.update(losses - lifted, -gradient, b_units)
            moments.un.update(un, b_units)
            moments.below_un.update(un - losses, b_units)
            if moments.previous is not None:
                window = _window_losses(single[:, :b], moments.previous, loss)
                moments.window.update(window, b_units)
                moments.monotone.update(window - losses, b_units)
    return out
