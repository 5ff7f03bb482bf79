"""PyTorch eager and torch.compile (inductor). Artifact: a slimkit checkpoint (model.safetensors + history.json)."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from ..models.outputs import TensorOutput, tensor_model
from .base import Predictor, Runtime, Source


@contextlib.contextmanager
def fixed_threads(threads: int) -> Iterator[None]:
    """Pin PyTorch's intra-op thread count (process-wide) for the duration of a measurement."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _module(source: Source) -> nn.Module:
    """``source`` itself, or the model of a checkpoint folder (or its model.safetensors)."""
    if isinstance(source, nn.Module):
        return source
    from ..models import load_model

    return load_model(str(source))


class Eager(Runtime):
    """PyTorch as it is, returning the tensor of what the model returns (:mod:`slimkit.models.outputs`; no key/value
    cache). Its threads are PyTorch's process-wide ones: pin them with :func:`fixed_threads`."""

    name = "eager"

    def _wrap(self, model: nn.Module) -> nn.Module:
        return model

    def prepare(self, source: Source, example_inputs: tuple, *, threads: int = 1, precision: str | None = None,
                device: str = "cpu") -> Predictor:
        model = _module(source)
        precision = self.resolve(model, precision)
        model = model.eval().to(device)
        # without example inputs (peers timed on their own batches) the wrapper picks the tensor at every call
        wrapped = self._wrap(tensor_model(model, tuple(t.to(device) for t in example_inputs))[0] if example_inputs
                             else TensorOutput(model))

        def run(*inputs):
            with torch.inference_mode():
                return wrapped(*(t.to(device) for t in inputs))

        return Predictor(run, self.name, precision, model, device)

    def save(self, source: Source, example_inputs: tuple, folder: str | Path, *, precision: str | None = None) -> list[Path]:
        from ..models.checkpoint import HISTORY_FILE, WEIGHTS_FILE, save_checkpoint

        model = _module(source)
        self.resolve(model, precision)
        folder = save_checkpoint(model, folder)
        return [folder / WEIGHTS_FILE, folder / HISTORY_FILE]


class Compiled(Eager):
    """torch.compile (inductor, static shapes); compiles on the first call."""

    name = "compile"

    def _wrap(self, model: nn.Module) -> nn.Module:
        return torch.compile(model, dynamic=False)
