"""The experiments of [Arora19] reproduced in shape (``preadapt reproduce arora2019``; docs/reproduction.md).

Neither of the paper's data sets (Wiki-3029, CIFAR-100) can be downloaded here. The reproduction runs
its protocols on worlds this machine can build or install: a topic world at the paper's scale (3029
classes × 200 sentences, split 70/10/20: the Wiki-3029 analogue), Fashion-MNIST (the image row) and
WordNet glosses (a real text world), each a ``finite`` world. It is three sweeps, each resumable and
parallel like any sweep (``preadapt.experiment.sweep``), in folders of the output directory:

- ``table1``: per data row (a world and an encoder), a supervised and a CURL representation; the
  report reads TR (the linear probe at ``TR_SHOTS`` shots per class), μ (the mean classifier on every
  training point) and μ-5 (the mean classifier on 5 shots, in ≥ 5 draws) at AVG-2, AVG-k (k = 10, or 5
  where there are 10 classes), TOP-1 and TOP-R;
- ``table2``: CURL with blocks of b = 1, 2, 5, 10 on the topic world, with a bag-of-words encoder; its
  checkpoints give the supervised loss against the unsupervised train and test losses over training;
- ``figure2``: CURL on a topic world of ``FIGURE2_CLASSES`` classes for several numbers of negatives
  k, each at several amounts of unlabeled data (training tuples), with a bag-of-words encoder (a GRU
  would encode k + 2 sentences per tuple);

The claims, their rules and the report are in
``preadapt.report.reproduction``; this module plans and runs.

``--scale small`` shrinks what it must to finish in minutes on 2 cores (fewer topic classes, fewer
tuples and test points) and says so in the report; ``--scale full`` is the paper's scale.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from preadapt.experiment.config import ConfigError, parse_config
from preadapt.experiment.executors import Executor
from preadapt.experiment.sweep import Sweep, SweepProgress, SweepSpec, SweepSummary, expand, run_sweep

SCALES = ("small", "full")
TR_SHOTS = 50  # labeled points per class of TR's linear head (the topic world's train split has 140)
MU_SHOTS = 5  # μ-5
FIGURE2_CLASSES = 20  # |C| of the figure 2 world: small enough that k can approach it


@dataclass(frozen=True)
class Scale:
    """What a scale sets: the topic world's classes, the pretraining's tuples and epochs, the
    evaluation's samples, Figure 2's grid, and the replicates per point."""

    name: str
    topic_classes: int
    tuples: int
    epochs: int
    samples: int
    test_per_class: int
    probe_tasks: int
    negatives: tuple[int, ...]
    amounts: tuple[int, ...]
    replicates: int
    note: str
    loss_checkpoints: tuple[int, ...] = (0, 10, 20, 40, 80, 160, 320)  # Table 2's, besides the last


SCALE_SETTINGS = {
    "small": Scale("small", topic_classes=100, tuples=30000, epochs=4, samples=3000, test_per_class=40, probe_tasks=20,
                   negatives=(1, 4, 16), amounts=(2000, 8000, 32000), replicates=1,
                   note="--scale small: the topic world has 100 classes, not the paper's 3029; 30,000 training "
                        "tuples × 4 epochs; one seed per point (intervals are each run's own)"),
    "full": Scale("full", topic_classes=3029, tuples=300000, epochs=5, samples=20000, test_per_class=40,
                  probe_tasks=200, negatives=(1, 4, 16, 64), amounts=(4000, 16000, 64000, 256000), replicates=3,
                  note="--scale full: the paper's 3029 topic classes × 200 sentences; 3 seeds per point"),
}


def topic_world(classes: int) -> dict[str, Any]:
    """The Wiki-3029 analogue: ``classes`` topics × 200 sentences over 2000 words, split 70/10/20; 30 % of
    a sentence's words from the shared background distribution."""
    return {"kind": "topics", "classes": classes, "vocab": 2000, "background": 0.3, "concentration": 0.1,
            "min_length": 8, "max_length": 24, "prior": "uniform", "sentences_per_class": 200,
            "split": [0.7, 0.1, 0.2]}


GRU = {"kind": "gru", "vocab": 2000, "embed_dim": 32, "hidden": 64, "out_dim": 32, "norm_bound": 5.0}
BOW = {"kind": "bow", "vocab": 2000, "embed_dim": 64, "out_dim": 32, "norm_bound": 5.0}


