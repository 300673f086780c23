"""Before and after the statement grids' chunks (issue 15, third round), in one process: ``estimate/collision.py``
of commit BASE read with ``git show`` beside the working tree's, one torch thread, interleaved rounds, medians of
the process's CPU time. The grids are those of the bounds presets: the k-negative grid k = 1, 2, ..., 64 on the
bounds-negatives world (16 warped Gaussian classes, the preset's MLP) and the block grid b = 1, 2, 5, 10 on the
demo's world, 20 000 tuples each (one checkpoint's ``evaluate.samples``). Before timing, each pair's estimates
are compared: the same draws, so equal up to the order of float64 sums.

Run: ``.venv/bin/python benchmarks/before_after_grids.py`` (from the repository root; about half a minute).
"""
import torch
from _common import before_after, module_at

from preadapt.encoders import ENCODERS
from preadapt.estimate import collision as new
from preadapt.experiment.presets import preset_data
from preadapt.objectives.losses import LOSSES
from preadapt.worlds import WORLDS
from preadapt.worlds.sampling import make_generator

torch.set_num_threads(1)
BASE = "f7d6214"  # the last commit before the chunks
old = module_at(BASE, "src/preadapt/estimate/collision.py", "collision_before")
SAMPLES = 20000


def preset_parts(name: str):
    """The world and the untrained encoder of a preset, and plug-in means (random: the timing does not
    depend on them)."""
    data = preset_data(name)
    world = WORLDS.build(WORLDS.parse(data["world"]), make_generator(0, "world"))
    encoder = ENCODERS.build(ENCODERS.parse(data["encoder"]), world.input_shape, make_generator(0, "encoder"))
    means = torch.randn(world.classes, data["encoder"]["out_dim"], dtype=torch.float64,
                        generator=torch.Generator().manual_seed(1))
    return world, encoder.eval(), means


def largest_difference(a: dict, b: dict, fields: tuple[str, ...]) -> float:
    worst = 0.0
    for size in a:
        for name in fields:
            x, y = getattr(a[size], name).estimate(0.95), getattr(b[size], name).estimate(0.95)
            assert x.n == y.n, (size, name)
            worst = max(worst, abs(x.value - y.value), abs(x.se - y.se))
        worst = max(worst, float((a[size].slack.gradient - b[size].slack.gradient).abs().max()))
    return worst


def main() -> None:
    loss = LOSSES["logistic"]
    world, encoder, means = preset_parts("bounds-negatives")
    grid = [1, 2, 4, 8, 16, 32, 64]

    def negatives(module):
        return lambda: module.negatives_moments(encoder, world, means, grid, SAMPLES, torch.Generator().manual_seed(3),
                                                loss, "logistic")

    gap = largest_difference(negatives(old)(), negatives(new)(), ("loss", "lifted", "threshold"))
    before_after(f"k-negative grid k = 1..64, {SAMPLES} tuples (estimates within {gap:.0e})", negatives(old),
                 negatives(new))
    world, encoder, means = preset_parts("bounds-blocks")

    def blocks(module):
        return lambda: module.block_moments(encoder, world, means, [1, 2, 5, 10], SAMPLES,
                                            torch.Generator().manual_seed(3), loss)

    gap = largest_difference(blocks(old)(), blocks(new)(), ("loss", "lifted", "un", "below_un"))
    before_after(f"block grid b = 1, 2, 5, 10, {SAMPLES} tuples (estimates within {gap:.0e})", blocks(old),
                 blocks(new))


if __name__ == "__main__":
    main()
