"""Sweeps: a base config crossed with a grid of dotted fields, fields varied together (zip) and
replicate seeds, expanded into runs keyed by the hash of their resolved config (DESIGN.md section 1).

A sweep file::

    name: negatives                 # the sweep's name (default: the file's stem)
    base: demo                      # a preset name, a path relative to the sweep file, or a config mapping
    set: {pretrain.epochs: 2}       # overrides applied to the base before the grid (optional)
    grid:                           # the cartesian product over these fields
      objective.negatives: [1, 2, 4]
      objective.block_size: [1, 2]
    zip:                            # fields varied together: the i-th values of each go into one run
      world.classes: [5, 10]
      evaluate.task_classes: [[2, 5], [2, 10]]
    replicates: 3                   # seeds per point
    labels: {world.classes: [small, large]}   # names shown for a field's values (optional)
    report: {quantities: ["acc_avg[adapter=mean,task_classes=2]", L_un], baseline: {objective.negatives: 1}}

Replicate r of every point gets the same seed, derived from the base config's hash and r, so the
points of one replicate share their world and initialisation (paired comparisons across the grid).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from preadapt.experiment.config import (
    Config,
    ConfigError,
    format_validation_error,
    parse_config,
    read_yaml,
    set_field,
)
from preadapt.experiment.executors import LOST, Executor, RunTask
from preadapt.experiment.run import output_folder, utc_now
from preadapt.experiment.selector import Selector, parse_selector  # Selector: importable from here too
from preadapt.experiment.store import Store, tidy_frame
from preadapt.experiment.testing import gate, gate_run_row_writes

DEFAULT_QUANTITIES = ["acc_avg[adapter=mean]", "acc_avg[adapter=linear]", "L_sup_mean", "L_un[negatives=1]"]
"""What a sweep report plots when the sweep file does not say."""

SWEEP_PRESET_DIR = Path(__file__).parent / "presets" / "sweeps"
RESERVED_FIELDS = {"seed": "the seeds come from replicates (replicate r of every point shares one seed)",
                   "name": "the sweep names its runs (set the sweep's own name)"}


class ReportSpec(BaseModel):
    """What the sweep report shows: quantity selectors (``QUANTITY[column=value,...]``)."""

    model_config = ConfigDict(extra="forbid")
    quantities: list[str] = Field(default_factory=lambda: list(DEFAULT_QUANTITIES), min_length=1)
    baseline: dict[str, Any] = Field(default_factory=dict,
                                     description="axis → value: also report each point's paired difference to this point")

    @field_validator("quantities")
    @classmethod
    def _selectors(cls, values: list[str]) -> list[str]:
        return [str(parse_selector(value)) for value in values]


class SweepSpec(BaseModel):
    """A sweep file (this module's docstring); docs/sweeps.md documents every field."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    base: str | dict[str, Any] = Field(..., description="a run preset's name, a config file relative to the sweep "
                                                        "file, or a config written out as a mapping")
    set: dict[str, Any] = Field(default_factory=dict, description="dotted field → value, applied to the base")
    grid: dict[str, Any] = Field(default_factory=dict, description="dotted field → list of values (cartesian product)")
    zip: dict[str, Any] = Field(default_factory=dict, description="dotted field → list of values, varied together")
    replicates: int = Field(1, ge=1, description="seeds per point")
    labels: dict[str, list[Any]] = Field(default_factory=dict,
                                         description="swept field → a name per value, shown instead of the value")
    report: ReportSpec = Field(default_factory=ReportSpec)


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep: its id (name and config hash), config, replicate, and its point
    (axis → value label)."""

    run_id: str
    config: Config
    replicate: int
    point: dict[str, Any]
    values: dict[str, Any]


@dataclass
class Sweep:
    """An expanded sweep: its axes (a grid field, or the zipped fields as one axis named after the
    first), its runs (replicate-major), and what its report shows."""

    name: str
    source: str
    axes: list[dict[str, Any]]
    replicates: int
    quantities: list[str]
    runs: list[PlannedRun]
    baseline: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """The plan as stored in the store's meta table (key ``sweep``) and read by the report."""
        return dict(name=self.name, source=self.source, axes=self.axes, replicates=self.replicates,
                    quantities=self.quantities, baseline=self.baseline,
                    runs=[dict(run_id=r.run_id, replicate=r.replicate, point=r.point, values=r.values)
                          for r in self.runs])


