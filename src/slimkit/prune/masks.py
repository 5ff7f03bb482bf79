"""What pruning reads from its masks: the non-zero pattern and the sparsity of layers (the masks themselves,
which survive training, are :mod:`slimkit.graph.masks`)."""
from __future__ import annotations

from torch import Tensor, nn

from ..graph.masks import make_permanent


def current_masks(layers: dict[str, nn.Module]) -> dict[str, Tensor]:
    """The non-zero pattern of each layer's effective weight."""
    return {name: m.weight.detach() != 0 for name, m in layers.items()}


def sparsity(layers: dict[str, nn.Module]) -> float:
    """Fraction of zero weights over the layers."""
    total = sum(m.weight.numel() for m in layers.values())
    zeros = sum(int((m.weight == 0).sum()) for m in layers.values())
    return zeros / max(total, 1)


def bake(layers: dict[str, nn.Module], step: str) -> list[str]:
    """Make the masks of ``layers`` permanent; a note for each layer that must keep its mask as a parametrization."""
    return [f"{step}: {name} keeps its mask as a parametrization (its other parametrizations, e.g. spectral_norm, "
            "cannot store the zeros exactly)" for name in make_permanent(layers)]
