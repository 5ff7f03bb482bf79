"""Weight masks that survive training (a parametrization), then become plain tensors with zeros."""
from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..train import WeightMask


def set_masks(layers: dict[str, nn.Module], masks: dict[str, Tensor]) -> None:
    """Attach (or replace) the weight mask of each named layer."""
    for name, mask in masks.items():
        module = layers[name]
        mask = mask.to(module.weight.dtype)
        if parametrize.is_parametrized(module, "weight"):
            module.parametrizations.weight[0].mask = mask
        else:
            parametrize.register_parametrization(module, "weight", WeightMask(mask))


def make_permanent(layers: dict[str, nn.Module]) -> None:
    """Bake masks into the weights: plain parameters with zeros, no mask buffers left."""
    for module in layers.values():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)


def current_masks(layers: dict[str, nn.Module]) -> dict[str, Tensor]:
    """The non-zero pattern of each layer's effective weight."""
    return {name: m.weight.detach() != 0 for name, m in layers.items()}


def sparsity(layers: dict[str, nn.Module]) -> float:
    """Fraction of zero weights over the layers."""
    total = sum(m.weight.numel() for m in layers.values())
    zeros = sum(int((m.weight == 0).sum()) for m in layers.values())
    return zeros / max(total, 1)
