"""Weight masks that survive training (a parametrization), then become plain tensors with zeros."""
from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils import parametrize

WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)  # the layers masks (and pruning) apply to


class WeightMask(nn.Module):
    """Parametrization ``weight = original * mask``: masked-out weights stay zero while the rest train."""

    def __init__(self, mask: Tensor):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, weight: Tensor) -> Tensor:
        return weight * self.mask


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
