"""Real data sets read from files that Debian packages install; nothing is downloaded.

- ``fashion_mnist`` [Xiao17]: the IDX files of ``dataset-fashion-mnist``, 70,000 images of 28×28 grey
  pixels (the 60,000 of the train file, then the 10,000 of the t10k file) in 10 balanced classes.
- ``wordnet`` [Miller95]: the synsets of WordNet 3.0 (``wordnet-base``, data.noun, data.verb, data.adj,
  data.adv, in that order), one example per synset: its gloss's definition, labeled by the synset's
  lexicographer file (``lex_filenum``, 45 classes 00..44 of very unequal size).

Each directory may be moved by an environment variable (``DataSource.variable``). A missing or corrupt
file raises ``DatasetError``, one line naming the file and the package that provides it. Parsed arrays
are cached per process, keyed by the files' paths, sizes and modification times.

[Xiao17] H. Xiao, K. Rasul, R. Vollgraf, Fashion-MNIST: a novel image dataset for benchmarking machine
learning algorithms, arXiv:1708.07747, 2017. [Miller95] G. A. Miller, WordNet: a lexical database for
English, Communications of the ACM 38(11), 1995.
"""

from __future__ import annotations

import functools
import gzip
import os
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PADDING, UNKNOWN = 0, 1  # the first two token ids of an encoded text
WORDNET_CLASSES = 45  # lexicographer files 00..44 (lexnames(5WN))


class DatasetError(ValueError):
    """A data file that is missing or corrupt; the message is one line naming the file and its package."""


@dataclass(frozen=True)
class DataSource:
    """Where a data set's files are: ``files`` in ``default``, the directory the Debian ``package``
    installs, unless the environment variable ``variable`` names another directory."""

    name: str
    package: str
    default: str
    variable: str
    files: tuple[str, ...]

    def directory(self) -> Path:
        return Path(os.environ.get(self.variable) or self.default)

    def paths(self) -> list[Path]:
        return [self.directory() / file for file in self.files]

    def problem(self, path: Path, what: str, missing: bool = False) -> DatasetError:
        """The one-line error for a bad file ``path``: ``what`` is wrong with it."""
        if os.environ.get(self.variable):
            where = (f"in the directory {self.variable} names; the Debian package {self.package} installs it in "
                     f"{self.default}")
        else:
            where = f"Debian package {self.package}: apt-get install {'' if missing else '--reinstall '}{self.package}"
        return DatasetError(f"dataset: {self.name} needs {path} ({where}); {what}")

    def stamp(self) -> tuple[tuple[str, int, int], ...]:
        """(path, size, mtime) of every file, the key of the parsed data's cache; a missing file raises."""
        stamps = []
        for path in self.paths():
            if not path.is_file():
                raise self.problem(path, "it is missing" if not path.exists() else "it is not a file", missing=True)
            status = path.stat()
            stamps.append((str(path), status.st_size, status.st_mtime_ns))
        return tuple(stamps)


FASHION_MNIST = DataSource(
    "fashion_mnist", "dataset-fashion-mnist", "/usr/share/datasets/fashion-mnist", "PREADAPT_DATA_FASHION_MNIST",
    ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
     "t10k-labels-idx1-ubyte.gz"))
WORDNET = DataSource("wordnet", "wordnet-base", "/usr/share/wordnet", "PREADAPT_DATA_WORDNET",
                     ("data.noun", "data.verb", "data.adj", "data.adv"))
SOURCES = {source.name: source for source in (FASHION_MNIST, WORDNET)}


