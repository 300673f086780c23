"""A labeled data set as a latent-class world (THEORY.md section 2, [Arora19]).

Every example belongs to one of three splits, ``train``, ``validation`` and ``test``, drawn once
per class (stratified) from the world generator. A world *view* samples one split: D_c is the
uniform distribution over the class's examples of that split, so x and x⁺ of a similar pair may be
the same example (probability 1/|examples of c in the split|), as i.i.d. draws from a finite set are.

The world a config builds is the ``test`` view: the held-out split plays the role of the
population, and every population quantity measured on the world is an estimate on held-out data.
Training tuples come from ``split_world("train")``, choices (early stopping, hyperparameters) from
``split_world("validation")``; ``split_of(world, name)`` does the same for any world, returning
worlds without splits (infinite ones, whose every split is the population) unchanged.
"""

from __future__ import annotations

import copy
import math
from typing import Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_serializer, model_validator

from preadapt.registry import ComponentConfig
from preadapt.worlds.base import InputSpec
from preadapt.worlds.datasets import WORDNET_CLASSES, check_dataset, load_fashion_mnist, wordnet_corpus
from preadapt.worlds.prior import as_prior

SPLITS = ("train", "validation", "test")
DEFAULT_SPLIT = (0.7, 0.1, 0.2)  # the train/validation/test fractions of Wiki-3029 [Arora19]
DATASET_CLASSES = {"digits": 10, "fashion_mnist": 10, "wordnet": WORDNET_CLASSES}


def check_split(split) -> list[float]:
    """Three positive fractions [train, validation, test] that sum to 1, as floats.

    >>> check_split([0.7, 0.1, 0.2])
    [0.7, 0.1, 0.2]
    """
    fractions = [float(f) for f in split]
    total = sum(fractions)
    if len(fractions) != 3 or any(not math.isfinite(f) or f <= 0 for f in fractions) or abs(total - 1.0) > 1e-6:
        raise ValueError(f"split must be three fractions [train, validation, test], each > 0, summing to 1; "
                         f"got {fractions} (sum {total:.6g})")
    return fractions


def split_counts(sizes, split) -> np.ndarray:
    """How many of each class's ``sizes: (C,)`` examples go to each split → (C, 3) int64.

    Largest-remainder rounding of size·fraction: the counts sum to the size exactly, and each is
    within one of its share.

    >>> split_counts([200, 10], [0.7, 0.1, 0.2]).tolist()
    [[140, 20, 40], [7, 1, 2]]
    """
    sizes = np.asarray(sizes, dtype=np.int64).reshape(-1)
    shares = sizes[:, None] * np.asarray(check_split(split))[None, :]  # (C, 3)
    counts = np.floor(shares + 1e-9).astype(np.int64)
    deficit = sizes - counts.sum(1)  # 0..2 per class
    order = np.argsort(-(shares - counts), axis=1, kind="stable")  # largest remainder first
    bonus = (np.arange(3)[None, :] < deficit[:, None]).astype(np.int64)
    np.put_along_axis(counts, order, np.take_along_axis(counts, order, 1) + bonus, 1)
    return counts


def stratified_assignment(labels, split, generator: torch.Generator) -> np.ndarray:
    """A random split of the examples, per class: ``labels: (N,)`` class indices 0..C−1 → (N,) int8
    with 0 = train, 1 = validation, 2 = test, and per class exactly ``split_counts`` of each."""
    labels = np.asarray(labels, dtype=np.int64)
    keys = torch.rand(labels.size, generator=generator, dtype=torch.float64).numpy()
    order = np.argsort(labels + keys, kind="stable")  # by class, randomly within a class
    sizes = np.bincount(labels)
    start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank = np.empty(labels.size, dtype=np.int64)
    rank[order] = np.arange(labels.size) - start[labels[order]]
    counts = split_counts(sizes, split)
    cut_train, cut_validation = counts[:, 0], counts[:, 0] + counts[:, 1]
    return ((rank >= cut_train[labels]).astype(np.int8) + (rank >= cut_validation[labels]).astype(np.int8))


def split_assignment(labels, split, generator: torch.Generator) -> np.ndarray:
    """The split ``FiniteWorld.from_arrays`` draws for ``labels: (N,)`` (any integers; their sorted
    distinct values are the classes) from ``generator``: (N,) int8, 0 = train, 1 = validation, 2 = test.
    The same labels, fractions and generator state give the same split, whatever the features.

    >>> split_assignment([5, 5, 5, 9, 9, 9], [1/3, 1/3, 1/3], torch.Generator().manual_seed(0)).tolist()
    [2, 1, 0, 2, 0, 1]
    """
    _, codes = np.unique(np.asarray(labels), return_inverse=True)
    return stratified_assignment(codes.reshape(-1), split, generator)


