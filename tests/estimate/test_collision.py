"""The collision moments behind the k-negative and block statements of [Arora19] (THEORY.md
section 3; src/preadapt/estimate/collision.py), against oracles: brute-force enumeration over class
tuples, slow per-tuple Python loops on the very tuples the estimators draw, exact enumeration on a
noise-free world, and the constant encoder, where every statement's slack has a closed form."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

from preadapt.bounds import block_below_un, block_monotone, lemma_4_3_negatives, proposition_6_2
from preadapt.encoders import ENCODERS, IdentityEncoder
from preadapt.estimate import EvaluateConfig, collision, evaluate_encoder
from preadapt.estimate.collision import _window_losses, block_moments, collision_floor, negatives_moments, task_mean_losses
from preadapt.estimate.estimate import PlugIn
from preadapt.estimate.pool import MeanPool, plug_in_variance
from preadapt.estimate.quantities import Evaluation
from preadapt.objectives import LOSSES
from preadapt.objectives.curl import encode_tuples
from preadapt.worlds import WORLDS, GaussianWorld, tau
from preadapt.worlds.prior import tau_k
from preadapt.worlds.sampling import draw_tuples, make_generator

F64 = torch.float64
LN2 = math.log(2.0)
Z = stats.norm.ppf(0.9995)  # two-sided 0.999: each test makes a dozen or so comparisons
PRIOR = np.array([0.4, 0.3, 0.2, 0.1])
# explicit means, not normalised: class 3 scores class 0 above itself (μ₃ᵀμ₀ = 0.35 > ‖μ₃‖² = 0.26), so
# the mean classifier errs on it, CURL margins can be negative, and no slack is an exact tie
MEANS = torch.tensor([[1.0, 0.0, 0.5], [0.6, 1.2, 0.0], [-0.8, 0.3, 0.9], [0.3, -0.4, 0.1]])
TIE = 1e-12  # float64 rounding of a slack that is exactly 0


# --- slow scalar references, written from THEORY.md section 3 -------------------------------------

def _hinge(margins) -> float:
    """max(0, 1 + max_i(−v_i)); no wrong class (empty margins) gives max(0, −inf) = 0."""
    return max(0.0, 1.0 - min(margins)) if len(margins) else 0.0


def _logistic(margins) -> float:
    """log₂(1 + Σ_i exp(−v_i)), evaluated stably."""
    return float(np.logaddexp.reduce([0.0, *(-float(v) for v in margins)])) / LN2


SCALAR = {"hinge": _hinge, "logistic": _logistic}


def _task(classes):
    """T without the anchor: the distinct negative classes other than the anchor's (first seen first)."""
    anchor, others = classes[0], []
    for c in classes[1:]:
        if c != anchor and c not in others:
            others.append(c)
    return others


def _mean_classifier(x, anchor, others, means, loss_name) -> tuple[float, float]:
    """h, the mean classifier's loss at label ``anchor`` on T = {anchor, *others}, and ℓ at zero
    margins on T (1 for hinge, log₂|T| for logistic; 0 when T has a single class)."""
    margins = [float(x @ means[anchor] - x @ means[c]) for c in others]
    return SCALAR[loss_name](margins), SCALAR[loss_name]([0.0] * len(others))


def _floor(m: int, loss_name: str) -> float:
    """g(m): 1{m ≥ 1} (hinge) or log₂(1 + m) (logistic)."""
    return float(m >= 1) if loss_name == "hinge" else math.log2(1 + m)


def _class_tuples(prior, k):
    """Every (c, c⁻_1..c⁻_k) ∈ C^{k+1} with its probability Π ρ."""
    for combo in itertools.product(range(len(prior)), repeat=k + 1):
        yield combo, math.prod(prior[c] for c in combo)


def _agree(estimate, exact, scale=1.0):
    """|estimate − exact| within z_0.999 standard errors (``scale`` multiplies a raw moment)."""
    bound = Z * estimate.se * abs(scale) + TIE
    assert abs(estimate.value * scale - exact) <= bound, (estimate.value * scale, exact, bound)


# --- 1. collision_floor against enumeration ----------------------------------------------------

@pytest.mark.parametrize("prior", [np.full(3, 1 / 3), np.array([0.5, 0.3, 0.2]), np.array([0.4, 0.3, 0.2, 0.1]),
                                   np.array([0.9, 0.1])], ids=["uniform3", "skewed3", "skewed4", "two"])
