"""Recipes: ordered, typed step configs; and the open registry of step handlers.

A technique is one config dataclass (subclass of :class:`StepConfig`) plus one handler registered with
:func:`register`. Built-in techniques are imported lazily, on first use of their recipe key.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.metadata
import json
import math
import sys
import types
import typing
from pathlib import Path
from typing import Any, Callable, ClassVar

from torch import nn

from .errors import UserError
from .files import yaml_loader

# recipe key -> module that registers it (imported on first use, so `import slimkit` stays lean)
BUILTIN_STEPS: dict[str, str] = {
    "fine_tune": "slimkit.train",
    "export": "slimkit.compile.onnx",
    "magnitude_prune": "slimkit.prune",
    "channel_prune": "slimkit.prune",
    "nm_sparsity": "slimkit.prune",
    "one_shot_prune": "slimkit.prune",
    "quantize": "slimkit.quantize",
    "distill": "slimkit.distill",
    "low_rank": "slimkit.lowrank",
    "cluster": "slimkit.cluster",
    "fuse": "slimkit.compile.fuse",
}

# Installed packages add steps through this entry point group: name = the recipe key, value = the module that
# registers it (imported the first time a recipe or checkpoint history names the key).
ENTRY_POINT_GROUP = "slimkit.steps"

Handler = Callable[[nn.Module, "StepConfig", Any], nn.Module]
Replay = Callable[[nn.Module, dict], nn.Module]
_CONFIGS: dict[str, type["StepConfig"]] = {}
_HANDLERS: dict[type, Handler] = {}
_REPLAYS: dict[str, Replay] = {}


class ConfigError(ValueError):
    """A config value is invalid; ``field`` names it so recipe errors can give its path."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


def check(condition: bool, field: str, message: str) -> None:
    """Raise ConfigError for ``field`` unless ``condition`` holds (use in ``__post_init__``)."""
    if not condition:
        raise ConfigError(field, message)


