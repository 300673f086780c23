"""Acceptance test of the spectral contrastive loss [HaoChen21] (THEORY.md section 5): on a finite
augmentation graph written down in full, the minimiser of the population loss spans the top
eigenvectors of the normalised adjacency.

The graph: N nodes x, symmetric edge weights w(x, x') ≥ 0 summing to 1 (the probability that
(x, x⁺) is a positive pair), node marginals w(x) = Σ_x' w(x, x'). With A = (w(x, x')), D = diag(w(x))
and the normalised adjacency Ā = D^{−1/2} A D^{−1/2}, write F̃ = D^{1/2} F (row x of F is f(x), scaled
by √w(x)). Then

    L(f) = −2 Σ_{x,x'} w(x, x') f(x)ᵀf(x') + Σ_{x,x'} w(x) w(x') (f(x)ᵀf(x'))²
         = −2 tr(F̃ᵀ Ā F̃) + ‖F̃ᵀF̃‖²_F = ‖Ā − F̃F̃ᵀ‖²_F − ‖Ā‖²_F,

so by Eckart–Young the minimisers over (N, d) tables are F̃ = U_d diag(√λ_1..√λ_d) R, R orthogonal,
where λ_1 ≥ … ≥ λ_d > 0 are the top eigenvalues of Ā and U_d their eigenvectors, and the minimum is
−Σ_{i≤d} λ_i² ([HaoChen21], Theorem 3.1 and its proof). The learned span is unique when λ_d > λ_{d+1}.

f is a free lookup table (one d-vector per node), so nothing but the loss shapes it; the loss is the
library's per-sample ``Spectral`` objective on every triple (x, x⁺, x') of nodes, weighted by
w(x, x⁺)·w(x'): its weighted sum is exactly L(f).
"""

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from preadapt.objectives import Spectral, encode_tuples
from preadapt.worlds import Tuples

CLUSTER_SIZES = (6, 8, 10)  # N = 24 nodes in three clusters
DIM = 3  # d: one dimension per cluster, so the top-d eigenspace is separated by the cluster gap
EIGENGAP = 0.5  # asserted: λ_d − λ_{d+1} ≥ 0.5 on this graph (it is ≈ 0.82)
ANGLE_TOL = 1e-6  # radians; see test_learned_span_is_the_top_eigenspace
LOSS_TOL = 1e-10  # absolute, on a minimum of about −2.8 (reached to ~2e-15)


