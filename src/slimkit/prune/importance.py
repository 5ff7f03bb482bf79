"""Importance criteria: how much each weight matters, as a score tensor shaped like the weight.

A criterion scores the ``weight`` of a set of layers (higher = more important). Masks are ranked from the
scores layer by layer or globally (:func:`ranked_masks`); channel pruning sums the scores per channel.
"""
from __future__ import annotations

import abc
from itertools import islice
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..data.task import Task
from ..errors import UserError
from ..train import classification_loss

Layers = dict[str, nn.Module]


class Importance(abc.ABC):
    """Scores layer weights; ``needs_data`` says whether :meth:`score` needs a Task."""

    needs_data: ClassVar[bool] = False

    @abc.abstractmethod
    def score(self, model: nn.Module, layers: Layers, task: Task | None = None) -> dict[str, Tensor]:
        """A non-negative score per element of each layer's (effective, masked) weight."""


class Magnitude(Importance):
    """|w|^p: ``p=1`` is L1 magnitude, ``p=2`` L2 (summed per channel, it ranks like the L2 norm)."""

    def __init__(self, p: int):
        self.p = p

    def score(self, model, layers, task=None):
        return {name: m.weight.detach().abs().pow(self.p) for name, m in layers.items()}


class Lamp(Importance):
    """LAMP (Lee et al., ICLR 2021): w^2 over the sum of w'^2 of every weight of the layer at least as large.

    Ranked globally it gives each layer its own sparsity, and unlike raw magnitudes it is unaffected by a
    layer's scale (a conv followed by BatchNorm can have any), so no layer is emptied for being small.
    """

    def score(self, model, layers, task=None):
        scores = {}
        for name, m in layers.items():
            squared = m.weight.detach().flatten().double().pow(2)
            values, order = torch.sort(squared)
            larger_or_equal = values.flip(0).cumsum(0).flip(0)
            score = torch.empty_like(squared)
            score[order] = values / larger_or_equal.clamp_min(torch.finfo(torch.float64).tiny)
            scores[name] = score.view_as(m.weight).float()
        return scores


class Taylor(Importance):
    """First-order Taylor |w * dL/dw|, with the gradient averaged over the first ``batches`` training batches."""

    needs_data = True

    def __init__(self, batches: int = 4, batch_size: int = 64):
        self.batches, self.batch_size = batches, batch_size

    def score(self, model, layers, task=None):
        if task is None or task.metric != "top1":
            raise UserError("Gradient importance (taylor, snip) needs a labelled classification task; "
                            "pass --data with labels or use importance l1/l2.")
        loss_fn = classification_loss()
        was_training = model.training
        model.eval()
        grads = {name: torch.zeros_like(m.weight) for name, m in layers.items()}
        weights = {}
        for batch in islice(task.train_batches(self.batch_size), self.batches):
            with parametrize.cached():  # a parametrized (masked) weight is the same tensor in forward and grad
                weights = {name: m.weight for name, m in layers.items()}
                loss = loss_fn(model, batch)
                for name, g in zip(weights, torch.autograd.grad(loss, list(weights.values()))):
                    grads[name] += g / self.batches
        model.train(was_training)
        return {name: (weights[name].detach() * grads[name]).abs() for name in layers}


class Snip(Taylor):
    """SNIP connection sensitivity: |w * dL/dw| on one batch, normalised to sum to 1 over all scored weights."""

    def __init__(self, batch_size: int = 128):
        super().__init__(batches=1, batch_size=batch_size)

    def score(self, model, layers, task=None):
        scores = super().score(model, layers, task)
        total = sum(float(s.sum()) for s in scores.values()) or 1.0
        return {name: s / total for name, s in scores.items()}


class RandomImportance(Importance):
    """Uniform random scores (a control: any real criterion should beat it)."""

    def __init__(self, seed: int = 0):
        self.seed = seed

    def score(self, model, layers, task=None):
        gen = torch.Generator().manual_seed(self.seed)
        return {name: torch.rand(m.weight.shape, generator=gen) for name, m in layers.items()}


CRITERIA = {
    "l1": lambda: Magnitude(1),
    "l2": lambda: Magnitude(2),
    "lamp": Lamp,
    "taylor": Taylor,
    "snip": Snip,
    "random": RandomImportance,
}


def criterion(name: str) -> Importance:
    """The importance criterion for a config's ``importance`` field."""
    if name not in CRITERIA:
        raise UserError(f"Unknown importance {name!r}; use one of {', '.join(CRITERIA)}.")
    return CRITERIA[name]()


def ranked_masks(scores: dict[str, Tensor], sparsity: float, scope: Literal["global", "layer"]) -> dict[str, Tensor]:
    """Boolean keep-masks that drop the ``sparsity`` fraction of lowest scores, per layer or over all layers."""
    if scope == "layer":
        return {name: _keep_top(s.flatten(), sparsity).view_as(s) for name, s in scores.items()}
    flat = torch.cat([s.flatten().float() for s in scores.values()])
    keep, masks, start = _keep_top(flat, sparsity), {}, 0
    for name, s in scores.items():
        masks[name] = keep[start:start + s.numel()].view_as(s)
        start += s.numel()
    return masks


def _keep_top(scores: Tensor, sparsity: float) -> Tensor:
    drop = int(round(sparsity * scores.numel()))
    keep = torch.ones(scores.numel(), dtype=torch.bool)
    keep[torch.argsort(scores, stable=True)[:drop]] = False
    return keep
