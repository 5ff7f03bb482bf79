"""Structured pruning (``channel_prune``): remove whole channels and shrink every tensor that depends on them."""
from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from collections import defaultdict
from typing import Literal

import torch
from torch import Tensor, nn

from ..data.task import Task
from ..errors import UserError
from ..measure.counts import count_macs
from ..recipe import StepConfig, check, register
from .graph import FIXED, analyse
from .importance import criterion
from .layers import WEIGHTED, ignored_names
from .surgery import Plan, shrink

MAX_RATIO = 0.99  # the largest ratio target_macs may solve for (each group keeps at least one channel anyway)


@dataclasses.dataclass
class ChannelPrune(StepConfig):
    """Remove the least important output channels (filters, neurons) and shrink what depends on them.

    Channels coupled by the graph (residual adds, concatenation, depthwise and grouped convs, norms,
    flatten into Linear) form groups, found by tracing with torch.fx; each group loses the same fraction.
    The model's outputs (the classifier) and layers the graph cannot handle keep their channels.

    Args:
        ratio: fraction of the channels removed in each prunable group, in [0, 1).
        importance: ``l1``, ``l2``, ``taylor`` (|w * dL/dw|, needs data) or ``random``, summed over
            every weight a channel touches.
        ignore: module names whose input and output channels are kept (a name covers modules inside it).
        round_to: kept channels per group are rounded up to a multiple of this.
        target_macs: when set, the fraction of the baseline MACs to keep, in (0, 1]; the global ratio is
            solved by bisection and ``ratio`` is not used.
    """

    key = "channel_prune"
    ratio: float = 0.5
    importance: Literal["l1", "l2", "taylor", "random"] = "l2"
    ignore: tuple[str, ...] = ()
    round_to: int = 1
    target_macs: float | None = None

    def __post_init__(self):
        check(0 <= self.ratio < 1, "ratio", f"must be in [0, 1), got {self.ratio}")
        check(self.importance in ("l1", "l2", "taylor", "random"), "importance", "must be l1, l2, taylor or random")
        check(self.round_to >= 1, "round_to", f"must be >= 1, got {self.round_to}")
        check(self.target_macs is None or 0 < self.target_macs <= 1, "target_macs",
              f"must be a fraction of the baseline MACs in (0, 1], got {self.target_macs}")

    @property
    def needs_data(self) -> bool:
        return criterion(self.importance).needs_data