@pytest.mark.parametrize("negatives", [1, 2, 3, 4])
@pytest.mark.parametrize("loss_name", ["hinge", "logistic"])
def test_collision_floor_equals_enumeration_over_class_tuples(prior, negatives, loss_name):
    expected = 0.0
    for combo, p in _class_tuples(prior, negatives):
        m = sum(c == combo[0] for c in combo[1:])
        expected += p * _floor(m, loss_name)
    # ≤ 4⁵ = 1024 positive terms summed here (≤ 1024·ε ≈ 2.3e-13 relative) against scipy's binomial pmf
    assert collision_floor(prior, negatives, loss_name) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    if loss_name == "hinge":
        assert collision_floor(prior, negatives, "hinge") == pytest.approx(tau_k(prior, negatives), rel=1e-12)
    if negatives == 1:  # log₂ 2 = 1: both losses give τ at k = 1
        assert collision_floor(prior, 1, loss_name) == pytest.approx(tau(prior), rel=1e-12)


# --- 2. task_mean_losses against a per-row loop ------------------------------------------------

@pytest.mark.parametrize("negatives", [1, 2, 5])
@pytest.mark.parametrize("loss_name", ["hinge", "logistic"])
def test_task_mean_losses_equals_a_per_row_loop(negatives, loss_name):
    generator = torch.Generator().manual_seed(negatives)
    n, classes, d = 400, 3, 4  # few classes: collisions and repeated negatives are common
    anchor = torch.randn(n, d, generator=generator, dtype=F64)
    means = 0.7 * torch.randn(classes, d, generator=generator, dtype=F64)
    labels = torch.randint(classes, (n, 1 + negatives), generator=generator)
    labels[0] = 0  # every negative collides: T = {c}, no wrong class
    labels[1, :min(classes, 1 + negatives)] = torch.arange(min(classes, 1 + negatives))  # as many classes as can be
    losses, zero = task_mean_losses(anchor, labels, means, LOSSES[loss_name])
    assert losses.shape == zero.shape == (n,)
    sizes = set()
    for i in range(n):
        row = labels[i].tolist()
        others = _task(row)
        sizes.add(1 + len(others))
        h, h_zero = _mean_classifier(anchor[i], row[0], others, means, loss_name)
        # batched einsum vs per-row dot products (d = 4, |terms| ≲ 3): ≲ 1e-14 apart
        assert float(losses[i]) == pytest.approx(h, rel=1e-12, abs=1e-12), (row, h)
        assert float(zero[i]) == pytest.approx(h_zero, rel=1e-12, abs=1e-12), (row, h_zero)
        if len(others) >= 1:  # ℓ(0) on |T| classes: 1 for hinge, log₂|T| for logistic
            assert h_zero == pytest.approx(1.0 if loss_name == "hinge" else math.log2(1 + len(others)))
    assert sizes == set(range(1, min(classes, negatives + 1) + 1))  # every task size occurred


def test_task_mean_losses_ignores_the_order_of_the_negatives():
    generator = torch.Generator().manual_seed(0)
    anchor = torch.randn(200, 3, generator=generator, dtype=F64)
    means = torch.randn(5, 3, generator=generator, dtype=F64)
    labels = torch.randint(5, (200, 5), generator=generator)
    shuffled = torch.cat([labels[:, :1], labels[:, 1:][:, torch.randperm(4, generator=generator)]], dim=1)
    for loss in LOSSES.values():
        for a, b in zip(task_mean_losses(anchor, labels, means, loss), task_mean_losses(anchor, shuffled, means, loss)):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


# --- 3. exact enumeration on a noise-free world ------------------------------------------------

def _noise_free_enumeration(prior, means, negatives, loss_name) -> dict[str, float]:
    """With f(x) = μ_c exactly, every per-tuple variable is a function of the classes: the
    population values are finite sums over C^{k+1}.

    L_un = E ℓ({μ_cᵀ(μ_c − μ_{c⁻_i})}_i) over the marginal; over D (c ∉ {c⁻_i}, T distinct, label c):
    L^μ_sup,D = E_D h and the vacuity threshold E_D ℓ(0 on T); rhs = (L_un − E g(m))/(1 − τ_k)."""
    means = means.to(F64)
    total = {"L_un": 0.0, "floor": 0.0, "no_collision": 0.0, "lhs": 0.0, "threshold": 0.0}
    for combo, p in _class_tuples(prior, negatives):
        x = means[combo[0]]
        margins = [float(x @ (means[combo[0]] - means[c])) for c in combo[1:]]
        m = sum(c == combo[0] for c in combo[1:])
        total["L_un"] += p * SCALAR[loss_name](margins)
        total["floor"] += p * _floor(m, loss_name)
        if m == 0:
            h, h_zero = _mean_classifier(x, combo[0], _task(combo), means, loss_name)
            total["no_collision"] += p
            total["lhs"] += p * h
            total["threshold"] += p * h_zero
    q = total["no_collision"]  # P(m = 0) = 1 − τ_k
    rhs = (total["L_un"] - total["floor"]) / q
    return {"L_un": total["L_un"], "floor": total["floor"], "no_collision": q, "lhs": total["lhs"] / q,
            "threshold": total["threshold"] / q, "rhs": rhs, "slack": rhs - total["lhs"] / q}


