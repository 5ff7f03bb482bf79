"""FP16/BF16 casts that keep normalisation layers in FP32."""
from __future__ import annotations

import torch
from torch import nn

FLOAT_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
FP32_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)


def _cast_floats(values, dtype: torch.dtype):
    if isinstance(values, torch.Tensor):
        return values.to(dtype) if values.is_floating_point() else values
    if isinstance(values, (tuple, list)):
        return type(values)(_cast_floats(v, dtype) for v in values)
    return values


def cast_model(model: nn.Module, name: str) -> nn.Module:
    """Store and compute ``model`` in ``fp16`` or ``bf16``; norms stay FP32, inputs and outputs stay FP32.

    Casts happen in forward hooks at the model boundary and around each norm, so callers keep passing
    float32 tensors. Returns the model (modified in place).
    """
    dtype = FLOAT_DTYPES[name]
    model.to(dtype)
    for module in model.modules():
        if isinstance(module, FP32_LAYERS):
            module.float()
            module.register_forward_pre_hook(lambda m, args: _cast_floats(args, torch.float32))
            module.register_forward_hook(lambda m, args, out: _cast_floats(out, dtype))
    model.register_forward_pre_hook(lambda m, args: _cast_floats(args, dtype))
    model.register_forward_hook(lambda m, args, out: _cast_floats(out, torch.float32))
    return model
