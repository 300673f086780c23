"""Streaming population estimates: memory and time of ``curl_moments`` (issue 15, DESIGN.md §6).

Targets: memory flat in the number of samples (10⁶ tuples within 1 GB); time within 1.3× of the
encoder's forward passes over the same number of inputs plus the sampling a population estimate
cannot avoid: ``curl_moments`` ≤ 1.3 × (forward + sampler).

The encoder is the demo's MLP 16 → [64] → 16 (R = 5) on the demo's warped Gaussian world (20
classes); L_un with k = 1, so each tuple has 3 inputs and ``curl_moments`` draws 8192 // 3 tuples
per block (its default ``block=8192`` inputs).

- Memory: each size runs in a fresh subprocess, which builds everything, warms up on a small
  sample, resets its peak RSS (``/proc/self/clear_refs``), runs ``curl_moments`` and reports the
  growth of the peak RSS (VmHWM) over the RSS before the run.
- Time: ``curl_moments`` over N tuples vs the encoder's bare forward passes (``torch.no_grad``,
  float32, the same 8190-input blocks) over 3N inputs drawn beforehand, and vs the sampler alone
  drawing the same blocks (``sampler_blocks``: the draws ``curl_moments`` makes, in its order). Both
  ratios are reported: against forward alone, and against forward + sampler (the target); the
  stricter reading, (curl_moments − sampler) / forward, is printed too. ``curl_moments``' mean is
  the mean of the CURL loss over the very tuples ``sampler_blocks`` draws (``reference_mean``;
  tests/test_benchmarks.py).

Run: ``.venv/bin/python benchmarks/bench_estimates.py [--quick] [--time-samples 1000000] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys

import numpy as np
import torch
from _common import add_threads_argument, interleaved, machine, median, round_ratios, set_threads, spread, summary

from preadapt.encoders import ENCODERS
from preadapt.estimate.estimate import RunningMean
from preadapt.estimate.quantities import curl_moments
from preadapt.objectives import curl_loss, encode_tuples
from preadapt.worlds import WORLDS, draw_tuples

BLOCK = 8192
PER_BLOCK = BLOCK // 3  # tuples a block, as curl_moments computes it for k = 1, b = 1
GIB = 2**30
LN2 = math.log(2.0)
TARGET = 1.3


def setup(seed: int, classes: int = 20, dim: int = 16, hidden: int = 64, out_dim: int = 16):
    g = torch.Generator().manual_seed(seed)
    world = WORLDS.build(WORLDS.parse({"kind": "gaussian", "classes": classes, "dim": dim, "warp": True}), g)
    encoder = ENCODERS.build(ENCODERS.parse({"kind": "mlp", "hidden": [hidden], "out_dim": out_dim,
                                             "norm_bound": 5.0}), world.input_shape, g)
    return world, encoder.eval()


def sampler_blocks(world, samples: int, generator: torch.Generator, per_block: int = PER_BLOCK):
    """The tuples ``curl_moments`` draws for ``samples`` tuples (k = 1, b = 1), block by block."""
    for start in range(0, samples, per_block):
        yield draw_tuples(world, min(per_block, samples - start), generator)


def reference_mean(encoder, world, samples: int, seed: int, per_block: int = PER_BLOCK) -> tuple[float, int]:
    """The baseline of ``curl_moments``' mean: the base-2 logistic CURL loss, written out in float64,
    averaged over the tuples ``sampler_blocks`` draws from ``Generator().manual_seed(seed)``."""
    losses = []
    with torch.no_grad():
        for tuples in sampler_blocks(world, samples, torch.Generator().manual_seed(seed), per_block):
            n = len(tuples)
            features = encoder(torch.cat([tuples.anchor, tuples.positives[:, 0], tuples.negatives[:, 0, 0]])).double()
            a, p, q = features.split([n, n, n])
            margins = (a * (p - q)).sum(dim=1)
            losses.append(torch.logaddexp(torch.zeros_like(margins), -margins) / LN2)  # log2(1 + e^{−v})
    values = torch.cat(losses).numpy()
    return float(np.mean(values)), len(values)


def draw_inputs(world, inputs: int, seed: int) -> torch.Tensor:
    """``inputs`` inputs of the world drawn beforehand (random classes), for the forward baseline."""
    labels = torch.randint(world.classes, (inputs,), generator=torch.Generator().manual_seed(seed))
    return world.sample(labels, torch.Generator().manual_seed(seed + 1))  # (inputs, D)


def forward_program(encoder, inputs: torch.Tensor, step: int = 3 * PER_BLOCK):
    """The encoder's bare forward passes over ``inputs`` in blocks of ``step``; returns inputs seen."""
    def run() -> int:
        seen = 0
        with torch.no_grad():
            for start in range(0, len(inputs), step):
                seen += len(encoder(inputs[start:start + step]))
        return seen
    return run


def status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.MULTILINE).group(1))


def child(samples: int, seed: int) -> None:
    """Runs in a fresh process: peak-RSS growth of one ``curl_moments`` call, as one JSON line."""
    world, encoder = setup(seed)
    curl_moments(encoder, world, 20000, torch.Generator().manual_seed(seed), block=BLOCK)  # warm-up
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before = status_kib("VmRSS")
    moments = curl_moments(encoder, world, samples, torch.Generator().manual_seed(seed + 1), block=BLOCK)
    peak = status_kib("VmHWM")
    print(json.dumps({"samples": samples, "rss_before_kib": before, "peak_kib": peak, "growth_kib": peak - before,
                      "count": moments.count, "mean": moments.mean}))


