"""Pretraining objectives (per-sample losses) and their registry."""

from preadapt.objectives.align_uniform import (
    AlignUniform, AlignUniformConfig, align_loss, align_uniform_loss, build_align_uniform, pooled_uniformity,
    uniform_loss,
)
from preadapt.objectives.base import Encoded, Objective, ObjectiveTypeError, check_objective, encode_tuples
from preadapt.objectives.curl import CURL, CURLConfig, build_curl, curl_loss, curl_margins
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
    """Make ``kind: name`` usable in configs: ``factory(config) -> Objective``.

    The module subclasses ``Objective`` (objectives/base.py): it maps an ``Encoded`` batch to
    per-sample losses (n,) and declares what the sampler draws (``negatives``, ``block_size``,
    ``true_negatives``; defaults 1, 1, False), with the hooks ``use_prior`` and ``attach`` when it
    needs them. A factory that builds anything else fails when the kind is built (a config that
    uses it is refused) with ``ObjectiveTypeError``, naming the kind.
    """

    def build(config, *args, **kwargs) -> Objective:
        return check_objective(name, factory(config, *args, **kwargs))

    OBJECTIVES.register(name, build, params, user=True)


__all__ = [
    "OBJECTIVES", "register_objective", "Objective", "ObjectiveTypeError", "check_objective", "Encoded", "encode_tuples",
    "CURL", "curl_loss", "curl_margins",
    "hinge", "logistic", "cross_entropy", "margins_from_scores", "LOSSES",
    "InfoNCE", "infonce_loss", "infonce_logits", "Debiased", "debiased_loss", "Spectral", "spectral_loss",
    "AlignUniform", "align_uniform_loss", "align_loss", "uniform_loss", "pooled_uniformity",
    "Supervised", "supervised_loss",
]
