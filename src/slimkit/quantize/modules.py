"""Quantized layers: integer weights (int8, or packed 2/4-bit) and scales stored as buffers.

The eager forward dequantizes; with static activations it also quantizes its input and output, written
with ``torch.ops.quantized_decomposed`` so that ONNX export emits QuantizeLinear/DequantizeLinear (QDQ)
pairs that onnxruntime fuses into integer kernels (QLinearConv, QLinearMatMul).
"""
from __future__ import annotations

import abc
import dataclasses
import math

import torch
import torch.ao.quantization.fx._decomposed  # noqa: F401  (registers torch.ops.quantized_decomposed)
from torch import Tensor, nn
from torch.nn import functional as F

from ..graph.layers import compute_weight, is_conv1d, layer_base
from .observers import Observer, make_observer
from .ops import dequantize, pack, qparams, qrange, quantize, storage_bits, unpack

QD = torch.ops.quantized_decomposed
ACT_QMIN, ACT_QMAX = 0, 255  # activations: asymmetric uint8, as onnxruntime's u8s8 kernels expect
INT32 = (-(2**31), 2**31 - 1)


@dataclasses.dataclass(frozen=True)
class WeightFormat:
    """How one layer's weight is stored.

    Args:
        bits: integer width, 2..8, or 1 for binary weights (sign times a per-channel mean magnitude).
        symmetric: zero point fixed at 0 (required for onnxruntime's integer kernels).
        group_size: values per scale along the input dimension; None = one scale per output channel.
        per_channel: one scale per output channel (or per group) rather than one for the tensor.
        reduce_range: use ``bits - 1`` bits so u8s8 integer kernels cannot saturate on AVX2 without VNNI.
    """

    bits: int = 8
    symmetric: bool = True
    group_size: int | None = None
    per_channel: bool = True
    reduce_range: bool = False

    @property
    def qmin_qmax(self) -> tuple[int, int]:
        return (-1, 1) if self.bits == 1 else qrange(self.bits, True, self.reduce_range)


