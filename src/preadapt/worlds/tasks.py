"""Downstream task distributions P_task derived from the pretraining world P_pre (DESIGN.md section 2).

A task transform turns the world into the views of the downstream task (``TaskViews``): ``id``, whose
training split gives the task's labeled points and whose population is its in-distribution test
distribution; ``ood``, a second test distribution (or None); and ``pretrain``, the world pretraining
sees (None: the world itself). Transforms are registered in ``TASKS`` and chosen by the ``kind`` of a
config's ``task`` section, like worlds, encoders and objectives. They are the knob (a) of THEORY.md
section 1, the relation between P_pre and P_task:

- ``prior``: the tasks' classes are drawn from another prior ρ_task (a class-prior shift);
- ``unseen``: a fraction of the classes never appears in pretraining; the tasks draw from all the
  classes, the seen or the unseen ones;
- ``covariate``: each class's inputs are moved (rotated, translated, made noisier) by a ``severity``
  in [0, 1]; the tasks are trained and tested on the moved inputs, pretraining never sees them;
- ``subspace``: the set-up of [Kumar22] (THEORY.md section 5): in-distribution inputs lie on a fixed
  random subspace S of the input space, out-of-distribution inputs are the world's own. A linear
  encoder fine-tuned on points of S changes only along S, so fine-tuning can distort the features of
  the OOD inputs (their part outside S keeps the pretrained map while the head moves);
- ``hierarchy`` (structural shift): consecutive blocks of classes form superclasses; pretraining's
  latent classes are one level and the tasks' classes the other.

The views are worlds in their own right (``DerivedWorld``): they keep the base world's split views
(``split_of``) and, on a world of finite examples, its example ids. ``compose`` applies transforms one
after another, each to the previous one's ``id`` view (docs/config.md, the ``task`` section).
"""

from __future__ import annotations

import copy
import difflib
import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, SerializeAsAny, ValidationError, field_validator

from preadapt.registry import ComponentConfig, Registry, describe_validation_error
from preadapt.worlds.base import ExampleWorld, InputSpec, World
from preadapt.worlds.finite import SPLITS, split_of
from preadapt.worlds.prior import as_prior

TASKS = Registry("task")

Prior = Literal["uniform"] | dict[Literal["zipf"], float] | list[float]


class TaskConfig(ComponentConfig):
    """Base of every task transform's config. Its hooks, each with a default that fits a transform
    that keeps the world's classes (validation prefixes ``task.`` to their messages):

    - ``check_input(spec)``: raise ``ValueError`` when the transform cannot take the world's inputs
      (``spec``: the world config's ``input_spec``; not called when that is None, unknown), with one
      line that starts with the field at fault. Default: accept any input.
    - ``check_classes(classes)``: the same for a world of ``classes`` classes (called when the world
      config says its number of classes; the factory checks the built world in any case). Default:
      accept any number.
    - ``pretrain_support(classes)`` and ``task_support(classes)``: how many classes (of positive prior,
      when all of the world's ``classes`` have one) pretraining draws from and the tasks draw from; a
      run's ``evaluate.task_classes`` and ``top_r`` must fit both. Default: ``classes``.

    - ``id_classes(classes)``: the number of classes of the ``id`` view (what a transform composed
      after this one sees). Default: ``classes``.
    - ``pretraining_key()``: the part of the config that decides the world pretraining sees, as plain
      data; None when pretraining sees the world itself whatever the fields. Two runs that agree on it
      (and on the seed, world, encoder, objective and pretraining) pretrain the same encoder. Default:
      the whole config (a transform that does not say is assumed to change pretraining).

    ``first_only``: why the transform can only be the first step of a ``compose`` (it changes what
    pretraining sees, or the classes), or None. A user's transform whose views do either is refused
    when a later step's views are built.

    >>> TaskConfig(kind="mine").pretrain_support(10), TaskConfig(kind="mine").task_support(10)
    (10, 10)
    """

    first_only: ClassVar[str | None] = None

    def check_classes(self, classes: int) -> None:
        return None

    def id_classes(self, classes: int) -> int:
        return classes

    def pretraining_key(self) -> dict | None:
        return self.model_dump(mode="json")

    def pretrain_support(self, classes: int) -> int:
        return classes

    def task_support(self, classes: int) -> int:
        return classes


def check_vector_input(kind: str, spec: InputSpec) -> None:
    """Refuse (ValueError, one line) inputs that are not real-valued vectors, for a transform ``kind``
    that moves inputs in R^d."""
    if not spec.real:
        raise ValueError(f"kind: {kind} needs real-valued vector inputs; the world gives {spec}")
    check_vector_shape(kind, spec.shape)


def check_vector_shape(kind: str, shape: tuple[int, ...]) -> None:
    """The shape part of ``check_vector_input``, which a built world allows (it has a shape, no dtype)."""
    shape = tuple(shape)
    if len(shape) != 1:
        raise ValueError(f"kind: {kind} needs vector inputs (shape (d,)); the world's inputs have shape {shape}")


@dataclass(frozen=True, eq=False)
class TaskViews:
    """The views of a downstream task and, for a subspace task, its geometry.

    ``id``: the in-distribution task world (``split_of(id, "train")`` gives its labeled points, the
    view itself its test distribution); its ``classes`` and ``prior`` are those the tasks are drawn
    from (they may differ from pretraining's). ``ood``: the out-of-distribution test world, over the
    same classes (None: the transform has no second test distribution). ``pretrain``: the world
    pretraining sees (None: the world itself; e.g. restricted to the seen classes). ``basis``: (d, r)
    float64 with orthonormal columns spanning S; ``projector``: P_S = basis·basisᵀ, (d, d) float64,
    symmetric. Both None for a transform without a subspace.
    """

    id: World
    ood: World | None
    projector: torch.Tensor | None = None
    basis: torch.Tensor | None = None
    pretrain: World | None = None


