"""Per-layer facts for the report: MACs, weights and non-zero weights of each weight-bearing layer, and a
histogram of all weights (as the layers compute with them: dequantized, decoded from a codebook)."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

HISTOGRAM_BINS = 60


@runtime_checkable
class StoredWeight(Protocol):
    """A layer that stores its weight in another form (quantized, a codebook) and computes with it as floats."""

    def float_weight(self) -> Tensor:
        """The float weight the layer computes with."""


def layer_weights(model: nn.Module) -> dict[str, Tensor]:
    """The float weight matrix/kernel of every Linear/Conv/Embedding-like layer, by module name.

    Layers that store their weight in another form (:class:`StoredWeight`: quantized, clustered) give
    the float weight they compute with, so every stage of a run is described in the same terms. Norm
    layers (1-D weights) are left out.
    """
    out = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            weight = module.float_weight() if isinstance(module, StoredWeight) else _held_weight(module)
            if name and isinstance(weight, Tensor) and weight.dim() >= 2:
                out[name] = weight.detach().float().cpu()
    return out


def _held_weight(module: nn.Module) -> Tensor | None:
    """The module's own weight (a parameter, buffer or parametrized tensor), not one derived from its children
    (a factorised layer's ``weight`` property): those children are counted themselves."""
    held = "weight" in module._parameters or "weight" in module._buffers or parametrize.is_parametrized(module, "weight")
    return module.weight if held else None


def layer_stats(weights: dict[str, Tensor], macs_per_layer: dict[str, int]) -> dict[str, dict]:
    """``{name: {"macs", "weights", "nonzero_weights"}}``; ``macs`` is left out where the MAC counter
    attributed none of its own to the layer (e.g. a clustered layer, whose op runs in its wrapper)."""
    out = {}
    for name, weight in weights.items():
        row = {"weights": weight.numel(), "nonzero_weights": int(torch.count_nonzero(weight))}
        if name in macs_per_layer:
            row["macs"] = macs_per_layer[name]
        out[name] = row
    return out


def weight_histogram(weights: dict[str, Tensor], bins: int = HISTOGRAM_BINS, coverage: float = 0.999) -> dict | None:
    """Histogram of every weight of every layer over ``bins`` equal bins symmetric about zero.

    The range is +-(the ``coverage`` quantile of |w|), so a few outliers do not squeeze the bulk into a
    handful of bins; the weights beyond it are counted in the end bins and reported as ``clamped``.
    Returns ``{"edges": [bins + 1 floats], "counts": [bins ints], "zeros": exact zeros, "clamped": n}``,
    or None for a model without weight-bearing layers.
    """
    if not weights:
        return None
    values = torch.cat([w.flatten() for w in weights.values()])
    magnitudes = values.abs()
    limit = float(magnitudes.kthvalue(max(1, round(coverage * len(values)))).values) or float(magnitudes.max()) or 1.0
    counts = torch.histc(values.clamp(-limit, limit), bins=bins, min=-limit, max=limit)
    edges = torch.linspace(-limit, limit, bins + 1)
    return {"edges": [round(float(e), 6) for e in edges], "counts": [int(c) for c in counts],
            "zeros": int((values == 0).sum()), "clamped": int((magnitudes > limit).sum())}
