"""Population quantities of one encoder, each an Estimate with a CI (DESIGN.md section 3).

Every fresh sample is drawn block by block (``EvaluateConfig.block``) and reduced into running
moments, so memory stays flat in the number of samples. Features are cast to float64 before any
loss is computed. Each quantity draws from its own generator, derived from one seed and the
quantity's name, so that every checkpoint is evaluated on the same samples (common random numbers)
and adding a quantity never changes another.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from preadapt.adapt import ADAPTERS
from preadapt.adapt.linear import keep_best_heads
from preadapt.adapt.mean_classifier import MeanClassifier
from preadapt.estimate.adaptation import (Adaptation, AdapterSpec, Drawn, Measurement, Views, adapt_measurements,
                                         chain_measurements, encode, few_shot_full_problem, full_problem_measurements,
                                         needs_inputs, star_estimates, task_mean)
from preadapt.estimate.avg_k import avg_k_estimate, top_r_estimate
from preadapt.estimate.collision import CollisionMoments, block_moments, negatives_moments
from preadapt.estimate.estimate import Estimate, PlugIn, RunningMean, critical, mean_estimate
from preadapt.estimate.pool import MeanPool, leave_one_out
from preadapt.estimate.spec import EvaluateConfig
from preadapt.objectives.base import Objective, encode_tuples
from preadapt.objectives.curl import curl_loss
from preadapt.objectives.losses import LOSSES, margins_from_scores
from preadapt.timing import Timings
from preadapt.worlds.base import World, enumerable
from preadapt.worlds.finite import split_of
from preadapt.worlds.prior import collision_prior, tau, tau_k
from preadapt.worlds.sampling import (Tuples, draw_examples, draw_tuples, example_ids, make_generator, sample_per_class,
                                     sample_tasks)

F64 = torch.float64
__all__ = ["Evaluation", "Measurement", "evaluate_encoder", "task_mean", "keep_best_heads", "encode"]


@dataclass
class Evaluation:
    """The measurements of one encoder, the class means μ̂ they used, and the running moments
    that the bound checks recompute at their own (stricter) level. ``class_level`` False: the world
    was too big to enumerate its classes (``worlds.base.enumerable``), so only the tuple quantities
    were measured on it (``means``, the mean classifier's moments, ``deviation`` and the grids absent)."""

    measurements: list[Measurement]
    means: torch.Tensor | None  # (C, d) float64; None without class_level
    moments: dict[str, RunningMean]
    plug_ins: dict[str, PlugIn] = field(default_factory=dict)  # the error of μ̂ in a moment's mean
    negatives: dict[int, CollisionMoments] = field(default_factory=dict)  # the k grid (b = 1)
    blocks: dict[int, CollisionMoments] = field(default_factory=dict)  # the b grid (k = 1)
    collision_plug_ins: dict[tuple[str, int], dict[str, PlugIn]] = field(default_factory=dict)  # μ̂ in lifted, slack
    deviation: Deviation | None = None  # s(f) from both sides (Lemma 4.4, Theorem 4.5)
    shared_examples: bool = False  # every sample drew on one finite set of examples: not independent
    class_level: bool = True  # μ̂, L^μ_sup, the paired gap, s(f) and the grids' moments were measured

    def estimate(self, name: str, level: float) -> Estimate:
        """A running mean's estimate at ``level``, with the error of its plug-in parts (μ̂)."""
        return self.plug_ins.get(name, PlugIn()).apply(self.moments[name], level)

    # The quantities the bound checks read, by name (typed: a misspelt one is an AttributeError at
    # import time of the check, not a KeyError in the middle of a run), each at the asked level.
    def l_un(self, level: float) -> Estimate:
        """L_un at k = 1 ([Arora19])."""
        return self.estimate("L_un", level)

    def l_un_same(self, level: float) -> Estimate:
        """L_un^=: the CURL loss given that the negative's class is the anchor's."""
        return self.estimate("L_un_same", level)

    def l_un_diff(self, level: float) -> Estimate:
        """L_un^≠: the CURL loss given that the negative's class differs."""
        return self.estimate("L_un_diff", level)

    def l_sup_mean(self, level: float) -> Estimate:
        """L^μ_sup on 2-class tasks, with the error of the plug-in means μ̂."""
        return self.estimate("L_sup_mean", level)

    def paired_gap(self, level: float) -> Estimate:
        """L_un^≠ − L^μ_sup on the same anchors (a paired difference), with the error of μ̂."""
        return self.estimate("diff_minus_mean", level)

    @property
    def l_un_reported(self) -> Estimate:
        """The reported L_un row (k = 1, at the evaluation's level)."""
        return self.get("L_un", negatives=1)

    @property
    def tau(self) -> Estimate:
        """τ, exact from ρ."""
        return self.get("tau")

    @property
    def radius(self) -> Estimate:
        """R: the norm bound by construction (exact) or the largest norm measured."""
        return self.get("R")

    @property
    def l_pre_train(self) -> Estimate | None:
        """L̂_pre on the training tuples (None without a training objective)."""
        return next((m.estimate for m in self.measurements if m.quantity == "L_pre_train"), None)

    def get(self, quantity: str, **context) -> Estimate:
        for m in self.measurements:
            if m.quantity == quantity and all(m.context.get(k) == v for k, v in context.items()):
                return m.estimate
        raise KeyError(f"no measurement {quantity} {context}")


def mean_classifier_losses(features: torch.Tensor, tasks: torch.Tensor, positions: torch.Tensor,
                           means: torch.Tensor, loss, leave_out: torch.Tensor | None = None) -> torch.Tensor:
    """ℓ of the mean classifier W^μ restricted to each point's task ([Arora19], L^μ_sup).

    features (n, d); tasks (n, K) class ids; positions (n,) the index in the task of the point's
    true class; means (C, d) → (n,). ``leave_out: (C,)``: the points are among the examples behind
    ``means``, this many per class; each is scored against its own class's mean without itself
    (``pool.leave_one_out``).
    """
    scores = torch.einsum("nd,nkd->nk", features, means[tasks])  # (n, K)
    if leave_out is not None:
        own = tasks.gather(1, positions.view(-1, 1)).view(-1)
        scores = leave_one_out(scores, features, positions, leave_out[own])
    return loss(margins_from_scores(scores, positions))


def curl_moments(encoder: nn.Module, world: World, samples: int, generator: torch.Generator, loss=None,
                 negatives: int = 1, block_size: int = 1, condition=None, block: int = 8192,
                 device="cpu", extra=None) -> RunningMean:
    """Running moments of the CURL loss ℓ (default base-2 logistic) over ``samples`` fresh tuples.

    ``condition``: None (L_un), ``"same"`` (L_un^=) or ``"different"`` (L_un^≠). ``extra(encoded,
    losses, units)`` sees every block, for quantities that share the sample. ``.estimate(level)``
    gives the estimate with its t-interval; on a world of finite examples, the moments are clustered
    by example (the tuples' ``example_units``) and the interval is about the population.
    """
    loss = loss or LOSSES["logistic"]
    moments = RunningMean()
    per_block = _tuples_per_block(block, negatives, block_size)
    for start in range(0, samples, per_block):
        n = min(per_block, samples - start)
        tuples = draw_tuples(world, n, generator, negatives, block_size, condition)
        with torch.no_grad():
            encoded = encode_tuples(encoder, tuples.to(device), dtype=F64)
        losses = curl_loss(encoded.anchor, encoded.positives, encoded.negatives, loss)
        units = tuples.example_units()
        moments.update(losses, units)
        if extra is not None:
            extra(encoded, losses, units)
    return moments


class MeanClassifierLoss:
    """Running moments of the loss of W^μ̂ and the gradient of its mean with respect to μ̂.

    The estimate of L^μ_sup plugs in μ̂ (``means: (C, d)``), a mean of m points per class: its
    error moves the estimate by Σ_a g_aᵀ(μ̂_a − μ_a) to first order, with g_a the gradient of the
    mean loss with respect to μ̂_a. ``plug_in(pool)`` is that term by the delta method
    (``MeanPool.plug_in``), from the pool the means came from. Without it an interval from S ≫ m
    samples claims precision the plug-in means do not have. ``leave_out``: as in
    ``mean_classifier_losses`` (points drawn from the examples behind μ̂).
    """

    def __init__(self, means: torch.Tensor, loss, leave_out: torch.Tensor | None = None) -> None:
        self.means = means.detach().to("cpu", F64).requires_grad_(True)
        self.loss = loss
        self.leave_out = leave_out
        self.moments = RunningMean()
        self.gradient = torch.zeros_like(self.means)

    def update(self, features: torch.Tensor, tasks: torch.Tensor, positions: torch.Tensor, units=None) -> torch.Tensor:
        """Add points: features (n, d), tasks (n, K), positions (n,), and the examples they are
        (``RunningMean`` units, on a finite world); returns their losses (n,)."""
        with torch.enable_grad():
            losses = mean_classifier_losses(features.to("cpu", F64), tasks.cpu(), positions.cpu(), self.means,
                                            self.loss, self.leave_out)
            (gradient,) = torch.autograd.grad(losses.sum(), self.means)
        self.gradient += gradient
        losses = losses.detach()
        self.moments.update(losses, units)
        return losses

    def plug_in(self, pool: MeanPool, sign: float = 1.0) -> PlugIn:
        """The error of the estimate due to μ̂, from ``pool``, the points behind μ̂ (``sign`` −1: of a
        mean that subtracts this loss)."""
        return pool.plug_in(sign * self.gradient / max(self.moments.count, 1))

    def estimate(self, level: float, pool: MeanPool | None = None) -> Estimate:
        """The estimate, with the error of μ̂ when the pool is given."""
        return self.moments.estimate(level) if pool is None else self.plug_in(pool).apply(self.moments, level)


def mean_classifier_moments(encoder: nn.Module, world: World, means: torch.Tensor, task_classes: int,
                            samples: int, generator: torch.Generator, loss=None, block: int = 8192,
                            device="cpu", leave_out: torch.Tensor | None = None) -> MeanClassifierLoss:
    """The loss of W^μ (rows ``means: (C, d)``) over ``task_classes``-class tasks drawn from ρ, the
    label uniform on the task and x ~ D_label: L^μ_sup of [Arora19]. ``leave_out``: as in
    ``mean_classifier_losses``."""
    accumulator = MeanClassifierLoss(means, loss or LOSSES["logistic"], leave_out)
    for start in range(0, samples, block):
        n = min(block, samples - start)
        tasks = sample_tasks(world.prior, n, task_classes, generator)  # (n, K)
        positions = torch.randint(task_classes, (n,), generator=generator)
        x, ids = draw_examples(world, tasks.gather(1, positions.view(-1, 1)).view(-1), generator)
        accumulator.update(encode(encoder, x, block, device), tasks, positions, None if ids is None else {"example": ids})
    return accumulator


def _curl_moments(encoder, world, config, seed, name, loss, device, negatives=1, block_size=1,
                  condition=None, extra=None) -> RunningMean:
    return curl_moments(encoder, world, config.samples, make_generator(seed, "evaluate", name), loss,
                        negatives, block_size, condition, config.block, device, extra)


def _tuples_per_block(block: int, negatives: int, block_size: int) -> int:
    return max(1, block // (1 + (1 + negatives) * block_size))


def _objective_moments(encoder, objective, batches, device, clustered: bool = True) -> RunningMean:
    """Running moments of the training objective's per-sample losses over batches of tuples
    (clustered by example when the tuples come from a finite set of examples and ``clustered``)."""
    moments = RunningMean()
    for batch in batches:
        with torch.no_grad():
            losses = objective(encode_tuples(encoder, batch.to(device), dtype=F64))
        moments.update(losses, batch.example_units() if clustered else None)
    return moments


def _normalise(z: torch.Tensor) -> torch.Tensor:
    return z / z.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@dataclass(frozen=True)
class Deviation:
    """s(f) of [Arora19] estimated from both sides (``intraclass_deviation``).

    ``lower_side``: s̃ from held-out Rayleigh quotients, E s̃ ≤ s(f), with its bootstrap standard
    error (method "normal"). The upper side is the plug-in ŝ = ``plug_in`` (E ‖Σ̂‖₂ ≥ ‖Σ‖₂ on the
    eigenvalue scale) with its bootstrap standard error ``plug_in_se`` and bootstrap bias
    ``plug_in_bias`` (mean of the replicates − ŝ); ``upper_side(level)`` turns them into an upper end.
    A statement whose right side grows with s(f) takes its lower end from ``lower_side`` ("holds"
    needs it) and its upper end from ``upper_side`` ("violated" needs it). ``reported`` is the
    ``s_f`` row.
    """

    lower_side: Estimate
    plug_in: float
    plug_in_se: float
    plug_in_bias: float
    n: int

    def upper_side(self, level: float) -> Estimate:
        """ŝ with the upper end (ŝ + max(0, −bias))·exp(z·se/ŝ) at ``level``.

        sqrt(‖Σ̂‖₂) is skewed to the right and, when one within-class direction dominates, biased
        down by sqrt's concavity (about −1/(4m) relatively): so the interval is normal on the log
        scale, and a downward bias the bootstrap sees raises it (an upward one never lowers it).
        Its ``se`` is the standard error whose normal upper end at ``level`` is that end, so that
        ``combine`` at the same level keeps it.
        """
        z = critical(level, None)
        value, se = self.plug_in, self.plug_in_se
        if value <= 0.0:
            return Estimate(value, value, value, self.n, level, "normal", 0.0)
        top = (value + max(0.0, -self.plug_in_bias)) * math.exp(z * se / value)
        se = max((top - value) / z, se)
        return Estimate(value, value - z * se, value + z * se, self.n, level, "normal", se)

    def reported(self, level: float) -> Estimate:
        """s̃ with the interval [s̃ − z·se(s̃), the upper side's end] (method "split_half")."""
        low, high = self.lower_side.at_level(level), self.upper_side(level)
        value = low.value
        return Estimate(value, min(low.lower, value), max(high.upper, value), low.n, level, "split_half", None)


BOOTSTRAP_CHUNK_BYTES = 128 * 2**20
"""Memory ``intraclass_deviation`` may use at once for the outer products of its points and for a chunk
of bootstrap replicates evaluated together."""


def intraclass_deviation(pool: torch.Tensor, prior: np.ndarray, replicates: int, generator: torch.Generator,
                         level: float, counts: torch.Tensor | None = None) -> Deviation:
    """s(f) = E_{c~ν}[ sqrt(‖Σ(f,c)‖₂) · E_{x~D_c}‖f(x)‖ ] with ν ∝ ρ² ([Arora19], Lemma 4.4).

    ``pool: (C, m, d)`` features of points of each class; ``counts: (C,)`` how many of each class's
    rows are real (the rest padding; None: all m; at least 2). The plug-in ‖Σ̂‖₂ is biased upward, by
    O(sqrt(d/m)) when the top within-class eigenvalues are (nearly) equal, and the bootstrap cannot
    see that bias. So two estimates:

    - lower side: each class's points are split in halves A, B; v̂_A, the top eigenvector of Σ̂_A,
      is a fixed direction for B, and v̂_Aᵀ Σ̂_B v̂_A is unbiased for v̂_Aᵀ Σ v̂_A ≤ ‖Σ‖₂ (and the same
      with A and B swapped; the two are averaged). By the concavity of sqrt, E s̃ ≤ s(f). A class
      with fewer than 4 points has no two halves of 2: its term is 0, a lower bound;
    - upper side: the plug-in ŝ with ‖Σ̂‖₂ of all the points; the spectral norm is convex and
      E Σ̂ = Σ, so E ‖Σ̂‖₂ ≥ ‖Σ‖₂; sqrt and the mean norm make this approximate (``Deviation.upper_side``).

    The standard errors come from one Poisson bootstrap over the points (``replicates`` draws); the
    lower side keeps its fitted directions in every replicate. When the top eigenvalue is well separated both
    sides agree to O(1/m); when the top eigenvalues tie, s̃ is unbiased and ŝ too high; in between,
    neither is unbiased, and the interval is conservative (coverage measured: docs/quantities.md).
    """
    nu = torch.tensor(collision_prior(prior))  # a copy: a uniform_prior view is read-only
    classes, m, d = pool.shape
    counts = torch.full((classes,), m) if counts is None else torch.as_tensor(counts)
    if int(counts.min()) < 2:
        raise ValueError(f"s(f) needs at least 2 points of every class; got {int(counts.min())}")
    position = torch.arange(m)
    real = (position[None, :] < counts[:, None]).to(F64)  # (C, m)
    first = (position[None, :] < (counts // 2)[:, None]).to(F64)  # half A; half B is real − first
    halves = (counts >= 4).to(F64)  # classes whose halves hold 2 points each
    norms = pool.norm(dim=-1)  # (C, m)

    # Σ w x xᵀ for a batch of weightings is one matrix product with the points' outer products
    # (C, m, d²), computed once when they fit in BOOTSTRAP_CHUNK_BYTES; else each weighting scales a
    # copy of the pool (the same sums, one weighting at a time)
    outer = (pool[..., :, None] * pool[..., None, :]).view(classes, m, d * d) \
        if classes * m * d * d * 8 <= BOOTSTRAP_CHUNK_BYTES else None

    def moments(weights: torch.Tensor, half: torch.Tensor, span: slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Of B weightings ``(B, C, m)`` restricted to a half (``half: (C, m)``, 0 or 1, zero outside the
        positions ``span``): total weight (B, C), weighted mean (B, C, d) and scatter
        Σ w (x − mean)(x − mean)ᵀ (B, C, d, d). The sums run over ``span`` only: half the work."""
        weights, points = weights[..., span] * half[:, span], pool[:, span]
        total = weights.sum(-1)
        if outer is not None:
            by_class = weights.transpose(0, 1)  # (C, B, m')
            weighted_sum = (by_class @ points).transpose(0, 1)  # (B, C, d)
            raw = (by_class @ outer[:, span]).transpose(0, 1).reshape(*weights.shape[:2], d, d)
        else:
            weighted = points * weights[..., None]  # (B, C, m', d), B = 1
            weighted_sum = weighted.sum(-2)
            raw = weighted.transpose(-1, -2) @ points  # (B, C, d, d)
        mean = weighted_sum / total.clamp_min(1e-300)[..., None]  # a bootstrap half can draw no point
        return total, mean, raw - total[..., None, None] * mean[..., :, None] * mean[..., None, :]

    # half A holds the positions below counts // 2 of each class, half B those from there to counts
    span_a, span_b = slice(0, int((counts // 2).max())), slice(int((counts // 2).min()), int(counts.max()))

    def statistic(weights: torch.Tensor, directions=None) -> tuple[torch.Tensor, torch.Tensor, tuple]:
        """(s̃, ŝ) of B weightings ``(B, C, m)``, each (B,), and the directions (v̂_A, v̂_B) s̃ used
        (C, d) each: fitted on the halves of the first weighting unless ``directions`` are given."""
        (t_a, mean_a, scatter_a) = moments(weights, first, span_a)
        (t_b, mean_b, scatter_b) = moments(weights, real - first, span_b)
        cov_a = scatter_a / (t_a - 1.0).clamp_min(1.0)[..., None, None]
        cov_b = scatter_b / (t_b - 1.0).clamp_min(1.0)[..., None, None]
        if directions is None:
            directions = torch.linalg.eigh(cov_a[0])[1][..., -1], torch.linalg.eigh(cov_b[0])[1][..., -1]  # (C, d) each
        v_a, v_b = directions
        held_out = 0.5 * (torch.einsum("cd,bcde,ce->bc", v_a, cov_b, v_a) + torch.einsum("cd,bcde,ce->bc", v_b, cov_a, v_b))
        total = t_a + t_b
        gap = mean_a - mean_b
        scatter = scatter_a + scatter_b + (t_a * t_b / total.clamp_min(1e-300))[..., None, None] * gap[..., :, None] * gap[..., None, :]
        spectral = torch.linalg.eigvalsh(scatter / (total - 1.0).clamp_min(1.0)[..., None, None])[..., -1]  # (B, C)
        norm = (weights * real * norms).sum(-1) / total.clamp_min(1e-300)  # E‖f(x)‖ per class: (B, C)
        lower = (nu * halves * held_out.clamp_min(0.0).sqrt() * norm).sum(-1)
        upper = (nu * spectral.clamp_min(0.0).sqrt() * norm).sum(-1)
        return lower, upper, directions

    *values, directions = statistic(torch.ones(1, classes, m, dtype=F64))
    values = [float(value[0]) for value in values]
    # the replicates keep the fitted directions: a Rayleigh quotient is flat in its direction at the top
    # eigenvector and does not depend on it when the eigenvalues tie, so refitting them would only add
    # the spread of directions a bootstrap world has and the real one does not (a too-wide lower side).
    # Replicates go in chunks whose weights (B, C, m) and scatters (B, C, d, d) stay within
    # BOOTSTRAP_CHUNK_BYTES; the Poisson weights of a chunk are the draws of its replicates in turn.
    chunk = max(1, BOOTSTRAP_CHUNK_BYTES // (classes * max(m, d * d) * 8)) if outer is not None else 1
    reps = []
    for start in range(0, replicates, chunk):
        size = min(chunk, replicates - start)
        lower_b, upper_b, _ = statistic(torch.poisson(torch.ones(size, classes, m, dtype=F64), generator=generator),
                                        directions)
        reps.append(torch.stack([lower_b, upper_b], dim=1))
    reps = torch.cat(reps).numpy()  # (B, 2)
    n = int(counts.sum())
    (lower, upper), (lower_se, upper_se) = values, reps.std(axis=0, ddof=1)
    half = critical(level, None) * lower_se
    lower_side = Estimate(lower, lower - half, lower + half, n, level, "normal", float(lower_se))
    return Deviation(lower_side, upper, float(upper_se), float(reps[:, 1].mean() - upper), n)


def evaluate_encoder(
    encoder: nn.Module,
    world: World,
    config: EvaluateConfig,
    seed: int,
    *,
    curl_loss_name: str = "logistic",
    negatives: int = 1,
    block_size: int = 1,
    objective: Objective | None = None,
    train_tuples: Tuples | None = None,
    device: torch.device | str = "cpu",
    adapters: list[AdapterSpec] | None = None,
    task=None,
    timings: Timings | None = None,
) -> Evaluation:
    """Measure every quantity of DESIGN.md section 3 for one encoder.

    ``curl_loss_name``: ℓ of L_un. ``negatives``/``block_size``: the configured k and b, at which
    L_un and L_un_block are measured besides k = 1. ``objective``/``train_tuples``: the training
    objective, for L_pre (fresh tuples from the objective's sampler: with its ``true_negatives``,
    negatives of other classes only) and L_pre_train (the training tuples). ``adapters``: the built
    adapters (default: ``build_adapters(config)``, from ``config.adapters``). ``task``: the
    ``TaskViews`` of a ``task`` section or of the world's own task world (the adapters fit on its id
    view and are tested on id and ood), or None (the world itself).

    A world too big to enumerate its classes (``worlds.base.enumerable``: more than 2^12, e.g. a
    hypercube with d > 12) gives only what needs tuples: τ (exact), τ_k, R (the norm bound, or the
    largest norm among the L_un tuples' points), L_pre, L_pre_train, L_un (at k = 1 and at the k and b
    of the grids), L_un^=, L_un^≠, alignment and uniformity. Nothing that needs every class is
    measured on it (μ̂, L^μ_sup, s(f), the mean classifier's AVG-k and TOP-R, the full problem, the
    adapters on its own tasks): ``Evaluation.class_level`` is False and the statements that need those
    are not checked. The adapters still run when the tasks are another, enumerable world's (``task``:
    a hypercube's task world), with their rows on its views (``split`` = id).

    ``timings``: where the time goes, by quantity (``preadapt.timing``: stages named after the
    quantities, opened under the caller's stage; the class means and test points are the rest).
    """
    timings = Timings() if timings is None else timings
    level = config.level
    loss = LOSSES[curl_loss_name]
    prior = world.prior
    t = tau(prior)
    enumerated = enumerable(world)
    out: list[Measurement] = []
    moments: dict[str, RunningMean] = {}

    def add(quantity: str, estimate: Estimate, **context) -> None:
        out.append(Measurement(quantity, estimate, context))

    add("tau", Estimate.exact(t))
    if negatives > 1:
        add("tau_k", Estimate.exact(tau_k(prior, negatives)), negatives=negatives)

    # Class means μ̂ and the test points of the accuracies.
    # A world with splits (worlds/finite.py) is its held-out view here: its examples are a sample of
    # the population, which was never trained on. μ̂ is the mean of every example of the class, the
    # accuracies count every example once, and draws from the split are clustered by example, so that
    # intervals are about the population the split was drawn from. The linear heads fit on its train
    # view and choose on its validation view (_split_task_points). A world that draws fresh inputs
    # gets mean_samples points per class for μ̂ and an independent test pool.
    examples = example_ids(world)
    means = pool = leave_out = deviation = None
    if enumerated:
        if examples is not None:
            ids, test_y = examples
            test_f = encode(encoder, world.take(ids), config.block, device)
            pool = MeanPool.from_examples(test_f, test_y, ids, world.classes)
            pool_f = test_f
            if int(pool.counts.min()) < 2:
                short = int(pool.counts.argmin())
                raise ValueError(f"class {short} has {int(pool.counts[short])} held-out example; the class means and "
                                 f"s(f) need at least 2 per class: give the test split more examples")
        else:
            pool_x, _ = sample_per_class(world, config.mean_samples, make_generator(seed, "evaluate", "pool"))
            pool_f = encode(encoder, pool_x, config.block, device)
            pool = MeanPool.full(pool_f.view(world.classes, config.mean_samples, -1))  # (C, m, d)
            test_x, test_y = sample_per_class(world, config.test_per_class, make_generator(seed, "evaluate", "test"))
            test_f = encode(encoder, test_x, config.block, device)
    adapters = build_adapters(config) if adapters is None else adapters
    keep_inputs = needs_inputs(adapters)
    if enumerated:
        test_inputs = (world.take(ids) if examples is not None else test_x) if keep_inputs else None
        means = pool.means  # (C, d)
        # on a finite split the mean classifier's points are among the examples behind μ̂: leave each out
        leave_out = pool.counts if examples is not None else None

    # Norm bound R: by construction, or measured as the largest norm on the evaluation points (on a
    # world too big to enumerate, the points of the L_un tuples, below).
    bound = getattr(encoder, "norm_bound", None)
    if bound is not None:
        add("R", Estimate.exact(float(bound)))
    elif enumerated:
        points = torch.cat([pool_f, test_f]) if examples is None else test_f
        largest = float(points.norm(dim=-1).max())
        add("R", Estimate(largest, largest, largest, len(points), 1.0, "empirical"))

    # Pretraining objective on the training tuples (exact mean) and on fresh tuples.
    l_pre = l_pre_train = None  # the first links of the error chain
    if objective is not None:
        k, b = objective.negatives, objective.block_size
        per_block = _tuples_per_block(config.block, k, b)
        if train_tuples is not None:
            batches = (train_tuples[i:i + per_block] for i in range(0, len(train_tuples), per_block))
            with timings.stage("L_pre_train"):
                train = _objective_moments(encoder, objective, batches, device, clustered=False)  # an exact mean
            l_pre_train = Estimate(train.mean, train.mean, train.mean, train.count, 1.0, "empirical")
            add("L_pre_train", l_pre_train, split="train", negatives=k, block_size=b)
        generator = make_generator(seed, "evaluate", "L_pre")
        true_negatives = objective.true_negatives  # the objective's sampler, not L_un's
        batches = (draw_tuples(world, min(per_block, config.samples - i), generator, k, b,
                               true_negatives=true_negatives)
                   for i in range(0, config.samples, per_block))
        with timings.stage("L_pre"):
            l_pre = _objective_moments(encoder, objective, batches, device).estimate(level)
        add("L_pre", l_pre, split="fresh", negatives=k, block_size=b)

    # L_un at k = 1, with alignment and uniformity [Wang20] on the same tuples.
    align, uniform = RunningMean(), RunningMean()
    largest_norm = {"value": 0.0, "points": 0}  # R where it is measured on these tuples

    def diagnostics(encoded, losses, units) -> None:
        anchor = _normalise(encoded.anchor)
        positive = _normalise(encoded.positives[:, 0])
        negative = _normalise(encoded.negatives[:, 0, 0])  # an independent draw from the marginal
        align.update((anchor - positive).pow(2).sum(-1), units)
        uniform.update(torch.exp(-2.0 * (anchor - negative).pow(2).sum(-1)), units)
        if bound is None and not enumerated:
            every = torch.cat([encoded.anchor, encoded.positives.flatten(0, 1), encoded.negatives.flatten(0, 2)])
            largest_norm["value"] = max(largest_norm["value"], float(every.norm(dim=-1).max()))
            largest_norm["points"] += len(every)

    with timings.stage("L_un"):
        l_un = _curl_moments(encoder, world, config, seed, "L_un", loss, device, extra=diagnostics)
    add("L_un", l_un.estimate(level), negatives=1, block_size=1, split="fresh")
    if bound is None and not enumerated:
        largest, count = largest_norm["value"], largest_norm["points"]
        add("R", Estimate(largest, largest, largest, count, 1.0, "empirical"))
    # The k grid (b = 1) and the b grid (k = 1) of the k-negative and block statements, each from
    # one sample of tuples whose prefixes serve every smaller k (b); they include the objective's.
    k_grid, b_grid = statement_grids(config, negatives, block_size)
    grids: dict[str, dict[int, CollisionMoments]] = {"negatives": {}, "blocks": {}}
    if enumerated:
        if k_grid:
            with timings.stage("L_un negatives grid"):
                grids["negatives"] = negatives_moments(encoder, world, means, k_grid, config.samples,
                                                       make_generator(seed, "evaluate", "negatives"), loss,
                                                       curl_loss_name, config.block, device, leave_out)
            for k, part in grids["negatives"].items():
                if k > 1:
                    add("L_un", part.loss.estimate(level), negatives=k, block_size=1, split="fresh")
        if b_grid:
            with timings.stage("L_un_block grid"):
                grids["blocks"] = block_moments(encoder, world, means, b_grid, config.samples,
                                                make_generator(seed, "evaluate", "blocks"), loss, config.block, device,
                                                leave_out)
            for b, part in grids["blocks"].items():
                add("L_un_block", part.loss.estimate(level), negatives=1, block_size=b, split="fresh")
    else:  # without μ̂ the statements of the grids cannot be checked: their L_un alone, each from its own tuples
        for k in (k for k in k_grid if k > 1):
            with timings.stage("L_un negatives grid"):
                part = _curl_moments(encoder, world, config, seed, ("negatives", k), loss, device, negatives=k)
            add("L_un", part.estimate(level), negatives=k, block_size=1, split="fresh")
        for b in b_grid:
            with timings.stage("L_un_block grid"):
                part = _curl_moments(encoder, world, config, seed, ("blocks", b), loss, device, block_size=b)
            add("L_un_block", part.estimate(level), negatives=1, block_size=b, split="fresh")
    if negatives > 1 and block_size > 1:  # the objective's own (k, b), outside both grids
        with timings.stage("L_un_block"):
            l_un_b = _curl_moments(encoder, world, config, seed, "L_un_block", loss, device,
                                   negatives=negatives, block_size=block_size)
        add("L_un_block", l_un_b.estimate(level), negatives=negatives, block_size=block_size, split="fresh")
    collision_plug_ins = {(family, size): {"lifted": part.mean_part.plug_in(pool), "slack": part.slack.plug_in(pool)}
                          for family, grid in grids.items() for size, part in grid.items()}
    add("align", align.estimate(level), split="fresh")
    u = uniform.estimate(level)  # log is monotone: the interval of the mean maps to one of its log
    add("uniform", Estimate(float(np.log(u.value)), float(np.log(max(u.lower, 1e-300))),
                            float(np.log(u.upper)), u.n, level, u.method), split="fresh")

    # The decomposition L_un = τ·L_un^= + (1 − τ)·L_un^≠, each part from its own sample. The
    # different-class sample is also a sample of 2-class tasks (T = {c, c⁻}, the anchor's class
    # uniform on T by symmetry), so L^μ_sup is measured on the same anchors: a paired difference
    # (where μ̂ is known: on an enumerable world).
    with timings.stage("L_un_same"):
        l_same = _curl_moments(encoder, world, config, seed, "L_un_same", loss, device, condition="same")
    paired = None
    if enumerated:
        mean_loss, gap = MeanClassifierLoss(means, loss, leave_out), RunningMean()

        def paired_mean_classifier(encoded, losses, units) -> None:
            tasks = torch.cat([encoded.anchor_class.view(-1, 1), encoded.negative_class], dim=1)  # (n, 2)
            first = torch.zeros(len(tasks), dtype=torch.long)
            anchor_units = None if units is None else {"example": units["example"][:, :1]}  # W^μ̂ sees the anchor
            mu_losses = mean_loss.update(encoded.anchor, tasks, first, anchor_units)
            gap.update(losses.cpu() - mu_losses, units)

        paired = paired_mean_classifier
    with timings.stage("L_un_diff + L_sup_mean"):  # L^μ_sup on 2-class tasks is paired with it
        l_diff = _curl_moments(encoder, world, config, seed, "L_un_diff", loss, device, condition="different",
                               extra=paired)
    add("L_un_same", l_same.estimate(level), negatives=1, split="fresh")
    add("L_un_diff", l_diff.estimate(level), negatives=1, split="fresh")
    moments.update(L_un=l_un, L_un_same=l_same, L_un_diff=l_diff)
    plug_ins: dict[str, PlugIn] = {}
    if enumerated:
        # μ̂ enters L^μ_sup and the paired gap L_un^≠ − L^μ_sup with opposite gradients
        plug_ins = {"L_sup_mean": mean_loss.plug_in(pool), "diff_minus_mean": mean_loss.plug_in(pool, sign=-1.0)}
        add("L_sup_mean", plug_ins["L_sup_mean"].apply(mean_loss.moments, level), adapter="mean", task_classes=2,
            split="fresh")
        moments.update(L_sup_mean=mean_loss.moments, diff_minus_mean=gap)

        for size in config.task_classes:
            if size != 2:
                generator = make_generator(seed, "evaluate", "L_sup_mean", size)
                with timings.stage("L_sup_mean"):
                    task_loss = mean_classifier_moments(encoder, world, means, size, config.samples, generator, loss,
                                                        config.block, device, leave_out)
                add("L_sup_mean", task_loss.estimate(level, pool), adapter="mean", task_classes=size, split="fresh")

        with timings.stage("s_f bootstrap"):
            deviation = intraclass_deviation(pool.points, prior, config.bootstrap,
                                             make_generator(seed, "evaluate", "s_f"), level, pool.counts)
        add("s_f", deviation.reported(level), split="fresh")

        # Exact AVG-k and TOP-R of the mean classifier on the test points (THEORY.md section 4); on a
        # world with splits, every held-out example once, an interval about the population given μ̂.
        # The adapters' labeled points: for a world with splits, the train view's (its validation view's
        # for choosing), so that no accuracy sees the held-out examples it is scored on; else the pool.
        with timings.stage("adapter pools"):
            adapt_pool, adapt_means, val_pool = _adaptation_pools(encoder, world, config, seed, pool, device,
                                                                  pool_x if examples is None else None, keep_inputs)
        mean_scores = test_f @ adapt_means.T  # (C·t, C)
        task_prior = None if np.allclose(prior, prior[0]) else prior
        for size in config.task_classes:
            add("acc_avg", avg_k_estimate(mean_scores, test_y, size, prior=task_prior, level=level).clipped(0, 1),
                adapter="mean", task_classes=size, split="test")
        for r in config.top_r:
            add("acc_top", top_r_estimate(mean_scores, test_y, r, prior=prior, level=level).clipped(0, 1),
                adapter="mean", top_r=r, split="test")

    # The adapters (evaluate.adapters): few-shot accuracies and adaptation losses on sampled tasks,
    # L*_adapt, and TOP-R on the full problem. W^μ̂, the heads' reference: the adapters' means (the
    # train split's on a world with splits, never the held-out examples the heads are scored on). They
    # run where the tasks' worlds are enumerable (a big world's own tasks are not; its task world's are).
    views = Views.of(world, task)
    adaptation = Adaptation()
    if all(enumerable(view) for view in views.tests.values()):
        with timings.stage("adapters"):
            adaptation = adapt_measurements(encoder, world, adapters, config, seed, loss,
                                            adapt_means if enumerated else None, device, views, timings)
    out.extend(adaptation.measurements)
    if enumerated:
        # An adapter's L*_adapt on the world's own 2-class tasks may be a theory quantity (the linear
        # adapter's is L_sup): with a task section, fitted on the world's own tasks as well
        theory = [spec for spec in adapters if spec.adapter.star_quantity is not None]
        own = {key: value for key, value in adaptation.star.items() if key[1] == "test"}
        if task is not None and theory:
            with timings.stage("L_adapt_star own tasks"):
                own = star_estimates(encoder, world, theory, config, seed, loss, adapt_means, device, Views.of(world),
                                     timings)
        for spec in theory:
            add(spec.adapter.star_quantity, own[(spec.label, "test")], adapter=spec.label, task_classes=2, split="test")
        test = Drawn(test_f[None, None], None, None if test_inputs is None else test_inputs[None, None])
        shots = config.probe_shots
        with timings.stage("full problem"):
            out.extend(full_problem_measurements(encoder, adapters, adapt_pool.part(0, shots), val_pool, test, test_y,
                                                 adapt_means, config, seed, loss, prior, device))
        with timings.stage("full problem few shots"):
            out.extend(few_shot_full_problem(encoder, adapters, adapt_pool, val_pool, test, test_y, adapt_means,
                                             config, seed, loss, prior, device))
    out.extend(chain_measurements(adaptation, l_pre, l_pre_train, level, dependent=examples is not None))
    return Evaluation(out, means, moments, plug_ins, grids["negatives"], grids["blocks"], collision_plug_ins, deviation,
                      shared_examples=examples is not None, class_level=enumerated)


def build_adapters(config: EvaluateConfig) -> list[AdapterSpec]:
    """The adapters of ``config.adapters``, built from the registry (``preadapt.adapt.ADAPTERS``)."""
    return [AdapterSpec(entry.label, ADAPTERS.build(entry, config)) for entry in config.adapters]


def statement_grids(config: EvaluateConfig, negatives: int = 1, block_size: int = 1) -> tuple[list[int], list[int]]:
    """The k at which the k-negative statements are evaluated (b = 1: ``config.negatives`` and the
    objective's k) and the b of the block statements (k = 1: ``config.block_sizes`` and the
    objective's b, with b = 1 as the base of the chain when any b is).

    >>> statement_grids(EvaluateConfig(negatives=[4, 2]), negatives=8)
    ([2, 4, 8], [])
    >>> statement_grids(EvaluateConfig(), negatives=2, block_size=5)
    ([2], [1, 5])
    """
    k_grid = set(config.negatives) | ({negatives} if negatives > 1 else set())
    b_grid = set(config.block_sizes) | ({block_size} if block_size > 1 else set())
    return sorted(k_grid), sorted(b_grid | {1}) if b_grid else []


def _adaptation_pools(encoder, world: World, config: EvaluateConfig, seed: int, pool: MeanPool, device,
                      pool_inputs: torch.Tensor | None, keep_inputs: bool) -> tuple[Drawn, torch.Tensor, Drawn]:
    """The labeled points of the adapters on the full problem: (train pool (1, C, m), the mean
    classifier's class means (C, d), validation pool (1, C, v)). A world without splits gives the
    population pool (``pool_inputs``: its inputs), its means, and the pool's points after the probe's
    shots. A world with splits gives draws from its train and validation views, and as class means
    those of every train example when its examples are known (the μ of [Arora19]'s protocol: all
    labeled training points of each class), else of the draws."""
    shots, val = config.probe_shots, config.probe_val
    train_view, val_view = split_of(world, "train"), split_of(world, "validation")
    if train_view is world and val_view is world:
        inputs = pool_inputs.view(1, world.classes, config.mean_samples, *pool_inputs.shape[1:]) if keep_inputs else None
        whole = Drawn(pool.points[None], None, inputs)
        return whole, pool.means, whole.part(shots, shots + val)

    def draw(view: World, per_class: int, name: str) -> Drawn:
        x, _ = sample_per_class(view, per_class, make_generator(seed, "evaluate", name))
        features = encode(encoder, x, config.block, device).view(1, world.classes, per_class, -1)
        return Drawn(features, None, x.view(1, world.classes, per_class, *x.shape[1:]) if keep_inputs else None)

    train = draw(train_view, config.mean_samples, "adapt-pool")
    examples = example_ids(train_view)
    if examples is None:
        means = train.features[0].mean(dim=1)
    else:
        ids, classes = examples
        features = encode(encoder, train_view.take(ids), config.block, device)
        means = MeanClassifier().fit(features, classes, num_classes=world.classes).means_
    return train, means, draw(val_view, val, "adapt-validation")