@dataclasses.dataclass
class StepConfig:
    """Base of every step config, and of option groups nested in one (``Quantize.qat``). Subclasses are
    dataclasses with a ``key`` class variable."""

    key: ClassVar[str] = ""
    needs_data: ClassVar[bool] = False  # True for steps that train or calibrate on ctx.task

    @classmethod
    def from_dict(cls, data: dict | None) -> "StepConfig":
        """Build a config from plain data, rejecting unknown fields and wrong types."""
        data = {} if data is None else data
        if not isinstance(data, dict):
            raise ConfigError(cls.key, f"expected a mapping of options, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        for name, value in data.items():
            if name not in names:
                close = difflib.get_close_matches(str(name), names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; known fields: {', '.join(names)}"
                raise ConfigError(str(name), f"unknown field{hint}")
            data[name] = _coerce(value, hints[name], name)
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(cls.key, str(exc)) from exc

    @classmethod
    def of(cls, value: "StepConfig | dict", field: str) -> "StepConfig":
        """``value`` as this config: an instance as it is, or a mapping of options checked by :meth:`from_dict`
        with errors named ``field.option``. A field typed with a config class (``qat: QAT | None``) reads its
        value this way."""
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise ConfigError(field, f"expected a mapping of {cls.__name__} options, got {value!r}")
        try:
            return cls.from_dict(dict(value))
        except ConfigError as exc:
            raise ConfigError(f"{field}.{exc.field}", exc.message) from exc

    def to_dict(self) -> dict:
        """Plain data (nested configs as mappings, tuples as lists) that :meth:`from_dict` reads back."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def check_model(self, model: nn.Module) -> None:
        """Raise UserError when this step cannot apply to ``model``; called for every step of a recipe
        before any work starts. Override where a config fits only some models."""


def _plain(value):
    if isinstance(value, StepConfig):
        return value.to_dict()
    return list(value) if isinstance(value, tuple) else value


def _coerce(value, tp, field: str):
    """Check ``value`` against a type hint; ints are accepted where floats are expected, and a mapping (or an
    instance) where a config class is."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in args:
            try:
                return _coerce(value, option, field)
            except ConfigError as exc:
                errors.append(exc)
        inner = [e for e in errors if e.field != field]  # the value has that option's shape; say what is wrong inside
        raise inner[0] if inner else ConfigError(field, " or ".join(e.message for e in errors))
    if tp is type(None):
        if value is not None:
            raise ConfigError(field, f"expected null, got {value!r}")
        return None
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(field, f"must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(field, f"expected a list, got {value!r}")
        item = args[0] if args else Any
        return origin(_coerce(v, item, f"{field}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(field, f"expected a mapping, got {value!r}")
        return {str(k): _coerce(v, args[1], f"{field}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, StepConfig):
        return tp.of(value, field)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value) if abs(value) < 2**1000 else math.inf
    if tp in (int, float) and isinstance(value, bool) or not isinstance(value, tp):
        raise ConfigError(field, f"expected {tp.__name__}, got {value!r}")
    if tp is float and not math.isfinite(value):
        raise ConfigError(field, f"must be a finite number, got {value!r}")
    if tp is int and not -2**63 <= value < 2**63:
        raise ConfigError(field, f"{value} does not fit in a 64-bit integer")
    return value


def register(config_cls: type[StepConfig], *, replay: Replay | None = None,
             replace: bool = False) -> Callable[[Handler], Handler]:
    """Register ``handler(model, config, ctx) -> model`` for ``config_cls``.

    ``replay(model, entry)`` re-applies a structural change recorded in a checkpoint's history, so a
    reshaped model can be rebuilt before its weights are loaded. A key that another config class already
    holds is an error unless ``replace=True``.
    """
    if not config_cls.key:
        raise ValueError(f"{config_cls.__name__} needs a non-empty class variable `key`")
    holder = _CONFIGS.get(config_cls.key)
    if holder is not None and not replace and _origin(holder) != _origin(config_cls):
        raise ValueError(f"step {config_cls.key!r} is already registered by {holder.__module__}.{holder.__qualname__}; "
                         "pass replace=True to replace it")

    def decorator(handler: Handler) -> Handler:
        _CONFIGS[config_cls.key] = config_cls
        _HANDLERS[config_cls] = handler
        if replay is not None:
            _REPLAYS[config_cls.key] = replay
        return handler

    return decorator


def step_modules() -> dict[str, str]:
    """{recipe key: module that registers it}: the built-in steps, and those installed packages add through the
    ``slimkit.steps`` entry point group (a built-in key cannot be taken over this way)."""
    plugins = {ep.name: ep.value for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    return {**plugins, **BUILTIN_STEPS}


def _origin(cls: type) -> tuple[str | None, str]:
    """(source file, qualified name): the same class even when its file is imported again under another name."""
    module = sys.modules.get(cls.__module__)
    return getattr(module, "__file__", cls.__module__), cls.__qualname__


def config_class(key: str) -> type[StepConfig]:
    """The config class for a recipe key, importing the module that registers it (built-in or an installed
    package's ``slimkit.steps`` entry point) if needed."""
    modules = {} if key in _CONFIGS else step_modules()
    if key in modules:
        try:
            importlib.import_module(modules[key].split(":")[0])
        except ImportError as exc:
            raise UserError(f"Step {key!r} comes from {modules[key]!r}, which cannot be imported ({exc}); "
                            "reinstall the package that provides it.") from None
    if key not in _CONFIGS:
        known = sorted(set(_CONFIGS) | set(modules))
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UserError(f"Unknown step {key!r}; {hint}known steps: {', '.join(known)}.")
    return _CONFIGS[key]


def handler_for(config: StepConfig) -> Handler:
    config_class(config.key)
    return _HANDLERS[type(config)]


def replay(model: nn.Module, entry: dict) -> nn.Module:
    """Re-apply one recorded structural step from a checkpoint history."""
    config_class(entry["step"])
    fn = _REPLAYS.get(entry["step"])
    return model if fn is None else fn(model, entry)


MAX_FILE_BYTES = 10 * 2**20  # recipes and search files are a few lines; this is far beyond any real one
MAX_DEPTH = 100
MAX_VALUES = 10**6


def read_data_file(path: str | Path, what: str, flag: str) -> Any:
    """Parse a YAML or JSON file (``.json`` suffix) as plain data; nothing in it is executed.

    UserError for anything else: a folder, an unreadable, oversized or non-UTF-8 file, bad syntax, or data
    nested deeper than MAX_DEPTH levels or expanding (through YAML aliases) to more than MAX_VALUES values.
    """
    import yaml

    path = Path(path)
    fix, which = f"check the {flag} path", f"is {flag} the right file?"
    if path.is_dir():
        raise UserError(f"Cannot read {what} {path}: it is a folder; {fix}.")
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise UserError(f"Cannot read {what} {path!r}: {getattr(exc, 'strerror', None) or exc}; {fix}.") from None
    if len(raw) > MAX_FILE_BYTES:
        raise UserError(f"{path} is larger than {MAX_FILE_BYTES // 2**20} MB, far more than any {what} file; {which}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8, or {fix}.") from None
    kind = "JSON" if path.suffix == ".json" else "YAML"
    try:
        data = json.loads(text) if kind == "JSON" else yaml.load(text, yaml_loader())
    except RecursionError:
        raise UserError(f"{path} nests deeper than {MAX_DEPTH} levels; {which}") from None
    except (ValueError, yaml.YAMLError) as exc:  # json.JSONDecodeError is a ValueError
        raise UserError(f"{path} is not valid {kind}: {_problem(exc)}") from None
    depth, values = _extent(data)
    if depth > MAX_DEPTH:
        raise UserError(f"{path} nests deeper than {MAX_DEPTH} levels; {which}")
    if values > MAX_VALUES:
        raise UserError(f"{path} expands to more than {MAX_VALUES:,} values (through YAML aliases?); {which}")
    return data


def _problem(exc: Exception) -> str:
    """A parser error on one line: where, and what."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return where + (getattr(exc, "problem", None) or " ".join(str(exc).split()))


def _extent(data: Any) -> tuple[float, float]:
    """(nesting depth, number of values) of parsed data, counting a part shared through YAML aliases each
    time it occurs; infinite for data that contains itself. Iterative: no recursion limit to hit."""
    done: dict[int, tuple[float, float]] = {}
    active: set[int] = set()
    stack = [(data, False)]
    while stack:
        node, finished = stack.pop()
        if not isinstance(node, (dict, list)):
            continue
        children = [c for c in (node.values() if isinstance(node, dict) else node) if isinstance(c, (dict, list))]
        key = id(node)
        if finished:
            parts = [done[id(c)] for c in children]
            done[key] = (1 + max((d for d, _ in parts), default=0), len(node) + 1 + sum(v for _, v in parts))
            active.discard(key)
        elif key in active:
            return math.inf, math.inf
        elif key not in done:
            active.add(key)
            stack.append((node, True))
            stack.extend((c, False) for c in children)
    return done.get(id(data), (0, 1))


@dataclasses.dataclass
class Recipe:
    """An ordered list of step configs. Load with :meth:`load` (YAML or JSON)."""

    steps: list[StepConfig]

    @classmethod
    def from_dict(cls, data: Any, source: str = "recipe") -> "Recipe":
        """Validate plain data; errors name ``steps[i].key.field`` before any work starts."""
        if not isinstance(data, dict):
            raise UserError(f"{source}: expected a mapping with `version: 1` and `steps:`, got {type(data).__name__}.")
        unknown = set(data) - {"version", "steps"}
        if unknown:
            raise UserError(f"{source}: unknown top-level key(s) {sorted(unknown)}; a recipe has only `version` and `steps`.")
        version = data.get("version", 1)
        if type(version) is not int or version != 1:
            raise UserError(f"{source}: version {version!r} is not supported; use `version: 1`.")
        raw = data.get("steps")
        if not isinstance(raw, list) or not raw:
            raise UserError(f"{source}: `steps` must be a non-empty list of `- step_name: {{options}}` items.")
        steps = []
        for i, item in enumerate(raw):
            if not isinstance(item, dict) or len(item) != 1:
                raise UserError(f"{source}: steps[{i}] must be a single `step_name: {{options}}` mapping, got {item!r:.80}.")
            (key, options), = item.items()
            if options is not None and not isinstance(options, dict):
                raise UserError(f"{source}: steps[{i}].{key}: expected a mapping of options like `{{epochs: 1}}` "
                                f"(or nothing), got {type(options).__name__} {options!r:.60}.")
            try:
                steps.append(config_class(str(key)).from_dict(dict(options or {})))
            except ConfigError as exc:
                raise UserError(f"{source}: steps[{i}].{key}.{exc.field}: {exc.message}") from exc
            except UserError as exc:
                raise UserError(f"{source}: steps[{i}]: {exc}") from exc
        return cls(steps)

    @classmethod
    def load(cls, path: str | Path) -> "Recipe":
        """Read a YAML or JSON recipe file (never executed: plain data only)."""
        return cls.from_dict(read_data_file(path, "recipe", "--recipe"), source=str(path))

    def to_dict(self) -> dict:
        return {"version": 1, "steps": [{s.key: s.to_dict()} for s in self.steps]}
