"""Adapters: the seam (``Adapter``, ``ADAPTERS``), the mean classifier and linear heads on frozen
features (batched over many tasks), fine-tuning under a constraint and LP-FT."""

from preadapt.adapt.base import (AdaptTask, Adapted, Adapter, AdapterConfig, FrozenHeads, LinearAdapterConfig,
                                 MeanAdapterConfig, OpenAdapterConfig, TaskPoints)
from preadapt.adapt.finetune import (LPFT, Finetune, FinetuneConfig, FinetunedHeads, LPFTConfig, build_finetune,
                                     build_lpft, train_adaptation)
from preadapt.adapt.frozen import LinearAdapter, MeanAdapter, build_linear, build_mean
from preadapt.adapt.linear import LinearProbe, best_linear_head, fit_linear_heads, keep_best_heads
from preadapt.adapt.mean_classifier import MeanClassifier
from preadapt.registry import Registry

ADAPTERS = Registry("adapter")
ADAPTERS.register("mean", build_mean, MeanAdapterConfig)
ADAPTERS.register("linear", build_linear, LinearAdapterConfig)
ADAPTERS.register("finetune", build_finetune, FinetuneConfig)
ADAPTERS.register("lpft", build_lpft, LPFTConfig)


def register_adapter(name: str, factory, params: type[AdapterConfig] | None = None) -> None:
    """Make ``{kind: name}`` usable in ``evaluate.adapters``: ``factory(config, evaluate_config) ->
    Adapter``, with ``params`` its config model (a subclass of ``AdapterConfig``; default: any
    fields pass through). docs/extending.md shows a complete example."""
    ADAPTERS.register(name, factory, params or OpenAdapterConfig, user=True)


__all__ = [
    "ADAPTERS", "register_adapter", "Adapter", "Adapted", "AdaptTask", "TaskPoints", "FrozenHeads", "AdapterConfig",
    "MeanAdapterConfig", "LinearAdapterConfig", "MeanAdapter", "LinearAdapter", "MeanClassifier", "LinearProbe",
    "fit_linear_heads", "best_linear_head", "keep_best_heads", "Finetune", "LPFT", "FinetuneConfig", "LPFTConfig",
    "FinetunedHeads", "train_adaptation",
]