def replicate_seed(base_hash: str, replicate: int) -> int:
    """The seed of replicate ``replicate``: derived from the base config's hash and the index
    (STYLE.md 13), the same for every point of the sweep.

    >>> replicate_seed("ab" * 32, 0) == replicate_seed("ab" * 32, 0) != replicate_seed("ab" * 32, 1)
    True
    """
    digest = hashlib.sha256(f"{base_hash}:replicate:{replicate}".encode()).hexdigest()
    return int(digest[:8], 16) % (2**31)


def value_label(value: Any, alternatives: list[Any]) -> Any:
    """A point's value as the report shows it: scalars as they are, lists as JSON, a whole section
    (a mapping) by the entries in which the alternatives differ.

    >>> options = [{"kind": "infonce", "negatives": 4}, {"kind": "debiased", "negatives": 4, "tau_plus": 0.1}]
    >>> [value_label(option, options) for option in options]
    ['kind=infonce', 'kind=debiased,tau_plus=0.1']
    """
    if isinstance(value, dict):
        keys = [key for key in dict.fromkeys(k for option in alternatives if isinstance(option, dict) for k in option)
                if len({json.dumps(option.get(key), sort_keys=True) if isinstance(option, dict) else None
                        for option in alternatives}) > 1]
        shown = [key for key in keys if key in value]
        return ",".join(f"{key}={value[key]}" for key in shown) or json.dumps(value, sort_keys=True)
    if isinstance(value, (list, tuple)):
        return json.dumps(value)
    return "null" if value is None else value


def _values(section: str, field_name: str, values: Any) -> list[Any]:
    if field_name in RESERVED_FIELDS:
        raise ConfigError(f"{section}.{field_name}: cannot be swept; {RESERVED_FIELDS[field_name]}")
    if not isinstance(values, list):
        raise ConfigError(f"{section}.{field_name}: got {values!r}; expected a list of values")
    if not values:
        raise ConfigError(f"{section}.{field_name}: an empty list; give at least one value")
    return values


def _base_data(spec: SweepSpec, folder: Path) -> dict[str, Any]:
    from preadapt.experiment.presets import preset_data

    if isinstance(spec.base, dict):
        return json.loads(json.dumps(spec.base))
    if spec.base.endswith((".yaml", ".yml")) or "/" in spec.base:
        path = Path(spec.base) if Path(spec.base).is_absolute() else folder / spec.base
        return read_yaml(path)
    return preset_data(spec.base)


def _blame(message: str, fields: dict[str, str], point: dict[str, Any]) -> str:
    """Name the sweep field behind a config error, or the point where it arose."""
    for name, section in fields.items():
        if message.startswith((f"{name}:", f"{name}.", f"{name}[")):
            return f"{section}.{message}"
    where = ", ".join(f"{name}={value}" for name, value in point.items())
    return f"at {where}: {message}" if where else message


