"""Before and after each change of issue 15, in one process: the code of commit BASE (before the issue)
read with ``git show`` beside the code of the working tree, one torch thread, rounds interleaved
(before, after, before, ...), medians of the process's CPU time (steadier than wall time on a shared
machine). Prints the table of docs/benchmarks.md's section "Issue 15".

Run: ``.venv/bin/python benchmarks/before_after_issue15.py`` (from the repository root; about a minute).
"""
import copy, sys
import numpy as np, torch
from _common import before_after as pair, demo_checkpoint_at, module_at
torch.set_num_threads(1)

BASE = "ff3379e"  # the last commit before issue 15's changes


def load(name, path):
    return module_at(BASE, path, name)


print("| change | before | after | speed-up |\n|---|---|---|---|")
# 1. the divergence check, wide MLP (256 -> [512] -> 128): inf-norm over grads + params vs 2-norm over loss + params
shapes = [(512, 256), (512,), (128, 512), (128,)]
ps = [torch.randn(*s) for s in shapes]; gs = [torch.randn(*s) for s in shapes]; loss = torch.tensor(0.5)
def old_check():
    for _ in range(100): bool(torch.isfinite(torch.stack(torch._foreach_norm(gs + ps, float("inf")))).all())
def new_check():
    for _ in range(100): bool(torch.isfinite(torch.stack(torch._foreach_norm([loss] + ps)).sum()))
pair("divergence check a step, wide MLP (×100)", old_check, new_check)
# 2. Adam: for-loop vs fused, demo MLP parameters (×100 steps)
from preadapt.encoders import ENCODERS
enc = ENCODERS.build(ENCODERS.parse({"kind": "mlp", "hidden": [64], "out_dim": 16, "norm_bound": 5.0}), (16,), torch.Generator().manual_seed(0))
e1, e2 = copy.deepcopy(enc), copy.deepcopy(enc)
for a, b in zip(e1.parameters(), e2.parameters()):
    a.grad = torch.randn_like(a) * 1e-3; b.grad = a.grad.clone()
o1 = torch.optim.Adam(e1.parameters(), lr=1e-3); o2 = torch.optim.Adam(e2.parameters(), lr=1e-3, fused=True)
pair("Adam step, demo MLP (×100)", lambda: [o1.step() for _ in range(100)], lambda: [o2.step() for _ in range(100)])
# 3. linear heads: the demo's 10-class probe (100 tasks x 5 penalties x 500 points) and the 2-class L_sup heads
from preadapt.adapt import linear as lin
from preadapt.objectives.losses import cross_entropy, logistic
# the demo's 10-class probe: 100 tasks, 50 shots of 10 classes, features in R^16
g = torch.Generator().manual_seed(0)
y = torch.arange(10).repeat_interleave(50).expand(100, 500)
X = (torch.randn(100, 10, 16, generator=g)[torch.arange(100).unsqueeze(1), y] + torch.randn(100, 500, 16, generator=g))
pen = torch.tensor([1e-4, 1e-3, 1e-2, 1e-1, 1.0], dtype=torch.float64).expand(100, 5)
wrapped_ce = lambda m: cross_entropy(m)
pair("10-class probe fit, autograd → closed form (float64)",
     lambda: lin._fit_heads(X.double(), y, 10, wrapped_ce, pen, True, None, None, 200, 1e-4),
     lambda: lin._fit_heads(X.double(), y, 10, cross_entropy, pen, True, None, None, 200, 1e-4), rounds=3)
pair("10-class probe fit, float64 → float32 (closed form)",
     lambda: lin._fit_heads(X.double(), y, 10, cross_entropy, pen, True, None, None, 200, 1e-4),
     lambda: lin._fit_heads(X.float(), y, 10, cross_entropy, pen, True, None, None, 200, 1e-4), rounds=3)
