"""Every statement of [Arora19] that preadapt checks (THEORY.md section 3).

- The statements that hold for every f (``every_f_checks``) are never "violated" on random (world,
  encoder) pairs, untrained, rescaled and constant encoders included: a violation is a bug.
- Each check, and both theorems, can fail: a right side lowered by 0.05 comes out "violated" where
  the honest slack is far below 0.05.
- The status rule, the rows a check emits, and the premise of Theorems 4.1 and 4.5 (f̂ minimises the
  empirical CURL loss) that ``theorem_checks`` must check before giving a verdict.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from preadapt.adapt import ADAPTERS
from preadapt.bounds import (
    PREMISE_NOT_MET, BoundCheck, BoundsConfig, Training, block_below_un, block_monotone, comparator_step,
    every_f_checks, jensen_floor, lemma_4_3, lemma_4_3_negatives, lemma_4_4,
    mean_classifier_below_different_class_loss, proposition_6_2, theorem_4_1, theorem_4_5,
    theorem_checks, verdict,
)
from preadapt.bounds.arora2019 import LIPSCHITZ
from preadapt.bounds.rademacher import ClassComplexity
from preadapt.bounds.suite import gen_m_note
from preadapt.encoders import ENCODERS, IdentityEncoder
from preadapt.estimate import Estimate, EvaluateConfig, evaluate_encoder
from preadapt.objectives import CURL, LOSSES
from preadapt.worlds import WORLDS, GaussianWorld, draw_tuples, tau, tau_k
from preadapt.worlds.sampling import make_generator

SHIFT = -0.05  # a deliberately wrong right side: rhs − 0.05

SMALL = EvaluateConfig(samples=3000, mean_samples=400, test_per_class=20, task_classes=[2], top_r=[1],
                       probe_tasks=2, probe_shots=5, probe_val=10, probe_penalties=[1e-2], star_samples=20,
                       bootstrap=10, negatives=[1, 2, 4], block_sizes=[2, 5])


class Scaled(torch.nn.Module):
    """f = scale · g: small scales make every margin small and the statements nearly tight; scale 0
    is the constant encoder f = 0, for which every k = 1 statement is an exact equality."""

    def __init__(self, inner, scale):
        super().__init__()
        self.inner, self.scale = inner, scale

    def forward(self, x):
        return self.scale * self.inner(x)


# --- every statement by name, with a right-side shift (what ``every_f_checks`` evaluates) -----------

def _every_f(name: str, evaluation, prior, loss: str, context: dict, config: EvaluateConfig,
             rhs_shift: float = 0.0) -> BoundCheck:
    """The check ``name`` of ``every_f_checks`` at ``context`` (negatives / block_size), right side shifted."""
    levels = dict(level=config.level, verdict_level=config.verdict_level, rhs_shift=rhs_shift)
    t = tau(prior)
    checks = {
        "lemma_4_3": lambda: lemma_4_3(evaluation, t, **levels),
        "mean_below_diff": lambda: mean_classifier_below_different_class_loss(evaluation, **levels),
        "jensen_floor": lambda: jensen_floor(evaluation, **levels),
        "lemma_4_4": lambda: lemma_4_4(evaluation, loss, **levels),
        "lemma_4_3_negatives": lambda: lemma_4_3_negatives(evaluation, prior, context["negatives"], loss, **levels),
        "proposition_6_2": lambda: proposition_6_2(evaluation, t, context["block_size"], **levels),
        "block_below_un": lambda: block_below_un(evaluation, t, context["block_size"], **levels),
        "block_monotone": lambda: block_monotone(evaluation, context["block_size"], **levels),
    }
    return checks[name]()


EVERY_F_NAMES = {"lemma_4_3", "mean_below_diff", "jensen_floor", "lemma_4_4",
                 "lemma_4_3_negatives", "proposition_6_2", "block_below_un", "block_monotone"}


# --- 1. acceptance: no statement that holds for every f is ever "violated" ---------------------------

@st.composite
def cases(draw):
    """A random (world, encoder, loss, evaluation config), as plain values (readable when shrunk)."""
    world = {
        "kind": "gaussian", "classes": draw(st.integers(2, 12)), "dim": draw(st.integers(2, 10)),
        "noise": draw(st.floats(0.2, 2.0)), "separation": draw(st.floats(0.5, 5.0)),
        "prior": draw(st.one_of(st.just("uniform"), st.builds(lambda s: {"zipf": s}, st.floats(0.2, 2.0)))),
        "warp": draw(st.booleans()),
    }
    kind = draw(st.sampled_from(["identity", "linear", "mlp"]))
    encoder = {"kind": kind}
    if kind != "identity":
        encoder["out_dim"] = draw(st.integers(1, 16))
        encoder["norm_bound"] = draw(st.one_of(st.none(), st.sampled_from([0.5, 2.0, 5.0, 20.0])))
    if kind == "mlp":
        encoder["hidden"] = draw(st.lists(st.integers(4, 64), min_size=1, max_size=2))
    scale = draw(st.sampled_from([0.0, 1e-4, 1e-3, 1e-2, 0.05, 0.1, 0.5, 1.0, 3.0, 10.0]))  # 0: constant f
    loss = draw(st.sampled_from(["hinge", "logistic"]))
    evaluate = dict(samples=draw(st.sampled_from([2000, 3000, 4000])),
                    negatives=draw(st.sampled_from([[1, 2, 4], [1, 4, 16], [2, 8], [1, 3]])),
                    block_sizes=draw(st.sampled_from([[2, 5], [3], [2, 4, 8]])))
    return world, encoder, scale, loss, evaluate, draw(st.integers(0, 2**16))


MEAN_ADAPTER_ONLY = [ADAPTERS.parse({"kind": "mean"})]
"""The adapters of the acceptance cases: no statement that holds for every f reads a linear head, and
each adapter draws from its own random stream, so every check comes out, bit for bit, as with SMALL's
default adapters (compared on all the cases drawn here); the linear heads' fits were four fifths of a
case's time."""


