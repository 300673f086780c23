"""The one pipeline: config → world → tuples → encoder → pretrain → per checkpoint: estimates and
bound checks → store → report (DESIGN.md section 1). The report is written by a writer passed in
(``run(..., report=...)``): report/ is a layer above this one (``preadapt.run`` passes its writer)."""

from __future__ import annotations

import datetime as dt
import sqlite3
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import numpy as np
import pandas as pd
import torch
from pydantic import ValidationError
from torch import nn

from preadapt.bounds import BoundCheck, Training, every_f_checks, theorem_checks
from preadapt.bounds.rademacher import class_complexity, tuple_points
from preadapt.encoders import ENCODERS
from preadapt.estimate.quantities import Evaluation, Measurement, build_adapters, evaluate_encoder
from preadapt.estimate.spec import EvaluateConfig
from preadapt.experiment.config import Config, ConfigError, load_config, parse_config
from preadapt.experiment.store import Store, tidy_frame, timings_frame
from preadapt.experiment.testing import gate
from preadapt.objectives import OBJECTIVES, Objective
from preadapt.pretrain import DivergenceError, pretrain
from preadapt.timing import Timings
from preadapt.worlds import WORLDS, World, tau
from preadapt.worlds.finite import split_of
from preadapt.worlds.base import TaskedWorld
from preadapt.worlds.prior import positive_classes
from preadapt.worlds.tasks import TaskConfig, TaskViews, derive_task
from preadapt.worlds.sampling import draw_tuples, make_generator

OUTPUT_FILES = ["config.yaml", "results.sqlite", "results.sqlite-wal", "results.sqlite-shm", "results.csv",
                "report.html", "report.png", "figures", "checkpoints"]
"""What a run writes into its directory (the store's write-ahead journal included: a stale one must
never meet a new database)."""


@dataclass
class RunResult:
    """What a run produced: the tidy ``results`` table, the bound checks per step, where the files
    went (``out`` is None when nothing was written), and where the time went (``timings``: the
    store's ``timings`` table of the run, ``TIMING_COLUMNS``)."""

    config: Config
    run_id: str
    status: str
    results: pd.DataFrame
    checks: dict[int, list[BoundCheck]] = field(default_factory=dict)
    out: Path | None = None
    error: str | None = None
    timings: pd.DataFrame | None = None


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: got 'cuda' but CUDA is not available here; allowed: cpu, auto")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def _coerce_config(config: Config | dict | str | Path) -> Config:
    if isinstance(config, Config):
        return config
    if isinstance(config, dict):
        return parse_config(config)
    return load_config(config)


def interrupted_here(out: Path, run_id: str) -> bool:
    """Whether ``out`` holds the run ``run_id`` stopped by Ctrl-C: the store of a single run (not a
    sweep's) that records this run, and only it, as interrupted. Such a directory is run again
    without ``force``: same config, same id, nothing of another run's to lose."""
    if not (out / "results.sqlite").is_file():
        return False
    try:
        store = Store(out / "results.sqlite")
        try:
            return store.get_meta("sweep") is None and store.statuses() == {run_id: "interrupted"}
        finally:
            store.close()
    except sqlite3.Error:  # not a store of ours: never overwritten without --force
        return False


def _remove_outputs(out: Path) -> None:
    """Remove preadapt's own files from ``out`` (OUTPUT_FILES); anything else stays."""
    for name in OUTPUT_FILES:
        target = out / name
        if target.is_dir():
            for child in sorted(target.rglob("*"), reverse=True):
                child.rmdir() if child.is_dir() else child.unlink()
            target.rmdir()
        elif target.exists():
            target.unlink()


