"""Rad_S and Gen_M of [Arora19] Theorem 4.1 against oracles: exact enumeration over σ, a brute-force
supremum, the Jensen / Khintchine–Kahane sandwich, and a finite subclass of ReLU nets."""

import itertools
import math

import pytest
import torch
from scipy import stats
from torch import nn

from preadapt.bounds.rademacher import (
    class_complexity, gen_m_coefficients, generalisation_term, linear_rademacher, linear_rademacher_upper,
    loss_range, mlp_norms, mlp_rademacher_upper, tuple_points,
)
from preadapt.bounds.arora2019 import LIPSCHITZ
from preadapt.encoders import IdentityEncoder, LinearEncoder, MLPEncoder
from preadapt.estimate.estimate import Estimate, mean_estimate
from preadapt.objectives import LOSSES
from preadapt.worlds.sampling import Tuples

STRICT = 0.9999  # level of the intervals an oracle must fall in (fixed seeds: deterministic)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _all_signs(N: int, d: int) -> torch.Tensor:
    """Every σ ∈ {±1}^{N·d}: (2^{N·d}, N, d)."""
    codes = torch.arange(2 ** (N * d))[:, None] >> torch.arange(N * d)  # (2^{Nd}, Nd)
    return ((codes & 1) * 2 - 1).to(torch.float64).reshape(-1, N, d)


def _exact_linear(points: torch.Tensor, d: int, B: float) -> float:
    """E_σ B·‖Σ_j σ_j x_jᵀ‖_F by enumerating all 2^{N·d} sign patterns."""
    sums = torch.einsum("snd,nD->sdD", _all_signs(points.shape[0], d), points)  # (2^{Nd}, d, D)
    return float(B * torch.linalg.vector_norm(sums.flatten(1), dim=1).mean())


def test_tuple_points_holds_every_input_once():
    M, b, k, shape = 3, 2, 2, (2, 3)
    values = torch.arange(M * (1 + b + k * b) * 6, dtype=torch.float32)
    anchor, positives, negatives = values.split([M * 6, M * b * 6, M * k * b * 6])
    tuples = Tuples(anchor.reshape(M, *shape), positives.reshape(M, b, *shape), negatives.reshape(M, k, b, *shape),
                    torch.zeros(M, dtype=torch.long), torch.zeros(M, k, dtype=torch.long))
    points = tuple_points(tuples)
    assert points.shape == (M * (1 + b + k * b), 6) and points.dtype == torch.float64
    assert torch.equal(points.flatten().sort().values, values.double())


def test_monte_carlo_matches_exact_enumeration():
    g = _gen(0)
    N, d, D, B = 4, 3, 2, 1.7  # N·d = 12: 4096 sign patterns
    points = torch.randn(N, D, generator=g, dtype=torch.float64)
    exact = _exact_linear(points, d, B)
    est = linear_rademacher(points, d, B, draws=20000, generator=g, level=STRICT)
    assert est.lower <= exact <= est.upper
    assert est.method == "monte_carlo" and est.n == 20000
    upper = linear_rademacher_upper(points, d, B)
    assert upper / math.sqrt(2.0) <= exact <= upper  # Khintchine–Kahane and Jensen


