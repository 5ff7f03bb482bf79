"""Fold BatchNorm into the Conv or Linear layer that feeds it (pairs found by torch.fx or by module order)."""
from __future__ import annotations

import torch
from torch import fx, nn

from .layers import editable

LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def foldable(layer: nn.Module, bn: nn.Module, layers: tuple[type, ...] = LAYERS) -> bool:
    """True when ``bn`` (with running statistics) normalises exactly the output channels of ``layer``, one of
    ``layers`` (or a subclass computing like it) with a plain weight parameter to fold into."""
    if not editable(layer, layers) or not isinstance(bn, NORMS) or bn.running_mean is None:
        return False
    channels = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    return bn.num_features == channels


def graph_pairs(graph: fx.Graph, modules: dict[str, nn.Module], layers: tuple[type, ...] = LAYERS) -> list[tuple[str, str]]:
    """(layer, batchnorm) names in a traced graph where the layer's only consumer is the BatchNorm and
    each of the two modules is called exactly once."""
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in graph.nodes:
        src = node.args[0] if node.op == "call_module" and node.args else None
        if (isinstance(src, fx.Node) and src.op == "call_module" and len(src.users) == 1
                and calls[src.target] == 1 and calls[node.target] == 1
                and foldable(modules[src.target], modules[node.target], layers)):
            pairs.append((src.target, node.target))
    return pairs


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv, batchnorm) module names where a Conv2d's only consumer is a BatchNorm2d.

    Models that torch.fx cannot trace yield no pairs (they are quantized without folding).
    """
    try:
        graph = fx.Tracer().trace(model)
    except Exception:  # data-dependent control flow: fx cannot trace every model
        return []
    return graph_pairs(graph, dict(model.named_modules()), (nn.Conv2d,))


def sequential_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(layer, batchnorm) names of adjacent children of an nn.Sequential (no tracing needed: inside a
    Sequential a child's output goes to the next child only)."""
    pairs = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Sequential):
            children = list(module.named_children())
            for (a, layer), (b, bn) in zip(children, children[1:]):
                if foldable(layer, bn):
                    prefix = f"{name}." if name else ""
                    pairs.append((prefix + a, prefix + b))
    return pairs


@torch.no_grad()
def fold_into(layer: nn.Module, bn: nn.Module) -> None:
    """Scale ``layer``'s weight and set its bias so that ``layer`` alone computes ``bn(layer(x))`` (eval mode)."""
    factor = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else torch.rsqrt(bn.running_var + bn.eps)
    shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
    bias = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
    layer.weight.mul_(factor.reshape(-1, *[1] * (layer.weight.dim() - 1)))
    layer.bias = nn.Parameter(shift + (bias - bn.running_mean) * factor)


def fold_batchnorm(model: nn.Module, pairs: list[tuple[str, str]]) -> None:
    """Fold each BatchNorm into its layer (which gains a bias) and replace the BatchNorm by nn.Identity."""
    for layer_name, bn_name in pairs:
        fold_into(model.get_submodule(layer_name), model.get_submodule(bn_name))
        model.set_submodule(bn_name, nn.Identity())
