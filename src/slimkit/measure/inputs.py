"""Example inputs for a model: what the measurements, the exports and the peers run it on."""
from __future__ import annotations

import torch
from torch import nn

from ..data.task import Task
from ..errors import UserError
from ..models.checkpoint import origin
from ..models.spec import default_input_shape
from .memory import check_inputs_fit


def example_inputs(model: nn.Module, *, data: Task | None = None, shape: tuple[int, ...] | None = None,
                   batch_sizes: tuple[int, ...] = (1,)) -> tuple:
    """Batch-1 inputs for ``model``, checked to fit it and the memory of its largest batch in ``batch_sizes``.

    They are random (seeded) of ``shape`` when given (checked on an uninitialised tensor first, which takes no
    memory until touched), else ``data``'s first test inputs, else random of the zoo shape of the model's base
    SPEC. UserError when none of these says what the model takes, or the inputs do not fit.
    """
    shape = shape or (default_input_shape(origin(model)["base"] or "") if data is None else None)
    if shape:
        check_inputs_fit(model, (torch.empty(shape),), batch_sizes)
        return (torch.randn(shape, generator=torch.Generator().manual_seed(0)),)
    if data is None:
        raise UserError(f"Cannot tell what input {origin(model)['base'] or 'the model'} takes: pass --input-shape, "
                        "e.g. --input-shape 1,3,224,224, or --data.")
    inputs = data.example_inputs(1)
    check_inputs_fit(model, inputs, batch_sizes)
    return inputs
