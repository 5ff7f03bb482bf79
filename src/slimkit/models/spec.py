"""Model SPECs: ``zoo:NAME``, a checkpoint path, ``package.module:callable``, ``hf:DIR``."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable

from torch import nn

from ..errors import UserError
from . import checkpoint, zoo


def import_callable(spec: str) -> Callable[..., Any]:
    """Resolve ``package.module:callable`` without executing anything else."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UserError(f"{spec!r} is not of the form package.module:callable.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"Could not import {module_name!r} for {spec!r} ({exc}); install the package that provides it or fix the name.") from exc
    target = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise UserError(f"{module_name!r} has no attribute {attr!r}; check the spelling in {spec!r}.")
        target = getattr(target, part)
    if not callable(target):
        raise UserError(f"{spec!r} is not callable.")
    return target


def _build_base(spec: str) -> nn.Module:
    if spec.startswith("zoo:"):
        name = spec[4:]
        if name == "minilm":
            from . import hf

            return hf.load(hf.packaged_minilm_dir())
        if name not in zoo.ZOO:
            raise UserError(f"Unknown zoo model {name!r}; available: {', '.join(sorted([*zoo.ZOO, 'minilm']))}.")
        builder, weights, _ = zoo.ZOO[name]
        model = builder()
        if weights:
            checkpoint.load_weights(model, zoo.WEIGHTS / weights)
        return model
    if spec.startswith("hf:"):
        from . import hf

        return hf.load(spec[3:])
    if spec.startswith("arch:"):  # an slimkit.arch architecture: a YAML/JSON file or inline JSON
        from ..arch import load_arch

        return load_arch(spec[5:])
    if ":" in spec and not Path(spec).exists():
        fn = import_callable(spec)
        try:
            model = fn()
        except TypeError as exc:
            raise UserError(f"Calling {spec}() with no arguments failed ({exc}); point the SPEC at a function that builds the model.") from exc
        if not isinstance(model, nn.Module):
            raise UserError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module.")
        return model
    raise UserError(
        f"Model SPEC {spec!r} is neither zoo:NAME, hf:DIR, package.module:callable nor an existing checkpoint path."
    )


def load_model(spec: str) -> nn.Module:
    """Load a model from a SPEC (see DESIGN.md), in eval mode, with its origin recorded for checkpoints."""
    path = Path(spec)
    if not spec.startswith(("zoo:", "hf:")) and path.exists():
        weights, meta = checkpoint.read_history(path)
        model = _build_base(meta["base"])
        from ..recipe import replay

        for entry in meta["history"]:
            model = replay(model, entry)
        checkpoint.load_weights(model, weights)
        return checkpoint.set_origin(model.eval(), meta["base"], meta["history"])
    return checkpoint.set_origin(_build_base(spec).eval(), spec, [])


def default_input_shape(spec: str) -> tuple[int, ...] | None:
    """The input shape a zoo model expects, or None when the SPEC does not say."""
    if spec.startswith("zoo:") and spec[4:] in zoo.ZOO:
        return zoo.ZOO[spec[4:]][2]
    return None
