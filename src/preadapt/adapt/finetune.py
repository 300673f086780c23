"""Fine-tuning under the constraint C(γ, θ_FM) ≤ c0, and LP-FT [Kumar22], for P tasks at once.

γ_task is a linear head (W ∈ R^{K×d}, b ∈ R^K) on f_θ(x) and, when the encoder trains, θ itself
(THEORY.md section 1). One routine, :func:`train_adaptation`, trains both: linear probing and
fine-tuning differ only in which parameters train (``train_encoder``). It minimises, per task, the
mean adaptation loss on the task's training points, full batch, in float64, and after every step
projects exactly onto the constraint set:

- the encoder: ‖θ − θ_FM‖₂ ≤ c0, all parameters as one vector per task,
  θ ← θ_FM + (θ − θ_FM)·c0/‖θ − θ_FM‖ where the distance exceeds c0 (``c0 = None``: unconstrained;
  ``c0 = 0`` keeps θ = θ_FM bit for bit, so the head follows the head-only trajectory exactly);
- the head: ‖W‖_F ≤ ``head_bound`` (None: none). The intercept b is not bounded, as the linear
  probe's intercept is not penalised: it only shifts the scores of all points alike.

The P tasks train together: each task's copy of the encoder parameters is stacked, ``(P, *shape)``,
and the encoder runs under ``torch.func.vmap`` of ``functional_call``; an encoder that vmap cannot
run (``.item()`` in an embedding bag or a GRU, in-place updates of buffers) runs in a loop over
per-task deep copies instead (:class:`TaskEncoders` finds out once; ``path`` says which). The
optimizers (:class:`SGD`, :class:`Adam`) act elementwise on the stacked tensors and the summed
objective Σ_p mean_i ℓ separates over tasks, so a batched run is P independent runs.

Hyperparameters, the learning rate (a grid) and the number of steps (early stopping: the
validation loss every ``eval_every`` steps, step 0 included, keeping the parameters of the best
evaluation), are chosen on the validation points only, one choice for all P tasks: the lowest mean
validation loss over tasks.

LP-FT [Kumar22]: fine-tuning changes the features only along the directions the training inputs
span (in their two-layer linear model exactly: B − B_0 vanishes outside the in-distribution
subspace), so the head learns to fit features that moved while features of other inputs did not.
From a zero or random head the early gradients are large and the features move far; starting from
the linear probe's head (LP, then FT), where the loss is already low, they move less.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Callable, Literal, Sequence

import torch
from pydantic import Field, field_validator
from torch import nn
from torch.func import functional_call, vmap

from preadapt.adapt.base import AdaptTask, Adapted, Adapter, AdapterConfig, MarginLoss, TaskPoints
from preadapt.adapt.frozen import LinearAdapter
from preadapt.objectives.losses import margins_from_scores

if TYPE_CHECKING:  # adapt and estimate are one layer; the build functions only read the config
    from preadapt.estimate.spec import EvaluateConfig

ScoreLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""Per-sample losses of scores ``(P, n, K)`` against targets ``(P, n)`` → ``(P, n)``."""

Params = dict[str, torch.Tensor]
"""Encoder parameters of P tasks, stacked: name → ``(P, *shape)``."""

EVAL_POINTS = 1 << 16
"""Points (over all tasks) encoded at once when scoring without gradients: memory stays flat in n."""