def test_closed_form_supremum_matches_brute_force_over_the_ball():
    """sup_{‖W‖_F ≤ B} ⟨W, S⟩ = B‖S‖_F with S = Σ_j σ_j x_jᵀ: every sampled W is below it, the best is close."""
    g = _gen(1)
    N, d, D, B, samples = 5, 2, 2, 2.5, 200_000
    points = torch.randn(N, D, generator=g, dtype=torch.float64)
    dim = d * D
    # u uniform on S^{dim−1}, s a unit vector: (1 + ⟨u, s⟩)/2 ~ Beta((dim−1)/2, (dim−1)/2). Choose ε with
    # P(⟨u, s⟩ ≥ 1 − ε) = ln(1e9)/samples, so that no sample reaching 1 − ε has probability ≤ 1e-9.
    a = (dim - 1) / 2.0
    eps = 2.0 * (1.0 - stats.beta.isf(math.log(1e9) / samples, a, a))
    for _ in range(3):
        signs = torch.randint(0, 2, (N, d), generator=g).double() * 2 - 1
        S = signs.T @ points  # (d, D)
        closed = B * float(S.norm())
        W = torch.randn(samples, d, D, generator=g, dtype=torch.float64)
        W *= B / torch.linalg.vector_norm(W.flatten(1), dim=1)[:, None, None]
        best = float((W * S).sum(dim=(1, 2)).max())
        # ⟨W, S⟩ of dim = 4 terms and W's normalisation round to ≲ 10ε·‖W‖‖S‖ ≈ 2e-15 relative
        assert best <= closed * (1 + 1e-12)
        assert best >= closed * (1 - eps)


def _anisotropic(g):
    scales = torch.logspace(1, -1, 8, dtype=torch.float64)
    return torch.randn(3000, 8, generator=g, dtype=torch.float64) * scales + 0.5


@pytest.mark.parametrize("make_points, d", [
    (lambda g: torch.randn(3000, 8, generator=g, dtype=torch.float64), 4),
    (_anisotropic, 4),
    (lambda g: torch.randn(40, 6, generator=g, dtype=torch.float64), 1),
    (lambda g: torch.ones(2, 1, dtype=torch.float64), 1),  # Khintchine–Kahane extremal: value = bound/√2
], ids=["isotropic", "anisotropic", "small", "extremal"])
def test_monte_carlo_lies_between_jensen_bound_and_its_kahane_floor(make_points, d):
    """Acceptance: upper/√2 ≤ Rad_S ≤ upper, within the MC interval; a bound without the factor d fails."""
    g = _gen(2)
    points = make_points(g)
    B = 3.2
    est = linear_rademacher(points, d, B, draws=2000, generator=g, level=0.999)
    upper = linear_rademacher_upper(points, d, B)
    assert upper / math.sqrt(2.0) <= est.upper and est.lower <= upper
    if d > 1:  # the check can fail: forgetting d in Jensen's bound puts it below the estimate
        assert est.lower > B * math.sqrt(float(points.square().sum()))


def test_chunking_does_not_change_the_numbers():
    points = torch.randn(300, 4, generator=_gen(3), dtype=torch.float64)
    reference = linear_rademacher(points, 3, 1.0, draws=50, generator=_gen(4))
    for chunk in (50, 5000, 4000):  # points in blocks; several draws per batch; a partial last batch
        est = linear_rademacher(points, 3, 1.0, draws=50, generator=_gen(4), chunk=chunk)
        # same signs; only the order of the float sums over points differs: each entry of S sums
        # N = 300 terms ~1 to magnitude ~√N, so ≲ N·ε/√N = √N·ε ≈ 4e-15 relative worst case (the se,
        # a spread of values ~5× smaller than them, ≲ 2e-14)
        assert (est.value, est.lower, est.upper, est.se) == pytest.approx(
            (reference.value, reference.lower, reference.upper, reference.se), rel=1e-12)


def test_many_points_stay_between_the_bounds():
    """N = 10⁶ points with bounded memory (signs in blocks)."""
    g = _gen(5)
    points = torch.randn(1_000_000, 3, generator=g)
    est = linear_rademacher(points, 2, 1.0, draws=8, generator=g, level=0.999)
    upper = linear_rademacher_upper(points, 2, 1.0)
    assert upper / math.sqrt(2.0) <= est.upper and est.lower <= upper


def test_mlp_norms_fold_biases():
    W1, b1 = torch.tensor([[1.0, 2.0], [0.0, 2.0]]), torch.tensor([0.0, 1.0])
    W2 = torch.tensor([[3.0, 4.0]])
    hidden, rows = mlp_norms([(W1, b1), (W2, None)])
    assert hidden == pytest.approx([math.sqrt(1 + 4 + 4 + 1 + 1)]) and rows == pytest.approx([5.0])