@contextmanager
def output_folder(out: Path, deepest: Path | None = None, error: type[ConfigError] = ConfigError) -> Iterator[None]:
    """Where the block writes into ``out``: if it fails (OSError), the folders missing on entry
    along ``deepest`` (default ``out``) and its parents are removed again, and one line naming ``out``
    is raised (``error``): nothing half-made."""
    deepest = out if deepest is None else deepest
    missing = [folder for folder in (deepest, *deepest.parents) if not folder.exists()]  # deepest first
    try:
        yield
    except OSError as failure:
        for folder in missing:
            try:
                folder.rmdir()
            except OSError:
                pass
        raise error(f"--out: cannot write {out} ({failure.strerror or failure}: {failure.filename or out}); "
                    f"choose a directory you can write to") from None


def prepare_output(out: Path, force: bool, run_id: str | None = None) -> None:
    """Refuse a non-empty directory unless ``force`` or it holds the run ``run_id`` interrupted
    (``interrupted_here``); then remove preadapt's own outputs and create ``checkpoints/``. A
    directory that cannot be written is refused in one line (ConfigError) with nothing created."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out: {out} exists and is not a directory")
    with output_folder(out, out / "checkpoints"):
        if out.exists() and any(out.iterdir()):
            if not force and not (run_id is not None and interrupted_here(out, run_id)):
                raise ConfigError(f"--out: {out} is not empty; pass --force to overwrite it")
            _remove_outputs(out)
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)


def _git_revision() -> str | None:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                                text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def measurement_rows(measurements: list[Measurement], run_id: str, step: int) -> list[dict[str, Any]]:
    rows = []
    for m in measurements:
        e = m.estimate
        rows.append(dict(run=run_id, step=step, quantity=m.quantity, value=e.value, lower=e.lower, upper=e.upper,
                         n=e.n, level=e.level, method=e.method, **m.context))
    return rows


def _curl_loss_name(config: Config) -> str:
    """The ℓ of L_un: ``evaluate.loss``, else the objective's own when it is the CURL loss, else logistic."""
    if config.evaluate.loss is not None:
        return config.evaluate.loss
    return config.objective.curl_loss_name or "logistic"


def check_bounds(evaluation: Evaluation, world: World, evaluate_config: EvaluateConfig,
                 loss: str) -> list[BoundCheck]:
    """Every statement that holds for every f (``preadapt.bounds.every_f_checks``)."""
    return every_f_checks(evaluation, world.prior, evaluate_config, loss)


def _theorems(config: Config, encoder: nn.Module, objective: Objective, evaluations: dict[int, Evaluation],
              states: list[dict[str, torch.Tensor]], train_tuples, world: World, loss: str,
              timings: Timings) -> dict[int, list[BoundCheck]]:
    """Theorems 4.1 and 4.5 at every evaluated checkpoint, once all are known (the comparator is one of them);
    none without the class-level quantities (a world too big to enumerate: ``theorem_checks``). Timed as
    the stages ``rademacher`` (Rad_S of the class, ``class_complexity``) and ``theorems``."""
    if not all(evaluation.class_level for evaluation in evaluations.values()):
        return {}
    with timings.stage("rademacher"):
        complexity = class_complexity(encoder, states, tuple_points(train_tuples), config.bounds.rademacher_draws,
                                      make_generator(config.seed, "bounds", "rademacher"), config.evaluate.level)
    training = Training(config.objective.kind, config.objective.curl_loss_name, objective.negatives,
                        objective.block_size, len(train_tuples), complexity)
    with timings.stage("theorems"):
        return theorem_checks(evaluations, world.prior, training, loss, config.evaluate, config.bounds)


def attach_objective(objective: Objective, encoder: nn.Module, world: World, seed: int, device) -> None:
    """The objective's hooks (``preadapt.objectives.Objective``): ``use_prior`` gets the world's ρ
    (e.g. the debiased loss's τ⁺); when it ``needs_attach`` (parameters of its own, e.g. a supervised
    head), ``attach`` gets the number of latent classes and the encoder's output dimension d, learnt
    by encoding one input drawn with the generator ``attach``."""
    objective.use_prior(world.prior)
    if not objective.needs_attach:
        return
    with torch.no_grad():
        probe = world.sample(torch.zeros(1, dtype=torch.long), make_generator(seed, "attach"))
        dim = int(encoder(probe.to(device)).shape[-1])
    objective.attach(world.classes, dim, make_generator(seed, "objective"))


