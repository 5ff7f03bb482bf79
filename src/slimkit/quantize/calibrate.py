"""Calibration: run data through the model and let observers record each layer's input and output."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from ..data.task import Task, batches
from ..errors import UserError
from .observers import Observer, make_observer


def task_batches(task: Task, n_batches: int, batch_size: int) -> list[tuple[torch.Tensor, ...]]:
    """The first ``n_batches`` batches of model inputs from the task's training split."""
    inputs = task.train[: task.n_inputs]
    return [b for _, b in zip(range(n_batches), batches(inputs, batch_size))]


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

    handles = [model.get_submodule(n).register_forward_hook(hook(n)) for n in layers]
    seen = 0
    try:
        model.eval()
        for batch in tqdm(data, desc="calibrating", disable=not progress, leave=False):
            model(*(batch if isinstance(batch, (tuple, list)) else (batch,)))
            seen += 1
    finally:
        for h in handles:
            h.remove()
    if seen == 0:
        raise UserError("The calibration data yielded no batches; pass a non-empty loader (or a Task with training samples).")
    return observers
