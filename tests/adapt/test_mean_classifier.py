"""MeanClassifier against scikit-learn's fitted class means, and its inner-product scoring."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.neighbors import NearestCentroid

from preadapt.adapt.mean_classifier import MeanClassifier


def gaussian_classes(seed: int, classes: int = 5, per_class: int = 30, dim: int = 4):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(per_class)
    labels = labels[torch.randperm(labels.numel(), generator=g)]  # (n,)
    centres = 3.0 * torch.randn(classes, dim, generator=g, dtype=torch.float64)  # (C, d)
    Z = centres[labels] + torch.randn(labels.numel(), dim, generator=g, dtype=torch.float64)  # (n, d)
    return Z, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_means_equal_nearest_centroid(seed):
    Z, y = gaussian_classes(seed)
    clf = MeanClassifier().fit(Z, y)
    oracle = NearestCentroid().fit(Z.numpy(), y.numpy())
    np.testing.assert_allclose(clf.means_.numpy(), oracle.centroids_, rtol=0, atol=1e-10)
    assert clf.means_.dtype == torch.float64
    assert clf.counts_.tolist() == torch.bincount(y).tolist()


def test_scores_by_inner_product_not_distance():
    # By design ([Arora19]): the score is μ_cᵀz, not −‖z − μ_c‖. With μ_0 = (1, 0) and
    # μ_1 = (3, 0), the point z = (1, 0) sits on μ_0 (nearest centroid: class 0) but has the larger
    # inner product with μ_1 (3 > 1: the mean classifier says class 1).
    Z = torch.tensor([[0.5, 0.1], [1.5, -0.1], [2.0, 0.1], [4.0, -0.1]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    z = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    clf = MeanClassifier().fit(Z, y)
    assert clf.means_.tolist() == [[1.0, 0.0], [3.0, 0.0]]
    assert clf.predict(z).tolist() == [1]
    assert NearestCentroid().fit(Z.numpy(), y.numpy()).predict(z.numpy()).tolist() == [0]
    torch.testing.assert_close(clf.decision_function(z), torch.tensor([[1.0, 3.0]], dtype=torch.float64))


def test_empty_class_is_named():
    Z = torch.randn(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="class 2 has no point"):
        MeanClassifier().fit(Z, torch.tensor([0, 1, 3, 3]))
    with pytest.raises(ValueError, match="class 2 has no point"):
        MeanClassifier().fit(Z, torch.tensor([0, 1, 1, 0]), num_classes=3)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        MeanClassifier().fit(Z, torch.tensor([0, 1, 2, 0]), num_classes=2)


def test_keeps_dtype_of_features():
    Z, y = gaussian_classes(0)
    assert MeanClassifier().fit(Z.float(), y).means_.dtype == torch.float32


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(seed=st.integers(0, 2**16), classes=st.integers(2, 6))
def test_label_permutation_permutes_means(seed, classes):
    Z, y = gaussian_classes(seed, classes=classes, per_class=3)
    perm = torch.randperm(classes, generator=torch.Generator().manual_seed(seed))  # old label → new
    plain = MeanClassifier().fit(Z, y)
    relabelled = MeanClassifier().fit(Z, perm[y])
    torch.testing.assert_close(relabelled.means_[perm], plain.means_, rtol=0, atol=1e-12)
    assert torch.equal(perm[plain.predict(Z)], relabelled.predict(Z))


def test_deterministic():
    Z, y = gaussian_classes(3)
    first, second = MeanClassifier().fit(Z, y), MeanClassifier().fit(Z, y)
    assert torch.equal(first.means_, second.means_)
    assert torch.equal(first.decision_function(Z), second.decision_function(Z))
