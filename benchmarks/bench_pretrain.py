"""Pretraining throughput: ``preadapt.pretrain.pretrain`` vs a bare PyTorch loop (issue 15, DESIGN.md §6).

Rows (each a ratio of programs timed in this one process, rounds interleaved, medians):

- ``demo``: the demo's encoder, MLP 16 → [64] → 16 (R = 5), batch 256: steps/s of ``pretrain()``
  over steps/s of the bare loop; target ≥ 0.95.
- ``batch512``: the same encoder at batch 512; target ≥ 0.95.
- ``wide``: MLP 256 → [512] → 128, batch 256; target ≥ 0.95. And the FLOP rate its steps achieve
  as a fraction of a 2048 × 2048 fp32 matmul's (``torch.mm``, timed in the same rounds); target
  ≥ 65 %. FLOPs counted: 3 × 2 × (inputs a step) × (weights of the Linear layers), i.e. forward
  2·n·P, backward 4·n·P (gradients of inputs and of weights), with n = 3 × batch inputs (anchor,
  positive, negative) and P = Σ in·out of the Linear layers (256·512 + 512·128 = 196 608; biases,
  ReLU, the norm clip, the loss and Adam are not counted). Autograd skips the first layer's input
  gradient, so the matmuls actually run are 2·n·(2P + P₂) = 0.78 × that count (P₂ = 512·128): the
  fraction is the conventional one, and an upper bound on the matmul FLOPs executed.
- ``sampler``: ``draw_tuples`` tuples/s over the tuples/s ``pretrain()`` consumes at the demo size,
  the sampler timed two ways and the smaller ratio kept: streamed in blocks as the population
  estimates draw (8192 // 3 = 2730 tuples a call) and one draw of M (as pretraining draws); target
  ≥ 10.

Both trainers start from the same encoder weights, train on the same M tuples (a warped Gaussian
world, 20 classes, drawn once) with CURL's base-2 logistic loss, k = 1, Adam (lr 1e-3), and
reshuffle every epoch with the same generator: they compute the same parameters
(``compare_parameters``; tests/test_benchmarks.py). The bare loop is what one writes by hand:
index, concatenate, encode, margins, ``softplus(−v)/ln 2``, backward, step; no finiteness checks,
no per-step loss read-back, no checkpoint bookkeeping.

Run: ``.venv/bin/python benchmarks/bench_pretrain.py [--quick] [--repeats 9] [--threads 1] [--only demo wide]
[--breakdown]``.
"""

from __future__ import annotations

import argparse
import copy
import math
from dataclasses import dataclass

import torch
from _common import add_threads_argument, interleaved, machine, median, round_ratios, set_threads, spread, summary
from torch import nn

from preadapt.encoders import ENCODERS
from preadapt.objectives import OBJECTIVES, encode_tuples
from preadapt.pretrain import PretrainConfig, pretrain
from preadapt.worlds import WORLDS, draw_tuples
from preadapt.worlds.sampling import Tuples

LN2 = math.log(2.0)
LR = 1e-3
MATMUL_N = 2048
INPUTS_PER_TUPLE = 3  # anchor, positive, negative (k = 1, b = 1)
ESTIMATE_BLOCK = 8192 // INPUTS_PER_TUPLE  # tuples a curl_moments block draws (its default block=8192 inputs)
# name → (in_dim, hidden, out_dim, batch, epochs a timed run); epochs keep a run near 0.15–1 s
SIZES = {
    "demo": (16, [64], 16, 256, 2),
    "batch512": (16, [64], 16, 512, 4),
    "wide": (256, [512], 128, 256, 1),
}
TARGET_RATIO = 0.95
TARGET_FLOPS = 0.65
TARGET_SAMPLER = 10.0


@dataclass
class Setup:
    """A world, an initial encoder (copied for every run), the CURL objective and M tuples drawn once."""

    world: object
    initial: nn.Module
    objective: nn.Module
    tuples: Tuples


