"""The ``export`` step: model.onnx (and model.fp16.onnx) verified against PyTorch in onnxruntime."""
from __future__ import annotations

import dataclasses
from typing import Literal

from torch import nn

from ..errors import UserError
from ..recipe import StepConfig, check, register
from ..runtime import RUNTIMES, TOLERANCES, is_quantized, verify
from ..runtime.onnx import export_onnx
from ..runtime.onnxruntime import to_fp16


@dataclasses.dataclass
class Export(StepConfig):
    """Export the model to a deployable file in the run directory and pick the runtime it runs on.

    Args:
        format: only ``onnx`` for now.
        opset: ONNX opset version.
        dynamic_batch: export with a symbolic batch dimension.
        atol: largest allowed absolute difference between onnxruntime and PyTorch outputs; also the
            accuracy tolerance a ``backend: auto`` candidate must meet.
        atol_quantized: the same for models with integer weights, whose runtime rounds differently
            from the eager simulation (a few output quantization steps).
        fp16: also write model.fp16.onnx: onnxruntime's float16 conversion of the FP32 graph
            (weights and activations FP16, inputs and outputs kept FP32), checked against ``atol_fp16``.
        atol_fp16: largest allowed absolute difference of the FP16 graph from PyTorch FP32.
        ort_opt_level: onnxruntime graph optimisation level (disable, basic, extended, all) used to
            verify the export and to run it.
        backend: the runtime to deploy on: ``eager``, ``compile`` (torch.compile, inductor),
            ``onnxruntime``, ``tensorrt`` (onnxruntime's TensorRT provider; falls back with a warning
            when absent) or ``auto`` (time ``candidates`` side by side, keep the fastest within the
            tolerance). The choice is written to backend.json.
        candidates: what ``auto`` considers: eager, compile, onnxruntime (every optimisation level),
            onnxruntime_fp16 (considered only with ``fp16: true``, kept only if within ``atol``), openvino
            (FP32, or INT8 for a quantized model; left out when not installed or when it cannot take the model).
        batch_size: batch size (rows) at which ``auto`` times the candidates.
        repeats: timed samples per candidate for ``auto``.
    """

    key = "export"
    format: Literal["onnx"] = "onnx"
    opset: int = 18
    dynamic_batch: bool = True
    atol: float = TOLERANCES["fp32"]
    atol_quantized: float = TOLERANCES["int8"]
    fp16: bool = False
    atol_fp16: float = TOLERANCES["fp16"]
    ort_opt_level: Literal["disable", "basic", "extended", "all"] = "all"
    backend: Literal["eager", "compile", "onnxruntime", "tensorrt", "auto"] = "onnxruntime"
    candidates: tuple[str, ...] = ("eager", "compile", "onnxruntime", "onnxruntime_fp16")
    batch_size: int = 1
    repeats: int = 20

    def __post_init__(self):
        check(13 <= self.opset <= 23, "opset", f"must be in 13..23, got {self.opset}")
        check(self.atol > 0, "atol", "must be > 0")
        check(self.atol_quantized > 0, "atol_quantized", "must be > 0")
        check(self.atol_fp16 > 0, "atol_fp16", "must be > 0")
        unknown = [c for c in self.candidates if c not in CANDIDATES]
        check(not unknown and len(self.candidates) > 0, "candidates",
              f"choose from {', '.join(CANDIDATES)}; got {list(self.candidates)}")
        check(self.batch_size >= 1, "batch_size", "must be >= 1")
        check(self.repeats >= 3, "repeats", "must be >= 3")


CANDIDATES = ("eager", "compile", "onnxruntime", "onnxruntime_fp16", "openvino")


@register(Export)
def export(model: nn.Module, cfg: Export, ctx) -> nn.Module:
    """Write model.onnx (and model.fp16.onnx) into the run directory, check them against PyTorch on
    batch 1 and 2 in onnxruntime, and choose the backend (backend.json)."""
    from .backends import select_backend

    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    path = export_onnx(model, ctx.example_inputs, ctx.out_dir / "model.onnx", cfg.opset, cfg.dynamic_batch)
    probe = ctx.batch(2) if cfg.dynamic_batch else ctx.example_inputs
    ort = RUNTIMES["onnxruntime"]
    diff = verify(ort.prepare(path, probe, threads=ctx.threads, opt_level=cfg.ort_opt_level), model, probe)
    atol, name = (cfg.atol_quantized, "atol_quantized") if is_quantized(model) else (cfg.atol, "atol")
    if diff > atol:
        raise UserError(f"Exported ONNX differs from PyTorch by {diff:.2e} > {name} {atol}; raise `{name}` or report the model.")
    ctx.artifacts["onnx"] = path.name
    ctx.notes.append(f"export: model.onnx matches PyTorch within {diff:.1e} (max abs) in onnxruntime "
                     f"(graph optimisation level {cfg.ort_opt_level})")
    diffs = {"onnx": diff}
    if cfg.fp16:
        half = to_fp16(path, ctx.out_dir / "model.fp16.onnx")
        diffs["onnx_fp16"] = verify(ort.prepare(half, probe, threads=ctx.threads, opt_level=cfg.ort_opt_level), model, probe)
        if diffs["onnx_fp16"] > cfg.atol_fp16:
            raise UserError(f"model.fp16.onnx differs from PyTorch by {diffs['onnx_fp16']:.2e} > atol_fp16 "
                            f"{cfg.atol_fp16}; raise `atol_fp16` or export with `fp16: false`.")
        ctx.artifacts["onnx_fp16"] = half.name
        ctx.notes.append(f"export: model.fp16.onnx (onnxruntime float16 conversion, FP32 inputs/outputs) matches "
                         f"PyTorch FP32 within {diffs['onnx_fp16']:.1e} (max abs)")
    select_backend(model, cfg, ctx, diffs, atol)
    return model