class QuantModule(nn.Module, abc.ABC):
    """Base of quantized layers: weight storage, dequantization and activation QDQ."""

    def __init__(self, weight_shape: torch.Size, fmt: WeightFormat, static: bool, bias: bool):
        super().__init__()
        self.fmt, self.static, self.weight_shape = fmt, static, torch.Size(weight_shape)
        channels = weight_shape[0]
        groups = math.prod(weight_shape[1:]) // fmt.group_size if fmt.group_size else 1
        scale_shape = (channels, groups) if fmt.group_size else (channels,) if fmt.per_channel else ()
        if storage_bits(fmt.bits) == 8:
            self.register_buffer("weight_q", torch.zeros(weight_shape, dtype=torch.int8))
        else:
            per_byte = 8 // storage_bits(fmt.bits)
            self.register_buffer("weight_packed", torch.zeros(-(-math.prod(weight_shape) // per_byte), dtype=torch.uint8))
        self.register_buffer("weight_scale", torch.ones(scale_shape))
        self.register_buffer("weight_zero_point", torch.zeros(scale_shape, dtype=torch.int32))
        # per input feature, multiplies the input before its QDQ (AWQ, SmoothQuant); a buffer only once set
        self.register_buffer("input_multiplier", None)
        if static:
            for side in ("input", "output"):
                self.register_buffer(f"{side}_scale", torch.ones(()))
                self.register_buffer(f"{side}_zero_point", torch.zeros((), dtype=torch.int32))
            self.register_buffer("bias_q", torch.zeros(channels, dtype=torch.int32) if bias else None)
        else:
            self.register_buffer("bias", torch.zeros(channels) if bias else None)
        self._act: dict[str, tuple[float, int]] = {}
        self.quantize_output = True  # False: the output stays float (see Quantize.output_qdq)
        self.dynamic = False  # True: runtimes quantize the input on the fly (Quantize.activations: dynamic)
        self.transposed = False  # True: the replaced layer stored its weight transposed (transformers' Conv1D)
        self.register_load_state_dict_post_hook(lambda module, keys: module._refresh())

    def _refresh(self) -> None:
        """Mirror activation qparams as Python numbers (ONNX export needs constants, not tensors)."""
        if self.static:
            self._act = {s: (float(getattr(self, f"{s}_scale")), int(getattr(self, f"{s}_zero_point"))) for s in ("input", "output")}

    @torch.no_grad()
    def load_float(self, weight: Tensor, bias: Tensor | None, weight_observer: str,
                   input_observer: Observer | None = None, output_observer: Observer | None = None) -> None:
        """Quantize ``weight`` (and ``bias``) choosing ranges with the named observer; with static
        activations, set input/output ranges from the calibrated observers."""
        scale, zero = self.weight_qparams(weight, weight_observer)
        act = {}
        if self.static:
            act = {side: qparams(*obs.range(ACT_QMIN, ACT_QMAX, False), ACT_QMIN, ACT_QMAX, False)
                   for side, obs in (("input", input_observer), ("output", output_observer))}
        self.load_quantized(self.quantize_weight(weight, scale, zero), scale, zero, bias, act)

    @torch.no_grad()
    def weight_qparams(self, weight: Tensor, weight_observer: str) -> tuple[Tensor, Tensor]:
        """(scale, zero point) of ``weight``, one per row of :meth:`_rows` (binary: the mean magnitude)."""
        qmin, qmax = self.fmt.qmin_qmax
        rows = self._rows(weight.float())
        if self.fmt.bits == 1:
            return rows.abs().mean(1), torch.zeros(rows.shape[0], dtype=torch.int32)
        observer = make_observer(weight_observer, axis=0 if rows.shape[0] > 1 else None)
        observer.observe(rows)
        return qparams(*observer.range(qmin, qmax, self.fmt.symmetric), qmin, qmax, self.fmt.symmetric)

    def quantize_weight(self, weight: Tensor, scale: Tensor, zero: Tensor) -> Tensor:
        """Integers of ``weight`` rounded to nearest (binary: signs) with row-wise ``scale``/``zero``."""
        rows = self._rows(weight.float())
        if self.fmt.bits == 1:
            q = torch.where(rows >= 0, 1, -1).to(torch.int32)
        else:
            q = quantize(rows, scale, zero, *self.fmt.qmin_qmax, axis=0 if scale.dim() else None)
        return q.reshape(self.weight_shape)

    @torch.no_grad()
    def load_quantized(self, q: Tensor, scale: Tensor, zero: Tensor, bias: Tensor | None,
                       act: dict[str, tuple[Tensor, Tensor]]) -> None:
        """Store integer weights ``q`` with their scales, the bias, and (static) activation qparams by side."""
        self.weight_scale.copy_(scale.reshape(self.weight_scale.shape))
        self.weight_zero_point.copy_(zero.reshape(self.weight_zero_point.shape))
        if storage_bits(self.fmt.bits) == 8:
            self.weight_q.copy_(q.to(torch.int8))
        else:
            self.weight_packed.copy_(pack(q, self.fmt.bits, self.fmt.qmin_qmax[0]))
        if self.static:
            for side, (s, z) in act.items():
                getattr(self, f"{side}_scale").copy_(s)
                getattr(self, f"{side}_zero_point").copy_(z)
            self._refresh()
        self.set_bias(bias)

    @torch.no_grad()
    def set_bias(self, bias: Tensor | None) -> None:
        """Store a float bias (as int32 with scale input_scale * weight_scale when static)."""
        if bias is None:
            return
        if self.static:
            self.bias_q.copy_(torch.round(bias.float() / self._bias_scale()).clamp(*INT32).to(torch.int32))
        else:
            self.bias.copy_(bias.float())

    def _rows(self, weight: Tensor) -> Tensor:
        """The weight as (rows, values): one row per scale."""
        if self.fmt.group_size:
            return weight.reshape(-1, self.fmt.group_size)
        return weight.reshape(weight.shape[0], -1) if self.fmt.per_channel else weight.reshape(1, -1)

    def _bias_scale(self) -> Tensor:
        return self.weight_scale.expand(self.weight_shape[0]) * self._act["input"][0]

    @property
    def weight(self) -> Tensor:
        """The weight the layer computes with (:meth:`folded_weight`) in the replaced layer's layout, shape and
        device (read-only), for models that read ``layer.weight`` (e.g. its dtype)."""
        weight = self.folded_weight()
        return weight.T if self.transposed else weight

    def dequantized(self) -> Tensor:
        """The dequantized float weight, laid out as the operation uses it."""
        qmin, qmax = self.fmt.qmin_qmax
        if storage_bits(self.fmt.bits) == 8 and not self.fmt.group_size:
            channels = self.weight_shape[0]  # a per-tensor scale is emitted per channel so export stays one DQ node
            return QD.dequantize_per_channel(self.weight_q, self.weight_scale.expand(channels),
                                             self.weight_zero_point.expand(channels), 0, qmin, qmax, torch.int8)
        q = self.weight_q if storage_bits(self.fmt.bits) == 8 else unpack(self.weight_packed, self.fmt.bits, qmin, self.weight_shape)
        return self.dequantize_weight(q, self.weight_scale, self.weight_zero_point)

    def dequantize_weight(self, q: Tensor, scale: Tensor, zero: Tensor) -> Tensor:
        """Float values of integer weights ``q`` with ``scale``/``zero`` per row of :meth:`_rows`."""
        scale, zero = scale.reshape(-1), zero.reshape(-1)
        return dequantize(self._rows(q), scale, zero, axis=0 if scale.numel() > 1 else None).reshape(self.weight_shape)

    def folded_weight(self) -> Tensor:
        """The dequantized weight with ``input_multiplier`` folded into its input columns: the float weight that
        computes what the layer does."""
        weight = self.dequantized()
        return weight if self.input_multiplier is None else weight * self.input_multiplier

    def float_weight(self) -> Tensor:
        """The weight the layer computes with (:class:`slimkit.measure.layers.StoredWeight`)."""
        return self.folded_weight()

    def bias_value(self) -> Tensor | None:
        """The float bias (dequantized from int32 with scale input_scale * weight_scale when static)."""
        if not self.static:
            return self.bias
        if self.bias_q is None:
            return None
        scale = self._bias_scale()
        return QD.dequantize_per_channel(self.bias_q, scale, torch.zeros_like(self.bias_q), 0, *INT32, torch.int32)

    def qdq(self, x: Tensor, side: str) -> Tensor:
        """Quantize-dequantize an activation with the calibrated ``input``/``output`` parameters."""
        if not self.static:
            return x
        scale, zero = self._act[side]
        q = QD.quantize_per_tensor(x, scale, zero, ACT_QMIN, ACT_QMAX, torch.uint8)
        return QD.dequantize_per_tensor(q, scale, zero, ACT_QMIN, ACT_QMAX, torch.uint8)

    def forward(self, x: Tensor) -> Tensor:
        if self.input_multiplier is not None:
            x = x * self.input_multiplier
        out = self.compute(self.qdq(x, "input"))
        return self.qdq(out, "output") if self.quantize_output else out

    def compute(self, x: Tensor) -> Tensor:
        """The float operation on (dequantized) inputs with the dequantized weight."""
        return self.op(x, self.dequantized(), self.bias_value())

    @abc.abstractmethod
    def op(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """The layer's float operation with the given weight and bias (AdaRound and QAT pass their own)."""

    def extra_repr(self) -> str:
        return f"{tuple(self.weight_shape)}, bits={self.fmt.bits}, static={self.static}, group_size={self.fmt.group_size}"


class QuantLinear(QuantModule):
    """Linear layer (or transformers' Conv1D, which stores the weight transposed) with quantized weight."""

    def __init__(self, linear: nn.Module, fmt: WeightFormat, static: bool):
        super().__init__(compute_weight(linear).shape, fmt, static, linear.bias is not None)
        self.transposed = is_conv1d(linear)

    def op(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.linear(x, weight, bias)


class QuantConv2d(QuantModule):
    """2-D convolution with quantized weight (zero padding only)."""

    def __init__(self, conv: nn.Conv2d, fmt: WeightFormat, static: bool):
        super().__init__(conv.weight.shape, fmt, static, conv.bias is not None)
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups

    def op(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)


class QuantEmbedding(QuantModule):
    """Embedding table stored as integers, one scale per row; only looked-up rows are dequantized."""

    def __init__(self, embedding: nn.Embedding, fmt: WeightFormat, static: bool = False):
        super().__init__(embedding.weight.shape, dataclasses.replace(fmt, group_size=None, per_channel=True), False, False)
        self.padding_idx = embedding.padding_idx

    def op(self, ids: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        return F.embedding(ids, weight, self.padding_idx)

    def compute(self, ids: Tensor) -> Tensor:
        if storage_bits(self.fmt.bits) != 8:
            return F.embedding(ids, self.dequantized(), self.padding_idx)
        rows = F.embedding(ids, self.weight_q).float()
        return (rows - self.weight_zero_point[ids].unsqueeze(-1)) * self.weight_scale[ids].unsqueeze(-1)


QUANT_TYPES: dict[type[nn.Module], type[QuantModule]] = {
    nn.Linear: QuantLinear,
    nn.Conv2d: QuantConv2d,
    nn.Embedding: QuantEmbedding,
}


def quant_type(module: nn.Module) -> type[QuantModule] | None:
    """The quantized layer replacing ``module``: by its base in :data:`QUANT_TYPES` (a subclass counts when it
    computes like its base; transformers' Conv1D counts as nn.Linear), or None."""
    return QUANT_TYPES.get(layer_base(module, tuple(QUANT_TYPES)))
