"""Cross-Layer Equalization (Nagel et al., 2019): rescale conv->relu->conv pairs so that each channel's
weight range is shared evenly by the two layers, which makes per-tensor and low-bit weights quantize better.

For a pair (W1, W2) and a positive scale s_i per channel i, relu(x / s) = relu(x) / s, so dividing output
channel i of W1 (and its bias) by s_i and multiplying input channel i of W2 by s_i leaves the network's
function unchanged. s_i = sqrt(r1_i / r2_i) makes both ranges sqrt(r1_i * r2_i).
"""
from __future__ import annotations

import torch
from torch import fx, nn
from torch.nn import functional as F

from ..graph.layers import editable

# Positively homogeneous per channel (f(x / s) = f(x) / s for s > 0); BatchNorms are folded to Identity first.
PASS_MODULES = (nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Dropout, nn.MaxPool2d, nn.AvgPool2d)
PASS_FUNCTIONS = {F.relu, torch.relu, F.leaky_relu, F.max_pool2d, F.avg_pool2d, "relu"}


def _plain_conv(module: nn.Module | None) -> bool:
    return editable(module, (nn.Conv2d,)) and module.groups == 1


def equalization_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(first, second) conv names where the first's only path to the second runs through ReLU-like layers.

    Every node on the path must have a single user, so that rescaling the channels affects nothing else.
    Models that torch.fx cannot trace yield no pairs.
    """
    try:
        graph = fx.Tracer().trace(model)
    except Exception:  # data-dependent control flow: fx cannot trace every model
        return []
    modules = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not _plain_conv(modules.get(node.target)):
            continue
        src = node.args[0]
        while isinstance(src, fx.Node) and len(src.users) == 1:
            if src.op == "call_module" and _plain_conv(modules.get(src.target)):
                pairs.append((src.target, node.target))
                break
            passes = (src.op == "call_module" and isinstance(modules.get(src.target), PASS_MODULES)) or (
                src.op in ("call_function", "call_method") and src.target in PASS_FUNCTIONS)
            if not passes:
                break
            src = src.args[0]
    return pairs


@torch.no_grad()
def equalize(model: nn.Module, pairs: list[tuple[str, str]], iterations: int = 20) -> None:
    """Rescale each (first, second) conv pair in place; ``iterations`` sweeps settle chains of pairs."""
    for _ in range(iterations):
        for first_name, second_name in pairs:
            first, second = model.get_submodule(first_name), model.get_submodule(second_name)
            r1 = first.weight.abs().flatten(1).amax(1)
            r2 = second.weight.abs().transpose(0, 1).flatten(1).amax(1)
            scale = torch.where((r1 > 0) & (r2 > 0), torch.sqrt(r1 / r2.clamp_min(1e-12)), torch.ones_like(r1))
            first.weight.div_(scale.reshape(-1, 1, 1, 1))
            if first.bias is not None:
                first.bias.div_(scale)
            second.weight.mul_(scale.reshape(1, -1, 1, 1))
