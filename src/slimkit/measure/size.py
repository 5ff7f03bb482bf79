"""Artifact size: the bytes of the deployable weights file, and what a standard codec makes of them.

``sparse_size_bytes`` is the checkpoint's safetensors file with sparse tensors bitmask-encoded, the storage
format :mod:`slimkit.models.storage` owns.
"""
from __future__ import annotations

import zlib
from pathlib import Path

from safetensors.torch import save
from torch import nn

from ..models.storage import pack_sparse, state_bytes, untie

def sparse_size(model: nn.Module) -> int:
    """Bytes of the model's safetensors weights with sparse tensors bitmask-encoded (:func:`pack_sparse`)."""
    tensors, metadata = pack_sparse(untie(dict(model.state_dict())))
    return len(save(tensors, metadata))


def compressed_size(data: bytes) -> int:
    """Size after zlib (DEFLATE, level 6): what zeros and repeated values buy on disk."""
    return len(zlib.compress(data, 6))


def artifact_size(model: nn.Module, artifact: str | Path | None = None) -> tuple[int, int]:
    """(size_bytes, compressed_size_bytes) of ``artifact`` if given (e.g. model.onnx), else of the
    model's safetensors weights."""
    data = Path(artifact).read_bytes() if artifact else state_bytes(model)
    return len(data), compressed_size(data)
