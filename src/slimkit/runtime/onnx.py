"""ONNX export, shared by the ONNX-based runtimes: graph inputs are named after ``forward``'s arguments, the one
output after what the model returns (``logits``, ``last_hidden_state``, ``output`` for a bare tensor)."""
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
from ..models.outputs import TensorOutput, cache_in, cache_off, tensor_model

# Techniques whose models need their own ONNX path (e.g. dynamic INT8) register (applies, exporter) here.
_EXPORTERS: list[tuple[Callable[[nn.Module], bool], Callable[[nn.Module, tuple, Path], Path]]] = []


def register_exporter(applies: Callable[[nn.Module], bool], exporter: Callable[[nn.Module, tuple, Path], Path]) -> None:
    """Route models for which ``applies(model)`` is true to ``exporter(model, example_inputs, path, opset=...,
    dynamic_batch=..., dynamic_tokens=...)`` (:func:`export_onnx`'s options)."""
    _EXPORTERS.append((applies, exporter))


def input_names(model: nn.Module, count: int) -> list[str]:
    """The names of ``model.forward``'s first ``count`` positional arguments (``args_0``... for ``*args``); of the
    wrapped model's for a :class:`~slimkit.models.outputs.TensorOutput`."""
    model = model.model if isinstance(model, TensorOutput) else model
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

    A model that returns a mapping or tuple is exported returning the one tensor slimkit measures, and one whose
    config turns the key/value cache on runs with ``use_cache=False`` (:mod:`slimkit.models.outputs`); ``model``
    itself is not changed. The file appears at ``path`` only once completely written.
    ``dynamic_tokens``: every input's dimension 1 (tokens, up to the example's length) is symbolic too."""
    require("onnx", "onnx")
    path = Path(path)
    for applies, exporter in _EXPORTERS:
        if applies(model):
            return exporter(model, example_inputs, path, opset=opset, dynamic_batch=dynamic_batch,
                            dynamic_tokens=dynamic_tokens)
    model = model.eval().cpu()
    example_inputs = tuple(t.cpu() for t in example_inputs)
    if dynamic_batch:  # torch.export may specialise a batch dimension of 1 (GPT-2 does): trace two rows
        example_inputs = tuple(torch.cat([t, t]) if len(t) == 1 else t for t in example_inputs)
    names = input_names(model, len(example_inputs))
    module, output = tensor_model(model, example_inputs)
    partial = path.with_name(f".{path.stem}.partial.onnx")
    try:
        _export(module, example_inputs, partial, names, output, opset, dynamic_batch, dynamic_tokens)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def _export(model: nn.Module, example_inputs: tuple, path: Path, names: list[str], output: str, opset: int,
            dynamic_batch: bool, dynamic_tokens: bool) -> None:
    """Write ``model`` (returning one tensor) to ``path`` with inputs ``names`` and the output ``output``."""
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
                model, example_inputs, str(path), input_names=names, output_names=[output], opset_version=opset,
                dynamo=True, verbose=False, external_data=False,
                dynamic_shapes=_per_input(model, tuple(dict(dims) for _ in example_inputs)) if dims else None,
            )
    except Exception as first:  # the dynamo exporter rejects some models the TorchScript one handles
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    model, example_inputs, str(path), input_names=names, output_names=[output], opset_version=opset,
                    dynamo=False, dynamic_axes={**{n: axes for n in names}, **({output: {0: "batch"}} if dynamic_batch else {})} or None,
                )
        except Exception as second:
            from .diagnose import unsupported_op

            raise UserError(_cache_cause(model, example_inputs) + unsupported_op(model, example_inputs, first, second)) from second


def _per_input(model: nn.Module, shapes: tuple) -> tuple:
    """``shapes`` (one per input) as torch.export matches them to ``forward``: all in one for ``*inputs``."""
    return (shapes,) if isinstance(model, TensorOutput) else shapes


def _cache_cause(model: nn.Module, example_inputs: tuple) -> str:
    """For a model that still returns a key/value cache: what it returns and how to turn it off; else ''."""
    inner = model.model if isinstance(model, TensorOutput) else model
    off = cache_off(inner)
    with torch.inference_mode():
        cache = cache_in(inner(*example_inputs, **off))
    if cache is None:
        return ""
    return (f"{type(inner).__name__} returns a key/value cache, {cache}{', even with use_cache=False' if off else ''}, "
            f"which the ONNX exporters cannot take: give it a config with use_cache=False and a forward that honours "
            f"use_cache, or make it return tensors only. ")
