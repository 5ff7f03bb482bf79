"""ONNX export of weight-only low-bit models on onnxruntime's low-bit kernels.

Every weight-only Linear (and transformers' Conv1D) stored in 1 to 4 bits becomes a ``com.microsoft`` MatMulNBits
and every such Embedding a GatherBlockQuantized, each holding slimkit's own integers as that op reads them (offset
to unsigned 2 or 4 bits, packed low bits first, in blocks along the input dimension) with their scales and zero
points: the file stays small, onnxruntime runs its low-bit kernels, and OpenVINO reads both ops as compressed
weights. int5..int8 weights keep their int8 DequantizeLinear export.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import require
from ..runtime.onnx import export_onnx, register_exporter
from .modules import QuantEmbedding, QuantLinear
from .ops import pack, storage_bits, unpack

DOMAIN = "com.microsoft"
MAX_BLOCK = 128  # block of a layer with one scale per row (its scale repeats in every block)
UNREAD = "no MatMul, Gemm or Gather of the exported graph reads its weight: unused, or folded into a constant"


@dataclasses.dataclass
class Kernel:
    """A low-bit layer as MatMulNBits / GatherBlockQuantized inputs.

    Args:
        bits: 2 or 4 (the op's width; narrower integers are stored in it unchanged).
        block: values per scale along the input dimension (a power of two >= 16).
        columns: input features of a Linear, width of an Embedding.
        packed: uint8 integers, (out, blocks, block * bits / 8) for MatMulNBits, (rows, width * bits / 8) for
            GatherBlockQuantized.
        scales: (rows, blocks) float32.
        zero_points: (rows, blocks packed like the integers) uint8, or None when every zero point is 0.
    """

    bits: int
    block: int
    columns: int
    packed: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray | None


def low_bit(module: nn.Module) -> bool:
    """A weight-only Linear or Embedding whose integers are packed below a byte: the layers this export converts."""
    return (isinstance(module, (QuantLinear, QuantEmbedding)) and not module.static and not module.dynamic
            and storage_bits(module.fmt.bits) < 8)


def _bits(quant: QuantLinear | QuantEmbedding) -> int:
    """The op's width: 2 for binary and 2-bit integers, else 4."""
    return 2 if quant.fmt.bits <= 2 else 4


def _block(quant: QuantLinear | QuantEmbedding) -> int:
    """The op's block: the group size, or with one scale per row the largest power of two up to 128 that divides half
    the row, at least 16 (two blocks or more: OpenVINO's CPU plugin rejects a GatherBlockQuantized of one block with
    zero points)."""
    return quant.fmt.group_size or max(16, math.gcd(quant.weight_shape[1] // 2, MAX_BLOCK))


def unsupported(quant: QuantLinear | QuantEmbedding) -> str | None:
    """Why the low-bit ops cannot hold ``quant``, or None when they can."""
    block = _block(quant)
    if block < 16 or block & (block - 1):
        return f"group size {block} is not a power of two >= 16"
    if isinstance(quant, QuantEmbedding) and quant.weight_shape[1] % block:
        return f"its rows of {quant.weight_shape[1]} values are not a multiple of 16 (OpenVINO's GatherBlockQuantized)"
    return None


@torch.no_grad()
def kernel(quant: QuantLinear | QuantEmbedding) -> Kernel:
    """``quant``'s integers, scales and zero points as its low-bit op stores them (see :func:`unsupported`)."""
    (rows, columns), block, bits = quant.weight_shape, _block(quant), _bits(quant)
    offset = 2 ** (bits - 1)  # signed [-offset, offset) -> unsigned [0, 2 * offset)
    blocks = -(-columns // block)
    q = unpack(quant.weight_packed, quant.fmt.bits, quant.fmt.qmin_qmax[0], (rows, columns))
    if isinstance(quant, QuantLinear):  # MatMulNBits reads whole blocks
        q = nn.functional.pad(q, (0, blocks * block - columns)).reshape(rows, blocks, block)
    scales, zeros = ((t.reshape(rows, -1) if t.dim() == 2 else t.reshape(-1, 1)).expand(rows, blocks)
                     for t in (quant.weight_scale, quant.weight_zero_point))
    zero_points = None
    if zeros.any():
        zeros = nn.functional.pad(zeros, (0, -blocks % (8 // bits)))
        zero_points = pack(zeros, bits, -offset).reshape(rows, -1).numpy()
    packed = pack(q, bits, -offset).reshape(*q.shape[:-1], -1).numpy()
    return Kernel(bits, block, columns, packed, scales.float().contiguous().numpy(), zero_points)


class _FloatLinear(nn.Linear):
    """A quantized Linear's dequantized weight and bias in float, applied to ``x * input_multiplier`` when the layer
    has one (AWQ/SmoothQuant), so that its export holds that Mul in front of the weight's MatMul."""

    def __init__(self, quant: QuantLinear):
        weight, bias = quant.dequantized(), quant.bias_value()
        super().__init__(weight.shape[1], weight.shape[0], bias is not None)
        with torch.no_grad():
            self.weight.copy_(weight)
            if bias is not None:
                self.bias.copy_(bias)
        self.register_buffer("input_multiplier", quant.input_multiplier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x if self.input_multiplier is None else x * self.input_multiplier)


def _float_layer(quant: QuantLinear | QuantEmbedding) -> nn.Module:
    """``quant`` as a float layer holding its dequantized weight."""
    if isinstance(quant, QuantLinear):
        return _FloatLinear(quant)
    return nn.Embedding.from_pretrained(quant.dequantized(), freeze=True, padding_idx=quant.padding_idx)


def _key(is_linear: bool, weight: np.ndarray) -> tuple:
    """How a layer's float weight, (out, in) or (rows, width), is recognised in the exported graph."""
    weight = np.ascontiguousarray(weight, dtype=np.float32)
    return is_linear, weight.shape, hashlib.sha256(weight.tobytes()).digest()


def export_nbits(model: nn.Module, example_inputs: tuple, path: str | Path, opset: int = 18,
                 dynamic_batch: bool = True, dynamic_tokens: bool = False) -> Path:
    """Write ``model`` as ONNX whose 1..4-bit weight-only Linear and Embedding layers run as MatMulNBits and
    GatherBlockQuantized; the rest is :func:`~slimkit.runtime.onnx.export_onnx`'s export (with these options). A
    layer the ops cannot hold (see :func:`unsupported`) stays float and a warning names it. The file appears at
    ``path`` only once completely written."""
    onnx = require("onnx", "onnx")
    path = Path(path)
    float_model, kernels, layers = _float_copy(model)
    with tempfile.TemporaryDirectory() as tmp:
        float_path = export_onnx(float_model, example_inputs, Path(tmp) / "float.onnx", opset, dynamic_batch,
                                 dynamic_tokens)
        graph_model = onnx.load(str(float_path))
    found = _rewrite(onnx, graph_model, kernels)
    left = {name: f"{why}; it stays float" if why else UNREAD
            for name, (key, why) in layers.items() if key not in found}
    if left:
        warnings.warn("export: low-bit layers not on MatMulNBits/GatherBlockQuantized: "
                      + "; ".join(f"{name} ({why})" for name, why in left.items()), stacklevel=2)
    partial = path.with_name(f".{path.stem}.partial.onnx")
    try:
        onnx.save(graph_model, str(partial))
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def _float_copy(model: nn.Module) -> tuple[nn.Module, dict, dict]:
    """(a copy of ``model`` whose low-bit layers are float, {key of a float weight: (layer name, Kernel)} for the
    layers the ops hold, {layer name: (its key, None) or (None, why the ops cannot hold it)})."""
    float_model, kernels, layers = copy.deepcopy(model), {}, {}
    for name, module in model.named_modules():
        if low_bit(module):
            layer = _float_layer(module)
            float_model.set_submodule(name, layer)
            why = unsupported(module)
            key = None if why else _key(isinstance(module, QuantLinear), layer.weight.detach().numpy())
            layers[name] = key, why
            if key:
                kernels[key] = name, kernel(module)
    return float_model, kernels, layers


def _rewrite(onnx, graph_model, kernels: dict) -> set[tuple]:
    """Replace, in place, every MatMul/Gemm and Gather of a float weight in ``kernels`` (by :func:`_key`) by its
    low-bit op, drop those weights, and return the keys found."""
    graph = graph_model.graph
    weights = {init.name: init for init in graph.initializer}
    nodes, added, found, replaced = [], {}, set(), set()
    for node in graph.node:
        key = _weight_key(onnx, node, weights)
        if key not in kernels:
            nodes.append(node)
            continue
        name, stored = kernels[key]
        found.add(key)
        replaced.add(node.input[0 if node.op_type == "Gather" else 1])
        added.setdefault(name, _initializers(onnx, name, stored))
        nodes += _low_bit_nodes(onnx, node, stored, added[name])
    del graph.node[:]
    graph.node.extend(nodes)
    read = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in read or init.name not in replaced]
    del graph.initializer[:]
    graph.initializer.extend(kept + [init for inits in added.values() for init in inits])
    if found and not any(o.domain == DOMAIN for o in graph_model.opset_import):
        graph_model.opset_import.append(onnx.helper.make_opsetid(DOMAIN, 1))
    return found


def _weight_key(onnx, node, weights: dict) -> tuple | None:
    """The :func:`_key` of the constant float weight ``node`` multiplies by (MatMul, plain Gemm) or gathers rows of
    (Gather), else None."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    gather = node.op_type == "Gather" and attrs.get("axis", 0) == 0
    gemm = (node.op_type == "Gemm" and not attrs.get("transA", 0)
            and attrs.get("alpha", 1.0) == attrs.get("beta", 1.0) == 1.0)
    if not (gather or gemm or node.op_type == "MatMul"):
        return None
    init = weights.get(node.input[0 if gather else 1])
    if init is None or init.data_type != onnx.TensorProto.FLOAT or len(init.dims) != 2:
        return None
    weight = onnx.numpy_helper.to_array(init)
    return _key(not gather, weight if gather or attrs.get("transB", 0) else weight.T)


def _initializers(onnx, name: str, stored: Kernel) -> list:
    """The packed integers, scales and (when not all 0) zero points of layer ``name``, in the op's input order."""
    arrays = {"weight_packed": stored.packed, "weight_scale": stored.scales, "weight_zero_point": stored.zero_points}
    return [onnx.numpy_helper.from_array(array, f"{name}.{part}") for part, array in arrays.items()
            if array is not None]


def _low_bit_nodes(onnx, node, stored: Kernel, inits: list) -> list:
    """``node`` as its low-bit op reading ``inits``: GatherBlockQuantized for a Gather, else MatMulNBits (followed by
    an Add of a Gemm's bias)."""
    make = onnx.helper.make_node
    packed, scales, *zero_points = (init.name for init in inits)
    options = {"domain": DOMAIN, "bits": stored.bits, "block_size": stored.block}
    if node.op_type == "Gather":
        return [make("GatherBlockQuantized", [packed, node.input[1], scales, *zero_points], list(node.output),
                     node.name, gather_axis=0, quantize_axis=1, **options)]
    bias = node.input[2] if len(node.input) > 2 else ""
    product = f"{node.output[0]}_nbits" if bias else node.output[0]
    matmul = make("MatMulNBits", [node.input[0], packed, scales, *zero_points], [product], node.name,
                  K=stored.columns, N=len(stored.scales), **options)
    return [matmul] + ([make("Add", [product, bias], list(node.output), f"{node.name}_bias")] if bias else [])


def _exports_low_bit(model: nn.Module) -> bool:
    """Weight-only layers below 8 bits: their packed integers go to MatMulNBits / GatherBlockQuantized."""
    return any(low_bit(m) for m in model.modules())


register_exporter(_exports_low_bit, export_nbits)
