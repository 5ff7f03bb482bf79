"""Affine quantization arithmetic: integer ranges, scales and zero points, (de)quantization, bit packing."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import UserError


def qrange(bits: int, signed: bool = True, reduce_range: bool = False) -> tuple[int, int]:
    """(qmin, qmax) of a ``bits``-wide integer; ``reduce_range`` drops one bit (u8s8 saturation guard)."""
    if not 2 <= bits <= 8:
        raise UserError(f"{bits}-bit integers are not supported; use a bit width in 2..8.")
    bits -= int(reduce_range and bits > 2)
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


def qparams(lo: Tensor, hi: Tensor, qmin: int, qmax: int, symmetric: bool) -> tuple[Tensor, Tensor]:
    """(scale float32, zero_point int32) mapping [lo, hi] (per tensor or per channel) onto [qmin, qmax].

    The range always contains 0 so that zero padding and ReLU outputs are exact.
    """
    lo, hi = torch.minimum(lo.float(), torch.zeros(())), torch.maximum(hi.float(), torch.zeros(()))
    if symmetric:
        bound = torch.maximum(-lo, hi)
        scale = bound / ((qmax - qmin) / 2)
        zero = torch.full_like(scale, (qmin + qmax + 1) // 2)
    else:
        scale = (hi - lo) / (qmax - qmin)
        zero = qmin - torch.round(lo / scale.clamp_min(1e-12))
    scale = scale.clamp_min(torch.finfo(torch.float32).tiny * 2**20)
    return scale, zero.clamp(qmin, qmax).to(torch.int32)


def _along(t: Tensor, x: Tensor, axis: int | None) -> Tensor:
    """Reshape per-channel ``t`` to broadcast against ``x`` on ``axis``."""
    if axis is None or t.dim() == 0:
        return t
    shape = [1] * x.dim()
    shape[axis] = -1
    return t.reshape(shape)


def quantize(x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int, axis: int | None = None) -> Tensor:
    """Round ``x`` to integers in [qmin, qmax] (returned as int32)."""
    q = torch.round(x / _along(scale, x, axis)) + _along(zero_point, x, axis)
    return q.clamp(qmin, qmax).to(torch.int32)


def dequantize(q: Tensor, scale: Tensor, zero_point: Tensor, axis: int | None = None) -> Tensor:
    """Float values of integers ``q``."""
    return (q.float() - _along(zero_point, q, axis)) * _along(scale, q, axis)


def fake_quantize(x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int, axis: int | None = None) -> Tensor:
    """``dequantize(quantize(x))``: the float values ``x`` becomes after quantization."""
    return dequantize(quantize(x, scale, zero_point, qmin, qmax, axis), scale, zero_point, axis)


def sqnr(reference: Tensor, approx: Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB (higher is better; int8 weights are typically > 35 dB)."""
    noise = (reference.float() - approx.float()).pow(2).sum()
    return float(10 * torch.log10(reference.float().pow(2).sum() / noise.clamp_min(1e-30)))


def storage_bits(bits: int) -> int:
    """Bits per stored value: 1 (binary signs), 2, 4 or 8 (values are packed into bytes)."""
    return bits if bits <= 2 else 4 if bits <= 4 else 8


def pack(q: Tensor, bits: int, qmin: int) -> Tensor:
    """Pack integers in [qmin, qmin + 2**bits) into a flat uint8 tensor, ``8 // storage_bits`` per byte.

    ``bits == 1`` packs signs (values -1/+1, one bit each).
    """
    width = storage_bits(bits)
    per_byte = 8 // width
    flat = (q.flatten() > 0) if bits == 1 else q.flatten().to(torch.int32) - qmin
    flat = flat.to(torch.uint8)
    flat = torch.nn.functional.pad(flat, (0, -flat.numel() % per_byte)).reshape(-1, per_byte)
    shifts = torch.arange(per_byte, dtype=torch.uint8) * width
    return (flat << shifts).sum(1, dtype=torch.uint8) if per_byte > 1 else flat.flatten()


def unpack(packed: Tensor, bits: int, qmin: int, shape: torch.Size | tuple[int, ...]) -> Tensor:
    """Inverse of :func:`pack`: int32 values of ``shape``."""
    width = storage_bits(bits)
    per_byte = 8 // width
    shifts = torch.arange(per_byte, dtype=torch.uint8) * width
    values = (packed.reshape(-1, 1) >> shifts) & (2**width - 1) if per_byte > 1 else packed.reshape(-1, 1)
    values = values.flatten()[: math.prod(shape)].to(torch.int32)
    return (values * 2 - 1 if bits == 1 else values + qmin).reshape(shape)
