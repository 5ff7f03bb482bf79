"""One-shot pruning without fine-tuning (``one_shot_prune``): SparseGPT, Wanda or layer-wise magnitude, unstructured
or N:M, each layer fitted to its own inputs on calibration data, one transformer block at a time."""
from __future__ import annotations

import dataclasses
import json
import re
import warnings
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..errors import UserError
from ..graph.blockwise import InputStats, calibrate_blockwise, input_features
from ..graph.layers import compute_weight, layer_base
from ..recipe import ConfigError, StepConfig, check, register
from .layers import weighted_layers
from .masks import sparsity
from .nm import nm_mask

METHODS = ("sparsegpt", "wanda", "magnitude")
NM_PATTERN = re.compile(r"(\d+):(\d+)")
ERROR_ROWS = 2048  # calibration input rows per layer on which the output error is measured


@dataclasses.dataclass
class OneShotPrune(StepConfig):
    """Zero weights of every Linear layer (and transformers' Conv1D) in one shot, without fine-tuning.

    Conv layers (use ``magnitude_prune`` or ``nm_sparsity`` for them), Linear subclasses computing otherwise and
    parametrized weights are left dense and named in the notes. With data, the layers are pruned one transformer
    block at a time, each block calibrated on what the already pruned blocks before it produce; each layer's
    relative output error on its calibration inputs is summarised in the notes and, with its sparsity, written to
    ``one_shot_prune.json``. The zeros are stored in dense weights.

    Args:
        method: ``sparsegpt`` (Frantar & Alistarh 2023: the mask from w^2 / [H^-1]_jj^2, column block by column
            block, and the remaining weights updated to compensate; needs data), ``wanda`` (Sun et al. 2023:
            |w| times the norm of its input feature, compared within each output row; needs data) or
            ``magnitude`` (|w| within each layer, the baseline; needs no data).
        sparsity: fraction of each layer's weights set to zero, in [0, 1); default 0.5. Implied by an N:M
            pattern (1 - N/M), so any other value is an error there.
        pattern: ``unstructured`` or ``N:M`` (a quoted string in YAML, e.g. ``"2:4"``): N weights kept in every M
            consecutive inputs of an output row. Layers whose inputs do not split into groups of M stay dense.
        calibration_batches: batches of training inputs to calibrate on.
        batch_size: samples per calibration batch.
        damping: sparsegpt: fraction of the mean Hessian diagonal added to the diagonal, in (0, 1].
        block_size: sparsegpt: columns whose mask is chosen together (a multiple of M for N:M).
        ignore: module names left dense (a name covers the modules inside it), e.g. ``[lm_head]``.
    """

    key = "one_shot_prune"
    method: Literal["sparsegpt", "wanda", "magnitude"] = "sparsegpt"
    sparsity: float | None = None
    pattern: str | int = "unstructured"  # int: YAML reads an unquoted 2:4 as the base-60 number 124 (rejected)
    calibration_batches: int = 16
    batch_size: int = 8
    damping: float = 0.01
    block_size: int = 128
    ignore: tuple[str, ...] = ()

    def __post_init__(self):
        check(self.method in METHODS, "method", f"must be one of {', '.join(METHODS)}, got {self.method!r}")
        if isinstance(self.pattern, int):
            hint = f'quote it: "{self.pattern // 60}:{self.pattern % 60}"' if self.pattern >= 60 else "write 'N:M'"
            raise ConfigError("pattern", f"got the number {self.pattern} (YAML reads an unquoted N:M as a base-60 "
                                         f"number); {hint}")
        check(self.pattern == "unstructured" or self.nm is not None, "pattern",
              f"must be 'unstructured' or 'N:M' with 1 <= N < M, such as '2:4', got {self.pattern!r}")
        check(self.sparsity is None or 0 <= self.sparsity < 1, "sparsity", f"must be in [0, 1), got {self.sparsity}")
        if self.nm is not None:
            n, m = self.nm
            check(self.sparsity is None or self.sparsity == 1 - n / m, "sparsity",
                  f"{self.pattern} zeros {1 - n / m:g} of the weights; leave sparsity out or set it to {1 - n / m:g}")
            check(self.block_size % m == 0, "block_size", f"must be a multiple of M = {m}, got {self.block_size}")
        check(self.calibration_batches >= 1, "calibration_batches", f"must be >= 1, got {self.calibration_batches}")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check(0 < self.damping <= 1, "damping", f"must be in (0, 1], got {self.damping}")
        check(self.block_size >= 1, "block_size", f"must be >= 1, got {self.block_size}")

    @property
    def nm(self) -> tuple[int, int] | None:
        """(N, M) of an N:M pattern, else None."""
        match = NM_PATTERN.fullmatch(str(self.pattern))
        n, m = map(int, match.groups()) if match else (0, 0)
        return (n, m) if 1 <= n < m else None

    @property
    def target(self) -> float:
        """The fraction of each layer's weights to zero."""
        if self.nm is not None:
            return 1 - self.nm[0] / self.nm[1]
        return 0.5 if self.sparsity is None else self.sparsity

    @property
    def needs_data(self) -> bool:
        return self.method != "magnitude"

    def check_model(self, model: nn.Module) -> None:
        linear_layers(model, self.ignore, [])


