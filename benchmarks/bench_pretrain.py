"""Pretraining throughput: ``preadapt.pretrain.pretrain`` vs a bare PyTorch loop (DESIGN.md §6).

Targets: steps/s ≥ 0.9× a bare loop of the same encoder, loss and batch; the sampler never the
bottleneck (``draw_tuples`` tuples/s ≥ 10× the tuples/s the trainer consumes).

Both trainers start from the same encoder weights (an MLP 16 → [64] → 16 with norm bound R = 5,
built from the registries as the demo preset does), train on the same M tuples of a warped
Gaussian world with CURL's base-2 logistic loss, k = 1, batch 256, Adam (lr 1e-3), and reshuffle
every epoch. The bare loop is what one would write by hand: index, concatenate, encode, loss,
backward, step; no finiteness checks, no per-step loss read-back, no checkpoint bookkeeping.
Repeats are interleaved (pretrain, bare, sampler, ...) and medians reported. The sampler is timed
two ways, both against the trainer's consumption and both held to the target: streamed in blocks
as the population estimates draw (8192 // 3 tuples a call) and as one draw of M (as pretraining).

Run: ``.venv/bin/python benchmarks/bench_pretrain.py [--quick] [--epochs 4] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import copy
import math

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

from preadapt.encoders import ENCODERS
from preadapt.objectives import OBJECTIVES, encode_tuples
from preadapt.pretrain import PretrainConfig, pretrain
from preadapt.worlds import WORLDS, draw_tuples

LN2 = math.log(2.0)


def hand_loss(encoder: torch.nn.Module, tuples):
    """The CURL logistic loss (k = 1, b = 1) written inline: ``loss_of(idx)`` → scalar mean loss."""
    anchor = tuples.anchor  # (M, D)
    positive = tuples.positives[:, 0]  # (M, D)
    negative = tuples.negatives[:, 0, 0]  # (M, D)

    def loss_of(idx: torch.Tensor) -> torch.Tensor:
        n = len(idx)
        features = encoder(torch.cat([anchor[idx], positive[idx], negative[idx]]))  # (3n, d)
        a, p, q = features.split([n, n, n])
        margins = (a * (p - q)).sum(dim=1, keepdim=True)  # (n, 1)
        zero = torch.zeros_like(margins)
        return (torch.logsumexp(torch.cat([zero, -margins], dim=1), dim=1) / LN2).mean()

    return loss_of


def library_loss(encoder: torch.nn.Module, objective: torch.nn.Module, tuples):
    """The loss as ``pretrain`` computes it: index ``Tuples``, ``encode_tuples``, the CURL module."""
    return lambda idx: objective(encode_tuples(encoder, tuples[idx])).mean()


def pretrain_checks(encoder: torch.nn.Module, loss: torch.Tensor, stage: str) -> None:
    """The per-step work ``pretrain`` adds: finiteness of loss, gradients, parameters; loss read-back."""
    if stage == "loss":
        assert torch.isfinite(loss)
    else:
        assert all(torch.isfinite(p.grad if stage == "grad" else p).all() for p in encoder.parameters())
        if stage == "param":
            float(loss.detach())


def bare_loop(encoder: torch.nn.Module, loss_of, size: int, epochs: int, batch: int, lr: float, seed: int,
              checks=None) -> int:
    """Hand-written ERM: shuffle, ``loss_of(idx)``, backward, Adam step; returns the number of steps.

    ``checks(encoder, loss, stage)`` (None in the bare loop) is called at the stages where
    ``pretrain`` checks, for the breakdown of its overhead.
    """
    optimizer = torch.optim.Adam(encoder.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    steps = 0
    for _ in range(epochs):
        order = torch.randperm(size, generator=generator)
        for start in range(0, size, batch):
            loss = loss_of(order[start:start + batch])
            if checks:
                checks(encoder, loss, "loss")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if checks:
                checks(encoder, loss, "grad")
            optimizer.step()
            if checks:
                checks(encoder, loss, "param")
            steps += 1
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one epoch, three repeats")
    parser.add_argument("--tuples", type=int, default=20000, help="M training tuples (the demo's)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per timed run (default 4; quick 1)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 7; quick 3)")
    parser.add_argument("--sampler-batch", type=int, default=2730,
                        help="tuples per streamed draw_tuples call (default: curl_moments' block, 8192 // 3)")
    parser.add_argument("--no-warp", action="store_true", help="an unwarped Gaussian world (cheaper sampler)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--breakdown", action="store_true",
                        help="also time the bare loop plus each of pretrain's additions, to locate its overhead")
    add_threads_argument(parser)
    args = parser.parse_args()
    set_threads(args.threads)
    epochs = args.epochs or (1 if args.quick else 4)
    repeats = args.repeats or (3 if args.quick else 7)

    g = torch.Generator().manual_seed(args.seed)
    world = WORLDS.build(WORLDS.parse({"kind": "gaussian", "classes": 20, "dim": 16,
                                         "warp": not args.no_warp}), g)
    encoder_config = ENCODERS.parse({"kind": "mlp", "hidden": [64], "out_dim": 16, "norm_bound": 5.0})
    initial = ENCODERS.build(encoder_config, world.input_shape, g)
    objective = OBJECTIVES.build(OBJECTIVES.parse({"kind": "curl", "loss": "logistic", "negatives": 1}))
    tuples = draw_tuples(world, args.tuples, g, negatives=1)
    config = PretrainConfig(tuples=args.tuples, epochs=epochs, batch_size=args.batch, optimizer="adam",
                            lr=1e-3, checkpoints=[])
    steps = config.total_steps
    sampler_g = torch.Generator().manual_seed(args.seed + 1)
    draws = max(1, args.tuples // args.sampler_batch)  # about M tuples, streamed in blocks

    def run_pretrain():
        pretrain(copy.deepcopy(initial), objective, tuples, config, torch.Generator().manual_seed(args.seed))

    def bare_variant(library: bool, checks):
        def run():
            encoder = copy.deepcopy(initial)
            loss_of = library_loss(encoder, objective, tuples) if library else hand_loss(encoder, tuples)
            bare_loop(encoder, loss_of, len(tuples), epochs, args.batch, 1e-3, args.seed, checks)
        return run

    run_bare = bare_variant(library=False, checks=None)

    def run_sampler():
        for _ in range(draws):
            draw_tuples(world, args.sampler_batch, sampler_g, negatives=1)

    def run_sampler_bulk():
        draw_tuples(world, args.tuples, sampler_g, negatives=1)

    print(f"pretrain: M={args.tuples} batch={args.batch} epochs={epochs} steps/run={steps} repeats={repeats} "
          f"warp={not args.no_warp}; "
          f"{machine()}")
    programs = {"pretrain": run_pretrain, "bare": run_bare, "sampler": run_sampler, "sampler_bulk": run_sampler_bulk}
    if args.breakdown:
        programs.update({
            "bare + library loss": bare_variant(library=True, checks=None),
            "bare + checks": bare_variant(library=False, checks=pretrain_checks),
            "bare + library loss + checks": bare_variant(library=True, checks=pretrain_checks),
        })
    times = interleaved(programs, repeats)
    ours = steps / median(times["pretrain"])
    bare = steps / median(times["bare"])
    paired = sorted(b / p for p, b in zip(times["pretrain"], times["bare"]))  # per-round ratios
    ratio = ours / bare
    consumed = ours * args.batch
    sampled = draws * args.sampler_batch / median(times["sampler"])
    bulk = args.tuples / median(times["sampler_bulk"])
    print(f"pretrain():  {spread(times['pretrain'])}  -> {ours:.0f} steps/s")
    print(f"bare loop:   {spread(times['bare'])}  -> {bare:.0f} steps/s")
    print(f"steps/s ratio pretrain / bare (medians): {ratio:.3f} (target >= 0.9); per-round ratios "
          f"{', '.join(f'{r:.2f}' for r in paired)}")
    print(f"sampler draw_tuples({args.sampler_batch}) x {draws}: {spread(times['sampler'])} -> {sampled:.0f} tuples/s")
    print(f"sampler draw_tuples({args.tuples}) once:  {spread(times['sampler_bulk'])} -> {bulk:.0f} tuples/s")
    worst = min(sampled, bulk) / consumed
    print(f"trainer consumes {consumed:.0f} tuples/s; sampler / trainer = {sampled / consumed:.1f}x "
          f"(blocks of {args.sampler_batch}), {bulk / consumed:.1f}x (one draw of M) (target >= 10x for both)")
    for name in programs:
        if name.startswith("bare +"):
            print(f"  {name + ':':30s} {spread(times[name])} -> {steps / median(times[name]):.0f} steps/s, "
                  f"{median(times['bare']) / median(times[name]):.3f}x the bare loop")
    summary("pretrain steps/s", "pretrain() vs bare PyTorch loop", f"{ours:.0f} vs {bare:.0f} steps/s", ratio,
            ">= 0.9", bool(ratio >= 0.9))
    summary("sampler tuples/s", "draw_tuples vs trainer consumption",
            f"{sampled:.0f} tuples/s (blocks of {args.sampler_batch}), {bulk:.0f} (one draw of M) "
            f"vs {consumed:.0f} consumed; ratio = the smaller", worst, ">= 10x", bool(worst >= 10))


if __name__ == "__main__":
    main()
