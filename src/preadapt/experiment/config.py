"""Run configs: typed, validated pydantic models read from YAML (DESIGN.md section 3).

Components (world, encoder, objective) are validated by the params model registered for their
``kind``. Every invalid value raises ``ConfigError`` with one line naming the field, the value
given and what is allowed.

Defaults fit the world and the training they meet: a field left out whose default does not fit
(``evaluate.task_classes`` on a world of 5 classes, ``pretrain.checkpoints`` with ``epochs: 0``) is
fitted, and ``Config.defaults_resolved()`` says how. A value given explicitly is never changed, only
validated: pydantic's ``model_fields_set`` tells the two apart.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, model_validator

from preadapt.bounds.spec import BoundsConfig
from preadapt.encoders import ENCODERS
from preadapt.estimate.spec import EvaluateConfig
from preadapt.experiment.errors import ConfigError  # defined there (presets raise it too); importable from here
from preadapt.experiment.presets import preset_data
from preadapt.objectives import OBJECTIVES, ObjectiveTypeError
from preadapt.pretrain import PretrainConfig
from preadapt.registry import ComponentConfig, Registry, describe_validation_error
from preadapt.worlds import WORLDS
from preadapt.worlds.base import MAX_ENUMERATED_CLASSES
from preadapt.worlds.tasks import TASKS, TaskConfig

COMPONENTS: dict[str, Registry] = {"world": WORLDS, "encoder": ENCODERS, "objective": OBJECTIVES}


class Config(BaseModel):
    """One run: world, encoder, objective, pretraining, evaluation and the theorems' parameters (docs/config.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field("run", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", description="run name (default output folder runs/<name>)")
    seed: int = Field(0, ge=0, description="root seed; every generator derives from it")
    device: Literal["cpu", "cuda", "auto"] = Field("auto", description="cpu, cuda, or auto (cuda when available)")
    threads: int | None = Field(None, ge=1, description="torch threads; null = library default")
    world: SerializeAsAny[ComponentConfig] = Field(default_factory=lambda: WORLDS.parse({"kind": "gaussian"}))
    encoder: SerializeAsAny[ComponentConfig] = Field(default_factory=lambda: ENCODERS.parse({"kind": "mlp"}))
    objective: SerializeAsAny[ComponentConfig] = Field(default_factory=lambda: OBJECTIVES.parse({"kind": "curl"}))
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    bounds: BoundsConfig = Field(default_factory=BoundsConfig)
    task: SerializeAsAny[TaskConfig] | None = Field(
        None, description="derives the downstream tasks from the world (id and ood views); null: the world's own")

    @model_validator(mode="before")
    @classmethod
    def _parse_components(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for key, registry in COMPONENTS.items():
            value = data.get(key)
            if value is None or isinstance(value, ComponentConfig):
                continue
            if not isinstance(value, dict):
                raise ValueError(f"{key}: got {value!r}; expected a mapping with a 'kind'")
            if "kind" not in value:  # a section given in part (--set objective.negatives=4): the default kind
                value = {"kind": cls.model_fields[key].default_factory().kind, **value}
            kind = value.get("kind")
            if kind not in registry.names():
                raise ValueError(f"{key}.kind: got {kind!r}; allowed: {', '.join(registry.names())}")
            try:
                data[key] = registry.parse(value)
            except ValidationError as error:
                raise ValueError(format_validation_error(error, prefix=key, model=registry.entry(kind).params)) from None
        task = data.get("task")
        if task is not None and not isinstance(task, TaskConfig):
            if not isinstance(task, dict) or task.get("kind") not in TASKS.names():
                kind = task.get("kind") if isinstance(task, dict) else task
                raise ValueError(f"task.kind: got {kind!r}; allowed: {', '.join(TASKS.names())}")
            try:
                data["task"] = TASKS.parse(task)
            except ValidationError as error:
                raise ValueError(format_validation_error(error, prefix="task", model=TASKS.entry(task["kind"]).params)) from None
        return data

    @model_validator(mode="after")
    def _consistent(self) -> "Config":
        # pretrain.checkpoints left out were fitted to the training by PretrainConfig already
        last = self.pretrain.total_steps
        beyond = [s for s in self.pretrain.checkpoints if s > last]
        if beyond:
            raise ValueError(
                f"pretrain.checkpoints: got step {beyond[0]}; allowed: 0..{last} "
                f"(epochs × ceil(tuples / batch_size) = {last} steps)")
        classes = self._task_support()
        spec = self.world.input_spec  # None: a world that does not say (a user's); nothing to check
        if spec is not None:
            try:
                self.encoder.check_input(spec)
            except ValueError as error:
                raise ValueError(f"encoder.{error}") from None
            if self.task is not None:
                try:
                    self.task.check_input(spec)
                except ValueError as error:
                    raise ValueError(f"task.{error}") from None
        shared = self._task_limit(classes)  # a task section's views may draw from fewer classes
        object.__setattr__(self, "evaluate", self.evaluate.fit_classes(shared))  # defaults only
        if shared != classes:  # sizes given explicitly that the task's views cannot give, with the task's reason
            for name, sizes, low in (("task_classes", self.evaluate.task_classes, 2), ("top_r", self.evaluate.top_r, 1)):
                if sizes and max(sizes) > shared:
                    raise ValueError(f"evaluate.{name}: got {max(sizes)}; allowed: {low}..{shared} "
                                     f"({self._limit_reason(shared)})")
        self.evaluate.check_classes(shared)
        try:  # what the sampler will draw (debiased: blocks of M + 1)
            objective = OBJECTIVES.build(self.objective)
        except ObjectiveTypeError as error:  # a user's factory that builds no Objective: refused here
            raise ValueError(f"objective.kind: {error}") from None
        except Exception:  # a user's factory that cannot build here is reported when the run builds it
            objective = None
        block_size = 1 if objective is None else objective.block_size
        total = getattr(self.world, "classes", None)
        if objective is not None and objective.needs_attach and total is not None and total > MAX_ENUMERATED_CLASSES:
            raise ValueError(f"objective.kind: got {self.objective.kind!r}, which learns a parameter per latent class; "
                             f"the world has {total} classes; allowed: at most {MAX_ENUMERATED_CLASSES} classes for "
                             f"it (an objective without class labels: curl, infonce, spectral, ...)")
        if block_size > self.evaluate.mean_samples:
            raise ValueError(f"objective: draws blocks of {block_size} points; allowed: at most evaluate.mean_samples = "
                             f"{self.evaluate.mean_samples} (μ̂ must average at least as many points as a block)")
        steps = self.pretrain.checkpoint_steps
        if self.bounds.comparator != "best" and self.bounds.comparator not in steps:
            raise ValueError(f"bounds.comparator: got {self.bounds.comparator}; allowed: 'best' or a checkpoint step "
                             f"{steps}")
        return self

    def _task_support(self) -> int | None:
        """The classes a task can draw: world.classes, or the positive weights of a prior list (None
        for a user world whose config has no ``classes``)."""
        classes = getattr(self.world, "classes", None)
        prior = getattr(self.world, "prior", None)
        if classes is not None and isinstance(prior, list):  # tasks need classes of positive prior
            classes = sum(1 for weight in prior if weight > 0)
            if classes < 2:
                raise ValueError(f"world.prior: got {prior}; at least two classes need a positive weight")
        return classes

    def _task_limit(self, classes: int | None) -> int | None:
        """``classes`` (the world's classes of positive prior) limited by the task section, whose
        views may draw from fewer: pretraining's world (``TaskConfig.pretrain_support``) and the tasks'
        (``task_support``); the task's ``check_classes`` runs first. Without a task section, limited
        by the world's own task world (``label_classes``: a hypercube's tasks). None when the world
        config does not say its classes (then the task's factory checks the built world)."""
        if classes is None:
            return classes
        if self.task is None:
            own = self.world.label_classes
            return classes if own is None else min(classes, own)
        total = self.world.classes
        try:
            self.task.check_classes(total)
        except ValueError as error:
            raise ValueError(f"task.{error}") from None
        return min(classes, self.task.pretrain_support(total), self.task.task_support(total))

    def _limit_reason(self, classes: int) -> str:
        if self.task is None:
            return f"{classes} classes in the tasks of world.kind {self.world.kind}, which come from its task world"
        return f"{classes} classes of positive prior in both pretraining and the tasks of task.kind {self.task.kind}"

    def defaults_resolved(self) -> list[str]:
        """How defaults were fitted to this config's world and training, one line each (empty when
        every default fit as it is).

        >>> for line in Config.model_validate({"world": {"classes": 3}}).defaults_resolved():
        ...     print(line)
        evaluate.task_classes [2, 10] → [2] (world has 3 classes)
        evaluate.top_r [1, 5] → [1] (world has 3 classes)
        """
        world_classes = self._task_support()
        classes = self._task_limit(world_classes)
        of_prior = "" if classes == getattr(self.world, "classes", None) else " of positive prior"
        reason = (f"world has {classes} classes{of_prior}" if classes == world_classes
                  else self._limit_reason(classes))
        steps = self.pretrain.total_steps
        fitted = [(self.evaluate, "evaluate", name, reason) for name in ("task_classes", "top_r")]
        fitted.append((self.pretrain, "pretrain", "checkpoints",
                       f"training has {steps} steps: epochs × ceil(tuples / batch_size)"))
        lines = []
        for section, section_name, name, reason in fitted:
            default, value = type(section).model_fields[name].default, getattr(section, name)
            if name not in section.model_fields_set and value != default:
                lines.append(f"{section_name}.{name} {default} → {value} ({reason})")
        return lines

    def config_hash(self) -> str:
        """SHA-256 of the canonical JSON of the resolved config."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def pretraining_hash(self) -> str:
        """SHA-256 of what decides the pretrained encoder: the seed, world, encoder, objective, pretraining,
        and the part of the ``task`` section that changes what pretraining sees
        (``TaskConfig.pretraining_key``). Runs with equal hashes pretrain the same encoder bit for bit
        (on one device and thread count), whatever their evaluation or downstream task: a sweep's
        Interface section counts them as one cluster.

        >>> a = Config.model_validate({"task": {"kind": "covariate", "severity": 0.5}})
        >>> b = Config.model_validate({"task": {"kind": "covariate", "severity": 1.0}, "evaluate": {"shots": [5]}})
        >>> a.pretraining_hash() == b.pretraining_hash() != Config.model_validate({"seed": 1}).pretraining_hash()
        True
        """
        data = self.model_dump(mode="json", include={"seed", "world", "encoder", "objective", "pretrain"})
        data["task"] = None if self.task is None else self.task.pretraining_key()
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation holds (``PretrainConfig``, ``list[Model]``, ``Model | None``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None


def _fields_at(model: type[BaseModel] | None, parts: tuple) -> list[str]:
    """The field names of the model reached from ``model`` along the path ``parts`` (empty when the
    path leaves the models: a mapping, a component parsed by its own model)."""
    for part in parts:
        if model is None:
            return []
        if isinstance(part, int):
            continue
        field_info = model.model_fields.get(part)
        if model is Config and part in COMPONENTS:  # a component section: its default kind's model
            model = COMPONENTS[part].entry(field_info.default_factory().kind).params
        else:
            model = _model_in(field_info.annotation) if field_info is not None else None
    return list(model.model_fields) if model is not None else []


def suggest_field(unknown: str, model: type[BaseModel] | None, parents: tuple = ()) -> str | None:
    """A known field close to ``unknown`` in the same model, or the section one level down that has
    a field of exactly that name (``epochs`` at the top level: ``pretrain.epochs``).

    >>> suggest_field("epoch", Config, ("pretrain",)), suggest_field("epochs", Config), suggest_field("colour", Config)
    ('epochs', 'pretrain.epochs', None)
    """
    fields = _fields_at(model, parents)
    close = difflib.get_close_matches(unknown, fields, n=1, cutoff=0.75)
    if close:
        return close[0]
    for section in fields:
        if unknown in _fields_at(model, (*parents, section)):
            return f"{section}.{unknown}"
    return None


def format_validation_error(error: ValidationError, prefix: str = "", model: type[BaseModel] | None = None) -> str:
    """The first error of a pydantic ValidationError as one line: field, value given, what is allowed
    (``registry.describe_validation_error``). ``model``: the model validated, for a suggestion when a
    field is unknown."""
    suggest = None if model is None else (lambda unknown, parents: suggest_field(unknown, model, parents))
    return describe_validation_error(error, prefix, suggest)


def parse_config(data: dict[str, Any]) -> Config:
    """Validate a config mapping; raise ``ConfigError`` with a one-line message."""
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping of fields; got {type(data).__name__}")
    try:
        return Config.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, model=Config)) from None


def set_field(data: dict[str, Any], field: str, value: Any, where: str) -> None:
    """Set the dotted ``field`` of a config mapping in place (sections are created as needed);
    ``where`` names the source of the value in errors (``--set world.classes=5``, ``grid``). A part
    that is a number indexes a list already there (``task.steps.1.severity``: the second step).

    >>> data = {"world": {"classes": 20}, "task": {"kind": "compose", "steps": [{"kind": "unseen"}, {}]}}
    >>> set_field(data, "world.classes", 5, "--set"); set_field(data, "task.steps.1.severity", 0.5, "grid")
    >>> data["world"], data["task"]["steps"][1]
    ({'classes': 5}, {'severity': 0.5})
    >>> set_field(data, "task.steps.2.severity", 0.5, "grid")
    Traceback (most recent call last):
    ...
    preadapt.experiment.errors.ConfigError: grid: task.steps has 2 entries; 2 is not an index of it (0..1)
    """
    path = field.strip().split(".")
    if not field.strip() or any(not part for part in path):
        raise ConfigError(f"{where}: {field!r} is not a field path; expected FIELD.PATH, for example world.classes")
    node: Any = data
    for depth, part in enumerate(path):
        last = depth == len(path) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"{where}: {'.'.join(path[:depth])} has {len(node)} entries; {part} is not an index "
                                  f"of it (0..{len(node) - 1})")
            if last:
                node[int(part)] = value
                return
            node = node[int(part)]
        elif last:
            node[part] = value
            return
        else:
            node = node.setdefault(part, {})
        if not isinstance(node, (dict, list)):
            raise ConfigError(f"{where}: {'.'.join(path[:depth + 1])} is not a section")


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides (values read as YAML: ``3``, ``[2, 10]``, ``true``, ``null``).

    >>> apply_overrides({"world": {"classes": 20}}, ["world.classes=5", "seed=3"])
    {'world': {'classes': 5}, 'seed': 3}
    """
    data = json.loads(json.dumps(data))  # a deep copy of plain data
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
            raise ConfigError(f"--set {item!r}: expected FIELD.PATH=VALUE, for example world.classes=10")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML") from None
        set_field(data, key, value, f"--set {item!r}")
    return data


def yaml_problem(error: yaml.YAMLError) -> str:
    r"""A YAML error in one line: what is wrong and where (line and column, counted from 1).

    >>> try:
    ...     yaml.safe_load("name: demo\nworld: {classes: 5\n")
    ... except yaml.YAMLError as error:
    ...     print(yaml_problem(error))
    line 3, column 1: expected ',' or '}', but got '<stream end>' (in the flow mapping that starts at line 2, column 8)
    """
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    mark = getattr(error, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    context, context_mark = getattr(error, "context", None), getattr(error, "context_mark", None)
    started = ""
    if context and context_mark is not None and (mark is None or context_mark.line != mark.line):
        what = context.removeprefix("while parsing ").removeprefix("while scanning ")
        what = f"the {what[2:]}" if what.startswith("a ") else what
        started = f" (in {what} that starts at line {context_mark.line + 1}, column {context_mark.column + 1})"
    return f"{where}{problem}{started}"


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping read with the safe loader. An empty file (or one of comments only) is refused:
    it would mean every default silently; ``{}`` says so on purpose."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML at {yaml_problem(error)}") from None
    if data is None:
        raise ConfigError(f"{path}: the file is empty (no fields); write the fields to change, or `{{}}` to take "
                          f"every default")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of fields; got {type(data).__name__}")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                preset: str | None = None) -> Config:
    """Read a config from a YAML file or a preset (``demo`` when neither is given), apply overrides.

    >>> load_config(preset="demo", overrides=["world.classes=12"]).world.classes
    12
    """
    if path is not None and preset is not None:
        raise ConfigError("give a CONFIG file or --preset, not both")
    data = read_yaml(path) if path is not None else preset_data(preset or "demo")
    return parse_config(apply_overrides(data, overrides))
