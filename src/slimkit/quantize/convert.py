"""``quantize_model``: fold, calibrate and swap layers for quantized ones; the ``quantize`` step handler."""
from __future__ import annotations

import copy
import dataclasses
import fnmatch
import json
import math
from typing import Iterable

import torch
from torch import Tensor, nn

from ..data.task import Task
from ..errors import UserError
from ..graph.fold import conv_bn_pairs, fold_batchnorm
from ..graph.layers import compute_weight, is_leaf, read_by_parent, tie_notes, tied_weights, unlike_base
from ..recipe import register
from .adaround import adaround_model
from .bias_correction import correct_biases
from .calibrate import calibrate, require_batches
from .cle import equalization_pairs, equalize
from .config import Quantize
from .floats import cast_model
from .mixed import plan_mixed, tensor_bytes
from .modules import QUANT_TYPES, QuantConv2d, QuantLinear, QuantModule, WeightFormat, quant_type
from .qat import train_quantized
from .rounding import CALIBRATED, round_layers
from .smooth import smooth_linears

NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


@dataclasses.dataclass
class Plan:
    """What a quantization did, as JSON-able data a checkpoint needs to rebuild the model.

    Args:
        folded: (conv, batchnorm) names folded together.
        layers: quantized layer name -> its :class:`WeightFormat` fields, whether activations are static and whether
            it multiplies its input (``input_multiplier``: AWQ, SmoothQuant).
        skipped: layer name -> why it stayed in float.
        equalized: (first, second) conv pairs rescaled by Cross-Layer Equalization.
        mixed: the mixed-precision budget, and per layer its sensitivity, bytes and chosen bits.
        adaround: per layer, reconstruction error of round-to-nearest and of AdaRound.
        bias_correction: per layer, the mean absolute bias shift applied.
        qat: training history of quantization-aware training.
        tied: quantized layer -> the modules it shared its weight with (each now stores its own copy).
        method: how weights were rounded (``Quantize.method``).
        rounding: per layer done by ``method`` (not ``rtn``), its error rounded to nearest and by the method:
            output errors for GPTQ and AWQ (AWQ also records its ``alpha``), weight errors for HQQ.
        smooth: SmoothQuant's ``alpha`` and the Linear layers it smoothed.
    """

    folded: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    layers: dict[str, dict] = dataclasses.field(default_factory=dict)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    equalized: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    mixed: dict | None = None
    adaround: dict[str, dict] = dataclasses.field(default_factory=dict)
    bias_correction: dict[str, float] = dataclasses.field(default_factory=dict)
    qat: dict | None = None
    tied: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    method: str = "rtn"
    rounding: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    smooth: dict | None = None

    def notes(self) -> list[str]:
        lines = [f"quantize: {len(self.layers)} layers quantized, {len(self.folded)} BatchNorms folded"]
        if self.equalized:
            lines.append(f"quantize: cross-layer equalization of {len(self.equalized)} conv pairs")
        if self.mixed:
            widths = sorted({v["bits"] for v in self.mixed["layers"].values()})
            counts = ", ".join(f"{sum(v['bits'] == b for v in self.mixed['layers'].values())} at int{b}" for b in widths)
            lines.append(f"quantize: mixed precision {counts}; estimated {self.mixed['estimated_bytes']} bytes "
                         f"(budget {self.mixed['budget_bytes']})")
        if self.adaround:
            rtn = sum(v["rtn_error"] for v in self.adaround.values())
            ada = sum(v["adaround_error"] for v in self.adaround.values())
            lines.append(f"quantize: AdaRound on {len(self.adaround)} layers, reconstruction error {ada:.4g} vs {rtn:.4g} rounding to nearest")
        if self.rounding:
            rtn = sum(v["rtn_error"] for v in self.rounding.values())
            fitted = sum(v[f"{self.method}_error"] for v in self.rounding.values())
            kind = "weight" if self.method == "hqq" else "output"
            others = len(self.layers) - len(self.rounding)
            lines.append(f"quantize: {self.method.upper()} on {len(self.rounding)} layers, {kind} error {fitted:.4g} "
                         f"vs {rtn:.4g} rounding to nearest" + (f"; {others} others rounded to nearest" if others else ""))
        if self.smooth:
            lines.append(f"quantize: SmoothQuant (alpha {self.smooth['alpha']}) on {len(self.smooth['layers'])} Linear "
                         "layers; each multiplies its input by 1/s (not folded into the preceding norm)")
        if self.bias_correction:
            lines.append(f"quantize: bias correction on {len(self.bias_correction)} layers")
        if self.qat:
            lines.append(f"quantize: QAT, final training loss {self.qat['loss'][-1]:.4f}")
        lines += [f"quantize: {name} stays float ({why})" for name, why in self.skipped.items()]
        lines += tie_notes("quantize", self.tied)
        return lines