@dataclass(frozen=True)
class Row:
    """A data row of Table 1: a world and an encoder, the k of AVG-k and the R of TOP-R, TR's shots per
    class, the pretraining's tuples and epochs (the same for both representations of the row), and
    the paper's data set whose numbers it is compared with (None: no counterpart)."""

    label: str
    world: dict[str, Any]
    encoder: dict[str, Any]
    avg_k: int
    top_r: int
    tr_shots: int
    tuples: int
    epochs: int
    paper: str | None


def table1_rows(scale: Scale) -> list[Row]:
    """The data rows. WordNet's smallest class has 29 training glosses, so TR takes 20 per class there;
    at ``--scale small`` the CNN trains on fewer tuples (a 28×28 image costs far more than a sentence)."""
    topics = topic_world(scale.topic_classes)
    small = scale.name == "small"
    wordnet = {"kind": "finite", "dataset": "wordnet", "split": [0.7, 0.1, 0.2]}
    return [
        Row("topics-gru", topics, dict(GRU), 10, 10, TR_SHOTS, scale.tuples, scale.epochs, "Wiki-3029"),
        Row("fashion_mnist-cnn", {"kind": "finite", "dataset": "fashion_mnist", "split": [0.7, 0.1, 0.2]},
            {"kind": "cnn", "widths": [16, 32], "out_dim": 32, "norm_bound": 5.0}, 5, 5, TR_SHOTS,
            10000 if small else scale.tuples, 2 if small else scale.epochs, "CIFAR-100"),
        Row("wordnet-bow", wordnet, {"kind": "bow", "vocab": 5002, "embed_dim": 64, "out_dim": 32, "norm_bound": 5.0},
            10, 10, 20, scale.tuples, scale.epochs, None),
        Row("wordnet-gru", wordnet, {**GRU, "vocab": 5002}, 10, 10, 20, scale.tuples, 2 if small else scale.epochs,
            None),
    ]


def _evaluate(scale: Scale, avg_k: int, top_r: int, tr_shots: int = TR_SHOTS) -> dict[str, Any]:
    return {"samples": scale.samples, "mean_samples": 100, "test_per_class": scale.test_per_class,
            "task_classes": sorted({2, avg_k}), "top_r": sorted({1, top_r}), "probe_tasks": scale.probe_tasks,
            "probe_shots": tr_shots, "probe_val": 20, "star_samples": 30, "shots": [MU_SHOTS, tr_shots], "draws": 5}


def _base(name: str, scale: Scale, world: dict, encoder: dict, avg_k: int, top_r: int,
          tr_shots: int = TR_SHOTS) -> dict[str, Any]:
    return {"name": name, "device": "auto", "threads": 1, "world": world, "encoder": encoder,
            "objective": {"kind": "curl", "loss": "logistic", "negatives": 1, "block_size": 1},
            "pretrain": {"tuples": scale.tuples, "epochs": scale.epochs, "batch_size": 256, "optimizer": "adam",
                         "lr": 0.01, "checkpoints": []},
            "evaluate": _evaluate(scale, avg_k, top_r, tr_shots)}


@dataclass
class Plan:
    """The sweeps of a reproduction, and the Table 1 rows left out (label → why: a data set missing)."""

    scale: Scale
    sweeps: dict[str, Sweep]
    rows: list[Row]
    missing: dict[str, str] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """What the report needs to know of the plan (stored as ``plan.json``)."""
        return {"scale": self.scale.name, "note": self.scale.note, "parts": list(self.sweeps),
                "rows": [{"label": row.label, "avg_k": row.avg_k, "top_r": row.top_r, "paper": row.paper,
                          "tr_shots": row.tr_shots} for row in self.rows],
                "missing": self.missing, "tr_shots": TR_SHOTS, "mu_shots": MU_SHOTS,
                "negatives": list(self.scale.negatives), "amounts": list(self.scale.amounts),
                "figure2_classes": FIGURE2_CLASSES}


def _available(row: Row, scale: Scale) -> str | None:
    """None when the row's world validates here; else the one-line reason (a data set not installed)."""
    try:
        parse_config(_base("check", scale, row.world, row.encoder, row.avg_k, row.top_r, row.tr_shots))
    except ConfigError as error:
        return str(error)
    return None


