"""Worlds of finite examples (issue 10, section 5): distinct examples within a tuple, the mean classifier
scored with each point left out of its own class's mean, counts of distinct examples, and the checks'
parts combined as dependent. Oracles: loops over the examples."""

import math

import numpy as np
import pytest
import torch

from preadapt.bounds import lemma_4_3
from preadapt.encoders import IdentityEncoder
from preadapt.estimate import EvaluateConfig, evaluate_encoder
from preadapt.estimate.collision import task_mean_losses
from preadapt.estimate.estimate import critical
from preadapt.estimate.quantities import Deviation, intraclass_deviation, mean_classifier_losses
from preadapt.objectives import LOSSES
from preadapt.worlds import FiniteWorld, draw_tuples
from preadapt.worlds.prior import tau

F64 = torch.float64
SMALL = EvaluateConfig(samples=600, mean_samples=50, test_per_class=10, task_classes=[2, 3], top_r=[1],
                       probe_tasks=4, probe_shots=3, probe_val=3, star_samples=5, bootstrap=10, negatives=[2],
                       block_sizes=[2])


def _world(per_class=(60, 50, 40), seed=0) -> FiniteWorld:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(per_class)])
    features = torch.randn(len(labels), 3, generator=generator, dtype=F64) + 2.0 * torch.eye(3, dtype=F64)[labels]
    return FiniteWorld.from_arrays(features, labels, [0.4, 0.2, 0.4], generator)


def _left_out_means(features, classes, point, own):
    """The class means of the examples, class ``own`` without row ``point``: (C, d), by a loop."""
    means = []
    for c in range(int(classes.max()) + 1):
        rows = [i for i in range(len(classes)) if classes[i] == c and not (c == own and i == point)]
        means.append(sum(features[i] for i in rows) / len(rows))
    return torch.stack(means)


@pytest.mark.parametrize("loss_name", ["hinge", "logistic"])
def test_a_point_is_scored_against_its_own_class_mean_without_itself(loss_name):
    world = _world()
    ids, classes = world.example_ids()
    features = world.take(ids)
    means = torch.stack([features[classes == c].mean(0) for c in range(world.classes)])
    counts = torch.bincount(classes)
    first = [int((classes == c).nonzero()[0]) for c in range(3)]  # the first row of each class
    points = torch.tensor([first[0], first[0] + 5, first[1] + 2, first[2] + 1])  # classes 0, 0, 1, 2
    tasks = torch.tensor([[0, 1], [2, 0], [1, 2], [2, 1]])  # (n, K), the point's class at ``positions``
    positions = torch.tensor([0, 1, 0, 0])
    assert [int(classes[p]) for p in points] == [int(tasks[i, positions[i]]) for i in range(4)]
    losses = mean_classifier_losses(features[points], tasks, positions, means, LOSSES[loss_name], counts)
    for i, point in enumerate(points.tolist()):
        left_out = _left_out_means(features, classes, point, int(classes[point]))
        scores = left_out[tasks[i]] @ features[point]  # (K,)
        margin = scores[positions[i]] - scores[1 - positions[i]]
        assert float(losses[i]) == pytest.approx(float(LOSSES[loss_name](margin.view(1, 1))), abs=1e-12)  # O(1) sums

    # the k-negative statements' mean classifier: the anchor's class is column 0
    classes_k = torch.tensor([[0, 1, 2], [1, 0, 0], [2, 2, 1]])
    rows = (first[0] + 3, first[1] + 4, first[2] + 5)
    anchors = features[torch.tensor(rows)]
    assert [int(classes[i]) for i in rows] == [0, 1, 2]
    ours, _ = task_mean_losses(anchors, classes_k, means, LOSSES[loss_name], counts)
    for i, point in enumerate(rows):
        left_out = _left_out_means(features, classes, point, int(classes[point]))
        reference, _ = task_mean_losses(anchors[i:i + 1], classes_k[i:i + 1], left_out, LOSSES[loss_name])
        assert float(ours[i]) == pytest.approx(float(reference[0]), abs=1e-12)


def test_the_draws_of_a_tuple_are_distinct_examples():
    world = _world()
    tuples = draw_tuples(world, 2000, torch.Generator().manual_seed(1), negatives=3, block_size=2)
    assert tuples.ids.shape == (2000, 1 + 2 + 3 * 2)
    rows = tuples.ids.tolist()
    assert min(world.counts) >= 9  # as many as a row's entries: every row can be distinct
    assert all(len(set(row)) == len(row) for row in rows)
    torch.testing.assert_close(world.take(tuples.ids[:, 0]), tuples.anchor, rtol=0, atol=0)
    # the ids name the inputs: positives and negatives in their block order
    torch.testing.assert_close(world.take(tuples.ids[:, 1:3].reshape(-1)).view(2000, 2, 3), tuples.positives,
                               rtol=0, atol=0)
    torch.testing.assert_close(world.take(tuples.ids[:, 3:].reshape(-1)).view(2000, 3, 2, 3), tuples.negatives,
                               rtol=0, atol=0)
    # a class with fewer examples than a row needs keeps its repeats instead of looping forever
    tiny = _world(per_class=(5, 5, 5))
    crowded = draw_tuples(tiny, 200, torch.Generator().manual_seed(2), negatives=1, block_size=4, condition="same")
    assert crowded.ids.shape == (200, 9)