def check_split_name(name: str) -> str:
    """``name`` if it names a split (train, validation or test); a ValueError otherwise."""
    if name not in SPLITS:
        raise ValueError(f"split name: got {name!r}; allowed: {', '.join(SPLITS)}")
    return name


class _SplitIndex:
    """Per split: the example indices sorted by class (``order``), each class's first position
    (``start: (C,)``) and its number of examples (``count: (C,)``). Shared by all views."""

    def __init__(self, codes: np.ndarray, assignment: np.ndarray, classes: int, label_values: np.ndarray) -> None:
        self.order, self.start, self.count = {}, {}, {}
        for part, name in enumerate(SPLITS):
            members = np.flatnonzero(assignment == part)
            members = members[np.argsort(codes[members], kind="stable")]
            count = np.bincount(codes[members], minlength=classes)
            empty = np.flatnonzero(count == 0)
            if empty.size:
                label = label_values[empty[0]].item()
                raise ValueError(
                    f"class {label!r} has no example in the {name} split ({np.sum(codes == empty[0])} examples in "
                    f"all); every class needs examples in every split: drop rare classes or give more examples")
            self.order[name] = torch.from_numpy(members.astype(np.int64))
            self.count[name] = torch.from_numpy(count.astype(np.int64))
            self.start[name] = torch.from_numpy(np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64))