def plan_arora2019(scale: str | Scale = "small", rows_wanted: tuple[str, ...] | None = None) -> Plan:
    """The three sweeps of ``preadapt reproduce arora2019`` at ``scale`` (a name of ``SCALES``, or a
    ``Scale`` of one's own: a test's tiny one); Table 1 rows whose data set is not installed are left out
    with the reason, and so are rows not in ``rows_wanted`` (None: all). The topic row is always kept."""
    if isinstance(scale, str) and scale not in SCALES:
        raise ConfigError(f"--scale: got {scale!r}; allowed: {', '.join(SCALES)}")
    settings = SCALE_SETTINGS[scale] if isinstance(scale, str) else scale
    rows, missing = [], {}
    for row in table1_rows(settings):
        if rows_wanted is not None and row.label not in rows_wanted and not row.label.startswith("topics"):
            missing[row.label] = "not asked for"
            continue
        reason = _available(row, settings)
        if reason is None:
            rows.append(row)
        else:
            missing[row.label] = reason
    supervised = {"kind": "supervised"}
    curl = {"kind": "curl", "loss": "logistic", "negatives": 1, "block_size": 1}
    topics = rows[0]
    first = _base("table1", settings, topics.world, topics.encoder, topics.avg_k, topics.top_r)
    table1 = {
        "name": "table1", "base": first, "replicates": settings.replicates,
        "grid": {"objective": [supervised, curl]},
        # the encoder first: it names the zip axis, and no two rows share one (the wordnet rows share a world)
        "zip": {"encoder": [row.encoder for row in rows], "world": [row.world for row in rows],
                "evaluate": [_evaluate(settings, row.avg_k, row.top_r, row.tr_shots) for row in rows],
                "pretrain.tuples": [row.tuples for row in rows], "pretrain.epochs": [row.epochs for row in rows]},
        "labels": {"objective": ["supervised", "CURL"], "encoder": [row.label for row in rows]},
    }
    # Table 2 and Figure 2 with a bag-of-words encoder: a tuple has 2b + 1 sentences with blocks of b,
    # k + 2 with k negatives, too many to run through a GRU in minutes
    second = _base("table2", settings, topics.world, dict(BOW), topics.avg_k, topics.top_r)
    second["evaluate"]["shots"] = []
    second["pretrain"]["checkpoints"] = list(settings.loss_checkpoints)  # b = 1's: the losses over training (Figure 2)
    table2 = {"name": "table2", "base": second, "replicates": settings.replicates,
              "grid": {"objective.block_size": [1, 2, 5, 10]}}
    small = _base("figure2", settings, topic_world(FIGURE2_CLASSES), dict(BOW), 10, 10)
    small["evaluate"]["shots"] = []
    small["pretrain"]["epochs"] = 2
    figure2 = {"name": "figure2", "base": small, "replicates": settings.replicates,
               "grid": {"objective.negatives": list(settings.negatives), "pretrain.tuples": list(settings.amounts)}}
    sweeps = {name: expand(SweepSpec.model_validate(spec), name, Path("."))
              for name, spec in (("table1", table1), ("table2", table2), ("figure2", figure2))}
    return Plan(settings, sweeps, rows, missing)


MINILM_PER_CLASS = {"small": 30, "full": None}  # glosses per class the frozen model embeds (None: all)


