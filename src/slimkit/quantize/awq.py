"""AWQ, Activation-aware Weight Quantization (Lin et al., 2023): protect the weights of large inputs by scaling.

A few input channels of a Linear layer carry much larger activations than the rest, and the rounding error of
their weights costs the most. Scaling those weight columns up by ``s`` (and the inputs down by ``1 / s``) leaves
the float function unchanged but shrinks their relative rounding error. ``s = mean|x| ** alpha``, normalised so
that ``sqrt(max(s) * min(s)) = 1``, with ``alpha`` chosen on a grid over [0, 1) by the layer's output error on
calibration rows (``alpha = 0`` is round-to-nearest). The quantized layer multiplies its input by ``1 / s``
(``QuantModule.input_multiplier``).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..graph.blockwise import InputStats
from .modules import QuantModule

KEEP_ROWS = 512  # calibration rows the output error is measured on
GRID = 20


def awq_scales(mean_magnitude: Tensor, alpha: float) -> Tensor:
    """Per-input scales ``mean|x| ** alpha`` normalised to a geometric mid-range of 1."""
    s = mean_magnitude.clamp_min(1e-4).pow(alpha).clamp_min(1e-4)
    return s / (s.max() * s.min()).sqrt()


@torch.no_grad()
def awq_layer(quant: QuantModule, weight: Tensor, stats: InputStats, weight_observer: str) -> dict[str, float]:
    """Store ``weight`` (outputs, inputs) in ``quant`` with the AWQ scaling that best reproduces its outputs on
    ``stats.kept`` (scales from ``weight_observer``). Returns the output error (mean over rows of the squared error
    summed over outputs) of round-to-nearest and of AWQ, and the chosen ``alpha``."""
    x, weight = stats.kept, weight.float()
    reference = x @ weight.T
    errors, best = [], None
    for alpha in (step / GRID for step in range(GRID)):
        s = awq_scales(stats.abs_mean, alpha)
        scale, zero = quant.weight_qparams(weight * s, weight_observer)
        q = quant.quantize_weight(weight * s, scale, zero)
        errors.append(float(((x / s) @ quant.dequantize_weight(q, scale, zero).T - reference).square().sum(1).mean()))
        if best is None or errors[-1] < best[0]:
            best = (errors[-1], alpha, s, q, scale, zero)
    error, alpha, s, q, scale, zero = best
    if alpha > 0:
        quant.input_multiplier = 1 / s
    quant.load_quantized(q, scale, zero, quant.bias_value(), {})
    return {"rtn_error": errors[0], "awq_error": error, "alpha": alpha}
