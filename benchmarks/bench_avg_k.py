"""Exact AVG-k of the mean classifier vs a per-task loop over sampled tasks (DESIGN.md §6).

Target: 3029 classes × 40 test points, d = 128, k = 2 and k = 10: the exact method
(``avg_k_accuracy(scores, labels, k)``, uniform tasks, scores = Z @ M.T) ≥ 50× faster than a
per-task loop scaled to all tasks, and identical to the loop's mean within Monte Carlo error.

The loop is the definition: for each task T (k distinct classes, uniform), restrict the scores to
T's test points and T's columns, take the argmax, and average the per-class accuracies (a tied
maximum counts as an error). It is timed on sampled tasks; its mean over them is an unbiased
Monte Carlo estimate of AVG-k with a normal interval, which must contain the exact value.

- k = 2: ratio = (loop seconds per task × C(C, 2)) / exact seconds, as DESIGN.md states it.
- k = 10: the same ratio is astronomical (C(3029, 10) ≈ 1.7e28 tasks), so the script also prints
  the loop's time for 1000 sampled tasks over the exact time, for information: those 1000 tasks
  give only a Monte Carlo estimate, the exact method covers every task.

``exact_and_enumerated`` runs both at a size where the loop visits every task, where they must agree
to float rounding (tests/test_benchmarks.py).

Run: ``.venv/bin/python benchmarks/bench_avg_k.py [--quick] [--classes 3029] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import itertools
import math
import time

import numpy as np
import torch
from _common import (
    add_threads_argument,
    interleaved,
    machine,
    median,
    set_threads,
    spread,
    summary,
)

from preadapt.adapt.mean_classifier import MeanClassifier
from preadapt.estimate.avg_k import avg_k_accuracy

Z_99 = 2.5758  # the loop's interval is a 99% normal interval (two k values, fixed seed)


def make_scores(classes: int, per_class: int, train_per_class: int, dim: int, seed: int):
    """Mean-classifier scores of a Gaussian class world: (C·m, C) float32 and labels (C·m,).

    Class c: f(x) ~ N(μ_c, I) with μ_c ~ N(0, s²I); W^μ is fitted on independent points, so the
    accuracy is moderate (not 1) and every m(x) from 0 to C − 1 occurs.
    """
    g = torch.Generator().manual_seed(seed)
    means = 0.2 * torch.randn(classes, dim, generator=g)  # (C, d)
    train_y = torch.arange(classes).repeat_interleave(train_per_class)
    train_z = means[train_y] + torch.randn(len(train_y), dim, generator=g)
    M = MeanClassifier().fit(train_z, train_y, num_classes=classes).means_.float()  # (C, d)
    labels = torch.arange(classes).repeat_interleave(per_class)  # (C·m,), sorted by class
    Z = means[labels] + torch.randn(len(labels), dim, generator=g)  # (C·m, d)
    start = time.perf_counter()
    scores = Z @ M.T  # (C·m, C)
    return scores, labels, time.perf_counter() - start


def task_loop(scores: np.ndarray, rows_of: np.ndarray, tasks: np.ndarray) -> np.ndarray:
    """Class-balanced accuracy of the argmax restricted to each task, ties as errors → (P,).

    ``scores: (N, C)``, ``rows_of: (C, m)`` the test rows of each class, ``tasks: (P, k)``.
    """
    k, m = tasks.shape[1], rows_of.shape[1]
    truth = np.repeat(np.arange(k), m)  # position in the task of each restricted row's class
    index = np.arange(k * m)
    out = np.empty(len(tasks))
    for p, task in enumerate(tasks):
        sub = scores[np.ix_(rows_of[task].reshape(-1), task)]  # (k·m, k)
        own = sub[index, truth]
        unique_max = (sub == own[:, None]).sum(axis=1) == 1
        correct = (sub.argmax(axis=1) == truth) & unique_max
        out[p] = correct.reshape(k, m).mean(axis=1).mean()  # balanced over the task's classes
    return out


def sample_uniform_tasks(classes: int, k: int, n: int, rng: np.random.Generator) -> np.ndarray:
    return np.stack([rng.choice(classes, k, replace=False) for _ in range(n)])  # (n, k)


def exact_and_enumerated(classes: int, per_class: int, dim: int, k: int, seed: int = 0) -> tuple[float, float]:
    """The benchmark's two programs at a size where the loop can visit every task: the exact
    ``avg_k_accuracy`` and the loop's mean over all C(C, k) tasks (equal up to float rounding)."""
    scores, labels, _ = make_scores(classes, per_class, 5, dim, seed)
    rows_of = np.arange(len(labels)).reshape(classes, per_class)
    tasks = np.array(list(itertools.combinations(range(classes), k)))
    return float(avg_k_accuracy(scores, labels, k)), float(task_loop(scores.numpy(), rows_of, tasks).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 classes instead of 3029")
    parser.add_argument("--classes", type=int, default=None)
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--ks", type=int, nargs="+", default=[2, 10])
    parser.add_argument("--tasks", type=int, default=1000, help="sampled tasks timed in the loop")
    parser.add_argument("--ci-tasks", type=int, default=20000,
                        help="sampled tasks for the Monte Carlo interval (untimed beyond --tasks)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    add_threads_argument(parser)
    args = parser.parse_args()
    set_threads(args.threads)
    classes = args.classes or (300 if args.quick else 3029)
    ci_tasks = min(args.ci_tasks, 4000) if args.quick else args.ci_tasks

    scores, labels, matmul_s = make_scores(classes, args.per_class, 20, args.dim, args.seed)
    values = scores.numpy()
    rows_of = np.arange(len(labels)).reshape(classes, args.per_class)  # labels are sorted by class
    print(f"AVG-k: C={classes} m={args.per_class} d={args.dim} N={len(labels)} scores {values.dtype} "
          f"{values.nbytes / 2**20:.0f} MiB; {machine()}")
    print(f"scores = Z @ M.T: {matmul_s:.3f} s (not part of either timing)")

    rng = np.random.default_rng(args.seed)
    for k in args.ks:
        timed_tasks = sample_uniform_tasks(classes, k, args.tasks, rng)
        holder: dict[str, object] = {}

        def exact_program(k=k, holder=holder):
            holder["exact"] = avg_k_accuracy(scores, labels, k)

        def loop_program(tasks=timed_tasks, holder=holder):
            holder["loop"] = task_loop(values, rows_of, tasks)

        times = interleaved({"exact": exact_program, "loop": loop_program}, args.repeats)
        exact_s, loop_s = median(times["exact"]), median(times["loop"])
        per_task = loop_s / args.tasks
        exact = float(holder["exact"])

        extra = sample_uniform_tasks(classes, k, max(ci_tasks - args.tasks, 0), rng)
        accs = np.concatenate([holder["loop"], task_loop(values, rows_of, extra)])
        mc_mean, mc_se = accs.mean(), accs.std(ddof=1) / math.sqrt(len(accs))
        z = (exact - mc_mean) / mc_se
        agrees = abs(z) <= Z_99

        all_tasks = math.comb(classes, k)
        print(f"\nk={k}: all tasks C({classes},{k}) = {all_tasks:.4g}")
        print(f"  exact avg_k_accuracy:  {spread(times['exact'])}   AVG-{k} = {exact:.6f}")
        print(f"  per-task loop:         {spread(times['loop'])} for {args.tasks} tasks "
              f"= {1e6 * per_task:.1f} µs/task")
        print(f"  Monte Carlo over {len(accs)} tasks: {mc_mean:.6f} ± {Z_99 * mc_se:.6f} (99%), "
              f"z = {z:+.2f} -> {'within' if agrees else 'OUTSIDE'} MC error")
        if k == 2:
            ratio = per_task * all_tasks / exact_s
            print(f"  loop scaled to all {all_tasks} pairs: {per_task * all_tasks:.1f} s; "
                  f"ratio = {ratio:.0f}x (target >= 50x)")
            measured = (f"exact {exact_s:.3f} s; loop {1e6 * per_task:.1f} µs/task × {all_tasks} = "
                        f"{per_task * all_tasks:.0f} s; z={z:+.2f}")
        else:
            ratio = per_task * all_tasks / exact_s
            sampled = loop_s / exact_s
            print(f"  loop scaled to all tasks / exact: {ratio:.3g}x (DESIGN.md's ratio, target >= 50x)")
            print(f"  loop over {args.tasks} sampled tasks / exact over all {all_tasks:.3g} tasks: "
                  f"{sampled:.2f}x (for information: no target)")
            measured = (f"exact {exact_s:.3f} s; loop {loop_s:.3f} s for {args.tasks} tasks "
                        f"({1e6 * per_task:.1f} µs/task, {sampled:.2f}x the exact time); z={z:+.2f}")
        summary(f"AVG-{k} exact vs task loop", f"exact AVG-{k}, C={classes}, vs the loop scaled to all tasks",
                measured, ratio, ">= 50x, within MC error", bool(ratio >= 50 and agrees), ratio_text=f"{ratio:.3g}x")


if __name__ == "__main__":
    main()
