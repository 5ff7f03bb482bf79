"""ONNX export, shared by the ONNX-based runtimes: graph inputs are named after ``forward``'s arguments."""
from __future__ import annotations

import inspect
import io
import logging
import warnings
from contextlib import redirect_stdout
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import UserError, require

# Techniques whose models need their own ONNX path (e.g. dynamic INT8) register (applies, exporter) here.
_EXPORTERS: list[tuple[Callable[[nn.Module], bool], Callable[[nn.Module, tuple, Path], Path]]] = []


def register_exporter(applies: Callable[[nn.Module], bool], exporter: Callable[[nn.Module, tuple, Path], Path]) -> None:
    """Route models for which ``applies(model)`` is true to ``exporter(model, example_inputs, path)``."""
    _EXPORTERS.append((applies, exporter))


def input_names(model: nn.Module, count: int) -> list[str]:
    """The names of ``model.forward``'s first ``count`` positional arguments (``args_0``... for ``*args``)."""
    names = []
    for param in inspect.signature(model.forward).parameters.values():
        if param.kind == param.VAR_POSITIONAL:
            names += [f"{param.name}_{i}" for i in range(count - len(names))]
        elif param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            names.append(param.name)
    if len(names) < count:
        raise UserError(f"{type(model).__name__}.forward takes {len(names)} positional input(s), not {count}.")
    return names[:count]


def export_onnx(model: nn.Module, example_inputs: tuple, path: str | Path, opset: int = 18, dynamic_batch: bool = True,
                dynamic_tokens: bool = False) -> Path:
    """Export with torch.export-based ONNX exporter; falls back to the TorchScript exporter if it fails.

    ``dynamic_tokens``: every input's dimension 1 (tokens, up to the example's length) is symbolic too."""
    require("onnx", "onnx")
    path = Path(path)
    for applies, exporter in _EXPORTERS:
        if applies(model):
            return exporter(model, example_inputs, path)
    model = model.eval().cpu()
    example_inputs = tuple(t.cpu() for t in example_inputs)
    names = input_names(model, len(example_inputs))
    dims = {0: torch.export.Dim("batch", min=1, max=4096)} if dynamic_batch else {}
    if dynamic_tokens:
        dims[1] = torch.export.Dim("tokens", min=2, max=max(2, example_inputs[0].shape[1]))
    axes = {i: {0: "batch", 1: "tokens"}[i] for i in dims}
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)  # torchvision-op notices
    logging.getLogger("onnxscript.optimizer").setLevel(logging.ERROR)  # constant-folding notices on shape ops
    try:
        with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, example_inputs, str(path), input_names=names, output_names=["output"], opset_version=opset,
                dynamo=True, verbose=False, external_data=False,
                dynamic_shapes=tuple(dict(dims) for _ in example_inputs) if dims else None,
            )
    except Exception as first:  # the dynamo exporter rejects some models the TorchScript one handles
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    model, example_inputs, str(path), input_names=names, output_names=["output"], opset_version=opset,
                    dynamo=False, dynamic_axes={**{n: axes for n in names}, **({"output": {0: "batch"}} if dynamic_batch else {})} or None,
                )
        except Exception as second:
            from .diagnose import unsupported_op

            raise UserError(unsupported_op(model, example_inputs, first, second)) from second
    return path
