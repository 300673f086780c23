"""A lookup-table encoder: f(x) = clip_R(T[row(key(x))]), one learned (or fixed random) vector per key.

The function class of [Saunshi22] that shows why inductive biases matter (THEORY.md section 3): on
the hypercube world a table indexed by the sign pattern aligns every positive pair exactly (a
positive keeps its anchor's pattern), so it reaches a contrastive loss as low as a linear encoder's,
yet the rows of patterns never seen in pretraining stay at their random start, so the downstream
task, which draws fresh patterns, sees noise.

Keys (``input_keys``), an integer in [0, p) with p = 2^31 − 1 per input:
- real inputs: the sign pattern, Σ_j [x_j > 0]·2^j over the flattened entries (mod p; exact up to
  30 entries). An entry 0 or NaN has no sign and is refused.
- integer inputs (token ids): the row of ids read as the digits of a number in base 1 000 003, mod p
  (a polynomial hash: two distinct rows share a key with probability about L/p).

Rows (``LookupEncoder.rows``): a key space that fits the table (sign patterns with 2^size ≤
``buckets``) is indexed directly, one row per pattern; any other key is hashed by the universal hash
((a·key + b) mod p) mod buckets with a ∈ [1, p), b ∈ [0, p) drawn from the generator, so two distinct
keys share a row with probability about 1/buckets.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from preadapt.encoders.base import LinearEncoderConfig, clip_norm
from preadapt.encoders.tokens import init_embedding

if TYPE_CHECKING:
    from preadapt.worlds.base import InputSpec

PRIME = 2**31 - 1  # p: a Mersenne prime; keys lie in [0, p), so a·key < 2^62 fits in int64
ID_RADIX = 1_000_003  # the base token-id rows are read in (a prime; ids below it are exact digits)
EXACT_SIGNS = 30  # sign patterns of at most this many entries are keyed exactly (2^30 < p)


def input_keys(x: torch.Tensor) -> torch.Tensor:
    """The key of each input: ``x: (n, *X)`` → (n,) long in [0, p), p = 2^31 − 1.

    Real inputs: their sign pattern Σ_j [x_j > 0]·2^j (exact for ≤ 30 entries), so every rescaling by
    positive numbers keeps the key. Integer inputs: the row of ids as a number in base 1 000 003, mod p.

    >>> input_keys(torch.tensor([[1.0, -1.0, 1.0], [0.3, -2.0, 0.1], [-1.0, 1.0, 1.0]]))
    tensor([5, 5, 6])
    >>> input_keys(torch.tensor([[3, 1, 0], [3, 1, 0], [1, 3, 0]]))
    tensor([1000006, 1000006, 3000010])
    """
    flat = x.flatten(1)  # (n, D)
    if flat.is_floating_point():
        bad = (flat == 0) | torch.isnan(flat)
        if bool(bad.any()):
            row = int(bad.any(dim=1).nonzero()[0])
            raise ValueError(f"lookup: real inputs are keyed by their sign pattern and must have no entry 0 or NaN; "
                             f"row {row} has one")
        digits, radix = (flat > 0).long(), 2
    elif flat.dtype in (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64):
        digits, radix = torch.remainder(flat.long(), PRIME), ID_RADIX
    else:
        raise ValueError(f"lookup: inputs must be real (keyed by sign pattern) or integer ids; got {flat.dtype}")
    key = torch.zeros(flat.shape[0], dtype=torch.long, device=flat.device)
    for j in range(flat.shape[1] - 1, -1, -1):  # Horner: Σ_j digit_j·radix^j mod p, digit 0 least significant
        key = torch.remainder(key * radix + digits[:, j], PRIME)
    return key


class LookupEncoder(nn.Module):
    """f(x) = clip_R(T[row(x)]) with a table T: (buckets, d), N(0, 1) entries drawn from the generator
    (``nn.Embedding``'s start), learned (a parameter) or fixed (``trainable=False``: a buffer, never
    trained). ``input_size``: the number of entries of one input (2^input_size sign patterns).

    >>> encoder = LookupEncoder(input_size=3, buckets=8, out_dim=2, norm_bound=None,
    ...                         generator=torch.Generator().manual_seed(0))
    >>> x = torch.tensor([[1.0, -1.0, 1.0], [0.3, -2.0, 0.1], [-1.0, 1.0, 1.0]])  # patterns 5, 5, 6
    >>> encoder.rows(x), torch.equal(encoder(x)[0], encoder.table[5])
    (tensor([5, 5, 6]), True)
    """

    def __init__(self, input_size: int, buckets: int, out_dim: int, norm_bound: float | None,
                 generator: torch.Generator, trainable: bool = True) -> None:
        super().__init__()
        with torch.device("meta"):  # built without drawing from torch's global RNG; drawn below
            table = nn.Embedding(buckets, out_dim)
        table = table.to_empty(device="cpu")
        init_embedding(table, generator)
        if trainable:
            self.table = nn.Parameter(table.weight.detach())
        else:
            self.register_buffer("table", table.weight.detach())
        self.multiplier = int(torch.randint(1, PRIME, (1,), generator=generator))  # a of the universal hash
        self.offset = int(torch.randint(0, PRIME, (1,), generator=generator))  # b
        self.input_size = int(input_size)
        self.buckets = int(buckets)
        self.norm_bound = norm_bound

    def rows(self, x: torch.Tensor) -> torch.Tensor:
        """The table row of each input ``x: (n, *X)`` → (n,) long in [0, buckets)."""
        key = input_keys(x)
        if x.is_floating_point() and self.input_size <= EXACT_SIGNS and 2**self.input_size <= self.buckets:
            return key  # one row per sign pattern
        return torch.remainder(torch.remainder(self.multiplier * key + self.offset, PRIME), self.buckets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (n, *X) -> (n, d)
        rows = self.rows(x).to(self.table.device)
        return clip_norm(F.embedding(rows, self.table), self.norm_bound)


class LookupConfig(LinearEncoderConfig):
    """Config of the lookup-table encoder (fields documented in docs/config.md).

    >>> from preadapt.worlds.base import InputSpec
    >>> LookupConfig().check_input(InputSpec((16,), torch.float32))
    Traceback (most recent call last):
    ...
    ValueError: kind: lookup needs inputs with a finite set of keys (sign patterns, as a hypercube world's, or token ids); the world gives float32 inputs of shape (16,)
    """

    kind: Literal["lookup"] = "lookup"
    buckets: int = Field(2**16, ge=1, description="rows of the table; keys are hashed into them unless every sign "
                                                  "pattern has its own row (2^input size ≤ buckets)")
    trainable: bool = Field(True, description="learn the rows; false keeps the random start (fixed random vectors)")

    def check_input(self, spec: InputSpec) -> None:
        """Token ids (any integer inputs), or real inputs whose world keys them by sign pattern."""
        if spec.real and not spec.signs:
            raise ValueError(f"kind: lookup needs inputs with a finite set of keys (sign patterns, as a hypercube "
                             f"world's, or token ids); the world gives {spec}")


def build_lookup(config: LookupConfig, input_shape, generator) -> LookupEncoder:
    return LookupEncoder(int(math.prod(input_shape)), config.buckets, config.out_dim, config.norm_bound, generator,
                         trainable=config.trainable)
