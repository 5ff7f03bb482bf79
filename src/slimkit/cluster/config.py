"""The ``cluster`` step config."""
from __future__ import annotations

import dataclasses
from typing import Literal

from ..recipe import check
from ..train import FineTune


@dataclasses.dataclass
class Cluster(FineTune):
    """Share weights: k-means each layer's weights into ``2**bits`` centroids, store codebook + packed indices.

    The training fields (``epochs``, ``lr``, ``optimizer``, ...) are :class:`slimkit.FineTune`'s and
    fine-tune the centroids (and the remaining float parameters); ``epochs: 0`` skips fine-tuning.

    Args:
        bits: index width, 1..8: each layer gets ``2**bits`` shared values.
        init: centroid initialisation: ``linear`` (evenly spaced between min and max weight, keeps
            the rare large weights) or ``density`` (evenly spaced in the weights' CDF).
        layers: module-name glob patterns (fnmatch) to cluster; empty = every Linear, Conv and
            Embedding layer with more than ``2**bits`` weights.
        keep_zeros: weights that are exactly zero (pruned) stay zero: one index is reserved for an
            untrainable 0 in layers that have any.
    """

    key = "cluster"
    epochs: int = 0
    bits: int = 4
    init: Literal["linear", "density"] = "linear"
    layers: tuple[str, ...] = ()
    keep_zeros: bool = True

    @property
    def needs_data(self) -> bool:
        return self.epochs > 0

    def __post_init__(self):
        check(1 <= self.bits <= 8, "bits", f"must be in 1..8, got {self.bits}")
        check(self.epochs >= 0, "epochs", f"must be >= 0, got {self.epochs}")
        if self.epochs:
            super().__post_init__()
