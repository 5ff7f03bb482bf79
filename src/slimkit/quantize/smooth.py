"""SmoothQuant (Xiao et al., 2022): move activation outliers into the weights before static INT8 quantization.

A few input channels of a transformer's Linear layers carry activations far larger than the rest, and the one
int8 scale of the input must cover them, leaving the other channels few levels. Dividing input channel j by
``s_j = max|x_j| ** alpha / max|w_j| ** (1 - alpha)`` and multiplying weight column j by it keeps the float
function and evens out the inputs (``alpha`` says how much of the difficulty moves into the weights). The scaled
weight is what gets quantized; the quantized layer multiplies its input by ``1 / s``
(``QuantModule.input_multiplier``) before the input's QDQ. The multiply is not folded into a preceding LayerNorm.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor, nn

from ..graph.blockwise import InputStats, calibrate_blockwise, input_features
from ..graph.layers import compute_weight, is_conv1d


@torch.no_grad()
def smooth_layer(layer: nn.Module, input_max: Tensor, alpha: float) -> Tensor:
    """Scale the weight columns of ``layer`` (a Linear or transformers' Conv1D) by SmoothQuant's factors for
    inputs with per-feature maxima ``input_max``, and have it multiply its input by their inverse (a forward
    pre-hook, until the layer is replaced by its quantized one). Returns that input multiplier."""
    weight = compute_weight(layer).detach()
    s = (input_max.clamp_min(1e-5).pow(alpha) / weight.abs().amax(0).clamp_min(1e-5).pow(1 - alpha)).clamp_min(1e-5)
    scaled = weight * s
    layer.weight = nn.Parameter(scaled.T.contiguous() if is_conv1d(layer) else scaled)  # a tied weight is not touched
    multiplier = 1 / s
    layer.register_forward_pre_hook(lambda _, args: (args[0] * multiplier, *args[1:]))
    return multiplier


def smooth_linears(model: nn.Module, layers: dict[str, nn.Module], batches: Iterable[tuple], alpha: float,
                   progress: bool = False) -> dict[str, Tensor]:
    """Smooth ``layers`` (name -> Linear of ``model``) with input maxima collected block by block over ``batches``.

    Returns {layer name: input multiplier}; layers never called are left as they are.
    """
    multipliers = {}

    def process(stats: dict[str, InputStats]) -> None:
        for name, seen in stats.items():
            if seen.rows:
                multipliers[name] = smooth_layer(layers[name], seen.abs_max, alpha)

    calibrate_blockwise(model, batches, layers, lambda _, layer: InputStats(input_features(layer)), process, progress)
    return multipliers