def expand(spec: SweepSpec, source: str, folder: Path) -> Sweep:
    """Every run of a sweep, each config validated (a bad sweep fails here, before any run).

    >>> spec = SweepSpec(base="demo", grid={"objective.negatives": [1, 4]}, replicates=2)
    >>> sweep = expand(spec, "neg.yaml", Path("."))
    >>> [(r.point["objective.negatives"], r.replicate, r.config.name) for r in sweep.runs]
    [(1, 0, 'neg'), (4, 0, 'neg'), (1, 1, 'neg'), (4, 1, 'neg')]
    >>> len({r.config.seed for r in sweep.runs})  # one seed per replicate, shared by its points
    2
    """
    name = spec.name or Path(source).stem
    base = _base_data(spec, folder)
    for field_name, value in spec.set.items():
        set_field(base, field_name, value, "set")
    base["name"] = name
    try:
        base_config = parse_config(base)
    except ConfigError as error:
        raise ConfigError(f"base{'' if isinstance(spec.base, dict) else f' ({spec.base})'}: {error}") from None
    grid = {field_name: _values("grid", field_name, values) for field_name, values in spec.grid.items()}
    zipped = {field_name: _values("zip", field_name, values) for field_name, values in spec.zip.items()}
    both = set(grid) & set(zipped)
    if both:
        raise ConfigError(f"zip.{sorted(both)[0]}: also in grid; a field is either crossed or varied together")
    lengths = {field_name: len(values) for field_name, values in zipped.items()}
    if len(set(lengths.values())) > 1:
        described = ", ".join(f"{field_name} has {length}" for field_name, length in lengths.items())
        raise ConfigError(f"zip: the lists differ in length ({described}); fields varied together need equally many values")
    for field_name, values in grid.items():
        seen = [json.dumps(v, sort_keys=True) for v in values]
        if len(set(seen)) < len(seen):
            raise ConfigError(f"grid.{field_name}: got {values!r}; a value is repeated")
    if zipped:
        tuples = [json.dumps([values[i] for values in zipped.values()], sort_keys=True)
                  for i in range(len(next(iter(zipped.values()))))]
        if len(set(tuples)) < len(tuples):
            raise ConfigError(f"zip: two positions give the same values of {', '.join(zipped)}; each must differ")
    for field_name, names in spec.labels.items():
        if field_name not in grid and field_name not in zipped:
            raise ConfigError(f"labels.{field_name}: not a field of grid or zip")
        given = len((grid | zipped)[field_name])
        if len(names) != given or len({str(name) for name in names}) != len(names):
            raise ConfigError(f"labels.{field_name}: got {names!r}; expected {given} distinct names, one per value")
    axes = [dict(name=field_name, fields=[field_name]) for field_name in grid]
    if zipped:
        axes.append(dict(name=next(iter(zipped)), fields=list(zipped)))
    sections = {**{f: "grid" for f in grid}, **{f: "zip" for f in zipped}}
    zip_points = [{f: values[i] for f, values in zipped.items()} for i in range(next(iter(lengths.values()), 1))]
    points = [{**dict(zip(grid, combination)), **zip_point}
              for combination in itertools.product(*grid.values()) for zip_point in zip_points]
    alternatives = {**grid, **zipped}
    first = next(iter(zipped), None)  # the zip axis is named after its first field, and shows its value
    zip_identified = first is None or len({json.dumps(v, sort_keys=True) for v in zipped[first]}) == len(zipped[first])
    base_hash = base_config.config_hash()
    runs: list[PlannedRun] = []
    seen_ids: dict[str, dict[str, Any]] = {}
    for replicate in range(spec.replicates):
        seed = replicate_seed(base_hash, replicate)
        for point in points:
            labels = {f: spec.labels[f][alternatives[f].index(v)] if f in spec.labels else value_label(v, alternatives[f])
                      for f, v in point.items()}
            data = json.loads(json.dumps(base))
            for field_name, value in point.items():
                set_field(data, field_name, value, sections[field_name])
            data["seed"] = seed
            try:
                config = parse_config(data)
            except ConfigError as error:
                raise ConfigError(_blame(str(error), sections, labels)) from None
            run_id = f"{name}-{config.config_hash()[:8]}"
            if run_id in seen_ids:
                raise ConfigError(f"{'zip' if zipped and not grid else 'grid'}: the points {seen_ids[run_id]} and {labels} "
                                  f"resolve to the same config")
            seen_ids[run_id] = labels
            point_labels = {axis["name"]: _axis_label(axis, labels, zip_identified) for axis in axes}
            runs.append(PlannedRun(run_id, config, replicate, point_labels, labels))
    for axis, value in spec.report.baseline.items():
        values = list(dict.fromkeys(r.point[axis] for r in runs)) if axis in runs[0].point else None
        if values is None:
            raise ConfigError(f"report.baseline.{axis}: not an axis; allowed: {', '.join(a['name'] for a in axes)}")
        if value not in values:
            raise ConfigError(f"report.baseline.{axis}: got {value!r}; allowed: {', '.join(map(str, values))}")
    return Sweep(name, source, axes, spec.replicates, spec.report.quantities, runs, dict(spec.report.baseline))


