"""GPTQ (Frantar et al., 2022): round a Linear layer's weight column by column, compensating each column's
rounding error in the columns not yet rounded.

The layer's squared output error on its calibration inputs X is ``tr(D H D^T) / 2`` for a weight error D, with
Hessian ``H = 2 X^T X / rows``. Rounding one column and updating the rest by the inverse Hessian (through the
upper Cholesky factor of ``H^-1``) minimises that error greedily. Columns are done in blocks of 128, the other
columns updated once per block (lazy batch updates); with activation order, columns with the largest inputs
(``diag H``) go first. Scales and zero points come from the original weight before any update ("static
groups"), so each group of contiguous columns keeps one scale whatever order its columns are rounded in.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..errors import UserError
from ..graph.blockwise import InputStats
from .modules import QuantModule
from .ops import dequantize, quantize

BLOCK = 128


def _per_weight(t: Tensor, shape: torch.Size) -> Tensor:
    """Scales or zero points given per row of ``QuantModule._rows`` (per channel, per group of contiguous
    columns, or one for the tensor), as one value per weight of ``shape`` (outputs, inputs)."""
    outputs, inputs = shape
    t = t.reshape(outputs, -1) if t.numel() > 1 else t.reshape(1, 1)
    return t.repeat_interleave(inputs // t.shape[1], dim=1).expand(outputs, inputs)


@torch.no_grad()
def gptq_integers(weight: Tensor, hessian: Tensor, scale: Tensor, zero: Tensor, qmin: int, qmax: int,
                  damping: float, act_order: bool) -> Tensor:
    """Integer weights (int32, ``weight``'s shape) chosen by GPTQ with per-weight ``scale`` and ``zero``.

    Args:
        hessian: (inputs, inputs); inputs never seen non-zero (diagonal 0) are rounded to nearest.
        damping: added to the diagonal, as a fraction of its mean, so the Cholesky factorisation exists.
        act_order: round columns in decreasing order of ``diag(hessian)``.
    """
    h = hessian.double().clone()
    dead = h.diagonal() == 0
    h[dead, dead] = 1
    order = torch.argsort(h.diagonal(), descending=True) if act_order else torch.arange(len(h))
    w, h = weight.float()[:, order].clone(), h[order][:, order]
    scale, zero = scale[:, order].float(), zero[:, order].float()
    h.diagonal().add_(damping * h.diagonal().mean())
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True).float()
    q = torch.zeros_like(w, dtype=torch.int32)
    for start in range(0, w.shape[1], BLOCK):
        end = min(start + BLOCK, w.shape[1])
        errors = torch.zeros(w.shape[0], end - start)
        for i in range(start, end):
            q[:, i] = quantize(w[:, i], scale[:, i], zero[:, i], qmin, qmax)
            error = (w[:, i] - dequantize(q[:, i], scale[:, i], zero[:, i])) / hinv[i, i]
            w[:, i:end] -= error[:, None] * hinv[i, i:end][None]
            errors[:, i - start] = error
        w[:, end:] -= errors @ hinv[start:end, end:]
    return q[:, torch.argsort(order)]


def output_error(delta: Tensor, hessian: Tensor) -> float:
    """Mean squared output error per calibration row (summed over outputs) of weight error ``delta``."""
    delta = delta.double()
    return float(((delta @ hessian) * delta).sum() / 2)


@torch.no_grad()
def gptq_layer(name: str, quant: QuantModule, weight: Tensor, stats: InputStats, weight_observer: str,
               damping: float, act_order: bool) -> dict[str, float]:
    """Store ``weight`` (outputs, inputs) in ``quant`` rounded by GPTQ on the inputs summarised in ``stats``,
    with scales from ``weight_observer``. Returns the output error of round-to-nearest and of GPTQ."""
    if stats.rows < weight.shape[1]:
        raise UserError(f"quantize: calibration set too small for GPTQ's Hessian: layer {name} saw {stats.rows} rows, "
                        f"needs at least {weight.shape[1]}; raise calibration_batches or batch_size (or exclude it).")
    qmin, qmax = quant.fmt.qmin_qmax
    scale, zero = quant.weight_qparams(weight, weight_observer)
    hessian = stats.hessian
    q = gptq_integers(weight, hessian, _per_weight(scale, weight.shape), _per_weight(zero, weight.shape),
                      qmin, qmax, damping, act_order)
    rtn = quant.quantize_weight(weight, scale, zero)
    errors = {key: output_error(weight - quant.dequantize_weight(ints, scale, zero), hessian)
              for key, ints in (("rtn_error", rtn), ("gptq_error", q))}
    quant.load_quantized(q, scale, zero, quant.bias_value(), {})
    return errors
