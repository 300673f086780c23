"""Linear probe over many tasks: one batched program vs a loop of scikit-learn fits (DESIGN.md §6).

Target: 1000 binary tasks (d = 16, 100 training points each, one penalty) ≥ 10× faster than a loop
of ``LogisticRegression`` fits, with mean test accuracy within 0.5 points. Both solve the same
problem: mean CE + λ/2 (‖w_0‖² + ‖w_1‖²) is scikit-learn's C·Σ CE + ½‖w‖² with C = 2/(n·λ)
(binary: w = w_1 − w_0 and w_0 = −w_1 at the optimum; see tests/adapt/test_linear_probe.py).

Both programs are timed in interleaved rounds (batched, loop, batched, ...), medians reported;
``compare`` fits both on the same tasks and returns their test accuracies and probabilities
(tests/test_benchmarks.py checks them at a tiny size).

Run: ``.venv/bin/python benchmarks/bench_linear_probe.py [--quick] [--tasks 1000] [--repeats 3] [--threads 1]``.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _common import add_threads_argument, interleaved, machine, median, round_ratios, set_threads, spread, summary
from sklearn.linear_model import LogisticRegression

from preadapt.adapt.linear import LinearProbe

TARGET = 10.0
POINTS = 0.5


def make_tasks(tasks: int, train: int, test: int, dim: int, seed: int):
    """Binary Gaussian tasks: class c ~ N(μ_c, I) with random means at a moderate separation."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(tasks, 2, dim, generator=g, dtype=torch.float64) * 0.35  # (P, 2, d)
    labels = torch.randint(0, 2, (tasks, train + test), generator=g)  # (P, n + m)
    noise = torch.randn(tasks, train + test, dim, generator=g, dtype=torch.float64)
    features = noise + torch.gather(means, 1, labels.unsqueeze(-1).expand(-1, -1, dim))  # (P, n + m, d)
    return features[:, :train], labels[:, :train], features[:, train:], labels[:, train:]


def sklearn_c(train: int, penalty: float) -> float:
    """scikit-learn's C for mean CE + λ/2 (‖w_0‖² + ‖w_1‖²) on n binary points: C = 2/(n·λ)."""
    return 2.0 / (train * penalty)


def batched(X, y, penalty: float, tol: float | None = None) -> LinearProbe:
    probe = LinearProbe(penalties=(penalty,))
    if tol is not None:
        probe.tol = tol
    return probe.fit(X, y)


def sklearn_loop(X, y, penalty: float) -> list[LogisticRegression]:
    C = sklearn_c(X.shape[1], penalty)
    Xn, yn = X.numpy(), y.numpy()
    return [LogisticRegression(C=C).fit(Xn[p], yn[p]) for p in range(len(Xn))]


def compare(tasks: int, train: int, test: int, dim: int, penalty: float, seed: int = 0):
    """Both fits on the same tasks: per-task test accuracies (ours, sklearn's), each (P,), and the
    probabilities of class 1 on the test points (ours, sklearn's), each (P, m)."""
    X, y, X_test, y_test = make_tasks(tasks, train, test, dim, seed)
    probe = batched(X, y, penalty)
    models = sklearn_loop(X, y, penalty)
    ours_acc = probe.score(X_test, y_test).numpy()
    their_acc = np.array([m.score(X_test[p].numpy(), y_test[p].numpy()) for p, m in enumerate(models)])
    ours_p = probe.predict_proba(X_test)[..., 1].numpy()
    their_p = np.stack([m.predict_proba(X_test[p].numpy())[:, 1] for p, m in enumerate(models)])
    return (ours_acc, their_acc), (ours_p, their_p)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 tasks instead of 1000")
    parser.add_argument("--tasks", type=int, default=None, help="binary tasks (default 1000; quick 200)")
    parser.add_argument("--train", type=int, default=100)
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--penalty", type=float, default=1e-2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tol", type=float, default=None, help="LinearProbe tol (default: its own)")
    add_threads_argument(parser)
    args = parser.parse_args()
    set_threads(args.threads)
    tasks = args.tasks or (200 if args.quick else 1000)

    X, y, X_test, y_test = make_tasks(tasks, args.train, args.test, args.dim, args.seed)
    fitted: dict[str, object] = {}
    times = interleaved({"batched": lambda: fitted.__setitem__("batched", batched(X, y, args.penalty, args.tol)),
                         "sklearn": lambda: fitted.__setitem__("sklearn", sklearn_loop(X, y, args.penalty))},
                        args.repeats)
    probe, models = fitted["batched"], fitted["sklearn"]
    ours_acc = probe.score(X_test, y_test).numpy()  # (P,)
    sk_acc = np.array([m.score(X_test[p].numpy(), y_test[p].numpy()) for p, m in enumerate(models)])
    ours_s, sk_s = median(times["batched"]), median(times["sklearn"])
    ratio, gap = sk_s / ours_s, 100.0 * (ours_acc.mean() - sk_acc.mean())
    print(f"linear probe: tasks={tasks} d={args.dim} n={args.train} penalty={args.penalty} tol={probe.tol}; "
          f"{args.repeats} interleaved rounds; {machine()}")
    print(f"  batched LinearProbe: {spread(times['batched'])}   mean acc {100 * ours_acc.mean():.2f}%")
    print(f"  sklearn loop:        {spread(times['sklearn'])}   mean acc {100 * sk_acc.mean():.2f}%")
    print(f"  ratio sklearn / batched (medians): {ratio:.1f}x (target >= {TARGET:g}x); per round "
          f"{round_ratios(times['sklearn'], times['batched'])}")
    print(f"  mean accuracy difference: {gap:+.3f} points (target within {POINTS}); "
          f"max per-task |diff| {100 * np.abs(ours_acc - sk_acc).max():.2f} points")
    summary("linear probe vs sklearn", f"{tasks} binary tasks, batched LinearProbe vs LogisticRegression loop",
            f"{ours_s:.3f} s vs {sk_s:.3f} s; accuracy {gap:+.3f} points", ratio,
            f">= {TARGET:g}x, within {POINTS} points", bool(ratio >= TARGET and abs(gap) <= POINTS),
            ratio_text=f"{ratio:.1f}x")


if __name__ == "__main__":
    main()
