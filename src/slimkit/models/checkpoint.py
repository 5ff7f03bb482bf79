"""Checkpoints: ``model.safetensors`` + ``history.json``; reshaped models are rebuilt by replay."""
from __future__ import annotations

import json
import math
import reprlib
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ..errors import UserError
from ..files import read_json
from .storage import SPARSE_KEY, pack_sparse, unpack_sparse, untie

FORMAT = "slimkit-checkpoint"
WEIGHTS_FILE, HISTORY_FILE = "model.safetensors", "history.json"
MAX_PARAMS = 1_000_000_000  # the most parameters a model built from a data file may have (4 GB as float32)


def origin(model: nn.Module) -> dict[str, Any]:
    """Where a model came from: its base SPEC and the structural steps applied since."""
    return getattr(model, "slimkit_origin", None) or {"base": None, "history": []}


def run_labels(model: nn.Module, data, labels: dict | None = None) -> dict[str, str]:
    """{"model", "data"}: the names a run records, from ``labels`` where it has them, else the base SPEC of
    ``model`` and the name of the Task ``data`` ("none" without one)."""
    given = labels or {}
    return {"model": given.get("model", origin(model)["base"]),
            "data": given.get("data", data.name if data else "none")}


def set_origin(model: nn.Module, base: str | None, history: list[dict]) -> nn.Module:
    object.__setattr__(model, "slimkit_origin", {"base": base, "history": list(history)})
    return model


def save_checkpoint(model: nn.Module, directory: str | Path, extra: dict | None = None) -> Path:
    """Write the weights (safetensors) and the replay history (JSON) of ``model`` into ``directory``.

    Tensors that are mostly zeros (pruned) are stored as a bitmask plus their non-zero values.
    """
    info = origin(model)
    if info["base"] is None:
        raise UserError(
            "This model has no base SPEC, so a checkpoint could not be rebuilt; load it with "
            "slimkit.load_model(SPEC) before compressing it."
        )
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    tensors, metadata = pack_sparse(untie(state))
    save_file(tensors, str(path / WEIGHTS_FILE), metadata)
    meta = {"format": FORMAT, "version": 1, **info, **(extra or {})}
    (path / HISTORY_FILE).write_text(json.dumps(meta, indent=2))
    return path


def check_params(build: Callable[[], nn.Module], source: str) -> None:
    """Build a model on the meta device (no memory) and refuse it if it has more than MAX_PARAMS parameters."""
    with torch.device("meta"):
        count = sum(p.numel() for p in build().parameters())
    if count > MAX_PARAMS:
        raise UserError(f"{source}: {count:,} parameters is more than slimkit builds ({MAX_PARAMS:,}); "
                        "check the sizes in it.")


def _mismatch(value: Any, schema: Any, where: str) -> str | None:
    """The first place where ``value`` does not fit ``schema`` as ``"field: problem"``, or None.

    A schema is ``str``/``bool`` (that type), a ``range`` (an int in it), a set (one of those strings),
    ``None`` (null), a tuple (any of its schemas), ``[item]`` (a list), ``{str: item}`` (a mapping of any
    keys) or ``{"key": schema, "optional?": schema}`` (a mapping with those keys; others are ignored).
    """
    if isinstance(schema, tuple):
        if all(_mismatch(value, option, where) for option in schema):
            return f"{where}: expected {' or '.join(map(_describe, schema))}, got {reprlib.repr(value)}"
        return None
    if isinstance(schema, (list, dict)) and isinstance(value, type(schema)):
        if isinstance(schema, list):
            fields = [(f"{where}[{i}]", item, schema[0]) for i, item in enumerate(value)]
        elif str in schema:
            fields = [(f"{where}[{key!r}]", item, schema[str]) for key, item in value.items()]
        else:
            missing = [key for key in schema if not key.endswith("?") and key not in value]
            if missing:
                return f"{where}.{missing[0]}: missing".lstrip(".")
            fields = [(f"{where}.{key.rstrip('?')}".lstrip("."), value[key.rstrip("?")], sub)
                      for key, sub in schema.items() if key.rstrip("?") in value]
        return next(filter(None, (_mismatch(item, sub, field) for field, item, sub in fields)), None)
    fits = (isinstance(schema, range) and type(value) is int and value in schema
            or isinstance(schema, set) and isinstance(value, str) and value in schema
            or schema is None and value is None
            or schema in (str, bool) and type(value) is schema)
    return None if fits else f"{where}: expected {_describe(schema)}, got {reprlib.repr(value)}"


def _describe(schema: Any) -> str:
    if isinstance(schema, range):
        return f"an integer in {schema.start}..{schema.stop - 1}"
    if isinstance(schema, set):
        return "one of " + ", ".join(map(repr, sorted(schema)))
    if isinstance(schema, tuple):
        return " or ".join(map(_describe, schema))
    return "a list" if isinstance(schema, list) else "a mapping" if isinstance(schema, dict) else {
        str: "a string", bool: "true or false", None: "null"}[schema]


