"""Mixed precision: measure how much each layer hurts when it alone is quantized at b bits, then give
each layer a bit width so the model fits a size budget while losing as little as possible.

Sensitivity is the drop of the task metric on held-out training samples with only that layer's
weights quantized; ties (common with a coarse top-1) are broken by the relative output error. The
assignment is greedy: starting from the widest width everywhere, repeatedly narrow the layer whose next
narrower width costs the least sensitivity per byte saved, until the estimated size fits.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch
from torch import nn

from ..data.task import Task
from ..errors import UserError
from ..measure.metric import outputs, outputs_and_targets, score
from .config import Mixed
from ..graph.layers import compute_weight
from .modules import WeightFormat, quant_type


def tensor_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers as stored."""
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


@torch.no_grad()
def sensitivities(model: nn.Module, formats: dict[str, Callable[[int], WeightFormat]], bits: tuple[int, ...],
                  validation: Task, weight_observer: str, progress: bool = False) -> dict[str, dict]:
    """{layer: {"metric_drop": {bits: drop}, "output_error": {bits: error}}} with only that layer's
    weights quantized (``formats[layer](bits)`` says how)."""
    from tqdm.auto import tqdm

    reference, targets = outputs_and_targets(model, validation)
    base = score(reference, validation, reference, targets=targets)["value"]
    result = {}
    for name in tqdm(list(formats), desc="layer sensitivity", disable=not progress, leave=False):
        module = model.get_submodule(name)
        result[name] = {"metric_drop": {}, "output_error": {}}
        weight = compute_weight(module)
        for b in bits:  # the layer alone is swapped for its quantized version
            quant = quant_type(module)(module, formats[name](b), False).to(weight.device)
            quant.load_float(weight, getattr(module, "bias", None), weight_observer)
            model.set_submodule(name, quant)
            out = outputs(model, validation)
            model.set_submodule(name, module)
            result[name]["metric_drop"][b] = base - score(out, validation, reference, targets=targets)["value"]
            result[name]["output_error"][b] = float((out - reference).pow(2).mean() / reference.pow(2).mean().clamp_min(1e-30))
    return result


def assign_bits(sizes: dict[str, dict[int, int]], sensitivity: dict[str, dict], fixed_bytes: int,
                budget_bytes: int) -> dict[str, int]:
    """Greedy bit widths per layer: narrow the cheapest layer (sensitivity per byte saved) until the
    total (``fixed_bytes`` plus each layer's bytes at its width) fits ``budget_bytes``."""
    bits = {name: max(by_bits) for name, by_bits in sizes.items()}

    def total() -> int:
        return fixed_bytes + sum(sizes[n][b] for n, b in bits.items())

    while total() > budget_bytes:
        moves = []
        for name, b in bits.items():
            narrower = [w for w in sizes[name] if w < b]
            if narrower:
                w = max(narrower)
                saved = sizes[name][b] - sizes[name][w]
                s = sensitivity[name]
                cost = [max(0.0, s[k][w] - s[k][b]) / saved for k in ("metric_drop", "output_error")]
                moves.append((*cost, name, w))
        if not moves:
            raise UserError(f"quantize.mixed: the budget of {budget_bytes} bytes is below the smallest size reachable "
                            f"with these bit widths ({total()} bytes); raise size_ratio/budget_bytes or add narrower bits.")
        *_, name, w = min(moves)
        bits[name] = w
    return bits


def plan_mixed(model: nn.Module, targets: dict[str, nn.Module], format_for: Callable[[nn.Module, int], WeightFormat],
               static: bool, options: Mixed, task: Task, weight_observer: str, float_bytes: int,
               progress: bool = False) -> dict:
    """Choose bits per target layer under ``options``' budget (``size_ratio`` of ``float_bytes``, or bytes).

    Returns {"budget_bytes", "estimated_bytes", "layers": {name: {"bits", "bytes", "metric_drop", "output_error"}}}.
    """
    n = min(options.samples, task.train_size)
    validation = dataclasses.replace(task, test=task.train_rows(-n), augment=None)
    formats = {name: (lambda b, m=module: format_for(m, b)) for name, module in targets.items()}
    sizes = {name: {b: tensor_bytes(quant_type(m)(m, formats[name](b), static)) for b in options.bits}
             for name, m in targets.items()}
    fixed = tensor_bytes(model) - sum(tensor_bytes(m) for m in targets.values())
    budget = options.budget_bytes or int(options.size_ratio * float_bytes)
    sensitivity = sensitivities(model, formats, options.bits, validation, weight_observer, progress)
    bits = assign_bits(sizes, sensitivity, fixed, budget)
    layers = {name: {"bits": bits[name], "bytes": sizes[name][bits[name]], **sensitivity[name]} for name in targets}
    return {"budget_bytes": budget, "estimated_bytes": fixed + sum(v["bytes"] for v in layers.values()), "layers": layers}
