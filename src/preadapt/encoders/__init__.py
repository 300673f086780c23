"""Encoders x ↦ f(x) with a norm bound R, and their registry."""

from preadapt.encoders.base import (
    IdentityEncoder, IdentityEncoderConfig, LinearEncoder, LinearEncoderConfig, MLPEncoder, MLPEncoderConfig,
    build_identity, build_linear, build_mlp, clip_norm,
)
from preadapt.encoders.cnn import CNNEncoder, CNNEncoderConfig, build_cnn
from preadapt.encoders.lookup import LookupConfig, LookupEncoder, build_lookup
from preadapt.encoders.pretrained import FrozenTextEncoder, FrozenTextEncoderConfig, build_minilm, embed_sentences
from preadapt.encoders.tokens import (
    BagOfWordsEncoder, BagOfWordsEncoderConfig, GRUEncoder, GRUEncoderConfig, build_bow, build_gru,
)
from preadapt.registry import Registry

ENCODERS = Registry("encoder")
ENCODERS.register("identity", build_identity, IdentityEncoderConfig)
ENCODERS.register("linear", build_linear, LinearEncoderConfig)
ENCODERS.register("mlp", build_mlp, MLPEncoderConfig)
ENCODERS.register("cnn", build_cnn, CNNEncoderConfig)
ENCODERS.register("bow", build_bow, BagOfWordsEncoderConfig)
ENCODERS.register("gru", build_gru, GRUEncoderConfig)
ENCODERS.register("lookup", build_lookup, LookupConfig)
ENCODERS.register("minilm", build_minilm, FrozenTextEncoderConfig)  # optional extra `text`


def register_encoder(name: str, factory, params=None) -> None:
    """Make ``kind: name`` usable in configs: ``factory(config, input_shape, generator) -> nn.Module``.

    The module maps inputs (n, *input_shape) to (n, d) and may set ``norm_bound`` (R; None = measured).
    """
    ENCODERS.register(name, factory, params, user=True)


__all__ = [
    "ENCODERS", "register_encoder", "IdentityEncoder", "LinearEncoder", "MLPEncoder", "CNNEncoder",
    "BagOfWordsEncoder", "GRUEncoder", "FrozenTextEncoder", "embed_sentences", "clip_norm",
    "LookupEncoder", "LookupConfig",
]
