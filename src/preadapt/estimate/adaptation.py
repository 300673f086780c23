"""The adaptation protocol: every configured adapter on sampled tasks, the adaptation losses
L̂_adapt, L_adapt and L*_adapt, the accuracies, and the error chain of THEORY.md section 1.

The loop iterates over the adapters it is given and never names one (``preadapt.adapt.base``).
Features are encoded once per set of points, and every frozen-feature adapter fits all tasks of a
set as one batched program; an adapter that trains the encoder also gets the inputs.

Sampling (every set from its own generator, derived from the run's seed and the set's name, so
that every checkpoint and every adapter sees the same tasks and points: comparisons are paired):

- accuracy tasks: for each task size K of ``evaluate.task_classes``, ``probe_tasks`` tasks drawn
  from ρ with their test points; for each shots value s and draw r, fresh labeled training and
  validation points of the same tasks (the draw at ``probe_shots`` with r = 0 comes first, from
  the tasks' own generator). Without ``evaluate.shots`` the protocol is one draw at ``probe_shots``.
- star tasks (K = 2, the tasks of L_sup): ``star_samples`` labeled points per class and the
  validation and test points; each adapter fitted on them (``AdaptTask.star``) gives L*_adapt.

On a world with splits (worlds/finite.py), training and validation points come from its train and
validation views and test points from its held-out view; with a ``task`` section (``TaskViews``),
training points from the ``id`` view and test points from both views (``split`` = id / ood).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from preadapt.adapt.base import AdaptTask, Adapted, Adapter, TaskPoints
from preadapt.estimate.avg_k import class_weighted_estimate, top_r_estimate, top_r_point_hits
from preadapt.estimate.estimate import Estimate, RunningMean, combine, mean_estimate
from preadapt.estimate.spec import EvaluateConfig
from preadapt.objectives.losses import margins_from_scores
from preadapt.timing import Timings
from preadapt.worlds.base import World
from preadapt.worlds.finite import split_of
from preadapt.worlds.sampling import draw_examples, example_ids, make_generator, sample_tasks

F64 = torch.float64
STAR_CLASSES = 2  # L*_adapt and the chain are measured on 2-class tasks, the tasks of L_sup and Lemma 4.3


@dataclass(frozen=True)
class Measurement:
    """One measured quantity: its name (docs/quantities.md), estimate and context columns."""

    quantity: str
    estimate: Estimate
    context: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Views:
    """Where an adaptation's points come from: ``train`` and ``validation`` worlds (labeled points
    for fitting and choosing) and the named test worlds (``{"test": world}`` without a task section,
    else ``{"id": ..., "ood": ...}``); ``projector``: P_S of a subspace task (input space), or None."""

    train: World
    validation: World
    tests: dict[str, World]
    projector: torch.Tensor | None = None

    @property
    def prior(self):
        """ρ of the tasks' classes: the tasks are drawn from the first test view's prior."""
        return next(iter(self.tests.values())).prior

    @classmethod
    def of(cls, world: World, task=None) -> "Views":
        """The views of the pretraining ``world`` (its train, validation and held-out views), or of
        a task's (``TaskViews``: fitted on its id view, tested on id and, when it has one, ood)."""
        if task is None:
            return cls(split_of(world, "train"), split_of(world, "validation"), {"test": world})
        tests = {"id": task.id} if task.ood is None else {"id": task.id, "ood": task.ood}
        return cls(split_of(task.id, "train"), split_of(task.id, "validation"), tests, task.projector)


@torch.no_grad()
def encode(encoder: nn.Module, inputs: torch.Tensor, block: int, device) -> torch.Tensor:
    """f(x) for ``inputs: (N, *X)`` in blocks, as float64 on the CPU → (N, d)."""
    parts = [encoder(inputs[i:i + block].to(device)).to("cpu", F64) for i in range(0, len(inputs), block)]
    return torch.cat(parts)


