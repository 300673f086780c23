"""The few-shot mean classifier (acc_avg, adapter mean, with shots): μ̂ of each sampled task from its
own s training points, scored on the same test points as the linear probe, ties counted as errors."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from preadapt.encoders import IdentityEncoder
from preadapt.estimate import EvaluateConfig, evaluate_encoder
from preadapt.adapt import AdaptTask, MeanAdapter, TaskPoints
from preadapt.estimate import adaptation
from preadapt.estimate.adaptation import task_mean
from preadapt.worlds import WORLDS, FiniteWorld
from preadapt.worlds.sampling import make_generator


def _tie_world() -> FiniteWorld:
    """Three classes of small integer points, the zero vector in each: x = 0 scores 0 against every
    mean, a tie, and integer means tie on other points too."""
    patterns = {0: [(1, 0), (2, 0), (0, 0), (1, 1)], 1: [(0, 1), (0, 2), (0, 0), (1, 1)],
                2: [(1, 1), (2, 2), (0, 0), (2, 0)]}
    features = [point for c in range(3) for point in patterns[c] * 10]
    labels = np.repeat(np.arange(3), 40)
    return FiniteWorld.from_arrays(torch.tensor(features, dtype=torch.float64), labels,
                                   generator=torch.Generator().manual_seed(0), prior=[0.5, 0.3, 0.2])


def _reference_task_accuracy(points: torch.Tensor, shots: int, test_start: int) -> tuple[list[bool], int]:
    """One task, by loops: points (K, s + v + t, d). Class means of the first ``shots`` points of each
    class, argmax of inner products over the test points, a tie for the top counted as an error.
    Returns whether each test point (class by class) is classified correctly, and the number of ties."""
    K, _, d = points.shape
    means = [[sum(float(points[a, j, i]) for j in range(shots)) / shots for i in range(d)] for a in range(K)]
    correct, ties = [], 0
    for a in range(K):
        for j in range(test_start, points.shape[1]):
            x = [float(v) for v in points[a, j]]
            scores = [sum(m * v for m, v in zip(means[b], x)) for b in range(K)]
            others = max(scores[b] for b in range(K) if b != a)
            correct.append(scores[a] > others)
            ties += scores[a] == others
    return correct, ties


def test_few_shot_mean_rows_equal_a_loop_over_the_probes_tasks(monkeypatch):
    world = _tie_world()
    shots, val, tst, tasks = 3, 2, 6, 25
    config = EvaluateConfig(samples=200, mean_samples=10, test_per_class=tst, task_classes=[2, 3], top_r=[1],
                            probe_tasks=tasks, probe_shots=shots, probe_val=val, star_samples=5, bootstrap=10)
    drawn = []  # the task points the pipeline drew: the probe's are those with sizes (shots, val, tst)

    def spy(encoder, views, tasks, sizes, generator, block, device, keep_inputs=False):
        train, validation, tests = split_task_points(encoder, views, tasks, sizes, generator, block, device, keep_inputs)
        points = torch.cat([train.features, validation.features, tests["test"].features], dim=2)
        drawn.append((sizes, tasks.shape[1], points, tests["test"].ids))
        return train, validation, tests

    split_task_points = adaptation.draw_split_points
    monkeypatch.setattr(adaptation, "draw_split_points", spy)
    evaluation = evaluate_encoder(IdentityEncoder(), world, config, seed=4)
    rows = {m.context["task_classes"]: m for m in evaluation.measurements
            if m.quantity == "acc_avg" and m.context.get("adapter") == "mean" and m.context.get("shots") is not None}
    assert set(rows) == {2, 3}
    total_ties = 0
    for size, row in rows.items():
        assert row.context == dict(adapter="mean", task_classes=size, shots=shots, split="test")
        ((points, ids),) = [(p, i) for sizes, k, p, i in drawn if sizes == (shots, val, tst) and k == size]
        assert points.shape[:3] == (tasks, size, shots + val + tst) and ids.shape == (tasks, size, tst)
        reference = [_reference_task_accuracy(task, shots, shots + val) for task in points]
        total_ties += sum(t for _, t in reference)
        correct = torch.tensor([c for c, _ in reference], dtype=torch.float64)  # (P, K·t)
        # the scores are exact here (integer coordinates times correctly rounded means, one rounded
        # sum), so both sides see the same 0/1 values; their means (exact integer sums) differ only by
        # the few roundings of a division and Chan's update: ≲ 2 ulp of a number ≤ 1, 4.4e-16
        assert row.estimate.value == pytest.approx(float(correct.mean()), abs=1e-15)
        # a finite world: test points repeat examples across tasks, so the interval is clustered by
        # example (and task), and n counts the distinct held-out examples the tasks drew
        assert row.estimate == task_mean(correct, ids.reshape(tasks, -1), config.level).clipped(0, 1)
        assert row.estimate.n == len(ids.unique()) and row.estimate.method == "cluster"
        # the probe's row comes from the same tasks and test points
        assert evaluation.get("acc_avg", adapter="linear", task_classes=size).n == len(ids.unique())
    assert total_ties > 0  # the tie rule was exercised


def few_shot_mean_scores(train_x, train_y, test_x, classes):
    """The mean adapter's scores of test_x (P, m, d) after fitting on train_x (P, n, d), train_y (P, n)."""
    points = TaskPoints(train_x, train_y)
    task = AdaptTask(points, points, classes, None, None, None, False, torch.Generator())
    return MeanAdapter().fit(task).scores(TaskPoints(test_x, torch.zeros(test_x.shape[:2], dtype=torch.long)))


