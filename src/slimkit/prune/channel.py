"""Structured pruning (``channel_prune``): remove whole channels and shrink every tensor that depends on them."""
from __future__ import annotations

import copy
import dataclasses
import warnings
from collections import defaultdict
from fnmatch import fnmatch
from typing import Literal, Sequence

import torch
from torch import Tensor, nn

from ..data.task import Task
from ..errors import UserError
from ..measure.counts import count_macs
from ..recipe import StepConfig, check, register
from .graph import analyse
from .ids import FIXED, varies
from .importance import criterion
from .layers import WEIGHTED, ignored_names
from . import transformer
from .reconstruct import reconstruct
from .surgery import Plan, kept_count, shrink

MAX_RATIO = 0.99
"""The largest pruning ratio ``target_macs`` may solve for (each group keeps at least one channel anyway)."""


@dataclasses.dataclass
class ChannelPrune(StepConfig):
    """Remove the least important output channels (filters, neurons) and shrink what depends on them.

    Channels coupled by the graph (residual adds, concatenation, slicing, depthwise and grouped convs, norms,
    flatten into Linear, attention heads) form groups, found by tracing with torch.fx; each group loses the
    same fraction. The model's outputs (the classifier) and what the graph cannot handle keep their channels,
    each named in the notes with the reason. On a transformers model whose layers
    :data:`slimkit.prune.transformer.LAYOUTS` describes (BERT family, ViT, DistilBERT, Llama with grouped-query
    attention) the prunable groups are each layer's FFN neurons and attention heads instead (no tracing
    needed); hidden sizes are kept.

    Args:
        ratio: fraction of the channels removed in each prunable group (attention heads found in the
            graph included), in [0, 1); on a transformers model, the fraction of each layer's FFN neurons.
        heads: fraction of the attention heads (key/value head groups with grouped-query attention) removed
            in each layer of a transformers model, in [0, 1); every layer keeps at least one.
        importance: ``l1``, ``l2``, ``taylor`` (|w * dL/dw|, needs data) or ``random``, summed over
            every weight a channel touches.
        ignore: module names whose input and output channels are kept (a name covers modules inside it).
        round_to: kept channels per group are rounded up to a multiple of this.
        target_macs: when set, the fraction of the baseline MACs to keep, in (0, 1]; the global ratio is
            solved by bisection and ``ratio`` is not used.
        ratios: per-group overrides of ``ratio``: module-name glob pattern (fnmatch) -> fraction of channels
            removed, in [0, 1). A group follows the first pattern matching one of the layers whose output
            channels it is (``ChannelPruner.group_layers``); with ``target_macs`` the overridden groups
            keep their ratio and the global ratio of the others is solved.
        reconstruct: refit every shrunk Conv2d/Linear by least squares so that, on ``calibration_batches``
            batches of ``batch_size`` training inputs, it reproduces the unpruned layer's output (needs data).
            The pruned model then starts near the original's accuracy instead of near chance.
        calibration_batches: batches used by ``reconstruct``.
        batch_size: samples per calibration batch.
    """

    key = "channel_prune"
    ratio: float = 0.5
    heads: float = 0.0
    importance: Literal["l1", "l2", "taylor", "random"] = "l2"
    ignore: tuple[str, ...] = ()
    round_to: int = 1
    target_macs: float | None = None
    ratios: dict[str, float] = dataclasses.field(default_factory=dict)
    reconstruct: bool = False
    calibration_batches: int = 16
    batch_size: int = 128

    def __post_init__(self):
        check(0 <= self.ratio < 1, "ratio", f"must be in [0, 1), got {self.ratio}")
        check(0 <= self.heads < 1, "heads", f"must be in [0, 1), got {self.heads}")
        check(self.importance in ("l1", "l2", "taylor", "random"), "importance", "must be l1, l2, taylor or random")
        check(self.round_to >= 1, "round_to", f"must be >= 1, got {self.round_to}")
        check(self.target_macs is None or 0 < self.target_macs <= 1, "target_macs",
              f"must be a fraction of the baseline MACs in (0, 1], got {self.target_macs}")
        for pattern, ratio in self.ratios.items():
            check(bool(pattern.strip()), "ratios", "an empty module-name pattern matches nothing; use a name or glob like 'blocks.1.*'")
            check(0 <= ratio < 1, f"ratios.{pattern}", f"must be in [0, 1), got {ratio}")
        check(self.calibration_batches >= 1, "calibration_batches", f"must be >= 1, got {self.calibration_batches}")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")

    @property
    def needs_data(self) -> bool:
        return self.reconstruct or criterion(self.importance).needs_data

    def check_model(self, model: nn.Module) -> None:
        if self.heads and not transformer.encoder_layers(model):
            raise UserError(f"channel_prune.heads applies to transformers layers (BERT family, ViT, DistilBERT, Llama); "
                            f"{type(model).__name__} has none. Remove `heads` (ratio prunes the channels, heads "
                            "included, of other models).")


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
        self.groups, self.group_layers = self._groups()
        was_training = model.training
        self.layer_macs = count_macs(model, example_inputs)  # (total, per layer) of the unpruned model
        model.train(was_training)

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

    def _groups(self) -> tuple[list[Tensor], list[tuple[str, ...]]]:
        """Class roots grouped by the set of layers whose output channels they are, and those layers."""
        producers = defaultdict(set)
        for i, (root, owner) in enumerate(zip(self.roots.tolist(), self.deps.owner)):
            if root != FIXED and owner is not None:
                producers[root].add(owner)
        groups = defaultdict(list)
        for root, owners in producers.items():
            groups[tuple(sorted(owners))].append(root)
        return [torch.tensor(sorted(roots)) for roots in groups.values()], list(groups)

    def resolve(self, ratios: dict[str, float]) -> dict[int, float]:
        """Group index -> ratio for per-group overrides keyed by module-name patterns (first match wins).

        Raises:
            UserError: when a pattern matches no layer of any prunable group.
        """
        fixed: dict[int, float] = {}
        for pattern, ratio in ratios.items():
            hits = [i for i, layers in enumerate(self.group_layers) if any(fnmatch(n, pattern) for n in layers)]
            if not hits:
                names = ", ".join(sorted(n for layers in self.group_layers for n in layers))
                raise UserError(f"ratios: {pattern!r} matches no layer of a prunable channel group; "
                                f"use one of {names} (or a glob over them)")
            for i in hits:
                fixed.setdefault(i, ratio)
        return fixed

    def per_group(self, ratio: float | Sequence[float]) -> list[float]:
        """One ratio per group: ``ratio`` repeated, or the sequence itself (one entry per group)."""
        if isinstance(ratio, (int, float)):
            return [float(ratio)] * len(self.groups)
        if len(ratio) != len(self.groups):
            raise ValueError(f"expected {len(self.groups)} ratios (one per channel group), got {len(ratio)}")
        return [float(r) for r in ratio]

    def removed(self, ratio: float | Sequence[float], round_to: int = 1) -> Tensor:
        """Boolean over ids: True where the channel is removed at ``ratio`` (global, or one per group)."""
        gone = torch.zeros(len(self.roots), dtype=torch.bool)
        for roots, ratio in zip(self.groups, self.per_group(ratio)):
            n = len(roots)
            keep = kept_count(n, ratio, round_to)
            order = torch.argsort(self.scores[roots], stable=True)
            gone[roots[order[: n - keep]]] = True
        return gone[self.roots]

    def plan(self, ratio: float | Sequence[float], round_to: int = 1) -> Plan:
        """Kept channel indices of every module that shrinks at ``ratio`` (global, or one per group), with the
        parameters read by the traced code and the head counts that shrink along."""
        gone = self.removed(ratio, round_to)
        plan: Plan = defaultdict(dict)
        for name, use in self.deps.uses.items():
            for side, ids in (("out", use.out_ids), ("in", use.in_ids)):
                if ids is not None and bool(gone[ids].any()):
                    plan[name][side] = torch.nonzero(~gone[ids]).flatten().tolist()
        for use in self.deps.tensors:
            ids = self.deps.canonical(use.ids)
            dims = [d for d in range(ids.dim()) if varies(ids, d)]
            vector = ids.movedim(dims[0], 0).reshape(ids.shape[dims[0]], -1)[:, 0] if dims else None
            if vector is not None and bool(gone[vector].any()):
                keep = torch.nonzero(~gone[vector]).flatten().tolist()
                plan[use.module].setdefault("tensors", {})[use.attr] = {"dim": dims[0], "keep": keep}
        for use in self.deps.counts:
            if bool(gone[use.ids].any()):
                plan[use.module].setdefault("attrs", {})[use.attr] = int((~gone[use.ids]).sum())
        return dict(plan)

    def macs(self, ratio: float | Sequence[float], round_to: int = 1) -> int:
        """MACs of the model pruned at ``ratio`` (global, or one per group), without pruning it.

        Each Conv/Linear layer's measured baseline MACs scale with its kept output and input fractions
        (grouped convs keep their per-group width, so only the output fraction counts); the rest is fixed.
        """
        total, per_layer = self.layer_macs
        gone = self.removed(ratio, round_to)
        for name, use in self.deps.uses.items():
            if name not in per_layer or not isinstance(use.module, WEIGHTED):
                continue
            kept = 1 - float(gone[use.out_ids].double().mean())
            if use.in_ids is not None and getattr(use.module, "groups", 1) == 1:
                kept *= 1 - float(gone[use.in_ids].double().mean())
            total -= per_layer[name] * (1 - kept)
        return round(total)

    def solve(self, target_macs: float, round_to: int = 1, fixed: dict[int, float] | None = None,
              iterations: int = 12) -> float:
        """The smallest global ratio whose pruned model keeps at most ``target_macs`` of the MACs.

        Args:
            fixed: group index -> ratio for groups that keep their own ratio (see :meth:`resolve`).
        """
        fixed = fixed or {}
        budget = target_macs * self.layer_macs[0]

        def macs(ratio: float) -> int:
            return self.macs([fixed.get(i, ratio) for i in range(len(self.groups))], round_to)

        if macs(0.0) <= budget:
            return 0.0
        least = macs(MAX_RATIO)
        if least > budget:
            raise UserError(
                f"target_macs={target_macs} cannot be reached: removing {MAX_RATIO:.0%} of every prunable group "
                f"still keeps {least / (budget / target_macs):.1%} of the MACs; raise target_macs or prune fewer "
                "layers in `ignore`.")
        lo, hi = 0.0, MAX_RATIO
        for _ in range(iterations):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if macs(mid) <= budget else (mid, hi)
        return hi