@dataclass(frozen=True)
class Drawn:
    """Points of P tasks of K classes, s per class: features (P, K, s, d), example ids (P, K, s) on a
    world of finite examples (else None), inputs (P, K, s, *X) when kept (else None)."""

    features: torch.Tensor
    ids: torch.Tensor | None
    inputs: torch.Tensor | None

    def part(self, start: int, stop: int | None) -> "Drawn":
        cut = slice(start, stop)
        return Drawn(self.features[:, :, cut], None if self.ids is None else self.ids[:, :, cut],
                     None if self.inputs is None else self.inputs[:, :, cut])

    def points(self) -> TaskPoints:
        """Flattened to the adapters' layout: (P, K·s, ...) with labels in [0, K)."""
        P, K, s = self.features.shape[:3]
        labels = torch.arange(K).repeat_interleave(s).expand(P, K * s)
        inputs = None if self.inputs is None else self.inputs.reshape(P, K * s, *self.inputs.shape[3:])
        return TaskPoints(self.features.reshape(P, K * s, -1), labels, inputs)

    def flat_ids(self) -> torch.Tensor | None:
        return None if self.ids is None else self.ids.reshape(self.ids.shape[0], -1)


def draw_task_points(encoder: nn.Module, world: World, tasks: torch.Tensor, per_class: int,
                     generator: torch.Generator, block: int, device, keep_inputs: bool = False) -> Drawn:
    """Fresh points for every task and class: tasks (P, K) → ``Drawn`` with s = ``per_class``.

    Each task gets points of its own, so the per-task results are independent given the examples
    they are drawn from, and a t-interval across tasks is valid for fresh draws (tasks that shared a
    pool of points would be positively correlated; draws from finite examples are clustered).
    """
    labels = tasks.reshape(-1).repeat_interleave(per_class)  # (P·K·s,)
    inputs, ids = draw_examples(world, labels, generator)
    if ids is None:
        features = encode(encoder, inputs, block, device)
    else:  # draws from finite examples repeat them: each distinct example is encoded once (eval mode: f is fixed)
        distinct, position = ids.unique(return_inverse=True)
        features = encode(encoder, world.take(distinct), block, device)[position]
    features = features.view(*tasks.shape, per_class, -1)
    return Drawn(features, None if ids is None else ids.view(*tasks.shape, per_class),
                 inputs.view(*tasks.shape, per_class, *inputs.shape[1:]) if keep_inputs else None)


def draw_split_points(encoder: nn.Module, views: Views, tasks: torch.Tensor, sizes: tuple[int, int, int],
                      generator: torch.Generator, block: int, device, keep_inputs: bool = False
                      ) -> tuple[Drawn, Drawn, dict[str, Drawn]]:
    """(fit, validation, test) points per class of every task from the train, validation and test
    views, in that order from one generator; a single world without splits gives the three in one
    draw. Returns the fit and validation points and the test points per test view."""
    fit, val, tst = sizes
    names = list(views.tests)
    first = views.tests[names[0]]
    if views.train is first and views.validation is first:
        drawn = draw_task_points(encoder, first, tasks, fit + val + tst, generator, block, device, keep_inputs)
        train, validation, tests = drawn.part(0, fit), drawn.part(fit, fit + val), {names[0]: drawn.part(fit + val, None)}
    else:
        train = draw_task_points(encoder, views.train, tasks, fit, generator, block, device, keep_inputs)
        validation = draw_task_points(encoder, views.validation, tasks, val, generator, block, device, keep_inputs)
        tests = {names[0]: draw_task_points(encoder, first, tasks, tst, generator, block, device, keep_inputs)}
    for name in names[1:]:
        tests[name] = draw_task_points(encoder, views.tests[name], tasks, tst, generator, block, device, keep_inputs)
    return train, validation, tests


def task_mean(values: torch.Tensor, test_ids: torch.Tensor | None, level: float) -> Estimate:
    """The mean over P tasks of per-task means of ``values: (P, n)``, with n test points per task.

    Fresh test points: a t-interval across tasks (tasks are independent). Test points drawn from a
    finite split (``test_ids: (P, n)`` their examples): tasks share examples, so the mean is clustered
    by example and by task, and the interval is about the population the split came from, given the
    examples the heads were fitted on.

    >>> values = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    >>> e = task_mean(values, None, 0.95); round(e.value, 4), e.n, e.method
    (0.5, 3, 't')
    >>> e = task_mean(values, torch.tensor([[0, 1], [0, 2], [1, 3]]), 0.95); e.n, e.method  # 4 examples
    (4, 'cluster')
    """
    if test_ids is None:
        return mean_estimate(values.mean(-1), level)
    P, n = values.shape
    moments = RunningMean()
    moments.update(values.reshape(-1), units={"example": test_ids.reshape(-1),
                                              "task": torch.arange(P).repeat_interleave(n)})
    return moments.estimate(level)


