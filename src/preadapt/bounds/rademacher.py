"""The Gen_M term of Theorem 4.1 of [Arora19]: Rademacher complexity of the encoder class, and Gen_M
with explicit constants.

Rad_S(F) = E_σ sup_{f∈F} Σ_j σ_jᵀ f(x_j) is the unnormalised empirical Rademacher complexity of F
restricted to the N input points x_j of the M training tuples (σ_j ∈ {±1}^d i.i.d. Rademacher, d the
output dimension). For the linear class it is estimated by Monte Carlo through a closed-form
supremum; for ReLU MLPs only a norm-product upper bound is available ([Golowich18]); the identity is
one fixed function with Rad = 0 (THEORY.md section 3). ``generalisation_term`` turns Rad_S into
Gen_M with constants derived for hinge and base-2 logistic ℓ (k = 1, b = 1; docs/theory.md,
"Gen_M with explicit constants").

[Golowich18] Golowich, Rakhlin, Shamir. Size-Independent Sample Complexity of Neural Networks.
COLT 2018, arXiv:1712.06541.
[Maurer16] Maurer. A vector-contraction inequality for Rademacher complexities. ALT 2016,
arXiv:1605.00251.
[McDiarmid89] McDiarmid. On the method of bounded differences. Surveys in Combinatorics, 1989.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from preadapt.bounds.arora2019 import LIPSCHITZ
from preadapt.encoders.base import IdentityEncoder, LinearEncoder, MLPEncoder
from preadapt.estimate.estimate import Estimate, mean_estimate
from preadapt.worlds.sampling import Tuples

SIGN_CHUNK = 2**22
"""Most float64 entries (Rademacher signs, or input coordinates) held at once: 32 MiB each."""


def tuple_points(tuples: Tuples) -> torch.Tensor:
    """Every input of the training tuples, flattened: (N, D) float64 with N = M·(1 + b + k·b).

    Anchors first, then positives, then negatives (the order does not change Rad_S).

    >>> M, b, k = 2, 1, 3
    >>> t = Tuples(torch.zeros(M, 5), torch.zeros(M, b, 5), torch.zeros(M, k, b, 5),
    ...            torch.zeros(M, dtype=torch.long), torch.zeros(M, k, dtype=torch.long))
    >>> tuple_points(t).shape, tuple_points(t).dtype
    (torch.Size([10, 5]), torch.float64)
    """
    M = tuples.anchor.shape[0]
    parts = [tuples.anchor.reshape(M, -1), tuples.positives.flatten(0, 1).flatten(1),
             tuples.negatives.flatten(0, 2).flatten(1)]  # (M, D), (M·b, D), (M·k·b, D)
    return torch.cat([part.to(torch.float64) for part in parts])  # (N, D)


def _as_points(points: torch.Tensor) -> torch.Tensor:
    if points.dim() < 2 or points.shape[0] < 1:
        raise ValueError(f"points must be (N, D) with N ≥ 1; got shape {tuple(points.shape)}")
    return points.flatten(1)


def _squared_norm_sum(points: torch.Tensor, chunk: int = SIGN_CHUNK) -> float:
    """Σ_j ‖x_j‖² in float64, converting ``points: (N, D)`` block by block."""
    block = max(1, chunk // points.shape[1])
    return float(sum(points[p:p + block].to(torch.float64).square().sum()
                     for p in range(0, points.shape[0], block)))


def linear_rademacher(points: torch.Tensor, out_dim: int, B: float, draws: int, generator: torch.Generator,
                      level: float = 0.95, chunk: int = SIGN_CHUNK) -> Estimate:
    """Monte Carlo Rad_S of the linear class {x ↦ Wx : ‖W‖_F ≤ B} on ``points: (N, D)``.

    The supremum is closed-form, sup_W Σ_j σ_jᵀ W x_j = sup_W ⟨W, Σ_j σ_j x_jᵀ⟩ = B·‖Σ_j σ_j x_jᵀ‖_F,
    so each of the ``draws`` i.i.d. draws of σ: (N, d) gives an unbiased observation and the result
    is a Student-t interval over draws (method "monte_carlo", n = draws). Memory is bounded by
    ``chunk`` float64 entries: signs are drawn block by block and accumulated into the (d, D) matrix.
    Signs are drawn in the order (draw, point, coordinate), so ``chunk`` changes the numbers only by
    the rounding of the sums.

    >>> e = linear_rademacher(torch.tensor([[3.0, 4.0]]), 1, 2.0, draws=8, generator=torch.Generator().manual_seed(0))
    >>> e.value, e.lower, e.upper, e.n, e.method
    (10.0, 10.0, 10.0, 8, 'monte_carlo')
    """
    points = _as_points(points)
    if out_dim < 1 or B < 0 or draws < 2 or chunk < 1:
        raise ValueError(f"need out_dim ≥ 1, B ≥ 0, draws ≥ 2, chunk ≥ 1; got {out_dim}, {B}, {draws}, {chunk}")
    N, D = points.shape
    d = out_dim
    device = generator.device
    if N * max(d, D) <= chunk:  # all points in one block: batch several draws
        block = N
        batch = max(1, min(draws, chunk // (N * d), chunk // (d * D)))
    else:  # one draw at a time, points in blocks
        block = max(1, chunk // max(d, D))
        batch = 1
    whole = points.to(device, torch.float64) if block == N else None
    values = torch.empty(draws, dtype=torch.float64)
    for start in range(0, draws, batch):
        r = min(batch, draws - start)
        sums = torch.zeros(r, d, D, dtype=torch.float64, device=device)  # Σ_j σ_j x_jᵀ: (r, d, D)
        for p in range(0, N, block):
            x = whole if whole is not None else points[p:p + block].to(device, torch.float64)  # (n, D)
            signs = torch.randint(0, 2, (r, x.shape[0], d), generator=generator, dtype=torch.float64,
                                  device=device).mul_(2.0).sub_(1.0)  # (r, n, d)
            sums += signs.transpose(1, 2) @ x
        values[start:start + r] = B * torch.linalg.vector_norm(sums.flatten(1), dim=1).cpu()
    return replace(mean_estimate(values, level), method="monte_carlo")


def linear_rademacher_upper(points: torch.Tensor, out_dim: int, B: float) -> float:
    """Jensen's closed form for the linear class: Rad_S ≤ B·sqrt(d·Σ_j‖x_j‖²).

    E‖Σ_j σ_j x_jᵀ‖_F ≤ sqrt(E‖Σ_j σ_j x_jᵀ‖_F²) = sqrt(d·Σ_j‖x_j‖²); the Khintchine–Kahane
    inequality puts the true value above this bound divided by √2 (THEORY.md section 3).

    >>> linear_rademacher_upper(torch.tensor([[3.0, 4.0]]), 4, 2.0)
    20.0
    """
    return B * math.sqrt(out_dim * _squared_norm_sum(_as_points(points)))


def mlp_norms(layers: Sequence[tuple[torch.Tensor, torch.Tensor | None]]) -> tuple[list[float], list[float]]:
    """The norms that define the ReLU-MLP class of ``mlp_rademacher_upper``, biases folded.

    ``layers`` are (W_l: (out, in), b_l: (out,) or None) in order. Returns the Frobenius norms
    ‖W̃_l‖_F = sqrt(‖W_l‖_F² + ‖b_l‖² + 1) of the L − 1 hidden layers (W̃_l = [[W_l, b_l], [0, 1]])
    and the row norms r_i = sqrt(‖W_L[i]‖² + b_L[i]²) of the output layer W̃_L = [W_L, b_L].
    A missing bias counts as zero.

    >>> hidden, rows = mlp_norms([(torch.tensor([[2.0, 0.0]]), torch.tensor([2.0])),
    ...                           (torch.tensor([[3.0], [0.0]]), torch.tensor([4.0, 1.0]))])
    >>> hidden, rows
    ([3.0], [5.0, 1.0])
    """
    if not layers:
        raise ValueError("an MLP needs at least one layer")

    def augmented(weight, bias):  # [W, b]: (out, in + 1)
        bias = torch.zeros(weight.shape[0], dtype=torch.float64) if bias is None else bias
        return torch.cat([weight.detach().to(torch.float64).cpu(), bias.detach().to(torch.float64).cpu()[:, None]], 1)

    hidden = [math.sqrt(float(augmented(w, b).square().sum()) + 1.0) for w, b in layers[:-1]]
    rows = torch.linalg.vector_norm(augmented(*layers[-1]), dim=1).tolist()
    return hidden, rows


def mlp_rademacher_upper(hidden_norms: Sequence[float], row_norms: Sequence[float], points: torch.Tensor) -> float:
    """Norm-product upper bound on Rad_S of ReLU MLPs x ↦ W_L relu(… relu(W_1 x + b_1) …) + b_L.

    The class: ‖W̃_l‖_F ≤ ``hidden_norms[l]`` for the L − 1 hidden layers and ‖w̃_i‖ ≤ ``row_norms[i]``
    for the d rows of the output layer (see ``mlp_norms``). Derivation:

    1. Fold the biases: x̃ = (x, 1), W̃_l = [[W_l, b_l], [0, 1]] for hidden layers (the constant
       unit passes the ReLU unchanged) and W̃_L = [W_L, b_L]; the class only grows when the last
       row of W̃_l is left free, so an upper bound for the bias-free net of the W̃_l holds.
    2. The sup of a sum is at most the sum of sups over the d output coordinates:
       Rad ≤ Σ_i E_σ sup w̃_iᵀ Σ_j σ_ji φ(x̃_j), with φ a depth-(L − 1) ReLU net.
    3. Coordinate i is a scalar depth-L net with Frobenius-bounded layers, so Theorem 1 of
       [Golowich18] (1-Lipschitz positively homogeneous activation) gives
       Rad ≤ (Σ_i r_i)·Π_{l<L} ‖W̃_l‖_F·(sqrt(2·ln 2·L) + 1)·sqrt(Σ_j (‖x_j‖² + 1)).

    For L = 1 the product is empty (Jensen alone would give the tighter factor 1 in place of
    sqrt(2 ln 2) + 1). The bound is monotone in every norm. It is for Gen_M of [Arora19] Theorem 4.1.

    >>> round(mlp_rademacher_upper([], [1.0], torch.tensor([[0.0]])), 6)  # sqrt(2 ln 2) + 1
    2.17741
    >>> round(mlp_rademacher_upper([2.0], [1.0, 0.5], torch.tensor([[1.0, 1.0, 1.0]])), 6)  # 1.5·2·(sqrt(4 ln 2) + 1)·2
    15.990655
    """
    points = _as_points(points)
    norms = [*hidden_norms, *row_norms]
    if not row_norms or any(not n >= 0.0 for n in norms):
        raise ValueError(f"norms must be ≥ 0 and the output layer needs ≥ 1 row; "
                         f"got {list(hidden_norms)}, {list(row_norms)}")
    depth = len(hidden_norms) + 1  # L
    augmented_sum = _squared_norm_sum(points) + points.shape[0]  # Σ_j ‖x̃_j‖²
    return (sum(row_norms) * math.prod(hidden_norms) * (math.sqrt(2.0 * math.log(2.0) * depth) + 1.0)
            * math.sqrt(augmented_sum))


@dataclass(frozen=True)
class ClassComplexity:
    """Rad_S of the class an encoder is taken from, and which class that is.

    ``rad`` is the number Gen_M uses: a Monte Carlo estimate (linear), an exact-valued upper bound
    as an exact number (the MLP's closed-form upper bound, so labelled) or exact 0 (identity). ``upper`` is a closed-form upper bound
    where one exists; ``label`` names the class; ``norms`` the numbers that define it.
    """

    rad: Estimate
    upper: float | None
    label: str
    norms: dict[str, float]


def _clip_note(encoder: nn.Module) -> str:
    return " (norm clip not included)" if getattr(encoder, "norm_bound", None) is not None else ""


def _mlp_linear_names(encoder: MLPEncoder) -> list[str] | None:
    """Names of the Linear layers of ``encoder.net`` when it alternates Linear and ReLU, else None."""
    children = list(encoder.net.named_children())
    expected = [nn.Linear if i % 2 == 0 else nn.ReLU for i in range(len(children))]
    if not children or len(children) % 2 == 0 or any(type(m) is not t for (_, m), t in zip(children, expected)):
        return None
    return [name for name, module in children if isinstance(module, nn.Linear)]


def class_complexity(encoder: nn.Module, states: list[dict[str, torch.Tensor]], points: torch.Tensor, draws: int,
                     generator: torch.Generator, level: float = 0.95) -> ClassComplexity | None:
    """Rad_S of the smallest class of ``encoder``'s kind that contains every checkpoint in ``states``.

    ``states`` are state_dicts of ``encoder``'s architecture (``encoder`` itself is only read for
    its kind and layout). Linear: B = max over states of ‖W‖_F, Monte Carlo with ``draws``. ReLU MLP:
    per hidden layer the max ‖W̃_l‖_F and per output row the max r_i over states, norm-product
    bound. Identity: exact 0. Any other module: None (Theorem 4.1 of [Arora19] cannot be evaluated).

    >>> class_complexity(IdentityEncoder(), [], torch.zeros(3, 2), 10, torch.Generator()).label
    'identity: one fixed function, Rad = 0'
    """
    if type(encoder) is IdentityEncoder:
        return ClassComplexity(Estimate.exact(0.0), 0.0, "identity: one fixed function, Rad = 0", {})
    if type(encoder) not in (LinearEncoder, MLPEncoder):
        return None
    if not states:
        raise ValueError("states must hold at least one checkpoint of the encoder")
    if type(encoder) is LinearEncoder:
        weights = [state["linear.weight"] for state in states]  # each (d, D)
        B = max(float(torch.linalg.matrix_norm(w.detach().to(torch.float64))) for w in weights)
        out_dim = weights[0].shape[0]
        rad = linear_rademacher(points, out_dim, B, draws, generator, level)
        return ClassComplexity(rad, linear_rademacher_upper(points, out_dim, B),
                               f"linear, ‖W‖_F ≤ {B:.4g}{_clip_note(encoder)}", {"B": B})
    names = _mlp_linear_names(encoder)
    if names is None:
        return None
    per_state = [mlp_norms([(state[f"net.{n}.weight"], state.get(f"net.{n}.bias")) for n in names])
                 for state in states]
    hidden = [max(values) for values in zip(*(h for h, _ in per_state))]
    rows = [max(values) for values in zip(*(r for _, r in per_state))]
    bound = mlp_rademacher_upper(hidden, rows, points)
    norms = {f"hidden_{l + 1}": m for l, m in enumerate(hidden)}
    norms |= {f"output_row_{i + 1}": r for i, r in enumerate(rows)}
    label = f"ReLU MLP, norm-product upper bound [Golowich18]{_clip_note(encoder)}"
    return ClassComplexity(Estimate.exact(bound), bound, label, norms)


RADEMACHER_FACTOR = 4.0 * math.sqrt(3.0)
"""2 (symmetrisation) · √2 (vector contraction, [Maurer16]) · √6 (the margin map on ‖f‖ ≤ R, per R):
the coefficient of L·R·Rad_S(F)/M in Gen_M."""

CONFIDENCE_FACTOR = 2.0 * math.sqrt(2.0)
"""McDiarmid with bounded differences 4·Δ_ℓ(R)/M gives Δ_ℓ(R)·sqrt(8·ln(1/δ)/M): the coefficient of
Δ_ℓ(R)·sqrt(ln(1/δ)/M) in Gen_M."""


def _loss_lipschitz(loss: str) -> float:
    if loss not in LIPSCHITZ:
        raise ValueError(f"Gen_M's constants are derived for loss 'hinge' or 'logistic'; got {loss!r}")
    return LIPSCHITZ[loss]


def loss_range(loss: str, R: float) -> float:
    """Δ_ℓ(R) = sup ℓ − inf ℓ over the margins v = f(x)ᵀ(f(x⁺) − f(x⁻)) ∈ [−2R², 2R²] of ‖f‖ ≤ R (k = 1).

    Hinge: ℓ(v) = max(0, 1 − v) takes values in [max(0, 1 − 2R²), 1 + 2R²], so Δ = min(4R², 1 + 2R²).
    Base-2 logistic: log₂(1 + e^{2R²}) − log₂(1 + e^{−2R²}) = log₂ e^{2R²}, so Δ = 2R²/ln 2 exactly.
    One tuple moves an empirical mean of M losses by at most Δ/M (McDiarmid's bounded difference).

    >>> loss_range("hinge", 0.5), loss_range("hinge", 2.0)  # 4R² below R² = 1/2, 1 + 2R² above
    (1.0, 9.0)
    >>> round(loss_range("logistic", 1.0), 6)  # 2/ln 2
    2.88539
    """
    _loss_lipschitz(loss)
    if R < 0:
        raise ValueError(f"R must be ≥ 0; got {R}")
    if loss == "hinge":
        return min(4.0 * R**2, 1.0 + 2.0 * R**2)
    return 2.0 * R**2 / math.log(2.0)


def gen_m_coefficients(loss: str, R: float) -> tuple[float, float]:
    """The derived coefficients (a_rad, a_conf) of Gen_M = a_rad·Rad_S(F)/M + a_conf·sqrt(ln(1/δ)/M), k = b = 1.

    a_rad = 4√3·L·R (``RADEMACHER_FACTOR``; L the Lipschitz constant of ℓ, 1 for hinge and 1/ln 2 for
    base-2 logistic) and a_conf = 2√2·Δ_ℓ(R) (``CONFIDENCE_FACTOR``, ``loss_range``). In THEORY.md's
    form c_rad·R·Rad_S/M + c_conf·R²·sqrt(ln(1/δ)/M) these are c_rad = 4√3·L and c_conf =
    2√2·Δ_ℓ(R)/R²: 4√2/ln 2 for logistic, 2√2·(2 + 1/R²) for hinge when R² ≥ 1/2 (8√2 below).

    >>> [round(c, 6) for c in gen_m_coefficients("hinge", 1.0)]  # 4√3, 2√2·3
    [6.928203, 8.485281]
    >>> [round(c, 6) for c in gen_m_coefficients("logistic", 1.0)]  # 4√3/ln 2, 4√2/ln 2
    [9.995284, 8.161116]
    """
    return RADEMACHER_FACTOR * _loss_lipschitz(loss) * R, CONFIDENCE_FACTOR * loss_range(loss, R)


def generalisation_term(rad: Estimate, R: float, M: int, delta: float, loss: str, *,
                        rademacher_constant: float = 1.0, confidence_constant: float = 1.0,
                        level: float | None = None) -> tuple[Estimate, dict[str, Estimate]]:
    """Gen_M of [Arora19] Theorem 4.1 with explicit constants (k = 1, b = 1), a rigorous upper bound:

        Gen_M = c_rad·4√3·L·R·Rad_S(F)/M + c_conf·2√2·Δ_ℓ(R)·sqrt(ln(1/δ)/M)

    With c_rad = c_conf = 1 (the defaults), with probability ≥ 1 − δ over the M i.i.d. training
    tuples, L_un(f̂) ≤ L_un(f) + Gen_M for every f in F at once, f̂ any empirical minimiser of the CURL
    loss over F; so Theorem 4.1's Gen_M/(1 − τ) and Theorem 4.5's η·Gen_M need no further factor. It
    assumes ‖f(x)‖ ≤ R for every x (a norm clip gives it; a clip is 1-Lipschitz, so Rad_S of the
    unclipped class serves) and F fixed before the data. The steps (docs/theory.md, "Gen_M with
    explicit constants"): the margin map (a, p, n) ↦ aᵀ(p − n) is √6·R-Lipschitz on the ball, so
    ℓ∘margin is √6·L·R-Lipschitz and the vector contraction of [Maurer16] bounds the loss class's
    Rademacher complexity by √2·√6·L·R·Rad_S(F); symmetrisation doubles it; McDiarmid applied once
    to sup_f (L_un − L̂_un) − 2·Rad(loss class)/M + L̂_un(f*) − L_un(f*) (f* a population minimiser),
    whose bounded differences are 4·Δ_ℓ(R)/M, gives the second part.

    ``rad`` is Rad_S(F) (``ClassComplexity.rad``), R the norm bound, M the number of training tuples,
    δ the failure probability and ``loss`` ℓ ('hinge' or 'logistic'). c_rad = ``rademacher_constant``
    and c_conf = ``confidence_constant`` multiply the derived terms: 1 is the rigorous bound, above 1
    a looser one, below 1 no longer a proven bound. Gen_M is an affine map of ``rad``, so its interval
    is rad's mapped exactly; ``level`` (None: keep rad's) recomputes a t/normal/Monte Carlo interval
    first. Returns Gen_M and its parts {"rademacher_part", "confidence_part"}.

    >>> gen, parts = generalisation_term(Estimate.exact(50.0), R=2.0, M=100, delta=math.exp(-4.0), loss="hinge")
    >>> round(parts["rademacher_part"].value, 6), round(parts["confidence_part"].value, 6)  # 4√3·2·50/100, 2√2·9·2/10
    (6.928203, 5.091169)
    >>> round(gen.value, 6)
    12.019372
    """
    if R < 0 or M < 1 or not 0.0 < delta < 1.0:
        raise ValueError(f"need R ≥ 0, M ≥ 1 and 0 < delta < 1; got R={R}, M={M}, delta={delta}")
    if level is not None:
        rad = rad.at_level(level)
    rademacher_coefficient, confidence_coefficient = gen_m_coefficients(loss, R)
    scale = rademacher_constant * rademacher_coefficient / M
    confidence = confidence_constant * confidence_coefficient * math.sqrt(math.log(1.0 / delta) / M)
    parts = {"rademacher_part": rad.affine(scale), "confidence_part": Estimate.exact(confidence)}
    return rad.affine(scale, confidence), parts
