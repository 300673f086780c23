"""The CURL loss against a slow loop written from THEORY.md section 3, in float64."""

import math

import pytest
import torch

from preadapt.objectives import CURL, curl_loss, encode_tuples, hinge, logistic
from preadapt.worlds import GaussianWorld, draw_tuples


def reference_curl(anchor, positives, negatives, loss_name):
    """One tuple at a time: margins f(x)ᵀ(mean f⁺ − mean f⁻_i), then ℓ by its formula."""
    out = []
    for n in range(anchor.shape[0]):
        pos = sum(positives[n, j] for j in range(positives.shape[1])) / positives.shape[1]
        margins = []
        for i in range(negatives.shape[1]):
            neg = sum(negatives[n, i, j] for j in range(negatives.shape[2])) / negatives.shape[2]
            margins.append(float(anchor[n] @ (pos - neg)))
        if loss_name == "hinge":
            out.append(max(0.0, 1.0 + max(-v for v in margins)))
        else:
            out.append(math.log2(1.0 + sum(math.exp(-v) for v in margins)))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("loss_name", ["hinge", "logistic"])
@pytest.mark.parametrize("k,b", [(1, 1), (3, 1), (1, 4), (5, 3)])
def test_curl_loss_matches_loop_reference(loss_name, k, b):
    g = torch.Generator().manual_seed(k * 10 + b)
    anchor = torch.randn(40, 6, generator=g, dtype=torch.float64)
    positives = torch.randn(40, b, 6, generator=g, dtype=torch.float64)
    negatives = torch.randn(40, k, b, 6, generator=g, dtype=torch.float64)
    loss = {"hinge": hinge, "logistic": logistic}[loss_name]
    ours = curl_loss(anchor, positives, negatives, loss)
    assert ours.shape == (40,)
    assert torch.allclose(ours, reference_curl(anchor, positives, negatives, loss_name), atol=1e-10, rtol=0)


@pytest.mark.parametrize("k", [1, 2, 7])
def test_collapsed_encoder_gives_loss_at_zero_margin(k):
    z = torch.full((5, 3), 0.7, dtype=torch.float64)
    pos, neg = z.view(5, 1, 3), z.view(5, 1, 1, 3).expand(5, k, 1, 3)
    assert torch.allclose(curl_loss(z, pos, neg, hinge), torch.ones(5, dtype=torch.float64))
    assert torch.allclose(curl_loss(z, pos, neg, logistic), torch.full((5,), math.log2(1 + k), dtype=torch.float64))


def test_logistic_is_stable_for_large_margins():
    v = torch.tensor([[-800.0], [800.0]], dtype=torch.float64)
    out = logistic(v)
    assert torch.isfinite(out).all()
    assert float(out[0]) == pytest.approx(800.0 / math.log(2.0))
    assert float(out[1]) == pytest.approx(0.0, abs=1e-300)


def test_module_encodes_in_one_pass_and_matches_the_function():
    world = GaussianWorld(torch.randn(4, 5, generator=torch.Generator().manual_seed(0)), noise=1.0)
    tuples = draw_tuples(world, 30, torch.Generator().manual_seed(1), negatives=2, block_size=3)
    encoder = torch.nn.Linear(5, 4)
    objective = CURL(hinge, negatives=2, block_size=3)
    encoded = encode_tuples(encoder, tuples, dtype=torch.float64)
    with torch.no_grad():
        direct = curl_loss(encoder(tuples.anchor).double(), encoder(tuples.positives).double(),
                           encoder(tuples.negatives).double(), hinge)
        # two float32 passes of Linear(5, 4) in different batch shapes (other kernels): a feature rounds
        # by ≤ 6·ε32·(Σ|w x| + |b|) ≲ 2e-6, so margins (d = 4, |f| ≲ 2.5) by ≲ 3e-5 per side, worst
        # case; the hinge is 1-Lipschitz. Seen: 1.3e-7; a wrong encoding moves losses by O(1).
        assert torch.allclose(objective(encoded), direct, atol=1e-4, rtol=0)


def test_bad_counts_are_refused():
    with pytest.raises(ValueError, match="negatives"):
        CURL(negatives=0)
