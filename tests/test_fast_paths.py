"""Each fast path of issue 15 against the slow reference it replaced (docs/benchmarks.md).

Every tolerance below comes from the arithmetic: paths that do the same operations in the same order
must agree exactly; paths that reassociate sums agree to a few units of rounding of the dtype; fits
stopped at a gradient tolerance agree to what that tolerance determines.
"""

import math

import numpy as np
import pytest
import torch

from preadapt.adapt import linear
from preadapt.adapt.base import AdaptTask, TaskPoints
from preadapt.adapt.frozen import LinearAdapter, MeanAdapter
from preadapt.adapt.mean_classifier import MeanClassifier
from preadapt.estimate import quantities
from preadapt.estimate.adaptation import draw_task_points, encode
from preadapt.objectives import OBJECTIVES, encode_tuples
from preadapt.objectives.losses import cross_entropy, logistic, margins_from_scores
from preadapt.pretrain import PretrainConfig, pretrain
from preadapt.worlds import WORLDS, draw_tuples
from preadapt.worlds.finite import FiniteWorld
from preadapt.worlds.gaussian import Warp

F64 = torch.float64


def _tasks(P=12, n=60, d=5, K=3, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, K, (P, n), generator=g)
    means = 1.5 * torch.randn(K, d, generator=g, dtype=F64)
    features = (torch.randn(P, n, d, generator=g, dtype=F64) + means[labels]).to(dtype)
    return features, labels


def _autograd(loss):
    """The same loss as a function object the closed forms do not recognise: ``_fit_heads`` then takes
    its generic path, autograd through the margins (the path before issue 15)."""
    return lambda margins: loss(margins)


@pytest.mark.parametrize("K", [2, 3, 7])
@pytest.mark.parametrize("loss", [cross_entropy, logistic])
@pytest.mark.parametrize("bias", [True, False])
def test_closed_form_heads_equal_the_autograd_fit(K, loss, bias):
    # both minimise the same strictly convex objective (penalty > 0) to max|∇| ≤ 1e-10 in float64:
    # the minimisers then agree to ‖∇‖/λ ≤ sqrt(K·d)·1e-10/1e-2 ≈ 1e-7 (strong convexity)
    features, labels = _tasks(K=K)
    penalty = torch.tensor([1e-2, 1e-1, 1.0], dtype=F64).expand(features.shape[0], 3)
    fast = linear._fit_heads(features, labels, K, loss, penalty, bias, None, None, 500, 1e-10)
    slow = linear._fit_heads(features, labels, K, _autograd(loss), penalty, bias, None, None, 500, 1e-10)
    torch.testing.assert_close(fast[0], slow[0], rtol=0, atol=1e-6)
    if bias:
        torch.testing.assert_close(fast[1], slow[1], rtol=0, atol=1e-6)


def test_margins_by_gather_equal_the_masked_margins():
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(4, 30, 6, generator=g, dtype=F64)
    labels = torch.randint(0, 6, (4, 30), generator=g)
    own = scores.gather(-1, labels.unsqueeze(-1))
    keep = torch.arange(6) != labels.unsqueeze(-1)
    reference = (own - scores)[keep].reshape(4, 30, 5)  # the boolean-mask formula it replaced
    assert torch.equal(margins_from_scores(scores, labels), reference)  # the same subtractions


def test_the_linear_adapter_in_float32_measures_what_float64_measures():
    # the adapter fits in float32 (FIT_DTYPE) and measures in float64; against a float64 fit the test
    # losses differ only by what the shared gradient tolerance leaves open: we require 1e-3 absolute,
    # about 1 % of the half-width of an L_adapt interval over these 40 tasks (≈ 0.1)
    features, labels = _tasks(P=40, n=240, d=8, K=4, seed=3)
    train = TaskPoints(features[:, :120], labels[:, :120])
    val = TaskPoints(features[:, 120:180], labels[:, 120:180])
    test = TaskPoints(features[:, 180:], labels[:, 180:])
    task = AdaptTask(train, val, 4, None, None, logistic, False, None)
    heads32 = LinearAdapter((1e-3, 1e-2, 1e-1)).fit(task)
    probe64 = linear.LinearProbe(penalties=(1e-3, 1e-2, 1e-1), tol=1e-4, max_iter=200).fit(
        train.features, train.labels, val.features, val.labels, num_classes=4)
    assert heads32.weights.dtype == F64
    loss32 = cross_entropy(margins_from_scores(heads32.scores(test), test.labels)).mean(-1)
    loss64 = cross_entropy(margins_from_scores(probe64.decision_function(test.features), test.labels)).mean(-1)
    assert float((loss32 - loss64).abs().mean()) < 1e-3
    assert float((loss32.mean() - loss64.mean()).abs()) < 1e-3


