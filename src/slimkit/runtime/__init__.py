"""Runtimes: one interface (available, prepare, save, verify) over PyTorch eager, torch.compile, onnxruntime,
OpenVINO and ExecuTorch. ``measure`` and ``compile`` run models only through here; ``deploy`` writes and loads
the deployable folder."""
from __future__ import annotations

from ..errors import UserError
from .base import TOLERANCES, Predictor, Runtime, is_quantized, verify
from .eager import Compiled, Eager
from .executorch import ExecuTorch
from .onnxruntime import OnnxRuntime
from .openvino import OpenVino

RUNTIMES: dict[str, Runtime] = {r.name: r for r in (Eager(), Compiled(), OnnxRuntime(), OpenVino(), ExecuTorch())}

__all__ = ["RUNTIMES", "TOLERANCES", "Predictor", "Runtime", "get_runtime", "is_quantized", "verify"]


def get_runtime(name: str) -> Runtime:
    """The runtime called ``name``; UserError listing the known ones otherwise."""
    if not isinstance(name, str) or name not in RUNTIMES:
        raise UserError(f"Unknown runtime {name!r:.100}; choose from {', '.join(RUNTIMES)}.")
    return RUNTIMES[name]
