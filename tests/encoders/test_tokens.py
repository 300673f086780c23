import copy
import pickle

import pytest
import torch
from pydantic import ValidationError

from preadapt.encoders import ENCODERS, BagOfWordsEncoder, GRUEncoder
from preadapt.worlds.sampling import make_generator

VOCAB, LENGTH = 30, 9
KINDS = ["bow", "gru"]
# Two float32 computations of the same features (another dtype, another batch shape or padding, so
# other kernels) differ by their rounding: each of the ≤ 9 steps takes dot products of ≤ e + h = 13
# terms, ≲ √13·ε32 ≈ 4e-7 of |h| ≲ 1 typically, adding up over the steps to ≲ 4e-6. Seen: ≤ 7e-8.
FLOAT32_ATOL = 1e-5


def build(kind, seed=0, **fields):
    config = ENCODERS.parse({"kind": kind, "vocab": VOCAB, "embed_dim": 6, "out_dim": 4, "norm_bound": 0.5,
                             **({"hidden": 7} if kind == "gru" else {}), **fields})
    return ENCODERS.build(config, (LENGTH,), make_generator(seed, "encoder"))


def sentences(n=32, seed=0):
    """(n, L) ids: row i has lengths[i] ∈ [0, L] tokens from [1, VOCAB), then padding; row 0 is all padding."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, LENGTH + 1, (n,), generator=generator)
    lengths[0], lengths[1] = 0, LENGTH
    ids = torch.randint(1, VOCAB, (n, LENGTH), generator=generator)
    return ids * (torch.arange(LENGTH) < lengths[:, None])


def clip(z, bound):
    return z * min(1.0, bound / float(z.norm()))


def bow_reference(encoder: BagOfWordsEncoder, ids: torch.Tensor) -> torch.Tensor:
    """One row at a time: the mean of the embeddings of the non-zero ids (zero when there are none)."""
    rows = []
    for row in ids.tolist():
        tokens = [t for t in row if t != 0]
        mean = (sum(encoder.embedding.weight[t] for t in tokens) / len(tokens) if tokens
                else torch.zeros(encoder.embedding.embedding_dim))
        rows.append(clip(encoder.head.weight @ mean + encoder.head.bias, encoder.norm_bound))
    return torch.stack(rows)


def gru_reference(encoder: GRUEncoder, tokens: list[int]) -> torch.Tensor:
    """PyTorch's GRU equations stepped by hand over one sentence, in float64, from h_0 = 0:
    r = σ(W_ir x + b_ir + W_hr h + b_hr), z = σ(W_iz x + b_iz + W_hz h + b_hz),
    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)), h ← (1 − z) ⊙ n + z ⊙ h."""
    gru = encoder.gru
    w_ih, w_hh, b_ih, b_hh = (p.detach().double() for p in (gru.weight_ih_l0, gru.weight_hh_l0,
                                                             gru.bias_ih_l0, gru.bias_hh_l0))
    h = torch.zeros(gru.hidden_size, dtype=torch.float64)
    for token in tokens:
        x = encoder.embedding.weight[token].detach().double()
        gi_r, gi_z, gi_n = (w_ih @ x + b_ih).chunk(3)
        gh_r, gh_z, gh_n = (w_hh @ h + b_hh).chunk(3)
        r, z = torch.sigmoid(gi_r + gh_r), torch.sigmoid(gi_z + gh_z)
        h = (1 - z) * torch.tanh(gi_n + r * gh_n) + z * h
    return clip(encoder.head.weight.detach().double() @ h + encoder.head.bias.detach().double(), encoder.norm_bound)


@pytest.mark.parametrize("kind", KINDS)
def test_shape_and_norm_bound(kind):
    encoder = build(kind, norm_bound=0.2)
    out = encoder(sentences())
    norms = out.detach().norm(dim=1)
    assert out.shape == (32, 4) and encoder.norm_bound == 0.2
    # two float32 norms of d = 4 entries and the clip's two roundings: ≤ (d + 4)·ε32/2 ≈ 5e-7
    assert float(norms.max()) <= 0.2 * (1 + 1e-6)
    assert float(norms.max()) >= 0.2 * (1 - 1e-6)  # the clip was exercised


@pytest.mark.parametrize("kind", KINDS)
def test_the_generator_fixes_parameters_and_outputs(kind):
    a, b, c = build(kind, seed=0), build(kind, seed=0), build(kind, seed=1)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    ids = sentences()
    assert torch.equal(a(ids), b(ids)) and not torch.equal(a(ids), c(ids))


@pytest.mark.parametrize("kind", KINDS)
def test_initialisation_leaves_the_global_rng_alone(kind):
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    build(kind)
    assert torch.equal(torch.rand(3), before)


@pytest.mark.parametrize("kind", KINDS)
def test_padding_rows_are_zero_and_stay_untrained(kind):
    encoder = build(kind)
    assert torch.equal(encoder.embedding.weight[0], torch.zeros(6))
    encoder(sentences()).square().sum().backward()
    assert torch.equal(encoder.embedding.weight.grad[0], torch.zeros(6))


@pytest.mark.parametrize("kind", KINDS)
def test_float64_agrees_with_float32(kind):
    encoder = build(kind, norm_bound=None)
    ids = sentences()
    torch.testing.assert_close(copy.deepcopy(encoder).double()(ids), encoder(ids).double(), atol=FLOAT32_ATOL, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_are_finite(kind):
    encoder = build(kind)
    encoder(sentences()).square().sum().backward()
    for name, parameter in encoder.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


@pytest.mark.parametrize("kind", KINDS)
def test_appending_padding_leaves_features_unchanged(kind):
    encoder = build(kind)
    ids = sentences()
    padded = torch.cat([ids, torch.zeros(32, 5, dtype=torch.long)], dim=1)  # (n, L + 5)
    trimmed = ids[:, :4] * (ids[:, 4:] == 0).all(dim=1, keepdim=True)  # rows of ≤ 4 tokens, cut to L = 4
    short = (ids[:, 4:] == 0).all(dim=1)
    torch.testing.assert_close(encoder(padded), encoder(ids), atol=FLOAT32_ATOL, rtol=0)
    torch.testing.assert_close(encoder(trimmed)[short], encoder(ids)[short], atol=FLOAT32_ATOL, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_all_padding_rows_give_the_clipped_bias(kind):
    encoder = build(kind, norm_bound=None)
    for ids in (torch.zeros(3, LENGTH, dtype=torch.long), torch.zeros(3, 0, dtype=torch.long)):
        torch.testing.assert_close(encoder(ids), encoder.head.bias.detach().expand(3, 4))


@pytest.mark.parametrize("kind", KINDS)
def test_out_of_vocabulary_ids_are_a_clear_error(kind):
    encoder = build(kind)
    with pytest.raises(ValueError, match=rf"\[0, {VOCAB}\); got ids up to {VOCAB}\. Set encoder\.vocab to at least"):
        encoder(torch.tensor([[1, VOCAB, 0]]))
    with pytest.raises(ValueError, match="down to -1"):
        encoder(torch.tensor([[1, -1, 0]]))
    with pytest.raises(ValueError, match="integer token ids"):
        encoder(torch.tensor([[1.0, 2.0]]))


@pytest.mark.parametrize("kind", KINDS)
def test_non_sequence_inputs_are_a_clear_error(kind):
    with pytest.raises(ValueError, match=r"shape \(L,\).*\(3, 4\)"):
        ENCODERS.build(ENCODERS.parse({"kind": kind, "vocab": VOCAB}), (3, 4), make_generator(0, "encoder"))


@pytest.mark.parametrize("kind", KINDS)
def test_config_and_module_round_trip(kind):
    config = ENCODERS.parse({"kind": kind, "vocab": 50, "embed_dim": 3, "out_dim": 2, "norm_bound": 1.5})
    assert ENCODERS.parse(config.model_dump()) == config
    assert pickle.loads(pickle.dumps(config)) == config
    encoder = build(kind)
    ids = sentences()
    assert torch.equal(pickle.loads(pickle.dumps(encoder))(ids), encoder(ids))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fields", [{}, {"vocab": 1}, {"vocab": 10, "embed_dim": 0}])
def test_vocab_is_required_and_fields_are_bounded(kind, fields):
    with pytest.raises(ValidationError, match="vocab|embed_dim"):
        ENCODERS.parse({"kind": kind, **fields})


def test_bow_matches_a_loop_over_rows():
    encoder = build("bow")
    ids = sentences(seed=3)
    with torch.no_grad():
        torch.testing.assert_close(encoder(ids), bow_reference(encoder, ids))


def test_bow_ignores_token_order():
    encoder = build("bow")
    ids = sentences()
    reversed_ = torch.stack([torch.cat([row[row != 0].flip(0), row[row == 0]]) for row in ids])
    torch.testing.assert_close(encoder(reversed_), encoder(ids))


def test_gru_matches_the_recurrence_stepped_by_hand():
    encoder = build("gru")
    ids = sentences(seed=4)
    with torch.no_grad():
        out32, out64 = encoder(ids), copy.deepcopy(encoder).double()(ids)
    for i, row in enumerate(ids.tolist()):
        expected = gru_reference(encoder, [t for t in row if t != 0])
        torch.testing.assert_close(out32[i].double(), expected, atol=FLOAT32_ATOL, rtol=0)
        # float64: the same bound with ε = 2.2e-16, ≲ 1e-14
        torch.testing.assert_close(out64[i], expected, atol=1e-12, rtol=0)


def test_gru_depends_on_token_order():
    encoder = build("gru")
    ids = torch.tensor([[3, 1, 4, 1, 5], [5, 1, 4, 1, 3]])
    out = encoder(ids)
    assert not torch.allclose(out[0], out[1])


def test_gru_refuses_padding_inside_a_sentence():
    with pytest.raises(ValueError, match="row 1 has a token after padding"):
        build("gru")(torch.tensor([[3, 1, 0], [3, 0, 1]]))
