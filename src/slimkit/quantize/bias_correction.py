"""Empirical bias correction (Nagel et al., 2019): quantized weights shift each layer's mean output; measure
the shift per output channel on calibration data and subtract it from the layer's bias.

Layers are corrected one after another, each measured with the earlier corrections in place, so a layer
also absorbs the shift that reaches it from the layers before.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor, nn

from .modules import QuantModule


def _channel_mean(output: Tensor) -> Tensor:
    """Mean per channel: dim 1 of conv outputs (N, C, H, W), the last dim otherwise."""
    x = output.float().movedim(1, -1) if output.dim() == 4 else output.float()
    return x.reshape(-1, x.shape[-1]).mean(0)


@torch.inference_mode()
def output_means(model: nn.Module, names: list[str], data: Iterable[tuple]) -> dict[str, Tensor]:
    """Mean output per channel of each named layer over ``data``."""
    sums: dict[str, Tensor] = {}
    handles = [model.get_submodule(n).register_forward_hook(
        lambda m, i, out, n=n: sums.__setitem__(n, sums.get(n, 0) + _channel_mean(out))) for n in names]
    count = 0
    try:
        model.eval()
        for batch in data:
            model(*batch)
            count += 1
    finally:
        for h in handles:
            h.remove()
    return {n: s / max(count, 1) for n, s in sums.items()}


@torch.no_grad()
def correct_biases(float_model: nn.Module, quant_model: nn.Module, names: list[str], data: list[tuple],
                   progress: bool = False) -> dict[str, float]:
    """Shift the bias of each named quantized layer (in order) so its mean output matches the float model's.

    Returns {layer: mean |shift| removed}; layers without a bias are left as they are.
    """
    from tqdm.auto import tqdm

    target = output_means(float_model, names, data)
    shifts = {}
    for name in tqdm(names, desc="bias correction", disable=not progress, leave=False):
        layer = quant_model.get_submodule(name)
        assert isinstance(layer, QuantModule)
        bias = layer.bias_value()
        if bias is None:
            continue
        error = target[name] - output_means(quant_model, [name], data)[name]
        layer.set_bias(bias + error)
        shifts[name] = float(error.abs().mean())
    return shifts
