"""onnxruntime: sessions at every graph-optimisation level, FP16 graphs, slimkit's QDQ INT8. Artifact: model.onnx."""
from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError, require
from .base import Predictor, Runtime, Source
from .onnx import export_onnx

OPT_LEVELS = ("disable", "basic", "extended", "all")
TENSORRT = "TensorrtExecutionProvider"
FILES = {"fp32": "model.onnx", "int8": "model.onnx", "fp16": "model.fp16.onnx"}


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


def tensorrt_providers(device: str = "cpu") -> tuple[list[str], str | None]:
    """Providers for a TensorRT request: (providers, warning or None). TensorRT is never required:
    without onnxruntime's TensorrtExecutionProvider the request falls back to CUDA or CPU."""
    available = require("onnxruntime", "onnx").get_available_providers()
    fallback = default_providers(device)
    if TENSORRT in available:
        return [TENSORRT, *fallback], None
    return fallback, (f"TensorRT was requested but this onnxruntime has no {TENSORRT} (available: "
                      f"{', '.join(available)}); falling back to onnxruntime on {fallback[0]}")


def run_session(sess, inputs: tuple) -> np.ndarray:
    """The first output of ``sess`` for ``inputs`` (tensors, in the graph's input order)."""
    feeds = {i.name: t.cpu().numpy() for i, t in zip(sess.get_inputs(), inputs)}
    return sess.run(None, feeds)[0]


def to_fp16(source: str | Path, path: str | Path) -> Path:
    """Write onnxruntime's float16 conversion of the ONNX file ``source`` (inputs/outputs stay FP32)."""
    onnx = require("onnx", "onnx")
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # notices about values clamped to the FP16 range
        converted = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    onnx.save(converted, str(path))
    return Path(path)


def _holds_fp16(path: str | Path) -> bool:
    """True for an ONNX file whose weights are already FP16 (e.g. a saved fp16 artifact)."""
    onnx = require("onnx", "onnx")
    return any(init.data_type == onnx.TensorProto.FLOAT16 for init in onnx.load(str(path), load_external_data=False).graph.initializer)


class OnnxRuntime(Runtime):
    """onnxruntime from a model (exported to ONNX) or an ONNX file, which runs as written. ``fp16``: onnxruntime's
    float16 conversion of the FP32 graph; ``int8``: slimkit's quantized model, whose QDQ graph runs on integer
    kernels."""

    name, module, extra = "onnxruntime", "onnxruntime", "onnx"
    precisions = ("fp32", "fp16", "int8")

    def prepare(self, source: Source, example_inputs: tuple, *, threads: int = 1, precision: str | None = None,
                device: str = "cpu", opt_level: str = "all", providers: list[str] | None = None) -> Predictor:
        """``opt_level``: graph optimisation level (:data:`OPT_LEVELS`); ``providers``: see :func:`session`."""
        self.require()
        with tempfile.TemporaryDirectory() as tmp:  # the session keeps the graph in memory
            precision, path = self._graph(source, example_inputs, Path(tmp), precision)
            try:
                sess = session(path, threads, device, opt_level, providers)
            except Exception as exc:  # onnxruntime's own errors (e.g. an op it has no kernel for) are the model's
                if not type(exc).__module__.startswith("onnxruntime"):
                    raise
                raise UserError(f"onnxruntime cannot load {path.name}: {str(exc).splitlines()[0][:300]}") from None
        return Predictor(lambda *inputs: torch.from_numpy(run_session(sess, inputs)).float(), self.name, precision, sess)

    def save(self, source: Source, example_inputs: tuple, folder: str | Path, *, precision: str | None = None) -> list[Path]:
        self.require()
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            precision, path = self._graph(source, example_inputs, Path(tmp), precision)
            target = Path(folder) / FILES[precision]
            if target.resolve() != path.resolve():  # an ONNX file saved into its own folder stays as it is
                shutil.copyfile(path, target)
        return [target]

    def _graph(self, source: Source, example_inputs: tuple, folder: Path, precision: str | None) -> tuple[str, Path]:
        """(precision, the ONNX file to run): ``source`` itself, or a file written into ``folder``."""
        precision = self.resolve(source, precision)
        path = source if isinstance(source, (str, Path)) else export_onnx(source, example_inputs, folder / "model.onnx")
        if precision == "fp16" and not _holds_fp16(path):
            path = to_fp16(path, folder / FILES["fp16"])
        return precision, Path(path)
