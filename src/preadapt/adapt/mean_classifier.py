"""The mean classifier W^μ of [Arora19] (section 3 of THEORY.md).

Row c of W^μ is the class mean μ_c = E_{x~D_c} f(x), and the score of class c is the inner product
μ_cᵀf(x). This is not scikit-learn's ``NearestCentroid``, which predicts the closest mean: the two
agree only when all means have the same norm. Compare fitted means with it, not predictions.
"""

from __future__ import annotations

import torch


class MeanClassifier:
    """Mean classifier of [Arora19]: ``means_: (C, d)``, score(x, c) = μ_cᵀ z (inner product).

    ``fit`` estimates μ_c by plug-in means of the representations; with few points per class
    (the μ-5 protocol of THEORY.md section 4) the means and the loss L^μ_sup are noisy.

    >>> Z = torch.tensor([[2.0, 0.0], [4.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    >>> clf = MeanClassifier().fit(Z, torch.tensor([0, 0, 1]))
    >>> clf.means_
    tensor([[3., 0.],
            [0., 1.]], dtype=torch.float64)
    >>> clf.counts_
    tensor([2, 1])
    >>> clf.predict(torch.tensor([[1.0, 1.0], [0.1, 1.0]], dtype=torch.float64))
    tensor([0, 1])
    """

    def fit(self, Z: torch.Tensor, y: torch.Tensor, num_classes: int | None = None) -> "MeanClassifier":
        """Learn the class means from ``Z: (n, d)`` and labels ``y: (n,)`` in [0, C).

        ``num_classes`` (C) defaults to ``max(y) + 1``; every class needs at least one point.
        The means keep the dtype of ``Z`` (use float64 for estimates that enter a bound).
        """
        if Z.dim() != 2 or not Z.is_floating_point():
            raise ValueError(f"Z must be a floating (n, d) tensor; got shape {tuple(Z.shape)}, dtype {Z.dtype}")
        if y.shape != Z.shape[:1]:
            raise ValueError(f"y must have shape ({Z.shape[0]},) to match Z; got {tuple(y.shape)}")
        if y.numel() == 0:
            raise ValueError("Z and y are empty; the mean classifier needs at least one point per class")
        y = y.long()
        num_classes = int(y.max()) + 1 if num_classes is None else int(num_classes)
        if int(y.min()) < 0 or int(y.max()) >= num_classes:
            raise ValueError(f"labels must lie in [0, {num_classes}); got range [{int(y.min())}, {int(y.max())}]")
        counts = torch.bincount(y, minlength=num_classes)  # (C,)
        empty = (counts == 0).nonzero().flatten().tolist()
        if empty:
            raise ValueError(
                f"class {empty[0]} has no point in y (empty classes: {empty}); every class in "
                f"[0, {num_classes}) needs at least one, or pass a smaller num_classes"
            )
        sums = torch.zeros(num_classes, Z.shape[1], dtype=Z.dtype, device=Z.device).index_add_(0, y, Z)  # (C, d)
        self.means_ = sums / counts.unsqueeze(1).to(Z.dtype)
        self.counts_ = counts
        return self

    def decision_function(self, Z: torch.Tensor) -> torch.Tensor:
        """Scores ``Z @ means_.T``: ``Z: (..., m, d)`` → ``(..., m, C)``."""
        return Z.to(self.means_.dtype) @ self.means_.T

    def predict(self, Z: torch.Tensor) -> torch.Tensor:
        """The highest-scoring class (the first one on a tie): ``(..., m, d)`` → ``(..., m)``."""
        return self.decision_function(Z).argmax(dim=-1)

    def score(self, Z: torch.Tensor, y: torch.Tensor) -> float:
        """Accuracy of ``predict(Z)`` against ``y: (m,)``."""
        return float((self.predict(Z) == y).double().mean())