def _axis_label(axis: dict[str, Any], labels: dict[str, Any], zip_identified: bool) -> Any:
    """A point's value on an axis: the field's label; on a zip axis whose first field repeats a
    value, the labels of all its fields, joined."""
    if len(axis["fields"]) == 1 or zip_identified:
        return labels[axis["name"]]
    return ", ".join(str(labels[f]) for f in axis["fields"])


def sweep_preset_names() -> list[str]:
    return sorted(p.stem for p in SWEEP_PRESET_DIR.glob("*.yaml"))


def sweep_preset_descriptions() -> dict[str, str]:
    """Each sweep preset's one-line description: the first comment line of its file."""
    from preadapt.experiment.presets import first_comment

    return {name: first_comment(SWEEP_PRESET_DIR / f"{name}.yaml") for name in sweep_preset_names()}


def load_sweep(path: str | Path | None = None, preset: str | None = None) -> Sweep:
    """Read, validate and expand a sweep file (or a sweep preset); raise ConfigError (one line)."""
    if (path is None) == (preset is None):
        raise ConfigError("give a SWEEP file or --preset, not both" if path else "give a SWEEP file or --preset NAME")
    if preset is not None:
        path = SWEEP_PRESET_DIR / f"{preset}.yaml"
        if not path.is_file():
            raise ConfigError(f"--preset: got {preset!r}; allowed sweep presets: {', '.join(sweep_preset_names())}")
        source = preset
    else:
        path = Path(path)
        source = str(path)
    data = read_yaml(path)
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"{path.name}: {format_validation_error(error, model=SweepSpec)}") from None
    return expand(spec, source if preset is None else preset, path.parent)


class SweepDirectoryError(ConfigError):
    """The output directory holds something else than this sweep."""


@dataclass
class SweepProgress:
    """Counts of a sweep in progress: ``total`` runs planned, ``earlier`` finished before this
    invocation, ``finished``/``failed`` by this one, ``running`` now."""

    total: int
    earlier: int
    to_run: int
    finished: int = 0
    failed: int = 0
    running: int = 0
    stage: str = "running"  # then "report": the runs are done, the report is being written

    def resumed(self) -> str | None:
        """What a resumed sweep keeps from its earlier invocations, in words (None for a fresh start).

        >>> SweepProgress(total=12, earlier=4, to_run=6).resumed()
        '4 finished runs kept, 2 failed runs skipped (--retry-failed runs them again), 6 to run'
        """
        skipped = self.total - self.earlier - self.to_run  # failed before, and not retried
        if not self.earlier and not skipped:
            return None
        parts = [f"{self.earlier} finished run{'s' if self.earlier != 1 else ''} kept"]
        if skipped:
            parts.append(f"{skipped} failed run{'s' if skipped != 1 else ''} skipped (--retry-failed runs "
                         f"{'them' if skipped != 1 else 'it'} again)")
        return ", ".join(parts) + f", {self.to_run} to run"


@dataclass
class SweepSummary:
    """How a sweep invocation ended: every planned run's status (and error), seconds per run
    computed now, and whether it was interrupted."""

    sweep: Sweep
    out: Path
    statuses: dict[str, str]
    errors: dict[str, str]
    seconds: dict[str, float]
    interrupted: bool = False

    @property
    def failed(self) -> list[str]:
        return [r.run_id for r in self.sweep.runs if self.statuses.get(r.run_id) == "failed"]

    @property
    def finished(self) -> list[str]:
        return [r.run_id for r in self.sweep.runs if self.statuses.get(r.run_id) == "finished"]