def measure_memory(samples: int, seed: int, threads: int | None) -> dict:
    command = [sys.executable, __file__, "--child", str(samples), "--seed", str(seed)]
    if threads is not None:
        command += ["--threads", str(threads)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def memory_row(sizes: list[int], seed: int, threads: int | None) -> None:
    memory = [measure_memory(n, seed, threads) for n in sizes]
    for m in memory:
        print(f"memory: {m['samples']:>8d} tuples: RSS before {m['rss_before_kib'] / 1024:.1f} MiB, peak growth "
              f"{m['growth_kib'] / 1024:.1f} MiB (count {m['count']}, mean loss {m['mean']:.4f})")
    small, large = memory[0], memory[-1]
    extra_mib = (large["growth_kib"] - small["growth_kib"]) / 1024
    flat = large["growth_kib"] * 1024 < GIB and extra_mib < 64
    print(f"memory growth from {small['samples']} to {large['samples']} tuples: {extra_mib:+.1f} MiB "
          f"(target: flat, and {large['samples']} tuples within 1 GiB)")
    summary("estimates memory", f"curl_moments peak RSS growth, {small['samples']} vs {large['samples']} tuples",
            f"{small['growth_kib'] / 1024:.1f} MiB vs {large['growth_kib'] / 1024:.1f} MiB "
            f"({small['samples']:.0e} vs {large['samples']:.0e} tuples)",
            large["growth_kib"] / max(small["growth_kib"], 1), "flat (< 64 MiB more), < 1 GiB", bool(flat),
            ratio_text=f"{extra_mib:+.1f} MiB")


def time_row(samples: int, repeats: int, seed: int, breakdown: bool) -> None:
    world, encoder = setup(seed)
    inputs = draw_inputs(world, 3 * samples, 7)  # (3N, D)
    forward = forward_program(encoder, inputs)
    sampler_g = torch.Generator().manual_seed(9)

    def sampler():
        for _ in sampler_blocks(world, samples, sampler_g):
            pass

    def streamed():
        curl_moments(encoder, world, samples, torch.Generator().manual_seed(seed), block=BLOCK)

    programs = {"curl_moments": streamed, "forward": forward, "sampler": sampler}
    if breakdown:
        blocks = list(sampler_blocks(world, samples, torch.Generator().manual_seed(10)))

        def encoded_only():
            with torch.no_grad():
                for tuples in blocks:
                    encode_tuples(encoder, tuples)

        def encoded_loss_moments():
            moments = RunningMean()
            with torch.no_grad():
                for tuples in blocks:
                    z = encode_tuples(encoder, tuples, dtype=torch.float64)
                    moments.update(curl_loss(z.anchor, z.positives, z.negatives))

        programs.update({"encode_tuples (pre-drawn)": encoded_only,
                         "+ float64 CURL loss + RunningMean": encoded_loss_moments})
    times = interleaved(programs, repeats)
    ours, fwd, draw = (median(times[k]) for k in ("curl_moments", "forward", "sampler"))
    alone, combined, strict = ours / fwd, ours / (fwd + draw), (ours - draw) / fwd
    print(f"time over {samples} tuples ({3 * samples} inputs), medians of {repeats} interleaved rounds:")
    print(f"  curl_moments:              {spread(times['curl_moments'])}")
    print(f"  encoder forward (3N):      {spread(times['forward'])}")
    print(f"  sampler draw_tuples (N):   {spread(times['sampler'])} = {draw / fwd:.2f}x forward")
    print(f"  curl_moments / forward:             {alone:.2f}x; per round "
          f"{round_ratios(times['curl_moments'], times['forward'])}")
    print(f"  curl_moments / (forward + sampler): {combined:.2f}x (target <= {TARGET}x)")
    print(f"  (curl_moments - sampler) / forward: {strict:.2f}x (the streaming machinery + forward, per forward)")
    for name in programs:
        if name not in ("curl_moments", "forward", "sampler"):
            print(f"  {name + ':':36s} {spread(times[name])} = {median(times[name]) / fwd:.2f}x forward")
    summary("estimates vs forward + sampler", f"curl_moments vs encoder forward (3N inputs) + sampler, N={samples}",
            f"{ours:.2f} s vs {fwd:.2f} s forward + {draw:.2f} s sampler; {alone:.2f}x forward alone, "
            f"(curl - sampler) / forward {strict:.2f}x", combined, f"<= {TARGET}x (forward + sampler)",
            bool(combined <= TARGET), ratio_text=f"{combined:.2f}x ({alone:.2f}x fwd alone)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10⁴ / 10⁵ tuples for memory, 3·10⁵ for time")
    parser.add_argument("--memory-samples", type=int, nargs="+", default=None,
                        help="tuples per memory run (default 10⁵ 10⁶; quick 10⁴ 10⁵)")
    parser.add_argument("--time-samples", type=int, default=None, help="tuples timed (default 10⁶; quick 3·10⁵)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-memory", action="store_true", help="skip the memory row (two subprocesses)")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time encode_tuples and the float64 loss + running moments on pre-drawn blocks")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    add_threads_argument(parser)
    args = parser.parse_args()
    set_threads(args.threads)
    if args.child is not None:
        child(args.child, args.seed)
        return
    sizes = args.memory_samples or ([10**4, 10**5] if args.quick else [10**5, 10**6])
    samples = args.time_samples or (3 * 10**5 if args.quick else 10**6)
    print(f"estimates: curl_moments, MLP 16->[64]->16 on a warped Gaussian world, block={BLOCK}; {machine()}")
    time_row(samples, args.repeats or 5, args.seed, args.breakdown)
    if not args.no_memory:
        memory_row(sizes, args.seed, args.threads)


if __name__ == "__main__":
    main()