def task_views(world: World, task: TaskConfig | dict | None, seed: int) -> TaskViews | None:
    """Where a run's downstream tasks come from: a ``task`` section's views (derived from ``world``
    with the generator ``task``); else, for a world with a task world of its own (``TaskedWorld``: the
    hypercube's), that world as the ``id`` view; else None, tasks over the world's own classes."""
    if task is not None:
        return derive_task(world, task, make_generator(seed, "task"))
    if isinstance(world, TaskedWorld):
        return TaskViews(id=world.task_world(), ood=None)
    return None


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (or, under the command line, SIGTERM) inside a run: where it stopped and what was kept.

    A KeyboardInterrupt, so that code which stops on Ctrl-C still stops. ``step`` and ``stage``:
    where the run was (the step being trained, or the checkpoint being evaluated); ``evaluated``:
    the checkpoint steps whose rows were kept; ``status``: what the store records for the run
    (``interrupted``, or ``finished``/``failed`` when the run was recorded and only the report was
    left to write; None without a store); ``out``: the run's directory (None without files).
    """

    def __init__(self, run_id: str, step: int, stage: str, evaluated: list[int], total_steps: int,
                 status: str | None = None, out: Path | None = None) -> None:
        super().__init__(run_id)
        self.run_id, self.step, self.stage, self.evaluated, self.total_steps = run_id, step, stage, evaluated, total_steps
        self.status, self.out = status, out

    def __str__(self) -> str:
        return f"run {self.run_id} interrupted at step {self.step} of {self.total_steps} while {self.stage}"


class RunFailure(RuntimeError):
    """An error raised inside a run, with where it arose: the training step and the stage."""

    def __init__(self, failure: Exception, step: int, stage: str) -> None:
        super().__init__(f"{type(failure).__name__}: {failure} (at step {step}, {stage})")
        self.failure, self.step, self.stage = failure, step, stage


def describe_failure(failure: Exception) -> str:
    r"""The one-line reason a run failed, as stored in ``runs.error``.

    >>> describe_failure(ValueError("bad\n   thing"))
    'ValueError: bad thing'
    """
    if isinstance(failure, ValidationError):
        from preadapt.experiment.config import format_validation_error

        return f"invalid config: {format_validation_error(failure)}"
    text = str(failure) if isinstance(failure, RunFailure) else f"{type(failure).__name__}: {failure}"
    return " ".join(text.split())


def run_id_of(config: Config) -> str:
    """A run's id: its name and the first 8 hex digits of its config hash."""
    return f"{config.name}-{config.config_hash()[:8]}"


def run_provenance(config: Config, device: torch.device) -> dict[str, Any]:
    """The ``runs`` row of a run about to start (DESIGN.md section 3): its id, the config and where it runs."""
    config_hash = config.config_hash()
    return dict(run_id=run_id_of(config), config_hash=config_hash,
                config_json=config.model_dump_json(), started_at=utc_now(), preadapt_version=metadata.version("preadapt"),
                git_revision=_git_revision(), torch_version=torch.__version__, threads=torch.get_num_threads(),
                device=str(device), seed=config.seed)