def augmentation_graph(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Edge weights w(x, x') (N, N), symmetric, summing to 1, and each node's cluster (N,).

    Within a cluster every pair (self-pairs included: x⁺ may equal x) has weight U(0.5, 1.5); between
    clusters about 30% of the pairs have a small weight U(0, 0.1), so the clusters are coupled and
    the eigenvalues below 1 are distinct. Row sums differ, so D is far from a multiple of I.
    """
    rng = np.random.default_rng(seed)
    cluster = np.repeat(np.arange(len(CLUSTER_SIZES)), CLUSTER_SIZES)
    n = cluster.size
    same = cluster[:, None] == cluster[None, :]
    inside = rng.uniform(0.5, 1.5, (n, n))
    across = rng.uniform(0.0, 0.1, (n, n)) * (rng.random((n, n)) < 0.3)
    weights = np.where(same, inside, across)
    weights = (weights + weights.T) / 2
    return weights / weights.sum(), cluster


def normalised_adjacency(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ā = D^{−1/2} A D^{−1/2}, its eigenvalues in decreasing order and the eigenvectors (columns)."""
    marginal = weights.sum(1)
    adjacency = weights / np.sqrt(np.outer(marginal, marginal))
    eigenvalues, eigenvectors = np.linalg.eigh(adjacency)
    return adjacency, eigenvalues[::-1], eigenvectors[:, ::-1]


class LookupTable(nn.Module):
    """f(x) = F[x]: a free d-vector per node; inputs are node ids of any shape (…) → (…, d)."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(table)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table[ids]


def population_tuples(weights: np.ndarray, cluster: np.ndarray) -> tuple[Tuples, torch.Tensor]:
    """Every triple (x, x⁺, x') with w(x, x⁺) > 0 as contrastive tuples (k = b = 1) of node ids, and
    its probability w(x, x⁺)·w(x') under the population law (they sum to 1)."""
    n = weights.shape[0]
    anchor, positive = np.nonzero(weights)  # (P,) each
    pair_weight = weights[anchor, positive]  # (P,)
    marginal = weights.sum(1)
    anchor = np.repeat(anchor, n)  # (T,) with T = P·N
    positive = np.repeat(positive, n)
    negative = np.tile(np.arange(n), pair_weight.size)
    probability = np.repeat(pair_weight, n) * marginal[negative]  # (T,)
    ids = lambda a: torch.as_tensor(a, dtype=torch.long)
    tuples = Tuples(
        anchor=ids(anchor),  # (T,): a node id is a 0-d input
        positives=ids(positive).view(-1, 1),  # (T, b = 1)
        negatives=ids(negative).view(-1, 1, 1),  # (T, k = 1, b = 1)
        anchor_class=ids(cluster[anchor]),
        negative_class=ids(cluster[negative]).view(-1, 1),
    )
    return tuples, torch.as_tensor(probability, dtype=torch.float64)


def population_loss(encoder: nn.Module, tuples: Tuples, probability: torch.Tensor) -> torch.Tensor:
    """L(f) = Σ_triples P(x, x⁺, x')·ℓ(x, x⁺, x') with ℓ the library's per-sample spectral loss."""
    return (probability * Spectral(negatives=1)(encode_tuples(encoder, tuples))).sum()


def matrix_form(table: np.ndarray, weights: np.ndarray) -> float:
    """−2 tr(F̃ᵀ Ā F̃) + ‖F̃ᵀF̃‖²_F with F̃ = D^{1/2} F: the loss written without the library."""
    adjacency, _, _ = normalised_adjacency(weights)
    scaled = np.sqrt(weights.sum(1))[:, None] * table
    return float(-2 * np.trace(scaled.T @ adjacency @ scaled) + np.sum((scaled.T @ scaled) ** 2))


def minimise(tuples: Tuples, probability: torch.Tensor, n: int, seed: int) -> tuple[LookupTable, float, float]:
    """Full-batch L-BFGS in float64 from a small random table (F = 0 is a saddle point) until its line
    search can no longer lower the loss; returns the encoder, the loss reached and the gradient's
    largest entry there."""
    start = 0.1 * torch.randn(n, DIM, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    encoder = LookupTable(start)
    optimiser = torch.optim.LBFGS(encoder.parameters(), lr=1.0, max_iter=5000, history_size=20,
                                  tolerance_grad=1e-13, tolerance_change=0.0, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = population_loss(encoder, tuples, probability)
        loss.backward()
        return loss

    optimiser.step(closure)
    loss = closure()
    return encoder, float(loss.detach()), float(encoder.table.grad.abs().max())


@pytest.fixture(scope="module")
def graph():
    weights, cluster = augmentation_graph()
    tuples, probability = population_tuples(weights, cluster)
    return weights, cluster, tuples, probability


def test_graph_is_small_and_has_the_stated_eigengap(graph):
    weights, _, _, probability = graph
    _, eigenvalues, _ = normalised_adjacency(weights)
    assert weights.shape[0] <= 64
    assert np.allclose(weights, weights.T) and math.isclose(weights.sum(), 1.0) and math.isclose(probability.sum(), 1.0)
    assert math.isclose(eigenvalues[0], 1.0, rel_tol=1e-12)  # Ā √w = √w; eigh errs by ≲ N·ε·‖Ā‖₂ ≈ 5e-15
    assert eigenvalues[DIM - 1] - eigenvalues[DIM] >= EIGENGAP and eigenvalues[DIM - 1] > 0


def test_weighted_per_sample_losses_are_the_population_loss(graph):
    """The oracle for the weighting: the library's weighted per-sample losses equal the brief's double
    sums and the matrix form at an arbitrary table."""
    weights, _, tuples, probability = graph
    n = weights.shape[0]
    table = np.random.default_rng(1).normal(size=(n, DIM))
    marginal = weights.sum(1)
    gram = table @ table.T  # f(x)ᵀf(x')
    double_sums = -2 * np.sum(weights * gram) + np.sum(np.outer(marginal, marginal) * gram**2)
    library = float(population_loss(LookupTable(torch.as_tensor(table)), tuples, probability).detach())
    # three summation orders of the same number: the library sums T = 9312 terms with Σ|terms| ≈ 3.1,
    # ≤ T·ε·3.1 ≈ 6e-12 in the worst case (the double sums: 576 terms, ≲ 5e-13); a wrong weighting
    # moves the loss by O(0.1)
    assert library == pytest.approx(double_sums, abs=1e-10, rel=0)
    assert library == pytest.approx(matrix_form(table, weights), abs=1e-10, rel=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_learned_span_is_the_top_eigenspace(graph, seed):
    """The largest principal angle between span(D^{1/2}F) and span(U_d) is below ANGLE_TOL = 1e-6 rad.

    Why 1e-6: the exact minimiser has angle 0, and float64 eigh resolves U_d to ~1e-16/gap. What is
    left is where the optimiser stops: its line search compares loss values, which float64 resolves
    to ε·|L| ≈ 1e-15, and near a minimiser the loss rises quadratically, so it cannot locate the
    table better than ~√(ε·|L|/curvature) ≈ 1e-8 (measured: angles 1–4e-9, ‖F̃F̃ᵀ − U_dΛ_dU_dᵀ‖₂ up to
    1.5e-8, gradient entries up to 4e-9, loss equal to −Σλ_i² to 2e-15). The curvature transverse to
    the rotations F ↦ FR is of order min(λ_d − λ_{d+1}, λ_d) ≈ 0.8, which is why the eigengap matters.
    By Davis–Kahan, sin θ_max ≤ ‖F̃F̃ᵀ − U_dΛ_dU_dᵀ‖₂ / λ_d, asserted too. 1e-6 is 250× the floor, and
    ~5e4× below the 0.053 rad of the wrong (unscaled) span in the negative control below.
    """
    weights, _, tuples, probability = graph
    n = weights.shape[0]
    _, eigenvalues, eigenvectors = normalised_adjacency(weights)
    top, top_vectors = eigenvalues[:DIM], eigenvectors[:, :DIM]

    encoder, loss, gradient = minimise(tuples, probability, n, seed)
    table = encoder.table.detach().numpy()
    scaled = np.sqrt(weights.sum(1))[:, None] * table  # F̃ = D^{1/2} F

    assert gradient < 1e-7, f"L-BFGS did not converge: largest gradient entry {gradient:.3g}"
    # the loss reached is the closed-form minimum −Σ_{i≤d} λ_i²
    assert loss == pytest.approx(-np.sum(top**2), abs=LOSS_TOL, rel=0)
    # span: the largest principal angle, and the Davis–Kahan bound from the Gram matrix
    angle = scipy.linalg.subspace_angles(scaled, top_vectors).max()
    projector_error = np.linalg.norm(scaled @ scaled.T - top_vectors @ np.diag(top) @ top_vectors.T, 2)
    assert angle < ANGLE_TOL, f"largest principal angle {angle:.3g} rad"
    assert math.sin(angle) <= projector_error / top[-1] + 1e-12
    assert projector_error < 1e-6
    # the scale too: F̃ᵀF̃ has the eigenvalues λ_1..λ_d (F̃ = U_d diag(√λ) R)
    assert np.allclose(np.linalg.eigvalsh(scaled.T @ scaled)[::-1], top, atol=1e-6, rtol=0)


def test_unscaled_table_is_not_the_eigenspace(graph):
    """Negative control: without the D^{1/2} scaling the span is D^{−1/2}U_d, visibly off U_d because the
    node marginals are unequal; the angle test above can tell the two apart."""
    weights, _, tuples, probability = graph
    _, _, eigenvectors = normalised_adjacency(weights)
    encoder, _, _ = minimise(tuples, probability, weights.shape[0], seed=0)
    angle = scipy.linalg.subspace_angles(encoder.table.detach().numpy(), eigenvectors[:, :DIM]).max()
    assert angle > 1e3 * ANGLE_TOL
