"""Before and after the probe's second round of issue 15 (the softmax's points-last layout and the penalty
path), in one process: ``adapt/linear.py`` of commit BASE read with ``git show`` beside the working
tree's, one torch thread, interleaved rounds, medians of the process's CPU time; then one demo
checkpoint's evaluation with each commit's package. Prints the rows of docs/benchmarks.md's table.

Run: ``.venv/bin/python benchmarks/before_after_probe.py`` (from the repository root; about a minute).
"""
import torch
from _common import before_after, demo_checkpoint_at, module_at

from preadapt.adapt import linear as new
from preadapt.objectives.losses import cross_entropy

torch.set_num_threads(1)
BASE = "5bdbe9f"  # the last commit before these changes
old = module_at(BASE, "src/preadapt/adapt/linear.py", "linear_before")


def demo_like_tasks(tasks: int, classes: int, shots: int, seed: int):
    """Few-shot tasks shaped as the demo's (features in R^16, ``shots`` training and validation points per
    class), classes around random means."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(shots).expand(tasks, -1)
    means = torch.randn(tasks, classes, 16, generator=g)
    rows = torch.arange(tasks).unsqueeze(1)
    draw = lambda: means[rows, labels] + torch.randn(tasks, classes * shots, 16, generator=g)  # noqa: E731
    return draw(), labels, draw(), labels


PENALTIES = (1e-4, 1e-3, 1e-2, 1e-1)  # EvaluateConfig's probe_penalties
X, y, X_val, y_val = demo_like_tasks(100, 10, 50, 0)
grid = torch.tensor(PENALTIES, dtype=torch.float64).expand(100, len(PENALTIES))
print("| change | before | after | speed-up |\n|---|---|---|---|")
before_after("10-class probe heads, all penalties at once: scores points-last (G, L', K, n)",
             lambda: old._fit_heads(X, y, 10, cross_entropy, grid, True, None, None, 200, 1e-4),
             lambda: new._fit_heads(X, y, 10, cross_entropy, grid, True, None, None, 200, 1e-4), rounds=3)


def probe(module, data):
    return lambda: module.LinearProbe(penalties=PENALTIES, tol=1e-4, max_iter=200, dtype=torch.float32).fit(*data)


before_after("10-class probe (100 tasks × 500 points, validation), both changes: + the penalty path",
             probe(old, (X, y, X_val, y_val)), probe(new, (X, y, X_val, y_val)), rounds=3)
binary = demo_like_tasks(100, 2, 50, 1)
before_after("2-class probe (100 tasks × 100 points), both changes", probe(old, binary), probe(new, binary))
(pb, eb), (pa, ea) = demo_checkpoint_at(BASE)
print(f"| one demo checkpoint's evaluation (median of 3) | {eb*1e3:.0f} ms | {ea*1e3:.0f} ms | {eb/ea:.2f}x |")
