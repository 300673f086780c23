"""The lookup-table encoder: equal keys share a row, distinct keys get their own rows (or spread by
the hash), fixed or learned tables, refusals of unkeyable inputs, and the conformance checks on the
hypercube world (tests/test_conformance.py runs them on token ids)."""

import itertools
import pickle

import pytest
import test_conformance as conformance
import torch
from pydantic import ValidationError

from preadapt.encoders import ENCODERS, LookupConfig, LookupEncoder
from preadapt.encoders.lookup import PRIME, input_keys
from preadapt.experiment.config import Config
from preadapt.worlds import WORLDS, HypercubeWorld
from preadapt.worlds.base import InputSpec
from preadapt.worlds.hypercube import pattern_classes, sign_patterns


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def build(input_shape, seed=0, **fields):
    config = ENCODERS.parse({"kind": "lookup", "out_dim": 4, "norm_bound": None, **fields})
    return ENCODERS.build(config, input_shape, seeded(seed))


def test_inputs_of_one_sign_pattern_share_a_vector():
    world = HypercubeWorld(6, 2)
    encoder = build((6,), buckets=16)  # 2^6 > 16: hashed
    labels = torch.tensor([5, 5, 5, 40, 40])
    x = world.sample(labels, seeded(0))  # different scales, same patterns
    assert not torch.equal(x[0], x[1])
    z = encoder(x)
    assert torch.equal(z[0], z[1]) and torch.equal(z[0], z[2]) and torch.equal(z[3], z[4])
    ids = torch.tensor([[3, 1, 4, 0], [3, 1, 4, 0], [4, 1, 3, 0]])
    z = build((4,), buckets=1000)(ids)
    assert torch.equal(z[0], z[1]) and not torch.equal(z[0], z[2])


def test_a_table_with_a_row_per_pattern_gives_every_pattern_its_own_row():
    dim = 4
    encoder = build((dim,), buckets=2**dim)
    patterns = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=dim)))  # all 16
    rows = encoder.rows(0.5 * patterns)
    assert torch.equal(rows, pattern_classes(patterns))  # the key is the pattern's class id
    assert torch.equal(torch.sort(rows).values, torch.arange(2**dim))  # a bijection: no two patterns share a row
    z = encoder(patterns)
    assert torch.equal(z, encoder.table[rows])  # unclipped: exactly the rows
    # the rows are the generator's i.i.d. N(0, 1) draws, in order (nn.Embedding's start)
    assert torch.equal(encoder.table, torch.randn(2**dim, 4, generator=seeded(0)))


def test_keys_of_real_inputs_are_the_hypercube_class_ids():
    world = HypercubeWorld(12, 3)
    labels = torch.randint(0, world.classes, (500,), generator=seeded(0))
    assert torch.equal(input_keys(world.sample(labels, seeded(1))), labels)
    assert torch.equal(input_keys(sign_patterns(labels, 12).view(500, 3, 4)), labels)  # flattened in order


