"""ONNX export (verified against PyTorch in onnxruntime) and the ``export`` step."""
from __future__ import annotations

import dataclasses
import io
import logging
import warnings
from contextlib import redirect_stdout
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
from torch import nn

from ..errors import UserError, require
from ..recipe import StepConfig, check, register


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
            onnxruntime_fp16 (considered only with ``fp16: true``, kept only if within ``atol``).
        batch_size: batch size (rows) at which ``auto`` times the candidates.
        repeats: timed samples per candidate for ``auto``.
    """

    key = "export"
    format: Literal["onnx"] = "onnx"
    opset: int = 18
    dynamic_batch: bool = True
    atol: float = 1e-4
    atol_quantized: float = 0.15
    fp16: bool = False
    atol_fp16: float = 0.05
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


CANDIDATES = ("eager", "compile", "onnxruntime", "onnxruntime_fp16")
OPT_LEVELS = ("disable", "basic", "extended", "all")


def has_integer_weights(model: nn.Module) -> bool:
    """True when some buffer holds integer weights (a quantized model)."""
    return any(b.dtype in (torch.int8, torch.uint8) for b in model.buffers())


# Techniques whose models need their own ONNX path (e.g. dynamic INT8) register (applies, exporter) here.
_EXPORTERS: list[tuple[Callable[[nn.Module], bool], Callable[[nn.Module, tuple, Path], Path]]] = []


def register_exporter(applies: Callable[[nn.Module], bool], exporter: Callable[[nn.Module, tuple, Path], Path]) -> None:
    """Route models for which ``applies(model)`` is true to ``exporter(model, example_inputs, path)``."""
    _EXPORTERS.append((applies, exporter))


def export_onnx(model: nn.Module, example_inputs: tuple, path: str | Path, opset: int = 18, dynamic_batch: bool = True) -> Path:
    """Export with torch.export-based ONNX exporter; falls back to the TorchScript exporter if it fails."""
    require("onnx", "onnx")
    path = Path(path)
    for applies, exporter in _EXPORTERS:
        if applies(model):
            return exporter(model, example_inputs, path)
    model = model.eval().cpu()
    example_inputs = tuple(t.cpu() for t in example_inputs)
    names = [f"input_{i}" for i in range(len(example_inputs))]
    batch = torch.export.Dim("batch", min=1, max=4096)
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)  # torchvision-op notices
    logging.getLogger("onnxscript.optimizer").setLevel(logging.ERROR)  # constant-folding notices on shape ops
    try:
        with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, example_inputs, str(path), input_names=names, output_names=["output"], opset_version=opset,
                dynamo=True, verbose=False, external_data=False,
                dynamic_shapes=tuple({0: batch} for _ in example_inputs) if dynamic_batch else None,
            )
    except Exception as first:  # the dynamo exporter rejects some models the TorchScript one handles
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    model, example_inputs, str(path), input_names=names, output_names=["output"], opset_version=opset,
                    dynamo=False, dynamic_axes={n: {0: "batch"} for n in [*names, "output"]} if dynamic_batch else None,
                )
        except Exception as second:
            from .diagnose import unsupported_op

            raise UserError(unsupported_op(model, example_inputs, first, second)) from second
    return path


def session(path: str | Path, threads: int, device: str = "cpu", opt_level: str = "all",
            providers: list[str] | None = None):
    """An onnxruntime InferenceSession with fixed intra-op threads.

    Args:
        opt_level: graph optimisation level: disable, basic, extended or all.
        providers: execution providers in order of preference (default: CUDA when ``device`` is cuda
            and the provider exists, then CPU).
    """
    ort = require("onnxruntime", "onnx")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[opt_level]
    opts.log_severity_level = 3
    # Idle worker threads sleep instead of spinning, so sessions timed side by side do not steal each
    # other's cores (spinning threads of one session slowed another by up to 1.8x here).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=providers or default_providers(device))


def default_providers(device: str = "cpu") -> list[str]:
    """CUDA (when ``device`` is cuda and onnxruntime has it), then CPU."""
    ort = require("onnxruntime", "onnx")
    cuda = device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers()
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]


def to_fp16(source: str | Path, path: str | Path) -> Path:
    """Write onnxruntime's float16 conversion of the ONNX file ``source`` (inputs/outputs stay FP32)."""
    onnx = require("onnx", "onnx")
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # notices about values clamped to the FP16 range
        converted = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    onnx.save(converted, str(path))
    return Path(path)


def exported_session(model: nn.Module, example_inputs: tuple, folder: str | Path, threads: int, device: str = "cpu"):
    """Export ``model`` into ``folder`` and open it in onnxruntime (the session keeps the graph in memory)."""
    return session(export_onnx(model, example_inputs, Path(folder) / "model.onnx"), threads, device)


def run_session(sess, inputs: tuple) -> np.ndarray:
    feeds = {i.name: t.cpu().numpy() for i, t in zip(sess.get_inputs(), inputs)}
    return sess.run(None, feeds)[0]


def max_abs_diff(model: nn.Module, path: str | Path, inputs: tuple, threads: int = 1, opt_level: str = "all") -> float:
    """Largest |onnxruntime - PyTorch| over the outputs for ``inputs``."""
    with torch.inference_mode():
        expected = model.eval().cpu()(*inputs).float().numpy()
    got = run_session(session(path, threads, opt_level=opt_level), inputs)
    return float(np.abs(got.astype(np.float32) - expected).max())


@register(Export)
def export(model: nn.Module, cfg: Export, ctx) -> nn.Module:
    """Write model.onnx (and model.fp16.onnx) into the run directory, check them against PyTorch on
    batch 1 and 2 in onnxruntime, and choose the backend (backend.json)."""
    from .backends import select_backend

    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    path = export_onnx(model, ctx.example_inputs, ctx.out_dir / "model.onnx", cfg.opset, cfg.dynamic_batch)
    probe = ctx.batch(2) if cfg.dynamic_batch else ctx.example_inputs
    diff = max_abs_diff(model, path, probe, ctx.threads, cfg.ort_opt_level)
    atol, name = (cfg.atol_quantized, "atol_quantized") if has_integer_weights(model) else (cfg.atol, "atol")
    if diff > atol:
        raise UserError(f"Exported ONNX differs from PyTorch by {diff:.2e} > {name} {atol}; raise `{name}` or report the model.")
    ctx.artifacts["onnx"] = path.name
    ctx.notes.append(f"export: model.onnx matches PyTorch within {diff:.1e} (max abs) in onnxruntime "
                     f"(graph optimisation level {cfg.ort_opt_level})")
    diffs = {"onnx": diff}
    if cfg.fp16:
        half = to_fp16(path, ctx.out_dir / "model.fp16.onnx")
        diffs["onnx_fp16"] = max_abs_diff(model, half, probe, ctx.threads, cfg.ort_opt_level)
        if diffs["onnx_fp16"] > cfg.atol_fp16:
            raise UserError(f"model.fp16.onnx differs from PyTorch by {diffs['onnx_fp16']:.2e} > atol_fp16 "
                            f"{cfg.atol_fp16}; raise `atol_fp16` or export with `fp16: false`.")
        ctx.artifacts["onnx_fp16"] = half.name
        ctx.notes.append(f"export: model.fp16.onnx (onnxruntime float16 conversion, FP32 inputs/outputs) matches "
                         f"PyTorch FP32 within {diffs['onnx_fp16']:.1e} (max abs)")
    select_backend(model, cfg, ctx, diffs, atol)
    return model
