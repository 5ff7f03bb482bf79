"""The ``export`` step: model.onnx (and model.fp16.onnx) verified against PyTorch in onnxruntime."""
from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import Literal

from torch import nn

from ..errors import UserError
from ..models.outputs import TENSOR_NAME, cache_off
from ..recipe import StepConfig, check, register
from ..runtime import RUNTIMES, TOLERANCES, is_quantized, verify
from ..runtime.onnx import export_onnx, input_names
from ..runtime.onnxruntime import to_fp16
from ..runtime.padding import MASK, mask_position, padding_is_inert
from .backends import select_backend


@dataclasses.dataclass
class Export(StepConfig):
    """Export the model to a deployable file in the run directory and pick the runtime it runs on.

    Args:
        format: only ``onnx`` for now.
        opset: ONNX opset version.
        dynamic_batch: export with a symbolic batch dimension.
        atol: largest allowed absolute difference between onnxruntime and PyTorch outputs, and the
            tolerance of every fp32 runtime candidate.
        atol_quantized: the same for models with integer weights (int8 candidates), whose runtime rounds
            differently from the eager simulation (a few output quantization steps).
        fp16: also write model.fp16.onnx: onnxruntime's float16 conversion of the FP32 graph
            (weights and activations FP16, inputs and outputs kept FP32), checked against ``atol_fp16``.
        atol_fp16: largest allowed absolute difference of an FP16 candidate (or model.fp16.onnx) from PyTorch FP32.
        atol_bf16: the same for a BF16 candidate.
        ort_opt_level: onnxruntime graph optimisation level (disable, basic, extended, all) used to
            verify the export and to run it.
        backend: the runtime to deploy on: ``eager``, ``compile`` (torch.compile, inductor), ``onnxruntime``,
            ``openvino``, ``executorch`` (XNNPACK; static batch), ``tensorrt`` (onnxruntime's TensorRT provider;
            falls back with a warning when absent) or ``auto`` (every available ``candidates`` runtime at every
            one of ``precisions`` it runs here, verified on real inputs and timed side by side; the fastest within
            its precision's tolerance wins). ``deploy/`` holds the choice (artifact + deploy.json, see
            ``slimkit.load_deployed``); any backend but onnxruntime is also recorded in backend.json.
        candidates: the runtimes ``auto`` considers; one that is not installed, or that cannot take the model
            (the failing op is named), is left out with its reason.
        precisions: the precisions ``auto`` considers: fp32, fp16 and bf16 for a float model (each where the
            runtime and CPU have it), int8 for slimkit's quantized model (apply ``quantize`` before ``export``).
        batch_sizes: batch sizes (rows) at which the choice is timed; the winner has the smallest geometric
            mean of its latency relative to the fastest candidate at each. deploy.json records each.
        repeats: timed samples per candidate and batch size.
        trim_padding: for token models (an ``attention_mask`` input shaped like every other input), export a
            symbolic token dimension and cut each batch after the last column any row's mask covers before the
            runtime runs it (tokenizers pad short sentences to a fixed length). Only when the model's output is
            checked to ignore masked columns; runtimes with static shapes (ExecuTorch) run the full length.
    """

    key = "export"
    format: Literal["onnx"] = "onnx"
    opset: int = 18
    dynamic_batch: bool = True
    atol: float = TOLERANCES["fp32"]
    atol_quantized: float = TOLERANCES["int8"]
    fp16: bool = False
    atol_fp16: float = TOLERANCES["fp16"]
    atol_bf16: float = TOLERANCES["bf16"]
    ort_opt_level: Literal["disable", "basic", "extended", "all"] = "all"
    backend: Literal["eager", "compile", "onnxruntime", "openvino", "executorch", "tensorrt", "auto"] = "onnxruntime"
    candidates: tuple[str, ...] = tuple(RUNTIMES)
    precisions: tuple[str, ...] = tuple(TOLERANCES)
    batch_sizes: tuple[int, ...] = (1,)
    repeats: int = 20
    trim_padding: bool = True

    def __post_init__(self):
        check(13 <= self.opset <= 23, "opset", f"must be in 13..23, got {self.opset}")
        check(self.atol > 0, "atol", "must be > 0")
        check(self.atol_quantized > 0, "atol_quantized", "must be > 0")
        check(self.atol_fp16 > 0, "atol_fp16", "must be > 0")
        check(self.atol_bf16 > 0, "atol_bf16", "must be > 0")
        unknown = [c for c in self.candidates if c not in RUNTIMES]
        check(not unknown and len(self.candidates) > 0, "candidates",
              f"choose from {', '.join(RUNTIMES)}; got {list(self.candidates)}")
        unknown = [p for p in self.precisions if p not in TOLERANCES]
        check(not unknown and len(self.precisions) > 0, "precisions",
              f"choose from {', '.join(TOLERANCES)}; got {list(self.precisions)}")
        check(len(self.batch_sizes) > 0 and all(1 <= b <= 65536 for b in self.batch_sizes), "batch_sizes",
              f"must be 1..65536 each, got {list(self.batch_sizes)}")
        check(self.repeats >= 3, "repeats", "must be >= 3")