def test_hashed_rows_spread_patterns_that_share_their_first_signs():
    # key mod buckets would send every pattern with the same first 16 signs to one row; the universal
    # hash spreads the 256 patterns that differ only in their last 8 signs over the table
    encoder = build((24,), buckets=2**16)
    classes = torch.arange(256) << 16 | 0b1011_0110_0101_1100
    rows = encoder.rows(sign_patterns(classes, 24))
    assert rows.min() >= 0 and rows.max() < 2**16
    assert rows.unique().numel() >= 250  # 256²/2/2^16 ≈ 0.5 colliding pairs expected
    # many random keys: colliding pairs ≈ n²/(2·buckets), a Poisson count
    keys = torch.randint(0, 2**24, (3000,), generator=seeded(1)).unique()
    rows = encoder.rows(sign_patterns(keys, 24))
    pairs = int((torch.bincount(rows, minlength=2**16) * (torch.bincount(rows, minlength=2**16) - 1) // 2).sum())
    expected = keys.numel() ** 2 / 2 / 2**16  # ≈ 69
    assert abs(pairs - expected) < 6 * expected**0.5
    # another seed, another hash
    assert not torch.equal(rows, build((24,), seed=1, buckets=2**16).rows(sign_patterns(keys, 24)))
    assert 1 <= encoder.multiplier < PRIME and 0 <= encoder.offset < PRIME


def test_token_rows_are_keyed_by_the_whole_row():
    ids = torch.tensor([[3, 1, 4], [3, 1, 4], [4, 1, 3], [3, 1, 5], [0, 0, 0]])
    keys = input_keys(ids)
    assert keys[0] == keys[1] and keys.unique().numel() == 4
    assert keys[4] == 0  # padding only
    expected = (3 + 1 * 1_000_003 + 4 * 1_000_003**2) % PRIME  # base 1 000 003, first id least significant
    assert int(keys[0]) == expected


def test_fixed_and_learned_tables():
    fixed = build((6,), trainable=False)
    learned = build((6,), trainable=True)
    assert not list(fixed.parameters()) and "table" in dict(fixed.named_buffers())
    assert torch.equal(fixed.table, learned.table)  # the same start from the same generator
    assert "table" in fixed.state_dict() and "table" in learned.state_dict()
    x = HypercubeWorld(6, 2).sample(torch.tensor([3, 3, 9]), seeded(0))
    learned(x).sum().backward()
    touched = learned.table.grad.abs().sum(dim=1) > 0
    assert set(touched.nonzero().flatten().tolist()) == set(learned.rows(x).tolist())  # only the rows used


def test_inputs_without_a_sign_are_refused():
    encoder = build((3,))
    with pytest.raises(ValueError, match="lookup: real inputs are keyed by their sign pattern and must have no entry 0 "
                                         "or NaN; row 1 has one"):
        encoder(torch.tensor([[1.0, -1.0, 1.0], [1.0, 0.0, -1.0]]))
    with pytest.raises(ValueError, match="row 0 has one"):
        encoder(torch.tensor([[float("nan"), -1.0, 1.0]]))


def test_check_input_refuses_unkeyable_worlds_in_one_line():
    config = LookupConfig()
    with pytest.raises(ValueError) as error:
        config.check_input(WORLDS.parse({"kind": "gaussian", "dim": 16}).input_spec)
    assert str(error.value) == ("kind: lookup needs inputs with a finite set of keys (sign patterns, as a hypercube "
                                "world's, or token ids); the world gives float32 inputs of shape (16,)")
    with pytest.raises(ValueError, match="^kind: lookup needs"):
        config.check_input(WORLDS.parse({"kind": "finite"}).input_spec)  # real images
    config.check_input(WORLDS.parse({"kind": "hypercube", "dim": 8, "task_dim": 3}).input_spec)
    config.check_input(WORLDS.parse({"kind": "topics", "vocab": 30}).input_spec)
    config.check_input(InputSpec((5,), torch.int64))  # ids of unknown vocabulary


def test_a_run_config_refuses_lookup_on_a_gaussian_world():
    with pytest.raises(ValidationError) as error:
        Config.model_validate({"world": {"kind": "gaussian"}, "encoder": {"kind": "lookup"}})
    (problem,) = error.value.errors()
    assert problem["msg"].startswith("Value error, encoder.kind: lookup needs inputs with a finite set of keys")
    Config.model_validate({"world": {"kind": "hypercube", "dim": 8, "task_dim": 3}, "encoder": {"kind": "lookup"}})


def test_config_fields_are_validated():
    with pytest.raises(ValidationError, match="buckets"):
        LookupConfig(buckets=0)
    with pytest.raises(ValidationError, match="out_dim"):
        LookupConfig(out_dim=0)


# ---- the conformance suite's encoder checks, on the world the encoder was made for

@pytest.fixture(params=[{"trainable": True, "buckets": 64}, {"trainable": False, "buckets": 8}],
                ids=["learned-row-per-pattern", "fixed-hashed"])
def hypercube_case(request):
    config = ENCODERS.parse({"kind": "lookup", "out_dim": 3, "norm_bound": 0.5, **request.param})
    world = HypercubeWorld(5, 2)
    inputs = world.sample(torch.arange(world.classes), seeded(1))  # (32, 5): every pattern once
    return config, world, inputs


def test_conformance_on_the_hypercube(hypercube_case):
    config, world, inputs = hypercube_case
    config.check_input(WORLDS.parse({"kind": "hypercube", "dim": 5, "task_dim": 2}).input_spec)
    conformance.test_encoder_output_shape(hypercube_case)
    conformance.test_encoder_is_deterministic_under_its_generator(hypercube_case)
    conformance.test_encoder_float64_agrees_with_float32(hypercube_case)
    conformance.test_encoder_respects_its_norm_bound(hypercube_case)
    if config.trainable:
        conformance.test_encoder_gradients_are_finite(hypercube_case)
    encoder = conformance.build_encoder(config, world, 0)
    assert torch.equal(pickle.loads(pickle.dumps(encoder))(inputs), encoder(inputs))
    assert not torch.equal(encoder(inputs), conformance.build_encoder(config, world, 1)(inputs))  # the generator is used
    assert isinstance(encoder, LookupEncoder)
