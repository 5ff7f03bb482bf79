"""Parameter and MAC counts. MACs come from torch's FLOP counter on a real forward pass."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..graph.layers import is_leaf


def count_params(model: nn.Module) -> tuple[int, int]:
    """(total, non-zero) elements over parameters and floating-point buffers that are weights.

    Tied parameters are counted once. Quantized models keep weights in buffers, so integer buffers
    (e.g. packed weights) count too; BatchNorm's running statistics and counters do not.
    """
    seen, total, nonzero = set(), 0, 0
    tensors = list(model.parameters()) + [b for n, b in model.named_buffers() if _is_weight_buffer(n)]
    for t in tensors:
        if id(t) in seen:
            continue
        seen.add(id(t))
        total += t.numel()
        nonzero += int(torch.count_nonzero(t.detach()))
    return total, nonzero


def _is_weight_buffer(name: str) -> bool:
    leaf = name.rsplit(".", 1)[-1]
    return leaf not in ("running_mean", "running_var", "num_batches_tracked") and not leaf.startswith("_")


@torch.inference_mode()
def count_macs(model: nn.Module, example_inputs: tuple) -> tuple[int, dict[str, int]]:
    """(total MACs, MACs per leaf module name) for one forward pass on ``example_inputs``; a layer with
    parametrizations (``weight_norm``, masks) counts as a leaf.

    Counted by ``torch.utils.flop_counter`` (convolution, matmul, addmm, bmm, attention), as FLOPs / 2.
    """
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(*example_inputs)
    leaves = {name for name, m in model.named_modules() if name and is_leaf(m)}
    root = type(model).__name__ + "."
    per_layer = {}
    for name, ops in counter.get_flop_counts().items():
        short = name[len(root):] if name.startswith(root) else name
        if short in leaves:
            per_layer[short] = int(sum(ops.values()) // 2)
    return int(counter.get_total_flops() // 2), per_layer