def _assert_never_violated(case) -> None:
    world_spec, encoder_spec, scale, loss, evaluate, seed = case
    world = WORLDS.build(WORLDS.parse(world_spec), make_generator(seed, "world"))
    encoder = Scaled(ENCODERS.build(ENCODERS.parse(encoder_spec), world.input_shape, make_generator(seed, "encoder")),
                     scale)
    config = SMALL.model_copy(update={**evaluate, "adapters": MEAN_ADAPTER_ONLY})
    evaluation = evaluate_encoder(encoder, world, config, seed, curl_loss_name=loss)
    checks = every_f_checks(evaluation, world.prior, config, loss)
    blocks = [b for b in config.block_sizes if b > 1]
    assert len(checks) == 4 + len(config.negatives) + 3 * len(blocks)
    assert {check.name for check in checks} == EVERY_F_NAMES
    for check in checks:
        assert check.status != "violated", (check.name, check.context, check.slack, case)
        assert check.slack.level == config.verdict_level


def _mlp_case(hidden, norm_bound, scale, loss, negatives, seed):
    world = {"kind": "gaussian", "classes": 7, "dim": 5, "noise": 1.0, "separation": 3.0, "prior": {"zipf": 1.0},
             "warp": True}
    encoder = {"kind": "mlp", "hidden": hidden, "out_dim": 6, "norm_bound": norm_bound}
    return world, encoder, scale, loss, {"samples": 2000, "negatives": negatives, "block_sizes": [2, 5]}, seed


@settings(max_examples=30, derandomize=True, deadline=None, database=None)
@given(cases())
@example(_mlp_case([16], 2.0, 1.0, "hinge", [1, 4, 16], 1))  # the drawn examples need not include an MLP
@example(_mlp_case([32, 8], None, 10.0, "logistic", [1, 2, 4], 2))
@example(_mlp_case([8], 5.0, 1e-4, "logistic", [2, 8], 3))
def test_no_every_f_statement_is_violated_on_random_worlds_and_encoders(case):
    _assert_never_violated(case)


