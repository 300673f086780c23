"""Latent-class worlds: the world protocol, built-in worlds and the contrastive sampler."""

from preadapt.registry import Registry
from preadapt.worlds.base import World
from preadapt.worlds.datasets import DatasetError, load_fashion_mnist, wordnet_glosses
from preadapt.worlds.finite import (SPLITS, FiniteWorld, FiniteWorldConfig, build_finite_world, split_assignment,
                                    split_of, wordnet_world)
from preadapt.worlds.gaussian import GaussianWorld, GaussianWorldConfig, build_gaussian_world
from preadapt.worlds.hypercube import HypercubeConfig, HypercubeTaskWorld, HypercubeWorld, build_hypercube_world
from preadapt.worlds.prior import as_prior, tau, tau_k
from preadapt.worlds.sampling import Tuples, draw_tuples, sample_distinct_pairs, sample_per_class, sample_tasks
from preadapt.worlds.tasks import TASKS, SubspaceTaskConfig, TaskConfig, TaskViews, derive_task, register_task
from preadapt.worlds.topics import TopicWorld, TopicWorldConfig, build_topic_world

WORLDS = Registry("world")
WORLDS.register("gaussian", build_gaussian_world, GaussianWorldConfig)
WORLDS.register("topics", build_topic_world, TopicWorldConfig)
WORLDS.register("finite", build_finite_world, FiniteWorldConfig)
WORLDS.register("hypercube", build_hypercube_world, HypercubeConfig)


def register_world(name: str, factory, params=None) -> None:
    """Make ``kind: name`` usable in configs: ``factory(config, generator) -> World``.

    ``params`` is an optional pydantic model (a ``preadapt.registry.ComponentConfig`` subclass)
    that validates the config's fields; without it, every field is passed through.
    """
    WORLDS.register(name, factory, params, user=True)


__all__ = [
    "World", "GaussianWorld", "GaussianWorldConfig", "TopicWorld", "TopicWorldConfig", "FiniteWorld",
    "FiniteWorldConfig", "SPLITS", "split_of", "split_assignment", "wordnet_world", "wordnet_glosses",
    "load_fashion_mnist", "DatasetError", "Tuples", "WORLDS", "register_world", "as_prior",
    "tau", "tau_k", "draw_tuples", "sample_distinct_pairs", "sample_tasks", "sample_per_class",
    "TASKS", "TaskConfig", "SubspaceTaskConfig", "TaskViews", "derive_task", "register_task",
    "HypercubeWorld", "HypercubeTaskWorld", "HypercubeConfig",
]
