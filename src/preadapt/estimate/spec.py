"""What to measure at each checkpoint and how precisely (the ``evaluate`` section of a config)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator

from preadapt.adapt import ADAPTERS
from preadapt.adapt.base import AdapterConfig


class EvaluateConfig(BaseModel):
    """Sample sizes, levels and protocols of the per-checkpoint estimates (docs/config.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    samples: int = Field(20000, ge=2, description="fresh tuples (or labeled points) per population estimate")
    mean_samples: int = Field(2000, ge=2, description="points per class for the class means μ_c (and the pools of the heads)")
    test_per_class: int = Field(200, ge=2, description="independent test points per class for accuracies and L_sup")
    level: float = Field(0.95, gt=0.0, lt=1.0, description="confidence level of reported intervals")
    verdict_level: float = Field(0.999, gt=0.0, lt=1.0, description="stricter level of bound verdicts")
    task_classes: list[int] = Field([2, 10], min_length=1, description="classes per downstream task (AVG-k)")
    top_r: list[int] = Field([1, 5], description="R of TOP-R accuracy on the full problem")
    probe_tasks: int = Field(200, ge=2, description="sampled tasks for the linear heads (t-interval across tasks)")
    probe_shots: int = Field(50, ge=1, description="labeled training points per class of each sampled task, for the "
                                                   "linear probe and the few-shot mean classifier")
    probe_val: int = Field(50, ge=1, description="validation points per class (the probe's penalty is chosen on them)")
    probe_penalties: list[float] = Field([1e-4, 1e-3, 1e-2, 1e-1], min_length=1, description="L2 penalties tried by the probe")
    star_samples: int = Field(500, ge=1, validation_alias=AliasChoices("star_samples", "sup_samples"),
                              description="labeled points per class of each 2-class task that every adapter's L*_adapt "
                                          "fit uses (the linear adapter's is L_sup); `sup_samples` is accepted too")
    adapters: list[SerializeAsAny[AdapterConfig]] = Field(
        default_factory=lambda: [ADAPTERS.parse({"kind": "mean"}), ADAPTERS.parse({"kind": "linear"})],
        min_length=1, description="the adapters measured at every checkpoint: a list of {kind: ..., ...params} "
                                  "(mean, linear, finetune, lpft, or a registered kind)")
    shots: list[int] = Field([], description="labeled training points per class of the few-shot protocol (e.g. [1, 5, 50]); "
                                             "empty: one draw at probe_shots")
    draws: int = Field(5, ge=5, description="draws of fresh training points per task for every value of `shots` "
                                            "(the interval is across tasks, each averaged over its draws)")
    loss: Literal["hinge", "logistic"] | None = Field(None, description="ℓ of L_un; null = the CURL objective's, else logistic")
    negatives: list[int] = Field([], description="k at which L_un and the k-negative statements are evaluated, besides the objective's")
    block_sizes: list[int] = Field([], description="b at which L_un_block and the block statements are evaluated, besides the objective's")
    bootstrap: int = Field(100, ge=10, description="bootstrap replicates for s(f)")
    block: int = Field(8192, ge=16, description="points encoded per block (memory stays flat in samples)")

    @field_validator("adapters", mode="before")
    @classmethod
    def _parse_adapters(cls, entries: Any):
        """Each entry through the registry's params model. Errors are located inside the list: a
        message that starts with "." continues the field's location (``evaluate.adapters.1.c0: ...``)."""
        if not isinstance(entries, (list, tuple)):
            return entries
        parsed = []
        for i, entry in enumerate(entries):
            if isinstance(entry, str):
                entry = {"kind": entry}
            if not isinstance(entry, (dict, AdapterConfig)):
                raise ValueError(f".{i}: got {entry!r}; expected a mapping with a 'kind'")
            kind = entry.kind if isinstance(entry, AdapterConfig) else entry.get("kind")
            if kind not in ADAPTERS.names():
                raise ValueError(f".{i}.kind: got {kind!r}; allowed: {', '.join(ADAPTERS.names())}")
            try:
                parsed.append(ADAPTERS.parse(entry))
            except ValidationError as error:
                first = error.errors(include_url=False)[0]
                where = ".".join(str(part) for part in first["loc"])
                message = first["msg"].removeprefix("Value error, ")
                if first["type"] == "extra_forbidden":
                    raise ValueError(f".{i}.{where}: unknown field of adapter kind {kind!r}") from None
                raise ValueError(f".{i}.{where}: got {first.get('input')!r}; {message}") from None
        labels = [entry.label for entry in parsed]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(f": two adapters are labelled {repeated[0]!r}; give each a different `name`")
        return parsed

    @field_validator("shots")
    @classmethod
    def _shots_ok(cls, values):
        if any(s < 1 for s in values):
            raise ValueError("shots must be ≥ 1")
        return sorted(set(values))

    @field_validator("task_classes")
    @classmethod
    def _tasks_ok(cls, sizes):
        if any(k < 2 for k in sizes):
            raise ValueError("task_classes must be ≥ 2 (a task needs two classes)")
        return sorted(set(sizes))

    @field_validator("top_r")
    @classmethod
    def _top_r_ok(cls, values):
        if any(r < 1 for r in values):
            raise ValueError("top_r must be ≥ 1")
        return sorted(set(values))

    @field_validator("negatives", "block_sizes")
    @classmethod
    def _grid_ok(cls, values):
        if any(v < 1 for v in values):
            raise ValueError("must be ≥ 1")
        return sorted(set(values))

    @field_validator("probe_penalties")
    @classmethod
    def _penalties_ok(cls, values):
        if any(p < 0 for p in values):
            raise ValueError("probe_penalties must be ≥ 0")
        return values

    def fit_classes(self, classes: int | None) -> "EvaluateConfig":
        """This config with its *defaulted* ``task_classes`` and ``top_r`` fitted to a world of
        ``classes`` classes (of positive prior; None, unknown, fits nothing): sizes and R above
        ``classes`` are dropped ([2] if no task size is left). Values given explicitly are kept, for
        ``check_classes`` to validate; a fitted field stays unset, so it still reads as a default.

        >>> fitted = EvaluateConfig().fit_classes(3)
        >>> fitted.task_classes, fitted.top_r, "task_classes" in fitted.model_fields_set
        ([2], [1], False)
        >>> EvaluateConfig(task_classes=[2, 10]).fit_classes(3).task_classes
        [2, 10]
        """
        if classes is None:
            return self
        fields = type(self).model_fields
        fitted = {}
        if "task_classes" not in self.model_fields_set:
            fitted["task_classes"] = [k for k in fields["task_classes"].default if k <= classes] or [2]
        if "top_r" not in self.model_fields_set:
            fitted["top_r"] = [r for r in fields["top_r"].default if r <= classes]
        current = dict(self)
        if all(current[name] == value for name, value in fitted.items()):
            return self
        return type(self).model_construct(_fields_set=set(self.model_fields_set), **{**current, **fitted})

    def check_classes(self, classes: int | None) -> None:
        """Raise ValueError (one line naming the field) if a task or TOP-R needs more than ``classes``
        (unknown, None, for a user world whose config does not say), or the pool is too small."""
        if classes is not None and max(self.task_classes) > classes:
            raise ValueError(f"evaluate.task_classes: got {max(self.task_classes)}; allowed: 2..{classes} (classes with positive prior)")
        if classes is not None and self.top_r and max(self.top_r) > classes:
            raise ValueError(f"evaluate.top_r: got {max(self.top_r)}; allowed: 1..{classes} (classes with positive prior)")
        if self.block_sizes and max(self.block_sizes) > self.mean_samples:
            raise ValueError(
                f"evaluate.block_sizes: got {max(self.block_sizes)}; allowed: 1..{self.mean_samples} (mean_samples: "
                f"μ̂ must average at least as many points as a block for Proposition 6.2's plug-in to be safe)")
        if self.shots and max(self.shots) + self.probe_val > self.mean_samples:
            raise ValueError(
                f"evaluate.shots: got {max(self.shots)}; allowed: 1..{self.mean_samples - self.probe_val} (the pool: "
                f"mean_samples − probe_val = {self.mean_samples} − {self.probe_val} labeled points per class)")
        if self.probe_shots + self.probe_val > self.mean_samples:
            raise ValueError(
                f"evaluate.mean_samples: got {self.mean_samples}; must be ≥ probe_shots + probe_val = "
                f"{self.probe_shots + self.probe_val} (the probe's points come from the per-class pool)")