def _replay(model: nn.Module, entry: dict) -> nn.Module:
    return transformer.sync_heads(shrink(model, entry["replay"]["plan"]))


@register(ChannelPrune, replay=_replay)
def channel_prune(model: nn.Module, cfg: ChannelPrune, ctx) -> nn.Module:
    """Prune channels in place; records the kept indices so checkpoints can rebuild the shapes."""
    task = ctx.require_task("channel_prune") if cfg.needs_data else ctx.task
    if transformer.encoder_layers(model):
        return _prune_encoder(model, cfg, ctx, task)
    cfg.check_model(model)
    pruner = ChannelPruner(model, ctx.example_inputs, cfg.importance, cfg.ignore, task)
    for what in dict.fromkeys(pruner.skipped):
        _warn(ctx, f"channel_prune skipped {what}: the channels it touches are kept")
    fixed = pruner.resolve(cfg.ratios)
    ratio = cfg.ratio if cfg.target_macs is None else pruner.solve(cfg.target_macs, cfg.round_to, fixed)
    ratios = [fixed.get(i, ratio) for i in range(len(pruner.groups))]
    plan = pruner.plan(ratios, cfg.round_to)
    _warn_if_little_removed(pruner, pruner.macs(ratios, cfg.round_to), cfg, ctx)
    original = copy.deepcopy(model) if cfg.reconstruct else None
    shrink(model, plan)
    _reconstruct(model, original, plan, cfg, ctx, task)
    ctx.record({"ratio": ratio, "ratios": ratios, "plan": plan})
    overridden = f" ({len(fixed)} with their own ratio)" if fixed else ""
    ctx.notes.append(f"channel_prune: ratio {ratio:.3f} over {len(pruner.groups)} channel groups{overridden} "
                     f"shrank {len(plan)} layers")
    return model


