"""Peak memory of one inference: CUDA allocator statistics, or live-tensor tracking on the CPU."""
from __future__ import annotations

import contextlib
import os
import weakref

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ..errors import UserError


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


def memory_budget() -> int:
    """Bytes a measurement may use: SLIMKIT_MEMORY_GB, else 80% of the memory available now."""
    env = os.environ.get("SLIMKIT_MEMORY_GB")
    if env:
        try:
            gib = float(env)
        except ValueError:
            gib = float("nan")
        if not 0 < gib < 2**20:
            raise UserError(f"SLIMKIT_MEMORY_GB={env!r:.30} is not a positive number of GiB, e.g. 8.")
        return int(gib * 2**30)
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/meminfo") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
        return int(kib * 1024 * 0.8)
    return 8 * 2**30


def _shapes(inputs: tuple) -> str:
    return ", ".join(str(tuple(t.shape)) for t in inputs if isinstance(t, torch.Tensor))


def check_inputs_fit(model: nn.Module, inputs: tuple, batch_sizes: tuple[int, ...] = (1,)) -> int:
    """Run one batch-1 forward pass and estimate the memory of the largest batch; UserError when the
    model does not take ``inputs`` or that batch would not fit :func:`memory_budget`. Returns the estimate.

    Inputs too large for a real trial pass are traced with fake tensors (shapes only, no memory).
    """
    budget, largest = memory_budget(), max(batch_sizes)
    input_bytes = sum(t.numel() * t.element_size() for t in inputs if isinstance(t, torch.Tensor))
    fix = "pass a smaller --input-shape or --batch (or set SLIMKIT_MEMORY_GB)"
    if input_bytes * largest > budget:
        raise UserError(f"Inputs of shape {_shapes(inputs)} at batch {largest} take {input_bytes * largest / 2**30:.1f} GiB "
                        f"before the model runs; the memory budget is {budget / 2**30:.1f} GiB: {fix}.")
    try:
        peak = _trial_peak(model, inputs, input_bytes)
    except (RuntimeError, ValueError, TypeError, IndexError, AssertionError, AttributeError, KeyError) as exc:
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise UserError(f"The model does not take inputs of shape {_shapes(inputs)}: {detail}. "
                        "Pass --input-shape with the shape the model expects (e.g. 1,3,224,224), --input with its typed "
                        "inputs (e.g. 'input_ids:int64[1,32]<30522'), or --data.") from None
    weights = weight_bytes(model)
    need = weights + (peak - weights) * largest
    if need > budget:
        raise UserError(f"One forward pass at batch {largest} with inputs {_shapes(inputs)} needs about "
                        f"{need / 2**30:.1f} GiB; the memory budget is {budget / 2**30:.1f} GiB: {fix}.")
    return need


class _FakeTensorBytes(TorchDispatchMode):
    """Tracks bytes of the (fake) tensors operators create, by tensor identity."""

    def __init__(self):
        super().__init__()
        self.current = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.current += t.numel() * t.element_size()
                self.peak = max(self.peak, self.current)
                weakref.finalize(t, self._free, t.numel() * t.element_size())
        return out

    def _free(self, nbytes: int) -> None:
        self.current -= nbytes


def _trial_peak(model: nn.Module, inputs: tuple, input_bytes: int) -> int:
    """Peak bytes of one forward pass: a real pass for small inputs; else traced with fake tensors, or, where
    a model's operators cannot be traced so, a real pass when the inputs are at most 64 MiB."""
    device = next((t.device for t in model.parameters()), torch.device("cpu"))
    real = tuple(t.to(device) if isinstance(t, torch.Tensor) else t for t in inputs)
    if input_bytes <= 2**20:
        return peak_memory(model, real)
    try:
        return _fake_peak(model, inputs)
    except Exception:
        if input_bytes > 64 * 2**20:
            raise
        return peak_memory(model, real)


def _fake_peak(model: nn.Module, inputs: tuple) -> int:
    """Weights plus peak activation bytes of one forward pass, traced with fake tensors."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    tracker = _FakeTensorBytes()
    with torch.inference_mode(), FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fake = tuple(mode.from_tensor(t) if isinstance(t, torch.Tensor) else t for t in inputs)
        with tracker:
            model.eval()(*fake)
    return weight_bytes(model) + tracker.peak