def test_one_layer_bound_is_golowich_factor_times_jensen_and_above_the_exact_sup():
    """L = 1: the class {x ↦ W x + b : ‖[W, b]_i‖ ≤ r_i} has sup = Σ_i r_i ‖Σ_j σ_ji x̃_j‖ exactly."""
    g = _gen(6)
    points = torch.randn(50, 3, generator=g, dtype=torch.float64)
    rows = [0.5, 2.0]
    bound = mlp_rademacher_upper([], rows, points)
    augmented = torch.cat([points, torch.ones(50, 1, dtype=torch.float64)], 1)  # x̃: (N, D + 1)
    jensen = sum(rows) * math.sqrt(float(augmented.square().sum()))
    # Σ‖x̃_j‖² of 200 positive terms summed in two orders: ≲ 200·ε ≈ 4e-14 relative
    assert bound == pytest.approx((math.sqrt(2 * math.log(2)) + 1) * jensen, rel=1e-12)
    signs = torch.randint(0, 2, (4000, 50, 2), generator=g).double() * 2 - 1  # (T, N, d)
    sups = (torch.linalg.vector_norm(torch.einsum("tnd,nD->tdD", signs, augmented), dim=2)
            * torch.tensor(rows, dtype=torch.float64)).sum(1)
    assert mean_estimate(sups, STRICT).upper <= jensen <= bound


def _net_in_class(widths, hidden_norms, rows, g):
    """A random ReLU net with ‖W̃_l‖_F = hidden_norms[l] and output rows of norm rows[i].

    Hidden layers alternate between a Gaussian matrix and a rank-one matrix with a nonnegative left
    factor (ReLU passes it unchanged), which reaches a larger share of the supremum.
    """
    rank_one = bool(torch.randint(0, 2, (), generator=g))
    layers, left = [], None
    for l, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        if l < len(hidden_norms):
            if rank_one:
                u = torch.rand(fan_out, generator=g, dtype=torch.float64)
                v = (torch.randn(fan_in + 1, generator=g, dtype=torch.float64) if left is None
                     else torch.cat([left, torch.zeros(1, dtype=torch.float64)]))
                Wb, left = torch.outer(u, v), u
            else:
                Wb = torch.randn(fan_out, fan_in + 1, generator=g, dtype=torch.float64)
            Wb = Wb * (math.sqrt(hidden_norms[l] ** 2 - 1.0) / Wb.norm())  # ‖W̃_l‖_F² = ‖[W, b]‖² + 1
        else:
            Wb = torch.randn(fan_out, fan_in + 1, generator=g, dtype=torch.float64)
            Wb = Wb / Wb.norm(dim=1, keepdim=True) * torch.tensor(rows, dtype=torch.float64)[:, None]
        layers.append((Wb[:, :-1], Wb[:, -1]))
    return layers


def _forward(layers, x):
    for i, (W, b) in enumerate(layers):
        x = x @ W.T + b
        if i < len(layers) - 1:
            x = x.relu()
    return x


@pytest.mark.parametrize("hidden, d", [([4], 2), ([4, 4], 1)])
def test_mlp_bound_is_above_a_finite_subclass(hidden, d):
    """E_σ max over K nets inside the class is a lower estimate of Rad_S: the bound must not be below it.

    The check can fail: the same bound without the hidden-layer product and the depth factor is.
    """
    g = _gen(7)
    N, D, K, T = 30, 3, 1500, 2000
    points = torch.randn(N, D, generator=g, dtype=torch.float64)
    hidden_norms, rows = [3.0] * len(hidden), [1.0 + i for i in range(d)]
    nets = [_net_in_class([D, *hidden, d], hidden_norms, rows, g) for _ in range(K)]
    for net in nets[:20]:
        h, r = mlp_norms(net)
        assert all(a <= b * (1 + 1e-12) for a, b in zip(h + r, hidden_norms + rows))  # norms of ≤ 20 terms: ≲ 20ε
    outputs = torch.stack([_forward(net, points) for net in nets])  # (K, N, d)
    signs = torch.randint(0, 2, (T, N, d), generator=g).double() * 2 - 1  # (T, N, d)
    lower = mean_estimate(torch.einsum("tnd,knd->tk", signs, outputs).max(1).values, 0.999)
    bound = mlp_rademacher_upper(hidden_norms, rows, points)
    assert lower.lower <= bound
    depth = len(hidden) + 1
    wrong = bound / (math.prod(hidden_norms) * (math.sqrt(2 * math.log(2) * depth) + 1))
    assert lower.lower > wrong


