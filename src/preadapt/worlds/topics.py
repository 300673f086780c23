"""Topic worlds: each class a distribution over a vocabulary, samples are sentences of word ids.

The synthetic analogue of Wiki-3029 [Arora19] (THEORY.md section 2, DESIGN.md section 5). Class c
has the word distribution p_c = (1 − β)·θ_c + β·b, with θ_c ~ Dirichlet(α) over the words 1..V−1
(a sparse topic for small α) and b a background shared by all classes (a Zipf(1) distribution over
the words in a random order: a few frequent words every class uses). A sentence of class c has a
length uniform in [min_length, max_length] and i.i.d. words from p_c; it is right-padded with the
word id 0 to max_length.

Infinite mode draws fresh sentences. Finite mode draws a bank of ``sentences_per_class`` sentences
per class once and splits it (train/validation/test, Wiki-3029's 0.7/0.1/0.2) as a
``FiniteWorld``: the built world samples the held-out ``test`` split, which plays the role of the
population; ``split_world("train")`` is what training tuples are drawn from.
"""

from __future__ import annotations

import copy
from typing import Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from preadapt.registry import ComponentConfig
from preadapt.worlds.base import InputSpec
from preadapt.worlds.finite import (DEFAULT_SPLIT, FiniteWorld, check_split, check_split_name, split_counts,
                                    stratified_assignment)
from preadapt.worlds.gaussian import Prior
from preadapt.worlds.prior import as_prior, check_prior_spec

PAD = 0  # the word id that pads sentences; no class ever emits it


class TopicWorldConfig(ComponentConfig):
    """Config of a topic world (fields documented in docs/config.md)."""

    kind: Literal["topics"] = "topics"
    classes: int = Field(20, ge=2, description="|C|, the number of latent classes (topics); Wiki-3029 has 3029")
    vocab: int = Field(1000, ge=2, description="V: word ids 0..V−1, where 0 is padding and 1..V−1 are words")
    background: float = Field(0.5, ge=0.0, lt=1.0, description="β, the weight of the shared background words")
    concentration: float = Field(0.1, gt=0.0, description="α of the symmetric Dirichlet each topic is drawn from")
    min_length: int = Field(8, ge=1, description="shortest sentence (words)")
    max_length: int = Field(32, ge=1, description="longest sentence; inputs are padded to this length")
    prior: Prior = Field("uniform", description="ρ: uniform, {zipf: exponent} or a list of weights")
    sentences_per_class: int | None = Field(
        None, ge=1, description="finite mode: a fixed bank of this many sentences per class (Wiki-3029: 200); null = fresh")
    split: list[float] = Field(list(DEFAULT_SPLIT), description="[train, validation, test] fractions of the bank")

    @field_validator("prior")
    @classmethod
    def _prior_ok(cls, prior):
        return check_prior_spec(prior)

    @field_validator("split")
    @classmethod
    def _split_ok(cls, split):
        return check_split(split)

    @model_validator(mode="after")
    def _consistent(self):
        if self.min_length > self.max_length:
            raise ValueError(f"min_length: got {self.min_length}; must be ≤ max_length ({self.max_length})")
        if isinstance(self.prior, list) and len(self.prior) != self.classes:
            raise ValueError(f"prior: got {len(self.prior)} weights; expected one per class ({self.classes})")
        if self.sentences_per_class is not None and split_counts([self.sentences_per_class], self.split).min() < 1:
            raise ValueError(f"sentences_per_class: got {self.sentences_per_class}; too few for a sentence of every "
                             f"class in each part of the split {self.split}")
        return self

    @property
    def input_spec(self) -> InputSpec:
        """Sentences of word ids in [0, vocab), padded to max_length (either mode samples int64)."""
        return InputSpec((self.max_length,), torch.int64, vocabulary=self.vocab)


