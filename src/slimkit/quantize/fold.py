"""Fold BatchNorm into the preceding convolution, found by tracing the model with torch.fx."""
from __future__ import annotations

import torch
from torch import fx, nn


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv, batchnorm) module names where a Conv2d's only consumer is a BatchNorm2d.

    Models that torch.fx cannot trace yield no pairs (they are quantized without folding).
    """
    try:
        graph = fx.Tracer().trace(model)
    except Exception:  # data-dependent control flow: fx cannot trace every model
        return []
    modules = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        src = node.args[0]
        if (isinstance(src, fx.Node) and src.op == "call_module" and isinstance(modules.get(src.target), nn.Conv2d)
                and len(src.users) == 1):
            pairs.append((src.target, node.target))
    return pairs


@torch.no_grad()
def fold_batchnorm(model: nn.Module, pairs: list[tuple[str, str]]) -> None:
    """Fold each BatchNorm's affine transform into its conv (which gains a bias) and drop the BatchNorm."""
    for conv_name, bn_name in pairs:
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        factor = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        conv.weight.mul_(factor.reshape(-1, 1, 1, 1))
        conv.bias = nn.Parameter(bn.bias + (bias - bn.running_mean) * factor)
        model.set_submodule(bn_name, nn.Identity())
