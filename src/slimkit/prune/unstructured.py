"""Unstructured pruning (``magnitude_prune``): zero the least important weights, optionally over rounds."""
from __future__ import annotations

import dataclasses
from typing import Callable, Literal

import torch
from torch import nn

from torch.nn import functional as F

from ..graph.masks import set_masks
from ..measure.size import sparse_size
from ..models.storage import state_bytes
from ..recipe import StepConfig, check, register
from ..train import Callback, FineTune, LossFn, cosine_to_teacher, fit
from .importance import CRITERIA, criterion, ranked_masks
from .layers import weighted_layers
from .masks import bake, current_masks, sparsity


@dataclasses.dataclass
class MagnitudePrune(StepConfig):
    """Zero the least important weights of every Linear and Conv layer.

    Args:
        sparsity: fraction of the weights set to zero, in [0, 1).
        scope: ``global`` ranks all layers together; ``layer`` gives every layer the same sparsity.
        importance: ``l1``, ``l2``, ``lamp`` (magnitude normalised per layer, for global ranking of layers
            with different scales), ``taylor`` (|w * dL/dw| on a few batches), ``snip`` or ``random``.
        schedule: ``iterative`` prunes in ``steps`` rounds with ``epochs`` of fine-tuning after each;
            ``gradual`` (AGP, Zhu & Gupta 2017) trains ``epochs`` in all and raises the sparsity ``steps``
            times at evenly spaced training steps over the first half of them; the rest trains at the target.
        steps: pruning rounds (mask updates); update k of n reaches ``sparsity * (1 - (1 - k/n)^3)`` (cubic).
        epochs: iterative: fine-tuning epochs after each round; gradual: training epochs in all. The
            pruned weights are held at zero while training (0 = no training).
        lr: peak learning rate of that fine-tuning.
        max_batches: cap on batches per fine-tuning epoch (null = whole epoch).
        ignore: module names left dense (a name covers the modules inside it).
        distill: while training, learn from the unpruned model's soft targets (``slimkit.Distill``'s
            default temperature and alpha) besides the labels; embedding tasks always train towards it.
    """

    key = "magnitude_prune"
    sparsity: float = 0.5
    scope: Literal["global", "layer"] = "global"
    importance: Literal["l1", "l2", "lamp", "taylor", "snip", "random"] = "l1"
    schedule: Literal["iterative", "gradual"] = "iterative"
    steps: int = 1
    epochs: int = 0
    lr: float = 0.01
    max_batches: int | None = None
    ignore: tuple[str, ...] = ()
    distill: bool = False

    def __post_init__(self):
        check(0 <= self.sparsity < 1, "sparsity", f"must be in [0, 1), got {self.sparsity}")
        check(self.importance in CRITERIA, "importance", f"must be one of {', '.join(CRITERIA)}")
        check(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        check(self.epochs >= 0, "epochs", f"must be >= 0, got {self.epochs}")
        check(self.steps == 1 or self.epochs >= 1, "epochs",
              "iterative pruning (steps > 1) fine-tunes between rounds; set epochs >= 1")
        check(self.schedule == "iterative" or self.epochs >= 1, "epochs",
              "gradual pruning happens during training; set epochs >= 1")
        check(not self.distill or self.epochs >= 1, "distill", "distillation needs training; set epochs >= 1")
        check(0 < self.lr <= 10, "lr", f"must be in (0, 10], got {self.lr}")
        check(self.max_batches is None or self.max_batches >= 1, "max_batches", "must be >= 1 or null")

    @property
    def needs_data(self) -> bool:
        return self.epochs > 0 or criterion(self.importance).needs_data


def schedule(target: float, steps: int) -> list[float]:
    """Sparsity after each of ``steps`` rounds: the cubic (AGP) ramp to ``target``."""
    return [target * (1 - (1 - k / steps) ** 3) for k in range(1, steps + 1)]


RAMP = 0.5  # gradual schedule: the fraction of the training steps over which the sparsity rises (0.5 beat 0.75
# on digits-cnn at 80% and 90% sparsity, 8 epochs: the last pruned weights need time at a high learning rate)


class _Masker:
    """Raises the sparsity of ``layers`` to a target; weights pruned earlier stay pruned."""

    def __init__(self, model: nn.Module, layers: dict[str, nn.Module], cfg: MagnitudePrune, task):
        self.model, self.layers, self.cfg, self.task = model, layers, cfg, task
        self.importance = criterion(cfg.importance)

    def __call__(self, target: float) -> None:
        scores = self.importance.score(self.model, self.layers, self.task)
        alive = current_masks(self.layers)
        scores = {n: torch.where(alive[n], s.float(), torch.full_like(s, -1.0, dtype=torch.float)) for n, s in scores.items()}
        set_masks(self.layers, ranked_masks(scores, target, self.cfg.scope))


class Gradual(Callback):
    """AGP: mask update k of n (from 0) happens after training step ``k * RAMP * total / n``."""

    def __init__(self, masker: Callable[[float], None], targets: list[float]):
        self.masker, self.targets, self.done = masker, targets, 0

    def on_step(self, model: nn.Module, step: int, total: int) -> None:
        due = min(len(self.targets), int(step * len(self.targets) / (RAMP * total)) + 1)
        while self.done < due:
            self.masker(self.targets[self.done])
            self.done += 1


def teacher_loss(teacher: nn.Module, task, label_smoothing: float) -> LossFn:
    """Distillation from ``teacher``: ``slimkit.Distill``'s soft-target + label loss, or cosine for embeddings."""
    if task.metric == "cosine":
        return cosine_to_teacher(teacher, task.n_inputs)
    from ..distill import Distill, soft_target_loss

    kd, n = Distill(), task.n_inputs

    def loss(model, batch):
        with torch.no_grad():
            target = teacher(*batch[:n])
        out = model(*batch[:n])
        hard = F.cross_entropy(out, batch[n], label_smoothing=label_smoothing)
        return kd.alpha * soft_target_loss(out, [target], kd.temperature) + (1 - kd.alpha) * hard

    return loss


@register(MagnitudePrune)
def magnitude_prune(model: nn.Module, cfg: MagnitudePrune, ctx) -> nn.Module:
    """Prune along the cubic schedule (iterative rounds or gradually while training), then bake the masks in."""
    task = ctx.require_task("magnitude_prune") if cfg.needs_data else ctx.task
    layers = weighted_layers(model, cfg.ignore, ctx.notes, "magnitude_prune")
    masker = _Masker(model, layers, cfg, task)
    targets = schedule(cfg.sparsity, cfg.steps)
    tune = FineTune(epochs=cfg.epochs, lr=cfg.lr, max_batches=cfg.max_batches) if cfg.epochs else None
    loss_fn = None
    if tune is not None and (cfg.distill or task.metric == "cosine"):
        loss_fn = teacher_loss(ctx.teacher.to(ctx.device).eval(), task, tune.label_smoothing)
    if cfg.schedule == "gradual":
        gradual = Gradual(masker, targets)
        gradual.on_step(model, 0, 1)  # the first update happens before training
        fit(model, task, tune, loss_fn=loss_fn, device=ctx.device, progress=ctx.progress, callbacks=(gradual,))
        model.to("cpu")
    else:
        for target in targets:
            masker(target)
            if tune is not None:
                fit(model, task, tune, loss_fn=loss_fn, device=ctx.device, progress=ctx.progress)
                model.to("cpu")
    ctx.notes += bake(layers, "magnitude_prune")
    ctx.notes.append(f"magnitude_prune: {sparsity(layers):.1%} of {len(layers)} layers' weights are zero; the weights "
                     f"take {len(state_bytes(model))} bytes dense, {sparse_size(model)} bytes with sparse tensors "
                     "stored as bitmask + non-zero values (as checkpoints store them)")
    return model
