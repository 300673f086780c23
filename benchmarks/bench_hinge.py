"""Evaluating with the hinge loss vs the logistic loss on the same config (issue 10).

Target: ``evaluate_encoder`` with ``curl_loss_name="hinge"`` within 2× its time with
``"logistic"``. Both measure the same quantities on the same samples; they differ in ℓ, and with
it in how L_sup's heads are fitted (``fit_linear_heads``: L-BFGS on the logistic loss; for the
hinge, smoothed stages and the exact active-set solver).

The identity encoder on a Gaussian world of 12 classes (dim 8, no warp), two configs:

- ``small``: the config of tests/estimate/test_linear_heads.py with ``probe_tasks=20`` (4000
  samples, 500 points per class for μ̂, one 2-class AVG-k probe, L_sup on 300 points per class
  and task). The heads weigh most here; this is the config of the issue's 0.4 s vs 3.5 s.
- ``default``: the default ``EvaluateConfig`` with ``probe_tasks=20`` (20 000 samples, AVG-2 and
  AVG-10 probes, L_sup on 500 points per class and task).

``both_losses`` runs the two at any config: they measure the same quantities in the same contexts
(tests/test_benchmarks.py, at a tiny config).

Run: ``.venv/bin/python benchmarks/bench_hinge.py [--quick] [--threads N]``.
"""

from __future__ import annotations

import argparse

from _common import add_threads_argument, interleaved, machine, median, set_threads, spread, summary

from preadapt.encoders import IdentityEncoder
from preadapt.estimate import EvaluateConfig, evaluate_encoder
from preadapt.worlds import WORLDS
from preadapt.worlds.sampling import make_generator

GOAL = 2.0
CONFIGS = {
    "small": EvaluateConfig(samples=4000, mean_samples=500, test_per_class=100, task_classes=[2], top_r=[1],
                            probe_tasks=20, probe_shots=20, probe_val=50, star_samples=300, bootstrap=10),
    "default": EvaluateConfig(probe_tasks=20),
}


def tiny_world(classes: int = 12, dim: int = 8):
    return WORLDS.build(WORLDS.parse({"kind": "gaussian", "classes": classes, "dim": dim, "warp": False}),
                        make_generator(0, "world"))


def both_losses(world, config: EvaluateConfig, seed: int = 1):
    """``evaluate_encoder`` of the identity encoder with each loss, on the same config and seed:
    {"logistic": Evaluation, "hinge": Evaluation}. The two measure the same quantities in the same
    contexts, and the ones that do not involve ℓ (τ, R, the mean classifier's AVG-k) agree exactly."""
    return {loss: evaluate_encoder(IdentityEncoder(), world, config, seed, curl_loss_name=loss)
            for loss in ("logistic", "hinge")}


def measurement_keys(evaluation) -> list[tuple]:
    return sorted((m.quantity, tuple(sorted((k, str(v)) for k, v in m.context.items())))
                  for m in evaluation.measurements)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 interleaved rounds instead of 7")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 7; quick 3)")
    parser.add_argument("--seed", type=int, default=1)
    add_threads_argument(parser)
    args = parser.parse_args()
    set_threads(args.threads)
    repeats = args.repeats or (3 if args.quick else 7)

    world = tiny_world()
    encoder = IdentityEncoder()
    print(f"{machine()}; identity encoder, gaussian world 12 classes (dim 8, no warp); {repeats} rounds")
    for name, config in CONFIGS.items():
        results = {}

        def run(loss: str, config=config, results=results):
            return lambda: results.__setitem__(loss, evaluate_encoder(encoder, world, config, args.seed,
                                                                      curl_loss_name=loss))

        times = interleaved({"logistic": run("logistic"), "hinge": run("hinge")}, repeats)
        ratio = median(times["hinge"]) / median(times["logistic"])
        print(f"\n{name}:")
        for loss in ("logistic", "hinge"):
            l_sup = results[loss].get("L_sup", adapter="linear")
            print(f"  evaluate_encoder, {loss:8s}: {spread(times[loss])}   L_sup = {l_sup.value:.4f} "
                  f"[{l_sup.lower:.4f}, {l_sup.upper:.4f}]")
        rounds = ", ".join(f"{h / l:.2f}" for h, l in zip(times["hinge"], times["logistic"]))
        print(f"  ratio hinge / logistic (medians): {ratio:.2f}x  (target <= {GOAL:g}x); per round: {rounds}")
        summary(f"hinge vs logistic, {name}", f"evaluate_encoder, hinge vs logistic ({name} config)",
                f"{median(times['hinge']):.3g} s vs {median(times['logistic']):.3g} s", ratio, f"<= {GOAL:g}x",
                ratio <= GOAL, ratio_text=f"{ratio:.2f}x")


if __name__ == "__main__":
    main()