def test_the_batched_mean_adapter_equals_one_mean_classifier_per_task():
    features, labels = _tasks(P=7, n=40, K=4, seed=2)
    labels[:, :4] = torch.arange(4)  # every class present in every task
    task = AdaptTask(TaskPoints(features, labels), TaskPoints(features, labels), 4, None, None, logistic, False, None)
    batched = MeanAdapter().fit(task).weights
    loop = torch.stack([MeanClassifier().fit(x, y, num_classes=4).means_ for x, y in zip(features, labels)])
    assert torch.equal(batched, loop)  # the same sums in the same order


def test_the_mean_adapter_names_a_task_without_a_class():
    features, labels = _tasks(P=3, n=10, K=3)
    labels[1] = 0
    task = AdaptTask(TaskPoints(features, labels), TaskPoints(features, labels), 3, None, None, logistic, False, None)
    with pytest.raises(ValueError, match="task 1 has no training point of class 1"):
        MeanAdapter().fit(task)


def _deviation_loop(pool, prior, replicates, generator, level):
    """intraclass_deviation's statistic one replicate at a time, as before issue 15 (all classes full)."""
    classes, m, d = pool.shape
    nu = torch.tensor(prior ** 2 / (prior ** 2).sum())
    first = (torch.arange(m) < m // 2).to(F64).expand(classes, m)
    norms = pool.norm(dim=-1)

    def moments(w):
        total = w.sum(-1)
        weighted = pool * w[..., None]
        mean = weighted.sum(1) / total[:, None]
        return total, mean, weighted.transpose(1, 2) @ pool - total[:, None, None] * mean[:, :, None] * mean[:, None, :]

    def statistic(w, directions=None):
        (ta, ma, sa), (tb, mb, sb) = moments(w * first), moments(w * (1 - first))
        ca, cb = sa / (ta - 1)[:, None, None], sb / (tb - 1)[:, None, None]
        if directions is None:
            directions = torch.linalg.eigh(ca)[1][..., -1], torch.linalg.eigh(cb)[1][..., -1]
        va, vb = directions
        held = 0.5 * (torch.einsum("cd,cde,ce->c", va, cb, va) + torch.einsum("cd,cde,ce->c", vb, ca, vb))
        total = ta + tb
        gap = ma - mb
        scatter = sa + sb + (ta * tb / total)[:, None, None] * gap[:, :, None] * gap[:, None, :]
        top = torch.linalg.eigvalsh(scatter / (total - 1)[:, None, None])[..., -1]
        norm = (w * norms).sum(-1) / total
        return float((nu * held.clamp_min(0).sqrt() * norm).sum()), float((nu * top.clamp_min(0).sqrt() * norm).sum()), \
            directions

    *values, directions = statistic(torch.ones(classes, m, dtype=F64))
    reps = np.array([statistic(torch.poisson(torch.ones(classes, m, dtype=F64), generator=generator), directions)[:2]
                     for _ in range(replicates)])
    return values, reps.std(axis=0, ddof=1), reps[:, 1].mean() - values[1]


@pytest.mark.parametrize("chunk_bytes", [quantities.BOOTSTRAP_CHUNK_BYTES, 1])  # outer products; one at a time
def test_the_batched_bootstrap_of_s_f_equals_the_replicate_loop(monkeypatch, chunk_bytes):
    # the same Poisson weights (drawn replicate after replicate from one generator) and the same
    # statistic; batching reassociates the sums, so agreement to float64 rounding (1e-9 relative)
    monkeypatch.setattr(quantities, "BOOTSTRAP_CHUNK_BYTES", chunk_bytes)
    g = torch.Generator().manual_seed(4)
    pool = torch.randn(5, 40, 3, generator=g, dtype=F64) * torch.tensor([2.0, 1.0, 0.5], dtype=F64)
    prior = np.array([0.3, 0.25, 0.2, 0.15, 0.1])
    values, se, bias = _deviation_loop(pool, prior, 30, torch.Generator().manual_seed(5), 0.95)
    deviation = quantities.intraclass_deviation(pool, prior, 30, torch.Generator().manual_seed(5), 0.95)
    assert deviation.lower_side.value == pytest.approx(values[0], rel=1e-9)
    assert deviation.plug_in == pytest.approx(values[1], rel=1e-9)
    assert deviation.lower_side.se == pytest.approx(se[0], rel=1e-6)
    assert deviation.plug_in_se == pytest.approx(se[1], rel=1e-6)
    assert deviation.plug_in_bias == pytest.approx(bias, rel=1e-6, abs=1e-12)


def test_the_sigmoid_warp_is_the_tanh_warp():
    # tanh(u) = 2σ(2u) − 1 exactly; in float32 the two formulas differ by rounding: a few ulps of the
    # output's scale (|x| ≲ 20 here, float32 ulp ≈ 2e-6 there)
    g = torch.Generator().manual_seed(6)
    warp = Warp(16, 1.7, 2.0, g)
    z = 3.0 * torch.randn(10_000, 16, generator=g)
    reference = z.double() + warp.strength * warp.scale * torch.tanh(
        z.double() @ warp.inner.double().T / warp.scale + warp.bias.double()) @ warp.outer.double().T
    assert float((warp(z).double() - reference).abs().max()) < 2e-5


def test_encoding_each_distinct_example_once_gives_the_same_task_points():
    g = torch.Generator().manual_seed(7)
    world = FiniteWorld(torch.randn(60, 4, generator=g), [c for c in range(3) for _ in range(20)],
                        [0, 0, 1, 2] * 15)
    encoder = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).eval()
    tasks = torch.tensor([[0, 1], [1, 2], [0, 2]])
    drawn = draw_task_points(encoder, world, tasks, 30, torch.Generator().manual_seed(8), 64, "cpu")
    direct = encode(encoder, world.take(drawn.ids.reshape(-1)), 64, "cpu").view(drawn.features.shape)
    assert drawn.ids.reshape(-1).unique().numel() < drawn.ids.numel()  # repeats: the case being tested
    # a row's features do not depend on the other rows of its block (no batch statistics in eval mode);
    # the matrix products may block rows differently: agreement to float32 rounding of f
    torch.testing.assert_close(drawn.features, direct, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("negatives, block_size", [(1, 1), (3, 2)])
def test_pretraining_batches_encode_what_encode_tuples_encodes(negatives, block_size):
    g = torch.Generator().manual_seed(9)
    world = WORLDS.build(WORLDS.parse({"kind": "gaussian", "classes": 6, "dim": 5}), g)
    tuples = draw_tuples(world, 50, g, negatives=negatives, block_size=block_size)
    encoder = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3))
    from preadapt.pretrain import _Batches  # the layout under test

    index = torch.randperm(50, generator=g)[:17]
    fast, slow = _Batches(tuples, "cpu").encode(encoder, index), encode_tuples(encoder, tuples[index])
    for name in ("anchor", "positives", "negatives", "anchor_class", "negative_class"):
        # with b = k = 1 the rows reach the encoder in the same order: the same numbers; otherwise
        # float32 rounding of the products at most
        torch.testing.assert_close(getattr(fast, name), getattr(slow, name), rtol=1e-6, atol=1e-6)
        if negatives == block_size == 1:
            assert torch.equal(getattr(fast, name), getattr(slow, name))