def correct(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """1 where the true class scores strictly above every other (ties are errors): (P, n, K) → (P, n)."""
    return (margins_from_scores(scores, labels).min(-1).values > 0).to(F64)


@dataclass
class Outcome:
    """What the draws of one adapter at one shots value gave, summed over draws: test losses and
    correct predictions per view (P, n), training losses per task (P,), the chosen hyperparameters,
    and the encoder changes' norms inside and outside a task's subspace (per task)."""

    draws: int = 0
    test_loss: dict[str, torch.Tensor] = field(default_factory=dict)
    test_correct: dict[str, torch.Tensor] = field(default_factory=dict)
    train_loss: torch.Tensor | None = None
    chosen: dict[str, list[float]] = field(default_factory=dict)
    distortion: dict[str, list[torch.Tensor]] = field(default_factory=dict)

    def add(self, adapted: Adapted, train: TaskPoints, tests: dict[str, TaskPoints], loss, projector) -> None:
        def plus(total, value):
            return value if total is None else total + value

        self.draws += 1
        self.train_loss = plus(self.train_loss, loss(margins_from_scores(adapted.scores(train), train.labels)).mean(-1))
        for name, points in tests.items():
            scores = adapted.scores(points)
            self.test_loss[name] = plus(self.test_loss.get(name), loss(margins_from_scores(scores, points.labels)))
            self.test_correct[name] = plus(self.test_correct.get(name), correct(scores, points.labels))
        for name, value in adapted.chosen.items():
            self.chosen.setdefault(name, []).append(float(value))
        if projector is not None:
            for side, norms in subspace_changes(adapted.encoder_change(), projector).items():
                self.distortion.setdefault(side, []).append(norms)


def subspace_changes(changes: dict[str, torch.Tensor], projector: torch.Tensor) -> dict[str, torch.Tensor]:
    """‖Δ·P_S⊥‖_F and ‖Δ·P_S‖_F per task of the encoder's first-layer weight change Δ (the first
    parameter of shape (P, out, d) with d the input dimension), as ``distortion_outside`` and
    ``distortion_inside`` (P,); empty when the adapter changed no such parameter ([Kumar22])."""
    dim = projector.shape[0]
    for delta in changes.values():
        if delta.dim() == 3 and delta.shape[-1] == dim:
            delta = delta.to("cpu", F64)  # the encoder's device (CUDA) → where the projector is
            inside = delta @ projector.to(F64)
            return {"distortion_outside": (delta - inside).flatten(1).norm(dim=1),
                    "distortion_inside": inside.flatten(1).norm(dim=1)}
    return {}


@dataclass(frozen=True)
class AdapterSpec:
    """A configured adapter: its ``label`` (the ``adapter`` column) and the built ``adapter``."""

    label: str
    adapter: Adapter


def needs_inputs(adapters: list[AdapterSpec]) -> bool:
    """Whether some adapter trains the encoder: then every set of points keeps its inputs."""
    return any(spec.adapter.trains_encoder for spec in adapters)


@dataclass
class Adaptation:
    """The adaptation rows and the estimates the chain combines: L_adapt per (adapter, shots, view)
    at K = 2 and L*_adapt per (adapter, view)."""

    measurements: list[Measurement] = field(default_factory=list)
    losses: dict[tuple[str, int, str], Estimate] = field(default_factory=dict)
    star: dict[tuple[str, str], Estimate] = field(default_factory=dict)


def shots_schedule(config: EvaluateConfig) -> list[tuple[int, int]]:
    """(shots, draws) of the protocol: ``evaluate.shots`` with ``evaluate.draws`` each, or one draw
    at ``probe_shots``.

    >>> shots_schedule(EvaluateConfig(probe_shots=20))
    [(20, 1)]
    >>> shots_schedule(EvaluateConfig(shots=[5, 1], draws=5))
    [(1, 5), (5, 5)]
    """
    return [(s, config.draws) for s in config.shots] if config.shots else [(config.probe_shots, 1)]


def check_shots(views: Views, config: EvaluateConfig) -> None:
    """Refuse (ValueError, one line) shots a finite train split cannot give as distinct examples: a
    task's training points of a class must be at most the class's train examples."""
    examples = example_ids(views.train)
    if examples is None:
        return
    counts = torch.bincount(examples[1])
    smallest = int(counts[counts > 0].min())
    largest = max(config.shots or [config.probe_shots])
    if largest > smallest:
        raise ValueError(f"evaluate.shots: got {largest}; allowed: 1..{smallest} (the smallest class of the train split "
                         f"has {smallest} examples)")


def adapt_measurements(encoder: nn.Module, world: World, adapters: list[AdapterSpec], config: EvaluateConfig,
                       seed: int, loss, means: torch.Tensor | None, device, views: Views,
                       timings: Timings | None = None) -> Adaptation:
    """Every adapter on the accuracy tasks (every task size and shots value) and on the star tasks:
    acc_avg, L_adapt_train, L_adapt, link_adapt_gap, L_adapt_star and the chosen hyperparameters.

    ``means: (C, d)``: the run's class means μ̂ (the adapters' ``reference`` heads W^μ̂ on the world's
    own tasks; None when the tasks are another world's, whose reference is each task's own means).
    ``timings``: stages ``task points``, one per adapter label (its fits and tests) and those of
    ``star_estimates`` (``preadapt.timing``).
    """
    timings = Timings() if timings is None else timings
    result = Adaptation()
    level, block = config.level, config.block
    keep_inputs = needs_inputs(adapters)
    own_tasks = "test" in views.tests  # the world's own classes (else a task section's, with their own means)

    def add(quantity: str, estimate: Estimate, **context) -> None:
        result.measurements.append(Measurement(quantity, estimate, context))

    check_shots(views, config)
    for size in config.task_classes:
        generator = make_generator(seed, "evaluate", "probe", size)
        tasks = sample_tasks(views.prior, config.probe_tasks, size, generator)  # (P, K)
        sizes = (config.probe_shots, config.probe_val, config.test_per_class)
        with timings.stage("task points"):
            first_train, first_val, tests = draw_split_points(encoder, views, tasks, sizes, generator, block, device,
                                                              keep_inputs)
        test_points = {name: drawn.points() for name, drawn in tests.items()}
        outcomes: dict[tuple[str, int], Outcome] = {}
        for shots, draws in shots_schedule(config):
            for draw in range(draws):
                if shots == config.probe_shots and draw == 0:
                    train, validation = first_train, first_val
                else:  # fresh labeled points of the same tasks
                    fresh = make_generator(seed, "evaluate", "probe", size, shots, draw)
                    with timings.stage("task points"):
                        train = draw_task_points(encoder, views.train, tasks, shots, fresh, block, device, keep_inputs)
                        validation = draw_task_points(encoder, views.validation, tasks, config.probe_val, fresh, block,
                                                      device, keep_inputs)
                train_points, validation_points = train.points(), validation.points()  # flattened once per draw
                reference = means[tasks] if own_tasks else train.features.mean(dim=2)  # W^μ̂ of the tasks' classes
                for spec in adapters:
                    task = AdaptTask(train_points, validation_points, size, encoder, reference, loss, False,
                                     make_generator(seed, "adapt", spec.label, size, shots, draw), device)
                    outcome = outcomes.setdefault((spec.label, shots), Outcome())
                    with timings.stage(spec.label):
                        outcome.add(spec.adapter.fit(task), train_points, test_points, loss, views.projector)
        for (label, shots), outcome in outcomes.items():
            context = dict(adapter=label, task_classes=size, shots=shots)
            for name, drawn in tests.items():
                ids = drawn.flat_ids()
                accuracy = task_mean(outcome.test_correct[name] / outcome.draws, ids, level).clipped(0, 1)
                add("acc_avg", accuracy, **context, split=name)
                test_loss = outcome.test_loss[name] / outcome.draws  # (P, n)
                train_loss = outcome.train_loss / outcome.draws  # (P,)
                l_adapt = task_mean(test_loss, ids, level)
                gap = task_mean(test_loss - train_loss[:, None], ids, level)  # paired: the same fitted heads
                add("L_adapt", l_adapt, **context, split=name)
                add("link_adapt_gap", gap, **context, split=name)
                if size == STAR_CLASSES:
                    result.losses[(label, shots, name)] = l_adapt
            add("L_adapt_train", mean_estimate(outcome.train_loss / outcome.draws, level), **context, split="train")
            for name, values in outcome.chosen.items():
                value = sum(values) / len(values)
                add(f"chosen_{name}", Estimate(value, min(values), max(values), config.probe_tasks, 1.0, "chosen"),
                    **context, split="validation")
            for side, norms in outcome.distortion.items():
                add(side, mean_estimate(torch.stack(norms).mean(0), level), **context)

    # L*_adapt: every adapter fitted on star_samples points per class of the tasks of L_sup
    for (label, name), star in star_estimates(encoder, world, adapters, config, seed, loss, means, device,
                                              views, timings).items():
        result.star[(label, name)] = star
        add("L_adapt_star", star, adapter=label, task_classes=STAR_CLASSES, split=name)
    return result


def star_estimates(encoder: nn.Module, world: World, adapters: list[AdapterSpec], config: EvaluateConfig, seed: int,
                   loss, means: torch.Tensor | None, device, views: Views,
                   timings: Timings | None = None) -> dict[tuple[str, str], Estimate]:
    """L*_adapt of each adapter per test view: fitted (``AdaptTask.star``) on ``star_samples`` points per
    class of the 2-class tasks of L_sup, chosen on their validation points, scored on their test points.

    ``means: (C, d)``: the run's μ̂, the reference heads W^μ̂ of the world's own tasks (None without
    them). With a task section the fitted points come from another distribution (its id view), so the
    reference is each task's own class means of its fitting points instead (W^μ̂ of the task's distribution).
    ``timings``: stages ``L_adapt_star points`` and ``L_adapt_star LABEL`` per adapter (``preadapt.timing``).
    """
    timings = Timings() if timings is None else timings
    generator = make_generator(seed, "evaluate", "L_sup")
    tasks = sample_tasks(views.prior, config.probe_tasks, STAR_CLASSES, generator)  # (P, 2)
    sizes = (config.star_samples, config.probe_val, config.test_per_class)
    keep_inputs = needs_inputs(adapters)
    with timings.stage("L_adapt_star points"):
        train, validation, tests = draw_split_points(encoder, views, tasks, sizes, generator, config.block, device,
                                                     keep_inputs)
    reference = means[tasks] if "test" in views.tests else train.features.mean(dim=2)  # (P, 2, d)
    out = {}
    for spec in adapters:
        task = AdaptTask(train.points(), validation.points(), STAR_CLASSES, encoder, reference, loss, True,
                         make_generator(seed, "adapt", spec.label, "star"), device)
        with timings.stage(f"L_adapt_star {spec.label}"):
            adapted = spec.adapter.fit(task)
        for name, drawn in tests.items():
            points = drawn.points()
            losses = loss(margins_from_scores(adapted.scores(points), points.labels))  # (P, 2·t)
            out[(spec.label, name)] = task_mean(losses, drawn.flat_ids(), config.level)
    return out


def chain_measurements(adaptation: Adaptation, l_pre: Estimate | None, l_pre_train: Estimate | None, level: float,
                       dependent: bool) -> list[Measurement]:
    """The error chain of THEORY.md section 1 at K = 2, per adapter (and shots, and view):

    1. ``link_pretrain_gap`` = L_pre − L̂_pre (L̂_pre is an exact mean of the training tuples);
    2. ``link_interface`` = L*_adapt − L_pre (independent samples: Welch; ``dependent`` on a finite
       world, whose samples share examples: the worst-case sum);
    3. ``link_adapt_excess`` = L_adapt − L*_adapt (different tasks: as 2);
    4. ``link_adapt_gap`` = L_adapt − L̂_adapt (paired per task: measured with L_adapt);
    ``link_total`` = L_adapt − L̂_pre = 1 + 2 + 3 exactly (values).
    Without a pretraining objective (``l_pre`` None: an encoder measured as given) links 1, 2 and the
    total are absent.
    """
    out: list[Measurement] = []
    if l_pre is not None and l_pre_train is not None:
        out.append(Measurement("link_pretrain_gap", l_pre.affine(1.0, -l_pre_train.value)))
    for (label, name), star in adaptation.star.items():
        if l_pre is not None:
            interface = combine([(1.0, star), (-1.0, l_pre)], level=level, dependent=dependent)
            out.append(Measurement("link_interface", interface, dict(adapter=label, split=name)))
    for (label, shots, name), l_adapt in adaptation.losses.items():
        context = dict(adapter=label, shots=shots, split=name)
        star = adaptation.star[(label, name)]
        out.append(Measurement("link_adapt_excess", combine([(1.0, l_adapt), (-1.0, star)], level=level,
                                                            dependent=dependent), context))
        if l_pre_train is not None and l_pre is not None:
            out.append(Measurement("link_total", l_adapt.affine(1.0, -l_pre_train.value), context))
    return out



def full_problem_measurements(encoder: nn.Module, adapters: list[AdapterSpec], train: Drawn, validation: Drawn,
                              test: Drawn, test_y: torch.Tensor, means: torch.Tensor, config: EvaluateConfig,
                              seed: int, loss, prior, device) -> list[Measurement]:
    """TOP-R of every adapter on the full problem (all C classes, one task): fitted on ``train``
    (1, C, s) and ``validation`` (1, C, v), the adapters' pools, and scored on the test points
    ``test`` (1, 1, N) of classes ``test_y: (N,)``; an interval over the test points, given the fit.
    ``means: (C, d)``: W^μ̂."""
    out = []
    test_points = TaskPoints(test.features[:, 0], test_y[None], None if test.inputs is None else test.inputs[:, 0])
    classes = train.features.shape[1]
    for spec in adapters:
        task = AdaptTask(train.points(), validation.points(), classes, encoder, means[None], loss, False,
                         make_generator(seed, "adapt", spec.label, "full"), device)
        scores = spec.adapter.fit(task).scores(test_points)[0]  # (N, C)
        for r in config.top_r:
            out.append(Measurement("acc_top", top_r_estimate(scores, test_y, r, prior=prior, level=config.level).clipped(0, 1),
                                   dict(adapter=spec.label, top_r=r, shots=train.features.shape[2], split="test")))
    return out


def few_shot_full_problem(encoder: nn.Module, adapters: list[AdapterSpec], pool: Drawn, validation: Drawn,
                          test: Drawn, test_y: torch.Tensor, means: torch.Tensor, config: EvaluateConfig,
                          seed: int, loss, prior, device) -> list[Measurement]:
    """TOP-R of every adapter on the full problem from few shots, in several draws: for each ``s`` of
    ``config.shots`` other than ``probe_shots`` (whose single fit ``full_problem_measurements`` makes),
    ``min(draws, m // s)`` disjoint draws of s points per class from the pool ``pool`` (1, C, m) (at
    least 2, else none), each adapter fitted on each draw. A test point's value is its top-R hit rate
    over the draws, and the estimate their ρ-weighted mean with a normal interval over the test points:
    conditional on the draws, as the single fit's is on its points. The μ-5 of [Arora19] on TOP-R.
    Rows ``acc_top`` with ``shots`` = s."""
    out = []
    available = pool.features.shape[2]
    test_points = TaskPoints(test.features[:, 0], test_y[None], None if test.inputs is None else test.inputs[:, 0])
    classes = pool.features.shape[1]
    weights = np.full(classes, 1.0 / classes) if prior is None else np.asarray(prior, dtype=np.float64)
    for shots in config.shots:
        draws = min(config.draws, available // shots)
        if shots == config.probe_shots or draws < 2:
            continue
        for spec in adapters:
            hits = {r: torch.zeros(len(test_y), dtype=torch.float64) for r in config.top_r}
            for draw in range(draws):
                task = AdaptTask(pool.part(draw * shots, (draw + 1) * shots).points(), validation.points(), classes,
                                 encoder, means[None], loss, False,
                                 make_generator(seed, "adapt", spec.label, "full", shots, draw), device)
                scores = spec.adapter.fit(task).scores(test_points)[0]  # (N, C)
                for r in config.top_r:
                    hits[r] += top_r_point_hits(scores, test_y, r).to(torch.float64).cpu() / draws
            for r in config.top_r:
                estimate = class_weighted_estimate(hits[r], test_y, weights, config.level).clipped(0, 1)
                out.append(Measurement("acc_top", estimate, dict(adapter=spec.label, top_r=r, shots=shots, split="test")))
    return out