class DerivedWorld:
    """A world derived from a ``base`` world: by default its classes, prior, input shape and draws.

    Subclasses override what they change: ``prior`` (and ``classes``), or the inputs through two hooks,
    ``map_fresh(x, labels, generator)`` for the base's fresh draws (it may draw more random numbers
    after the base's) and ``map_examples(x, ids)`` for the base's finite examples (deterministic per
    example id). A draw from a base of finite examples goes through its ids, so ``draw_examples`` and
    the estimates that count distinct examples see the base's ids. Split views are the derived views of
    the base's split views (the world itself when the base has no splits).
    """

    def __init__(self, base: World) -> None:
        self.base = base

    @property
    def classes(self) -> int:
        return self.base.classes

    @property
    def prior(self) -> np.ndarray:
        return self.base.prior

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.base.input_shape

    def split_world(self, name: str):
        """This transform of the base world's split ``name`` (itself when the base has no splits)."""
        view = split_of(self.base, name)
        if view is self.base:
            return self
        world = copy.copy(self)
        world.base = view
        return world

    def sample(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        labels = torch.as_tensor(labels, dtype=torch.long)
        ids = self.sample_ids(labels, generator)
        if ids is not None:
            return self.take(ids)
        return self.map_fresh(self.base.sample(labels, generator), labels, generator)

    def sample_ids(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor | None:
        """The base world's example ids of a draw; None (no random numbers drawn) when it draws fresh inputs."""
        return self.base.sample_ids(labels, generator) if isinstance(self.base, ExampleWorld) else None

    def take(self, ids: torch.Tensor) -> torch.Tensor:
        """The inputs of the base's examples ``ids: (n,)``, mapped → (n, *X)."""
        if not isinstance(self.base, ExampleWorld):
            raise ValueError("take() needs a base world of finite examples; this one draws fresh inputs")
        ids = torch.as_tensor(ids, dtype=torch.long)
        return self.map_examples(self.base.take(ids), ids)

    def example_ids(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self.base.example_ids() if isinstance(self.base, ExampleWorld) else None

    def map_fresh(self, x: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return x

    def map_examples(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return x


def _example_id_space(world: World) -> int | None:
    """1 + the largest example id over all splits of ``world``; None for a world of fresh draws."""
    sizes = []
    for name in SPLITS:
        view = split_of(world, name)
        examples = view.example_ids() if isinstance(view, ExampleWorld) else None
        if examples is None:
            return None
        sizes.append(int(examples[0].max()) + 1)
    return max(sizes)


def _example_classes(world: World) -> torch.Tensor | None:
    """The class of every example id over all splits of ``world``, (N,) long (−1 for an id no split
    holds); None for a world of fresh draws."""
    size = _example_id_space(world)
    if size is None:
        return None
    table = torch.full((size,), -1, dtype=torch.long)
    for name in SPLITS:
        ids, classes = split_of(world, name).example_ids()
        table[ids] = classes
    return table


# ---------------------------------------------------------------------------------------------------
# prior: another class prior for the tasks


def _check_weights(prior):
    """A prior list needs finite non-negative weights and two classes of positive weight (a task has ≥ 2)."""
    if isinstance(prior, list):
        if any(not math.isfinite(w) or w < 0 for w in prior):
            raise ValueError("allowed: weights that are finite and ≥ 0")
        if sum(1 for w in prior if w > 0) < 2:
            raise ValueError("allowed: weights with at least two classes positive (a task has two classes)")
    if isinstance(prior, dict) and prior.get("zipf", 0.0) < 0:
        raise ValueError("zipf exponent must be ≥ 0")
    return prior


class PriorTaskConfig(TaskConfig):
    """Tasks drawn from another class prior ρ_task: a class-prior shift (knob (a) of THEORY.md section 1).

    The id view is the world with ρ replaced by ρ_task (the same D_c, the same draws, the same splits);
    pretraining and the theory's quantities keep ρ. There is no ood view: a task's test points of a
    class come from that class's D_c whatever prior drew the task, so a second view would repeat the
    first; the comparison is the run without a ``task`` section (ρ_task = ρ gives the same rows).

    >>> PriorTaskConfig(prior=[1, 1, 0]).task_support(3)
    2
    >>> PriorTaskConfig(prior=[1, 1, 0]).check_classes(4)
    Traceback (most recent call last):
    ...
    ValueError: prior: got 3 weights; expected one per class (4)
    """

    kind: Literal["prior"] = "prior"
    prior: Prior = Field(..., description="ρ_task: uniform, {zipf: exponent} or a list of weights (normalised)")

    @field_validator("prior")
    @classmethod
    def _prior_ok(cls, prior):
        return _check_weights(prior)

    def check_classes(self, classes: int) -> None:
        if isinstance(self.prior, list) and len(self.prior) != classes:
            raise ValueError(f"prior: got {len(self.prior)} weights; expected one per class ({classes})")

    def task_support(self, classes: int) -> int:
        return sum(1 for w in self.prior if w > 0) if isinstance(self.prior, list) else classes

    def pretraining_key(self) -> None:
        return None  # pretraining sees the world


class PriorWorld(DerivedWorld):
    """The world ``base`` with its prior replaced by ``prior: (C,)`` (in every split view); the same
    classes, D_c and draws (the same random numbers) as the base.

    >>> from preadapt.worlds.gaussian import GaussianWorld
    >>> world = PriorWorld(GaussianWorld(torch.eye(3)), np.array([0.5, 0.25, 0.25]))
    >>> world.classes, world.prior.tolist()
    (3, [0.5, 0.25, 0.25])
    """

    def __init__(self, base: World, prior: np.ndarray) -> None:
        super().__init__(base)
        self._prior = np.asarray(prior, dtype=np.float64)

    @property
    def prior(self) -> np.ndarray:
        return self._prior


def build_prior_task(config: PriorTaskConfig, world: World, generator: torch.Generator) -> TaskViews:
    """The id view: ``world`` with ρ_task; no ood view, pretraining on ``world``. Draws nothing."""
    config.check_classes(world.classes)
    return TaskViews(id=PriorWorld(world, as_prior(config.prior, world.classes)), ood=None)


TASKS.register("prior", build_prior_task, PriorTaskConfig)


# ---------------------------------------------------------------------------------------------------
# unseen: classes that pretraining never sees


def unseen_count(fraction: float, classes: int) -> int:
    """The number of unseen classes: fraction × classes rounded half up.

    >>> unseen_count(0.25, 10), unseen_count(0.5, 5), unseen_count(0.04, 10)
    (3, 3, 0)
    """
    return int(math.floor(fraction * classes + 0.5))


class UnseenTaskConfig(TaskConfig):
    """A ``fraction`` of the classes, chosen by the task generator, is never drawn in pretraining.

    ``round(fraction × |C|)`` classes (rounded half up) are unseen (fraction 0: none, the world
    itself, as the start of a sweep over the fraction; a positive fraction must make one unseen): pretraining draws from the world
    with ρ restricted to the others (renormalised), so no unseen class is ever an anchor, a positive
    or a negative. The tasks draw from ``tasks``: ``all`` the classes (the world itself, with ρ),
    ``seen`` or ``unseen`` ones (ρ restricted to them). There is no ood view (a task's test points
    come from its classes whatever view holds them): compare runs that differ in ``tasks``.

    >>> config = UnseenTaskConfig(fraction=0.3, tasks="unseen")
    >>> config.task_support(10), config.pretrain_support(10)
    (3, 7)
    >>> UnseenTaskConfig(fraction=0.9).check_classes(10)
    Traceback (most recent call last):
    ...
    ValueError: fraction: got 0.9; leaves 1 of the 10 classes for pretraining (9 unseen); allowed: 0, or 0.05 ≤ fraction < 0.85 (at least 2 seen and 1 unseen of 10 classes)
    """

    kind: Literal["unseen"] = "unseen"
    first_only: ClassVar[str | None] = "it changes what pretraining sees"
    fraction: float = Field(..., description="fraction of the classes pretraining never sees, in [0, 1) (0: none)",
                            json_schema_extra={"minimum": 0, "exclusiveMaximum": 1})
    tasks: Literal["all", "seen", "unseen"] = Field("all", description="the classes the tasks draw from")

    @field_validator("fraction")
    @classmethod
    def _fraction_ok(cls, fraction: float) -> float:
        if not 0.0 <= fraction < 1.0:
            raise ValueError("allowed: 0 ≤ fraction < 1")
        return fraction

    def check_classes(self, classes: int) -> None:
        if self.fraction == 0 and self.tasks != "unseen":
            return  # nothing unseen: the world itself
        unseen = unseen_count(self.fraction, classes)
        need = 2 if self.tasks == "unseen" else 1  # unseen classes the tasks need
        if unseen >= need and classes - unseen >= 2:  # pretraining's tuples (and tasks: seen) need two seen classes
            return
        what = (f"leaves {classes - unseen} of the {classes} classes for pretraining ({unseen} unseen)"
                if classes - unseen < 2 else f"makes {unseen} of the {classes} classes unseen")
        allowed = (f"{(need - 0.5) / classes:g} ≤ fraction < {(classes - 1.5) / classes:g}" if need + 2 <= classes
                   else "no fraction")
        if need == 1:  # fraction 0 is the world itself
            allowed = "0, or " + allowed if need + 2 <= classes else "0"
        raise ValueError(f"fraction: got {self.fraction:g}; {what}; allowed: {allowed} (at least 2 seen and {need} "
                         f"unseen of {classes} classes{', tasks: unseen' if need == 2 else ''})")

    def pretrain_support(self, classes: int) -> int:
        return classes - unseen_count(self.fraction, classes)

    def task_support(self, classes: int) -> int:
        unseen = unseen_count(self.fraction, classes)
        return {"all": classes, "seen": classes - unseen, "unseen": unseen}[self.tasks]

    def pretraining_key(self) -> dict | None:
        return {"kind": self.kind, "fraction": self.fraction} if self.fraction > 0 else None  # not ``tasks``


class RestrictedWorld(DerivedWorld):
    """The world ``base`` with ρ restricted to the classes ``kept: (C,)`` bool and renormalised (in every
    split view, from that view's own ρ); the same classes, D_c and draws as the base.

    >>> from preadapt.worlds.gaussian import GaussianWorld
    >>> world = RestrictedWorld(GaussianWorld(torch.eye(4)), np.array([True, False, True, True]))
    >>> world.prior.round(4).tolist()
    [0.3333, 0.0, 0.3333, 0.3333]
    """

    def __init__(self, base: World, kept: np.ndarray) -> None:
        super().__init__(base)
        self.kept = np.asarray(kept, dtype=bool)

    @property
    def prior(self) -> np.ndarray:
        weights = np.where(self.kept, np.asarray(self.base.prior, dtype=np.float64), 0.0)
        return weights / weights.sum()


def build_unseen_task(config: UnseenTaskConfig, world: World, generator: torch.Generator) -> TaskViews:
    """The unseen classes (a uniformly random set from ``generator``); pretraining on the seen ones.
    The permutation is drawn whatever the fraction, so the unseen sets of two fractions are nested
    and a transform composed after this one draws the same numbers at every fraction."""
    classes = world.classes
    config.check_classes(classes)
    order = torch.randperm(classes, generator=generator)
    if config.fraction == 0:
        return TaskViews(id=world, ood=None)  # nothing unseen (tasks: all or seen): the world itself
    unseen = np.zeros(classes, dtype=bool)
    unseen[order[:unseen_count(config.fraction, classes)].numpy()] = True
    positive = np.asarray(world.prior) > 0
    for name, kept, need in (("seen", ~unseen, 2), ("unseen", unseen, 2 if config.tasks == "unseen" else 0)):
        if np.count_nonzero(kept & positive) < need:
            raise ValueError(f"fraction: got {config.fraction:g}; the {name} classes {np.flatnonzero(kept).tolist()} "
                             f"have {np.count_nonzero(kept & positive)} of positive prior; at least {need} needed")
    pretrain = RestrictedWorld(world, ~unseen)
    views = {"all": world, "seen": pretrain, "unseen": RestrictedWorld(world, unseen)}
    return TaskViews(id=views[config.tasks], ood=None, pretrain=pretrain)


TASKS.register("unseen", build_unseen_task, UnseenTaskConfig)


# ---------------------------------------------------------------------------------------------------
# covariate: each class's inputs moved


class CovariateTaskConfig(TaskConfig):
    """Each class's input distribution moved by a ``severity`` s in [0, 1]: a covariate shift.

    For an input x of class c (x ∈ R^d), the moved input is x' = R_c(s)·x + s·shift·u_c + s·noise·ε:
    R_c(s) = exp(s·angle·A_c/‖A_c‖₂) rotates about the origin, with A_c = G_c − G_cᵀ a random
    skew-symmetric generator (G_c Gaussian), so R_c(1) turns each invariant plane of A_c by at most
    ``angle`` radians and R_c(0) = I; u_c is a random unit direction; ε ~ N(0, I_d) is fresh noise
    (kept per example on a world of finite examples). A_c and u_c are drawn once from the task
    generator whatever the severity, so runs that differ only in severity move along the same path.

    The tasks are trained and tested on the moved inputs (the id view), while pretraining sees the
    world unmoved: L*_adapt on id measures how the pretrained features serve a shifted task (the noise
    makes tasks harder; independent per-class moves may also separate classes). The ood
    view is the world itself (the task's heads, fitted on moved inputs, tested on unmoved ones).
    Severity 0 is the identity exactly (the id view draws what the world draws, bit for bit).

    >>> CovariateTaskConfig(severity=0.5).check_input(InputSpec((1, 8, 8)))
    Traceback (most recent call last):
    ...
    ValueError: kind: covariate needs vector inputs (shape (d,)); the world's inputs have shape (1, 8, 8)
    """

    kind: Literal["covariate"] = "covariate"
    severity: float = Field(..., description="s in [0, 1]: 0 is the world itself",
                            json_schema_extra={"minimum": 0, "maximum": 1})
    angle: float = Field(math.pi / 2, ge=0.0, le=math.pi, description="largest rotation angle (radians) at severity 1")
    shift: float = Field(1.0, ge=0.0, allow_inf_nan=False,
                         description="length of each class's translation at severity 1")
    noise: float = Field(0.5, ge=0.0, allow_inf_nan=False, description="σ of the added isotropic noise at severity 1")

    @field_validator("severity")
    @classmethod
    def _severity_ok(cls, severity: float) -> float:
        if not 0.0 <= severity <= 1.0:
            raise ValueError("allowed: 0..1")
        return severity

    def check_input(self, spec: InputSpec) -> None:
        check_vector_input("covariate", spec)

    def pretraining_key(self) -> None:
        return None  # pretraining sees the world


MAX_ROTATION_ENTRIES = 2**28  # |C|·d² float64 entries of the rotations a covariate task keeps (2 GiB)


class CovariateWorld(DerivedWorld):
    """The world ``base`` with each class's inputs moved: x' = R_c·x + t_c + σ·ε for x of class c.

    ``rotations: (C, d, d)`` float64 orthogonal; ``shifts: (C, d)`` float64 (t_c); ``noise``: σ;
    ``noise_bank: (N, d)`` float64 standard normal noise per example id and ``example_classes: (N,)`` the
    class of each id, for a base of finite examples (else None). ``identity``: severity 0, where inputs
    are returned unchanged and no noise is drawn. Computed in float64, returned in the base's dtype.
    """

    def __init__(self, base: World, rotations: torch.Tensor, shifts: torch.Tensor, noise: float,
                 noise_bank: torch.Tensor | None = None, example_classes: torch.Tensor | None = None,
                 identity: bool = False) -> None:
        super().__init__(base)
        self.rotations, self.shifts, self.noise = rotations, shifts, float(noise)
        self.noise_bank, self.example_classes, self.identity = noise_bank, example_classes, identity

    def map_fresh(self, x: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.identity:
            return x
        noise = None
        if self.noise > 0:
            noise = torch.randn(x.shape, generator=generator, dtype=torch.float64)
        return self._move(x, labels, noise)

    def map_examples(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        if self.identity:
            return x
        noise = None if self.noise == 0 or self.noise_bank is None else self.noise_bank[ids]
        return self._move(x, self.example_classes[ids], noise)

    def _move(self, x: torch.Tensor, labels: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        """R_c·x + t_c (+ σ·noise) for ``x: (n, d)`` of classes ``labels: (n,)``."""
        if not x.dtype.is_floating_point:
            raise ValueError(f"kind: covariate needs real-valued inputs; the world gives {x.dtype}")
        x64 = x.to(torch.float64)
        moved = torch.empty_like(x64)
        for c in labels.unique().tolist():
            rows = labels == c
            moved[rows] = x64[rows] @ self.rotations[c].T + self.shifts[c]  # (n_c, d)
        if noise is not None:
            moved = moved + self.noise * noise
        return moved.to(x.dtype)


def random_rotations(classes: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """Per class a skew-symmetric generator A = G − Gᵀ (G Gaussian), scaled to spectral norm 1
    (zero for dim 1) → (C, d, d) float64; exp(θ·A) turns each invariant plane by at most θ.

    >>> A = random_rotations(2, 3, torch.Generator().manual_seed(0))
    >>> bool(torch.allclose(A, -A.transpose(1, 2))), torch.linalg.matrix_norm(A, ord=2).round(decimals=6).tolist()
    (True, [1.0, 1.0])
    """
    gaussian = torch.randn(classes, dim, dim, generator=generator, dtype=torch.float64)
    skew = gaussian - gaussian.transpose(1, 2)
    norm = torch.linalg.matrix_norm(skew, ord=2)  # (C,): the largest |eigenvalue| of a skew matrix
    return skew / torch.where(norm > 0, norm, 1.0)[:, None, None]


def build_covariate_task(config: CovariateTaskConfig, world: World, generator: torch.Generator) -> TaskViews:
    """The moved world as the id view, the world as the ood view. Draws the generators A_c, then the
    directions u_c, then (a world of finite examples) each example's noise, whatever the severity."""
    check_vector_shape("covariate", world.input_shape)
    classes, dim = world.classes, world.input_shape[0]
    if classes * dim * dim > MAX_ROTATION_ENTRIES:
        raise ValueError(f"kind: covariate keeps a d × d rotation per class; the world's {classes} classes × {dim}² "
                         f"entries are more than {MAX_ROTATION_ENTRIES} (2 GiB of float64)")
    generators = random_rotations(classes, dim, generator)  # (C, d, d)
    directions = torch.randn(classes, dim, generator=generator, dtype=torch.float64)
    directions = directions / directions.norm(dim=1, keepdim=True).clamp_min(1e-300)  # (C, d): u_c
    table = _example_classes(world)
    bank = None if table is None else torch.randn(table.numel(), dim, generator=generator, dtype=torch.float64)
    s = config.severity
    rotations = torch.linalg.matrix_exp(s * config.angle * generators)  # (C, d, d): R_c(s)
    moved = CovariateWorld(world, rotations, s * config.shift * directions, s * config.noise, bank, table,
                           identity=s == 0)
    return TaskViews(id=moved, ood=world)


TASKS.register("covariate", build_covariate_task, CovariateTaskConfig)


# ---------------------------------------------------------------------------------------------------
# subspace: [Kumar22]


class SubspaceTaskConfig(TaskConfig):
    """The task of [Kumar22]: ID inputs x_id = P_S·x + noise·ε, OOD inputs x, for x ~ D_c of the world.

    S is a random ``rank``-dimensional subspace of R^d (d the world's input dimension), drawn once from
    the task generator; P_S is the orthogonal projector onto it. ``noise`` is the standard deviation of
    isotropic Gaussian noise ε ~ N(0, I_d) added to the projected input in the *whole* input space,
    so ID inputs leave S when it is positive: the [Kumar22] invariance (fine-tuning on ID points moves
    a linear encoder only along S) holds exactly at noise 0, the default. On a world of finite
    examples the noise of each example is drawn once and kept, so that the ID view is again a finite
    set of examples with the same ids.

    >>> SubspaceTaskConfig(rank=2).check_input(InputSpec((1, 8, 8)))
    Traceback (most recent call last):
    ...
    ValueError: kind: subspace needs vector inputs (shape (d,)); the world's inputs have shape (1, 8, 8)
    """

    kind: Literal["subspace"] = "subspace"
    rank: int = Field(..., ge=1, description="dimension of the subspace S the ID inputs are projected onto (≤ d)")
    noise: float = Field(0.0, ge=0.0, allow_inf_nan=False,
                         description="σ of isotropic Gaussian noise added to projected ID inputs; 0 keeps them in S")

    def check_input(self, spec: InputSpec) -> None:
        check_vector_input("subspace", spec)
        self.check_shape(spec.shape)

    def check_shape(self, shape: tuple[int, ...]) -> None:
        """The check of ``check_input`` that a built world allows (a ``World`` has a shape, no dtype)."""
        check_vector_shape("subspace", shape)
        if self.rank > shape[0]:
            raise ValueError(f"rank: got {self.rank}; allowed: 1..{shape[0]} (the world's input dimension)")

    def pretraining_key(self) -> None:
        return None  # pretraining sees the world


def random_subspace(dim: int, rank: int, generator: torch.Generator) -> torch.Tensor:
    """An orthonormal basis (dim, rank) float64 of a uniformly random subspace of R^dim.

    The Q of a Gaussian matrix's QR, with each column's sign chosen so that R has a positive
    diagonal: that QR is unique, so the basis depends on the generator's draws only.

    >>> basis = random_subspace(5, 2, torch.Generator().manual_seed(0))
    >>> tuple(basis.shape), bool(torch.allclose(basis.T @ basis, torch.eye(2, dtype=torch.float64)))
    ((5, 2), True)
    """
    gaussian = torch.randn(dim, rank, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    signs = torch.where(r.diagonal() < 0, -1.0, 1.0).to(torch.float64)
    return q * signs  # (d, r)


class SubspaceWorld(DerivedWorld):
    """The world ``base`` seen through x ↦ P_S·x + σ·ε: same classes, prior and input shape, and the
    same draws of the base world (the same random numbers; fresh noise is drawn after them).

    ``basis``: (d, r) float64, orthonormal, spanning S. ``noise``: σ. ``noise_bank``: (N, d) float64
    per-example noise, indexed by example id, for a base of finite examples (None at σ = 0 or for a
    base that draws fresh inputs, whose noise is drawn with every sample). Inputs keep the base's
    floating dtype; the projection is computed in float64, so a float32 input lies in S up to its own
    rounding (ε₃₂·‖x‖). Split views are the projections of the base's split views, sharing S.
    """

    def __init__(self, base: World, basis: torch.Tensor, noise: float = 0.0,
                 noise_bank: torch.Tensor | None = None) -> None:
        super().__init__(base)
        self.basis = basis
        self.noise = float(noise)
        self.noise_bank = noise_bank

    def map_fresh(self, x: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        noise = None
        if self.noise > 0:
            noise = self.noise * torch.randn(x.shape, generator=generator, dtype=torch.float64)
        return self._project(x, noise)

    def map_examples(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self._project(x, None if self.noise_bank is None else self.noise_bank[ids])

    def _project(self, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        """P_S·x (+ noise) for ``x: (n, d)``, computed in float64 and returned in x's dtype."""
        if not x.dtype.is_floating_point:
            raise ValueError(f"kind: subspace needs real-valued inputs; the world gives {x.dtype}")
        coordinates = x.to(torch.float64) @ self.basis  # (n, r): x in the basis of S
        projected = coordinates @ self.basis.T  # (n, d)
        if noise is not None:
            projected = projected + noise
        return projected.to(x.dtype)


def build_subspace_task(config: SubspaceTaskConfig, world: World, generator: torch.Generator) -> TaskViews:
    """The [Kumar22] views of ``world``: S (then, on a world of finite examples at noise > 0, each
    example's noise) drawn from ``generator``; ``ood`` is ``world`` itself."""
    config.check_shape(world.input_shape)
    basis = random_subspace(world.input_shape[0], config.rank, generator)
    projector = basis @ basis.T
    projector = (projector + projector.T) / 2  # exactly symmetric, whatever the matmul's summation order
    bank = None
    if config.noise > 0 and (size := _example_id_space(world)) is not None:
        bank = config.noise * torch.randn(size, world.input_shape[0], generator=generator, dtype=torch.float64)
    return TaskViews(id=SubspaceWorld(world, basis, config.noise, bank), ood=world, projector=projector, basis=basis)


TASKS.register("subspace", build_subspace_task, SubspaceTaskConfig)


# ---------------------------------------------------------------------------------------------------
# hierarchy: superclasses and subclasses (structural shift)


class HierarchyTaskConfig(TaskConfig):
    """Superclasses of the world's classes: pretraining's latent classes are one level, the tasks' the other.

    The world's |C| classes are the fine level; ``groups`` superclasses are consecutive blocks of
    |C|/groups classes (class c is in superclass ⌊c·groups/|C|⌋). The world of superclasses has
    ρ_g = Σ_{c∈g} ρ(c) and D_g = Σ_{c∈g} (ρ(c)/ρ_g)·D_c, the mixture of its subclasses, so a similar
    pair shares a superclass but not, in general, a subclass; its τ is Σ_g ρ_g² exactly.

    ``direction``: ``fine_to_coarse``, pretraining on the world (fine classes) and tasks over the
    superclasses (id = the world of superclasses); ``coarse_to_fine``, pretraining on the world of
    superclasses and tasks over the fine classes (id = the world). No ood view.

    >>> HierarchyTaskConfig(groups=3, direction="fine_to_coarse").check_classes(10)
    Traceback (most recent call last):
    ...
    ValueError: groups: got 3; allowed: a divisor of the world's 10 classes (superclasses are equal blocks of classes)
    """

    kind: Literal["hierarchy"] = "hierarchy"
    first_only: ClassVar[str | None] = "it changes the classes"
    groups: int = Field(..., ge=2, description="superclasses: consecutive blocks of the world's classes")
    direction: Literal["coarse_to_fine", "fine_to_coarse"] = Field(
        ..., description="pretraining's level → the tasks' level")

    def check_classes(self, classes: int) -> None:
        if classes % self.groups:
            raise ValueError(f"groups: got {self.groups}; allowed: a divisor of the world's {classes} classes "
                             f"(superclasses are equal blocks of classes)")

    def pretrain_support(self, classes: int) -> int:
        return self.groups if self.direction == "coarse_to_fine" else classes

    def task_support(self, classes: int) -> int:
        return classes if self.direction == "coarse_to_fine" else self.groups

    def id_classes(self, classes: int) -> int:
        return self.task_support(classes)

    def pretraining_key(self) -> dict | None:
        return {"kind": self.kind, "groups": self.groups} if self.direction == "coarse_to_fine" else None


class GroupWorld(DerivedWorld):
    """The world of ``groups`` superclasses of ``base``: superclass g holds the base classes
    [g·m, (g+1)·m), m = |C|/groups; ρ_g = Σ_{c∈g} ρ(c) and D_g the ρ-weighted mixture of its D_c.

    A draw of superclass g first draws its subclass c with probability ρ(c)/ρ_g (uniformly when ρ_g
    is 0; one uniform number per draw), then x ~ D_c from the base with the same generator. On a base of
    finite examples the examples of g are those of its subclasses, with the base's ids.

    >>> from preadapt.worlds.gaussian import GaussianWorld
    >>> world = GroupWorld(GaussianWorld(torch.eye(4), prior=[0.1, 0.2, 0.3, 0.4]), groups=2)
    >>> world.classes, world.prior.round(6).tolist()
    (2, [0.3, 0.7])
    """

    def __init__(self, base: World, groups: int) -> None:
        super().__init__(base)
        if base.classes % groups:
            raise ValueError(f"groups: got {groups}; allowed: a divisor of the world's {base.classes} classes")
        self.groups = groups
        self.block = base.classes // groups

    @property
    def classes(self) -> int:
        return self.groups

    @property
    def prior(self) -> np.ndarray:
        return np.asarray(self.base.prior, dtype=np.float64).reshape(self.groups, self.block).sum(1)

    def superclass(self, classes: torch.Tensor) -> torch.Tensor:
        """The superclass of each base class (any shape, long)."""
        return torch.div(classes, self.block, rounding_mode="floor")

    def subclasses(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """For each superclass of ``labels: (n,)`` a base class c ∈ g with probability ρ(c)/ρ_g → (n,) long."""
        labels = torch.as_tensor(labels, dtype=torch.long)
        weights = np.asarray(self.base.prior, dtype=np.float64).reshape(self.groups, self.block)
        mass = weights.sum(1, keepdims=True)
        within = np.where(mass > 0, weights / np.where(mass > 0, mass, 1.0), 1.0 / self.block)  # (G, m)
        cdf = torch.as_tensor(np.cumsum(within, axis=1))  # (G, m)
        uniform = torch.rand(labels.shape[0], generator=generator, dtype=torch.float64)
        position = (uniform[:, None] >= cdf[labels]).sum(1).clamp_max(self.block - 1)  # (n,)
        return labels * self.block + position

    def sample(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        fine = self.subclasses(labels, generator)
        ids = super().sample_ids(fine, generator)
        return self.base.sample(fine, generator) if ids is None else self.take(ids)

    def sample_ids(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor | None:
        if super().example_ids() is None:  # fresh draws: no ids, no random numbers drawn
            return None
        return super().sample_ids(self.subclasses(labels, generator), generator)

    def example_ids(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        examples = super().example_ids()
        if examples is None:
            return None
        ids, classes = examples  # grouped by base class, hence by superclass (consecutive blocks)
        return ids, self.superclass(classes)


def build_hierarchy_task(config: HierarchyTaskConfig, world: World, generator: torch.Generator) -> TaskViews:
    """The world of superclasses as the id view (fine_to_coarse) or as pretraining's (coarse_to_fine).
    Draws nothing."""
    config.check_classes(world.classes)
    coarse = GroupWorld(world, config.groups)
    if config.direction == "fine_to_coarse":
        return TaskViews(id=coarse, ood=None)
    return TaskViews(id=world, ood=None, pretrain=coarse)


TASKS.register("hierarchy", build_hierarchy_task, HierarchyTaskConfig)


# ---------------------------------------------------------------------------------------------------
# compose: transforms applied one after another


def _step_error(index: int, error: ValidationError, model: type[TaskConfig]) -> str:
    """A step's first validation error as the rest of a location, ``.1.severity: got 1.5; allowed: 0..1``
    (``registry.describe_validation_error``, an unknown field with a close one of the step's model)."""

    def suggest(unknown: str, parents: tuple) -> str | None:
        close = difflib.get_close_matches(unknown, list(model.model_fields), n=1, cutoff=0.75)
        return close[0] if close and not parents else None

    return "." + describe_validation_error(error, str(index), suggest)


class ComposeTaskConfig(TaskConfig):
    """Transforms applied one after another: ``steps[0]`` to the world, each later step to the ``id``
    view of the one before (its classes, prior and moved inputs).

    Pretraining sees the first step's pretraining world; the ``ood`` view is the last step's that has
    one (for ``covariate`` after ``unseen``: the unseen step's ``id`` view, unmoved); a subspace's
    geometry is the last subspace step's. Only the first step may change what pretraining sees or the
    classes (``unseen``, ``hierarchy``). The steps draw from one task generator in order, and ``unseen``
    draws its permutation whatever its fraction, so a later step's random moves are the same at every
    fraction: a sweep over ``steps.0.fraction`` × ``steps.1.severity`` is paired.

    >>> config = ComposeTaskConfig(steps=[{"kind": "unseen", "fraction": 0.3}, {"kind": "covariate", "severity": 1}])
    >>> config.pretrain_support(10), config.task_support(10)
    (7, 10)
    >>> try:
    ...     ComposeTaskConfig(steps=[{"kind": "covariate", "severity": 1}, {"kind": "unseen", "fraction": 0.3}])
    ... except ValidationError as error:
    ...     print(error.errors()[0]["msg"])
    Value error, .1.kind: got 'unseen'; allowed: the first step only (it changes what pretraining sees)
    """

    kind: Literal["compose"] = "compose"
    steps: list[SerializeAsAny[TaskConfig]] = Field(
        ..., description="task sections (two or more), applied in order; only the first may change pretraining or "
                         "the classes")

    @field_validator("steps", mode="before")
    @classmethod
    def _steps(cls, steps):
        if not isinstance(steps, list) or len(steps) < 2:
            raise ValueError("expected a list of two or more task sections")
        parsed = []
        for index, step in enumerate(steps):
            if not isinstance(step, TaskConfig):
                kind = step.get("kind") if isinstance(step, dict) else step
                allowed = [name for name in TASKS.names() if name != "compose"]
                if kind not in allowed:
                    raise ValueError(f".{index}.kind: got {kind!r}; allowed: {', '.join(allowed)}")
                try:
                    step = TASKS.parse(step)
                except ValidationError as error:
                    raise ValueError(_step_error(index, error, TASKS.entry(kind).params)) from None
            if index and step.first_only:
                raise ValueError(f".{index}.kind: got {step.kind!r}; allowed: the first step only ({step.first_only})")
            parsed.append(step)
        return parsed

    def check_input(self, spec: InputSpec) -> None:
        for index, step in enumerate(self.steps):
            try:
                step.check_input(spec)
            except ValueError as error:
                raise ValueError(f"steps.{index}.{error}") from None

    def check_classes(self, classes: int) -> None:
        for index, (step, count) in enumerate(zip(self.steps, self._classes_seen(classes))):
            try:
                step.check_classes(count)
            except ValueError as error:
                raise ValueError(f"steps.{index}.{error}") from None

    def _classes_seen(self, classes: int) -> list[int]:
        """The number of classes each step is applied to: the world's, then the first step's id view's."""
        return [classes] + [self.steps[0].id_classes(classes)] * (len(self.steps) - 1)

    def pretrain_support(self, classes: int) -> int:
        return self.steps[0].pretrain_support(classes)

    def task_support(self, classes: int) -> int:
        return min(step.task_support(count) for step, count in zip(self.steps, self._classes_seen(classes)))

    def id_classes(self, classes: int) -> int:
        return self.steps[0].id_classes(classes)

    def pretraining_key(self) -> dict | None:
        return self.steps[0].pretraining_key()


def build_compose_task(config: ComposeTaskConfig, world: World, generator: torch.Generator) -> TaskViews:
    """Each step's views from the previous step's id view, the steps drawing from ``generator`` in order."""
    views = TASKS.build(config.steps[0], world, generator)
    for index, step in enumerate(config.steps[1:], start=1):
        base = views.id
        try:
            step_views = TASKS.build(step, base, generator)
        except ValueError as error:
            raise ValueError(f"steps.{index}.{error}") from None
        if step_views.pretrain is not None or step_views.id.classes != base.classes:
            raise ValueError(f"steps.{index}.kind: got {step.kind!r}; its views change what pretraining sees or the "
                             f"classes, which only the first step may")
        views = TaskViews(id=step_views.id, ood=step_views.ood if step_views.ood is not None else views.ood,
                          projector=step_views.projector if step_views.basis is not None else views.projector,
                          basis=step_views.basis if step_views.basis is not None else views.basis,
                          pretrain=views.pretrain)
    return views


TASKS.register("compose", build_compose_task, ComposeTaskConfig)


def register_task(name: str, factory, params=None) -> None:
    """Make ``task: {kind: name}`` usable in configs: ``factory(config, world, generator) -> TaskViews``.

    ``params`` is an optional pydantic model (a ``TaskConfig`` subclass) that validates the config's
    fields and may check the world's inputs (``check_input``) and classes (``check_classes``); without
    it, every field is passed through.
    """
    TASKS.register(name, factory, params, user=True)


def derive_task(world: World, config: TaskConfig | dict, generator: torch.Generator) -> TaskViews:
    """The downstream task views of ``world`` under the transform ``config`` names; its randomness
    (the subspace, kept noise) comes from ``generator`` only.

    >>> from preadapt.worlds.gaussian import GaussianWorld
    >>> world = GaussianWorld(3.0 * torch.eye(4), noise=1.0)
    >>> task = derive_task(world, {"kind": "subspace", "rank": 2}, torch.Generator().manual_seed(0))
    >>> task.ood is world, tuple(task.basis.shape), round(float(task.projector.trace()), 9)
    (True, (4, 2), 2.0)
    >>> x = task.id.sample(torch.tensor([0, 1, 2]), torch.Generator().manual_seed(1))  # (n, d) float32, in S
    >>> x.dtype, bool(torch.allclose(x.double() @ task.projector, x.double(), atol=1e-6))
    (torch.float32, True)
    >>> task = derive_task(world, {"kind": "hierarchy", "groups": 2, "direction": "coarse_to_fine"}, torch.Generator())
    >>> task.id is world, task.pretrain.classes, task.pretrain.prior.tolist()
    (True, 2, [0.5, 0.5])
    """
    config = TASKS.parse(config)
    return TASKS.build(config, world, generator)
