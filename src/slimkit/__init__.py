"""slimkit: make trained PyTorch models smaller and faster, and prove it with measured numbers.

Public API::

    import slimkit as sk
    model = sk.load_model("zoo:fashion-cnn")
    task = sk.load_data("fashion-mnist")
    report = sk.compress(model, sk.Recipe.load("recipe.yaml"), data=task, out_dir="runs/a")
"""
from __future__ import annotations

from .version import __version__

from .compile.onnx import Export
from .data import Task, load_data
from .errors import UserError
from . import measure  # the package, callable as measure.measure
from .models import load_model, save_checkpoint
from .pipeline import Context, apply, compress
from .recipe import Recipe, StepConfig, register
from .runtime.deploy import load_deployed
from .train import FineTune, fit

# Technique configs load on first use so that `import slimkit` stays fast and lean.
_LAZY = {
    "ChannelPrune": "slimkit.prune",
    "MagnitudePrune": "slimkit.prune",
    "NMSparsity": "slimkit.prune",
    "Quantize": "slimkit.quantize",
    "Distill": "slimkit.distill",
    "LowRank": "slimkit.lowrank",
    "Cluster": "slimkit.cluster",
    "Fuse": "slimkit.compile.fuse",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'slimkit' has no attribute {name!r}")


__all__ = [
    "ChannelPrune",
    "Cluster",
    "Context",
    "Distill",
    "Export",
    "FineTune",
    "Fuse",
    "LowRank",
    "MagnitudePrune",
    "NMSparsity",
    "Quantize",
    "Recipe",
    "StepConfig",
    "Task",
    "UserError",
    "apply",
    "load_deployed",
    "compress",
    "fit",
    "load_data",
    "load_model",
    "measure",
    "register",
    "save_checkpoint",
    "__version__",
]
