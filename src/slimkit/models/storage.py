"""The checkpoint's storage format: a model's state dict as safetensors, tied tensors stored once, and mostly-zero
tensors as one presence bit per element plus the non-zero values (:func:`pack_sparse`)."""
from __future__ import annotations

import json

import numpy as np
import torch
from safetensors.torch import save
from torch import Tensor, nn

SPARSE_KEY = "slimkit_sparse"  # safetensors metadata: JSON {tensor name: shape} of the bitmask-encoded tensors


def untie(state: dict) -> dict:
    """safetensors refuses shared storage (tied embeddings): store each shared tensor once by copying."""
    seen, out = set(), {}
    for key, tensor in state.items():
        ptr = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        out[key] = tensor.clone() if ptr in seen else tensor
        seen.add(ptr)
    return out


def state_bytes(model: nn.Module) -> bytes:
    """The model's state dict serialised as safetensors (tensors in their stored dtype)."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    return save(untie(state))


def pack_sparse(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str] | None]:
    """Encode every floating tensor that gets smaller as ``NAME.mask`` (uint8, presence bits packed 8 per
    byte) + ``NAME.values`` (the non-zeros in row-major order); returns (tensors, safetensors metadata),
    the metadata None when nothing was encoded (the file is then a plain safetensors state dict)."""
    tensors, shapes = {}, {}
    for name, t in state.items():
        t = t.detach().contiguous().cpu()
        present = t != 0
        nonzero = int(present.sum())
        if t.is_floating_point() and (t.numel() + 7) // 8 + nonzero * t.element_size() < t.numel() * t.element_size():
            tensors[f"{name}.mask"] = torch.from_numpy(np.packbits(present.flatten().numpy()))
            tensors[f"{name}.values"] = t[present]
            shapes[name] = list(t.shape)
        else:
            tensors[name] = t
    return tensors, {SPARSE_KEY: json.dumps(shapes)} if shapes else None


def unpack_sparse(tensors: dict[str, Tensor], metadata: dict[str, str] | None) -> dict[str, Tensor]:
    """Invert :func:`pack_sparse` exactly (tensors without sparse metadata pass through)."""
    shapes = json.loads((metadata or {}).get(SPARSE_KEY, "{}"))
    packed = {f"{name}.{part}" for name in shapes for part in ("mask", "values")}
    state = {k: v for k, v in tensors.items() if k not in packed}
    for name, shape in shapes.items():
        values = tensors[f"{name}.values"]
        n = int(np.prod(shape))
        present = torch.from_numpy(np.unpackbits(tensors[f"{name}.mask"].numpy(), count=n).astype(bool))
        dense = torch.zeros(n, dtype=values.dtype)
        dense[present] = values
        state[name] = dense.view(shape)
    return state
