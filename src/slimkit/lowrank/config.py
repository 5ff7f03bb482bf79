"""The ``low_rank`` step config."""
from __future__ import annotations

import dataclasses
from typing import Literal

from ..recipe import StepConfig, check


@dataclasses.dataclass
class LowRank(StepConfig):
    """Replace Linear and Conv2d layers with sequences of smaller layers (low-rank factorisation).

    Linear and 1x1 convolutions use truncated SVD; KxK convolutions use Tucker-2 (or CP) from TensorLy.
    A layer whose factorisation would cost at least as many MACs as the original is left alone and
    listed in the report notes.

    Args:
        conv: decomposition for KxK convolutions: ``tucker`` (Tucker-2 on the channel modes) or ``cp``.
        rank_by: how ranks are chosen: ``energy`` (smallest rank keeping ``energy`` of the squared
            singular values of each unfolding), ``macs`` (largest rank whose MACs are at most
            ``target_macs`` of the layer's), ``vbmf`` (empirical variational Bayes matrix factorisation)
            or ``fixed`` (``rank`` for every layer).
        energy: fraction of the squared Frobenius norm kept, in (0, 1].
        target_macs: fraction of each layer's MACs kept, in (0, 1).
        rank: the rank for ``rank_by: fixed``; it must not exceed the layer's channel counts.
        layers: module-name glob patterns (fnmatch) of layers to factorise; empty = every Linear and
            ungrouped Conv2d.
        round_to: chosen ranks are multiples of this (under ``macs`` the largest that fit ``target_macs``,
            under ``energy`` and ``vbmf`` rounded up; ``fixed`` ranks are kept as given). 8 suits onnxruntime's CPU convolutions, which
            work on blocks of 8 channels.
    """

    key = "low_rank"
    conv: Literal["tucker", "cp"] = "tucker"
    rank_by: Literal["energy", "macs", "vbmf", "fixed"] = "energy"
    energy: float = 0.9
    target_macs: float = 0.5
    rank: int | None = None
    layers: tuple[str, ...] = ()
    round_to: int = 1

    def __post_init__(self):
        check(0 < self.energy <= 1, "energy", f"must be in (0, 1], got {self.energy}")
        check(0 < self.target_macs < 1, "target_macs", f"must be in (0, 1), got {self.target_macs}")
        check(self.rank is None or self.rank >= 1, "rank", f"must be >= 1, got {self.rank}")
        check(self.round_to >= 1, "round_to", f"must be >= 1, got {self.round_to}")
        check(self.rank_by != "fixed" or self.rank is not None, "rank", "is required when rank_by is 'fixed'")
        check(self.rank is None or self.rank_by == "fixed", "rank", "is only used with rank_by: fixed; set rank_by: fixed or drop rank")