def pipeline(config: Config, device: torch.device, run_id: str, rows: list[dict[str, Any]],
             checks: dict[int, list[BoundCheck]], checkpoint_dir: Path | None = None,
             progress: Callable[[str, int, int], None] | None = None,
             before_checkpoint: Callable[[int], None] | None = None,
             pretrained: Path | None = None, timings: Timings | None = None) -> tuple[str, str | None]:
    """The computation of one run, no files but the checkpoints: world, tuples, encoder, pretraining,
    and per checkpoint the estimates and bound checks, appended to ``rows`` (tidy records) and
    ``checks`` as they come. Returns (status, error): a divergence is ("failed", "diverged at step
    ...") with the checkpoints before it kept; any other error raised while training or evaluating
    propagates as a RunFailure naming the step and stage (the rows so far stay). Ctrl-C raises
    RunInterrupted (``status`` None) with ``rows`` holding whole checkpoints only, without the
    theorems. ``before_checkpoint(step)`` is called as each checkpoint is reached, before it is
    saved and evaluated (``run`` holds a test gate there).

    ``pretrained``: a file shared by the runs of a sweep that have one pretraining
    (``Config.pretraining_hash`` names it). When it holds the pretraining, its checkpoints are loaded
    and evaluated instead of training again (``replay_pretraining``); when it does not, the run trains
    and writes it there.

    ``timings``: where the time goes, by stage (``preadapt.timing``; a failure keeps what was measured):
    ``start-up`` (everything before pretraining but ``sampling``, from the Timings' start: the
    caller's set-up included), ``sampling`` (the M training tuples), ``pretraining`` (the training
    loop, or loading a shared pretraining, without the checkpoints' evaluation), ``evaluation`` (per
    checkpoint, by quantity: ``evaluate_encoder``'s stages), ``bound checks`` (``every f`` per
    checkpoint, then ``rademacher`` and ``theorems``) and ``storing`` (the checkpoint files)."""
    where = {"step": 0, "stage": "building the world and the training tuples"}
    timings = Timings() if timings is None else timings
    try:
        return _pipeline(config, device, run_id, rows, checks, checkpoint_dir, progress, before_checkpoint, where,
                         timings, pretrained)
    except RunInterrupted:
        raise
    except KeyboardInterrupt:
        evaluated = sorted({row["step"] for row in rows})
        raise RunInterrupted(run_id, where["step"], where["stage"], evaluated, config.pretrain.total_steps) from None