@pytest.mark.slow
@settings(max_examples=60, derandomize=True, deadline=None, database=None)
@given(cases())
def test_no_every_f_statement_is_violated_on_more_worlds_and_encoders(case):
    _assert_never_violated(case)


# --- 2. sensitivity: each check can fail ---------------------------------------------------------------

ENCODERS_NEAR_COLLAPSE = {"near-collapsed": 0.05, "constant": 0.0}


@functools.cache
def _collapsed(loss: str, encoder: str):
    """An evaluation where every statement with k = 1 is nearly (0.05) or exactly (0) an equality."""
    world = GaussianWorld(torch.randn(6, 4, generator=torch.Generator().manual_seed(1)), noise=1.0)
    evaluation = evaluate_encoder(Scaled(IdentityEncoder(), ENCODERS_NEAR_COLLAPSE[encoder]), world, SMALL, 0,
                                  curl_loss_name=loss)
    return world, evaluation


def _loose_by_construction(name: str, context: dict, loss: str, encoder: str) -> bool:
    """Statements whose honest slack is not small on a (nearly) collapsed encoder.

    The logistic k-negative form subtracts E[log₂(1 + m)] while ℓ(0) = log₂(1 + k): for k > 1 it is
    loose by E[log₂((1 + k)/(1 + m))] even at f = 0 (an oracle test below).
    """
    return name == "lemma_4_3_negatives" and loss == "logistic" and context["negatives"] > 1


@pytest.mark.parametrize("encoder", list(ENCODERS_NEAR_COLLAPSE))
@pytest.mark.parametrize("loss", ["hinge", "logistic"])
def test_a_wrong_right_side_is_reported_violated_by_every_check(loss, encoder):
    world, evaluation = _collapsed(loss, encoder)
    checks = every_f_checks(evaluation, world.prior, SMALL, loss)
    assert {check.name for check in checks} == EVERY_F_NAMES  # a new statement needs a case here
    tested = set()
    for check in checks:
        honest = _every_f(check.name, evaluation, world.prior, loss, check.context, SMALL)
        assert honest == check  # the table above is what every_f_checks evaluates
        if _loose_by_construction(check.name, check.context, loss, encoder):
            continue
        wrong = _every_f(check.name, evaluation, world.prior, loss, check.context, SMALL, rhs_shift=SHIFT)
        label = (check.name, check.context)
        assert honest.status != "violated", label
        assert honest.slack.upper < 0.5 * abs(SHIFT), (label, honest.slack)  # far below the shift
        assert wrong.status == "violated", (label, wrong.slack)
        # the shift enters one addition of O(1) numbers instead of another: a few ε apart (≲ 1e-15)
        assert wrong.slack.value == pytest.approx(honest.slack.value + SHIFT, abs=1e-12)
        assert wrong.rhs.value == pytest.approx(honest.rhs.value + SHIFT, abs=1e-12)
        assert wrong.lhs == honest.lhs  # the same computation on the same evaluation
        tested.add(check.name)
    assert tested == EVERY_F_NAMES


@pytest.mark.parametrize("loss", ["hinge", "logistic"])
def test_the_constant_encoder_makes_every_tight_statement_an_exact_equality(loss):
    world, evaluation = _collapsed(loss, "constant")
    for check in every_f_checks(evaluation, world.prior, SMALL, loss):
        if _loose_by_construction(check.name, check.context, loss, "constant"):
            continue
        # 0 in real arithmetic; each tuple's value is ℓ(0) (≤ log₂ 5) less the same number computed
        # elsewhere (an ulp apart at most: SIMD and scalar kernels), and numpy's pairwise means of
        # n ≤ 3000 of them and the (1 − τ)⁻¹ scalings add ≲ 20ε each: ≲ 1e-14 in all
        assert check.slack.value == pytest.approx(0.0, abs=1e-12), (check.name, check.context, check.slack)
        assert check.slack.upper - check.slack.lower == pytest.approx(0.0, abs=1e-12)
        assert check.status == "holds"
        assert check.lhs.value == pytest.approx(check.rhs.value, abs=1e-12), (check.name, check.lhs, check.rhs)