def _losses_on_margins(loss: MarginLoss, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return loss(margins_from_scores(scores, labels))


def margin_loss(loss: MarginLoss) -> ScoreLoss:
    """The classification loss ℓ({s_y − s_c'}_{c'≠y}) of [Arora19] as a loss on scores and labels.

    >>> from preadapt.objectives.losses import hinge
    >>> margin_loss(hinge)(torch.tensor([[[2.0, 0.5], [0.0, 0.0]]]), torch.tensor([[0, 1]]))
    tensor([[0., 1.]])
    """
    return partial(_losses_on_margins, loss)


def project_to_ball(tensors: Sequence[torch.Tensor], center: Sequence[torch.Tensor],
                    radius: float) -> list[torch.Tensor]:
    """Each task's point onto the L2 ball of ``radius`` around its center, all tensors one vector.

    ``tensors``, ``center``: ``(P, ...)`` each (a center may also broadcast against its tensor).
    Task p's distance is ‖θ_p − c_p‖₂ over all tensors together; where it exceeds ``radius``,
    θ_p ← c_p + (θ_p − c_p)·radius/‖θ_p − c_p‖, else θ_p is returned as it was, bit for bit. With
    radius 0 a task outside the ball gets c_p + (θ_p − c_p)·0 = c_p exactly.

    >>> theta, center = torch.tensor([[3.0, 4.0], [0.3, 0.4]]), torch.zeros(2, 2)
    >>> project_to_ball([theta], [center], 1.0)[0]  # task 0 at distance 5, task 1 inside
    tensor([[0.6000, 0.8000],
            [0.3000, 0.4000]])
    """
    differences = [t - c for t, c in zip(tensors, center)]
    distance = torch.stack([d.flatten(1).square().sum(1) for d in differences]).sum(0).sqrt()  # (P,)
    outside = distance > radius
    scale = radius / distance.clamp_min(torch.finfo(distance.dtype).tiny)  # < 1 where outside

    def shaped(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return v.view(-1, *([1] * (like.dim() - 1)))

    return [torch.where(shaped(outside, t), c + d * shaped(scale, d), t)
            for t, c, d in zip(tensors, center, differences)]


@dataclass(frozen=True)
class SGD:
    """Plain gradient descent, θ ← θ − lr·g, elementwise (torch.optim.SGD's arithmetic)."""

    def init(self, tensors: Sequence[torch.Tensor]) -> tuple:
        return ()

    def update(self, tensors, grads, state, step: int, lr: float) -> tuple[list[torch.Tensor], tuple]:
        return [t + (-lr) * g for t, g in zip(tensors, grads)], state


@dataclass(frozen=True)
class Adam:
    """Adam (Kingma & Ba), elementwise, with torch.optim.Adam's arithmetic (no weight decay).

    State: first and second moments per tensor. Every entry is its own optimizer, so stacking tasks
    along a leading axis changes nothing about any task's trajectory.
    """

    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    def init(self, tensors: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return [torch.zeros_like(t) for t in tensors], [torch.zeros_like(t) for t in tensors]

    def update(self, tensors, grads, state, step: int, lr: float):
        first = [self.beta1 * m + (1 - self.beta1) * g for m, g in zip(state[0], grads)]
        second = [self.beta2 * v + (1 - self.beta2) * g * g for v, g in zip(state[1], grads)]
        step_size = lr / (1 - self.beta1 ** step)
        root_correction = math.sqrt(1 - self.beta2 ** step)
        new = [t + (-step_size) * (m / (v.sqrt() / root_correction + self.eps))
               for t, m, v in zip(tensors, first, second)]
        return new, (first, second)


OPTIMIZERS = {"sgd": SGD(), "adam": Adam()}


class TaskEncoders:
    """P copies of one encoder in float64, run on stacked parameters: ``(params, inputs) → (P, n, d)``.

    ``params``: name → ``(P, *shape)``; ``inputs: (P, n, *X)``. The template is a deep copy of
    ``encoder`` (never modified) cast to float64 and put in eval mode (no dropout, batch norm with its
    running statistics: training uses no randomness). ``origin``: θ_FM, name → ``shape``.

    ``path`` is "vmap" (one vectorised program over tasks) or "loop" (a Python loop over per-task deep
    copies, each with its own buffers), decided once from ``sample: (P, m, *X)``: vmap is used when its
    forward and backward run and agree with the loop's forward (``vectorize=None``), or as forced
    (``True``/``False``). ``reason`` says why vmap was not used (None when it was).
    """

    def __init__(self, encoder: nn.Module, tasks: int, sample: torch.Tensor, device: torch.device | str = "cpu",
                 vectorize: bool | None = None) -> None:
        self.module = copy.deepcopy(encoder).to(device=device, dtype=torch.float64).eval().requires_grad_(False)
        self.tasks = tasks
        self.device = device
        self.origin: Params = {name: p.detach().clone() for name, p in self.module.named_parameters()}
        self.reason: str | None = None
        if vectorize is None:
            self.reason = _vmap_problem(self.module, self.stack(), self.inputs(sample[:, :2]))
        elif not vectorize:
            self.reason = "vectorize=False"
        self.path: Literal["vmap", "loop"] = "vmap" if self.reason is None else "loop"
        self._copies = [copy.deepcopy(self.module) for _ in range(tasks)] if self.path == "loop" else []

    def stack(self) -> Params:
        """θ_FM for every task: name → ``(P, *shape)``, fresh tensors."""
        return {name: p.expand(self.tasks, *p.shape).clone() for name, p in self.origin.items()}

    def inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        """Inputs on the encoder's device; real-valued ones in float64 (token ids stay integers)."""
        inputs = inputs.to(self.device)
        return inputs.to(torch.float64) if inputs.is_floating_point() else inputs

    def __call__(self, params: Params, inputs: torch.Tensor) -> torch.Tensor:
        if self.path == "vmap":
            return vmap(partial(_encode, self.module))(params, inputs)  # (P, n, d)
        return torch.stack([_encode(module, {name: p[task] for name, p in params.items()}, inputs[task])
                            for task, module in enumerate(self._copies)])  # (P, n, d)

    def encode(self, params: Params, inputs: torch.Tensor) -> torch.Tensor:
        """``self(params, inputs)`` without gradients, in blocks of points (for validation and scoring)."""
        block = max(1, EVAL_POINTS // max(1, self.tasks))
        with torch.no_grad():
            return torch.cat([self(params, part) for part in inputs.split(block, dim=1)], dim=1)


def _encode(module: nn.Module, params: Params, inputs: torch.Tensor) -> torch.Tensor:
    return functional_call(module, params, (inputs,))


def _vmap_problem(module: nn.Module, params: Params, sample: torch.Tensor) -> str | None:
    """Why vmap cannot run ``module`` over tasks (None if it can): it raises, or disagrees with a loop.

    Runs on deep copies, so an encoder that updates its buffers leaves the template as it was.
    """
    batched_module, looped_module = copy.deepcopy(module), copy.deepcopy(module)
    leaves = {name: p.detach().requires_grad_() for name, p in params.items()}
    try:
        batched = vmap(partial(_encode, batched_module))(leaves, sample)  # (P, m, d)
        if leaves:
            torch.autograd.grad(batched.sum(), list(leaves.values()), allow_unused=True)
    except Exception as error:  # whatever vmap refuses, the loop runs
        return f"vmap failed: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    with torch.no_grad():
        looped = torch.stack([_encode(looped_module, {name: p[task] for name, p in params.items()}, sample[task])
                              for task in range(sample.shape[0])])
    # Both compute each task's forward with the same operations; only the blocking of the batched
    # products differs, a few ulps of the outputs' scale.
    scale = float(looped.abs().max()) if looped.numel() else 0.0
    if batched.shape != looped.shape or not torch.allclose(batched.detach(), looped, rtol=1e-9, atol=1e-12 * scale):
        return "vmap and a per-task loop disagree on the encoder's outputs"
    return None


@dataclass(frozen=True)
class AdaptState:
    """One iterate γ_task of P tasks: ``weights: (P, K, d)``, ``intercepts: (P, K)``, ``encoder``:
    name → ``(P, *shape)``."""

    weights: torch.Tensor
    intercepts: torch.Tensor
    encoder: Params


@dataclass(frozen=True)
class Trained:
    """What :func:`train_adaptation` returns: the kept ``state`` (the best evaluation's, or the last
    without validation), its ``steps``, and the validation losses ``validation: (E, P)`` at the
    evaluated steps ``evaluated`` (E of them; empty without validation)."""

    state: AdaptState
    steps: int
    validation: torch.Tensor
    evaluated: list[int] = field(default_factory=list)

    @property
    def best_loss(self) -> float:
        """The mean over tasks of the kept state's validation loss (inf without validation)."""
        if not self.evaluated:
            return math.inf
        return float(self.validation[self.evaluated.index(self.steps)].mean())


def scores_of(encoders: TaskEncoders, state: AdaptState, inputs: torch.Tensor) -> torch.Tensor:
    """Scores ``(P, n, K)`` of ``inputs: (P, n, *X)`` under each task's encoder and head, no gradients."""
    features = encoders.encode(state.encoder, inputs)  # (P, n, d)
    return features @ state.weights.transpose(1, 2) + state.intercepts.unsqueeze(1)


def validation_losses(encoders: TaskEncoders, inputs: torch.Tensor, targets: torch.Tensor, loss: ScoreLoss,
                      state: AdaptState) -> torch.Tensor:
    """Each task's mean loss ``(P,)`` on its validation points ``inputs: (P, m, *X)``, ``targets: (P, m)``."""
    return loss(scores_of(encoders, state, inputs), targets).mean(-1)


def train_adaptation(
    encoders: TaskEncoders,
    start: AdaptState,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss: ScoreLoss,
    lr: float,
    steps: int,
    optimizer: SGD | Adam = OPTIMIZERS["adam"],
    c0: float | None = None,
    head_bound: float | None = None,
    train_encoder: bool = True,
    validate: Callable[[AdaptState], torch.Tensor] | None = None,
    eval_every: int = 10,
    on_step: Callable[[int, AdaptState], None] | None = None,
) -> Trained:
    """Train P tasks' heads, and their encoders if ``train_encoder``, by ``steps`` full-batch steps.

    Task p minimises mean_i loss(W_p f_{θ_p}(x_pi) + b_p, t_pi) over ``inputs: (P, n, *X)`` and
    ``targets: (P, n)`` (labels for :func:`margin_loss`; any target a ``loss`` takes, e.g. real values
    for a squared loss). After every ``optimizer`` step (learning rate ``lr``) each task is projected
    onto ‖θ_p − θ_FM‖₂ ≤ ``c0`` and ‖W_p‖_F ≤ ``head_bound`` (:func:`project_to_ball`; None: no
    bound); ``start`` is projected too, so every iterate is feasible. With ``train_encoder`` False the
    encoder stays at ``start.encoder`` and its features are computed once: the linear probe.

    ``validate(state) → (P,)``, if given, is evaluated at step 0, every ``eval_every`` steps and at
    ``steps``; the state of the evaluation with the lowest mean over tasks is kept (ties: the earlier).
    ``on_step(step, state)`` sees every iterate, step 0 (the projected start) included.

    >>> from preadapt.encoders import LinearEncoder
    >>> from preadapt.objectives.losses import cross_entropy
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(2, 20, 3, generator=g, dtype=torch.float64)  # P = 2 tasks, n = 20
    >>> y = (x[..., 0] > 0).long()
    >>> encoders = TaskEncoders(LinearEncoder(3, 4, None, g), 2, x)
    >>> start = AdaptState(torch.zeros(2, 2, 4, dtype=torch.float64), torch.zeros(2, 2, dtype=torch.float64),
    ...                    encoders.stack())
    >>> trained = train_adaptation(encoders, start, x, y, margin_loss(cross_entropy), lr=0.1, steps=50, c0=0.5)
    >>> encoders.path, trained.steps
    ('vmap', 50)
    >>> distance = sum((trained.state.encoder[n] - encoders.origin[n]).flatten(1).square().sum(1)
    ...                for n in encoders.origin).sqrt()  # (P,)
    >>> bool((distance <= 0.5 + 1e-12).all())
    True
    """
    if steps < 0 or eval_every < 1:
        raise ValueError(f"steps must be ≥ 0 and eval_every ≥ 1; got steps={steps}, eval_every={eval_every}")
    names = list(start.encoder)
    origin = [encoders.origin[name] for name in names]

    def feasible(weights: torch.Tensor, theta: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if head_bound is not None:
            weights = project_to_ball([weights], [torch.zeros_like(weights)], head_bound)[0]
        if c0 is not None and theta:
            theta = project_to_ball(theta, origin, c0)
        return weights, theta

    weights, theta = feasible(start.weights, [start.encoder[name] for name in names] if train_encoder else [])
    state = AdaptState(weights, start.intercepts, dict(zip(names, theta)) if train_encoder else start.encoder)
    fixed = None  # (P, n, d): the head-only routine's features, computed once as the fine-tuning steps do
    if not train_encoder:
        with torch.no_grad():
            fixed = encoders(state.encoder, inputs)
    trained = [state.weights, state.intercepts, *theta]
    moments = optimizer.init(trained)
    evaluated, losses, best, best_steps, best_loss = [], [], state, 0, math.inf

    def evaluate(step: int) -> None:
        nonlocal best, best_steps, best_loss
        if on_step is not None:
            on_step(step, state)
        if validate is None or not (step % eval_every == 0 or step == steps):
            return
        value = validate(state).detach()  # (P,)
        evaluated.append(step)
        losses.append(value)
        if float(value.mean()) < best_loss:
            best, best_steps, best_loss = state, step, float(value.mean())

    evaluate(0)
    for step in range(1, steps + 1):
        leaves = [t.detach().requires_grad_() for t in trained]
        W, b, *theta = leaves
        features = encoders(dict(zip(names, theta)), inputs) if train_encoder else fixed  # (P, n, d)
        scores = features @ W.transpose(1, 2) + b.unsqueeze(1)  # (P, n, K)
        # Σ_p of each task's mean: the tasks' terms separate, so each slice's gradient is its own task's.
        objective = loss(scores, targets).mean(-1).sum()
        grads = torch.autograd.grad(objective, leaves, allow_unused=True)
        grads = [torch.zeros_like(t) if g is None else g for t, g in zip(leaves, grads)]
        (weights, intercepts, *theta), moments = optimizer.update([t.detach() for t in leaves], grads, moments,
                                                                  step, lr)
        weights, theta = feasible(weights, theta)
        trained = [weights, intercepts, *theta]
        state = AdaptState(weights, intercepts, dict(zip(names, theta)) if train_encoder else state.encoder)
        evaluate(step)
    if validate is None:
        best, best_steps = state, steps
    validation = torch.stack(losses) if losses else torch.empty(0, weights.shape[0], dtype=weights.dtype)
    return Trained(best, best_steps, validation, evaluated)


@dataclass
class FinetunedHeads(Adapted):
    """P fine-tuned encoders and their heads: scores = W_p f_{θ_p}(x) + b_p, ``(P, n, K)`` float64.

    ``path``: how the encoders ran ("vmap" or "loop"); ``validation``: the mean validation loss
    over tasks at each evaluated step, per learning rate of the grid (lr → ``(E,)``).
    """

    encoders: TaskEncoders
    state: AdaptState
    chosen: dict[str, float] = field(default_factory=dict)
    validation: dict[float, torch.Tensor] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return self.encoders.path

    @property
    def weights(self) -> torch.Tensor:
        return self.state.weights

    @property
    def intercepts(self) -> torch.Tensor:
        return self.state.intercepts

    def scores(self, points: TaskPoints) -> torch.Tensor:
        if points.inputs is None:
            raise ValueError("a fine-tuned adapter scores raw inputs, and points.inputs is None: the estimate loop "
                             "passes inputs when an adapter with trains_encoder = True is configured")
        scores = scores_of(self.encoders, self.state, self.encoders.inputs(points.inputs))  # (P, n, K)
        return scores.to(points.labels.device)  # where the points' labels are, as FrozenHeads' scores

    def encoder_change(self) -> dict[str, torch.Tensor]:
        return {name: p - self.encoders.origin[name] for name, p in self.state.encoder.items()}


class Finetune(Adapter):
    """Fine-tune a linear head and the encoder of each task under ‖θ − θ_FM‖₂ ≤ c0 (THEORY.md section 1).

    Per task: a copy of θ_FM (float64, eval mode) and a head (W, b) start at θ_FM and
    :meth:`initial_head`, then :func:`train_adaptation` runs with each learning rate of ``lrs`` for
    up to ``max_steps`` full-batch steps of ``optimizer`` ("adam" or "sgd"); the learning rate and
    the number of steps (a multiple of ``eval_every``, or ``max_steps``, or 0) with the lowest mean
    validation loss over tasks are kept, one choice for all tasks (``chosen``: lr, steps; ties go to
    the earlier lr, and within one lr to fewer steps). The loss is the task's ℓ on margins
    (``task.loss``). The head starts at zero, or at ``probe``'s fitted head (its intercepts, or zeros
    without); ``head_bound`` bounds ‖W‖_F. The fit draws no random numbers (full batch);
    ``vectorize`` forces the vmap path (True) or the loop (False); None decides (``path_``, and the
    Adapted's ``path``). The few-shot fits and the fit of L*_adapt (``task.star``) run alike: a head
    with an intercept.
    """

    trains_encoder = True

    def __init__(
        self,
        c0: float | None = None,
        head_bound: float | None = None,
        lrs: Sequence[float] = (1e-3, 1e-2),
        max_steps: int = 100,
        eval_every: int = 10,
        optimizer: Literal["adam", "sgd"] = "adam",
        probe: Adapter | None = None,
        vectorize: bool | None = None,
    ) -> None:
        self.c0 = c0
        self.head_bound = head_bound
        self.lrs = tuple(lrs)
        self.max_steps = max_steps
        self.eval_every = eval_every
        self.optimizer = optimizer
        self.probe = probe
        self.vectorize = vectorize

    def initial_head(self, task: AdaptTask, dim: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """The head γ starts from: weights ``(P, K, d)``, intercepts ``(P, K)`` and what the start chose."""
        P, K = task.train.tasks, task.classes
        if self.probe is None:
            zeros = torch.zeros(P, K, dim, dtype=torch.float64, device=task.device)
            return zeros, zeros[..., 0].clone(), {}
        head = self.probe.fit(task)
        weights = head.weights.to(device=task.device, dtype=torch.float64)
        intercepts = (torch.zeros(P, K, dtype=torch.float64, device=task.device) if head.intercepts is None
                      else head.intercepts.to(device=task.device, dtype=torch.float64))
        return weights, intercepts, {f"probe_{name}": value for name, value in head.chosen.items()}

    def fit(self, task: AdaptTask) -> FinetunedHeads:
        train, val = task.train, task.validation
        if train.inputs is None or val.inputs is None:
            raise ValueError(f"{type(self).__name__} trains the encoder and needs the tasks' raw inputs, but "
                             f"task.{'train' if train.inputs is None else 'validation'}.inputs is None; the estimate "
                             f"loop passes them when an adapter with trains_encoder = True is configured")
        encoders = TaskEncoders(task.encoder, train.tasks, train.inputs, task.device, self.vectorize)
        self.path_ = encoders.path
        weights, intercepts, chosen = self.initial_head(task, train.features.shape[-1])
        start = AdaptState(weights, intercepts, encoders.stack())
        loss = margin_loss(task.loss)
        val_labels = val.labels.to(task.device)
        validate = partial(validation_losses, encoders, encoders.inputs(val.inputs), val_labels, loss)
        inputs, labels = encoders.inputs(train.inputs), train.labels.to(task.device)
        best, best_lr, curves = None, None, {}
        for lr in self.lrs:
            trained = train_adaptation(encoders, start, inputs, labels, loss, lr, self.max_steps,
                                       OPTIMIZERS[self.optimizer], self.c0, self.head_bound, True, validate,
                                       self.eval_every)
            curves[lr] = trained.validation.mean(-1)
            if best is None or trained.best_loss < best.best_loss:
                best, best_lr = trained, lr
        chosen.update(lr=float(best_lr), steps=float(best.steps))
        return FinetunedHeads(encoders, best.state, chosen, curves)


class LPFT(Finetune):
    """LP-FT [Kumar22]: fine-tuning (:class:`Finetune`, the same routine and choices) from the linear
    probe's head, ``probe`` (the ``linear`` adapter), instead of from zero. With ``max_steps = 0`` it is
    the linear probe, scored through the float64 copy of θ_FM."""

    def __init__(self, probe: Adapter, **finetune) -> None:
        super().__init__(probe=probe, **finetune)


def _bound_or_none(name: str, value: float | None) -> float | None:
    if value is not None and not (0 <= value < math.inf):
        raise ValueError(f"{name} must be a number ≥ 0, or null for no constraint; got {value}")
    return value


class FinetuneConfig(AdapterConfig):
    kind: str = "finetune"
    c0: float | None = Field(None, description="radius of ‖θ − θ_FM‖₂ ≤ c0, all encoder parameters as one "
                                               "vector (null: unconstrained; 0: the encoder stays θ_FM)")
    head_bound: float | None = Field(None, description="bound on the head's ‖W‖_F; the intercept is free "
                                                       "(null: none)")
    lrs: list[float] = Field([1e-3, 1e-2], description="learning rates tried, one chosen on validation for all tasks")
    max_steps: int = Field(100, ge=0, description="full-batch steps at most; the count is chosen on validation")
    eval_every: int = Field(10, ge=1, description="steps between validation evaluations (early stopping)")
    optimizer: Literal["adam", "sgd"] = Field("adam", description="elementwise per task")
    init: Literal["zero", "linear"] = Field("zero", description="the head's start: zeros, or the linear adapter's head")

    @field_validator("c0")
    @classmethod
    def _c0_ok(cls, value):
        return _bound_or_none("c0", value)

    @field_validator("head_bound")
    @classmethod
    def _head_bound_ok(cls, value):
        return _bound_or_none("head_bound", value)

    @field_validator("lrs")
    @classmethod
    def _lrs_ok(cls, values):
        if not values or any(not (lr > 0 and math.isfinite(lr)) for lr in values):
            raise ValueError(f"lrs must be a non-empty list of learning rates > 0; got {values}")
        return values


class LPFTConfig(FinetuneConfig):
    kind: str = "lpft"
    init: Literal["linear"] = Field("linear", description="LP-FT starts at the linear adapter's head [Kumar22]")


def _finetune_arguments(config: FinetuneConfig) -> dict:
    return dict(c0=config.c0, head_bound=config.head_bound, lrs=config.lrs, max_steps=config.max_steps,
                eval_every=config.eval_every, optimizer=config.optimizer)


def build_finetune(config: FinetuneConfig, evaluate: EvaluateConfig) -> Finetune:
    """``evaluate``: the run's EvaluateConfig (``probe_penalties`` for the linear start, ``init: linear``)."""
    probe = LinearAdapter(evaluate.probe_penalties) if config.init == "linear" else None
    return Finetune(probe=probe, **_finetune_arguments(config))


def build_lpft(config: LPFTConfig, evaluate: EvaluateConfig) -> LPFT:
    """``evaluate``: the run's EvaluateConfig (its ``probe_penalties`` for the linear probe LP-FT starts from)."""
    return LPFT(LinearAdapter(evaluate.probe_penalties), **_finetune_arguments(config))