def _weight_format(cfg: Quantize, module: nn.Module, bits: int) -> WeightFormat:
    group = None if isinstance(module, nn.Embedding) else cfg.group_size
    return WeightFormat(bits, cfg.symmetric, group, cfg.granularity == "per_channel",
                        cfg.reduce_range and bits == 8 and cfg.activations != "none")


def _check_groups(cfg: Quantize, targets: dict[str, nn.Module]) -> None:
    """UserError naming the layers whose input features ``cfg.group_size`` does not divide (tables have row scales)."""
    features = {n: compute_weight(m)[0].numel() for n, m in targets.items() if not isinstance(m, nn.Embedding)}
    bad = {n: f for n, f in features.items() if f % cfg.group_size}
    if bad:
        common = math.gcd(*features.values())
        sizes = ", ".join(str(2**k) for k in range(1, 9) if common % 2**k == 0)
        fits = (f"use a group size that divides every layer ({sizes}), or" if sizes
                else "no power of two divides every layer;")
        raise UserError(f"quantize: group_size {cfg.group_size} does not divide the input features of "
                        f"{', '.join(f'{n} ({f})' for n, f in bad.items())}; {fits} keep those layers in float with "
                        f"exclude: {list(bad)}.")


def _targets(model: nn.Module, cfg: Quantize, plan: Plan) -> dict[str, nn.Module]:
    """Layers to quantize; other layers with weights are recorded in ``plan.skipped``."""
    targets, parent_reads = {}, read_by_parent(model)
    for name, module in model.named_modules():
        if not name or not is_leaf(module) or isinstance(module, NORMS + (QuantModule,)):
            continue
        kind = quant_type(module)
        if any(fnmatch.fnmatchcase(name, p) for p in cfg.exclude):
            plan.skipped[name] = "excluded by config"
        elif kind is not None and name in parent_reads:
            plan.skipped[name] = parent_reads[name]
        elif kind is QuantConv2d and module.padding_mode != "zeros":
            plan.skipped[name] = f"no quantized kernel for padding_mode {module.padding_mode!r}"
        elif kind is not None:
            targets[name] = module
        elif isinstance(getattr(module, "weight", None), Tensor):
            plan.skipped[name] = unlike_base(module, tuple(QUANT_TYPES)) or f"no quantized kernel for {type(module).__name__}"
    return targets


