"""Find where NaN or Inf first appears in a model: its weights, or the outputs of its layers."""
from __future__ import annotations

import itertools

import torch
from torch import nn
from torch.utils._pytree import tree_leaves


def _finite(value) -> bool:
    return all(torch.isfinite(t).all() for t in tree_leaves(value)
               if isinstance(t, torch.Tensor) and t.is_floating_point())


def first_non_finite(model: nn.Module, inputs: tuple | None) -> str | None:
    """The first weight (``weight 'fc.bias'``) or layer output (``the output of layer 'conv1'``) holding NaN or
    Inf for one forward pass on ``inputs`` (weights only when ``inputs`` is None); None when all is finite."""
    for name, tensor in itertools.chain(model.named_parameters(), model.named_buffers()):
        if not _finite(tensor):
            return f"weight {name!r}"
    if inputs is None:
        return None
    device = next((t.device for t in model.parameters()), torch.device("cpu"))
    bad: list[str] = []

    def watch(name: str):
        def hook(module, args, output):
            if not bad and not _finite(output):
                bad.append(name)
        return hook

    hooks = [m.register_forward_hook(watch(n)) for n, m in model.named_modules() if n and not list(m.children())]
    try:
        with torch.inference_mode():
            output = model.eval()(*(t.to(device) if isinstance(t, torch.Tensor) else t for t in inputs))
    finally:
        for h in hooks:
            h.remove()
    if bad:
        return f"the output of layer {bad[0]!r}"
    return None if _finite(output) else "the model's output"