@pytest.mark.parametrize("encoder", list(ENCODERS_NEAR_COLLAPSE))
@pytest.mark.parametrize("loss", ["hinge", "logistic"])
def test_the_slack_is_rhs_minus_lhs(loss, encoder):
    world, evaluation = _collapsed(loss, encoder)
    for check in every_f_checks(evaluation, world.prior, SMALL, loss):
        difference = check.rhs.value - check.lhs.value  # every side and slack comes from one sample
        # a mean of differences vs a difference of means (numpy's pairwise sums of n ≤ 3000 values
        # ≲ 5): ≲ 20ε·5 ≈ 2e-14 each, scaled by (1 − τ)⁻¹ ≲ 2
        assert check.slack.value == pytest.approx(difference, abs=1e-12), (check.name, check.slack, difference)


def test_the_constant_encoder_meets_the_k_negative_logistic_bound_as_enumerated():
    """f = 0, uniform ρ on 6 classes: ℓ = log₂(1 + k), and given m = 0 the mean classifier scores
    log₂|T| with T the anchor's class and the distinct negatives, uniform on the 5 others. The
    right side (log₂(1 + k) − E[log₂(1 + m)])/(1 − τ_k) is exact; the left side is enumerated."""
    world, evaluation = _collapsed("logistic", "constant")
    for k in SMALL.negatives:
        check = lemma_4_3_negatives(evaluation, world.prior, k, "logistic")
        floor = sum(math.comb(k, m) * (1 / 6) ** m * (5 / 6) ** (k - m) * math.log2(1 + m) for m in range(k + 1))
        assert check.rhs.value == pytest.approx((math.log2(1 + k) - floor) / (1 - tau_k(world.prior, k)), abs=1e-12)
        # a constant sample: no width, up to its rounding (ℓ(0) evaluated by SIMD or scalar kernels
        # may differ by an ulp between tuples, se ≲ 1e-16/√n)
        assert check.rhs.upper - check.rhs.lower <= 1e-12
        lhs = np.mean([math.log2(1 + len(set(negs))) for negs in itertools.product(range(5), repeat=k)])
        # 4 se: a fixed-seed sampling check; + 1e-12: rounding of the mean of identical values at k = 1
        assert abs(check.lhs.value - lhs) <= 4 * check.lhs.se + 1e-12, (k, check.lhs, lhs)  # k = 1: exact
        assert check.status == "holds"


@pytest.mark.parametrize("same", [True, False])
@pytest.mark.parametrize("encoder", list(ENCODERS_NEAR_COLLAPSE))
@pytest.mark.parametrize("loss", ["hinge", "logistic"])
def test_a_wrong_right_side_is_reported_violated_by_the_theorems(loss, encoder, same):
    """With Gen_M = 0 Theorem 4.1 is Lemma 4.3 for f̂ = f, and Theorem 4.5
    is L^μ_sup(f̂) ≤ L_un^≠(f) + β·s(f): nearly tight on nearly collapsed features."""
    world, evaluation = _collapsed(loss, encoder)
    t = tau(world.prior)
    levels = dict(level=SMALL.level, verdict_level=SMALL.verdict_level)
    zero = Estimate.exact(0.0)
    for theorem in (functools.partial(theorem_4_1, evaluation, evaluation, t),
                    functools.partial(theorem_4_5, evaluation, evaluation, t, loss)):
        honest = theorem(zero, {}, same, **levels)
        wrong = theorem(zero, {}, same, rhs_shift=SHIFT, **levels)
        assert honest.status != "violated", honest
        assert honest.slack.upper < 0.5 * abs(SHIFT), honest.slack
        assert wrong.status == "violated", wrong.slack
        assert wrong.slack.value == pytest.approx(honest.slack.value + SHIFT, abs=1e-12)
        assert wrong.rhs.value == pytest.approx(honest.rhs.value + SHIFT, abs=1e-12)

    lemma = lemma_4_3(evaluation, t, **levels)
    reduced = theorem_4_1(evaluation, evaluation, t, zero, {}, same, **levels)
    assert reduced.rhs == lemma.rhs and reduced.lhs == lemma.lhs  # exact: Gen_M = 0 adds a term x + 0.0 = x
    assert reduced.slack.value == pytest.approx(lemma.slack.value, abs=1e-12)
    beta = math.sqrt(2.0) * LIPSCHITZ[loss] * t / (1.0 - t)
    theorem = theorem_4_5(evaluation, evaluation, t, loss, zero, {}, same, **levels)
    assert theorem.rhs.value == pytest.approx(
        evaluation.estimate("L_un_diff", SMALL.level).value + beta * evaluation.get("s_f").value, abs=1e-12)