def _pipeline(config: Config, device: torch.device, run_id: str, rows: list[dict[str, Any]],
              checks: dict[int, list[BoundCheck]], checkpoint_dir: Path | None,
              progress: Callable[[str, int, int], None] | None, before_checkpoint: Callable[[int], None] | None,
              where: dict[str, Any], timings: Timings, pretrained: Path | None = None) -> tuple[str, str | None]:
    evaluations: dict[int, Evaluation] = {}
    states: list[dict[str, torch.Tensor]] = []
    objective_states: list[dict[str, torch.Tensor]] = []  # kept for the shared pretraining file only
    status, error = "finished", None
    seed = config.seed
    # The estimates' critical values need scipy.stats, which preadapt.estimate loads only when first used
    # (validating a config does not need its 0.4 s): load it now, in start-up, so that the first
    # checkpoint's evaluation time is the evaluation's.
    import scipy.stats  # noqa: F401

    world = WORLDS.build(config.world, make_generator(seed, "world"))
    task = task_views(world, config.task, seed)
    if task is not None and task.pretrain is not None:
        world = task.pretrain  # what pretraining sees (e.g. the seen classes only); the tasks keep their views
    objective = OBJECTIVES.build(config.objective)
    encoder = ENCODERS.build(config.encoder, world.input_shape, make_generator(seed, "encoder")).to(device)
    attach_objective(objective, encoder, world, seed, device)
    objective = objective.to(device)
    with timings.stage("sampling"):
        train_tuples = draw_tuples(split_of(world, "train"), config.pretrain.tuples,  # a held-out world's train view
                                   make_generator(seed, "train-tuples"), objective.negatives, objective.block_size,
                                   true_negatives=objective.true_negatives)
    steps = config.pretrain.checkpoint_steps
    loss_name = _curl_loss_name(config)
    adapters = build_adapters(config.evaluate)
    where.update(step=0, stage="training")

    def on_checkpoint(step: int, model: nn.Module) -> None:
        where.update(step=step, stage="evaluating the checkpoint")
        if before_checkpoint is not None:
            before_checkpoint(step)
        if checkpoint_dir is not None:
            with timings.stage("storing", apart=True):
                _write_whole(checkpoint_dir / f"step_{step:06d}.pt", partial(torch.save, model.state_dict()))
        with timings.stage("evaluation", apart=True):  # apart: not the training loop's time
            evaluation = evaluate_encoder(
                model, world, config.evaluate, seed, curl_loss_name=loss_name,
                negatives=objective.negatives, block_size=objective.block_size, objective=objective,
                train_tuples=train_tuples, device=device, adapters=adapters, task=task, timings=timings)
            evaluations[step] = evaluation
            states.append(_cpu_state(model))
            if pretrained is not None:
                objective_states.append(_cpu_state(objective))
        with timings.stage("bound checks", apart=True), timings.stage("every f"):
            checked = check_bounds(evaluation, world, config.evaluate, loss_name)
        measured = evaluation.measurements + [m for c in checked for m in c.measurements()]
        rows.extend(measurement_rows(measured, run_id, step))  # one operation: Ctrl-C keeps a checkpoint whole or not
        checks[step] = checked
        where.update(step=step + 1, stage="training")
        if progress is not None:
            progress("evaluate", len(checks), len(steps))

    def on_step(step: int, total: int, loss: float) -> None:
        where.update(step=step + 1)
        if progress is not None:
            progress("pretrain", step, total)

    def add_theorems() -> None:  # once every checkpoint is known: the comparator is one of them
        where.update(step=config.pretrain.total_steps, stage="checking the theorems")
        with timings.stage("bound checks"):
            theorems = _theorems(config, encoder, objective, evaluations, states, train_tuples, world, loss_name,
                                 timings)
        rows.extend([row for step, found in theorems.items()  # one operation, as above
                     for row in measurement_rows([m for c in found for m in c.measurements()], run_id, step)])
        for step, found in theorems.items():
            checks[step].extend(found)

    timings.rest("start-up")
    try:
        with timings.stage("pretraining"):  # the checkpoints' evaluation and files are stages apart
            shared = read_pretraining(pretrained, steps) if pretrained is not None else None
            if shared is not None:
                status, error = replay_pretraining(shared, encoder, objective, on_checkpoint)
            else:
                pretrain(encoder, objective, train_tuples, config.pretrain, make_generator(seed, "shuffle"),
                         on_checkpoint=on_checkpoint, device=device, progress=on_step)
    except DivergenceError as failure:
        status, error = "failed", str(failure)
    except Exception as failure:
        raise RunFailure(failure, where["step"], where["stage"]) from failure
    if pretrained is not None and shared is None:
        with timings.stage("storing"):
            write_pretraining(pretrained, list(evaluations), states, objective_states, status, error)
    if evaluations:  # also the checkpoints evaluated before a divergence
        add_theorems()
    return status, error


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().to("cpu", copy=True) for name, value in module.state_dict().items()}


PRETRAINING_FORMAT = 1  # the layout of a shared pretraining file


def write_pretraining(path: Path, steps: list[int], states: list[dict[str, torch.Tensor]],
                      objective_states: list[dict[str, torch.Tensor]], status: str, error: str | None) -> None:
    """Keep a run's pretraining for the runs that share it: the encoder's and the objective's state at
    each evaluated checkpoint ``steps`` (CPU copies), and how training ended (``status``, ``error``:
    a divergence keeps the checkpoints before it). Written whole (a reader never sees half a file)."""
    data = {"format": PRETRAINING_FORMAT, "steps": list(steps), "encoder": states, "objective": objective_states,
            "status": status, "error": error}
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_whole(path, partial(torch.save, data))