def cache_directory() -> Path:
    """Where the frozen model's sentence features are kept across reproductions: ``$PREADAPT_CACHE``, else
    ``~/.cache/preadapt``; the features sit under the model's id (``encoders.pretrained``), keyed by text."""
    root = os.environ.get("PREADAPT_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "preadapt"


def minilm_missing() -> str | None:
    """Why the MiniLM rows cannot be made here (the ``text`` extra or the WordNet files missing), or None."""
    try:
        from preadapt.encoders.pretrained import load_sentence_model

        load_sentence_model("cpu")
    except ImportError as error:
        return str(error).splitlines()[0]
    try:
        parse_config({"world": {"kind": "finite", "dataset": "wordnet"}, "encoder": {"kind": "bow", "vocab": 5002}})
    except ConfigError as error:
        return str(error)
    return None


def run_minilm(plan: Plan, out: Path) -> Path | None:
    """The frozen MiniLM sentence encoder as θ_FM on WordNet glosses: its features of the gloss texts
    (``MINILM_PER_CLASS`` per class, drawn with a fixed seed, at ``--scale small``), cached on disk by
    model and sentence, evaluated as a finite world of features (the identity encoder, the wordnet rows'
    evaluation settings, the split seeded as Table 1's first replicate) → ``out/minilm/results.csv``.
    Kept when it is there already (a resumed reproduction); None when the rows cannot be made here."""
    import numpy as np
    import torch

    from preadapt.encoders import ENCODERS
    from preadapt.encoders.pretrained import FrozenTextEncoder
    from preadapt.experiment.run import evaluate
    from preadapt.worlds import FiniteWorld, wordnet_glosses
    from preadapt.worlds.sampling import make_generator

    folder = out / "minilm"
    target = folder / "results.csv"
    if target.is_file():
        return target
    texts, labels = wordnet_glosses()
    labels = np.asarray(labels)
    keep = MINILM_PER_CLASS.get(plan.scale.name, 30)
    if keep is not None:
        rng = np.random.default_rng(0)
        chosen = [np.sort(rng.choice(np.flatnonzero(labels == c), min(keep, int((labels == c).sum())), replace=False))
                  for c in np.unique(labels)]
        index = np.sort(np.concatenate(chosen))
        texts, labels = [texts[i] for i in index], labels[index]
    encoder = FrozenTextEncoder(normalize=True, cache_dir=cache_directory() / "sentences")
    features = encoder.embed(list(texts))  # (n, 384), unit rows
    seed = plan.sweeps["table1"].runs[0].config.seed
    world = FiniteWorld.from_arrays(features, labels, [0.7, 0.1, 0.2], make_generator(seed, "world"))
    identity = ENCODERS.build(ENCODERS.parse({"kind": "identity"}), world.input_shape, torch.Generator())
    row = next(r for r in plan.rows if r.label.startswith("wordnet"))
    rows = evaluate(identity, world, _evaluate(plan.scale, row.avg_k, row.top_r, row.tr_shots), seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows.assign(glosses=len(texts)).to_csv(target, index=False)
    return target


class ReproductionReportWriter(Protocol):
    """Writes the reproduction's report into ``out`` from the plan's description and the parts' folders
    (``preadapt.report.reproduction.write_reproduction_report``) and returns its path."""

    def __call__(self, out: Path, plan: dict[str, Any], /) -> Path: ...


@dataclass
class ReproductionSummary:
    out: Path
    summaries: dict[str, SweepSummary]
    report: Path | None

    @property
    def failed(self) -> list[str]:
        return [run for summary in self.summaries.values() for run in summary.failed]

    @property
    def interrupted(self) -> bool:
        return any(summary.interrupted for summary in self.summaries.values())


def run_reproduction(plan: Plan, out: str | Path, make_executor: Callable[[], Executor],
                     progress: Callable[[str, SweepProgress], None] | None = None,
                     report: ReproductionReportWriter | None = None,
                     sweep_report=None) -> ReproductionSummary:
    """Run the plan's sweeps one after another into ``out/PART`` (each resumable: finished runs are kept),
    write ``out/plan.json`` and, with a ``report`` writer, ``out/report.html``. ``make_executor()`` gives a
    fresh executor per sweep; ``progress(part, counts)`` follows each sweep; ``sweep_report`` writes each
    sweep's own report in its folder (None: none). Stops after a sweep that was interrupted."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    described = plan.describe()
    (out / "plan.json").write_text(json.dumps(described, indent=2))
    summaries: dict[str, SweepSummary] = {}
    for name, sweep in plan.sweeps.items():
        executor = make_executor()
        summaries[name] = run_sweep(sweep, out / name, executor,
                                    progress=None if progress is None else (lambda counts, name=name: progress(name, counts)),
                                    report=sweep_report)
        if summaries[name].interrupted:
            return ReproductionSummary(out, summaries, None)
    missing = minilm_missing()
    if missing is None:
        run_minilm(plan, out)
    else:
        described["minilm_missing"] = missing
    path = report(out, copy.deepcopy(described)) if report is not None else None
    return ReproductionSummary(out, summaries, path)