@pytest.mark.parametrize("loss", ["hinge", "logistic"])
def test_pairing_the_theorems_sides_narrows_the_slack_but_keeps_its_value(loss):
    world, evaluation = _collapsed(loss, "near-collapsed")
    t = tau(world.prior)
    for theorem in (functools.partial(theorem_4_1, evaluation, evaluation, t),
                    functools.partial(theorem_4_5, evaluation, evaluation, t, loss)):
        paired, unpaired = theorem(Estimate.exact(0.0), {}, True), theorem(Estimate.exact(0.0), {}, False)
        # one value from the paired moments, one from the separate sides: ≲ 1e-13 apart (as above)
        assert paired.slack.value == pytest.approx(unpaired.slack.value, abs=1e-12)
        assert paired.slack.se < unpaired.slack.se


# --- 3. the status rule and the rows a check emits -----------------------------------------------------

def _slack(lower: float, upper: float) -> Estimate:
    return Estimate(0.5 * (lower + upper), lower, upper, 100, 0.999, "normal", (upper - lower) / 6.6)


def _check(slack: Estimate, **fields) -> BoundCheck:
    lhs, rhs = Estimate(0.4, 0.35, 0.45, 100, 0.95, "t", 0.025), Estimate(0.5, 0.45, 0.55, 100, 0.95, "t", 0.025)
    return BoundCheck("demo", "[Arora19] demo", lhs, rhs, slack, verdict(slack), **fields)


@pytest.mark.parametrize("lower, upper, status", [
    (0.01, 0.2, "holds"), (0.0, 0.0, "holds"), (-1e-12, 0.1, "holds"),  # ties within 1e-9 hold
    (-0.2, -0.01, "violated"), (-0.2, -1e-6, "violated"),
    (-0.2, 0.01, "inconclusive"), (-1e-6, 0.3, "inconclusive"), (-0.2, -1e-12, "inconclusive"),
])
def test_verdict_follows_the_slack_interval(lower, upper, status):
    assert verdict(_slack(lower, upper)) == status
    assert _check(_slack(lower, upper)).status == status


def test_without_verdict_keeps_the_sides_and_gives_the_reason():
    check = _check(_slack(-0.2, -0.01), terms={"tau": Estimate.exact(0.25)})
    assert check.status == "violated"
    reason = "f̂ (step 3) has a higher empirical CURL loss than f (step 7)"
    waived = check.without_verdict(reason)
    assert waived.status == PREMISE_NOT_MET == "premise not met"
    assert waived.note == reason
    assert (waived.lhs, waived.rhs, waived.slack, waived.terms) == (check.lhs, check.rhs, check.slack, check.terms)
    assert all(row.context["status"] == PREMISE_NOT_MET for row in waived.measurements())


def test_measurements_emit_the_sides_and_one_row_per_term():
    terms = {"tau_k": Estimate.exact(0.3), "L_un": Estimate(1.1, 1.0, 1.2, 50, 0.95, "t", 0.05),
             "Rad_S": Estimate.exact(2.0)}
    check = _check(_slack(0.01, 0.2), terms=terms, context={"negatives": 4}, note="vacuous: ...",
                   term_notes={"Rad_S": "linear, ‖W‖_F ≤ 2"})
    rows = check.measurements()
    assert [row.quantity for row in rows] == ["bound_lhs", "bound_rhs", "bound_slack"] + ["bound_term"] * 3
    for row, estimate in zip(rows, (check.lhs, check.rhs, check.slack)):
        assert row.estimate == estimate
        assert row.context == {"bound": "demo", "status": "holds", "negatives": 4, "note": "vacuous: ..."}
    for row, (term, estimate) in zip(rows[3:], terms.items()):
        assert row.estimate == estimate
        assert row.context["term"] == term and row.context["negatives"] == 4
        assert row.context["bound"] == "demo" and row.context["status"] == "holds"
    assert rows[5].context["note"] == "linear, ‖W‖_F ≤ 2"
    assert "note" not in rows[3].context and "note" not in rows[4].context
    # a statement instanced by block size carries it on every row
    world, evaluation = _collapsed("logistic", "near-collapsed")
    real = proposition_6_2(evaluation, tau(world.prior), 5)
    assert {row.context["block_size"] for row in real.measurements()} == {5}
    assert {row.context["term"] for row in real.measurements()[3:]} == set(real.terms)


