"""OpenVINO on the CPU, read from slimkit's ONNX export, so a ``quantize`` step's QDQ graph (with its calibration,
CLE, bias correction, AdaRound or QAT) runs on OpenVINO's INT8 kernels. Artifact: model.xml + model.bin."""
from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import UserError, require
from .base import Predictor, Runtime, Source
from .onnx import export_onnx

# INFERENCE_PRECISION_HINT per precision; int8 keeps the layers outside the quantized ones in FP32.
HINTS = {"fp32": "f32", "fp16": "f16", "bf16": "bf16", "int8": "f32"}
# What OPTIMIZATION_CAPABILITIES must list for a precision (a CPU without it would silently run FP32).
CAPABILITIES = {"fp32": "FP32", "fp16": "FP16", "bf16": "BF16", "int8": "INT8"}


@functools.cache
def _core():
    import openvino

    return openvino.Core()


def _runner(compiled) -> Callable[..., torch.Tensor]:
    """A call of ``compiled`` on torch tensors through one infer request: the inputs are handed over without a
    copy (cast only where the model takes another dtype), and the output is copied out of the request's buffer,
    which the next call reuses. OpenVINO's own ``infer(list)`` costs 0.1-0.2 ms more per call."""
    import openvino

    request = compiled.create_infer_request()
    dtypes = [port.get_element_type().to_dtype() for port in compiled.inputs]

    def run(*inputs: torch.Tensor) -> torch.Tensor:
        for i, (t, dtype) in enumerate(zip(inputs, dtypes)):
            array = np.ascontiguousarray(t.detach().cpu().numpy(), dtype=dtype)
            request.set_input_tensor(i, openvino.Tensor(array, shared_memory=True))
        request.infer()
        return torch.from_numpy(request.get_output_tensor(0).data.copy()).float()

    return run


def _reason(exc: Exception) -> str:
    """The line of an OpenVINO error that names the operation it failed on (else its last line)."""
    lines = [line.strip(" -") for line in str(exc).splitlines() if line.strip(" -")]
    return next((line for line in lines if "operation" in line.lower()), lines[-1] if lines else type(exc).__name__)[:300]


class OpenVino(Runtime):
    """OpenVINO's CPU plugin with ``threads`` inference threads and the latency hint. ``fp16``/``bf16`` run where
    the CPU has them (:meth:`precisions_here`); ``int8`` runs slimkit's quantized model."""

    name = module = extra = "openvino"
    precisions = ("fp32", "fp16", "bf16", "int8")

    def precisions_here(self) -> tuple[str, ...]:
        self.require()
        capabilities = _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        return tuple(p for p in self.precisions if CAPABILITIES[p] in capabilities)

    def prepare(self, source: Source, example_inputs: tuple, *, threads: int = 1, precision: str | None = None,
                device: str = "cpu") -> Predictor:
        self.require()
        if device != "cpu":
            raise UserError(f"runtime openvino runs on the CPU here, not {device}; use --device cpu.")
        precision = self.resolve(source, precision)
        if precision not in self.precisions_here():
            raise UserError(f"runtime openvino: this CPU has no {precision} (OpenVINO lists "
                            f"{', '.join(_core().get_property('CPU', 'OPTIMIZATION_CAPABILITIES'))}).")
        config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": HINTS[precision],
                  "PERFORMANCE_HINT": "LATENCY"}
        try:
            compiled = _core().compile_model(self._read(source, example_inputs, precision), "CPU", config)
        except RuntimeError as exc:
            raise UserError(f"OpenVINO cannot compile this model for the CPU: {_reason(exc)}") from None
        return Predictor(_runner(compiled), self.name, precision, compiled)

    def save(self, source: Source, example_inputs: tuple, folder: str | Path, *, precision: str | None = None) -> list[Path]:
        """model.xml + model.bin; ``fp16`` stores the float weights as FP16 (the CPU widens them when loading)."""
        import openvino

        self.require()
        precision = self.resolve(source, precision)
        path = Path(folder) / "model.xml"
        path.parent.mkdir(parents=True, exist_ok=True)
        openvino.save_model(self._read(source, example_inputs, precision), str(path), compress_to_fp16=precision == "fp16")
        return [path, path.with_suffix(".bin")]

    def _read(self, source: Source, example_inputs: tuple, precision: str):
        """The openvino.Model of a model (through its ONNX export), an ONNX file or an OpenVINO IR file; an int8
        ONNX graph gets its residual adds through shared quantizers first (:func:`share_quantizers`)."""
        with tempfile.TemporaryDirectory() as tmp:
            path = source if isinstance(source, (str, Path)) else export_onnx(source, example_inputs, Path(tmp) / "model.onnx")
            if precision == "int8" and Path(path).suffix == ".onnx":  # float graphs have no quantizers to share
                path = share_quantizers(path, Path(tmp) / "shared.onnx")
            try:
                return _core().read_model(str(path))
            except RuntimeError as exc:
                raise UserError(f"OpenVINO cannot convert {Path(path).name}: {_reason(exc)}") from None


def share_quantizers(path: str | Path, out: Path) -> Path:
    """``path``, or a copy written to ``out`` in which every Add that reads a tensor some other layer reads quantized
    (QuantizeLinear -> DequantizeLinear) reads that dequantized tensor instead, as NNCF places quantizers on residual
    adds. The producing convolution then has one consumer, so OpenVINO fuses the quantizer into it and writes int8
    (5-8% faster on zoo:fashion-cnn here); the add sees the tensor with that rounding, within the int8 tolerance."""
    onnx = require("onnx", "onnx")
    graph_model = onnx.load(str(path))
    nodes = list(graph_model.graph.node)
    readers: dict[str, list[int]] = {}
    for index, node in enumerate(nodes):
        for name in node.input:
            readers.setdefault(name, []).append(index)

    def dequantized(tensor: str, before: int) -> str | None:
        """The output of a DequantizeLinear of ``tensor``'s QuantizeLinear that comes before node ``before``."""
        for q in readers.get(tensor, []):
            if nodes[q].op_type == "QuantizeLinear":
                for dq in readers.get(nodes[q].output[0], []):
                    if nodes[dq].op_type == "DequantizeLinear" and dq < before:
                        return nodes[dq].output[0]
        return None

    shared = 0
    for index, node in enumerate(nodes):
        if node.op_type == "Add":
            for position, name in enumerate(node.input):
                replacement = dequantized(name, index)
                if replacement:
                    node.input[position], shared = replacement, shared + 1
    if not shared:
        return Path(path)
    onnx.save(graph_model, str(out))
    return out
