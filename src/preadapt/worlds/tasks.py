"""Downstream task distributions P_task derived from the pretraining world P_pre (DESIGN.md section 2).

A task transform turns the pretraining world into two views of the downstream task: ``id``, whose
training split gives the task's labeled points and whose population is its in-distribution test
distribution, and ``ood``, a second test distribution. Transforms are registered in ``TASKS`` and
chosen by the ``kind`` of a config's ``task`` section, like worlds, encoders and objectives.

``subspace`` is the set-up of [Kumar22] (THEORY.md section 5): in-distribution inputs lie on a fixed
random subspace S of the input space, out-of-distribution inputs are the world's own. A linear
encoder fine-tuned on points of S changes only along S, so fine-tuning can distort the features of
the OOD inputs (their part outside S keeps the pretrained map while the head moves).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field

from preadapt.registry import ComponentConfig, Registry
from preadapt.worlds.base import ExampleWorld, InputSpec, World
from preadapt.worlds.finite import SPLITS, split_of

TASKS = Registry("task")


class TaskConfig(ComponentConfig):
    """Base of every task transform's config. Its validation hook is ``check_input(spec)``: raise
    ``ValueError`` when the transform cannot take the world's inputs (``spec``: the world config's
    ``input_spec``; skip the check when that is None, unknown), with one line that starts with the
    field at fault; validation prefixes ``task.``. The default accepts any input."""


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
        if not spec.real:
            raise ValueError(f"kind: subspace needs real-valued vector inputs; the world gives {spec}")
        self.check_shape(spec.shape)

    def check_shape(self, shape: tuple[int, ...]) -> None:
        """The check of ``check_input`` that a built world allows (a ``World`` has a shape, no dtype)."""
        shape = tuple(shape)
        if len(shape) != 1:
            raise ValueError(f"kind: subspace needs vector inputs (shape (d,)); the world's inputs have shape {shape}")
        if self.rank > shape[0]:
            raise ValueError(f"rank: got {self.rank}; allowed: 1..{shape[0]} (the world's input dimension)")


@dataclass(frozen=True, eq=False)
class TaskViews:
    """The two views of a downstream task and, for a subspace task, its geometry.

    ``id``: the in-distribution task world (``split_of(id, "train")`` gives its labeled points, the
    view itself its test distribution); ``ood``: the out-of-distribution test world. ``basis``: (d, r)
    float64 with orthonormal columns spanning S; ``projector``: P_S = basis·basisᵀ, (d, d) float64,
    symmetric. Both None for a transform without a subspace.
    """

    id: World
    ood: World
    projector: torch.Tensor | None = None
    basis: torch.Tensor | None = None


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


class SubspaceWorld:
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
        self.base = base
        self.basis = basis
        self.noise = float(noise)
        self.noise_bank = noise_bank

    @property
    def classes(self) -> int:
        return self.base.classes

    @property
    def prior(self):
        return self.base.prior

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.base.input_shape

    def split_world(self, name: str) -> "SubspaceWorld":
        """The projection of the base world's split ``name`` (the base itself when it has no splits)."""
        view = split_of(self.base, name)
        if view is self.base:
            return self
        world = copy.copy(self)
        world.base = view
        return world

    def sample(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        ids = self.sample_ids(labels, generator)
        if ids is not None:
            return self.take(ids)
        x = self.base.sample(labels, generator)  # (n, d)
        noise = None
        if self.noise > 0:
            noise = self.noise * torch.randn(x.shape, generator=generator, dtype=torch.float64)
        return self._project(x, noise)

    def sample_ids(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor | None:
        """The base world's example ids of a draw; None when it draws fresh inputs."""
        return self.base.sample_ids(labels, generator) if isinstance(self.base, ExampleWorld) else None

    def take(self, ids: torch.Tensor) -> torch.Tensor:
        """The projected inputs of the base's examples ``ids: (n,)`` (with their kept noise) → (n, d)."""
        if not isinstance(self.base, ExampleWorld):
            raise ValueError("take() needs a base world of finite examples; this one draws fresh inputs")
        ids = torch.as_tensor(ids, dtype=torch.long)
        noise = None if self.noise_bank is None else self.noise_bank[ids]
        return self._project(self.base.take(ids), noise)

    def example_ids(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self.base.example_ids() if isinstance(self.base, ExampleWorld) else None

    def _project(self, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        """P_S·x (+ noise) for ``x: (n, d)``, computed in float64 and returned in x's dtype."""
        if not x.dtype.is_floating_point:
            raise ValueError(f"kind: subspace needs real-valued inputs; the world gives {x.dtype}")
        coordinates = x.to(torch.float64) @ self.basis  # (n, r): x in the basis of S
        projected = coordinates @ self.basis.T  # (n, d)
        if noise is not None:
            projected = projected + noise
        return projected.to(x.dtype)


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


def register_task(name: str, factory, params=None) -> None:
    """Make ``task: {kind: name}`` usable in configs: ``factory(config, world, generator) -> TaskViews``.

    ``params`` is an optional pydantic model (a ``TaskConfig`` subclass) that validates the config's
    fields and may check the world's inputs (``check_input``); without it, every field is passed through.
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
    """
    config = TASKS.parse(config)
    return TASKS.build(config, world, generator)
