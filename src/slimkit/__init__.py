"""slimkit: make trained PyTorch models smaller and faster, and prove it with measured numbers.

Public API::

    import slimkit as sk
    model = sk.load_model("zoo:fashion-cnn")
    task = sk.load_data("fashion-mnist")
    report = sk.compress(model, sk.Recipe.load("recipe.yaml"), data=task, out_dir="runs/a")
"""
from __future__ import annotations

import types

from .version import __version__

from .compile.onnx import Export
from .data import Task, load_data
from .errors import UserError
from . import measure, train  # modules, callable as their functions measure.measure and train.train
from .measure import example_inputs
from .measure.benchmark import bench
from .models import load_model, save_checkpoint
from .pipeline import Context, apply, compress
from .recipe import Recipe, StepConfig, register
from .runtime.deploy import load_deployed
from .train import FineTune, fit


class _CallableModule(types.ModuleType):
    """A module callable as its function of the same name: ``sk.measure(model, ...)`` and ``sk.train(model, ...)``
    are the public API (docs/api.md), and ``slimkit.measure.latency`` or ``slimkit.train.Callback`` still reach
    the modules' contents (functions of those names would hide them)."""

    def __call__(self, *args, **kwargs):
        return getattr(self, self.__name__.rpartition(".")[2])(*args, **kwargs)


measure.__class__ = train.__class__ = _CallableModule


def __getattr__(name: str):
    """A step's config class (``slimkit.Quantize``, or one an installed package adds), found in the modules of the
    step table (``slimkit.recipe.step_modules``) and imported only now, so that `import slimkit` stays lean."""
    if not name.startswith("_"):
        import importlib

        from .recipe import BUILTIN_STEPS, step_modules

        for module in dict.fromkeys([*BUILTIN_STEPS.values(), *step_modules().values()]):  # built-ins first
            found = getattr(importlib.import_module(module.split(":")[0]), name, None)
            if isinstance(found, type) and issubclass(found, StepConfig):
                return found
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
    "OneShotPrune",
    "Quantize",
    "Recipe",
    "StepConfig",
    "Task",
    "UserError",
    "apply",
    "bench",
    "load_deployed",
    "compress",
    "example_inputs",
    "fit",
    "load_data",
    "load_model",
    "measure",
    "register",
    "save_checkpoint",
    "train",
    "__version__",
]
