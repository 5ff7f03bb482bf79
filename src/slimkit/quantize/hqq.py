"""HQQ, Half-Quadratic Quantization (Badri & Shaji, 2023): data-free quantization parameters fitted to the weight.

Half-quadratic splitting alternates two closed-form steps: shrink the quantization error towards a sparse one
(the proximal step of an lp norm with p < 1, so a few large errors are tolerated rather than many small ones
spread out), then refit the group's parameter to the rest, with the penalty weight ``beta`` growing by ``kappa``
each step; the iterations stop once the error grows. The paper fits a float zero point with the scale fixed.
slimkit stores zero points as integers, and a fitted zero point rounded back to the integer grid is no better
than round-to-nearest's (measured: the same error), so here the same solver fits each group's scale, with the
zero point held at its integer. A group keeps its round-to-nearest scale where the fit does not lower its
squared error.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .modules import QuantModule
from .ops import fake_quantize, quantize

LP, BETA, KAPPA, ITERATIONS = 0.7, 10.0, 1.01, 20


def _shrink(x: Tensor, beta: float) -> Tensor:
    """The proximal step of the lp norm (p < 1): generalized soft thresholding."""
    return torch.sign(x) * torch.relu(x.abs() - x.abs().clamp_min(1e-12).pow(LP - 1) / beta)


@torch.no_grad()
def hqq_scales(rows: Tensor, scale: Tensor, zero: Tensor, qmin: int, qmax: int) -> Tensor:
    """Scales (one per row of ``rows``, shape (rows, 1)) fitted by half-quadratic iterations from ``scale``,
    with the integer ``zero`` points held."""
    beta = BETA
    best, best_error = scale, float((rows - fake_quantize(rows, scale, zero, qmin, qmax)).abs().mean())
    for _ in range(ITERATIONS):
        levels = quantize(rows, scale, zero, qmin, qmax) - zero
        target = rows - _shrink(rows - levels * scale, beta)  # the weight less its sparse error
        fit = (levels * target).sum(1, keepdim=True) / levels.square().sum(1, keepdim=True).clamp_min(1e-12)
        scale = fit.clamp_min(1e-12)
        beta *= KAPPA
        error = float((rows - fake_quantize(rows, scale, zero, qmin, qmax)).abs().mean())
        if error >= best_error:
            break
        best, best_error = scale, error
    return best


@torch.no_grad()
def hqq_layer(quant: QuantModule, weight: Tensor, weight_observer: str) -> dict[str, float]:
    """Store ``weight`` in ``quant`` with HQQ scales, starting from ``weight_observer``'s scales and zero points.

    Returns the squared weight error (summed) of round-to-nearest (``rtn_error``) and of HQQ (``hqq_error``).
    """
    qmin, qmax = quant.fmt.qmin_qmax
    scale, zero = quant.weight_qparams(weight, weight_observer)
    rows = quant._rows(weight.float())
    rtn_scale, row_zero = scale.reshape(-1, 1), zero.reshape(-1, 1).float()
    fitted = hqq_scales(rows, rtn_scale, row_zero, qmin, qmax)

    def row_error(s: Tensor) -> Tensor:
        return (rows - fake_quantize(rows, s, row_zero, qmin, qmax)).square().sum(1, keepdim=True)

    rtn, hqq = row_error(rtn_scale), row_error(fitted)
    scale = torch.where(hqq < rtn, fitted, rtn_scale).reshape(scale.shape)
    quant.load_quantized(quant.quantize_weight(weight, scale, zero), scale, zero, quant.bias_value(), {})
    return {"rtn_error": float(rtn.sum()), "hqq_error": float(torch.minimum(hqq, rtn).sum())}