class TopicWorld:
    """Sentences of word ids: a sample of class c has a length L ~ U{min_length..max_length} and
    L i.i.d. words from ``word_probs[c]``, right-padded with 0 → (max_length,) int64.

    ``word_probs: (C, V)`` non-negative rows (normalised here) with column 0, the padding id, zero.
    ``bank``: the finite mode's split sentence bank (see ``with_bank``); None = fresh sentences.

    >>> world = TopicWorld(np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), min_length=2, max_length=3)
    >>> world.classes, world.vocab, world.input_shape
    (2, 3, (3,))
    >>> x = world.sample(torch.tensor([0, 1]), torch.Generator().manual_seed(0))
    >>> x.dtype, set(x[0].tolist()) <= {0, 1}, set(x[1].tolist()) <= {0, 2}, (x[:, :2] > 0).all().item()
    (torch.int64, True, True, True)
    """

    def __init__(self, word_probs, min_length: int, max_length: int, prior=None,
                 bank: FiniteWorld | None = None) -> None:
        probs = np.asarray(word_probs, dtype=np.float64)
        if probs.ndim != 2 or probs.shape[1] < 2 or np.any(probs < 0) or not np.isfinite(probs).all():
            raise ValueError(f"word_probs must be a finite, non-negative (C, V) array with V ≥ 2; got shape {probs.shape}")
        if np.any(probs[:, PAD] > 0):
            raise ValueError("word_probs[:, 0] must be 0: word id 0 is padding")
        if np.any(probs.sum(1) <= 0):
            raise ValueError("every class needs a word of positive probability")
        if not 1 <= min_length <= max_length:
            raise ValueError(f"lengths must satisfy 1 ≤ min_length ≤ max_length; got {min_length} and {max_length}")
        self.classes, self.vocab = probs.shape
        self.min_length, self.max_length = int(min_length), int(max_length)
        self.input_shape = (self.max_length,)
        self.prior = as_prior("uniform" if prior is None else prior, self.classes)
        probs = probs / probs.sum(1, keepdims=True)
        last = self.vocab - 1 - np.argmax(probs[:, ::-1] > 0, axis=1)  # (C,) last word of positive probability
        cdf = np.minimum(np.cumsum(probs, axis=1), 1.0)
        cdf[np.arange(self.vocab)[None, :] >= last[:, None]] = 1.0  # no rounding gap after the last word
        self._cdf = cdf.reshape(-1)  # (C·V,) class c's cumulative distribution at [c·V, (c+1)·V)
        self._guide = _guide_table(cdf)  # (C·V,)
        self.bank = bank

    @property
    def word_probs(self) -> np.ndarray:
        """p_c for every class, (C, V) float64, to rounding (column 0, padding, is zero)."""
        return np.diff(self._cdf.reshape(self.classes, self.vocab), axis=1, prepend=0.0)

    @property
    def split_name(self) -> str | None:
        """The split this world samples in finite mode; None for fresh sentences (the population)."""
        return None if self.bank is None else self.bank.split_name

    def sample(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        labels = torch.as_tensor(labels, dtype=torch.long)
        if self.bank is not None:
            return self.bank.sample(labels, generator)
        return self._fresh(labels, generator)

    def sample_ids(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor | None:
        """Finite mode: the bank's example ids of a draw (``FiniteWorld.sample_ids``); None for fresh sentences."""
        return None if self.bank is None else self.bank.sample_ids(labels, generator)

    def take(self, ids: torch.Tensor) -> torch.Tensor:
        """Finite mode: the sentences of bank examples ``ids: (n,)`` → (n, L) int64."""
        if self.bank is None:
            raise ValueError("take() needs finite mode (sentences_per_class); this world draws fresh sentences")
        return self.bank.take(ids)

    def example_ids(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Finite mode: the ids and classes of every sentence of this split; None for fresh sentences."""
        return None if self.bank is None else self.bank.example_ids()

    def _fresh(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, length = labels.shape[0], self.max_length
        lengths = torch.randint(self.min_length, self.max_length + 1, (n,), generator=generator)
        used = torch.arange(length)[None, :] < lengths[:, None]  # (n, L), row by row
        uniform = torch.rand(int(lengths.sum()), generator=generator, dtype=torch.float64)
        words = torch.full((n, length), PAD, dtype=torch.long)
        words[used] = torch.from_numpy(self._inverse_cdf(labels.repeat_interleave(lengths).numpy(), uniform.numpy()))
        return words  # (n, L) int64

    def _inverse_cdf(self, labels: np.ndarray, uniform: np.ndarray) -> np.ndarray:
        """The word w of class ``labels[j]`` with cdf(w − 1) ≤ u_j < cdf(w), for ``uniform: (m,)`` in
        [0, 1): ``searchsorted(cdf_c, u, side="right")``, by Chen and Asau's guide table (start at
        the guide's lower bound for u's bucket, step forward; about two comparisons per word)."""
        words = np.empty(labels.shape[0], dtype=np.int64)
        vocab = self.vocab
        for begin in range(0, labels.shape[0], 2**16):  # chunks that stay in cache
            row = labels[begin : begin + 2**16] * vocab
            u = uniform[begin : begin + 2**16]
            position = self._guide[row + np.minimum((u * vocab).astype(np.int64), vocab - 1)]
            moving = np.flatnonzero(self._cdf[position] <= u)
            while moving.size:
                position[moving] += 1
                moving = moving[self._cdf[position[moving]] <= u[moving]]
            words[begin : begin + 2**16] = position - row
        return words

    def with_bank(self, sentences_per_class: int, split, generator: torch.Generator) -> "TopicWorld":
        """Finite mode: ``sentences_per_class`` sentences per class drawn once from ``generator`` and
        split per class by ``split`` (fractions [train, validation, test]); the ``test`` view.

        The bank is stored in the smallest integer dtype that holds V (int16 up to 32768 words) and
        converted to int64 as it is sampled: 3029 classes × 200 sentences × 32 words take 39 MB.
        """
        labels = torch.arange(self.classes).repeat_interleave(sentences_per_class)  # (C·S,)
        store = torch.int16 if self.vocab <= 2**15 else torch.int32
        sentences = torch.empty(labels.shape[0], self.max_length, dtype=store)
        chunk = max(1, 2**21 // self.max_length)  # bounds the int64/float64 temporaries
        for begin in range(0, labels.shape[0], chunk):
            part = labels[begin : begin + chunk]
            sentences[begin : begin + chunk] = self._fresh(part, generator).to(store)
        assignment = stratified_assignment(labels.numpy(), split, generator)
        bank = FiniteWorld(sentences, labels.numpy(), assignment, prior=self.prior, dtype=torch.int64)
        world = copy.copy(self)
        world.bank = bank
        return world

    def split_world(self, name: str) -> "TopicWorld":
        """The world restricted to split ``name`` (train, validation or test): same classes, word
        distributions and prior, ``sample`` draws only that split's sentences. Without a bank every
        split is the population, and the world itself is returned."""
        check_split_name(name)
        if self.bank is None:
            return self
        world = copy.copy(self)
        world.bank = self.bank.split_world(name)
        return world

    def examples(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Finite mode: every sentence of this split, grouped by class: (n_split, L) int64, classes (n_split,)."""
        if self.bank is None:
            raise ValueError("examples() needs finite mode (sentences_per_class); this world draws fresh sentences")
        return self.bank.examples()


def _guide_table(cdf: np.ndarray) -> np.ndarray:
    """Chen and Asau's guide table of ``cdf: (C, V)`` with V buckets per class, flattened (C·V,).

    Entry (c, k) is c·V + the number of words w with fl(cdf_c(w)·V) < k: every such w has
    cdf_c(w) ≤ u whenever floor(fl(u·V)) ≥ k, so the search for u may start there.
    """
    classes, vocab = cdf.shape
    bucket = np.minimum(np.floor(cdf * vocab).astype(np.int64) + 1, vocab)  # (C, V), the first k counting w
    counts = np.bincount((np.arange(classes)[:, None] * (vocab + 1) + bucket).reshape(-1),
                         minlength=classes * (vocab + 1)).reshape(classes, vocab + 1)
    guide = np.cumsum(counts, axis=1)[:, :vocab] + np.arange(classes)[:, None] * vocab
    return guide.reshape(-1).astype(np.int32 if classes * vocab < 2**31 else np.int64)


def _numpy_rng(generator: torch.Generator) -> np.random.Generator:
    """A numpy generator seeded from ``generator`` (numpy has the Dirichlet sampler torch lacks for
    explicit generators)."""
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))


def build_topic_world(config: TopicWorldConfig, generator: torch.Generator) -> TopicWorld:
    """A topic world from its config; topics, background and the finite bank use ``generator``."""
    rng = _numpy_rng(generator)
    words = config.vocab - 1
    topics = rng.dirichlet(np.full(words, config.concentration), size=config.classes)  # (C, V−1)
    background = 1.0 / np.arange(1, words + 1)
    background = background[rng.permutation(words)] / background.sum()  # (V−1,)
    probs = np.zeros((config.classes, config.vocab))
    probs[:, 1:] = (1.0 - config.background) * topics + config.background * background
    world = TopicWorld(probs, config.min_length, config.max_length, as_prior(config.prior, config.classes))
    if config.sentences_per_class is not None:
        world = world.with_bank(config.sentences_per_class, config.split, generator)
    return world
