"""Before and after the probe's second round of issue 15 (the softmax's points-last layout and the penalty
path), in one process: ``adapt/linear.py`` of commit BASE read with ``git show`` beside the working
tree's, one torch thread, interleaved rounds, medians of the process's CPU time. The probes are the demo's
own: the demo's encoder pretrained as the preset does, one checkpoint evaluated while recording what each
``LinearProbe.fit`` is given (the 2-class and 10-class few-shot probes, the one 20-class full-problem
probe). Then one demo checkpoint's whole evaluation with each commit's package. Prints the rows of
docs/benchmarks.md's table.

Run: ``.venv/bin/python benchmarks/before_after_probe.py`` (from the repository root; about two minutes).
"""
import torch
from _common import before_after, demo_checkpoint_at, module_at

from preadapt.adapt import linear as new
from preadapt.encoders import ENCODERS
from preadapt.experiment.presets import preset_data
from preadapt.experiment.run import evaluate
from preadapt.objectives import OBJECTIVES
from preadapt.pretrain import PretrainConfig, pretrain
from preadapt.worlds import WORLDS, draw_tuples
from preadapt.worlds.sampling import make_generator

torch.set_num_threads(1)
BASE = "5bdbe9f"  # the last commit before these changes
old = module_at(BASE, "src/preadapt/adapt/linear.py", "linear_before")


def demo_probes() -> list[tuple]:
    """The arguments of every ``LinearProbe.fit`` of one evaluation of the demo's last checkpoint."""
    data = preset_data("demo")
    world = WORLDS.build(WORLDS.parse(data["world"]), make_generator(0, "world"))
    encoder = ENCODERS.build(ENCODERS.parse(data["encoder"]), world.input_shape, make_generator(0, "encoder"))
    objective = OBJECTIVES.build(OBJECTIVES.parse(data["objective"]))
    tuples = draw_tuples(world, data["pretrain"]["tuples"], make_generator(0, "tuples"), negatives=1)
    pretrain(encoder, objective, tuples, PretrainConfig(**{**data["pretrain"], "checkpoints": []}),
             make_generator(0, "shuffle"))
    encoder.eval()
    recorded, fit = [], new.LinearProbe.fit

    def recording(self, *args, **kwargs):
        recorded.append((self.penalties, self.tol, self.max_iter, self.dtype, args, kwargs))
        return fit(self, *args, **kwargs)

    new.LinearProbe.fit = recording
    try:
        evaluate(encoder, world, data["evaluate"], seed=0)
    finally:
        new.LinearProbe.fit = fit
    return recorded


def probe(module, penalties, tol, max_iter, dtype, args, kwargs, path=None):
    def run():
        if path is not None:
            module.PATH_MIN_WORK = 0 if path else float("inf")
        module.LinearProbe(penalties=penalties, tol=tol, max_iter=max_iter, dtype=dtype).fit(*args, **kwargs)
        if path is not None:
            module.PATH_MIN_WORK = default
    return run


default = new.PATH_MIN_WORK
print("| change | before | after | speed-up |\n|---|---|---|---|")
for penalties, tol, max_iter, dtype, args, kwargs in demo_probes():
    tasks, points, _ = args[0].shape
    classes = kwargs.get("num_classes")
    setting = (penalties, tol, max_iter, dtype, args, kwargs)
    what = f"{tasks} task{'s' if tasks > 1 else ''} of {classes} classes × {points} points"
    before_after(f"demo probe, {what}: scores points-last (side by side, as before)", probe(old, *setting),
                 probe(new, *setting, path=False), rounds=5)
    before_after(f"demo probe, {what}: side by side → the penalty path", probe(new, *setting, path=False),
                 probe(new, *setting, path=True), rounds=5)
    before_after(f"demo probe, {what}: before → now (the path where PATH_MIN_WORK says)", probe(old, *setting),
                 probe(new, *setting), rounds=5)
(pb, eb), (pa, ea) = demo_checkpoint_at(BASE)
print(f"| one demo checkpoint's evaluation (median of 3) | {eb*1e3:.0f} ms | {ea*1e3:.0f} ms | {eb/ea:.2f}x |")