def linear_layers(model: nn.Module, ignore: tuple[str, ...], notes: list[str]) -> dict[str, nn.Module]:
    """The Linear and Conv1D layers of ``model`` by name, minus the ignored and tied ones; the other weighted
    layers are named in ``notes``.

    Raises:
        UserError: when there is none.
    """
    layers = weighted_layers(model, ignore, notes, "one_shot_prune")
    linear = {name: layer for name, layer in layers.items()
              if layer_base(layer, (nn.Linear,)) and not parametrize.is_parametrized(layer, "weight")}
    if not linear:
        raise UserError(f"one_shot_prune prunes Linear layers (and transformers' Conv1D), and {type(model).__name__} "
                        "has none left to prune (ignored and tied layers stay dense). Use magnitude_prune or "
                        "nm_sparsity for Conv layers.")
    if others := [name for name in layers if name not in linear]:
        notes.append("one_shot_prune: left dense (Conv, a parametrized weight, or a Linear subclass computing "
                     f"otherwise): {', '.join(others)}")
    return linear


def groupable(layers: dict[str, nn.Module], m: int, notes: list[str]) -> dict[str, nn.Module]:
    """The ``layers`` whose inputs split into groups of ``m``; a warning and a note name each of the others."""
    for name, layer in layers.items():
        if input_features(layer) % m:
            message = (f"one_shot_prune: skipped {name}: its {input_features(layer)} inputs do not split into groups "
                       f"of {m}")
            warnings.warn(message, stacklevel=3)
            notes.append(message)
    return {name: layer for name, layer in layers.items() if input_features(layer) % m == 0}


def lowest(scores: Tensor, k: int) -> Tensor:
    """Mask of the ``k`` lowest scores in each row."""
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(1, scores.topk(k, dim=1, largest=False).indices, True)


def select(scores: Tensor, cfg: OneShotPrune, per_row: bool) -> Tensor:
    """Mask of the weights to prune, the lowest ``scores``: M - N of every M consecutive inputs for N:M, else
    ``cfg.target`` of each row (``per_row``) or of the whole layer."""
    if cfg.nm is not None:
        return ~nm_mask(scores, *cfg.nm)
    rows = scores if per_row else scores.reshape(1, -1)
    return lowest(rows, round(cfg.target * rows.shape[1])).view_as(scores)


def sparsegpt(weight: Tensor, hessian: Tensor, cfg: OneShotPrune) -> Tensor:
    """``weight`` (out, in) pruned by SparseGPT: column block by column block, the mask takes the lowest
    w^2 / [H^-1]_jj^2 (N:M: every M columns), and each pruned weight's error is spread over the columns not yet
    visited (OBS updates). Inputs never non-zero on the calibration data are free to prune, so they go first."""
    w = weight.clone()
    alive = hessian.diagonal() > 0
    hinv = inverse_hessian_factor(hessian, alive, cfg.damping).to(w)
    rows, columns = w.shape
    for start in range(0, columns, cfg.block_size):
        end = min(start + cfg.block_size, columns)
        block, h = w[:, start:end], hinv[start:end, start:end]
        scale = alive[start:end] / h.diagonal()
        if cfg.nm is None:  # this block's share of the layer's zeros, rounded so that the layer's total is exact
            share = round(cfg.target * rows * end) - round(cfg.target * rows * start)
            prune = lowest((block * scale).square().reshape(1, -1), share).view_as(block)
        else:  # chosen every M columns below, from the weights as updated so far
            prune = torch.zeros_like(block, dtype=torch.bool)
        errors = torch.zeros_like(block)
        for i in range(end - start):
            if cfg.nm is not None and i % cfg.nm[1] == 0:
                group = slice(i, i + cfg.nm[1])
                prune[:, group] = ~nm_mask((block[:, group] * scale[group]).square(), *cfg.nm)
            errors[:, i] = block[:, i] * prune[:, i] / h[i, i]
            block[:, i:] -= errors[:, i, None] * h[i, i:]
            block[:, i].masked_fill_(prune[:, i], 0)
        w[:, end:] -= errors @ hinv[start:end, end:]
    return w


