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
    """Export the model to a deployable file in the run directory.

    Args:
        format: only ``onnx`` for now.
        opset: ONNX opset version.
        dynamic_batch: export with a symbolic batch dimension.
        atol: largest allowed absolute difference between onnxruntime and PyTorch outputs.
        atol_quantized: the same for models with integer weights, whose runtime rounds differently
            from the eager simulation (a few output quantization steps).
    """

    key = "export"
    format: Literal["onnx"] = "onnx"
    opset: int = 18
    dynamic_batch: bool = True
    atol: float = 1e-4
    atol_quantized: float = 0.15

    def __post_init__(self):
        check(13 <= self.opset <= 23, "opset", f"must be in 13..23, got {self.opset}")
        check(self.atol > 0, "atol", "must be > 0")
        check(self.atol_quantized > 0, "atol_quantized", "must be > 0")


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
            raise UserError(f"ONNX export failed: {first}; the TorchScript exporter also failed: {second}") from second
    return path


def session(path: str | Path, threads: int, device: str = "cpu"):
    """An onnxruntime InferenceSession with fixed intra-op threads (CUDA provider when asked and present)."""
    ort = require("onnxruntime", "onnx")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    # Idle worker threads sleep instead of spinning, so sessions timed side by side do not steal each
    # other's cores (spinning threads of one session slowed another by up to 1.8x here).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(str(path), opts, providers=providers)


def exported_session(model: nn.Module, example_inputs: tuple, folder: str | Path, threads: int, device: str = "cpu"):
    """Export ``model`` into ``folder`` and open it in onnxruntime (the session keeps the graph in memory)."""
    return session(export_onnx(model, example_inputs, Path(folder) / "model.onnx"), threads, device)


def run_session(sess, inputs: tuple) -> np.ndarray:
    feeds = {i.name: t.cpu().numpy() for i, t in zip(sess.get_inputs(), inputs)}
    return sess.run(None, feeds)[0]


def max_abs_diff(model: nn.Module, path: str | Path, inputs: tuple, threads: int = 1) -> float:
    """Largest |onnxruntime - PyTorch| over the outputs for ``inputs``."""
    with torch.inference_mode():
        expected = model.eval().cpu()(*inputs).float().numpy()
    got = run_session(session(path, threads), inputs)
    return float(np.abs(got - expected).max())


@register(Export)
def export(model: nn.Module, cfg: Export, ctx) -> nn.Module:
    """Write model.onnx into the run directory and check it against PyTorch on batch 1 and 2."""
    path = export_onnx(model, ctx.example_inputs, ctx.out_dir / "model.onnx", cfg.opset, cfg.dynamic_batch)
    probe = ctx.batch(2) if cfg.dynamic_batch else ctx.example_inputs
    diff = max_abs_diff(model, path, probe, ctx.threads)
    atol, name = (cfg.atol_quantized, "atol_quantized") if has_integer_weights(model) else (cfg.atol, "atol")
    if diff > atol:
        raise UserError(f"Exported ONNX differs from PyTorch by {diff:.2e} > {name} {atol}; raise `{name}` or report the model.")
    ctx.artifacts["onnx"] = path.name
    ctx.notes.append(f"export: model.onnx matches PyTorch within {diff:.1e} (max abs) in onnxruntime")
    return model