def read_idx(data: bytes, dims: int) -> np.ndarray:
    """An IDX array of unsigned bytes (LeCun's MNIST format: magic 0x0000 08 ``dims``, then ``dims``
    big-endian int32 sizes, then the bytes) → uint8 array of those sizes. A ValueError says what is wrong.

    >>> read_idx(bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, *range(6)]), dims=2).tolist()
    [[0, 1, 2], [3, 4, 5]]
    >>> read_idx(bytes([0, 0, 8, 1, 0, 0, 0, 9, 7]), dims=1)
    Traceback (most recent call last):
    ...
    ValueError: it holds 1 bytes after the header; the header's sizes (9,) need 9
    """
    magic = 0x0800 + dims
    header = 4 + 4 * dims
    found = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if found != magic:
        shown = "none (the file is shorter than 4 bytes)" if found is None else f"0x{found:08x}"
        raise ValueError(f"its magic number is {shown}; expected 0x{magic:08x} (IDX unsigned bytes in {dims} "
                         f"dimension{'s' if dims > 1 else ''})")
    if len(data) < header:
        raise ValueError(f"its header is cut short: {len(data)} bytes, expected {header}")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    if len(data) - header != int(np.prod(shape)):
        raise ValueError(f"it holds {len(data) - header} bytes after the header; the header's sizes {shape} need "
                         f"{int(np.prod(shape))}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _gunzip(source: DataSource, path: Path) -> bytes:
    try:
        return gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as error:  # not gzip, truncated, or a bad CRC or length
        reason = " ".join(str(error).split()) or type(error).__name__
        raise source.problem(path, f"it is not a whole gzip file ({reason})") from None


def load_fashion_mnist() -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST, all of it: images (70000, 1, 28, 28) uint8 (pixels 0..255; the world divides by
    255) and labels (70000,) int64 in 0..9, the train file's 60,000 then the t10k file's 10,000.

    The arrays are shared by every caller in the process (cached): read them, never write them.
    Raises ``DatasetError`` for a missing or corrupt file (bad gzip, magic number or size).
    """
    return _fashion_mnist(FASHION_MNIST.stamp())


@functools.cache
def _fashion_mnist(stamp: tuple[tuple[str, int, int], ...]) -> tuple[np.ndarray, np.ndarray]:
    paths = [Path(path) for path, _, _ in stamp]
    parts = []
    for (images_path, labels_path), count in zip((paths[:2], paths[2:]), (60000, 10000)):
        arrays = []
        for path, dims, shape in ((images_path, 3, (count, 28, 28)), (labels_path, 1, (count,))):
            try:
                array = read_idx(_gunzip(FASHION_MNIST, path), dims)
            except ValueError as error:
                if isinstance(error, DatasetError):
                    raise
                raise FASHION_MNIST.problem(path, str(error)) from None
            if array.shape != shape:
                raise FASHION_MNIST.problem(path, f"it holds an array of shape {array.shape}; expected {shape}")
            arrays.append(array)
        images, labels = arrays
        if labels.max() > 9:
            raise FASHION_MNIST.problem(labels_path, f"it has label {int(labels.max())}; expected 0..9")
        parts.append((images, labels))
    images = np.concatenate([part[0] for part in parts])[:, None]  # (N, 1, 28, 28)
    labels = np.concatenate([part[1] for part in parts]).astype(np.int64)
    return images, labels


def gloss_definition(gloss: str) -> str:
    """The definition of a WordNet gloss: the text before its first double quote (the example
    sentences are quoted), without the separators and spaces that end it.

    >>> gloss_definition('draw air into, and expel out of, the lungs; "I can breathe better"; "he respired"')
    'draw air into, and expel out of, the lungs'
    """
    return gloss.split('"', 1)[0].rstrip(" ;:,")


WORD = re.compile(r"[a-z]+")


def tokenize(text: str) -> list[str]:
    """The words of ``text``: maximal runs of the letters a-z after lowercasing (digits, hyphens,
    apostrophes and other characters separate words and are dropped).

    >>> tokenize("A 19th-century cow's moo")
    ['a', 'th', 'century', 'cow', 's', 'moo']
    """
    return WORD.findall(text.lower())


class Corpus:
    """Texts tokenized once (``tokenize``), to be encoded as word ids for any split.

    ``words: (W,)`` the distinct words in alphabetical order; ``tokens: (T,)`` int32, each token's index
    into ``words``, text after text; ``offsets: (N + 1,)``: text i's tokens are
    ``tokens[offsets[i]:offsets[i + 1]]``.

    >>> corpus = Corpus(["the cat", "the dog the end", "a gnu"])
    >>> ids, words = corpus.encode([True, True, False], vocab=5, length=3)
    >>> words  # padding, unknown, then the 3 most frequent training words (ties alphabetical)
    ['<pad>', '<unk>', 'the', 'cat', 'dog']
    >>> ids.tolist()  # 'end' (training) and 'a', 'gnu' (test only) are out of the vocabulary
    [[2, 3, 0], [2, 4, 2], [1, 1, 0]]
    """

    def __init__(self, texts: Sequence[str]) -> None:
        tokenized = [tokenize(text) for text in texts]
        self.words = np.array(sorted({word for words in tokenized for word in words}), dtype=str)
        index = {word: i for i, word in enumerate(self.words.tolist())}
        lengths = np.array([len(words) for words in tokenized], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(lengths)])
        self.tokens = np.fromiter((index[word] for words in tokenized for word in words), dtype=np.int32,
                                  count=int(self.offsets[-1]))

    def __len__(self) -> int:
        return self.offsets.size - 1

    def encode(self, train, vocab: int, length: int) -> tuple[np.ndarray, list[str]]:
        """Every text as ``length`` word ids, over a vocabulary built on the texts where ``train: (N,)``
        is true only → (ids (N, length), words).

        The vocabulary: id 0 = padding, id 1 = an unknown word, ids 2.. the ``vocab`` − 2 most frequent
        words of the training texts (ties in alphabetical order; fewer if they have fewer words), so ids
        lie in [0, vocab). A text keeps its first ``length`` tokens and is right-padded with 0. ``ids`` is
        int16 (int32 for vocab > 32768); ``words[i]`` is the word of id i ('<pad>', '<unk>', ...).
        """
        train = np.asarray(train, dtype=bool).reshape(-1)
        if train.size != len(self):
            raise ValueError(f"train: got {train.size} flags; expected one per text ({len(self)})")
        if vocab < 3 or length < 1:
            raise ValueError(f"vocab must be ≥ 3 and length ≥ 1; got vocab {vocab}, length {length}")
        sizes = np.diff(self.offsets)  # (N,) tokens per text
        counts = np.bincount(self.tokens[np.repeat(train, sizes)], minlength=self.words.size)  # (W,)
        order = np.lexsort((np.arange(self.words.size), -counts))  # most frequent first, then alphabetical
        kept = order[: vocab - 2]
        kept = kept[counts[kept] > 0]
        lookup = np.full(self.words.size, UNKNOWN, dtype=np.int64)
        lookup[kept] = np.arange(2, 2 + kept.size)
        text = np.repeat(np.arange(len(self)), sizes)  # (T,) the text of each token
        position = np.arange(self.tokens.size) - self.offsets[:-1][text]  # (T,) its place in the text
        inside = position < length
        ids = np.zeros((len(self), length), dtype=np.int16 if vocab <= 2**15 else np.int32)
        ids[text[inside], position[inside]] = lookup[self.tokens[inside]]
        return ids, ["<pad>", "<unk>", *self.words[kept].tolist()]


SYNSET_TYPES = {"data.noun": {b"n"}, "data.verb": {b"v"}, "data.adj": {b"a", b"s"}, "data.adv": {b"r"}}


def _read_synsets(path: Path) -> tuple[list[str], list[int]]:
    """The definitions and lexicographer file numbers of one data.* file, checked as it is read: every
    line not of the license header (two leading spaces) is a synset whose first field is its own byte
    offset in the file (WordNet's wndb(5WN) format), so a cut or edited file is caught."""
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        raise WORDNET.problem(path, "it does not end with a line break (cut short?)")
    definitions, labels = [], []
    types = SYNSET_TYPES[path.name]
    start = 0
    for number, line in enumerate(data[:-1].split(b"\n"), 1):
        offset, start = start, start + len(line) + 1
        if line.startswith(b"  "):
            continue
        head, bar, gloss = line.partition(b" | ")
        fields = head.split(b" ", 3)
        if (not bar or len(fields) < 4 or fields[0] != b"%08d" % offset or len(fields[1]) != 2
                or not fields[1].isdigit() or int(fields[1]) >= WORDNET_CLASSES or fields[2] not in types):
            raise WORDNET.problem(path, f"line {number} is not a synset line at byte offset {offset} (expected "
                                        f"'{offset:08d} LEX_FILENUM SS_TYPE ... | GLOSS', LEX_FILENUM 00..44)")
        try:
            definitions.append(gloss_definition(gloss.decode("utf-8").strip()))
        except UnicodeDecodeError:
            raise WORDNET.problem(path, f"line {number} is not UTF-8 text") from None
        labels.append(int(fields[1]))
    if not labels:
        raise WORDNET.problem(path, "it holds no synset line")
    return definitions, labels


@functools.cache
def _wordnet(stamp: tuple[tuple[str, int, int], ...]) -> tuple[tuple[str, ...], np.ndarray, Corpus]:
    definitions, labels = [], []
    for path, _, _ in stamp:
        found_definitions, found_labels = _read_synsets(Path(path))
        definitions += found_definitions
        labels += found_labels
    labels = np.array(labels, dtype=np.int64)
    absent = sorted(set(range(WORDNET_CLASSES)) - set(labels.tolist()))
    if absent:
        raise WORDNET.problem(Path(stamp[0][0]).parent / "data.*", f"no synset is in lexicographer file "
                              f"{', '.join(f'{a:02d}' for a in absent)}; expected all {WORDNET_CLASSES}")
    return tuple(definitions), labels, Corpus(definitions)


def wordnet_glosses() -> tuple[list[str], np.ndarray]:
    """WordNet's glosses as the ``wordnet`` world's examples, in its order: definitions (N,) strings
    (``gloss_definition``: the example sentences dropped) and labels (N,) int64, the lexicographer
    file 0..44 (N = 117,659 synsets in WordNet 3.0). The world's token ids are ``tokenize`` of these texts.

    Raises ``DatasetError`` for a missing or corrupt data file.
    """
    definitions, labels, _ = _wordnet(WORDNET.stamp())
    return list(definitions), labels.copy()


def wordnet_corpus() -> tuple[Corpus, np.ndarray]:
    """The ``wordnet`` world's texts tokenized (a ``Corpus``, shared: cached) and their labels (N,)."""
    _, labels, corpus = _wordnet(WORDNET.stamp())
    return corpus, labels.copy()


def check_dataset(name: str) -> None:
    """Read data set ``name``'s files, once per process (cached), so that a missing or corrupt file
    raises ``DatasetError`` before a run writes anything; a data set without files passes."""
    if name == "fashion_mnist":
        load_fashion_mnist()
    elif name == "wordnet":
        wordnet_corpus()