def test_few_shot_mean_scores_are_the_mean_classifier_of_each_task():
    generator = torch.Generator().manual_seed(0)
    train_x = torch.randn(4, 6, 3, generator=generator, dtype=torch.float64)
    train_y = torch.tensor([0, 0, 1, 1, 2, 2]).expand(4, 6)
    test_x = torch.randn(4, 5, 3, generator=generator, dtype=torch.float64)
    scores = few_shot_mean_scores(train_x, train_y, test_x, 3)
    assert scores.shape == (4, 5, 3)
    for p in range(4):
        means = torch.stack([train_x[p, 2 * a:2 * a + 2].mean(0) for a in range(3)])  # (K, d)
        # a dot product of d = 3 terms with Σ|terms| ≤ 6.2 here: each side within 3ε·6.2 ≈ 4e-15 of it
        torch.testing.assert_close(scores[p], test_x[p] @ means.T, rtol=0, atol=1e-14)
    # relabelling the classes permutes the score columns
    permutation = torch.tensor([2, 0, 1])
    relabelled = few_shot_mean_scores(train_x, permutation[train_y], test_x, 3)
    # the means are bitwise the same rows, but a matmul need not round a column the same wherever it
    # sits (kernels treat edge columns apart): the bound above, not 0
    torch.testing.assert_close(relabelled[..., permutation], scores, rtol=0, atol=1e-14)


@pytest.mark.parametrize("shots", [50, 100])
def test_many_shots_agree_with_the_population_mean_classifier(shots):
    """With s ≥ 50 points per class the task means are close to the population's μ̂ (2000 points per
    class), so the few-shot AVG-2 agrees with the exact AVG-2 row within their intervals."""
    world = WORLDS.build(WORLDS.parse({"kind": "gaussian", "classes": 6, "dim": 5, "separation": 2.5,
                                       "warp": False}), make_generator(0, "world"))
    config = EvaluateConfig(samples=200, mean_samples=2000, test_per_class=100, task_classes=[2], top_r=[1],
                            probe_tasks=200, probe_shots=shots, probe_val=10, star_samples=20, bootstrap=10)
    evaluation = evaluate_encoder(IdentityEncoder(), world, config, seed=2)
    population = evaluation.get("acc_avg", adapter="mean", task_classes=2, shots=None)
    few_shot = evaluation.get("acc_avg", adapter="mean", task_classes=2, shots=shots)
    assert 0.6 < population.value < 0.99  # a task the classifier neither fails nor always solves
    z = stats.norm.ppf(0.9995)
    assert abs(few_shot.value - population.value) <= z * math.hypot(few_shot.se, population.se), (few_shot,
                                                                                                 population)