def inverse_hessian_factor(hessian: Tensor, alive: Tensor, damping: float) -> Tensor:
    """The upper Cholesky factor of the inverse of the dampened Hessian; a dead input's diagonal entry is 1."""
    h = hessian.clone()
    h.diagonal().masked_fill_(~alive, 1)
    h.diagonal().add_(damping * h.diagonal().mean())
    return torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)


@torch.no_grad()
def prune_layer(layer: nn.Module, stats: InputStats | None, cfg: OneShotPrune) -> dict:
    """Write ``layer``'s pruned weight; its sparsity and (with ``stats``) relative output error on its inputs."""
    weight = compute_weight(layer)
    w = weight.detach().float()
    if cfg.method == "sparsegpt":
        pruned = sparsegpt(w, stats.hessian.to(w.device), cfg)
    else:
        scores = w.abs() * stats.norm.to(w.device) if cfg.method == "wanda" else w.abs()
        pruned = w.masked_fill(select(scores, cfg, per_row=cfg.method == "wanda"), 0)
    error = None
    if stats is not None:
        x = stats.kept.to(w.device)
        error = float((x @ (w - pruned).T).square().sum() / (x @ w.T).square().sum().clamp_min(1e-30))
    weight.copy_(pruned)
    return {"sparsity": float((weight == 0).float().mean()), "error": error}


@register(OneShotPrune)
def one_shot_prune(model: nn.Module, cfg: OneShotPrune, ctx) -> nn.Module:
    """Prune every Linear layer in one shot: block by block on calibration data when there is some (always for
    sparsegpt and wanda), else (magnitude) directly."""
    task = ctx.require_task("one_shot_prune") if cfg.needs_data else ctx.task
    layers = linear_layers(model, cfg.ignore, ctx.notes)
    if cfg.nm is not None:
        layers = groupable(layers, cfg.nm[1], ctx.notes)
    done: dict[str, dict] = {}

    def process(group: dict[str, InputStats | None]) -> None:
        for name, stats in group.items():
            if stats is not None and stats.rows == 0:
                ctx.notes.append(f"one_shot_prune: {name} left dense: it did not run on the calibration data")
            else:
                done[name] = prune_layer(layers[name], stats, cfg)

    if task is None:
        process(dict.fromkeys(layers))
    else:
        batches = task.input_batches(cfg.calibration_batches, cfg.batch_size)
        batches = [tuple(t.to(ctx.device) for t in batch) for batch in batches]
        calibrate_blockwise(model.to(ctx.device), batches, layers, lambda _, layer: InputStats(
            input_features(layer), gram=cfg.method == "sparsegpt", keep_rows=ERROR_ROWS), process, ctx.progress)
        model.to("cpu")
    (ctx.out_dir / "one_shot_prune.json").write_text(json.dumps(done, indent=2))
    ctx.artifacts["one_shot_prune"] = "one_shot_prune.json"
    ctx.notes.append(summary(cfg, done, {name: layers[name] for name in done}))
    return model


def summary(cfg: OneShotPrune, done: dict[str, dict], layers: dict[str, nn.Module]) -> str:
    """The step's note: what it pruned, how sparse the layers are, and their output errors."""
    pattern = cfg.pattern if cfg.nm is not None else f"{cfg.target:.0%} unstructured"
    note = (f"one_shot_prune: {cfg.method} {pattern} on {len(done)} layers; {sparsity(layers):.1%} of their weights "
            "are zero, stored as dense tensors")
    errors = {name: r["error"] for name, r in done.items() if r["error"] is not None}
    if errors:
        worst = max(errors, key=errors.get)
        note += (f"; relative output error on the calibration inputs: mean {sum(errors.values()) / len(errors):.3g}, "
                 f"worst {errors[worst]:.3g} ({worst})")
    return note + "; per layer in one_shot_prune.json"