def read_pretraining(path: Path, steps: list[int]) -> dict[str, Any] | None:
    """The pretraining kept at ``path`` when it is one of these checkpoint ``steps`` (the whole list, or
    the steps before a divergence); None when there is none, or it cannot be read or does not fit: the
    run then trains itself."""
    if not path.is_file():
        return None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a file this version cannot read: train again (and write it anew)
        return None
    if not isinstance(data, dict) or data.get("format") != PRETRAINING_FORMAT:
        return None
    kept = list(data.get("steps", []))
    whole = kept == list(steps) and data.get("status") == "finished"
    cut = kept == list(steps)[:len(kept)] and data.get("status") == "failed"
    if not (whole or cut) or len(data.get("encoder", [])) != len(kept) or len(data.get("objective", [])) != len(kept):
        return None
    return data


def replay_pretraining(shared: dict[str, Any], encoder: nn.Module, objective: Objective,
                       on_checkpoint: Callable[[int, nn.Module], None]) -> tuple[str, str | None]:
    """Evaluate a kept pretraining: load each checkpoint's encoder and objective state and call
    ``on_checkpoint(step, encoder)`` as training would have (the encoder in eval mode), then leave the
    encoder in train mode, as ``pretrain`` does. Returns how the training ended (status, error). The
    loaded parameters are the trained ones bit for bit, so the rows are those of training again."""
    for step, encoder_state, objective_state in zip(shared["steps"], shared["encoder"], shared["objective"]):
        encoder.load_state_dict(encoder_state)
        objective.load_state_dict(objective_state)
        encoder.eval()
        on_checkpoint(int(step), encoder)
    encoder.train()
    return shared["status"], shared["error"]


class RunReportWriter(Protocol):
    """Writes a run's report into ``out`` and returns its path (``preadapt.report.html.write_report``):
    ``results`` is the tidy table, ``runs`` the store's provenance rows, ``config_yaml`` the resolved
    config as YAML, ``timings`` the run's stages measured before the report (``TIMING_COLUMNS``; the
    report's own time is measured around the call and stored after it)."""

    def __call__(self, out: Path, results: pd.DataFrame, runs: pd.DataFrame, config_yaml: str, /, *,
                 title: str, timings: pd.DataFrame | None = None) -> Path: ...