@pytest.mark.parametrize("loss_name", ["hinge", "logistic"])
def test_negatives_moments_match_exact_enumeration_on_a_noise_free_world(loss_name):
    world = GaussianWorld(MEANS, noise=0.0, prior=PRIOR)
    means = world.means.to(F64)  # the world's true means: f(x) = μ_c exactly under the identity
    grid = [1, 2, 3]
    out = negatives_moments(IdentityEncoder(), world, means, grid, 20000, torch.Generator().manual_seed(0),
                            LOSSES[loss_name], loss_name)
    assert sorted(out) == grid
    for k in grid:
        exact = _noise_free_enumeration(world.prior, means, k, loss_name)
        assert exact["no_collision"] == pytest.approx(1.0 - tau_k(world.prior, k), rel=1e-12)
        assert exact["floor"] == pytest.approx(collision_floor(world.prior, k, loss_name), rel=1e-12)
        if loss_name == "hinge":
            assert exact["threshold"] == pytest.approx(1.0)
        scale = 1.0 / exact["no_collision"]
        part = out[k]
        assert part.loss.count == part.mean_part.moments.count == part.slack.moments.count == 20000
        _agree(part.loss.estimate(0.999), exact["L_un"])
        _agree(part.mean_part.moments.estimate(0.999), exact["lhs"], scale)
        _agree(part.threshold.estimate(0.999), exact["threshold"], scale)
        _agree(part.slack.moments.estimate(0.999), exact["slack"], scale)

        # the check reads the same moments: lhs, rhs and slack agree with the enumeration
        evaluation = Evaluation([], means, {}, negatives=out, collision_plug_ins={("negatives", k): {"lifted": PlugIn(), "slack": PlugIn()}})
        check = lemma_4_3_negatives(evaluation, world.prior, k, loss_name, level=0.999)
        for side in ("lhs", "rhs", "slack"):
            _agree(getattr(check, side), exact[side])
        assert check.status == "holds"
        # the statement is true; at k = 1 it is an equality here (the CURL margins are the mean
        # classifier's), with more negatives collided tuples keep other margins and it is strict
        assert exact["slack"] > 1e-3 if k > 1 else abs(exact["slack"]) <= TIE


# --- 4. slow loops over the very tuples the estimators draw ------------------------------------

