"""Exact-width bit packing: ``n`` indices of ``bits`` bits take ``ceil(n * bits / 8)`` bytes."""
from __future__ import annotations

import math

import torch
from torch import Tensor

_BYTE = torch.arange(8, dtype=torch.uint8)


def packed_length(count: int, bits: int) -> int:
    """Bytes that :func:`pack_bits` uses for ``count`` values."""
    return math.ceil(count * bits / 8)


def pack_bits(values: Tensor, bits: int) -> Tensor:
    """Pack non-negative integers below ``2**bits`` into a uint8 bit stream (least significant bit first)."""
    stream = ((values.flatten().long()[:, None] >> torch.arange(bits)) & 1).flatten().to(torch.uint8)
    stream = torch.nn.functional.pad(stream, (0, -len(stream) % 8)).view(-1, 8)
    return (stream << _BYTE).sum(1, dtype=torch.uint8)


def unpack_bits(packed: Tensor, bits: int, count: int) -> Tensor:
    """Inverse of :func:`pack_bits`: ``count`` int64 values."""
    stream = ((packed[:, None] >> _BYTE.to(packed.device)) & 1).flatten()[: count * bits]
    return (stream.view(count, bits).long() << torch.arange(bits, device=packed.device)).sum(1)
