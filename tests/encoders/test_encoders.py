import pickle

import pytest
import torch

from preadapt.encoders import ENCODERS, IdentityEncoder, clip_norm
from preadapt.worlds.sampling import make_generator


@pytest.mark.parametrize("config", [
    {"kind": "linear", "out_dim": 3, "norm_bound": 0.5},
    {"kind": "mlp", "hidden": [8, 8], "out_dim": 4, "norm_bound": 2.0},
])
def test_learned_encoders_respect_the_norm_bound_and_the_generator(config):
    parsed = ENCODERS.parse(config)
    a = ENCODERS.build(parsed, (6,), make_generator(0, "encoder"))
    b = ENCODERS.build(parsed, (6,), make_generator(0, "encoder"))
    c = ENCODERS.build(parsed, (6,), make_generator(1, "encoder"))
    x = 50.0 * torch.randn(300, 6, generator=torch.Generator().manual_seed(0))
    out = a(x)
    assert out.shape == (300, config["out_dim"])
    # two float32 norms of d ≤ 4 entries and the clip's two roundings: ≤ (d + 4)·ε32/2 ≈ 5e-7
    assert float(out.detach().norm(dim=1).max()) <= config["norm_bound"] * (1 + 1e-6)
    assert torch.equal(out, b(x)) and not torch.equal(out, c(x))
    assert pickle.loads(pickle.dumps(parsed)) == parsed


def test_identity_has_no_bound():
    x = torch.randn(4, 2, 3)
    assert IdentityEncoder.norm_bound is None
    assert torch.equal(IdentityEncoder()(x), x.reshape(4, 6))


def test_clip_leaves_short_vectors_alone_and_keeps_direction():
    z = torch.tensor([[0.0, 0.0], [1.0, 1.0], [30.0, 40.0]])
    out = clip_norm(z, 5.0)
    assert torch.equal(out[:2], z[:2])
    assert torch.allclose(out[2], torch.tensor([3.0, 4.0]))