class Scaled(torch.nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def forward(self, x):  # (n, d) -> (n, d)
        return self.scale * x.flatten(1)


def _noisy_world():
    return GaussianWorld(MEANS, noise=1.0, prior=PRIOR)


def _assert_moments(running, values, tolerance=1e-10):
    """A RunningMean holds exactly the per-tuple ``values``: count, mean and variance.

    The two sides are different computations (batched torch vs this loop, then two summation
    orders): values of magnitude ≲ 20 agree to a few ε·20 ≈ 1e-14 each, and means and variances of
    n = 300 of them to ≲ n·ε ≈ 7e-14 of their magnitude (≲ 20) worst case: ≲ 1.3e-12, far inside
    1e-10 (rel 1e-8) and far below any wrong formula's O(0.1) effect.
    """
    values = np.asarray(values, dtype=np.float64)
    assert running.count == values.size
    assert running.mean == pytest.approx(values.mean(), abs=tolerance)
    assert running.m2 / (running.count - 1) == pytest.approx(values.var(ddof=1), rel=1e-8, abs=tolerance)


def _reference_gradient(x_rows, classes_rows, means, loss_name, left_out=None):
    """Σ over tuples of ∂(h·1{m = 0})/∂μ, by autograd through the scalar loop (not task_mean_losses).
    ``left_out: (C,)``: the anchor is one of the m_c points behind its own class's mean, which it is scored
    against without itself, (m_c·μ_c − x)/(m_c − 1)."""
    mu = means.detach().clone().requires_grad_(True)
    total = torch.zeros((), dtype=F64)
    for x, row in zip(x_rows, classes_rows):
        if row[0] in row[1:]:
            continue  # collided: h·1{m = 0} = 0
        own = mu[row[0]] if left_out is None else (left_out[row[0]] * mu[row[0]] - x) / (left_out[row[0]] - 1.0)
        margins = torch.stack([x @ own - x @ mu[c] for c in _task(row)])
        if loss_name == "hinge":
            total = total + torch.clamp(1.0 - margins.min(), min=0.0)
        else:
            total = total + torch.logsumexp(torch.cat([torch.zeros(1, dtype=F64), -margins]), 0) / LN2
    (gradient,) = torch.autograd.grad(total, mu)
    return gradient


@pytest.mark.parametrize("loss_name", ["hinge", "logistic"])
def test_negatives_moments_equal_a_per_tuple_loop(loss_name):
    world, encoder, grid, n = _noisy_world(), IdentityEncoder(), [1, 2, 4], 300  # one block of tuples
    means = world.means.to(F64) + 0.1  # any μ̂ will do: it need not be the true means
    out = negatives_moments(encoder, world, means, grid, n, torch.Generator().manual_seed(3), LOSSES[loss_name],
                            loss_name)
    tuples = draw_tuples(world, n, torch.Generator().manual_seed(3), max(grid), 1)
    encoded = encode_tuples(encoder, tuples, dtype=F64)
    classes = torch.cat([tuples.anchor_class.view(-1, 1), tuples.negative_class], dim=1).tolist()
    for k in grid:
        values = {"loss": [], "part": [], "slack": [], "threshold": []}
        for i in range(n):
            x, row = encoded.anchor[i], classes[i][:k + 1]
            margins = [float(x @ (encoded.positives[i, 0] - encoded.negatives[i, j, 0])) for j in range(k)]
            m = sum(c == row[0] for c in row[1:])
            loss = SCALAR[loss_name](margins)
            h, h_zero = _mean_classifier(x, row[0], _task(row), means, loss_name)
            part = h if m == 0 else 0.0
            values["loss"].append(loss)
            values["part"].append(part)
            values["slack"].append(loss - _floor(m, loss_name) - part)
            values["threshold"].append(h_zero if m == 0 else 0.0)
        moments = out[k]
        _assert_moments(moments.loss, values["loss"])
        _assert_moments(moments.mean_part.moments, values["part"])
        _assert_moments(moments.slack.moments, values["slack"])
        _assert_moments(moments.threshold, values["threshold"])
        gradient = _reference_gradient(encoded.anchor, [row[:k + 1] for row in classes], means, loss_name)
        torch.testing.assert_close(moments.mean_part.gradient, gradient, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(moments.slack.gradient, -gradient, rtol=1e-10, atol=1e-10)


def _block_reference(single, loss_name, b, previous):
    """Per-tuple ℓ_b = ℓ(mean of the first b margins), un = mean of their single-pair losses, and the
    mean over the b cyclic windows of ``previous`` margins of ℓ(window mean)."""
    f = SCALAR[loss_name]
    v = [float(s) for s in single[:b]]
    block = f([sum(v) / b])
    un = sum(f([s]) for s in v) / b
    windows = None
    if previous is not None:
        windows = sum(f([sum(v[(i + t) % b] for t in range(previous)) / previous]) for i in range(b)) / b
    return block, un, windows


@pytest.mark.parametrize("loss_name", ["hinge", "logistic"])
def test_block_moments_equal_a_per_tuple_loop(loss_name):
    world, encoder, grid, n = _noisy_world(), IdentityEncoder(), [1, 2, 5], 300  # one block of tuples
    means = world.means.to(F64) - 0.2
    out = block_moments(encoder, world, means, grid, n, torch.Generator().manual_seed(4), LOSSES[loss_name])
    tuples = draw_tuples(world, n, torch.Generator().manual_seed(4), 1, max(grid))
    encoded = encode_tuples(encoder, tuples, dtype=F64)
    classes = torch.cat([tuples.anchor_class.view(-1, 1), tuples.negative_class], dim=1).tolist()
    single = ((encoded.positives - encoded.negatives[:, 0]) * encoded.anchor.unsqueeze(1)).sum(-1)  # (n, b_max)
    assert [out[b].previous for b in grid] == [None, 1, 2]
    for b, previous in zip(grid, [None, 1, 2]):
        values = {"loss": [], "part": [], "slack": [], "un": [], "below_un": [], "monotone": []}
        for i in range(n):
            x, row = encoded.anchor[i], classes[i]
            v = [float(x @ (encoded.positives[i, j] - encoded.negatives[i, 0, j])) for j in range(max(grid))]
            assert v == pytest.approx(single[i].tolist(), abs=1e-12)
            block, un, windows = _block_reference(v, loss_name, b, previous)
            collided = row[1] == row[0]
            part = 0.0 if collided else _mean_classifier(x, row[0], _task(row), means, loss_name)[0]
            values["loss"].append(block)
            values["part"].append(part)
            values["slack"].append(block - float(collided) - part)  # g(1) = 1 for both losses
            values["un"].append(un)
            values["below_un"].append(un - block)
            if windows is not None:
                values["monotone"].append(windows - block)
        moments = out[b]
        for name, running in (("loss", moments.loss), ("part", moments.mean_part.moments),
                              ("slack", moments.slack.moments), ("un", moments.un), ("below_un", moments.below_un)):
            _assert_moments(running, values[name])
        if previous is None:
            assert moments.monotone.count == 0
        else:
            _assert_moments(moments.monotone, values["monotone"])
        # convexity of ℓ, tuple by tuple: a mean of margins loses no more than the mean of their losses
        # ≥ 0 exactly in real arithmetic; in float64 a few ulps of losses ≲ 20 (≲ 1e-14) below. At b = 1
        # un and ℓ are the same loss of the same margin but evaluated in tensors of different lengths,
        # where torch's SIMD body and scalar tail (softplus, log1p) may round it an ulp apart: 0 ± 1e-14.
        assert min(values["below_un"]) >= -1e-12 and moments.below_un.mean >= -1e-12
        assert min(values["monotone"], default=0.0) >= -1e-12 and moments.monotone.mean >= -1e-12
        gradient = _reference_gradient(encoded.anchor, classes, means, loss_name)
        torch.testing.assert_close(moments.mean_part.gradient, gradient, rtol=1e-10, atol=1e-10)
    # one margin: the block loss is the single-pair loss, computed once in an (n,) and once in an
    # (n·b_max,) tensor, whose SIMD and scalar code paths may round ℓ ≲ 20 an ulp (≲ 4e-15) apart; the
    # two means of n = 300 such values then differ by ≲ 4e-15 + 2·n·ε·|ℓ̄| ≈ 2e-13 (not exactly 0)
    assert abs(out[1].below_un.mean) <= 1e-12
    # the b = 1 block loss is the single-pair CURL loss, and un at b is its mean over b pairs
    assert out[1].loss.mean == pytest.approx(out[1].un.mean, abs=1e-12)


@pytest.mark.parametrize("loss_name", ["hinge", "logistic"])
@pytest.mark.parametrize("many_classes", [False, True], ids=["C<=(1+k)d", "C>(1+k)d"])
def test_negatives_moments_with_the_anchor_left_out_equal_a_per_tuple_loop(loss_name, many_classes, monkeypatch):
    """``leave_out`` (a finite split's anchors are among the points behind μ̂): each anchor's own class
    mean without the anchor, h and its gradient in μ̂ from the scalar loop. Blocks of 8 tuples and chunks
    of 3 blocks (and a last, shorter one), so that chunks join blocks. Both ways of summing the gradient
    by class (``collision._per_class``): 4 classes in 3 dimensions, and 16 in 1 (16 > (1 + 4)·1)."""
    if many_classes:
        world = GaussianWorld(torch.linspace(-2.0, 2.0, 16).view(16, 1), noise=1.0, prior=np.full(16, 1 / 16))
        left_out = torch.arange(2, 18)
    else:
        world, left_out = _noisy_world(), torch.tensor([5, 2, 9, 3])  # m_c ≥ 2 points behind each class's mean
    dim = world.means.shape[1]
    monkeypatch.setattr(collision, "CHUNK_ELEMENTS", 3 * 8 * (1 + 4) * dim)  # 3 blocks of 8 tuples, k_max 4
    encoder, grid, n = IdentityEncoder(), [1, 2, 4], 100
    means = world.means.to(F64) + 0.1
    out = negatives_moments(encoder, world, means, grid, n, torch.Generator().manual_seed(5), LOSSES[loss_name],
                            loss_name, block=8 * (2 + 4), leave_out=left_out)
    draws = torch.Generator().manual_seed(5)
    blocks = [draw_tuples(world, min(8, n - start), draws, max(grid), 1) for start in range(0, n, 8)]
    encoded = [encode_tuples(encoder, tuples, dtype=F64) for tuples in blocks]
    anchors = torch.cat([e.anchor for e in encoded])
    classes = torch.cat([torch.cat([t.anchor_class.view(-1, 1), t.negative_class], dim=1) for t in blocks]).tolist()
    for k in grid:
        parts = []
        for x, row in zip(anchors, classes):
            own = (left_out[row[0]] * means[row[0]] - x) / (left_out[row[0]] - 1.0)
            adjusted = means.clone()
            adjusted[row[0]] = own
            h, _ = _mean_classifier(x, row[0], _task(row[:k + 1]), adjusted, loss_name)
            parts.append(h if row[0] not in row[1:k + 1] else 0.0)
        _assert_moments(out[k].mean_part.moments, parts)
        gradient = _reference_gradient(anchors, [row[:k + 1] for row in classes], means, loss_name, left_out)
        # Two float64 computations of one sum over n = 100 tuples (batched vs the scalar loop). Per tuple the
        # loss's derivatives in the scores sum to ≤ 2/ln 2 in absolute value, times ‖x‖ ≲ 6 (unit noise around
        # means of size ≤ 2), times the leave-out factor m/(m − 1) ≤ 2: Σ|terms| ≲ 100·2.9·6·2 ≈ 3.5e3, so
        # any summation order is within n·ε·Σ|terms| ≈ 4e-11 of the exact sum (IEEE-754, every CPU); two such
        # sides are within 1e-10. A wrong gradient (no leave-out, a lost class) is off by O(1).
        torch.testing.assert_close(out[k].mean_part.gradient, gradient, rtol=1e-10, atol=1e-10)


def test_the_grids_chunks_change_no_estimate_on_a_finite_world(monkeypatch):
    """On a world of finite examples the moments are clustered by example (``units``): joining blocks
    into chunks joins their units too. Every estimate, with its n, equals the one-block-a-chunk run's to
    float64 rounding: only the order of the sums differs. With ‖f(x)‖ ≤ 1 (the encoder's norm bound) every
    margin lies in [−2, 2], so each value is ≤ log₂(1 + 6e²) < 6 and each tuple's gradient term has norm
    ≤ 2/ln 2 < 3; over n = 600 tuples a sum in any order is within n·ε·Σ|terms| of the exact one: ≤ 4e-13
    for the means (Σ|terms| ≤ 600·6, then divided by n) and ≤ 1.2e-10 for the gradients (Σ|terms| ≤ 1800),
    so two orders differ by at most twice that on any IEEE-754 CPU. The standard errors come from sums of
    squared deviations of these values, relatively as exact (n·ε·mean²/variance ≲ 1e-12 here); 1e-9
    relative leaves room. A lost or doubled block moves every one of them by far more."""
    world = WORLDS.build(WORLDS.parse({"kind": "finite", "dataset": "digits"}), make_generator(0, "world"))
    encoder = ENCODERS.build(ENCODERS.parse({"kind": "mlp", "hidden": [16], "out_dim": 4, "norm_bound": 1.0}),
                             world.input_shape, make_generator(0, "encoder")).eval()
    means = torch.randn(world.classes, 4, dtype=F64, generator=torch.Generator().manual_seed(0))
    loss = LOSSES["logistic"]

    def grids():
        negatives = negatives_moments(encoder, world, means, [1, 3, 6], 600, torch.Generator().manual_seed(1), loss,
                                      "logistic", block=200)
        blocks = block_moments(encoder, world, means, [1, 2, 4], 600, torch.Generator().manual_seed(2), loss, block=200)
        return [(part, ("loss", "lifted", "threshold")) for part in negatives.values()] + [
            (part, ("loss", "lifted", "un", "below_un", "window")) for part in blocks.values() if part.previous]

    chunked = grids()
    monkeypatch.setattr(collision, "CHUNK_ELEMENTS", 1)  # one block a chunk
    alone = grids()
    for (a, fields), (b, _) in zip(chunked, alone):
        for name in fields:
            x, y = getattr(a, name).estimate(0.95), getattr(b, name).estimate(0.95)
            assert (x.n, x.method) == (y.n, y.method) and x.method == "cluster"
            assert x.value == pytest.approx(y.value, abs=1e-12) and x.se == pytest.approx(y.se, rel=1e-9, abs=1e-13)
        torch.testing.assert_close(a.slack.gradient, b.slack.gradient, rtol=0, atol=2.5e-10)


def test_hinge_is_linear_near_zero_so_the_convexity_gaps_vanish():
    # features of norm ~1e-3: every margin lies in (−1, 1), where the hinge is 1 − v, linear
    world = _noisy_world()
    out = block_moments(Scaled(1e-3), world, world.means.to(F64) * 1e-3, [1, 2, 5], 2000,
                        torch.Generator().manual_seed(5), LOSSES["hinge"])
    for b, moments in out.items():
        # each per-tuple gap is a difference of values ≈ 1 made of ≤ b + 2 roundings: ≲ 1.5e-15, so
        # its mean ≲ 1.5e-15 and m2 ≲ n·(1.5e-15)² ≈ 5e-27 (a convexity gap would be ≳ 1e-3)
        assert abs(moments.below_un.mean) <= 1e-12 and moments.below_un.m2 <= 1e-20
        if b > 1:
            assert abs(moments.monotone.mean) <= 1e-12 and moments.monotone.m2 <= 1e-20
        assert moments.loss.mean == pytest.approx(1.0, abs=1e-4)  # ℓ ≈ ℓ(0) = 1


@pytest.mark.parametrize("loss_name", ["hinge", "logistic"])
def test_window_losses_equal_a_loop_and_lie_above_the_block_loss(loss_name):
    generator = torch.Generator().manual_seed(6)
    b = 6
    margins = 2.0 * torch.randn(50, b, generator=generator, dtype=F64)
    for width in range(1, b + 1):
        result = _window_losses(margins, width, LOSSES[loss_name])
        for i in range(len(margins)):
            v = margins[i].tolist()
            block, _, windows = _block_reference(v, loss_name, b, width)
            assert float(result[i]) == pytest.approx(windows, rel=1e-12, abs=1e-12)
            assert windows >= block - 1e-12
        if width == b:  # every window is the whole block
            torch.testing.assert_close(result, LOSSES[loss_name](margins.mean(1, keepdim=True)), rtol=1e-12, atol=1e-12)


def test_plug_in_variance_equals_its_formula():
    generator = torch.Generator().manual_seed(7)
    pool = torch.randn(4, 30, 3, generator=generator, dtype=F64) * torch.tensor([1.0, 2.0, 0.5], dtype=F64)
    gradient = torch.randn(4, 3, generator=generator, dtype=F64)
    expected = sum(float(np.var((pool[a] @ gradient[a]).numpy(), ddof=1)) / 30 for a in range(4))
    assert plug_in_variance(gradient, pool) == pytest.approx(expected, rel=1e-12)
    # identical points: the mean of 30 copies of x is x only up to ≤ 30·ε·|x| per coordinate (summation
    # order), so each projection is ≲ 30·ε·Σ_d|g_d x_d| ≤ 30·ε·4.3 ≈ 3e-14 and the variance
    # ≲ 4·30·(3e-14)²/(29·30) ≈ 1e-28, not exactly 0 (the real pool gives 0.46)
    assert plug_in_variance(gradient, pool[:, :1].expand(4, 30, 3).clone()) <= 1e-26
    # padded pools: class a keeps its first counts[a] rows, the rest is ignored
    counts = torch.tensor([30, 12, 5, 2])
    padded = pool.clone()
    for a, count in enumerate(counts.tolist()):
        padded[a, count:] = 1e6  # padding never enters
    expected = sum(float(np.var((pool[a, :c] @ gradient[a]).numpy(), ddof=1)) / c for a, c in enumerate(counts.tolist()))
    assert plug_in_variance(gradient, padded, counts) == pytest.approx(expected, rel=1e-12)


def test_plug_in_influence_is_the_delta_method_of_the_pooled_mean():
    """On a finite split, an example's influence through μ̂ is g_aᵀ(f(x) − μ̂_a)/m_a: for a mean that is
    linear in μ̂ the influences of one class sum to 0 and their squares to the plug-in variance·(m−1)/m."""
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(9, 2, generator=generator, dtype=F64)
    classes = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1])
    pool = MeanPool.from_examples(features, classes, torch.arange(100, 109), 2)
    gradient = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=F64)
    plug_in = pool.plug_in(gradient)
    assert sorted(plug_in.ids.tolist()) == list(range(100, 109))
    phi = dict(zip(plug_in.ids.tolist(), plug_in.influence.tolist()))
    for a, members in ((0, range(100, 104)), (1, range(104, 109))):
        values = [phi[i] for i in members]
        m = len(values)
        assert sum(values) == pytest.approx(0.0, abs=1e-12)
        projected = features[classes == a] @ gradient[a]
        assert sum(v * v for v in values) == pytest.approx(float(projected.var(unbiased=False)) / m, rel=1e-12)


