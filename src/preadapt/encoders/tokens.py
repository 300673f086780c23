"""Encoders for token sequences: bag of words and a GRU.

Inputs are ``ids: (n, L)`` integer token ids in [0, vocab) with 0 = padding. Padding is excluded, so
appending padding never changes a sentence's features. Token 0 has an all-zero embedding that never
trains (``padding_idx = 0``). Parameters are drawn from an explicit generator with PyTorch's default
ranges, as in ``preadapt.encoders.base``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from preadapt.encoders.base import LinearEncoderConfig, clip_norm, init_linear

if TYPE_CHECKING:
    from preadapt.worlds.base import InputSpec

PADDING = 0


def init_embedding(layer: nn.Embedding | nn.EmbeddingBag, generator: torch.Generator) -> None:
    """PyTorch's default N(0, 1) embeddings, drawn from ``generator``; the padding row stays zero.

    >>> layer = nn.Embedding(4, 2, padding_idx=0)
    >>> init_embedding(layer, torch.Generator().manual_seed(0))
    >>> layer.weight[0].tolist()
    [0.0, 0.0]
    """
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator))
        if layer.padding_idx is not None:
            layer.weight[layer.padding_idx].zero_()


def init_gru(layer: nn.GRU, generator: torch.Generator) -> None:
    """PyTorch's default ranges for a recurrent layer, U(−b, b) with b = 1/√hidden for every weight and
    bias, drawn from ``generator`` in parameter order.

    >>> gru = nn.GRU(3, 4)
    >>> init_gru(gru, torch.Generator().manual_seed(0))
    >>> bool(max(p.abs().max() for p in gru.parameters()) <= 0.5)
    True
    """
    bound = 1.0 / math.sqrt(layer.hidden_size)
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.copy_((2 * torch.rand(parameter.shape, generator=generator) - 1) * bound)


def check_token_ids(ids: torch.Tensor, vocab: int, kind: str, trailing_padding: bool = False) -> None:
    """Raise a ValueError saying how to fix ``ids: (n, L)`` unless its ids are integers in [0, vocab)
    (and, with ``trailing_padding``, every row is tokens followed only by padding).

    >>> check_token_ids(torch.tensor([[3, 1, 0]]), vocab=3, kind="bow")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: bow: token ids must lie in [0, vocab) = [0, 3); got ids up to 3. Set encoder.vocab to at least 4 ...
    """
    if ids.dim() != 2 or ids.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"{kind}: expected integer token ids of shape (n, L); got {ids.dtype} of shape "
                         f"{tuple(ids.shape)}")
    if ids.numel() == 0:
        return
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= vocab:
        raise ValueError(f"{kind}: token ids must lie in [0, vocab) = [0, {vocab}); got ids up to {high}"
                         + (f" and down to {low}" if low < 0 else "")
                         + f". Set encoder.vocab to at least {high + 1} (the world's vocabulary size, padding "
                           f"included)")
    if trailing_padding:
        tokens = ids != PADDING
        after_padding = tokens[:, 1:] & ~tokens[:, :-1]  # (n, L-1): a token right after padding
        if bool(after_padding.any()):
            row = int(after_padding.any(dim=1).nonzero()[0])
            raise ValueError(f"{kind}: padding (id {PADDING}) must come after all tokens of a row; row {row} "
                             f"has a token after padding")


class BagOfWordsEncoder(nn.Module):
    """f(x) = clip_R(W · mean of the embeddings of the non-padding tokens of x).

    A row of padding only has mean zero, so f = clip_R(bias). Token order does not matter.

    >>> encoder = BagOfWordsEncoder(vocab=10, embed_dim=4, out_dim=2, norm_bound=5.0,
    ...                             generator=torch.Generator().manual_seed(0))
    >>> ids = torch.tensor([[3, 1, 4, 0, 0], [4, 3, 1, 0, 0], [3, 1, 4, 1, 5]])
    >>> z = encoder(ids)  # (n, d) = (3, 2)
    >>> torch.allclose(z[0], z[1]), torch.allclose(z[0], z[2])
    (True, False)
    """

    def __init__(self, vocab: int, embed_dim: int, out_dim: int, norm_bound: float | None,
                 generator: torch.Generator) -> None:
        super().__init__()
        with torch.device("meta"):  # built without drawing from torch's global RNG; drawn below
            self.embedding = nn.EmbeddingBag(vocab, embed_dim, mode="mean", padding_idx=PADDING)
            self.head = nn.Linear(embed_dim, out_dim)
        self.to_empty(device="cpu")
        init_embedding(self.embedding, generator)
        init_linear(self.head, generator)
        self.vocab = vocab
        self.norm_bound = norm_bound

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (n, L) -> (n, d)
        check_token_ids(ids, self.vocab, "bow")
        if ids.shape[1] == 0:  # EmbeddingBag needs L ≥ 1; one padding column means the same (empty rows)
            ids = ids.new_zeros(ids.shape[0], 1)
        bags = self.embedding(ids)  # (n, embed_dim); padding excluded from the mean, all-padding rows 0
        return clip_norm(self.head(bags), self.norm_bound)


class GRUEncoder(nn.Module):
    """f(x) = clip_R(W h_T): h_T is the last hidden state of a one-layer GRU run over the tokens of x
    before its trailing padding (T = the number of tokens; h_0 = 0, so a row of padding only has
    f = clip_R(bias)).

    The rows are packed by length (``pack_padded_sequence``), so the GRU never steps over padding;
    padding inside a row is refused.

    >>> encoder = GRUEncoder(vocab=10, embed_dim=4, hidden=6, out_dim=2, norm_bound=5.0,
    ...                      generator=torch.Generator().manual_seed(0))
    >>> z = encoder(torch.tensor([[3, 1, 4, 0, 0], [4, 3, 1, 0, 0], [3, 1, 4, 1, 5]]))  # (n, d) = (3, 2)
    >>> z.shape, torch.equal(z[0], z[1])
    (torch.Size([3, 2]), False)
    """

    def __init__(self, vocab: int, embed_dim: int, hidden: int, out_dim: int, norm_bound: float | None,
                 generator: torch.Generator) -> None:
        super().__init__()
        with torch.device("meta"):  # built without drawing from torch's global RNG; drawn below
            self.embedding = nn.Embedding(vocab, embed_dim, padding_idx=PADDING)
            self.gru = nn.GRU(embed_dim, hidden, batch_first=True)
            self.head = nn.Linear(hidden, out_dim)
        self.to_empty(device="cpu")
        init_embedding(self.embedding, generator)
        init_gru(self.gru, generator)
        init_linear(self.head, generator)
        self.vocab = vocab
        self.norm_bound = norm_bound

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (n, L) -> (n, d)
        check_token_ids(ids, self.vocab, "gru", trailing_padding=True)
        lengths = (ids != PADDING).sum(dim=1)  # (n,) tokens per row
        nonempty = lengths > 0
        last = self.head.weight.new_zeros(ids.shape[0], self.gru.hidden_size)  # (n, hidden): h_0 = 0
        if bool(nonempty.any()):
            embedded = self.embedding(ids[nonempty])  # (m, L, embed_dim)
            packed = pack_padded_sequence(embedded, lengths[nonempty].cpu(), batch_first=True, enforce_sorted=False)
            _, h_last = self.gru(packed)  # (1, m, hidden), in the original row order
            last[nonempty] = h_last[0]
        return clip_norm(self.head(last), self.norm_bound)


class BagOfWordsEncoderConfig(LinearEncoderConfig):
    kind: Literal["bow"] = "bow"
    vocab: int = Field(ge=2, description="vocabulary size, padding (id 0) included: token ids lie in [0, vocab)")
    embed_dim: int = Field(32, ge=1, description="dimension of the token embeddings")

    def check_input(self, spec: InputSpec) -> None:
        """Rows of token ids (L,), every id of the world's vocabulary within ``vocab``."""
        if spec.real or len(spec.shape) != 1:
            raise ValueError(f"kind: got {self.kind!r}, which needs token ids of shape (L,); the world gives {spec}")
        if spec.vocabulary is not None and self.vocab < spec.vocabulary:
            raise ValueError(f"vocab: got {self.vocab}; allowed: ≥ {spec.vocabulary}, the world's vocabulary (its "
                             f"token ids lie in [0, {spec.vocabulary}), padding included)")