def make_setup(in_dim: int, hidden: list[int], out_dim: int, tuples: int, seed: int = 0, warp: bool = True) -> Setup:
    """The demo's components from the registries, at the given sizes."""
    g = torch.Generator().manual_seed(seed)
    world = WORLDS.build(WORLDS.parse({"kind": "gaussian", "classes": 20, "dim": in_dim, "warp": warp}), g)
    encoder = ENCODERS.build(ENCODERS.parse({"kind": "mlp", "hidden": hidden, "out_dim": out_dim,
                                             "norm_bound": 5.0}), world.input_shape, g)
    objective = OBJECTIVES.build(OBJECTIVES.parse({"kind": "curl", "loss": "logistic", "negatives": 1}))
    return Setup(world, encoder, objective, draw_tuples(world, tuples, g, negatives=1))


def adam_loop(encoder: nn.Module, loss_of, size: int, epochs: int, batch: int, lr: float, seed: int) -> int:
    """Hand-written ERM: each epoch a fresh shuffle, then ``loss_of(idx)`` (the batch's mean loss),
    backward and a default Adam step per batch; returns the number of steps."""
    optimizer = torch.optim.Adam(encoder.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    steps = 0
    for _ in range(epochs):
        order = torch.randperm(size, generator=generator)
        for start in range(0, size, batch):
            loss = loss_of(order[start:start + batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
    return steps


def bare_loop(encoder: nn.Module, tuples: Tuples, epochs: int, batch: int, lr: float, seed: int) -> int:
    """Hand-written ERM of the CURL logistic loss (k = 1, b = 1), the loss inline: returns the steps."""
    anchor, positive, negative = tuples.anchor, tuples.positives[:, 0], tuples.negatives[:, 0, 0]  # (M, D) each

    def loss_of(idx: torch.Tensor) -> torch.Tensor:
        n = len(idx)
        a, p, q = encoder(torch.cat([anchor[idx], positive[idx], negative[idx]])).split([n, n, n])
        margins = (a * (p - q)).sum(dim=1)  # (n,)
        return nn.functional.softplus(-margins).mean() / LN2

    return adam_loop(encoder, loss_of, len(anchor), epochs, batch, lr, seed)


def library_loss_loop(encoder: nn.Module, objective: nn.Module, tuples: Tuples, epochs: int, batch: int, lr: float,
                      seed: int) -> int:
    """The bare loop with the library's loss path (``Tuples[idx]``, ``encode_tuples``, the CURL
    module) instead of the inline loss: for ``--breakdown``, which splits pretrain()'s overhead into
    its loss path and the rest of its loop (checks, loss read-back, bookkeeping)."""
    return adam_loop(encoder, lambda idx: objective(encode_tuples(encoder, tuples[idx])).mean(), len(tuples), epochs,
                     batch, lr, seed)


def run_pretrain(encoder: nn.Module, objective: nn.Module, tuples: Tuples, epochs: int, batch: int, lr: float,
                 seed: int) -> int:
    """``pretrain()`` with the bare loop's settings (no checkpoints but the last): returns its steps."""
    config = PretrainConfig(tuples=len(tuples), epochs=epochs, batch_size=batch, optimizer="adam", lr=lr,
                            checkpoints=[])
    pretrain(encoder, objective, tuples, config, torch.Generator().manual_seed(seed))
    return config.total_steps


def compare_parameters(setup: Setup, epochs: int, batch: int, lr: float = LR, seed: int = 0) -> tuple[float, float]:
    """Train copies of ``setup.initial`` with ``pretrain()`` and with the bare loop: the largest
    absolute difference of their parameters and the tolerance it must stay within.

    They are the same computation but for the loss's last ops and Adam's kernel: the library takes
    ``softplus(−v)/ln 2`` per tuple and then the mean, the bare loop the mean of ``softplus(−v)``
    and then ``/ln 2``, and ``pretrain()`` steps with the fused Adam, the bare loop with the default
    one (the same update, rounded differently); the gradients and updates differ by rounding (a few
    float32 ulps, relative). An Adam
    step moves each parameter by at most about lr, and the direction m̂/√v̂ changes by that relative
    rounding; so over ``steps`` steps the parameters may differ by about steps · lr · (a few ulps)
    plus the parameters' own rounding, |θ| · eps per step. Tolerance: steps · 16 · eps32 · (lr + max|θ|)
    (a few ulps with a margin; in practice the two agree to about 1e-8).
    """
    ours, bare = copy.deepcopy(setup.initial), copy.deepcopy(setup.initial)
    steps = run_pretrain(ours, setup.objective, setup.tuples, epochs, batch, lr, seed)
    assert bare_loop(bare, setup.tuples, epochs, batch, lr, seed) == steps
    with torch.no_grad():
        pairs = list(zip(ours.parameters(), bare.parameters(), strict=True))
        largest = max(float((a - b).abs().max()) for a, b in pairs)
        scale = max(float(a.abs().max()) for a, _ in pairs)
    return largest, steps * 16 * torch.finfo(torch.float32).eps * (lr + scale)


def matmul_weights(encoder: nn.Module) -> int:
    """P: the weights of the encoder's Linear layers (Σ in·out), the matmuls' FLOPs per input / 2."""
    return sum(m.weight.numel() for m in encoder.modules() if isinstance(m, nn.Linear))


def training_flops(encoder: nn.Module, tuples: int, epochs: int) -> float:
    """FLOPs counted for ``epochs`` passes over ``tuples`` tuples: 3 × 2 × inputs × P."""
    return 3 * 2 * INPUTS_PER_TUPLE * tuples * epochs * matmul_weights(encoder)


def matmul_program(n: int = MATMUL_N, calls: int = 3):
    """A program of ``calls`` fp32 (n × n) @ (n × n) products into a preallocated output."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    out = torch.empty(n, n)

    def run():
        for _ in range(calls):
            torch.mm(a, b, out=out)

    return run, calls * 2 * n**3


def sampler_programs(world, tuples: int, block: int, generator: torch.Generator):
    """Two programs drawing about ``tuples`` tuples: in blocks of ``block`` (as the estimates
    draw) and in one draw (as pretraining draws); with the number of tuples each draws."""
    draws = max(1, tuples // block)

    def blocks():
        for _ in range(draws):
            draw_tuples(world, block, generator, negatives=1)

    def bulk():
        draw_tuples(world, tuples, generator, negatives=1)

    return {"sampler_blocks": (blocks, draws * block), "sampler_bulk": (bulk, tuples)}


def trainer_programs(setup: Setup, epochs: int, batch: int, seed: int):
    def ours():
        run_pretrain(copy.deepcopy(setup.initial), setup.objective, setup.tuples, epochs, batch, LR, seed)

    def bare():
        bare_loop(copy.deepcopy(setup.initial), setup.tuples, epochs, batch, LR, seed)

    return {"pretrain": ours, "bare": bare}


def measure(name: str, tuples: int, repeats: int, seed: int, breakdown: bool = False) -> None:
    in_dim, hidden, out_dim, batch, epochs = SIZES[name]
    setup = make_setup(in_dim, hidden, out_dim, tuples, seed)
    programs = trainer_programs(setup, epochs, batch, seed)
    if breakdown:
        programs["bare + library loss"] = lambda: library_loss_loop(copy.deepcopy(setup.initial), setup.objective,
                                                                    setup.tuples, epochs, batch, LR, seed)
    steps = epochs * math.ceil(tuples / batch)
    label = f"MLP {in_dim}→{hidden}→{out_dim}, batch {batch}"
    samplers = {}
    if name == "demo":
        samplers = sampler_programs(setup.world, tuples, ESTIMATE_BLOCK, torch.Generator().manual_seed(seed + 1))
        programs.update({key: fn for key, (fn, _) in samplers.items()})
    if name == "wide":
        programs["matmul"], matmul_flops = matmul_program()
    print(f"\n{name}: {label}; M={tuples} epochs={epochs} steps/run={steps} repeats={repeats}; {machine()}",
          flush=True)
    times = interleaved(programs, repeats)
    ours, bare = steps / median(times["pretrain"]), steps / median(times["bare"])
    ratio = ours / bare
    print(f"  pretrain(): {spread(times['pretrain'])} -> {ours:.1f} steps/s")
    print(f"  bare loop:  {spread(times['bare'])} -> {bare:.1f} steps/s")
    print(f"  ratio pretrain / bare (medians): {ratio:.3f} (target >= {TARGET_RATIO}); per-round "
          f"{round_ratios(times['bare'], times['pretrain'])}")
    if breakdown:
        extra = median(times["bare + library loss"])
        print(f"  bare + library loss: {spread(times['bare + library loss'])} -> {steps / extra:.1f} steps/s = "
              f"{median(times['bare']) / extra:.3f}x the bare loop (the rest of pretrain()'s gap: its loop)")
    gap_ms = 1e3 * (median(times["pretrain"]) - median(times["bare"])) / steps
    summary(f"pretrain() vs bare loop, {name}", f"steps/s, {label}",
            f"{ours:.0f} vs {bare:.0f} steps/s ({gap_ms:+.3f} ms a step)", ratio, f">= {TARGET_RATIO}x",
            bool(ratio >= TARGET_RATIO), ratio_text=f"{ratio:.2f}x")
    if name == "wide":
        flops = training_flops(setup.initial, tuples, epochs)
        peak = matmul_flops / median(times["matmul"])
        ours_rate, bare_rate = flops / median(times["pretrain"]), flops / median(times["bare"])
        fraction = ours_rate / peak
        print(f"  {MATMUL_N}² fp32 matmul: {spread(times['matmul'])} for 3 -> {peak / 1e9:.1f} GFLOP/s")
        print(f"  counted {flops / 1e9:.3f} GFLOP a run (3·2·inputs·P, P={matmul_weights(setup.initial)}): "
              f"pretrain {ours_rate / 1e9:.1f} GFLOP/s = {fraction:.1%}, bare {bare_rate / 1e9:.1f} GFLOP/s = "
              f"{bare_rate / peak:.1%} of the matmul rate (target >= {TARGET_FLOPS:.0%})")
        summary("pretrain() FLOP rate, wide", f"fraction of a {MATMUL_N}² fp32 matmul's FLOP rate",
                f"{ours_rate / 1e9:.1f} vs {peak / 1e9:.1f} GFLOP/s (bare loop {bare_rate / peak:.1%})", fraction,
                f">= {TARGET_FLOPS:.0%}", bool(fraction >= TARGET_FLOPS), ratio_text=f"{fraction:.1%}")
    if samplers:
        consumed = tuples * epochs / median(times["pretrain"])
        rates = {key: count / median(times[key]) for key, (_, count) in samplers.items()}
        worst = min(rates.values()) / consumed
        print(f"  sampler, blocks of {ESTIMATE_BLOCK}: {spread(times['sampler_blocks'])} -> "
              f"{rates['sampler_blocks']:.0f} tuples/s = {rates['sampler_blocks'] / consumed:.1f}x")
        print(f"  sampler, one draw of {tuples}:  {spread(times['sampler_bulk'])} -> "
              f"{rates['sampler_bulk']:.0f} tuples/s = {rates['sampler_bulk'] / consumed:.1f}x")
        print(f"  pretrain() consumes {consumed:.0f} tuples/s (target: sampler >= {TARGET_SAMPLER:g}x, both ways)")
        summary("sampler vs trainer", "draw_tuples tuples/s vs pretrain()'s consumption (demo)",
                f"{rates['sampler_blocks'] / 1e3:.0f}k/s (blocks of {ESTIMATE_BLOCK}), "
                f"{rates['sampler_bulk'] / 1e3:.0f}k/s (one draw of M) vs {consumed / 1e3:.0f}k/s consumed",
                worst, f">= {TARGET_SAMPLER:g}x (both)", bool(worst >= TARGET_SAMPLER),
                ratio_text=f"{rates['sampler_blocks'] / consumed:.1f}x / {rates['sampler_bulk'] / consumed:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 interleaved rounds instead of 9")
    parser.add_argument("--tuples", type=int, default=20000, help="M training tuples (the demo's)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 9; quick 5)")
    parser.add_argument("--only", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--breakdown", action="store_true",
                        help="also time the bare loop with the library's loss path, to locate pretrain()'s overhead")
    add_threads_argument(parser)
    args = parser.parse_args()
    set_threads(args.threads)
    repeats = args.repeats or (5 if args.quick else 9)
    for name in args.only:
        measure(name, args.tuples, repeats, args.seed, args.breakdown)


if __name__ == "__main__":
    main()
