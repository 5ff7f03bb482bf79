"""Pruning: importance criteria, unstructured masks, structured channel removal, N:M sparsity."""
from .channel import ChannelPrune, ChannelPruner
from .importance import Importance, Magnitude, RandomImportance, Snip, Taylor, criterion, ranked_masks
from .nm import NMSparsity
from .unstructured import MagnitudePrune

__all__ = [
    "ChannelPrune",
    "ChannelPruner",
    "Importance",
    "MagnitudePrune",
    "Magnitude",
    "NMSparsity",
    "RandomImportance",
    "Snip",
    "Taylor",
    "criterion",
    "ranked_masks",
]
