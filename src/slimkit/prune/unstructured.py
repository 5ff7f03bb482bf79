"""Unstructured pruning (``magnitude_prune``): zero the least important weights, optionally over rounds."""
from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import nn

from ..recipe import StepConfig, check, register
from ..train import FineTune, fit
from .importance import CRITERIA, criterion, ranked_masks
from .layers import weighted_layers
from .masks import bitmask_bytes, current_masks, make_permanent, set_masks, sparsity


@dataclasses.dataclass
class MagnitudePrune(StepConfig):
    """Zero the least important weights of every Linear and Conv layer.

    Args:
        sparsity: fraction of the weights set to zero, in [0, 1).
        scope: ``global`` ranks all layers together; ``layer`` gives every layer the same sparsity.
        importance: ``l1``, ``l2``, ``taylor`` (|w * dL/dw| on a few batches), ``snip`` or ``random``.
        steps: pruning rounds; round k of n reaches ``sparsity * (1 - (1 - k/n)^3)`` (cubic schedule).
        epochs: fine-tuning epochs after each round, with the pruned weights held at zero (0 = none).
        lr: peak learning rate of that fine-tuning.
        max_batches: cap on batches per fine-tuning epoch (null = whole epoch).
        ignore: module names left dense (a name covers the modules inside it).
    """

    key = "magnitude_prune"
    sparsity: float = 0.5
    scope: Literal["global", "layer"] = "global"
    importance: Literal["l1", "l2", "taylor", "snip", "random"] = "l1"
    steps: int = 1
    epochs: int = 0
    lr: float = 0.01
    max_batches: int | None = None
    ignore: tuple[str, ...] = ()

    def __post_init__(self):
        check(0 <= self.sparsity < 1, "sparsity", f"must be in [0, 1), got {self.sparsity}")
        check(self.importance in CRITERIA, "importance", f"must be one of {', '.join(CRITERIA)}")
        check(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        check(self.epochs >= 0, "epochs", f"must be >= 0, got {self.epochs}")
        check(self.steps == 1 or self.epochs >= 1, "epochs",
              "iterative pruning (steps > 1) fine-tunes between rounds; set epochs >= 1")
        check(0 < self.lr <= 10, "lr", f"must be in (0, 10], got {self.lr}")
        check(self.max_batches is None or self.max_batches >= 1, "max_batches", "must be >= 1 or null")

    @property
    def needs_data(self) -> bool:
        return self.epochs > 0 or criterion(self.importance).needs_data


def schedule(target: float, steps: int) -> list[float]:
    """Sparsity after each of ``steps`` rounds: the cubic (AGP) ramp to ``target``."""
    return [target * (1 - (1 - k / steps) ** 3) for k in range(1, steps + 1)]


@register(MagnitudePrune)
def magnitude_prune(model: nn.Module, cfg: MagnitudePrune, ctx) -> nn.Module:
    """Prune in ``cfg.steps`` rounds (fine-tuning between them with masks on), then bake the masks in."""
    task = ctx.require_task("magnitude_prune") if cfg.needs_data else ctx.task
    layers = weighted_layers(model, cfg.ignore)
    importance = criterion(cfg.importance)
    tune = FineTune(epochs=cfg.epochs, lr=cfg.lr, max_batches=cfg.max_batches) if cfg.epochs else None
    for target in schedule(cfg.sparsity, cfg.steps):
        scores = importance.score(model, layers, task)
        alive = current_masks(layers)
        scores = {n: torch.where(alive[n], s.float(), torch.full_like(s, -1.0, dtype=torch.float)) for n, s in scores.items()}
        set_masks(layers, ranked_masks(scores, target, cfg.scope))
        if tune is not None:
            fit(model, task, tune, device=ctx.device, progress=ctx.progress)
            model.to("cpu")
    make_permanent(layers)
    dense, encoded = bitmask_bytes(model)
    ctx.notes.append(f"magnitude_prune: {sparsity(layers):.1%} of {len(layers)} layers' weights are zero; "
                     f"weights take {dense} bytes dense, {encoded} bytes as bitmask + non-zero values")
    return model