def quantize_model(model: nn.Module, cfg: Quantize, calibration: Iterable[tuple] | None = None,
                   progress: bool = False, task: Task | None = None, device: str = "cpu") -> tuple[nn.Module, Plan]:
    """Quantize ``model`` in place as ``cfg`` says and return it with the :class:`Plan` that was applied.

    Order: fold BatchNorms, equalize pairs (``cle``), smooth (``smooth``), calibrate, choose bits (``mixed``), round
    to nearest, then round by ``method`` (GPTQ, AWQ, HQQ), AdaRound or QAT, then bias correction.

    Args:
        calibration: iterable of model-input tuples (a data loader); required for ``activations: int8``,
            ``method: gptq`` or ``awq``, ``adaround`` and ``bias_correction``.
        progress: show progress bars.
        task: training data for ``qat`` and ``mixed``.
        device: where QAT trains.
    """
    plan = Plan()
    if cfg.is_float:
        return cast_model(model, cfg.weights), plan
    model.eval()
    float_bytes = tensor_bytes(model)
    if cfg.fold_batchnorm:
        plan.folded = conv_bn_pairs(model)
        fold_batchnorm(model, plan.folded)
    if cfg.cle:
        plan.equalized = equalization_pairs(model)
        equalize(model, plan.equalized)
    targets = _targets(model, cfg, plan)
    if not targets:
        raise UserError("quantize: no layer to quantize: kernels exist for Linear (and transformers' Conv1D), Conv2d "
                        f"(zero padding) and Embedding only; float layers: {plan.skipped or 'none'}. Remove the step "
                        "or adjust exclude.")
    if cfg.group_size:
        _check_groups(cfg, targets)
    if (cfg.qat or cfg.mixed) and task is None:
        raise UserError("quantize with qat or mixed needs training data; pass data (e.g. --data fashion-mnist).")
    static = cfg.activations == "int8"
    calibration = None if calibration is None else require_batches(calibration)
    if calibration is None and (static or cfg.adaround or cfg.bias_correction or cfg.method in CALIBRATED):
        raise UserError(f"quantize: activations: int8, method: gptq or awq, adaround and bias_correction need "
                        f"calibration data (here activations: {cfg.activations}, method: {cfg.method}); pass data.")
    ties, multipliers, observers = tied_weights(model, targets), {}, {}  # ties before smoothing unties weights
    if cfg.smooth is not None:
        linears = {n: m for n, m in targets.items() if quant_type(m) is QuantLinear}
        multipliers = smooth_linears(model, linears, calibration, cfg.smooth, progress)
        plan.smooth = {"alpha": cfg.smooth, "layers": list(multipliers)}
    if static:
        activated = [n for n, m in targets.items() if not isinstance(m, nn.Embedding)]
        observers = calibrate(model, activated, calibration, cfg.observer, progress)
        for name in [n for n in activated if observers[n][0].batches == 0]:
            plan.skipped[name] = "never called during calibration"
            del targets[name]
    bits = dict.fromkeys(targets, cfg.bits)
    if cfg.mixed:
        plan.mixed = plan_mixed(model, targets, lambda m, b: _weight_format(cfg, m, b), static, cfg.mixed,
                                task, cfg.weight_observer, float_bytes, progress)
        bits = {name: layer["bits"] for name, layer in plan.mixed["layers"].items()}
    float_model = copy.deepcopy(model) if cfg.bias_correction or cfg.qat else None
    float_params, plan.method = {}, cfg.method
    plan.tied = {name: ties[name] for name in targets if name in ties}

    def swap(name: str, module: nn.Module) -> QuantModule:
        """Replace ``module`` by its quantized layer, rounded to nearest."""
        layer_static = static and not isinstance(module, nn.Embedding)
        quant = _quant_layer(module, _weight_format(cfg, module, bits[name]), layer_static, cfg)
        quant.input_multiplier = multipliers.get(name)
        weight, bias = compute_weight(module).detach(), getattr(module, "bias", None)
        quant.load_float(weight, bias, cfg.weight_observer, *observers.get(name, ()))
        model.set_submodule(name, quant)
        float_params[name] = (weight.clone(), None if bias is None else bias.detach().clone())
        return quant

    plan.rounding = round_layers(model, targets, cfg, calibration, swap, progress)
    for name in targets:
        quant = model.get_submodule(name)
        plan.layers[name] = {**dataclasses.asdict(quant.fmt), "static": quant.static,
                             "input_multiplier": quant.input_multiplier is not None}
    if cfg.adaround:
        plan.adaround = adaround_model(model, float_params, calibration, cfg.adaround_iterations, progress)
    if cfg.qat:
        plan.qat = train_quantized(model, float_params, task, cfg.qat, float_model, device, progress)
    if cfg.bias_correction:
        plan.bias_correction = correct_biases(float_model, model, list(targets), calibration, progress)
    return model, plan


def _quant_layer(module: nn.Module, fmt: WeightFormat, static: bool, cfg: Quantize) -> QuantModule:
    """The quantized layer (empty integer weights) replacing ``module``, with the step's export options."""
    quant = quant_type(module)(module, fmt, static)
    quant.quantize_output, quant.dynamic = cfg.output_qdq, cfg.activations == "dynamic"
    return quant


def rebuild(model: nn.Module, config: dict, plan: dict) -> nn.Module:
    """Recreate the quantized structure (empty buffers) on a freshly built float model, for loading weights."""
    cfg = Quantize.from_dict(dict(config))
    if cfg.is_float:
        return cast_model(model, cfg.weights)
    fold_batchnorm(model, [tuple(p) for p in plan["folded"]])
    for name, layer in plan["layers"].items():
        module = model.get_submodule(name)
        fmt = WeightFormat(**{f.name: layer[f.name] for f in dataclasses.fields(WeightFormat)})
        quant = _quant_layer(module, fmt, layer["static"], cfg)
        if layer.get("input_multiplier"):
            quant.input_multiplier = torch.ones(quant.weight_shape[1])
        model.set_submodule(name, quant)
    return model


def _replay(model: nn.Module, entry: dict) -> nn.Module:
    return rebuild(model, entry["config"], entry["replay"])


@register(Quantize, replay=_replay)
def quantize_step(model: nn.Module, cfg: Quantize, ctx) -> nn.Module:
    """Quantize with calibration on ``ctx.task`` when activations are static; list float layers in notes."""
    calibration = None
    if cfg.needs_data:
        calibration = ctx.require_task("quantize").input_batches(cfg.calibration_batches, cfg.batch_size)
    model, plan = quantize_model(model, cfg, calibration, ctx.progress, ctx.task, ctx.device)
    ctx.notes.extend(plan.notes())
    if plan.mixed:
        (ctx.out_dir / "quantize_mixed.json").write_text(json.dumps(plan.mixed, indent=2))
        ctx.artifacts["quantize_mixed"] = "quantize_mixed.json"
    ctx.record(dataclasses.asdict(plan))
    return model


def quantized_layers(model: nn.Module) -> dict[str, QuantModule]:
    """The quantized layers of ``model`` by name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, QuantModule)}