class FiniteWorld:
    """A labeled data set as a world: D_c = uniform over class c's examples of one split.

    ``features: (N, *X)`` (any dtype; stored as given, not copied), ``labels: (N,)`` integers (their
    sorted distinct values become classes 0..C−1, kept in ``label_values``), ``assignment: (N,)``
    0 = train, 1 = validation, 2 = test (``from_arrays`` draws it). ``prior``: ``"empirical"`` (each
    view's ρ is its split's class frequencies), ``"uniform"``, or any prior ``as_prior`` takes, shared
    by all views. ``dtype``: the dtype ``sample`` returns (None: the stored one); ``scale``: a factor
    applied after the cast (None: none), so that inputs can be stored small, e.g. uint8 pixels with
    ``dtype=torch.float32, scale=1/255`` sample floats in [0, 1] at a quarter of the memory.
    ``words``: for token-id features, the word of each id (``words[0]`` padding), kept as the
    world's vocabulary; None otherwise. Every class needs examples in every split.

    >>> features = torch.arange(12.0).view(6, 2)  # rows 0-2 are class 0, rows 3-5 class 1
    >>> world = FiniteWorld.from_arrays(features, [0, 0, 0, 1, 1, 1], split=[1/3, 1/3, 1/3],
    ...                                 generator=torch.Generator().manual_seed(0))
    >>> world.classes, world.input_shape, world.split_name, world.prior.tolist()
    (2, (2,), 'test', [0.5, 0.5])
    >>> x = world.split_world("train").sample(torch.tensor([1, 1, 0]), torch.Generator().manual_seed(0))
    >>> (x[:, 0] >= 6).tolist()
    [True, True, False]
    """

    def __init__(self, features, labels, assignment, *, prior="empirical", split_name: str = "test",
                 dtype: torch.dtype | None = None, scale: float | None = None, words: list[str] | None = None) -> None:
        self.features = torch.as_tensor(features)
        labels = np.asarray(labels)
        assignment = np.asarray(assignment)
        n = self.features.shape[0] if self.features.dim() else 0
        if labels.ndim != 1 or labels.shape[0] != n or assignment.shape != labels.shape:
            raise ValueError(f"features (N, *X), labels (N,) and assignment (N,) must agree; got shapes "
                             f"{tuple(self.features.shape)}, {labels.shape} and {assignment.shape}")
        if labels.size and not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be integers; got dtype {labels.dtype}")
        if not np.isin(assignment, (0, 1, 2)).all():
            raise ValueError("assignment must be 0 (train), 1 (validation) or 2 (test) for every example")
        self.label_values, codes = np.unique(labels, return_inverse=True)
        self.classes = int(self.label_values.size)
        if self.classes < 2:
            raise ValueError(f"a world needs at least two classes; the labels have {self.classes}")
        self.labels = torch.from_numpy(codes.astype(np.int64).reshape(-1))  # (N,) class indices
        self.assignment = assignment.astype(np.int8)
        self.input_shape = tuple(self.features.shape[1:])
        self.dtype = dtype
        self.scale = scale
        self.words = words
        self._index = _SplitIndex(codes.reshape(-1), self.assignment, self.classes, self.label_values)
        self._prior_spec = prior if isinstance(prior, str) else as_prior(prior, self.classes)
        self._select(split_name)

    @classmethod
    def from_arrays(cls, features, labels, split=DEFAULT_SPLIT, generator: torch.Generator | None = None,
                    prior="empirical", dtype: torch.dtype | None = None, scale: float | None = None) -> "FiniteWorld":
        """A world from arrays with a stratified random split (``split``: [train, validation, test]
        fractions) drawn from ``generator`` (``split_assignment``); the ``test`` view. Features may be a
        model's outputs."""
        if generator is None:
            raise ValueError("from_arrays needs a torch.Generator for the split (e.g. torch.Generator().manual_seed(0))")
        return cls(features, labels, split_assignment(labels, split, generator), prior=prior, dtype=dtype,
                   scale=scale)

    def _select(self, name: str) -> None:
        self.split_name = check_split_name(name)
        if isinstance(self._prior_spec, str) and self._prior_spec == "empirical":
            counts = self._index.count[name].numpy().astype(np.float64)
            self.prior = counts / counts.sum()
        elif isinstance(self._prior_spec, str):
            self.prior = as_prior(self._prior_spec, self.classes)
        else:
            self.prior = self._prior_spec

    def split_world(self, name: str) -> "FiniteWorld":
        """The view that samples split ``name`` (train, validation or test); shares the data."""
        view = copy.copy(self)
        view._select(name)
        return view

    @property
    def counts(self) -> np.ndarray:
        """Examples per class in this view's split, (C,)."""
        return self._index.count[self.split_name].numpy().copy()

    def examples(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every example of this view's split, grouped by class: inputs (n_split, *X), classes (n_split,)."""
        ids, classes = self.example_ids()
        return self.take(ids), classes

    def sample(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.take(self.sample_ids(labels, generator))  # (n, *X)

    def sample_ids(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """For every entry of ``labels: (n,)`` an example of that class drawn uniformly from this view's
        split, as its index into ``features`` → (n,) long (the ids by which estimates cluster draws)."""
        labels = torch.as_tensor(labels, dtype=torch.long)
        count = self._index.count[self.split_name][labels]  # (n,)
        uniform = torch.rand(labels.shape[0], generator=generator, dtype=torch.float64)
        position = torch.minimum((uniform * count).long(), count - 1)
        return self._index.order[self.split_name][self._index.start[self.split_name][labels] + position]

    def take(self, ids: torch.Tensor) -> torch.Tensor:
        """The inputs of examples ``ids: (n,)`` (indices into ``features``) → (n, *X)."""
        return self._cast(self.features[torch.as_tensor(ids, dtype=torch.long)])

    def example_ids(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every example of this view's split, grouped by class: ids (n_split,) and classes (n_split,)."""
        index = self._index.order[self.split_name]
        return index, self.labels[index]

    def _cast(self, x: torch.Tensor) -> torch.Tensor:
        x = x if self.dtype is None else x.to(self.dtype)
        return x if self.scale is None else x * self.scale


def split_of(world, name: str):
    """The view of ``world`` that samples split ``name``; a world without splits is returned as is
    (an infinite world: every split is the population).

    >>> from preadapt.worlds.gaussian import GaussianWorld
    >>> world = GaussianWorld(torch.eye(2))
    >>> split_of(world, "train") is world
    True
    """
    check_split_name(name)
    split_world = getattr(world, "split_world", None)
    return world if split_world is None else split_world(name)


PIXEL_SCALE = {"fashion_mnist": 1 / 255}
"""The factor from stored to sampled inputs of the image data sets stored as uint8 pixels."""

WORDNET_FIELDS = ("vocab", "length")
"""The fields of ``FiniteWorldConfig`` that apply to ``dataset: wordnet`` only."""


def load_dataset(name: str) -> tuple[np.ndarray, np.ndarray]:
    """An image data set as (features (N, *X) as stored, labels (N,) int64); nothing is downloaded.

    ``digits``: scikit-learn's ``load_digits``, 1797 8×8 images scaled to [0, 1], float32 (N, 1, 8, 8).
    ``fashion_mnist``: the 70,000 images of the Debian package ``dataset-fashion-mnist`` as uint8
    pixels (N, 1, 28, 28), sampled × ``PIXEL_SCALE`` (1/255) as float32 (``datasets.load_fashion_mnist``).
    ``wordnet``'s inputs depend on the split (the vocabulary is the training split's): ``wordnet_world``.
    """
    if name == "fashion_mnist":
        return load_fashion_mnist()
    if name != "digits":
        hint = "; wordnet's token ids depend on the split: build it with wordnet_world" if name == "wordnet" else ""
        raise ValueError(f"dataset: got {name!r}; allowed: digits, fashion_mnist{hint}")
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:  # scikit-learn is a dev extra, not a core dependency
        raise ImportError("dataset 'digits' needs scikit-learn: pip install scikit-learn") from error
    digits = load_digits()
    features = (digits.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    return features, digits.target.astype(np.int64)


def wordnet_world(split=DEFAULT_SPLIT, generator: torch.Generator | None = None, *, vocab: int = 5000,
                  length: int = 32, prior="empirical") -> FiniteWorld:
    """WordNet's glosses as a world of token ids: one example per synset, its class the lexicographer
    file (45 classes), its input the definition's first ``length`` words as ids in [0, ``vocab``) over
    a vocabulary built on the ``train`` split only (``datasets.Corpus.encode``); the ``test`` view, whose
    ``words`` are the id → word list.

    The split is ``split_assignment(labels, split, generator)``, the one ``FiniteWorld.from_arrays``
    draws: other features of the same glosses (``datasets.wordnet_glosses()``, same order and labels)
    get this very split from ``from_arrays(features, labels, split, g)`` with ``g`` seeded alike
    (a run's: ``make_generator(seed, "world")``).
    """
    if generator is None:
        raise ValueError("wordnet_world needs a torch.Generator for the split (e.g. torch.Generator().manual_seed(0))")
    corpus, labels = wordnet_corpus()
    assignment = split_assignment(labels, split, generator)
    ids, words = corpus.encode(assignment == 0, vocab, length)  # (N, length): the vocabulary of the train split
    return FiniteWorld(ids, labels, assignment, prior=prior, dtype=torch.int64, words=words)


class FiniteWorldConfig(ComponentConfig):
    """Config of a bundled data set as a world (fields documented in docs/config.md).

    ``vocab`` and ``length`` apply to ``dataset: wordnet`` only: another data set refuses a value other
    than the default and leaves them out of its dump (and so of the config hash). Validation reads the
    data set's files (once per process, cached), so a missing or corrupt file is a config error.
    """

    kind: Literal["finite"] = "finite"
    dataset: Literal["digits", "fashion_mnist", "wordnet"] = Field(
        "digits", description="digits (scikit-learn), fashion_mnist (dataset-fashion-mnist), wordnet (wordnet-base)")
    split: list[float] = Field(list(DEFAULT_SPLIT), description="[train, validation, test] fractions, stratified per class")
    prior: Literal["empirical", "uniform"] = Field(
        "empirical", description="ρ: the class frequencies of the sampled split, or uniform")
    vocab: int = Field(5000, ge=3, description="wordnet only: V, token ids 0..V−1 (0 padding, 1 unknown, 2.. the "
                                               "V−2 most frequent words of the train split)")
    length: int = Field(32, ge=1, description="wordnet only: tokens per gloss (longer cut, shorter right-padded)")

    @field_validator("split")
    @classmethod
    def _split_ok(cls, split):
        return check_split(split)

    @model_validator(mode="after")
    def _dataset_ok(self) -> "FiniteWorldConfig":
        if self.dataset != "wordnet":
            for name in WORDNET_FIELDS:
                value, default = getattr(self, name), type(self).model_fields[name].default
                if value != default:
                    raise ValueError(f"{name}: got {value}; it applies to dataset wordnet only, and dataset is "
                                     f"{self.dataset}: leave it out")
        check_dataset(self.dataset)  # reads the files once per process: a bad one fails before a run writes
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        data = handler(self)
        if self.dataset != "wordnet":
            for name in WORDNET_FIELDS:
                data.pop(name, None)
        return data

    @property
    def classes(self) -> int:
        """|C| of the data set (lets run configs check task sizes before loading it)."""
        return DATASET_CLASSES[self.dataset]

    @property
    def input_spec(self) -> InputSpec:
        """The data set's inputs, as the world samples them (without building it)."""
        if self.dataset == "wordnet":
            return InputSpec((self.length,), torch.int64, vocabulary=self.vocab)
        return {"digits": InputSpec((1, 8, 8), torch.float32),
                "fashion_mnist": InputSpec((1, 28, 28), torch.float32)}[self.dataset]


def build_finite_world(config: FiniteWorldConfig, generator: torch.Generator) -> FiniteWorld:
    """The ``test`` view of a bundled data set; the split is drawn from ``generator``."""
    if config.dataset == "wordnet":
        return wordnet_world(config.split, generator, vocab=config.vocab, length=config.length, prior=config.prior)
    features, labels = load_dataset(config.dataset)
    scale = PIXEL_SCALE.get(config.dataset)
    return FiniteWorld.from_arrays(features, labels, config.split, generator, prior=config.prior,
                                   dtype=None if scale is None else torch.float32, scale=scale)