@register(Export)
def export(model: nn.Module, cfg: Export, ctx) -> nn.Module:
    """Write model.onnx (and model.fp16.onnx) into the run directory, check them against PyTorch on
    batch 1 and 2 in onnxruntime, and choose the backend (backend.json). Files are written to a staging folder
    and moved into the run directory only once every check passed: a failed export leaves none behind."""
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=ctx.out_dir) as staging:
        _export_checked(model, cfg, dataclasses.replace(ctx, out_dir=Path(staging)))
        for item in Path(staging).iterdir():
            target = ctx.out_dir / item.name
            if target.is_dir():  # an earlier export's deploy/
                shutil.rmtree(target)
            item.replace(target)
    return model


def _export_checked(model: nn.Module, cfg: Export, ctx) -> None:
    """:func:`export` into ``ctx.out_dir``."""
    probe = ctx.batch(2) if cfg.dynamic_batch else ctx.example_inputs
    trim = _padding_to_trim(model, cfg, ctx, probe)
    path = export_onnx(model, ctx.example_inputs, ctx.out_dir / "model.onnx", cfg.opset, cfg.dynamic_batch, trim is not None)
    ort = RUNTIMES["onnxruntime"]
    predictor = ort.prepare(path, probe, threads=ctx.threads, opt_level=cfg.ort_opt_level)
    diff = verify(predictor, model, probe)
    _note_output(model, predictor.handle.get_outputs()[0].name, ctx)
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
    tolerances = {"fp32": cfg.atol, "fp16": cfg.atol_fp16, "bf16": cfg.atol_bf16, "int8": cfg.atol_quantized}
    select_backend(model, cfg, ctx, diffs, tolerances, trim)


def _note_output(model: nn.Module, output: str, ctx) -> None:
    """Note which of the model's outputs model.onnx returns, and that it runs without a key/value cache."""
    cache = " with use_cache=False (its config turns the key/value cache on)" if cache_off(model) else ""
    if output != TENSOR_NAME or cache:
        ctx.notes.append(f"export: model.onnx returns the model's `{output}`{cache}")


def _padding_to_trim(model: nn.Module, cfg: Export, ctx, probe: tuple) -> int | None:
    """The attention mask's input position when padding is trimmed (see ``Export.trim_padding``), else None."""
    position = mask_position(input_names(model, len(probe)), probe) if cfg.trim_padding and cfg.dynamic_batch else None
    if position is None:
        return None
    if not padding_is_inert(model, probe, position):
        ctx.notes.append(f"export: padding is not trimmed: the output changes when {MASK} masks columns out")
        return None
    ctx.notes.append(f"export: each batch runs up to its longest row ({MASK}); padding columns after it are trimmed")
    return position
