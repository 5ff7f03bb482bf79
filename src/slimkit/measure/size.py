"""Artifact size: the bytes of the deployable weights file, and what a standard codec makes of them."""
from __future__ import annotations

import zlib
from pathlib import Path

from safetensors.torch import save
from torch import nn


def state_bytes(model: nn.Module) -> bytes:
    """The model's state dict serialised as safetensors (tensors in their stored dtype)."""
    from ..models.checkpoint import _untie

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    return save(_untie(state))


def compressed_size(data: bytes) -> int:
    """Size after zlib (DEFLATE, level 6): what zeros and repeated values buy on disk."""
    return len(zlib.compress(data, 6))


def artifact_size(model: nn.Module, artifact: str | Path | None = None) -> tuple[int, int]:
    """(size_bytes, compressed_size_bytes) of ``artifact`` if given (e.g. model.onnx), else of the
    model's safetensors weights."""
    data = Path(artifact).read_bytes() if artifact else state_bytes(model)
    return len(data), compressed_size(data)
