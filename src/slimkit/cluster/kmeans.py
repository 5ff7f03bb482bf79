"""One-dimensional k-means (Lloyd) with linear or density-based initialisation."""
from __future__ import annotations

import torch
from torch import Tensor


def initial_centroids(values: Tensor, k: int, init: str) -> Tensor:
    """``linear``: evenly spaced in [min, max]; ``density``: evenly spaced quantiles of ``values``."""
    if init == "linear":
        return torch.linspace(float(values.min()), float(values.max()), k, dtype=values.dtype)
    ordered = values.sort().values
    positions = ((torch.arange(k, dtype=torch.float64) + 0.5) / k * len(ordered)).long()
    return ordered[positions]


def assign(values: Tensor, centroids: Tensor) -> Tensor:
    """Index of the nearest centroid for each value (``centroids`` sorted ascending)."""
    return torch.bucketize(values, (centroids[1:] + centroids[:-1]) / 2)


def kmeans_1d(values: Tensor, k: int, init: str = "linear", iterations: int = 50) -> tuple[Tensor, Tensor]:
    """Cluster a flat tensor into ``k`` groups: (sorted centroids, index of each value's centroid).

    Empty clusters keep their previous centroid; iteration stops once the centroids stop moving.
    """
    values = values.detach().flatten().float()
    centroids = initial_centroids(values, k, init).sort().values
    for _ in range(iterations):
        index = assign(values, centroids)
        counts = torch.bincount(index, minlength=k)
        sums = torch.zeros(k, dtype=values.dtype).index_add_(0, index, values)
        updated = torch.where(counts > 0, sums / counts.clamp_min(1), centroids).sort().values
        if torch.equal(updated, centroids):
            break
        centroids = updated
    return centroids, assign(values, centroids)