def open_sweep_store(out: Path, sweep: Sweep) -> Store:
    """The sweep's store in the directory ``out`` (created when new; ``_lock`` made the directory).
    Refuses a directory that holds a single run or another sweep; the same sweep with a changed grid
    takes the new plan (finished runs of points still in it are reused; the others stay in the store
    but leave the report and the export)."""
    path = out / "results.sqlite"
    existed = path.is_file()
    store = Store(path)
    if existed:
        earlier = store.get_meta("sweep")
        if earlier is None and store.statuses():
            store.close()
            raise SweepDirectoryError(f"--out: {out} holds a single run, not a sweep; choose another directory")
        if earlier is not None and earlier.get("name") != sweep.name:
            store.close()
            raise SweepDirectoryError(f"--out: {out} holds the sweep {earlier.get('name')!r}, not {sweep.name!r}; "
                                      f"choose another directory")
    store.set_meta("sweep", sweep.describe())
    return store


class SweepReportWriter(Protocol):
    """Writes a sweep's report into ``out`` and returns its path (``preadapt.report.sweep.write_sweep_report``):
    ``results`` is the sweep's tidy table with its runs' replicate, swept fields and ``run_status``,
    ``runs`` the store's provenance rows, ``sweep`` the plan (``Sweep.describe()``)."""

    def __call__(self, out: Path, results: pd.DataFrame, runs: pd.DataFrame, sweep: dict[str, Any], /, *,
                 title: str) -> Path: ...


def run_sweep(sweep: Sweep, out: str | Path, executor: Executor, retry_failed: bool = False,
              progress: Callable[[SweepProgress], None] | None = None,
              report: SweepReportWriter | None = None) -> SweepSummary:
    """Run the sweep's runs not yet finished (failed ones only with ``retry_failed``), at most
    ``executor.capacity`` at a time, recording each outcome in the store as it arrives; then write
    ``results.csv`` and, with a ``report`` writer, the sweep report. The report is written here, in
    the driver, whichever executor computed the runs; None writes none (``preadapt.run_sweep``
    passes the HTML writer of ``preadapt.report``, a layer above this one).

    Resumable: a run is recorded as running when submitted and finished or failed, with all its
    rows, in one transaction when it returns, so a driver killed at any moment loses no finished
    run; on restart the runs left "running" are run again. Ctrl-C (KeyboardInterrupt) stops the
    workers, forgets the runs in flight, and returns a summary with ``interrupted`` set.

    >>> import tempfile
    >>> from preadapt.experiment.executors import InProcess
    >>> base = {"world": {"kind": "gaussian", "classes": 3, "dim": 2}, "encoder": {"kind": "linear", "out_dim": 2},
    ...         "pretrain": {"tuples": 64, "epochs": 1, "batch_size": 64, "checkpoints": []},
    ...         "evaluate": {"samples": 64, "mean_samples": 32, "test_per_class": 8, "task_classes": [2],
    ...                      "top_r": [1], "probe_tasks": 2, "probe_shots": 4, "probe_val": 4, "star_samples": 8,
    ...                      "bootstrap": 10}}
    >>> sweep = expand(SweepSpec(name="doc", base=base, grid={"objective.negatives": [1, 2]}), "doc", Path("."))
    >>> out = Path(tempfile.mkdtemp())
    >>> summary = run_sweep(sweep, out, InProcess())
    >>> sorted(summary.statuses.values()), sorted(p.name for p in out.iterdir() if p.suffix != ".sqlite-wal")
    (['finished', 'finished'], ['.lock', 'results.csv', 'results.sqlite'])
    >>> len(run_sweep(sweep, out, InProcess()).seconds)  # resumed: nothing left to run
    0
    """
    out = Path(out)
    _check_shared_components(sweep, executor)
    lock = _lock(out)
    try:
        return _run_locked(sweep, out, executor, retry_failed, progress, report)
    finally:
        lock.close()


def _check_shared_components(sweep: Sweep, executor: Executor) -> None:
    """Components registered by the user's code exist only in this process: runs elsewhere (a pool,
    Ray) would fail one by one, so such a sweep is refused before it starts."""
    if getattr(executor, "shares_registry", False):
        return
    from preadapt.experiment.config import COMPONENTS

    user = {section: set(registry.user_names()) for section, registry in COMPONENTS.items()}
    for planned in sweep.runs:
        for section in COMPONENTS:
            kind = getattr(planned.config, section).kind
            if kind in user[section]:
                raise ConfigError(f"{section}.kind: {kind!r} is registered in this process only, and the runs of this "
                                  f"executor compute in other processes; run the sweep in-process (--workers 1, or "
                                  f"InProcess())")


