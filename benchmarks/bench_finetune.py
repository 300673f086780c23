"""Fine-tuning many tasks: one vmap program over tasks vs a loop over per-task copies (issue 11).

The demo's MLP encoder 16 → [64] → 16 (R = 5), P binary Gaussian tasks of 50 shots per class (100
training and 100 validation points a task), ``Finetune()`` with its defaults (Adam, lrs 1e-3 and
1e-2, 100 steps, validation every 10: 200 full-batch steps and 22 validation passes a fit), fitted
with ``vectorize=None`` (vmap, as the estimate loop runs it) and ``vectorize=False`` (the loop
fallback). Both fits must agree (the script checks the chosen values and the heads to 1e-9).
Reported: seconds per task, medians of interleaved rounds.

Run: ``.venv/bin/python benchmarks/bench_finetune.py [--quick] [--threads 1]``.
"""

from __future__ import annotations

import argparse

import torch
from _common import add_threads_argument, interleaved, machine, median, set_threads, spread, summary

from preadapt.adapt.base import AdaptTask, TaskPoints
from preadapt.adapt.finetune import Finetune
from preadapt.encoders import ENCODERS
from preadapt.objectives.losses import logistic


def make_task(tasks: int, shots: int, seed: int) -> AdaptTask:
    g = torch.Generator().manual_seed(seed)
    encoder = ENCODERS.build(ENCODERS.parse({"kind": "mlp", "hidden": [64], "out_dim": 16}), (16,), g)
    means = 0.5 * torch.randn(tasks, 2, 16, generator=g, dtype=torch.float64)  # (P, 2, D)

    def points() -> TaskPoints:
        labels = torch.arange(2).repeat_interleave(shots).expand(tasks, -1).clone()  # (P, n)
        inputs = torch.randn(tasks, 2 * shots, 16, generator=g, dtype=torch.float64)
        inputs = inputs + means.gather(1, labels.unsqueeze(-1).expand(-1, -1, 16))  # (P, n, D)
        with torch.no_grad():
            features = encoder(inputs.flatten(0, 1).float()).double().view(tasks, 2 * shots, -1)
        return TaskPoints(features, labels, inputs)

    train, validation = points(), points()
    reference = torch.stack([train.features[:, train.labels[0] == c].mean(1) for c in range(2)], dim=1)
    return AdaptTask(train, validation, 2, encoder, reference, logistic, False, g)


def both_paths(task: AdaptTask, **options):
    """``Finetune(**options)`` fitted on ``task`` by vmap and by the loop: {"vmap": fit, "loop": fit}.
    They must choose the same lr and steps and give the same heads (to 1e-9)."""
    return {"vmap": Finetune(vectorize=None, **options).fit(task),
            "loop": Finetune(vectorize=False, **options).fit(task)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--shots", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="P = 1 and 10, 2 repeats")
    add_threads_argument(parser)
    args = parser.parse_args()
    set_threads(args.threads)
    sizes, repeats = ([1, 10], 2) if args.quick else (args.tasks, args.repeats)
    print(machine())
    print(f"{'P':>5} {'vmap s/task':>12} {'loop s/task':>12} {'loop / vmap':>12}   (median of {repeats}; whole fits)")
    for tasks in sizes:
        task = make_task(tasks, args.shots, seed=0)
        fits = {"vmap": Finetune(vectorize=None), "loop": Finetune(vectorize=False)}
        results = {}
        times = interleaved({name: (lambda a=adapter, n=name: results.__setitem__(n, a.fit(task)))
                             for name, adapter in fits.items()}, repeats)
        assert results["vmap"].path == "vmap" and results["loop"].path == "loop"
        assert results["vmap"].chosen == results["loop"].chosen
        assert torch.allclose(results["vmap"].weights, results["loop"].weights, rtol=0, atol=1e-9)
        vmap_s, loop_s = median(times["vmap"]) / tasks, median(times["loop"]) / tasks
        print(f"{tasks:>5} {vmap_s:>12.4f} {loop_s:>12.4f} {loop_s / vmap_s:>11.2f}x   "
              f"vmap {spread(times['vmap'])}; loop {spread(times['loop'])}; chosen {results['vmap'].chosen}")
        summary(f"finetune vmap vs loop, P={tasks}", f"P={tasks} tasks, per-task fit, vmap vs loop",
                f"vmap {vmap_s:.4f} s/task; loop {loop_s:.4f} s/task", loop_s / vmap_s, "information (no target)", None,
                ratio_text=f"{loop_s / vmap_s:.2f}x")


if __name__ == "__main__":
    main()
