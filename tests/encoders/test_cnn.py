import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from preadapt.encoders import ENCODERS, CNNEncoder
from preadapt.worlds.sampling import make_generator

SHAPES = [(8, 8), (1, 8, 8), (3, 32, 32)]  # scikit-learn's digits (with and without a channel axis), CIFAR-sized


def build(input_shape, seed=0, **fields):
    config = ENCODERS.parse({"kind": "cnn", "widths": [4, 8], "out_dim": 5, "norm_bound": 0.5, **fields})
    return ENCODERS.build(config, input_shape, make_generator(seed, "encoder"))


def images(input_shape, n=16, seed=0, scale=1.0):
    return scale * torch.randn(n, *input_shape, generator=torch.Generator().manual_seed(seed))


def reference(encoder: CNNEncoder, x: torch.Tensor) -> torch.Tensor:
    """The documented architecture written out with torch.nn.functional: (3×3 same conv, ReLU, 2×2 max-pool)
    per block, global average pooling, linear head, norm clip."""
    h = x.reshape(x.shape[0], -1, *x.shape[-2:])  # (n, C, H, W)
    for conv in [m for m in encoder.features if isinstance(m, torch.nn.Conv2d)]:
        h = F.max_pool2d(F.relu(F.conv2d(h, conv.weight, conv.bias, padding=1)), 2)
    z = F.linear(h.mean(dim=(2, 3)), encoder.head.weight, encoder.head.bias)
    return z * torch.clamp(encoder.norm_bound / z.norm(dim=1, keepdim=True), max=1.0)


@pytest.mark.parametrize("input_shape", SHAPES)
def test_shape_and_norm_bound(input_shape):
    encoder = build(input_shape)
    out = encoder(images(input_shape, scale=50.0))
    norms = out.detach().norm(dim=1)
    assert out.shape == (16, 5)
    assert encoder.norm_bound == 0.5
    # two float32 norms of d = 5 entries and the clip's two roundings: ≤ (d + 4)·ε32/2 ≈ 5.4e-7
    assert float(norms.max()) <= 0.5 * (1 + 1e-6)
    assert float(norms.max()) >= 0.5 * (1 - 1e-6)  # the clip was exercised


@pytest.mark.parametrize("input_shape", SHAPES)
def test_matches_the_functional_reference(input_shape):
    encoder = build(input_shape, norm_bound=0.05)
    x = images(input_shape)
    torch.testing.assert_close(encoder(x), reference(encoder, x))


@pytest.mark.parametrize("input_shape", SHAPES)
def test_without_autograd_the_outputs_are_the_same_bits(input_shape):
    """The max-pool's fast path (no gradient needed) gives the very outputs of the module's own pooling."""
    encoder = build(input_shape)
    x = images(input_shape, n=64)
    with torch.no_grad():
        fast = encoder(x)
    slow = encoder(x)  # the parameters need gradients: the module's own pooling
    assert slow.requires_grad and torch.equal(fast, slow.detach())


def test_the_pooling_s_gradient_is_torch_s_on_tied_maxima():
    """With autograd the module's own max-pool runs: a window's gradient goes to one of its tied maxima
    (here every window ties), as F.max_pool2d's, not split between them."""
    from preadapt.encoders.cnn import MaxPool2x2

    x = torch.ones(2, 3, 4, 6, requires_grad=True)
    MaxPool2x2()(x).sum().backward()
    y = torch.ones(2, 3, 4, 6, requires_grad=True)
    F.max_pool2d(y, 2).sum().backward()
    assert torch.equal(x.grad, y.grad) and set(x.grad.unique().tolist()) == {0.0, 1.0}
    nan = torch.zeros(1, 1, 2, 2)
    nan[0, 0, 1, 1] = float("nan")
    with torch.no_grad():
        assert torch.isnan(MaxPool2x2()(nan)).all() and torch.isnan(F.max_pool2d(nan, 2)).all()


def test_the_generator_fixes_parameters_and_outputs():
    a, b, c = build((8, 8), seed=0), build((8, 8), seed=0), build((8, 8), seed=1)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    x = images((8, 8))
    assert torch.equal(a(x), b(x)) and not torch.equal(a(x), c(x))


def test_initialisation_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    build((3, 32, 32))
    assert torch.equal(torch.rand(3), before)


@pytest.mark.parametrize("input_shape", [(8, 8), (3, 32, 32)])
def test_float64_agrees_with_float32(input_shape):
    encoder = build(input_shape, norm_bound=None)
    x = images(input_shape)
    # float32 rounding of two conv layers (fan-in ≤ 36: ≲ √36·ε32 ≈ 7e-7 of |h| ≲ 1 each), the pooling
    # and the head: ≲ 3e-6 typically; seen ≤ 7e-8
    torch.testing.assert_close(copy.deepcopy(encoder).double()(x.double()), encoder(x).double(), atol=1e-5, rtol=0)


def test_gradients_are_finite():
    encoder = build((3, 32, 32))
    encoder(images((3, 32, 32), scale=50.0)).square().sum().backward()
    for name, parameter in encoder.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


def test_an_image_too_small_for_the_pooling_stages_is_a_clear_error():
    build((8, 8), widths=[2, 2, 2])  # 8 → 4 → 2 → 1: three stages fit
    with pytest.raises(ValueError, match=r"8×8 image allows at most 3"):
        build((8, 8), widths=[2, 2, 2, 2])
    with pytest.raises(ValueError, match=r"5×32 image allows at most 2"):
        build((3, 5, 32), widths=[2, 2, 2])


def test_non_image_inputs_are_a_clear_error():
    with pytest.raises(ValueError, match=r"\(C, H, W\) or \(H, W\).*\(64,\)"):
        build((64,))
    with pytest.raises(ValueError, match=r"expected inputs of shape \(n, 1, 8, 8\)"):
        build((1, 8, 8))(images((8, 8)))


@pytest.mark.parametrize("widths", [[], [4, 0]])
def test_widths_are_validated(widths):
    with pytest.raises(ValidationError, match="widths"):
        ENCODERS.parse({"kind": "cnn", "widths": widths})


def test_config_and_module_round_trip():
    config = ENCODERS.parse({"kind": "cnn", "widths": [3], "out_dim": 2, "norm_bound": 1.5})
    assert ENCODERS.parse(config.model_dump()) == config
    assert pickle.loads(pickle.dumps(config)) == config
    assert ENCODERS.parse({"kind": "cnn"}).widths == [16, 32]
    encoder = build((8, 8))
    x = images((8, 8))
    assert torch.equal(pickle.loads(pickle.dumps(encoder))(x), encoder(x))
