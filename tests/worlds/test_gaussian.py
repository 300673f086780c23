import numpy as np
import pytest
import torch
from pydantic import ValidationError

from preadapt.worlds import WORLDS, GaussianWorld, GaussianWorldConfig
from preadapt.worlds.sampling import make_generator


def test_class_conditional_moments_without_warp():
    means = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])
    world = GaussianWorld(means, noise=0.7)
    labels = torch.tensor([1]).repeat(50000)
    x = world.sample(labels, torch.Generator().manual_seed(0)).double()
    se = 0.7 / np.sqrt(50000)
    assert torch.allclose(x.mean(0), means[1].double(), atol=5 * se)
    cov = torch.cov(x.T)
    assert torch.allclose(cov, 0.49 * torch.eye(3, dtype=torch.float64), atol=0.02)


def test_generated_world_is_deterministic_and_separated():
    config = GaussianWorldConfig(classes=30, dim=64, separation=3.0, warp=False)
    a = WORLDS.build(config, make_generator(0, "world"))
    b = WORLDS.build(config, make_generator(0, "world"))
    assert torch.equal(a.means, b.means)
    distances = torch.cdist(a.means, a.means)[~torch.eye(30, dtype=bool)]
    assert float(distances.mean()) == pytest.approx(3.0, rel=0.1)


def test_warp_is_fixed_nonlinear_and_seeded():
    config = GaussianWorldConfig(classes=3, dim=4, warp=True)
    world = WORLDS.build(config, make_generator(0, "world"))
    other = WORLDS.build(config, make_generator(1, "world"))
    z = torch.randn(200, 4, generator=torch.Generator().manual_seed(0))
    warped = world.warp(z)
    assert torch.equal(warped, world.warp(z))
    assert not torch.allclose(warped, other.warp(z))
    # not affine: the best affine fit leaves a residual
    design = torch.cat([z, torch.ones(200, 1)], 1)
    solution = torch.linalg.lstsq(design, warped).solution
    assert float((design @ solution - warped).pow(2).mean()) > 1e-3


def test_explicit_means_set_classes_and_dim():
    config = GaussianWorldConfig(means=[[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]], prior=[1, 1, 2])
    assert (config.classes, config.dim) == (3, 2)
    assert config.warp is False  # explicit means are used as given unless a warp is asked for
    assert GaussianWorldConfig(means=[[0.0], [1.0]], warp=True).warp is True
    world = WORLDS.build(config, make_generator(0, "world"))
    assert world.prior.tolist() == [0.25, 0.25, 0.5]


@pytest.mark.parametrize("bad", [
    {"classes": 1}, {"noise": -1.0}, {"separation": 0.0}, {"prior": "zipf"}, {"prior": [1.0, 2.0]},
    {"means": [[0.0], [1.0, 2.0]]}, {"prior": {"zipf": -1.0}}, {"colour": "red"},
])
def test_bad_world_configs_are_refused(bad):
    with pytest.raises(ValidationError):
        GaussianWorldConfig(**{"classes": 3, **bad})
