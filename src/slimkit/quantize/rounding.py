"""Weight rounding beyond round-to-nearest: GPTQ and AWQ fitted to calibration inputs block by block, and HQQ
(no data). ``Quantize.method`` chooses."""
from __future__ import annotations

from typing import Callable, Iterable

from torch import nn

from ..errors import UserError
from ..graph.blockwise import InputStats, calibrate_blockwise, input_features
from ..graph.layers import compute_weight
from .awq import KEEP_ROWS, awq_layer
from .config import Quantize
from .gptq import gptq_layer
from .hqq import hqq_layer
from .modules import QuantLinear, QuantModule, quant_type

CALIBRATED = ("gptq", "awq")
Swap = Callable[[str, nn.Module], QuantModule]


def round_layers(model: nn.Module, targets: dict[str, nn.Module], cfg: Quantize, batches: Iterable[tuple] | None,
                 swap: Swap, progress: bool = False) -> dict[str, dict[str, float]]:
    """Replace each of ``targets`` (name -> layer of ``model``) by ``swap(name, layer)``, its quantized layer
    rounded to nearest, then round it again with ``cfg.method``.

    HQQ needs no data and does every layer. GPTQ and AWQ do the Linear layers (the others stay rounded to nearest),
    one transformer block at a time (:func:`slimkit.graph.blockwise.calibrate_blockwise`), each block on the inputs
    that the quantized blocks before it produce; a layer never called on ``batches`` stays rounded to nearest.

    Returns {layer: {"rtn_error": ..., "<method>_error": ...}}: output errors for GPTQ and AWQ, weight errors for HQQ.
    """
    calibrated = {n: m for n, m in targets.items() if cfg.method in CALIBRATED and quant_type(m) is QuantLinear}
    if cfg.method in CALIBRATED and not calibrated:
        raise UserError(f"quantize: method {cfg.method} fits Linear layers to their inputs, and none of the "
                        f"{len(targets)} layers quantized here is a Linear; use method: rtn or hqq.")
    errors = {}
    for name, layer in targets.items():
        if name not in calibrated:
            quant = swap(name, layer)
            if cfg.method == "hqq":
                errors[name] = hqq_layer(quant, compute_weight(layer).detach(), cfg.weight_observer)

    def make_stats(_, layer: nn.Module) -> InputStats:
        keep = KEEP_ROWS if cfg.method == "awq" else 0
        return InputStats(input_features(layer), gram=cfg.method == "gptq", keep_rows=keep)

    def process(stats: dict[str, InputStats]) -> None:
        for name, seen in stats.items():
            layer = calibrated[name]
            weight, quant = compute_weight(layer).detach(), swap(name, layer)
            if seen.rows and cfg.method == "gptq":
                errors[name] = gptq_layer(name, quant, weight, seen, cfg.weight_observer, cfg.gptq_damping,
                                          cfg.gptq_act_order)
            elif seen.rows:
                errors[name] = awq_layer(quant, weight, seen, cfg.weight_observer)

    if calibrated:
        calibrate_blockwise(model, batches, calibrated, make_stats, process, progress)
    return errors
