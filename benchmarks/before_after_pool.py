"""Before and after the CNN's max-pool without autograd (issue 15, third round), in one process:
``encoders/cnn.py`` of commit BASE read with ``git show`` beside the working tree's, one torch thread,
interleaved rounds, medians of the process's CPU time. The encoder is the digits preset's (widths 16, 32
on 8 × 8 images); the work is what an evaluation does with it: forward passes without gradients over
blocks of 8192 inputs (60 000 inputs in all). The two encoders get the same parameters, and their
outputs are compared first: the same bits.

Run: ``.venv/bin/python benchmarks/before_after_pool.py`` (from the repository root; about 20 seconds).
"""
import torch
from _common import before_after, module_at

from preadapt.encoders import cnn as new

torch.set_num_threads(1)
BASE = "f5e8940"  # the last commit before the change
old = module_at(BASE, "src/preadapt/encoders/cnn.py", "cnn_before")
INPUTS, BLOCK = 60000, 8192


def main() -> None:
    before = old.CNNEncoder((8, 8), [16, 32], 16, 5.0, torch.Generator().manual_seed(0)).eval()
    after = new.CNNEncoder((8, 8), [16, 32], 16, 5.0, torch.Generator().manual_seed(0)).eval()
    after.load_state_dict(before.state_dict())
    x = 16 * torch.rand(INPUTS, 8, 8, generator=torch.Generator().manual_seed(1))

    def encode(encoder):
        def run():
            with torch.no_grad():
                return torch.cat([encoder(part) for part in x.split(BLOCK)])
        return run

    same = torch.equal(encode(before)(), encode(after)())
    before_after(f"CNN 16, 32 forward without autograd, {INPUTS} digits-sized inputs (same bits: {same})",
                 encode(before), encode(after))
    pool, fast = torch.nn.MaxPool2d(2), new.MaxPool2x2()
    activations = torch.relu(torch.randn(BLOCK, 16, 8, 8, generator=torch.Generator().manual_seed(2)))

    def pooled(module):
        def run():
            with torch.no_grad():
                return module(activations)
        return run

    same = torch.equal(pooled(pool)(), pooled(fast)())
    before_after(f"2x2 max-pool of {BLOCK} x 16 x 8 x 8 activations (same bits: {same})", pooled(pool), pooled(fast),
                 rounds=15)


if __name__ == "__main__":
    main()
