"""scikit-learn's bundled 8x8 digits: a tiny, fast dataset for tests."""
from __future__ import annotations

import torch

from ..errors import require
from .task import Task


def load(test_fraction: float = 0.25) -> Task:
    """1797 8x8 digit images as (N, 1, 8, 8) floats in [0, 1]; a deterministic train/test split."""
    datasets = require("sklearn.datasets", "digits")
    bunch = datasets.load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).div_(16.0).unsqueeze(1)
    y = torch.tensor(bunch.target, dtype=torch.int64)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    n_test = int(len(x) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return Task("digits", (x[train], y[train]), (x[test], y[test]), "top1", 1, None)
