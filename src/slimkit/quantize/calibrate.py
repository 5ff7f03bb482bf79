"""Calibration: run data through the model and let observers record each layer's input and output."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from ..errors import UserError
from .observers import Observer, make_observer


def require_batches(data: Iterable[tuple]) -> list[tuple]:
    """``data`` as a list of input tuples (so it can be read more than once); UserError when empty."""
    data = [b if isinstance(b, (tuple, list)) else (b,) for b in data]
    if not data:
        raise UserError("The calibration data yielded no batches; pass a non-empty loader (or a Task with training samples).")
    return data


@torch.inference_mode()
def calibrate(model: nn.Module, layers: list[str], data: Iterable[tuple], observer: str,
              progress: bool = False) -> dict[str, tuple[Observer, Observer]]:
    """Observe the input and output of each named layer over ``data`` (an iterable of input tuples).

    Returns {layer: (input observer, output observer)}. Raises UserError when ``data`` is empty.
    """
    from tqdm.auto import tqdm

    observers = {name: (make_observer(observer), make_observer(observer)) for name in layers}

    def hook(name):
        def record(module, inputs, output):
            observers[name][0].observe(inputs[0])
            observers[name][1].observe(output)
        return record

    data = require_batches(data)
    handles = [model.get_submodule(n).register_forward_hook(hook(n)) for n in layers]
    try:
        model.eval()
        for batch in tqdm(data, desc="calibrating", disable=not progress, leave=False):
            model(*batch)
    finally:
        for h in handles:
            h.remove()
    return observers
