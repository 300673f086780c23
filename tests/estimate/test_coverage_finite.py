"""Coverage on a finite world (issue 10, section 5): each replication draws a new data set from a known
distribution (the Gaussian world of coverage.py), splits it and evaluates on its held-out split, so an
interval must be about the distribution the split was drawn from, not about the draws from the split.

Each data set has 100 examples per class, split [0.5, 0.1, 0.4] (40 held-out examples per class), and
the evaluation draws 2000 tuples from them: far more draws than distinct examples. Truths as in
test_coverage_fresh.py; the mean classifier's ``acc_avg`` is conditional on its class means, those of
the train split's examples.
"""

import pytest
import torch

from coverage import (CONFIG, MEANS, NOISE, REPLICATIONS, SCALE, Anisotropic, assert_coverage, avg2_truth, covered,
                      population_truths)
from preadapt.adapt import ADAPTERS
from preadapt.estimate import evaluate_encoder
from preadapt.worlds import FiniteWorld

pytestmark = pytest.mark.slow
PER_CLASS = 100
SPLIT = [0.5, 0.1, 0.4]
MEAN_ONLY = CONFIG.model_copy(update={"adapters": [ADAPTERS.parse({"kind": "mean"})]})
"""CONFIG with the mean adapter only: no quantity of the linear adapter is checked here, and each
adapter draws from its own random stream, so every checked number (and so every hit) is, bit for bit,
what the default adapters give; the linear heads' fits were five sixths of each replication's time."""


def _data_set(generator: torch.Generator) -> FiniteWorld:
    labels = torch.arange(len(MEANS)).repeat_interleave(PER_CLASS)
    features = MEANS[labels] + NOISE * torch.randn(len(labels), MEANS.shape[1], generator=generator)
    return FiniteWorld.from_arrays(features, labels, SPLIT, generator)


def test_intervals_on_a_finite_split_cover_the_population_truth():
    truth = population_truths()
    generator = torch.Generator().manual_seed(2026)
    names = ["L_un", "L_un_same", "L_un_diff", "L_sup_mean", "s_f", "acc_avg"]
    hits = dict.fromkeys(names, 0)
    counts = set()
    for replication in range(REPLICATIONS):
        world = _data_set(generator)
        evaluation = evaluate_encoder(Anisotropic(), world, MEAN_ONLY, seed=replication)
        rows = {"L_un": evaluation.get("L_un", negatives=1), "L_un_same": evaluation.get("L_un_same"),
                "L_un_diff": evaluation.get("L_un_diff"), "L_sup_mean": evaluation.get("L_sup_mean", task_classes=2),
                "s_f": evaluation.get("s_f"), "acc_avg": evaluation.get("acc_avg", adapter="mean", task_classes=2)}
        counts.update(rows[name].n for name in ("L_un", "s_f", "acc_avg"))
        train_x, train_y = world.split_world("train").examples()
        train_f = train_x.double() * SCALE
        means = torch.stack([train_f[train_y == c].mean(0) for c in range(len(MEANS))])
        for name in names:
            target = avg2_truth(means.numpy()) if name == "acc_avg" else truth[name]
            hits[name] += covered(rows[name], target)
    assert counts == {len(MEANS) * 40}  # n counts the distinct held-out examples, not the 2000 draws
    assert_coverage(hits)