def _lock(out: Path):
    """An exclusive lock on ``out/.lock`` held for the driver's lifetime: one driver per sweep directory."""
    import fcntl

    if out.exists() and not out.is_dir():
        raise SweepDirectoryError(f"--out: {out} exists and is not a directory")
    with output_folder(out, error=SweepDirectoryError):  # nothing half-made
        out.mkdir(parents=True, exist_ok=True)
        handle = open(out / ".lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise SweepDirectoryError(f"--out: another preadapt sweep is running in {out}; wait for it or stop it") from None
    return handle


def _run_locked(sweep: Sweep, out: Path, executor: Executor, retry_failed: bool,
                progress: Callable[[SweepProgress], None] | None, report: SweepReportWriter | None) -> SweepSummary:
    gate("open")  # test hooks (experiment/testing.py): nothing unless a test sets PREADAPT_TEST_GATE
    store = open_sweep_store(out, sweep)
    gate_run_row_writes(store.connection)
    try:
        statuses = store.statuses()
        earlier = sum(statuses.get(r.run_id) == "finished" for r in sweep.runs)
        todo = [r for r in sweep.runs if statuses.get(r.run_id) != "finished"
                and (statuses.get(r.run_id) != "failed" or retry_failed)]
        counts = SweepProgress(total=len(sweep.runs), earlier=earlier, to_run=len(todo))
        seconds: dict[str, float] = {}
        in_flight: list[str] = []
        interrupted = False
        if progress is not None:
            progress(counts)
        queue = list(todo)
        by_id = {planned.run_id: planned for planned in todo}
        lost: set[str] = set()
        shared = SharedPretrainings(sweep, out, executor)
        try:
            while queue or in_flight:
                while len(in_flight) < executor.capacity:
                    index = next((i for i, planned in enumerate(queue) if shared.may_start(planned)), None)
                    if index is None:  # none left, or each waits for a pretraining another run is computing
                        break
                    planned = queue.pop(index)
                    config = planned.config
                    in_flight.append(planned.run_id)  # before the store says running: an interrupt forgets it
                    store.start_run(dict(run_id=planned.run_id, config_hash=config.config_hash(),
                                         config_json=config.model_dump_json(), started_at=utc_now(), seed=config.seed))
                    executor.submit(RunTask(planned.run_id, config.model_dump_json(),
                                            pretrained=shared.started(planned)))
                counts.running = len(in_flight)
                if progress is not None:
                    progress(counts)
                for outcome in executor.wait(timeout=0.5):
                    shared.ended(outcome.run_id)
                    if outcome.status == LOST and outcome.run_id not in lost:  # a broken pool's: once more
                        lost.add(outcome.run_id)
                        in_flight.remove(outcome.run_id)
                        queue.insert(0, by_id[outcome.run_id])
                        continue
                    status = "failed" if outcome.status == LOST else outcome.status
                    store.finish_run(outcome.run_id, tidy_frame(outcome.rows), status,
                                     outcome.finished_at or utc_now(), outcome.error, outcome.provenance,
                                     outcome.timings)
                    in_flight.remove(outcome.run_id)
                    seconds[outcome.run_id] = outcome.seconds
                    counts.finished += status == "finished"
                    counts.failed += status != "finished"
                    counts.running = len(in_flight)
                    if progress is not None:
                        progress(counts)
        except BaseException as stop:  # Ctrl-C, or an error of the driver itself: stop the workers first
            executor.shutdown(cancel=True)
            for run_id in in_flight:  # neither finished nor failed: run again on resume
                store.forget_run(run_id)
            if not isinstance(stop, KeyboardInterrupt):
                raise
            interrupted = True
        else:
            executor.shutdown()
        runs = store.runs()
        errors = {row.run_id: row.error for row in runs.itertuples() if isinstance(row.error, str) and row.error}
        summary = SweepSummary(sweep, out, store.statuses(), errors, seconds, interrupted)
        if all(summary.statuses.get(planned.run_id) == "finished" for planned in sweep.runs):
            shared.clear()  # every run done: nothing left to share
        results = with_run_status(sweep_results(store.results(), sweep.describe()), runs)
    finally:
        store.close()
    if progress is not None:
        counts.stage = "report"
        progress(counts)
    results.to_csv(out / "results.csv", index=False)
    if report is not None:
        report(out, results, runs, sweep.describe(), title=f"preadapt sweep: {sweep.name}")
    return summary


class SharedPretrainings:
    """One pretraining for the runs of a sweep that share it (``Config.pretraining_hash``: the same seed
    and pretraining, differing only in evaluation or in what the tasks see, as the severities of the
    ``shift`` preset). The first of them to start trains and keeps its checkpoints in
    ``out/pretrained/HASH.pt``; the others wait until it has, then load and evaluate them
    (``preadapt.experiment.run.replay_pretraining``: the same rows as training again, bit for bit).

    Only for an executor whose runs see the driver's files (``shares_files``), and only for
    pretrainings that more than one run of the plan shares. The folder is removed once every run of
    the plan has finished; a sweep stopped before keeps it, and its resumption loads what is there.
    """

    def __init__(self, sweep: Sweep, out: Path, executor: Executor) -> None:
        self.folder = out / "pretrained"
        self.hashes = {planned.run_id: planned.config.pretraining_hash() for planned in sweep.runs}
        counts = Counter(self.hashes.values())
        enabled = getattr(executor, "shares_files", False)
        self.shared = {value for value, count in counts.items() if count > 1 and enabled}
        self.training: dict[str, str] = {}  # pretraining → the run in flight that computes it

    def path(self, run_id: str) -> Path | None:
        value = self.hashes.get(run_id)
        return self.folder / f"{value[:24]}.pt" if value in self.shared else None

    def may_start(self, planned: PlannedRun) -> bool:
        """False while another run in flight computes this run's pretraining and has not kept it yet."""
        path = self.path(planned.run_id)
        return path is None or self.hashes[planned.run_id] not in self.training or path.is_file()

    def started(self, planned: PlannedRun) -> str | None:
        """The file to pass to the run; notes the run as the one that computes it when it is not there."""
        path = self.path(planned.run_id)
        if path is None:
            return None
        if not path.is_file():
            self.training[self.hashes[planned.run_id]] = planned.run_id
        return str(path)

    def ended(self, run_id: str) -> None:
        value = self.hashes.get(run_id)
        if self.training.get(value) == run_id:
            del self.training[value]

    def clear(self) -> None:
        if self.folder.is_dir():
            shutil.rmtree(self.folder, ignore_errors=True)


def sweep_results(results: pd.DataFrame, described: dict[str, Any]) -> pd.DataFrame:
    """The tidy table of a sweep with, for each run of the plan, its ``replicate`` and the value of
    every swept field (one column per dotted field name) appended; rows of runs not in the plan
    (an earlier grid of the same sweep) are dropped."""
    runs = described.get("runs", [])
    fields = [f for axis in described.get("axes", []) for f in axis["fields"]]
    plan = pd.DataFrame([{"run": r["run_id"], "replicate": r["replicate"], **{f: r["values"].get(f) for f in fields}}
                         for r in runs], columns=["run", "replicate", *fields])
    merged = results.merge(plan, on="run", how="inner")
    merged["replicate"] = merged["replicate"].astype("Int64")
    return merged


def with_run_status(table: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """``table`` with a ``run_status`` column (a status of ``store.RUN_STATUSES``: finished, failed,
    running, interrupted) after ``run``: a failed run keeps the rows of its checkpoints before the
    failure, and the export says so."""
    status = dict(zip(runs["run_id"], runs["status"]))
    table = table.copy()
    table.insert(table.columns.get_loc("replicate"), "run_status", [status.get(run) for run in table["run"]])
    return table