def run(config: Config | dict | str | Path, out: str | Path | None = None, force: bool = False,
        progress: Callable[[str, int, int], None] | None = None, report: RunReportWriter | None = None) -> RunResult:
    """Pretrain, evaluate every checkpoint and (when ``out`` is given) write the run's files; without
    ``out`` nothing is written. The files are ``config.yaml``, ``checkpoints/``, ``results.sqlite``,
    ``results.csv`` and, with a ``report`` writer, the report (None writes none: ``preadapt.run``
    passes the HTML writer of ``preadapt.report``, a layer above this one).

    ``progress(stage, done, total)`` reports training steps (stage ``"pretrain"``) and evaluated
    checkpoints (stage ``"evaluate"``). A run that diverges is returned with status ``failed`` and
    the step and reason; with ``out``, any other error is caught the same way and recorded in the
    store (without ``out`` it propagates, traceback and all). Results of the checkpoints evaluated
    before a failure are kept.

    ``out`` must be empty unless ``force``, or hold this very run (same config) interrupted: then it
    starts over. Ctrl-C raises RunInterrupted (a KeyboardInterrupt) after recording the run as
    ``interrupted`` with the rows of the checkpoints evaluated so far; ``config.yaml`` and the
    checkpoints stay.

    Where the time went is timed from the call on (``pipeline``'s stages; then ``storing``: the
    store's transaction and ``results.csv``, ``other``: the time between stages, and ``report``) and
    stored with the outcome in the store's ``timings`` table, replaced once the report is written
    (with its time); the report shows the stages before it and its own time up to its last step
    (``RunResult.timings`` has them all).

    >>> result = run({"name": "tiny", "world": {"kind": "gaussian", "classes": 4, "dim": 4},
    ...               "encoder": {"kind": "linear", "out_dim": 4},
    ...               "pretrain": {"tuples": 256, "epochs": 1, "batch_size": 128, "checkpoints": [0]},
    ...               "evaluate": {"samples": 512, "mean_samples": 64, "test_per_class": 16,
    ...                            "task_classes": [2, 3], "top_r": [1], "probe_tasks": 4,
    ...                            "probe_shots": 8, "probe_val": 8, "star_samples": 32, "bootstrap": 10}})
    >>> result.status, sorted(result.results.step.unique().tolist())
    ('finished', [0, 2])
    """
    timings = Timings()  # start-up counts from here
    config = _coerce_config(config)
    device = resolve_device(config.device)
    out = Path(out) if out is not None else None
    provenance = run_provenance(config, device)
    run_id = provenance["run_id"]
    if out is not None:
        prepare_output(out, force, run_id)
    if config.threads is not None:
        torch.set_num_threads(config.threads)

    rows: list[dict[str, Any]] = []
    checks: dict[int, list[BoundCheck]] = {}
    store: Store | None = None
    phase = "starting"  # then "running" (the store says running), then "recorded" (it holds the outcome)
    try:
        if out is not None:
            store = Store(out / "results.sqlite")
            store.start_run(provenance)
        phase = "running"
        if out is not None:
            _write_whole(out / "config.yaml", lambda path: path.write_text(config.to_yaml()))
        try:
            status, error = pipeline(config, device, run_id, rows, checks,
                                     out / "checkpoints" if out is not None else None, progress,
                                     before_checkpoint=lambda step: gate(f"checkpoint-{step}"), timings=timings)
        except Exception as failure:  # recorded, never lost: the store says why the run failed
            status, error = "failed", describe_failure(failure)
            if store is None:
                raise
        results = tidy_frame(rows)
        if store is not None:
            with timings.stage("storing"):
                store.finish_run(run_id, results, status, utc_now(), error, timings=timings.rows())
                phase = "recorded"
                runs = store.runs()
                _write_whole(out / "results.csv", lambda path: results.to_csv(path, index=False))
        timings.rest("other")
        if store is not None:
            if report is not None:
                with timings.stage("report"):
                    report(out, results, runs, config.to_yaml(), title=f"preadapt run: {config.name}",
                           timings=timings_frame(run_id, timings.rows()))
            store.write_timings(run_id, timings.rows())  # whole: storing, other and the report included
    except KeyboardInterrupt as stop:
        raise _interrupted(stop, config, run_id, rows, store, out, phase,
                           status if phase == "recorded" else None, timings) from None
    finally:
        if store is not None:
            store.close()
    return RunResult(config, run_id, status, results, checks, out, error, timings_frame(run_id, timings.rows()))


def _write_whole(path: Path, write: Callable[[Path], None]) -> None:
    """``write(beside)`` to a file beside ``path``, then renamed onto it: the file is whole or absent
    (Ctrl-C never leaves half of one)."""
    beside = path.with_name(f".{path.name}.partial")
    write(beside)
    beside.replace(path)


def _interrupted(stop: KeyboardInterrupt, config: Config, run_id: str, rows: list[dict[str, Any]],
                 store: Store | None, out: Path | None, phase: str, recorded: str | None,
                 timings: Timings) -> RunInterrupted:
    """What Ctrl-C leaves, by ``phase``: before the store recorded the run, none of its files; while
    it runs, the run recorded ``interrupted`` with the rows of its whole checkpoints and the stages
    timed until then (the outcome's own transaction, if the signal came inside it, left nothing);
    once the outcome is recorded, the outcome (only results.csv or the report was left to write)."""
    total = config.pretrain.total_steps
    if not isinstance(stop, RunInterrupted):  # outside the pipeline
        stage = {"starting": "starting", "running": "recording the results", "recorded": "writing the report"}[phase]
        stop = RunInterrupted(run_id, total if rows else 0, stage, sorted({row["step"] for row in rows}), total)
    stop.out = out
    if out is None:
        return stop
    if phase == "starting":
        if store is not None:
            store.close()
        _remove_outputs(out)
        stop.evaluated = []
    elif phase == "running" and store is not None and store.statuses().get(run_id) == "running":
        kept = tidy_frame([row for row in rows if row["step"] in stop.evaluated])
        store.finish_run(run_id, kept, "interrupted", utc_now(),
                         f"interrupted at step {stop.step} of {total} while {stop.stage}", timings=timings.rows())
        stop.status = "interrupted"
    else:  # the outcome was recorded (perhaps just before phase said so): only files were left to write
        stop.status = recorded or (store.statuses().get(run_id) if store is not None else None)
        stop.stage = "writing the report"
    for folder in (out, out / "checkpoints"):  # a file being written when the signal came
        for leftover in folder.glob(".*.partial"):
            leftover.unlink(missing_ok=True)
    return stop