g = torch.Generator().manual_seed(0)
y2 = torch.randint(0, 2, (400, 1000), generator=g)
X2 = torch.randn(400, 1000, 16, generator=g, dtype=torch.float64) + y2.unsqueeze(-1) * 0.4
pen2 = torch.tensor([1e-4, 1e-3, 1e-2, 1e-1], dtype=torch.float64).repeat_interleave(100).unsqueeze(1)
wrapped_lg = lambda m: logistic(m)
pair("2-class L_sup heads (400 x 1000 points), autograd float64 → binary closed form float32",
     lambda: lin._fit_heads(X2, y2, 2, wrapped_lg, pen2, False, None, None, 200, 1e-4),
     lambda: lin._fit_heads(X2.float(), y2, 2, logistic, pen2, False, None, None, 200, 1e-4), rounds=3)
# 4. s(f) bootstrap at the demo's size (20 classes x 2000 points, d = 16, 100 replicates)
oldq = load("oldq", "src/preadapt/estimate/quantities.py")
from preadapt.estimate import quantities as q
pool = torch.randn(20, 2000, 16, generator=g, dtype=torch.float64)
prior = np.full(20, 0.05)
pair("s(f) bootstrap, 100 replicates (demo size)",
     lambda: oldq.intraclass_deviation(pool, prior, 100, torch.Generator().manual_seed(1), 0.95),
     lambda: q.intraclass_deviation(pool, prior, 100, torch.Generator().manual_seed(1), 0.95), rounds=3)
# 5. the warp and the sampler
oldg = load("oldg", "src/preadapt/worlds/gaussian.py")
from preadapt.worlds.gaussian import Warp
w_new = Warp(16, 1.7, 2.0, torch.Generator().manual_seed(0)); w_old = oldg.Warp(16, 1.7, 2.0, torch.Generator().manual_seed(0))
z = torch.randn(60000, 16)
pair("warp of 60 000 inputs (dim 16)", lambda: w_old(z), lambda: w_new(z))
from preadapt.worlds import WORLDS, draw_tuples
world_new = WORLDS.build(WORLDS.parse({"kind": "gaussian", "classes": 20, "dim": 16}), torch.Generator().manual_seed(0))
world_old = copy.copy(world_new); world_old.warp = w_old
world_old.warp = oldg.Warp(16, world_new.warp.scale, world_new.warp.strength, torch.Generator())
world_old.warp.load_state_dict(world_new.warp.state_dict())
pair("draw_tuples(20 000), demo world", lambda: draw_tuples(world_old, 20000, g), lambda: draw_tuples(world_new, 20000, g))
# 6. margins and the mean adapter
oldl = load("oldl", "src/preadapt/objectives/losses.py")
from preadapt.objectives.losses import margins_from_scores
scores = torch.randn(100, 2000, 10, dtype=torch.float64); labels = torch.randint(0, 10, (100, 2000))
pair("margins_from_scores (100 tasks x 2000 points x 10 classes)", lambda: oldl.margins_from_scores(scores, labels),
     lambda: margins_from_scores(scores, labels))
from preadapt.adapt.mean_classifier import MeanClassifier
from preadapt.adapt.frozen import MeanAdapter
from preadapt.adapt.base import AdaptTask, TaskPoints
lab = torch.arange(10).repeat_interleave(50).expand(100, 500)
feat = torch.randn(100, 500, 16, dtype=torch.float64)
task = AdaptTask(TaskPoints(feat, lab), TaskPoints(feat, lab), 10, None, None, logistic, False, None)
pair("mean adapter, 100 tasks of 10 classes x 50 shots",
     lambda: torch.stack([MeanClassifier().fit(x, l, num_classes=10).means_ for x, l in zip(feat, lab)]),
     lambda: MeanAdapter().fit(task))
# 7. a whole checkpoint's evaluation and the demo's pretraining, with each commit's package on PYTHONPATH
(pb, eb), (pa, ea) = demo_checkpoint_at(BASE)
print(f"| one demo checkpoint's evaluation (median of 3) | {eb*1e3:.0f} ms | {ea*1e3:.0f} ms | {eb/ea:.2f}x |")
print(f"| the demo's 790 pretraining steps | {pb*1e3:.0f} ms | {pa*1e3:.0f} ms | {pb/pa:.2f}x |")
