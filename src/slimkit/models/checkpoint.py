"""Checkpoints: ``model.safetensors`` + ``history.json``; reshaped models are rebuilt by replay."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ..errors import UserError

FORMAT = "slimkit-checkpoint"
WEIGHTS_FILE, HISTORY_FILE = "model.safetensors", "history.json"


def origin(model: nn.Module) -> dict[str, Any]:
    """Where a model came from: its base SPEC and the structural steps applied since."""
    return getattr(model, "slimkit_origin", None) or {"base": None, "history": []}


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
    from ..measure.size import pack_sparse

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    tensors, metadata = pack_sparse(_untie(state))
    save_file(tensors, str(path / WEIGHTS_FILE), metadata)
    meta = {"format": FORMAT, "version": 1, **info, **(extra or {})}
    (path / HISTORY_FILE).write_text(json.dumps(meta, indent=2))
    return path


def _untie(state: dict) -> dict:
    """safetensors refuses shared storage (tied embeddings): store each shared tensor once by copying."""
    seen, out = set(), {}
    for key, tensor in state.items():
        ptr = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        out[key] = tensor.clone() if ptr in seen else tensor
        seen.add(ptr)
    return out


def read_history(path: Path) -> tuple[Path, dict]:
    """Return (weights file, metadata) for a checkpoint folder or its model.safetensors."""
    folder = path if path.is_dir() else path.parent
    weights = path if path.is_file() else folder / WEIGHTS_FILE
    history = folder / HISTORY_FILE
    if not weights.is_file():
        raise UserError(f"{path}: no {WEIGHTS_FILE} found; a slimkit checkpoint is a folder written by `slimkit train` or `slimkit compress`.")
    try:
        meta = json.loads(history.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{history}: missing or not JSON ({exc}); the checkpoint is incomplete.") from exc
    if meta.get("format") != FORMAT:
        raise UserError(f"{history} is not a slimkit checkpoint history (format {meta.get('format')!r}).")
    return weights, meta


def load_weights(model: nn.Module, weights: Path) -> None:
    """Load safetensors weights into ``model`` strictly, with a clear error when they do not fit."""
    from ..measure.size import unpack_sparse

    try:
        with safe_open(str(weights), "pt") as f:
            state = unpack_sparse({k: f.get_tensor(k) for k in f.keys()}, f.metadata())
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{weights} is not a valid safetensors file ({exc}). slimkit never unpickles checkpoints; re-save it with slimkit.") from exc
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not _tied_alias(model, k, state)]
    if missing or unexpected:
        raise UserError(
            f"{weights} does not match the rebuilt model (missing: {missing[:5]}, unexpected: {unexpected[:5]}); "
            "was history.json edited or written by another version?"
        )


def _tied_alias(model: nn.Module, key: str, state: dict) -> bool:
    """True when ``key`` is a parameter tied to another key that was loaded (e.g. tied embeddings)."""
    named = dict(model.named_parameters(remove_duplicate=False))
    target = named.get(key)
    return target is not None and any(named.get(k) is target for k in state)