INDEX, SIZE, BITS = range(2**31), range(1, 2**16 + 1), range(1, 9)
HISTORY_SCHEMA = {"version": range(1, 2), "base": str, "history": [{"step": str, "config": {}, "replay": ({}, None)}]}
# What the built-in replay functions read from an entry's ``replay`` (other keys are ignored).
REPLAY_SCHEMAS = {
    "channel_prune": {"plan": {str: {"out?": [INDEX], "in?": [INDEX]}}},
    "low_rank": {"layers": {str: {"kind": {"svd", "tucker", "cp"}, "ranks": [SIZE]}}},
    "cluster": {"layers": {str: {"bits": BITS, "zero": bool}}},
    "distill": {"student": {"narrow", "shallow"}, "widths?": [SIZE], "keep?": [INDEX]},
    "quantize": {"folded": [[str]], "layers": {str: {"bits": BITS, "symmetric": bool, "group_size": (SIZE, None),
                                                      "per_channel": bool, "reduce_range": bool, "static": bool}}},
}


def read_history(path: Path) -> tuple[Path, Path, dict]:
    """Return (weights file, history.json, its validated metadata) for a checkpoint folder or its weights file."""
    folder = path if path.is_dir() else path.parent
    weights = path if path.is_file() else folder / WEIGHTS_FILE
    history = folder / HISTORY_FILE
    if not weights.is_file():
        raise UserError(f"{path}: no {WEIGHTS_FILE} found; a slimkit checkpoint is a folder written by `slimkit train` or `slimkit compress`.")
    meta = read_json(history, "the checkpoint history")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise UserError(f"{history} is not a slimkit checkpoint history (format {reprlib.repr(found)}).")
    problem = _mismatch(meta, HISTORY_SCHEMA, "") or next(
        filter(None, (_entry_mismatch(entry, f"history[{i}]") for i, entry in enumerate(meta["history"]))), None)
    if problem:
        raise UserError(f"{history}: {problem}")
    return weights, history, meta


def _entry_mismatch(entry: dict, where: str) -> str | None:
    """What is wrong with one history entry: an unknown step, an invalid config, or a replay its step cannot read."""
    from ..recipe import ConfigError, config_class

    try:
        cls = config_class(entry["step"])
    except UserError as exc:
        return f"{where}.step: {exc}"
    try:
        cls.from_dict(dict(entry["config"]))
    except ConfigError as exc:
        return f"{where}.config.{exc.field}: {exc.message}"
    return _mismatch(entry["replay"], REPLAY_SCHEMAS.get(entry["step"], ({}, None)), f"{where}.replay")


def load_weights(model: nn.Module, weights: Path) -> None:
    """Load safetensors weights into ``model`` strictly, with a clear error when they do not fit."""
    try:
        with safe_open(str(weights), "pt") as f:
            tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
        _check_sparse(tensors, metadata, weights)
        state = unpack_sparse(tensors, metadata)
    except (SafetensorError, OSError, ValueError, TypeError, KeyError, IndexError, RuntimeError, RecursionError) as exc:
        raise UserError(f"{weights} is not a valid safetensors file ({type(exc).__name__}: {exc}). "
                        "slimkit never unpickles checkpoints; re-save it with slimkit.") from exc
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes differ: torch lists every tensor, one per line
        lines = [line.strip() for line in str(exc).splitlines() if "mismatch" in line] or [str(exc).strip()]
        more = f" and {len(lines) - 1} more" if len(lines) > 1 else ""
        raise UserError(f"{weights} does not match the rebuilt model ({lines[0][:300]}{more}); "
                        "was history.json edited or written by another version?") from None
    missing = [k for k in missing if not _tied_alias(model, k, state)]
    if missing or unexpected:
        raise UserError(
            f"{weights} does not match the rebuilt model (missing: {missing[:5]}, unexpected: {unexpected[:5]}); "
            "was history.json edited or written by another version?"
        )


def _check_sparse(tensors: dict, metadata: dict | None, weights: Path) -> None:
    """Check the sparse-tensor metadata against the stored masks before anything is allocated from it."""
    shapes = json.loads((metadata or {}).get(SPARSE_KEY, "{}"))
    problem = _mismatch(shapes, {str: [INDEX]}, SPARSE_KEY)
    if problem is None:
        wrong = [name for name, shape in shapes.items() if f"{name}.mask" not in tensors
                 or tensors[f"{name}.mask"].shape != ((math.prod(shape) + 7) // 8,)]
        problem = wrong and f"{SPARSE_KEY}[{wrong[0]!r}]: the shape does not match the stored mask"
    if problem:
        raise UserError(f"{weights}: metadata {problem}; re-save the checkpoint with slimkit.")


def _tied_alias(model: nn.Module, key: str, state: dict) -> bool:
    """True when ``key`` is a parameter tied to another key that was loaded (e.g. tied embeddings)."""
    named = dict(model.named_parameters(remove_duplicate=False))
    target = named.get(key)
    return target is not None and any(named.get(k) is target for k in state)
