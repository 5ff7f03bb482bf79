"""The peers that come with PyTorch and onnxruntime: eager, torch.compile, onnxruntime FP32 and its
``quantize_dynamic``/``quantize_static`` (defaults) and int4 ``MatMulNBitsQuantizer``, and torch's own dynamic
quantization."""
from __future__ import annotations

import copy
import io
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from ...data.task import Task, batches
from ...errors import require
from ...runtime import RUNTIMES
from .base import Peer, Skip, calibration_inputs, toolkit


def torch_peer(name: str, model: nn.Module, weights: int) -> Peer:
    """``eager`` or ``compile``: the model itself; size = its safetensors bytes."""
    return Peer(name, name, RUNTIMES[name].prepare(model, ()), weights, toolkit("torch"))


def onnxruntime_fp32(fp32: Path, threads: int) -> Peer:
    return Peer("onnxruntime", "onnxruntime", RUNTIMES["onnxruntime"].prepare(fp32, (), threads=threads),
                fp32.stat().st_size, toolkit("onnxruntime"))


def torch_dynamic_int8(model: nn.Module) -> Peer:
    quantization = getattr(torch.ao, "quantization", None)
    if quantization is None or not hasattr(quantization, "quantize_dynamic"):
        raise Skip("this torch has no torch.ao.quantization.quantize_dynamic")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notice of torch.ao.quantization
        quantized = quantization.quantize_dynamic(copy.deepcopy(model))
    buffer = io.BytesIO()
    torch.save(quantized.state_dict(), buffer)  # packed int8 weights have no safetensors form
    return Peer("torch_dynamic_int8", "eager", RUNTIMES["eager"].prepare(quantized, ()), buffer.tell(), toolkit("torch"))


def ort_quantize(name: str, fp32: Path, workdir: Path, threads: int, calibration: Task | None) -> Peer:
    """``ort_quantize_dynamic`` or ``ort_quantize_static`` with onnxruntime's defaults."""
    ort_quant = require("onnxruntime.quantization", "onnx")
    path = workdir / f"{name}.onnx"
    reader = _Reader(calibration_inputs(calibration, "quantize_static"), fp32) if name == "ort_quantize_static" else None
    logging.disable(logging.WARNING)  # onnxruntime logs a pre-processing suggestion on the root logger
    try:
        if reader is None:
            ort_quant.quantize_dynamic(fp32, path)
        else:
            ort_quant.quantize_static(fp32, path, reader)
    finally:
        logging.disable(logging.NOTSET)
    return Peer(name, "onnxruntime", RUNTIMES["onnxruntime"].prepare(path, (), threads=threads), path.stat().st_size,
                toolkit("onnxruntime"))


def ort_matmul_nbits(fp32: Path, workdir: Path, threads: int, op_types: tuple[str, ...] = ("MatMul", "Gather")) -> Peer:
    """onnxruntime's int4 weight-only quantizer configured as its documentation shows (blocks of 128, symmetric,
    accuracy level 4, MatMul and Gather weights), run by its ``MatMulNBits`` / ``GatherBlockQuantized`` kernels."""
    nbits = require("onnxruntime.quantization.matmul_nbits_quantizer", "onnx")
    quant_utils = require("onnxruntime.quantization.quant_utils", "onnx")
    config = nbits.DefaultWeightOnlyQuantConfig(
        block_size=128, is_symmetric=True, accuracy_level=4, quant_format=quant_utils.QuantFormat.QOperator,
        op_types_to_quantize=op_types, quant_axes=tuple((op, {"MatMul": 0, "Gather": 1}[op]) for op in op_types))
    quantizer = nbits.MatMulNBitsQuantizer(quant_utils.load_model_with_shape_infer(fp32), algo_config=config)
    logging.disable(logging.WARNING)
    try:
        quantizer.process()
    finally:
        logging.disable(logging.NOTSET)
    path = workdir / "ort_matmul_nbits.onnx"
    quantizer.model.save_model_to_file(str(path), False)
    return Peer("ort_matmul_nbits", "onnxruntime", RUNTIMES["onnxruntime"].prepare(path, (), threads=threads),
                path.stat().st_size, toolkit("onnxruntime"))


class _Reader:
    """onnxruntime CalibrationDataReader over the calibration inputs, 32 per batch."""

    def __init__(self, inputs: tuple[torch.Tensor, ...], onnx_path: Path):
        import onnx

        names = [i.name for i in onnx.load(str(onnx_path), load_external_data=False).graph.input]
        self._feeds = iter([{n: t.numpy() for n, t in zip(names, b)} for b in batches(inputs, 32)])

    def get_next(self):
        return next(self._feeds, None)