class GRUEncoderConfig(BagOfWordsEncoderConfig):
    kind: Literal["gru"] = "gru"
    hidden: int = Field(64, ge=1, description="dimension of the GRU's hidden state")


def check_sequence_shape(kind: str, input_shape) -> None:
    """Refuse, in one line naming the encoder ``kind``, inputs that are not token-id sequences (L,).

    >>> check_sequence_shape("gru", (12,))
    >>> check_sequence_shape("gru", (28, 28))
    Traceback (most recent call last):
    ...
    ValueError: encoder.kind: gru needs token-id inputs of shape (L,); the world's input_shape is (28, 28)
    """
    if len(input_shape) != 1:
        raise ValueError(f"encoder.kind: {kind} needs token-id inputs of shape (L,); the world's input_shape is "
                         f"{tuple(input_shape)}")


def build_bow(config: BagOfWordsEncoderConfig, input_shape, generator) -> BagOfWordsEncoder:
    check_sequence_shape("bow", input_shape)
    return BagOfWordsEncoder(config.vocab, config.embed_dim, config.out_dim, config.norm_bound, generator)


def build_gru(config: GRUEncoderConfig, input_shape, generator) -> GRUEncoder:
    check_sequence_shape("gru", input_shape)
    return GRUEncoder(config.vocab, config.embed_dim, config.hidden, config.out_dim, config.norm_bound, generator)