class ChannelPruner:
    """Dependency groups and channel scores of one model, computed once; plans for any ratio.

    Args:
        model: the model to analyse (not modified).
        example_inputs: inputs to trace and run it with.
        importance: criterion name (see :class:`ChannelPrune`).
        ignore: module names whose channels are kept.
        task: data for gradient criteria.
    """

    def __init__(self, model: nn.Module, example_inputs: tuple, importance: str = "l2",
                 ignore: tuple[str, ...] = (), task: Task | None = None):
        self.model, self.example_inputs = model, example_inputs
        self.deps = analyse(model, example_inputs, ignored_names(model, ignore))
        self.roots = self.deps.roots()
        self.scores = self._class_scores(criterion(importance), task)
        self.groups = self._groups()

    @property
    def skipped(self) -> list[str]:
        """Nodes and layers whose channels were kept because the analysis cannot handle them."""
        return self.deps.skipped

    def _class_scores(self, importance, task) -> Tensor:
        layers = {n: u.module for n, u in self.deps.uses.items() if isinstance(u.module, WEIGHTED)}
        scores = importance.score(self.model, layers, task)
        total = torch.zeros(len(self.roots), dtype=torch.float64)
        for name, s in scores.items():
            use, s = self.deps.uses[name], s.double()
            total.index_add_(0, self.roots[use.out_ids], s.flatten(1).sum(1))
            if use.in_ids is not None and getattr(use.module, "groups", 1) == 1:
                total.index_add_(0, self.roots[use.in_ids], s.transpose(0, 1).flatten(1).sum(1))
        return total

    def _groups(self) -> list[Tensor]:
        """Class roots grouped by the set of layers whose output channels they are."""
        producers = defaultdict(set)
        for i, (root, owner) in enumerate(zip(self.roots.tolist(), self.deps.owner)):
            if root != FIXED and owner is not None:
                producers[root].add(owner)
        groups = defaultdict(list)
        for root, owners in producers.items():
            groups[tuple(sorted(owners))].append(root)
        return [torch.tensor(sorted(roots)) for roots in groups.values()]

    def removed(self, ratio: float, round_to: int = 1) -> Tensor:
        """Boolean over ids: True where the channel is removed at ``ratio``."""
        gone = torch.zeros(len(self.roots), dtype=torch.bool)
        for roots in self.groups:
            n = len(roots)
            keep = min(n, max(1, math.ceil((n - int(ratio * n + 1e-9)) / round_to) * round_to))
            order = torch.argsort(self.scores[roots], stable=True)
            gone[roots[order[: n - keep]]] = True
        return gone[self.roots]

    def plan(self, ratio: float, round_to: int = 1) -> Plan:
        """Kept channel indices of every module that shrinks at ``ratio``."""
        gone = self.removed(ratio, round_to)
        plan: Plan = {}
        for name, use in self.deps.uses.items():
            entry = {}
            for side, ids in (("out", use.out_ids), ("in", use.in_ids)):
                if ids is not None and bool(gone[ids].any()):
                    entry[side] = torch.nonzero(~gone[ids]).flatten().tolist()
            if entry:
                plan[name] = entry
        return plan

    def macs(self, ratio: float, round_to: int = 1) -> int:
        """MACs of the model pruned at ``ratio`` (measured on a pruned copy)."""
        pruned = shrink(copy.deepcopy(self.model), self.plan(ratio, round_to))
        return count_macs(pruned, self.example_inputs)[0]

    def solve(self, target_macs: float, round_to: int = 1, iterations: int = 12) -> float:
        """The smallest global ratio whose pruned model keeps at most ``target_macs`` of the MACs."""
        budget = target_macs * count_macs(self.model, self.example_inputs)[0]
        if self.macs(0.0, round_to) <= budget:
            return 0.0
        least = self.macs(MAX_RATIO, round_to)
        if least > budget:
            raise UserError(
                f"target_macs={target_macs} cannot be reached: removing {MAX_RATIO:.0%} of every prunable group "
                f"still keeps {least / (budget / target_macs):.1%} of the MACs; raise target_macs or prune fewer "
                "layers in `ignore`.")
        lo, hi = 0.0, MAX_RATIO
        for _ in range(iterations):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if self.macs(mid, round_to) <= budget else (mid, hi)
        return hi


def _replay(model: nn.Module, entry: dict) -> nn.Module:
    return shrink(model, entry["replay"]["plan"])


@register(ChannelPrune, replay=_replay)
def channel_prune(model: nn.Module, cfg: ChannelPrune, ctx) -> nn.Module:
    """Prune channels in place; records the kept indices so checkpoints can rebuild the shapes."""
    task = ctx.require_task("channel_prune") if cfg.needs_data else ctx.task
    pruner = ChannelPruner(model, ctx.example_inputs, cfg.importance, cfg.ignore, task)
    for what in pruner.skipped:
        message = f"channel_prune skipped {what}: the channels it touches are kept"
        warnings.warn(message, stacklevel=2)
        ctx.notes.append(message)
    ratio = cfg.ratio if cfg.target_macs is None else pruner.solve(cfg.target_macs, cfg.round_to)
    plan = pruner.plan(ratio, cfg.round_to)
    shrink(model, plan)
    ctx.record({"ratio": ratio, "plan": plan})
    ctx.notes.append(f"channel_prune: ratio {ratio:.3f} over {len(pruner.groups)} channel groups shrank {len(plan)} layers")
    return model
