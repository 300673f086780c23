"""The contract every adapter keeps, as one function a contributor (or a user with an adapter of
their own) runs on a config: ``check_adapter`` (the conformance suite runs it on every registered
kind, tests/test_conformance_adapt.py; docs/extending.md shows it on a new adapter).

Checks: the config pickles and round-trips through ``ADAPTERS.parse`` and JSON; built with an
``evaluate`` section, the adapter fits P tasks (few-shot, and the fit of L*_adapt) and scores them
as (P, n, K) finite float64; the same fit whatever torch's global seed is (an adapter draws only
from ``AdaptTask.generator``); the encoder it was given is left unchanged; chosen hyperparameters
are finite floats; ``encoder_change`` is empty for a frozen-feature adapter and stacked over tasks
for one that trains the encoder.
"""

from __future__ import annotations

import json
import math
import pickle

import torch

from preadapt.adapt import ADAPTERS
from preadapt.adapt.base import AdapterConfig, AdaptTask, TaskPoints
from preadapt.encoders import ENCODERS
from preadapt.objectives.losses import LOSSES
from preadapt.worlds import WORLDS


class AdapterContractError(AssertionError):
    """An adapter breaks the contract of ``preadapt.adapt.base``; the message says which part."""


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def example_task(star: bool, tasks: int = 3, classes: int = 2, per_class: int = 6) -> AdaptTask:
    """``tasks`` tasks of ``classes`` classes of a small Gaussian world, ``per_class`` points per class
    for training and for validation, encoded by a linear encoder; inputs kept."""
    world = WORLDS.build(WORLDS.parse({"kind": "gaussian", "classes": 4, "dim": 5}), _seeded(0))
    encoder = ENCODERS.build(ENCODERS.parse({"kind": "linear", "out_dim": 3}), world.input_shape, _seeded(1))
    chosen = torch.stack([torch.randperm(world.classes, generator=_seeded(10 + p))[:classes] for p in range(tasks)])
    labels = torch.arange(classes).repeat_interleave(per_class).expand(tasks, classes * per_class)

    def points(seed: int) -> TaskPoints:
        x = world.sample(chosen.gather(1, labels).reshape(-1), _seeded(seed))
        with torch.no_grad():
            features = encoder(x).double().view(tasks, classes * per_class, -1)
        return TaskPoints(features, labels, x.view(tasks, classes * per_class, -1))

    train, validation = points(2), points(3)
    reference = train.features.view(tasks, classes, per_class, -1).mean(2)  # W^μ̂ of each task's own points
    return AdaptTask(train, validation, classes, encoder, reference, LOSSES["logistic"], star, _seeded(4))


def check_adapter(config: AdapterConfig, evaluate) -> None:
    """Raise ``AdapterContractError`` naming the first part of the contract ``config``'s adapter breaks.

    ``config``: a parsed adapter config (``ADAPTERS.parse({"kind": ...})``); ``evaluate``: the
    ``EvaluateConfig`` it is built with (``preadapt.estimate.EvaluateConfig()`` for the defaults).
    """

    def require(condition: bool, message: str) -> None:
        if not condition:
            raise AdapterContractError(f"adapter {config.kind!r}: {message}")

    require(pickle.loads(pickle.dumps(config)) == config, "its config does not survive pickling")
    require(ADAPTERS.parse(config.model_dump()) == config, "its config does not round-trip through ADAPTERS.parse")
    require(ADAPTERS.parse(json.loads(config.model_dump_json())) == config, "its config does not round-trip through JSON")
    for star in (False, True):
        task = example_task(star)
        before = {name: value.clone() for name, value in task.encoder.state_dict().items()}
        adapter = ADAPTERS.build(config, evaluate)
        adapted = adapter.fit(task)
        scores = adapted.scores(task.validation)
        require(tuple(scores.shape) == (3, 12, 2), f"scores have shape {tuple(scores.shape)}; expected (P, n, K) = (3, 12, 2)")
        require(scores.dtype == torch.float64 and bool(torch.isfinite(scores).all()), "scores must be finite float64")
        require(all(torch.equal(value, before[name]) for name, value in task.encoder.state_dict().items()),
                "it changed the encoder it was given (copy it before training)")
        require(all(isinstance(v, float) and math.isfinite(v) for v in adapted.chosen.values()),
                f"chosen must map names to finite floats; got {adapted.chosen}")
        changes = adapted.encoder_change()
        if adapter.trains_encoder:
            require(bool(changes) and all(delta.shape[0] == 3 for delta in changes.values()),
                    "an adapter that trains the encoder reports its changes stacked over tasks (encoder_change)")
        else:
            require(changes == {}, "a frozen-feature adapter changed no encoder parameter (encoder_change must be empty)")

    def seeded_scores(global_seed: int) -> torch.Tensor:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(global_seed)
            task = example_task(False)
            return ADAPTERS.build(config, evaluate).fit(task).scores(task.validation)

    require(torch.equal(seeded_scores(1), seeded_scores(2)),
            "its fit depends on torch's global seed (draw only from AdaptTask.generator)")