# --- 4. the premise of Theorems 4.1 and 4.5 ------------------------------------------------------------

PREMISE_WORLD = GaussianWorld(3.0 * torch.eye(5), noise=0.5)  # orthogonal means: f = x separates by inner product
GOOD, POOR = 100, 0  # steps: a well-separating encoder, and a near-collapsed "initial" one
M = 512
RADEMACHER = ClassComplexity(Estimate.exact(0.0), 0.0, "identity: one fixed function, Rad = 0", {})


@functools.cache
def _checkpoints(measure_train: bool = True) -> dict:
    """Two checkpoints evaluated as a run does: with the CURL objective and its training tuples."""
    objective = CURL(LOSSES["logistic"])
    train = draw_tuples(PREMISE_WORLD, M, make_generator(0, "train-tuples"))
    config = SMALL.model_copy(update={"negatives": [], "block_sizes": []})
    kwargs = dict(objective=objective, train_tuples=train) if measure_train else {}
    return {step: evaluate_encoder(Scaled(IdentityEncoder(), scale), PREMISE_WORLD, config, 0, **kwargs)
            for step, scale in ((POOR, 0.05), (GOOD, 1.0))}


def _theorems(training: Training, loss: str = "logistic", comparator="best", evaluations=None) -> dict:
    evaluations = _checkpoints() if evaluations is None else evaluations
    return theorem_checks(evaluations, PREMISE_WORLD.prior, training, loss, SMALL, BoundsConfig(comparator=comparator))


def _training(**change) -> Training:
    fields = dict(objective="curl", objective_loss="logistic", negatives=1, block_size=1, tuples=M,
                  complexity=RADEMACHER)
    return Training(**{**fields, **change})


def test_the_comparator_is_the_lowest_held_out_loss_or_the_named_step():
    evaluations = _checkpoints()
    held_out = {step: e.get("L_un", negatives=1).value for step, e in evaluations.items()}
    train = {step: e.get("L_pre_train").value for step, e in evaluations.items()}
    assert held_out[GOOD] < held_out[POOR] and train[GOOD] < train[POOR]  # the case is what it claims
    assert comparator_step(evaluations, "best") == GOOD
    assert comparator_step(evaluations, POOR) == POOR
    with pytest.raises(ValueError, match="bounds.comparator"):
        comparator_step(evaluations, 7)


def test_a_checkpoint_with_higher_empirical_loss_than_the_comparator_gets_no_verdict():
    out = _theorems(_training())
    assert set(out) == {POOR, GOOD}
    for check in out[POOR]:
        assert check.status == PREMISE_NOT_MET
        assert f"step {POOR}" in check.note and f"step {GOOD}" in check.note, check.note
        assert "higher empirical CURL loss" in check.note
        assert check.terms["comparator_step"].value == GOOD
        assert check.terms["L_hat_un"].value > check.terms["L_hat_un_comparator"].value
    for check in out[GOOD]:  # f̂ = f: the premise holds with equality, a verdict is given
        assert check.status in ("holds", "inconclusive", "violated") and check.note is None
        assert check.status != "violated", check
        assert check.term_notes["Rad_S"] == RADEMACHER.label
    assert [check.name for check in out[GOOD]] == ["theorem_4_1", "theorem_4_5"]


