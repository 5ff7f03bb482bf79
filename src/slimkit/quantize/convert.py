"""``quantize_model``: fold, calibrate and swap layers for quantized ones; the ``quantize`` step handler."""
from __future__ import annotations

import dataclasses
import fnmatch
from typing import Iterable

from torch import nn

from ..compile.fold import conv_bn_pairs, fold_batchnorm
from ..recipe import register
from .calibrate import calibrate, task_batches
from .config import Quantize
from .floats import cast_model
from .modules import QUANT_TYPES, QuantModule, WeightFormat

NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


@dataclasses.dataclass
class Plan:
    """What a quantization did, as JSON-able data a checkpoint needs to rebuild the model.

    Args:
        folded: (conv, batchnorm) names folded together.
        layers: quantized layer name -> its :class:`WeightFormat` fields and whether activations are static.
        skipped: layer name -> why it stayed in float.
    """

    folded: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    layers: dict[str, dict] = dataclasses.field(default_factory=dict)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)

    def notes(self) -> list[str]:
        lines = [f"quantize: {len(self.layers)} layers quantized, {len(self.folded)} BatchNorms folded"]
        lines += [f"quantize: {name} stays float ({why})" for name, why in self.skipped.items()]
        return lines


def _weight_format(cfg: Quantize, module: nn.Module) -> WeightFormat:
    group = cfg.group_size
    if group and (isinstance(module, nn.Embedding) or module.weight[0].numel() % group):
        group = None
    return WeightFormat(cfg.bits, cfg.symmetric, group, cfg.granularity == "per_channel",
                        cfg.reduce_range and cfg.bits == 8 and cfg.activations != "none")


def _targets(model: nn.Module, cfg: Quantize, plan: Plan) -> dict[str, nn.Module]:
    """Layers to quantize; other layers with weights are recorded in ``plan.skipped``."""
    targets = {}
    for name, module in model.named_modules():
        if not name or any(True for _ in module.children()) or isinstance(module, NORMS):
            continue
        if any(fnmatch.fnmatchcase(name, p) for p in cfg.exclude):
            plan.skipped[name] = "excluded by config"
        elif type(module) in QUANT_TYPES and not (isinstance(module, nn.Conv2d) and module.padding_mode != "zeros"):
            targets[name] = module
        elif isinstance(getattr(module, "weight", None), nn.Parameter):
            plan.skipped[name] = f"no quantized kernel for {type(module).__name__}"
    return targets


def quantize_model(model: nn.Module, cfg: Quantize, calibration: Iterable[tuple] | None = None,
                   progress: bool = False) -> tuple[nn.Module, Plan]:
    """Quantize ``model`` in place as ``cfg`` says and return it with the :class:`Plan` that was applied.

    Args:
        calibration: iterable of model-input tuples (a data loader); required for ``activations: int8``.
        progress: show a progress bar while calibrating.
    """
    plan = Plan()
    if cfg.is_float:
        return cast_model(model, cfg.weights), plan
    model.eval()
    if cfg.fold_batchnorm:
        plan.folded = conv_bn_pairs(model)
        fold_batchnorm(model, plan.folded)
    targets = _targets(model, cfg, plan)
    static = cfg.activations == "int8"
    observers = {}
    if static:
        if calibration is None:
            raise ValueError("activations: int8 needs calibration data")
        activated = [n for n, m in targets.items() if not isinstance(m, nn.Embedding)]
        observers = calibrate(model, activated, calibration, cfg.observer, progress)
        for name in [n for n in activated if observers[n][0].batches == 0]:
            plan.skipped[name] = "never called during calibration"
            del targets[name]
    for name, module in targets.items():
        fmt = _weight_format(cfg, module)
        layer_static = static and not isinstance(module, nn.Embedding)
        quant = QUANT_TYPES[type(module)](module, fmt, layer_static)
        quant.load_float(module.weight, getattr(module, "bias", None), cfg.weight_observer, *observers.get(name, ()))
        model.set_submodule(name, quant)
        plan.layers[name] = {**dataclasses.asdict(fmt), "static": layer_static}
    return model, plan


def rebuild(model: nn.Module, config: dict, plan: dict) -> nn.Module:
    """Recreate the quantized structure (empty buffers) on a freshly built float model, for loading weights."""
    cfg = Quantize.from_dict(dict(config))
    if cfg.is_float:
        return cast_model(model, cfg.weights)
    fold_batchnorm(model, [tuple(p) for p in plan["folded"]])
    for name, layer in plan["layers"].items():
        module = model.get_submodule(name)
        fmt = WeightFormat(**{k: v for k, v in layer.items() if k != "static"})
        model.set_submodule(name, QUANT_TYPES[type(module)](module, fmt, layer["static"]))
    return model


def _replay(model: nn.Module, entry: dict) -> nn.Module:
    return rebuild(model, entry["config"], entry["replay"])


@register(Quantize, replay=_replay)
def quantize_step(model: nn.Module, cfg: Quantize, ctx) -> nn.Module:
    """Quantize with calibration on ``ctx.task`` when activations are static; list float layers in notes."""
    calibration = None
    if cfg.activations == "int8":
        calibration = task_batches(ctx.require_task("quantize"), cfg.calibration_batches, cfg.batch_size)
    model, plan = quantize_model(model, cfg, calibration, ctx.progress)
    ctx.notes.extend(plan.notes())
    ctx.record(dataclasses.asdict(plan))
    return model


def quantized_layers(model: nn.Module) -> dict[str, QuantModule]:
    """The quantized layers of ``model`` by name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, QuantModule)}