def test_counts_are_distinct_examples_and_the_checks_parts_are_dependent():
    world = _world()
    held_out = int(world.counts.sum())
    evaluation = evaluate_encoder(IdentityEncoder(), world, SMALL, seed=3)
    assert evaluation.shared_examples
    l_un = evaluation.get("L_un", negatives=1)
    assert l_un.method == "cluster" and l_un.n <= held_out
    assert evaluation.get("s_f").n == held_out
    accuracy = evaluation.get("acc_avg", adapter="mean", task_classes=2, shots=None)
    assert accuracy.n == held_out  # every held-out example once
    assert evaluation.get("L_sup_mean", task_classes=2).n == held_out  # the draws and the examples behind μ̂
    # Lemma 4.3's parts share the held-out examples: its slack's se is the worst case, the sum of the parts'
    check = lemma_4_3(evaluation, tau(world.prior), SMALL.level, SMALL.verdict_level)
    r = tau(world.prior) / (1.0 - tau(world.prior))
    parts = (evaluation.estimate("diff_minus_mean", SMALL.verdict_level).se
             + r * evaluation.estimate("L_un_same", SMALL.verdict_level).se)
    assert check.slack.se == pytest.approx(parts, rel=1e-12)


def test_a_class_with_one_held_out_example_is_refused_in_one_line():
    generator = torch.Generator().manual_seed(0)
    labels = torch.tensor([0] * 20 + [1] * 3)
    assignment = np.array([0] * 10 + [1] * 5 + [2] * 5 + [0, 1, 2])
    world = FiniteWorld(torch.randn(23, 2, generator=generator), labels.numpy(), assignment)
    with pytest.raises(ValueError, match="class 1 has 1 held-out example"):
        evaluate_encoder(IdentityEncoder(), world, SMALL.model_copy(update={"task_classes": [2]}), seed=0)


def test_the_upper_side_of_s_f_is_log_normal_and_never_lowered_by_a_bias():
    z = critical(0.95, None)
    lower = intraclass_deviation(torch.randn(2, 12, 3, generator=torch.Generator().manual_seed(0), dtype=F64),
                                 np.array([0.5, 0.5]), 20, torch.Generator().manual_seed(1), 0.95).lower_side
    down = Deviation(lower, plug_in=2.0, plug_in_se=0.1, plug_in_bias=-0.05, n=24).upper_side(0.95)
    assert down.upper == pytest.approx(2.05 * math.exp(z * 0.1 / 2.0), rel=1e-12)
    up = Deviation(lower, plug_in=2.0, plug_in_se=0.1, plug_in_bias=+0.05, n=24).upper_side(0.95)
    assert up.upper == pytest.approx(2.0 * math.exp(z * 0.1 / 2.0), rel=1e-12)  # an upward bias is ignored
    assert up.upper > 2.0 + z * 0.1  # the log scale widens the right side
    assert up.at_level(0.95).upper == pytest.approx(up.upper, rel=1e-12)  # combine keeps it at its level


def test_s_f_lower_side_counts_a_class_of_fewer_than_four_points_as_zero():
    generator = torch.Generator().manual_seed(4)
    pool = torch.randn(2, 10, 3, generator=generator, dtype=F64)
    prior = np.array([0.5, 0.5])
    both = intraclass_deviation(pool, prior, 10, torch.Generator().manual_seed(5), 0.95, torch.tensor([10, 10]))
    short = intraclass_deviation(pool, prior, 10, torch.Generator().manual_seed(5), 0.95, torch.tensor([10, 3]))
    only_first = intraclass_deviation(pool[:1], np.array([1.0]), 10, torch.Generator().manual_seed(5), 0.95)
    # ν = (½, ½): the short class adds nothing to the lower side, the full class its half share
    assert short.lower_side.value == pytest.approx(0.5 * only_first.lower_side.value, rel=1e-12)
    assert short.lower_side.value < both.lower_side.value
    assert short.plug_in > 0.5 * only_first.plug_in  # the plug-in still sees the short class
    with pytest.raises(ValueError, match="at least 2 points"):
        intraclass_deviation(pool, prior, 10, torch.Generator().manual_seed(5), 0.95, torch.tensor([10, 1]))
