"""Model SPECs: ``zoo:NAME``, ``hf:DIR``, ``arch:FILE``, ``package.module:callable`` or a checkpoint path."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any, Callable

from torch import nn

from ..errors import UserError
from . import checkpoint, zoo

SCHEMES: dict[str, str] = {"arch": "slimkit.arch"}  # SPEC scheme -> the package that registers its loader
_LOADERS: dict[str, Callable[[str], nn.Module]] = {}
# SPECs that are data: building them runs no code named in them
DATA_PREFIXES = ("zoo:", "hf:", *(f"{scheme}:" for scheme in SCHEMES))
SPECS = "zoo:NAME, hf:DIR, arch:FILE, package.module:callable or a checkpoint folder"


def register_scheme(scheme: str, loader: Callable[[str], nn.Module]) -> None:
    """Build ``scheme:REST`` SPECs (a scheme of :data:`SCHEMES`) with ``loader(REST)``."""
    _LOADERS[scheme] = loader


def _callable_parts(spec: str) -> tuple[str, str]:
    """(module, attribute path) of a ``package.module:callable`` SPEC, or UserError when it is not one."""
    module_name, _, attr = spec.partition(":")
    if not all(part.isidentifier() for name in (module_name, attr) for part in name.split(".")):
        raise UserError(f"{spec!r:.100} is not of the form package.module:callable.")
    return module_name, attr


def import_callable(spec: str) -> Callable[..., Any]:
    """Resolve ``package.module:callable``: imports the module (running its code) and returns the attribute."""
    module_name, attr = _callable_parts(spec)
    if module_name.partition(".")[0] in sys.stdlib_module_names:
        raise UserError(f"{spec!r:.100} names the Python standard library, which builds no models or data; point the "
                        "SPEC at a function of your own package, e.g. torchvision.models:resnet18.")
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
    """Build the model a SPEC that is not a checkpoint path names."""
    kind, _, rest = spec.partition(":")
    if f"{kind}:" in DATA_PREFIXES and not rest.strip():
        raise UserError(f"Model SPEC {spec!r} names nothing after the colon; give {SPECS}.")
    if kind == "zoo":
        if rest == "minilm":
            from . import hf

            return hf.load(hf.packaged_minilm_dir())
        if rest not in zoo.ZOO:
            raise UserError(f"Unknown zoo model {rest!r:.100}; available: {', '.join(sorted([*zoo.ZOO, 'minilm']))}.")
        builder, weights, _ = zoo.ZOO[rest]
        model = builder()
        if weights:
            checkpoint.load_weights(model, zoo.WEIGHTS / weights)
        return model
    if kind == "hf":
        from . import hf

        return hf.load(rest)
    if kind in SCHEMES:
        if kind not in _LOADERS:
            importlib.import_module(SCHEMES[kind])
        return _LOADERS[kind](rest)
    if ":" in spec:
        fn = import_callable(spec)
        try:
            model = fn()
        except TypeError as exc:
            raise UserError(f"Calling {spec}() with no arguments failed ({exc}); point the SPEC at a function that builds the model.") from exc
        if not isinstance(model, nn.Module):
            raise UserError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module.")
        return model
    raise UserError(f"Model SPEC {spec!r:.100} is neither zoo:NAME, hf:DIR, arch:FILE, package.module:callable "
                    "nor an existing checkpoint path.")


def _exists(spec: str) -> bool:
    try:
        return Path(spec).exists()
    except OSError:  # e.g. a name too long for the file system
        return False


def load_model(spec: str, *, base: str | None = None) -> nn.Module:
    """Load a model from a SPEC, in eval mode, with its origin recorded for checkpoints.

    A checkpoint is data: its history.json names a base SPEC, replayed steps and weights. A base that is
    ``package.module:callable`` is code, so it is imported and called only when ``base`` is that same SPEC.
    """
    if not isinstance(spec, str) or not spec.strip() or "\0" in spec:
        raise UserError(f"Model SPEC {spec!r:.100} is empty or not a name; give {SPECS}.")
    if not spec.startswith(DATA_PREFIXES) and _exists(spec):
        return _load_checkpoint(Path(spec), base)
    if base is not None:
        raise UserError(f"base {base!r:.100} (--base) confirms the base model of a checkpoint, but {spec!r:.100} "
                        "is not a checkpoint path; leave it out.")
    return checkpoint.set_origin(_build_base(spec).eval(), spec, [])


def _load_checkpoint(path: Path, trusted: str | None) -> nn.Module:
    """Rebuild a checkpoint: its base (see :func:`load_model`), its replayed history, then its weights."""
    from ..recipe import replay

    weights, history, meta = checkpoint.read_history(path)
    base = meta["base"]
    if trusted is not None and trusted != base:
        raise UserError(f"{history} names the base model {base!r:.200}, not {trusted!r:.200}; pass exactly the "
                        "base it names, or no base when that is zoo:, hf: or arch:.")
    try:
        if not base.startswith(DATA_PREFIXES) and trusted != base:
            _callable_parts(base)  # junk is reported as junk, not as code to confirm
            raise UserError(
                f"it is Python code, which slimkit imports and calls only when you name it yourself. If you trust "
                f"this checkpoint and that code, pass the same SPEC: `--base {base}` on the command line, or "
                f"slimkit.load_model({str(path)!r}, base={base!r}) in Python.")
        model = _build_base(base)
    except UserError as exc:
        raise UserError(f"{history} names the base model {base!r:.200}: {exc}") from None
    for i, entry in enumerate(meta["history"]):
        try:
            model = replay(model, entry)
        except (UserError, KeyError, TypeError, ValueError, IndexError, RuntimeError, AttributeError) as exc:
            raise UserError(f"{history}: history[{i}] ({entry['step']}) cannot be replayed ({type(exc).__name__}: "
                            f"{exc}); was history.json edited or written by another version?") from exc
    checkpoint.load_weights(model, weights)
    return checkpoint.set_origin(model.eval(), base, meta["history"])


def default_input_shape(spec: str) -> tuple[int, ...] | None:
    """The input shape a zoo model expects, or None when the SPEC does not say."""
    if spec.startswith("zoo:") and spec[4:] in zoo.ZOO:
        return zoo.ZOO[spec[4:]][2]
    return None
