"""Pruning: importance criteria, unstructured masks, structured channel removal, N:M sparsity, one-shot SparseGPT
and Wanda."""
from .channel import MAX_RATIO, ChannelPrune, ChannelPruner
from .importance import Importance, Magnitude, RandomImportance, Snip, Taylor, criterion, ranked_masks
from .nm import NMSparsity
from .one_shot import OneShotPrune
from .surgery import shrink
from .unstructured import MagnitudePrune

__all__ = [
    "ChannelPrune",
    "ChannelPruner",
    "Importance",
    "MAX_RATIO",
    "MagnitudePrune",
    "Magnitude",
    "NMSparsity",
    "OneShotPrune",
    "RandomImportance",
    "Snip",
    "Taylor",
    "criterion",
    "ranked_masks",
    "shrink",
]