def evaluate(encoder: nn.Module, world: World | dict, evaluate_config: EvaluateConfig | dict | None = None, *,
             seed: int = 0, loss: str = "logistic", device: str = "cpu", task: dict | TaskConfig | None = None
             ) -> pd.DataFrame:
    """Measure an encoder the user built on a world: every quantity and bound check, as the tidy
    table (one step, 0). ``world`` is a World or a world config mapping (``{"kind": "gaussian", ...}``).
    ``task``: a ``task`` section (``{"kind": "subspace", "rank": 4}``): the adapters fit on its id
    view and are tested on id and ood (docs/config.md). Without one, a world with a task world of its
    own (``TaskedWorld``: the hypercube's) has its tasks drawn from it, as in a run (``task_views``).
    """
    if isinstance(world, dict):
        world = WORLDS.build(WORLDS.parse(world), make_generator(seed, "world"))
    if not isinstance(evaluate_config, EvaluateConfig):
        evaluate_config = EvaluateConfig.model_validate(evaluate_config or {})
    classes = positive_classes(world.prior)
    views = task_views(world, None, seed) if task is None else None  # the world's own task world, if any
    if views is not None:
        classes = min(classes, positive_classes(views.id.prior))
    evaluate_config = evaluate_config.fit_classes(classes)  # defaulted task sizes and R fit the world
    if views is not None:  # sizes given explicitly that the task world cannot give
        for name, sizes, low in (("task_classes", evaluate_config.task_classes, 2), ("top_r", evaluate_config.top_r, 1)):
            if sizes and max(sizes) > classes:
                raise ConfigError(f"evaluate.{name}: got {max(sizes)}; allowed: {low}..{classes} (classes in the "
                                  f"tasks of the world's task world)")
    try:
        evaluate_config.check_classes(classes)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if task is not None:
        try:
            views = derive_task(world, task, make_generator(seed, "task"))
        except (KeyError, ValueError, ValidationError) as error:
            raise ConfigError(f"task: {error.args[0] if error.args else error}") from None
        pretraining = world if views.pretrain is None else views.pretrain
        support = min(int(np.count_nonzero(views.id.prior)), int(np.count_nonzero(pretraining.prior)))
        kind = task["kind"] if isinstance(task, dict) else task.kind
        if max(evaluate_config.task_classes) > support:
            raise ConfigError(f"evaluate.task_classes: got {max(evaluate_config.task_classes)}; allowed: 2..{support} "
                              f"(classes of positive prior in both pretraining and the tasks of task.kind {kind})")
        if views.pretrain is not None:
            world = views.pretrain  # what pretraining sees: the theory's quantities are measured on it
    encoder = encoder.to(device).eval()
    evaluation = evaluate_encoder(encoder, world, evaluate_config, seed, curl_loss_name=loss, device=device, task=views)
    checks = check_bounds(evaluation, world, evaluate_config, loss)  # no training: no theorems
    measured = evaluation.measurements + [m for c in checks for m in c.measurements()]
    return tidy_frame(measurement_rows(measured, "evaluate", 0))
