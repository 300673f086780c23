"""Pretraining objectives (per-sample losses) and their registry."""

from preadapt.objectives.align_uniform import (
    AlignUniform, AlignUniformConfig, align_loss, align_uniform_loss, build_align_uniform, pooled_uniformity,
    uniform_loss,
)
from preadapt.objectives.curl import CURL, CURLConfig, Encoded, build_curl, curl_loss, curl_margins, encode_tuples
from preadapt.objectives.debiased import Debiased, DebiasedConfig, build_debiased, debiased_loss
from preadapt.objectives.infonce import InfoNCE, InfoNCEConfig, build_infonce, infonce_logits, infonce_loss
from preadapt.objectives.losses import LOSSES, cross_entropy, hinge, logistic, margins_from_scores
from preadapt.objectives.spectral import Spectral, SpectralConfig, build_spectral, spectral_loss
from preadapt.objectives.supervised import Supervised, SupervisedConfig, build_supervised, supervised_loss
from preadapt.registry import Registry

OBJECTIVES = Registry("objective")
OBJECTIVES.register("curl", build_curl, CURLConfig)
OBJECTIVES.register("infonce", build_infonce, InfoNCEConfig)
OBJECTIVES.register("debiased", build_debiased, DebiasedConfig)
OBJECTIVES.register("spectral", build_spectral, SpectralConfig)
OBJECTIVES.register("align_uniform", build_align_uniform, AlignUniformConfig)
OBJECTIVES.register("supervised", build_supervised, SupervisedConfig)


def register_objective(name: str, factory, params=None) -> None:
    """Make ``kind: name`` usable in configs: ``factory(config) -> nn.Module``.

    The module has integer attributes ``negatives`` and ``block_size`` (what the sampler draws) and
    maps an ``Encoded`` batch to per-sample losses (n,). An optional boolean ``true_negatives``
    (absent: False) asks the sampler for negatives of classes other than the anchor's only.
    """
    OBJECTIVES.register(name, factory, params, user=True)


__all__ = [
    "OBJECTIVES", "register_objective", "CURL", "curl_loss", "curl_margins", "encode_tuples", "Encoded",
    "hinge", "logistic", "cross_entropy", "margins_from_scores", "LOSSES",
    "InfoNCE", "infonce_loss", "infonce_logits", "Debiased", "debiased_loss", "Spectral", "spectral_loss",
    "AlignUniform", "align_uniform_loss", "align_loss", "uniform_loss", "pooled_uniformity",
    "Supervised", "supervised_loss",
]
