"""Linear probe over many tasks: one batched program vs a loop of scikit-learn fits (DESIGN.md §6).

Target: 1000 binary tasks (d = 16, 100 training points each, one penalty) ≥ 10× faster than a loop
of ``LogisticRegression`` fits, with mean test accuracy within 0.5 points. Both solve the same
problem: mean CE + λ/2 (‖w_0‖² + ‖w_1‖²) is scikit-learn's C·Σ CE + ½‖w‖² with C = 2/(n·λ)
(binary: w = w_1 − w_0 and w_0 = −w_1 at the optimum; see tests/adapt/test_linear_probe.py).

Run: ``.venv/bin/python benchmarks/bench_linear_probe.py [--tasks 1000] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from preadapt.adapt.linear import LinearProbe


def make_tasks(tasks: int, train: int, test: int, dim: int, seed: int):
    """Binary Gaussian tasks: class c ~ N(μ_c, I) with random means at a moderate separation."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(tasks, 2, dim, generator=g, dtype=torch.float64) * 0.35  # (P, 2, d)
    labels = torch.randint(0, 2, (tasks, train + test), generator=g)  # (P, n + m)
    noise = torch.randn(tasks, train + test, dim, generator=g, dtype=torch.float64)
    features = noise + torch.gather(means, 1, labels.unsqueeze(-1).expand(-1, -1, dim))  # (P, n + m, d)
    return features[:, :train], labels[:, :train], features[:, train:], labels[:, train:]


def best_of(repeats: int, fn):
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--train", type=int, default=100)
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--penalty", type=float, default=1e-2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tol", type=float, default=None, help="LinearProbe tol (default: its own)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    X, y, X_test, y_test = make_tasks(args.tasks, args.train, args.test, args.dim, args.seed)
    probe = LinearProbe(penalties=(args.penalty,))
    if args.tol is not None:
        probe.tol = args.tol
    ours_s, probe = best_of(args.repeats, lambda: probe.fit(X, y))
    ours_acc = probe.score(X_test, y_test).numpy()  # (P,)

    C = 2.0 / (args.train * args.penalty)
    Xn, yn, Xt, yt = X.numpy(), y.numpy(), X_test.numpy(), y_test.numpy()

    def sklearn_loop() -> np.ndarray:
        return np.array([
            LogisticRegression(C=C).fit(Xn[p], yn[p]).score(Xt[p], yt[p]) for p in range(args.tasks)
        ])

    sk_s, sk_acc = best_of(args.repeats, sklearn_loop)
    gap = 100.0 * (ours_acc.mean() - sk_acc.mean())
    print(f"tasks={args.tasks} d={args.dim} n={args.train} penalty={args.penalty} tol={probe.tol} "
          f"torch_threads={torch.get_num_threads()}")
    print(f"batched LinearProbe: {ours_s:.3f} s   mean acc {100 * ours_acc.mean():.2f}%")
    print(f"sklearn loop:        {sk_s:.3f} s   mean acc {100 * sk_acc.mean():.2f}%")
    print(f"speed-up ratio (sklearn / batched): {sk_s / ours_s:.1f}x  (target >= 10x)")
    print(f"mean accuracy difference: {gap:+.3f} points  (target within 0.5); "
          f"max per-task |diff| {100 * np.abs(ours_acc - sk_acc).max():.2f} points")


if __name__ == "__main__":
    main()