def _warn(ctx, message: str) -> None:
    """A warning that also goes into the report's notes."""
    warnings.warn(message, stacklevel=3)
    ctx.notes.append(message)


def _warn_if_little_removed(pruner: ChannelPruner, macs_after: int, cfg: ChannelPrune, ctx) -> None:
    """Warn when the plan removes less than a tenth of the MACs the config asked to remove."""
    base = pruner.layer_macs[0]
    asked = (cfg.ratio if cfg.target_macs is None else 1 - cfg.target_macs) * base
    removed = base - macs_after
    if asked > 0 and removed < asked / 10:
        _warn(ctx, f"channel_prune removed {removed / base:.1%} of the MACs where about {asked / base:.0%} was asked: "
                   "most channels are kept by the layers and ops named in the notes above")


def _reconstruct(model: nn.Module, original: nn.Module | None, plan: Plan, cfg: ChannelPrune, ctx, task) -> None:
    """With ``cfg.reconstruct``, refit the shrunk layers of ``model`` to ``original``'s outputs."""
    if original is None:
        return
    refit = reconstruct(model, original, plan, task.input_batches(cfg.calibration_batches, cfg.batch_size))
    ctx.notes.append(f"channel_prune: {len(refit)} layers refit by least squares to the unpruned outputs on "
                     f"{cfg.calibration_batches} batches of {cfg.batch_size}")


def _prune_encoder(model: nn.Module, cfg: ChannelPrune, ctx, task) -> nn.Module:
    """Remove FFN neurons (``ratio``) and attention heads (``heads``) from every transformers layer."""
    if cfg.target_macs is not None or cfg.ratios:
        raise UserError("channel_prune.target_macs and .ratios are not supported on transformers encoders; set "
                        "`ratio` (fraction of FFN neurons removed) and `heads` (fraction of attention heads removed).")
    plan, kept = transformer.plan(model, cfg.heads, cfg.ratio, criterion(cfg.importance), task, cfg.round_to,
                                  ignored_names(model, cfg.ignore))
    original = copy.deepcopy(model) if cfg.reconstruct else None
    transformer.sync_heads(shrink(model, plan))
    _reconstruct(model, original, plan, cfg, ctx, task)
    ctx.record({"ratio": cfg.ratio, "heads": cfg.heads, "plan": plan})
    per_layer = ", ".join(f"{h} heads/{n} FFN" for h, n in kept.values())
    ctx.notes.append(f"channel_prune: {len(kept)} transformer layers keep {per_layer}")
    return model