def test_mlp_bound_is_monotone_and_homogeneous_in_the_norms():
    points = torch.randn(20, 3, generator=_gen(8), dtype=torch.float64)
    hidden, rows = [2.0, 1.5], [1.0, 0.5, 0.25]
    base = mlp_rademacher_upper(hidden, rows, points)
    for i in range(len(hidden)):
        grown = hidden.copy(); grown[i] *= 1.3
        assert mlp_rademacher_upper(grown, rows, points) == pytest.approx(1.3 * base, rel=1e-12)  # a few roundings
    for i in range(len(rows)):
        grown = rows.copy(); grown[i] += 0.1
        assert mlp_rademacher_upper(hidden, grown, points) > base
    assert mlp_rademacher_upper(hidden, [0.0, 0.0, 0.0], points) == 0.0
    with pytest.raises(ValueError):
        mlp_rademacher_upper([-1.0], rows, points)


def _scaled(state, key, factor):
    return {name: value * factor if name == key else value.clone() for name, value in state.items()}


def test_linear_class_takes_the_largest_checkpoint():
    encoder = LinearEncoder(3, 2, norm_bound=1.0, generator=_gen(9))
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    points = torch.randn(40, 3, generator=_gen(10), dtype=torch.float64)
    states = [_scaled(before, "linear.weight", 3.0), before]
    cc = class_complexity(encoder, states, points, draws=100, generator=_gen(11))
    B = float(states[0]["linear.weight"].double().norm())
    assert cc.norms["B"] == pytest.approx(B, rel=1e-12)
    assert cc.rad == linear_rademacher(points, 2, cc.norms["B"], 100, _gen(11))
    assert cc.upper == linear_rademacher_upper(points, 2, cc.norms["B"])
    assert cc.label.startswith("linear, ‖W‖_F ≤ ") and cc.label.endswith("(norm clip not included)")
    assert all(torch.equal(v, before[k]) for k, v in encoder.state_dict().items())
    with pytest.raises(ValueError):
        class_complexity(encoder, [], points, 100, _gen(11))


def test_mlp_class_takes_the_largest_norm_of_every_layer():
    encoder = MLPEncoder(3, [4], 2, norm_bound=None, generator=_gen(12))
    base = encoder.state_dict()
    wide_first = _scaled(_scaled(base, "net.0.weight", 2.0), "net.0.bias", 2.0)
    wide_last = _scaled(base, "net.2.weight", 3.0)
    points = torch.randn(25, 3, generator=_gen(13), dtype=torch.float64)
    cc = class_complexity(encoder, [wide_first, wide_last], points, draws=10, generator=_gen(14))

    def layers(state):
        return [(state["net.0.weight"], state["net.0.bias"]), (state["net.2.weight"], state["net.2.bias"])]

    hidden = mlp_norms(layers(wide_first))[0]
    rows = mlp_norms(layers(wide_last))[1]
    assert cc.norms == pytest.approx({"hidden_1": hidden[0], "output_row_1": rows[0], "output_row_2": rows[1]})
    assert cc.rad.method == "exact" and cc.rad.lower == cc.rad.value == cc.rad.upper == cc.upper
    assert cc.upper == pytest.approx(mlp_rademacher_upper(hidden, rows, points), rel=1e-12)
    assert cc.upper > class_complexity(encoder, [base], points, 10, _gen(14)).upper
    assert cc.label == "ReLU MLP, norm-product upper bound [Golowich18]"


