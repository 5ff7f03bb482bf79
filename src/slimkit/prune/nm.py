"""N:M semi-structured sparsity (``nm_sparsity``): keep the n largest of every m consecutive weights."""
from __future__ import annotations

import dataclasses
import warnings

import torch
from torch import Tensor, nn

from ..graph.layers import compute_weight, is_conv1d
from ..graph.masks import set_masks
from ..recipe import StepConfig, check, register
from .layers import weighted_layers
from .masks import bake


@dataclasses.dataclass
class NMSparsity(StepConfig):
    """Zero all but the ``n`` largest-magnitude weights in every group of ``m`` along each weight row.

    Rows are a Linear's input features or a Conv's flattened (in_channels x kernel) weights. Layers whose
    row length is not a multiple of ``m`` are skipped with a warning naming them.

    Args:
        n: weights kept per group (2 for the 2:4 pattern of sparse tensor cores).
        m: group size.
        ignore: module names left dense (a name covers the modules inside it).
    """

    key = "nm_sparsity"
    n: int = 2
    m: int = 4
    ignore: tuple[str, ...] = ()

    def __post_init__(self):
        check(self.m >= 2, "m", f"must be >= 2, got {self.m}")
        check(1 <= self.n < self.m, "n", f"must be in [1, m), got n={self.n}, m={self.m}")


def nm_mask(weight: Tensor, n: int, m: int) -> Tensor:
    """Boolean mask keeping the ``n`` largest |w| in each run of ``m`` weights along a row."""
    groups = weight.detach().abs().reshape(-1, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(1, groups.topk(n, dim=1).indices, True)
    return keep.view_as(weight)


@register(NMSparsity)
def nm_sparsity(model: nn.Module, cfg: NMSparsity, ctx) -> nn.Module:
    """Apply N:M masks to every Linear/Conv weight whose rows split into groups of ``m``."""
    layers, masks = weighted_layers(model, cfg.ignore, ctx.notes, "nm_sparsity"), {}
    for name, layer in layers.items():
        rows = compute_weight(layer)  # a Conv1D's rows are its columns
        if rows[0].numel() % cfg.m:
            message = f"nm_sparsity: skipped {name}: its rows of {rows[0].numel()} weights do not split into groups of {cfg.m}"
            warnings.warn(message, stacklevel=2)
            ctx.notes.append(message)
            continue
        mask = nm_mask(rows, cfg.n, cfg.m)
        masks[name] = mask.T if is_conv1d(layer) else mask
    done = {name: layers[name] for name in masks}
    set_masks(done, masks)
    ctx.notes += bake(done, "nm_sparsity")
    ctx.notes.append(
        f"nm_sparsity: {cfg.n}:{cfg.m} masks on {len(done)} layers, stored as dense tensors with zeros; the "
        "semi-structured sparse kernel (torch.sparse.to_sparse_semi_structured) is CUDA-only and was not used")
    return model