# --- 5. the constant encoder: closed-form slacks of every check --------------------------------

class Constant(torch.nn.Module):
    """f(x) = a fixed vector: every margin is 0, every score ties."""

    def forward(self, x):  # (n, D) -> (n, 2)
        return torch.tensor([0.6, -0.3]).expand(len(x), 2)


CONSTANT_CONFIG = EvaluateConfig(samples=3000, mean_samples=50, test_per_class=10, task_classes=[2], top_r=[1],
                                 probe_tasks=4, probe_shots=10, probe_val=10, star_samples=20, bootstrap=10,
                                 negatives=[1, 2, 4], block_sizes=[2, 5])


def _constant_slack(prior, k, loss_name) -> float:
    """rhs − lhs at zero margins: (ℓ(0_k) − E g(m))/(1 − τ_k) − E_D ℓ(0 on T). 0 for hinge (ℓ ≡ 1,
    g(m) = 1{m ≥ 1}); for logistic log₂(1+k) − log₂(1+m) > 0 when 1 ≤ m < k and log₂(1+k) − log₂|T| > 0
    when m = 0 and negatives repeat, so the slack is positive for k ≥ 2."""
    total = 0.0
    for combo, p in _class_tuples(prior, k):
        m = sum(c == combo[0] for c in combo[1:])
        zero_t = SCALAR[loss_name]([0.0] * len(_task(combo))) if m == 0 else 0.0
        total += p * (SCALAR[loss_name]([0.0] * k) - _floor(m, loss_name) - zero_t)
    return total / (1.0 - tau_k(prior, k))


