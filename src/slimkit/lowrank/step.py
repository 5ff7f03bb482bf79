"""The ``low_rank`` step: choose ranks per layer, factorise where it saves MACs, replay from checkpoints."""
from __future__ import annotations

import math
from dataclasses import dataclass
from fnmatch import fnmatch

import torch
from torch import nn

from ..errors import UserError
from ..graph.layers import compute_weight, is_conv1d, read_by_parent, tie_notes, tied_weights, unlike_base, weighted
from ..recipe import register
from .config import LowRank
from .factor import build, factorise, kind_of, macs, max_ranks
from .ranks import energy_rank, unfold, vbmf_rank


FACTORISABLE = (nn.Linear, nn.Conv2d)  # and transformers' Conv1D


@dataclass
class Site:
    """A layer to factorise and the spatial sizes it saw on the example inputs."""

    name: str
    layer: nn.Module
    kind: str
    in_size: tuple[int, ...]
    out_size: tuple[int, ...]

    def macs(self, ranks: list[int] | None = None) -> int:
        """MACs per sample of the dense layer (``ranks=None``) or of its factorisation."""
        return macs(self.layer, None if ranks is None else self.kind, ranks or [], self.in_size, self.out_size)


def find_sites(model: nn.Module, example_inputs: tuple, cfg: LowRank) -> tuple[list[Site], list[str]]:
    """Layers selected by ``cfg.layers`` that a forward pass reaches, and the names of skipped ones."""
    chosen, skipped, parent_reads = {}, [], read_by_parent(model)
    layers = {name: m for name, m in model.named_modules() if weighted(m) and (isinstance(m, FACTORISABLE) or is_conv1d(m))}
    for pattern in cfg.layers:
        if not any(fnmatch(name, pattern) for name in layers):
            raise UserError(f"low_rank.layers: {pattern!r} matches no Linear/Conv2d layer; "
                            f"names look like {', '.join(list(layers)[:4])}.")
    for name, m in layers.items():
        if cfg.layers and not any(fnmatch(name, p) for p in cfg.layers):
            continue
        why = unlike_base(m, FACTORISABLE) or parent_reads.get(name)
        if why:
            skipped.append(f"{name} ({why})")
        elif isinstance(m, nn.Conv2d) and m.groups != 1:
            skipped.append(f"{name} (grouped conv)")
        else:
            chosen[name] = m
    sizes: dict[str, tuple] = {}

    def hook(name):
        def record(module, args, output):
            trim = slice(2, None) if isinstance(module, nn.Conv2d) else slice(1, -1)
            sizes[name] = (tuple(args[0].shape[trim]), tuple(output.shape[trim]))
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in chosen.items()]
    try:
        with torch.no_grad():
            model.eval()(*example_inputs)
    finally:
        for h in handles:
            h.remove()
    sites = [Site(n, m, kind_of(m, cfg.conv), *sizes[n]) for n, m in chosen.items() if n in sizes]
    return sites, skipped


def choose_ranks(site: Site, cfg: LowRank) -> list[int] | None:
    """Ranks for ``site`` under ``cfg.rank_by``; None when no rank meets a MAC target."""
    limit = max_ranks(site.layer, site.kind)
    if cfg.rank_by == "fixed":
        if any(cfg.rank > m for m in limit):
            raise UserError(
                f"low_rank: rank {cfg.rank} is larger than layer {site.name!r} allows ({site.kind} ranks at most "
                f"{limit} for weight {tuple(site.layer.weight.shape)}); lower `rank` or restrict `layers`."
            )
        return [cfg.rank] * len(limit)
    if cfg.rank_by == "macs":
        budget = cfg.target_macs * site.macs()
        top = max(limit)
        for r in range(top, 0, -1):
            ranks = rounded([max(1, round(r * m / top)) for m in limit], limit, cfg.round_to, turn=round)
            if site.macs(ranks) <= budget:
                return ranks
        return None
    weight = compute_weight(site.layer).detach()
    pick = vbmf_rank if cfg.rank_by == "vbmf" else (lambda m: energy_rank(m, cfg.energy))
    if site.kind == "svd":
        ranks = [pick(weight.flatten(1))]
    else:
        ranks = [pick(unfold(weight, 0)), pick(unfold(weight, 1))]
        ranks = ranks if site.kind == "tucker" else [min(max(ranks), limit[0])]
    return rounded(ranks, limit, cfg.round_to, turn=math.ceil)


def rounded(ranks: list[int], limit: list[int], step: int, turn=math.ceil) -> list[int]:
    """``ranks`` rounded by ``turn`` to multiples of ``step`` (at least ``step``), never above ``limit``."""
    return [min(m, max(step, step * turn(r / step))) for r, m in zip(ranks, limit)]


@register(LowRank, replay=lambda model, entry: _replay(model, entry["replay"]))
def low_rank(model: nn.Module, cfg: LowRank, ctx) -> nn.Module:
    """Factorise the selected layers; record what was done so checkpoints rebuild the new structure."""
    sites, skipped = find_sites(model, ctx.example_inputs, cfg)
    ties = tied_weights(model, [site.name for site in sites])
    done, before, after = {}, 0, 0
    for site in sites:
        ranks = choose_ranks(site, cfg)
        dense = site.macs()
        if ranks is None or site.macs(ranks) >= dense:
            cost = "no rank meets target_macs" if ranks is None else f"{site.macs(ranks)} MACs vs {dense} dense"
            skipped.append(f"{site.name} ({site.kind} ranks {ranks}: {cost})")
            continue
        model.set_submodule(site.name, factorise(site.layer, site.kind, ranks))
        done[site.name] = {"kind": site.kind, "ranks": ranks}
        before, after = before + dense, after + site.macs(ranks)
    if done:
        ctx.notes.append(f"low_rank: factorised {len(done)} layers; their MACs {before} -> {after} ({after / before:.1%}).")
        ctx.record({"layers": done})
    if skipped:
        ctx.notes.append("low_rank: left alone: " + "; ".join(skipped))
    ctx.notes += tie_notes("low_rank", {name: ties[name] for name in done if name in ties})
    return model


def _replay(model: nn.Module, recorded: dict) -> nn.Module:
    """Rebuild the factorised structure recorded by :func:`low_rank` (weights are loaded afterwards)."""
    for name, spec in recorded["layers"].items():
        model.set_submodule(name, build(model.get_submodule(name), spec["kind"], spec["ranks"]))
    return model
