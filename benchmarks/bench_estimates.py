"""Streaming population estimates: memory and time of ``curl_moments`` (DESIGN.md §6).

Targets: memory flat in the number of samples (10⁶ tuples within 1 GB); time within 1.3× of the
encoder's forward passes over the same inputs.

The encoder is the demo's MLP 16 → [64] → 16 (R = 5) on the demo's warped Gaussian world (20
classes); L_un with k = 1, so each tuple has 3 inputs and ``curl_moments`` draws 8192 // 3 tuples
per block (its default ``block=8192`` inputs).

- Memory: each size runs in a fresh subprocess, which builds everything, warms up on a small
  sample, resets its peak RSS (``/proc/self/clear_refs``), runs ``curl_moments`` and reports the
  growth of the peak RSS (VmHWM) over the RSS before the run.
- Time: ``curl_moments`` over N tuples vs the encoder's bare forward passes (``torch.no_grad``,
  float32, the same 8190-input blocks) over 3N inputs drawn beforehand. That ratio is the target.
  ``curl_moments`` also draws its inputs from the world, so the sampler's time over the same
  blocks is measured too, and the ratio against forward + sampler is printed: it shows how much of
  the gap is the sampler (fresh inputs are inherent to a population estimate) and how much is the
  streaming machinery (float64 loss, running moments).

Run: ``.venv/bin/python benchmarks/bench_estimates.py [--quick] [--time-samples 1000000]``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys

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
from preadapt.estimate.estimate import RunningMean
from preadapt.estimate.quantities import curl_moments
from preadapt.objectives import curl_loss, encode_tuples
from preadapt.worlds import WORLDS, draw_tuples

BLOCK = 8192
GIB = 2**30


def setup(seed: int):
    g = torch.Generator().manual_seed(seed)
    world = WORLDS.build(WORLDS.parse({"kind": "gaussian", "classes": 20, "dim": 16, "warp": True}), g)
    encoder = ENCODERS.build(ENCODERS.parse({"kind": "mlp", "hidden": [64], "out_dim": 16, "norm_bound": 5.0}),
                             world.input_shape, g)
    return world, encoder.eval()


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10⁴ / 10⁵ tuples for memory, 10⁵ for time")
    parser.add_argument("--memory-samples", type=int, nargs="+", default=None,
                        help="tuples per memory run (default 10⁵ 10⁶; quick 10⁴ 10⁵)")
    parser.add_argument("--time-samples", type=int, default=None, help="tuples timed (default 10⁶; quick 10⁵)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 5)")
    parser.add_argument("--seed", type=int, default=0)
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
    samples = args.time_samples or (10**5 if args.quick else 10**6)
    repeats = args.repeats or 5

    print(f"estimates: curl_moments, MLP 16->[64]->16 on a warped Gaussian world, block={BLOCK}; {machine()}")
    memory = [measure_memory(n, args.seed, args.threads) for n in sizes]
    for m in memory:
        print(f"memory: {m['samples']:>8d} tuples: RSS before {m['rss_before_kib'] / 1024:.1f} MiB, peak growth "
              f"{m['growth_kib'] / 1024:.1f} MiB (count {m['count']}, mean loss {m['mean']:.4f})")
    small, large = memory[0], memory[-1]
    extra_mib = (large["growth_kib"] - small["growth_kib"]) / 1024
    flat = large["growth_kib"] * 1024 < GIB and extra_mib < 64
    print(f"memory growth from {small['samples']} to {large['samples']} tuples: {extra_mib:+.1f} MiB "
          f"(target: flat, and {large['samples']} tuples within 1 GiB)")
    summary("estimates memory", f"curl_moments peak RSS growth, {small['samples']} vs {large['samples']} tuples",
            f"{small['growth_kib'] / 1024:.1f} MiB vs {large['growth_kib'] / 1024:.1f} MiB",
            large["growth_kib"] / max(small["growth_kib"], 1), "flat (< 64 MiB more), < 1 GiB", bool(flat))

    world, encoder = setup(args.seed)
    per_block = BLOCK // 3  # tuples per block, as curl_moments computes it for k = 1, b = 1
    inputs = torch.cat([world.sample(torch.randint(world.classes, (3 * samples,),
                                                   generator=torch.Generator().manual_seed(7)),
                                     torch.Generator().manual_seed(8))])  # (3N, D), drawn beforehand
    step = 3 * per_block
    sampler_g = torch.Generator().manual_seed(9)

    def forward():
        with torch.no_grad():
            for start in range(0, len(inputs), step):
                encoder(inputs[start:start + step])

    def sampler():
        for start in range(0, samples, per_block):
            draw_tuples(world, min(per_block, samples - start), sampler_g)

    def streamed():
        curl_moments(encoder, world, samples, torch.Generator().manual_seed(args.seed), block=BLOCK)

    programs = {"curl_moments": streamed, "forward": forward, "sampler": sampler}
    if args.breakdown:
        blocks = [draw_tuples(world, per_block, torch.Generator().manual_seed(10)) for _ in range(samples // per_block)]

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
    ratio = ours / fwd
    print(f"time over {samples} tuples ({3 * samples} inputs), medians of {repeats} interleaved rounds:")
    print(f"  curl_moments:              {spread(times['curl_moments'])}")
    print(f"  encoder forward (3N):      {spread(times['forward'])}")
    print(f"  sampler draw_tuples (N):   {spread(times['sampler'])}")
    rounds = sorted(c / f for c, f in zip(times["curl_moments"], times["forward"]))
    print(f"  curl_moments / forward:             {ratio:.2f}x (target <= 1.3x); per-round ratios "
          f"{', '.join(f'{r:.2f}' for r in rounds)}")
    print(f"  curl_moments / (forward + sampler): {ours / (fwd + draw):.2f}x; streaming machinery beyond "
          f"forward + sampler: {ours - fwd - draw:+.3f} s ({(ours - fwd - draw) / ours:+.0%} of curl_moments)")
    for name in programs:
        if name not in ("curl_moments", "forward", "sampler"):
            print(f"  {name + ':':36s} {spread(times[name])} = {median(times[name]) / fwd:.2f}x forward "
                  f"({len(blocks) * per_block} tuples)")
    summary("estimates time", f"curl_moments vs encoder forward, {samples} tuples",
            f"{ours:.2f} s vs {fwd:.2f} s forward (+ {draw:.2f} s sampler; {ours / (fwd + draw):.2f}x "
            "forward + sampler)", ratio, "<= 1.3x", bool(ratio <= 1.3))


if __name__ == "__main__":
    main()
