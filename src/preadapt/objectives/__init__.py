"""Pretraining objectives (per-sample losses) and their registry."""

from preadapt.objectives.curl import CURL, CURLConfig, Encoded, build_curl, curl_loss, curl_margins, encode_tuples
from preadapt.objectives.losses import LOSSES, cross_entropy, hinge, logistic, margins_from_scores
from preadapt.registry import Registry

OBJECTIVES = Registry("objective")
OBJECTIVES.register("curl", build_curl, CURLConfig)


def register_objective(name: str, factory, params=None) -> None:
    """Make ``kind: name`` usable in configs: ``factory(config) -> nn.Module``.

    The module has integer attributes ``negatives`` and ``block_size`` (what the sampler draws) and
    maps an ``Encoded`` batch to per-sample losses (n,).
    """
    OBJECTIVES.register(name, factory, params)


__all__ = [
    "OBJECTIVES", "register_objective", "CURL", "curl_loss", "curl_margins", "encode_tuples", "Encoded",
    "hinge", "logistic", "cross_entropy", "margins_from_scores", "LOSSES",
]
