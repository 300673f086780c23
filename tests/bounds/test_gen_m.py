"""Gen_M with its derived constants is a rigorous bound (docs/theory.md, "Gen_M with explicit constants").

On a finite latent-class world L_un(f) is exact by enumeration of the (anchor, positive, negative)
triples, so for each draw of the M training tuples the deviation L̂_un(f) − L_un(f) is known exactly
for every f. The class is F = {x ↦ wᵀx : ‖w‖ ≤ B} (d = 1, inputs in R², max‖x‖ = 1, so ‖f(x)‖ ≤ R = B).
Over 200 independent draws, two events must each have frequency at most δ:

- sup_{f∈F} |L̂_un(f) − L_un(f)| > Gen_M (Gen_M bounds both sides for δ ≤ 0.41, docs/theory.md);
- the excess risk of the empirical minimiser over a finite subclass G ⊂ F exceeds Gen_M:
  L_un(f̂_G) − min_G L_un > Gen_M (the statement Theorems 4.1 and 4.5 use; Rad_S(G) ≤ Rad_S(F)).

Acceptance rule: if P(event) ≤ δ, the number V of the n independent draws with the event is
stochastically below Binomial(n, δ); the test fails when V exceeds the (1 − 1e-6)-quantile of
Binomial(n, δ) (27 of 200 at δ = 0.05), so a correct Gen_M fails it with probability ≤ 1e-6 (and
the seeds are fixed). The derived constants hold for every world and class, so here Gen_M is 13 to
20 times the largest deviation over the draws: this test catches only gross errors (the closed-form
tests in test_rademacher.py pin the constants), and its last assertion shows that it does catch a
bound 30 times too small.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from preadapt.bounds.arora2019 import LIPSCHITZ
from preadapt.bounds.rademacher import generalisation_term, linear_rademacher, tuple_points
from preadapt.objectives import LOSSES
from preadapt.worlds.sampling import Tuples

DRAWS = 200  # independent training sets
M = 50  # training tuples per set
DELTA = 0.05
SPACING = 0.02  # of the square grid over the disc ‖w‖ ≤ B, relative to B
WRONG_BY = 30.0  # a Gen_M this many times too small must be caught


def _world(g: torch.Generator):
    """3 classes of 3 inputs in R² (class c near angle 2πc/3), prior (0.5, 0.3, 0.2), max‖x‖ = 1.

    Returns the inputs X: (N, 2), their classes (N,), the prior ρ: (C,) and the exact distribution
    of a triple (x, x⁺, x⁻) over index triples i·N² + j·N + k: (N³,).
    """
    C, per = 3, 3
    classes = torch.arange(C).repeat_interleave(per)  # (N,)
    angles = classes * (2 * math.pi / C) + 0.6 * torch.randn(C * per, generator=g, dtype=torch.float64)
    radii = 0.5 + 0.5 * torch.rand(C * per, generator=g, dtype=torch.float64)
    X = torch.stack([radii * angles.cos(), radii * angles.sin()], 1)
    X = X / X.norm(dim=1).max()  # (N, 2), max norm exactly 1
    prior = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    within = torch.zeros(C, C * per, dtype=torch.float64)
    within[classes, torch.arange(C * per)] = 1.0 / per  # D_c, uniform on the class's inputs: (C, N)
    similar = torch.einsum("c,ci,cj->ij", prior, within, within)  # P(x = i, x⁺ = j): (N, N)
    marginal = prior @ within  # P(x⁻ = k): (N,)
    triples = (similar[:, :, None] * marginal).flatten()  # (N³,)
    return X, classes, prior, within, triples


def _draw(X, prior, within, g):
    """M tuples of the world as ``Tuples`` (k = b = 1) and their triple indices: (M,)."""
    N = X.shape[0]
    c = torch.multinomial(prior, M, replacement=True, generator=g)
    c_neg = torch.multinomial(prior, M, replacement=True, generator=g)
    i, j = (torch.multinomial(within[c], 1, generator=g)[:, 0] for _ in range(2))
    k = torch.multinomial(within[c_neg], 1, generator=g)[:, 0]
    tuples = Tuples(X[i], X[j][:, None], X[k][:, None, None], c, c_neg[:, None])
    return tuples, i * N * N + j * N + k


@pytest.mark.slow
@pytest.mark.parametrize("loss, B", [("hinge", 1.0), ("hinge", 0.6), ("logistic", 1.0)],
                         ids=["hinge-R1", "hinge-R0.6", "logistic-R1"])  # hinge: Δ = 1 + 2R², Δ = 4R²
def test_gen_m_bounds_the_uniform_deviation_and_the_excess_risk(loss, B):
    g = torch.Generator().manual_seed(0)
    X, _, prior, within, triples = _world(g)
    N, R = X.shape[0], B  # ‖wᵀx‖ ≤ ‖w‖·max‖x‖ = B
    ell, lipschitz = LOSSES[loss], LIPSCHITZ[loss]

    I, J, K = torch.cartesian_prod(torch.arange(N), torch.arange(N), torch.arange(N)).T  # every triple: (N³,)
    x, u = X[I], X[J] - X[K]
    A = 0.5 * (x[:, :, None] * u[:, None, :] + u[:, :, None] * x[:, None, :])  # margin = wᵀA_t w: (N³, 2, 2)

    # The sup over the disc is bounded from above, not approximated from below: a grid point lower-
    # bounds it, so the test would be lenient. Every w of the disc lies within h/√2 of a point
    # of the square grid (spacing h), hence of its projection onto the disc (a projection moves points closer to
    # the disc's points), and w ↦ Σ_t a_t ℓ(wᵀA_t w) is Σ_t |a_t|·L·2‖A_t‖₂·B-Lipschitz on the disc.
    spacing = SPACING * B
    axis = torch.linspace(-B, B, round(2 / SPACING) + 1, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    grid = grid / (grid.norm(dim=1, keepdim=True) / B).clamp_min(1.0)  # (G, 2), on the disc
    cover = spacing / math.sqrt(2.0)
    losses = ell(torch.einsum("gd,tde,ge->gt", grid, A, grid)[..., None])  # ℓ at every (w, triple): (G, N³)
    population = losses @ triples  # L_un(w), exact: (G,)
    best = population.min()  # min over the subclass G (the grid) of L_un
    spectral = torch.linalg.matrix_norm(A, ord=2)  # (N³,)

    deviation_over_gen, excess_over_gen = [], []
    for r in range(DRAWS):
        tuples, index = _draw(X, prior, within, g)
        empirical = torch.bincount(index, minlength=N**3).to(torch.float64) / M  # (N³,)
        a = empirical - triples
        gap = losses @ a  # L̂_un(w) − L_un(w): (G,)
        lipschitz_gap = float((a.abs() * spectral).sum()) * lipschitz * 2 * B
        sup_deviation = float(gap.abs().max()) + lipschitz_gap * cover  # ≥ sup over the disc
        excess = float(population[int((losses @ empirical).argmin())] - best)
        # Rad_S of F on the 3M training inputs, as the code computes it (Monte Carlo; its error, about
        # 1% of the Rademacher part, is negligible against the margins seen here)
        rad = linear_rademacher(tuple_points(tuples), 1, B, 500, torch.Generator().manual_seed(r))
        gen, _ = generalisation_term(rad, R, M, DELTA, loss)
        deviation_over_gen.append(sup_deviation / gen.value)
        excess_over_gen.append(excess / gen.value)

    allowed = stats.binom.isf(1e-6, DRAWS, DELTA)  # 27 at n = 200, δ = 0.05
    deviation_over_gen, excess_over_gen = torch.tensor(deviation_over_gen), torch.tensor(excess_over_gen)
    assert int((deviation_over_gen > 1.0).sum()) <= allowed
    assert int((excess_over_gen > 1.0).sum()) <= allowed
    assert int((deviation_over_gen > 1.0 / WRONG_BY).sum()) > allowed  # the harness can fail