@pytest.mark.parametrize("loss_name", ["hinge", "logistic"])
def test_constant_encoder_gives_closed_form_slacks(loss_name):
    world = GaussianWorld(MEANS, noise=1.0, prior=PRIOR)
    evaluation = evaluate_encoder(Constant(), world, CONSTANT_CONFIG, 0, curl_loss_name=loss_name)
    t = tau(world.prior)
    assert sorted(evaluation.negatives) == [1, 2, 4] and sorted(evaluation.blocks) == [1, 2, 5]
    checks = [lemma_4_3_negatives(evaluation, world.prior, k, loss_name) for k in evaluation.negatives]
    checks += [proposition_6_2(evaluation, t, b) for b in evaluation.blocks]
    checks += [block_below_un(evaluation, t, b) for b in evaluation.blocks]
    checks += [block_monotone(evaluation, b) for b in evaluation.blocks if evaluation.blocks[b].previous]
    assert len(checks) == 3 + 3 + 3 + 2
    for check in checks:
        assert check.status == "holds", check
        k = check.context.get("negatives", 1)
        exact = _constant_slack(world.prior, k, loss_name) if check.name == "lemma_4_3_negatives" else 0.0
        if exact == 0.0 or k == 1:  # a tie: every per-tuple slack is 0 (up to rounding)
            assert abs(check.slack.value) <= 1e-12 and check.slack.se <= 1e-12, check
        else:  # logistic, k ≥ 2: a positive constant, estimated on the sampled classes
            assert exact > 0.1
            _agree(check.slack, exact)


def test_constant_encoder_hinge_bound_is_vacuous_at_every_k():
    world = GaussianWorld(MEANS, noise=1.0, prior=PRIOR)
    evaluation = evaluate_encoder(Constant(), world, CONSTANT_CONFIG, 0, curl_loss_name="hinge")
    notes = {k: lemma_4_3_negatives(evaluation, world.prior, k, "hinge").note for k in evaluation.negatives}
    assert all(note is not None and note.startswith("vacuous") for note in notes.values()), notes


def test_logistic_block_below_un_is_nonnegative_tuple_by_tuple_at_large_negative_margins():
    single = torch.tensor([[-19.9, -20.1]], dtype=F64)  # (n, b): true gap (convexity) ≈ +1.5e-11
    loss = LOSSES["logistic"]
    below_un = loss(single.reshape(-1, 1)).view(1, 2).mean(1) - loss(single.mean(1, keepdim=True))
    # losses ≈ 28.8 round to ≈ 4e-15 each, so the computed gap is 1.5e-11 ± 1e-14; with softplus'
    # default threshold 20 (linear past it, error e^{−20}) it came out ≈ −1.3e-9
    assert float(below_un) >= -1e-12
