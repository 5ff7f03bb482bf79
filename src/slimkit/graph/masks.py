"""Weight masks that survive training (a parametrization), then become plain tensors with zeros.

Other parametrizations of a weight (``weight_norm``, ``spectral_norm``) are kept: the mask is applied after
them, and only the mask is ever removed.
"""
from __future__ import annotations

import torch
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
    """Attach (or replace) the weight mask of each named layer, after any parametrization it already has."""
    for name, mask in masks.items():
        module = layers[name]
        mask = mask.to(module.weight.dtype)
        index = _mask_index(module)
        if index is None:
            parametrize.register_parametrization(module, "weight", WeightMask(mask))
        else:
            module.parametrizations.weight[index].mask = mask


def make_permanent(layers: dict[str, nn.Module]) -> list[str]:
    """Bake masks into the weights: plain parameters with zeros, no mask buffers left.

    A layer with other parametrizations keeps them, and the masked weight is stored through them (their
    ``right_inverse``). Where they cannot reproduce it (``spectral_norm`` rescales what it stores; a
    ``weight_norm`` slice that is all zeros divides 0 by 0) the mask stays as a parametrization; the names of
    those layers are returned.
    """
    kept = []
    for name, module in layers.items():
        index = _mask_index(module)
        if index is None:
            continue
        chain = module.parametrizations.weight
        if len(chain) == 1:
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        elif not _store_through(module, chain, index):
            kept.append(name)
    return kept


def _mask_index(module: nn.Module) -> int | None:
    if not parametrize.is_parametrized(module, "weight"):
        return None
    return next((i for i, p in enumerate(module.parametrizations.weight) if isinstance(p, WeightMask)), None)


@torch.no_grad()
def _store_through(module: nn.Module, chain: nn.ModuleList, index: int) -> bool:
    """Drop the mask at ``index`` and assign the masked weight through the rest of ``chain``; put the mask
    and the originals back (and return False) when the other parametrizations cannot reproduce it."""
    masked = module.weight.detach().clone()
    originals = {n: t.detach().clone() for n, t in chain.named_parameters(recurse=False)}
    mask = chain[index]
    del chain[index]
    try:
        module.weight = masked
        stored = module.weight
        if torch.equal(stored == 0, masked == 0) and torch.allclose(stored, masked, rtol=1e-4, atol=1e-7):
            return True
    except (NotImplementedError, RuntimeError, ValueError):  # a parametrization without a usable right_inverse
        pass
    for n, t in originals.items():
        getattr(chain, n).copy_(t)
    chain.insert(index, mask)
    return False
