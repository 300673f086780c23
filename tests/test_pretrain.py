"""The training loop's divergence check: exact verdicts through its fast path ([pretrain.py])."""

import pytest
import torch
from torch import nn

from preadapt.objectives import OBJECTIVES
from preadapt.pretrain import DivergenceError, PretrainConfig, pretrain
from preadapt.worlds import GaussianWorld, draw_tuples


def _setup(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    world = GaussianWorld(torch.eye(4) * 3.0, noise=1.0)
    tuples = draw_tuples(world, 64, g, negatives=1)
    torch.manual_seed(seed)
    encoder = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    objective = OBJECTIVES.build(OBJECTIVES.parse({"kind": "curl", "loss": "logistic", "negatives": 1}))
    config = PretrainConfig(tuples=64, epochs=2, batch_size=16, checkpoints=[])
    return encoder, objective, tuples, config


def test_a_nan_gradient_stops_training_and_names_the_gradient():
    encoder, objective, tuples, config = _setup()
    encoder[2].bias.register_hook(lambda grad: torch.full_like(grad, float("nan")))
    with pytest.raises(DivergenceError) as error:
        pretrain(encoder, objective, tuples, config, torch.Generator().manual_seed(0))
    assert error.value.step == 1 and "gradient" in error.value.reason and "2.bias" in error.value.reason


def test_an_infinite_gradient_in_one_entry_is_caught():
    encoder, objective, tuples, config = _setup()

    def one_inf(grad):
        grad = grad.clone()
        grad.view(-1)[3] = float("inf")
        return grad

    encoder[0].weight.register_hook(one_inf)
    with pytest.raises(DivergenceError) as error:
        pretrain(encoder, objective, tuples, config, torch.Generator().manual_seed(0))
    assert "gradient in 0.weight" in error.value.reason


def _with_spare(encoder: nn.Module, value: float) -> nn.Module:
    """The encoder with a trainable parameter the forward pass never uses: its gradient stays None,
    so Adam leaves it as it is and only the parameter check sees it."""
    encoder.spare = nn.Parameter(torch.zeros(16))
    with torch.no_grad():
        encoder.spare[0] = value
        encoder.spare[1:] = 1e30 if value == value and abs(value) != float("inf") else 0.0
    return encoder


def test_huge_finite_parameters_overflow_the_fast_norm_but_do_not_stop_training():
    # entries of 1e30 in float32: every entry is finite, but their 2-norm (1e30 · 4) overflows
    # float32's 3.4e38, so the fast path's sum is infinite and the exact per-tensor check decides
    encoder, objective, tuples, config = _setup()
    encoder = _with_spare(encoder, 1e30)
    assert not bool(torch.isfinite(torch.stack(torch._foreach_norm([encoder.spare.detach()])).sum()))
    history = pretrain(encoder, objective, tuples, config, torch.Generator().manual_seed(0))
    assert len(history.epoch_losses) == 2 and encoder.spare.grad is None
    assert bool(torch.isfinite(encoder.spare).all())


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_a_non_finite_parameter_stops_training_and_names_the_parameter(value):
    encoder, objective, tuples, config = _setup()
    encoder = _with_spare(encoder, value)
    with pytest.raises(DivergenceError) as error:
        pretrain(encoder, objective, tuples, config, torch.Generator().manual_seed(0))
    assert error.value.step == 1 and error.value.reason == "non-finite parameter in spare"