def test_a_named_comparator_with_higher_empirical_loss_leaves_every_premise_met():
    out = _theorems(_training(), comparator=POOR)
    for step, checks in out.items():
        for check in checks:
            assert check.status != PREMISE_NOT_MET, (step, check.note)
            assert check.terms["comparator_step"].value == POOR
    # f̂ = GOOD against f = POOR: the bound has a large margin, and the sides are of different encoders
    assert all(check.status == "holds" for check in out[GOOD])


@pytest.mark.parametrize("loss", ["hinge", "logistic"])
def test_gen_m_has_the_derived_constants_of_the_loss_and_says_whether_it_is_proven(loss):
    """Gen_M = c_rad·4√3·L·R·Rad_S/M + c_conf·2√2·Δ_ℓ(R)·sqrt(ln(1/δ)/M) (docs/theory.md, "Gen_M with
    explicit constants"); the identity's R is measured, so its note says the bound is not proven."""
    evaluations = _checkpoints()
    radius = max(e.get("R").value for e in evaluations.values())
    assert all(e.get("R").method == "empirical" for e in evaluations.values())
    complexity = ClassComplexity(Estimate.exact(40.0), 40.0, "a class with Rad_S = 40", {})
    training = _training(objective_loss=loss, complexity=complexity)
    delta_range = min(4 * radius**2, 1 + 2 * radius**2) if loss == "hinge" else 2 * radius**2 / math.log(2)
    rademacher = 4 * math.sqrt(3) * LIPSCHITZ[loss] * radius * 40.0 / M
    confidence = 2 * math.sqrt(2) * delta_range * math.sqrt(math.log(1 / 0.05) / M)
    for scale, note in ((1.0, "not a proven bound: R measured, not enforced"),
                        (0.5, "not a proven bound: derived constants scaled by 0.5 and 1; R measured, not enforced")):
        config = BoundsConfig(rademacher_constant=scale)
        out = theorem_checks(evaluations, PREMISE_WORLD.prior, training, loss, SMALL, config)
        for check in out[GOOD]:
            terms = check.terms
            # the same closed form from the same R, in another order: a few roundings, ≲ 1e-15 relative
            assert terms["rademacher_part"].value == pytest.approx(scale * rademacher, rel=1e-12)
            assert terms["confidence_part"].value == pytest.approx(confidence, rel=1e-12)
            assert terms["Gen_M"].value == pytest.approx(scale * rademacher + confidence, rel=1e-12)
            assert terms["loss_range"].value == pytest.approx(delta_range, rel=1e-12)
            assert check.term_notes["Gen_M"] == note
    assert gen_m_note(BoundsConfig()) == "rigorous upper bound for a class fixed in advance (derived constants)"
    assert gen_m_note(BoundsConfig(confidence_constant=2.0)).startswith("rigorous upper bound")
    assert gen_m_note(BoundsConfig(confidence_constant=0.0)).startswith("not a proven bound")


@pytest.mark.parametrize("change, loss, expected", [
    (dict(objective="simclr", objective_loss=None), "logistic", "objective 'simclr'"),
    (dict(objective_loss="hinge"), "logistic", "ℓ = hinge"),
    (dict(negatives=2), "logistic", "negatives = 2"),
    (dict(block_size=3), "logistic", "block_size = 3"),
    (dict(complexity=None), "logistic", "no Rademacher complexity"),
    (dict(), "hinge", "ℓ = logistic"),
])
def test_a_premise_that_fails_is_named_at_every_checkpoint(change, loss, expected):
    out = _theorems(_training(**change), loss=loss)
    for checks in out.values():
        assert len(checks) == 2
        for check in checks:
            assert check.status == PREMISE_NOT_MET
            assert expected in check.note, check.note
    if "complexity" in change:
        assert out[GOOD][0].terms["Gen_M"] == Estimate.exact(0.0)


def test_an_unmeasured_empirical_loss_is_a_premise_not_met():
    out = _theorems(_training(), evaluations=_checkpoints(measure_train=False))
    for checks in out.values():
        for check in checks:
            assert check.status == PREMISE_NOT_MET
            assert "not measured" in check.note