def test_identity_is_zero_and_unknown_modules_are_not_evaluated():
    points = torch.randn(5, 2, generator=_gen(15))
    cc = class_complexity(IdentityEncoder(), [], points, 10, _gen(16))
    assert cc.rad == Estimate.exact(0.0) and cc.upper == 0.0
    assert class_complexity(nn.Sequential(nn.Linear(2, 2)), [{}], points, 10, _gen(16)) is None


def test_generalisation_term_against_hand_computation():
    """Gen_M = c_rad·4√3·L·R·Rad/M + c_conf·2√2·Δ_ℓ(R)·sqrt(ln(1/δ)/M), here hinge with R = 2 (Δ = 1 + 2R² = 9)."""
    rad = Estimate(10.0, 8.0, 12.0, 100, 0.95, "monte_carlo", 1.0)
    gen, parts = generalisation_term(rad, R=2.0, M=50, delta=0.05, loss="hinge", rademacher_constant=1.5,
                                     confidence_constant=0.5)
    confidence = 0.5 * 2 * math.sqrt(2) * 9.0 * math.sqrt(math.log(1 / 0.05) / 50)
    # exact: the code's ((2·√2)·9)·0.5 and this ((0.5·2)·√2)·9 differ only by scalings by powers of 2,
    # which are exact, so both round √2·9 once and then its product with the same sqrt(ln(1/δ)/M)
    assert parts["confidence_part"] == Estimate.exact(confidence)
    scale = 1.5 * 4 * math.sqrt(3) * 2.0 / 50  # c_rad·4√3·L·R/M, L = 1
    rademacher = parts["rademacher_part"]
    assert (rademacher.value, rademacher.lower, rademacher.upper) == pytest.approx((10 * scale, 8 * scale, 12 * scale),
                                                                                  rel=1e-12)
    assert (gen.value, gen.lower, gen.upper) == pytest.approx(
        (10 * scale + confidence, 8 * scale + confidence, 12 * scale + confidence), rel=1e-12)
    assert gen.se == pytest.approx(scale) and gen.method == "monte_carlo"
    at_99, _ = generalisation_term(rad, 2.0, 50, 0.05, "hinge", rademacher_constant=1.5, confidence_constant=0.5,
                                   level=0.99)
    assert at_99.half_width == pytest.approx(scale * rad.at_level(0.99).half_width, rel=1e-12)  # rad's, mapped
    assert at_99.level == 0.99 and at_99.value == pytest.approx(gen.value)
    with pytest.raises(ValueError):
        generalisation_term(rad, 2.0, 50, 1.0, "hinge")
    with pytest.raises(ValueError, match="'hinge' or 'logistic'"):
        generalisation_term(rad, 2.0, 50, 0.05, "cross_entropy")


@pytest.mark.parametrize("loss, R, rad_coef, conf_coef", [
    # a_rad = 4√3·L·R; a_conf = 2√2·Δ_ℓ(R), Δ_hinge = min(4R², 1 + 2R²), Δ_logistic = 2R²/ln 2
    ("hinge", 0.5, 2 * math.sqrt(3), 2 * math.sqrt(2) * 1.0),  # R² < 1/2: Δ = 4R²
    ("hinge", 1 / math.sqrt(2), 4 * math.sqrt(3) / math.sqrt(2), 2 * math.sqrt(2) * 2.0),  # both forms: Δ = 2
    ("hinge", 5.0, 20 * math.sqrt(3), 2 * math.sqrt(2) * 51.0),  # Δ = 1 + 2R²
    ("logistic", 1.0, 4 * math.sqrt(3) / math.log(2), 4 * math.sqrt(2) / math.log(2)),
    ("logistic", 5.0, 20 * math.sqrt(3) / math.log(2), 100 * math.sqrt(2) / math.log(2)),
])
def test_gen_m_coefficients_closed_form(loss, R, rad_coef, conf_coef):
    assert gen_m_coefficients(loss, R) == pytest.approx((rad_coef, conf_coef), rel=1e-12)
    gen, parts = generalisation_term(Estimate.exact(30.0), R, M=200, delta=0.01, loss=loss)
    assert parts["rademacher_part"].value == pytest.approx(rad_coef * 30.0 / 200, rel=1e-12)
    assert parts["confidence_part"].value == pytest.approx(conf_coef * math.sqrt(math.log(100.0) / 200), rel=1e-12)
    assert gen.value == pytest.approx(parts["rademacher_part"].value + parts["confidence_part"].value, rel=1e-12)