@pytest.mark.parametrize("K", [2, 4])
def test_closed_form_smoothed_hinge_stages_reach_the_autograd_stages_heads(monkeypatch, K):
    # the hinge's heads: smoothed stages (closed form now, autograd through the margins before), each
    # finished by the exact active-set solver; where it certifies the optimum (KKT) both give the unique
    # minimiser of the strictly convex penalised hinge problem, so the heads agree to the solver's
    # float64 resolution (its linear systems: 1e-8 with room)
    from preadapt.objectives.losses import hinge

    features, labels = _tasks(P=10, n=50, d=4, K=K, seed=11)
    penalty = torch.tensor([1e-2, 1e-1], dtype=F64).expand(10, 2)
    fast = linear._fit_heads(features, labels, K, hinge, penalty, True, None, None, 500, 1e-8)
    smoothed, solver = linear._KINKED[hinge]
    monkeypatch.setitem(linear._KINKED, hinge, (lambda margins, smoothing: smoothed(margins, smoothing), solver))
    slow = linear._fit_heads(features, labels, K, hinge, penalty, True, None, None, 500, 1e-8)
    torch.testing.assert_close(fast[0], slow[0], rtol=0, atol=1e-8)
    torch.testing.assert_close(fast[1], slow[1], rtol=0, atol=1e-8)
