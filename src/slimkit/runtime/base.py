"""The runtime interface: is it available here, prepare a predictor, write the deployable artifact, verify it."""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..errors import MissingExtra, UserError
from ..models.outputs import output_tensor

Source = nn.Module | str | Path  # a model, or a deployable artifact written by a runtime's save()

# Largest max abs difference from PyTorch allowed per precision. ``int8`` is measured against slimkit's eager
# simulation of the same quantized model: runtimes round integer arithmetic differently (a few output steps).
TOLERANCES = {"fp32": 1e-4, "fp16": 0.05, "bf16": 0.1, "int8": 0.15}

_QUANTIZED_ONNX_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
                       "MatMulNBits", "GatherBlockQuantized"}


@dataclass
class Predictor:
    """``predictor(*inputs)`` -> float tensor on the CPU (eager: on ``device``).

    ``handle`` is the runtime's own object (the module, onnxruntime session or OpenVINO compiled model);
    ``device`` is where inputs are best placed (a timing loop moves them there once).
    """

    run: Callable[..., torch.Tensor]
    runtime: str
    precision: str
    handle: Any = None
    device: str = "cpu"

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.run(*inputs)


def is_quantized(source: Source) -> bool:
    """True for slimkit's quantized models (integer weights) and for quantized ONNX or OpenVINO IR files."""
    if isinstance(source, nn.Module):
        return any(b.dtype in (torch.int8, torch.uint8) for b in source.buffers())
    path = Path(source)
    if path.suffix == ".onnx":
        onnx = importlib.import_module("onnx")
        return any(n.op_type in _QUANTIZED_ONNX_OPS for n in onnx.load(str(path), load_external_data=False).graph.node)
    if path.suffix != ".xml":
        return False
    text = path.read_text(errors="replace")  # FakeQuantize: static INT8; int8 constants: integer weights
    return 'type="FakeQuantize"' in text or any(f'element_type="{t}"' in text for t in ("i8", "u4", "u2"))


class Runtime(ABC):
    """One way to run a model. ``precisions``: what it can run; ``int8`` means slimkit's own quantized model
    (the ``quantize`` step's output or its export), never a quantization done by the runtime."""

    name: str
    module: str | None = None  # the Python module it needs, from the pip extra ``extra``
    extra: str | None = None
    precisions: tuple[str, ...] = ("fp32", "int8")
    static_shapes = False  # True: a predictor runs only the input shapes it was prepared for

    def available(self) -> str | None:
        """None when this runtime can run here, else why not (naming the pip extra that brings it)."""
        if self.module is None:
            return None
        try:
            importlib.import_module(self.module)
        except ImportError:
            return f"runtime {self.name} needs {self.module}, which is not installed: pip install 'slimkit[{self.extra}]'"
        return None

    def require(self) -> None:
        """Raise MissingExtra (a UserError) with :meth:`available`'s reason when it cannot run here."""
        reason = self.available()
        if reason:
            raise MissingExtra(reason)

    def precisions_here(self) -> tuple[str, ...]:
        """The precisions this machine runs (a subset of ``precisions``)."""
        return self.precisions

    def resolve(self, source: Source, precision: str | None) -> str:
        """The precision to run ``source`` at: ``int8`` for a quantized source, else ``precision`` (default
        fp32); UserError for a precision this runtime lacks, or int8 asked of a float model and vice versa."""
        quantized = is_quantized(source)
        precision = precision or ("int8" if quantized else "fp32")
        if precision not in self.precisions:
            raise UserError(f"runtime {self.name} has no precision {precision!r}; it runs {', '.join(self.precisions)}.")
        if quantized != (precision == "int8"):
            raise UserError(f"runtime {self.name}: int8 runs slimkit's quantized models only (apply the `quantize` "
                            f"step first), and a quantized model runs as int8; got {precision} for a "
                            f"{'quantized' if quantized else 'float'} model.")
        return precision

    @abstractmethod
    def prepare(self, source: Source, example_inputs: tuple, *, threads: int = 1, precision: str | None = None,
                device: str = "cpu") -> Predictor:
        """A predictor for ``source`` (a model, or an artifact from :meth:`save`) at ``precision``
        (default: int8 for a quantized model, else fp32) with ``threads`` intra-op threads."""

    @abstractmethod
    def save(self, source: Source, example_inputs: tuple, folder: str | Path, *, precision: str | None = None) -> list[Path]:
        """Write the deployable artifact into ``folder``; returns its files, the one :meth:`prepare` takes first."""


def verify(predictor: Predictor, reference: nn.Module, inputs: tuple, atol: float | None = None) -> float:
    """Max abs difference between ``predictor`` and PyTorch ``reference`` (the tensor of what it returns, see
    :mod:`slimkit.models.outputs`) on ``inputs``; UserError when it is above ``atol`` (or not finite)."""
    with torch.inference_mode():
        expected = output_tensor(reference.eval()(*inputs)).float().cpu()
    diff = (predictor(*inputs).float().cpu() - expected).abs().max().item()
    if atol is not None and not diff <= atol:
        raise UserError(f"runtime {predictor.runtime} ({predictor.precision}) differs from PyTorch by {diff:.2e} "
                        f"> {atol}; report the model.")
    return diff
