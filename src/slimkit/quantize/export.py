"""ONNX export of weight-quantized models with onnxruntime's dynamic INT8 (for Linear-heavy models).

Static int8 models need nothing special: ``slimkit.runtime.onnx.export_onnx`` already emits QDQ; weight-only
ones keep integer weights whose dequantization is part of the graph (OpenVINO runs them as compressed weights).
"""
from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import torch
from torch import nn

from ..errors import require
from ..runtime.onnx import export_onnx, register_exporter
from .modules import QuantConv2d, QuantEmbedding, QuantLinear, QuantModule


@torch.no_grad()
def _float_layer(quant: QuantModule) -> nn.Module:
    """A float layer holding ``quant``'s dequantized weights (values stay on the integer grid, up to the
    ``input_multiplier`` folded into their input columns)."""
    weight, bias = quant.folded_weight(), quant.bias_value()
    if isinstance(quant, QuantEmbedding):
        return nn.Embedding.from_pretrained(weight, freeze=True, padding_idx=quant.padding_idx)
    if isinstance(quant, QuantLinear):
        layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    else:
        assert isinstance(quant, QuantConv2d)
        layer = nn.Conv2d(weight.shape[1] * quant.groups, weight.shape[0], weight.shape[2:], quant.stride,
                          quant.padding, quant.dilation, quant.groups, bias=bias is not None)
    layer.weight.copy_(weight)
    if bias is not None:
        layer.bias.copy_(bias)
    return layer


def dequantized_copy(model: nn.Module) -> nn.Module:
    """A float copy of ``model`` whose quantized layers are plain layers with the dequantized weights."""
    out = copy.deepcopy(model)
    for name, module in list(out.named_modules()):
        if isinstance(module, QuantModule):
            out.set_submodule(name, _float_layer(module))
    return out


def export_dynamic_int8(model: nn.Module, example_inputs: tuple, path: str | Path, reduce_range: bool = True,
                        **export_options) -> Path:
    """Write ``model`` as ONNX with int8 per-channel weights (MatMul, Gemm, Gather) and activations
    quantized at run time by onnxruntime (DynamicQuantizeLinear + integer MatMul).

    Args:
        reduce_range: 7-bit weights so u8s8 kernels cannot saturate on AVX2 CPUs without VNNI.
        export_options: passed to :func:`slimkit.runtime.onnx.export_onnx` (opset, dynamic batch and tokens).
    """
    quantization = require("onnxruntime.quantization", "onnx")
    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        source = export_onnx(dequantized_copy(model), example_inputs, Path(tmp) / "float.onnx", **export_options)
        quantization.quantize_dynamic(source, path, per_channel=True, reduce_range=reduce_range,
                                      weight_type=quantization.QuantType.QInt8)
    return path


def _runs_dynamic_int8(model: nn.Module) -> bool:
    """int8 weights with ``activations: dynamic``: onnxruntime quantizes the activations at run time. Weight-only
    models (``activations: none``) export their integer weights with the dequantization in the graph."""
    return any(isinstance(m, QuantModule) and m.dynamic and m.fmt.bits == 8 for m in model.modules())


register_exporter(_runs_dynamic_int8, export_dynamic_int8)
