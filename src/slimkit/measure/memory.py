"""Peak memory of one inference: CUDA allocator statistics, or live-tensor tracking on the CPU."""
from __future__ import annotations

import weakref

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class _LiveTensorBytes(TorchDispatchMode):
    """Tracks bytes of storages created by operators, freeing them when their tensor dies."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key and key not in self.live:
                    self.live[key] = storage.nbytes()
                    self.current += storage.nbytes()
                    self.peak = max(self.peak, self.current)
                    weakref.finalize(t, self._free, key)
        return out

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)


def weight_bytes(model: nn.Module) -> int:
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())


@torch.inference_mode()
def peak_memory(model: nn.Module, inputs: tuple) -> int:
    """Peak bytes during one forward pass: weights plus the largest set of live activations."""
    model.eval()
    device = next((t.device for t in model.parameters()), torch.device("cpu"))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        model(*inputs)
        torch.cuda.synchronize(device)
        return weight_bytes(model) + torch.cuda.max_memory_allocated(device) - base
    tracker = _LiveTensorBytes()
    with tracker:
        model(*inputs)
    return weight_bytes(model) + tracker.peak