@pytest.mark.parametrize("loss", ["hinge", "logistic"])
@pytest.mark.parametrize("R", [0.3, 1 / math.sqrt(2), 1.0, 2.5])
def test_loss_range_and_lipschitz_constants_on_the_ball(loss, R):
    """Oracles for the steps of the derivation on ‖a‖, ‖p‖, ‖n‖ ≤ R (k = 1):

    - the margin aᵀ(p − n) fills [−2R², 2R²] and ℓ's range over it is ``loss_range`` (brute force);
    - the margin map is √6·R-Lipschitz on the ball, attained at p = −n = R·e, a = R·e' with e ⊥ e'
      (then the gradient (p − n, a, −a) has norm sqrt(4R² + 2R²)); random pairs never exceed √6·R·L
      for ℓ∘margin.
    """
    g = _gen(17)
    ell = LOSSES[loss]
    margins = torch.linspace(-2 * R**2, 2 * R**2, 100_001, dtype=torch.float64)
    values = ell(margins[:, None])
    # ℓ is monotone, so the extremes are at the exact end points; ℓ there rounds to ≲ 4ε·ℓ ≲ 1e-14
    assert float(values.max() - values.min()) == pytest.approx(loss_range(loss, R), rel=1e-9)

    def in_ball(shape):
        z = torch.randn(*shape, generator=g, dtype=torch.float64)
        return z * (R * torch.rand(shape[:-1] + (1,), generator=g, dtype=torch.float64) ** (1 / shape[-1])
                    / z.norm(dim=-1, keepdim=True))

    n, d = 200_000, 3
    a, p, m = in_ball((n, d)), in_ball((n, d)), in_ball((n, d))
    a2, p2, m2 = in_ball((n, d)), in_ball((n, d)), in_ball((n, d))
    distance = torch.cat([a - a2, p - p2, m - m2], 1).norm(dim=1)  # Euclidean norm in R^{3d}
    margin, margin2 = (a * (p - m)).sum(1), (a2 * (p2 - m2)).sum(1)
    assert float(((margin - margin2).abs() / distance).max()) <= math.sqrt(6) * R
    ratio = (ell(margin[:, None]) - ell(margin2[:, None])).abs() / distance
    assert float(ratio.max()) <= math.sqrt(6) * R * LIPSCHITZ[loss]
    e, e2 = torch.eye(d, dtype=torch.float64)[:2]
    shrink = 1 - 1e-3  # just inside the ball, so that a small step along the gradient stays in it
    a0, p0, m0 = shrink * R * e2, shrink * R * e, -shrink * R * e
    gradient = torch.cat([p0 - m0, a0, -a0])  # ∇ of aᵀ(p − n) w.r.t. (a, p, n)
    assert float(gradient.norm()) == pytest.approx(math.sqrt(6) * R * shrink, rel=1e-12)
    step = 1e-7 * gradient / gradient.norm()
    a1, p1, m1 = a0 + step[:d], p0 + step[d:2 * d], m0 + step[2 * d:]
    rate = float(((a1 * (p1 - m1)).sum() - (a0 * (p0 - m0)).sum()) / step.norm())
    # a forward difference with step h = 1e-7 of a quadratic is off by ≤ h in absolute terms, ≲ 2e-7
    # relative here; rounding adds less (the products in the margins are ~R·h, the base margin is 0)
    assert rate == pytest.approx(math.sqrt(6) * R * shrink, rel=1e-5)  # so √6·R cannot be lowered
