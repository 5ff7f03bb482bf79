"""The ``cluster`` step: k-means weight sharing, optional centroid fine-tuning, checkpoint replay."""
from __future__ import annotations

from fnmatch import fnmatch

from torch import nn
from torch.nn.utils import parametrize

from ..errors import UserError
from ..graph.layers import layer_base, read_by_parent, tie_notes, tied_weights, unlike_base
from ..recipe import register
from ..train import fine_tune
from .config import Cluster
from .shared import SHAREABLE, ClusteredLayer, SharedWeight


def _shareable(model: nn.Module) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """Layers whose weight can become a codebook, and the other weighted layers with why they cannot."""
    shareable, skipped, parent_reads = {}, {}, read_by_parent(model)
    for name, m in model.named_modules():
        if layer_base(m, SHAREABLE) is None:
            if why := unlike_base(m, SHAREABLE):
                skipped[name] = why
        elif name in parent_reads:
            skipped[name] = parent_reads[name]
        elif parametrize.is_parametrized(m, "weight"):
            skipped[name] = "its weight is parametrized (e.g. weight_norm), and slimkit keeps parametrizations"
        elif isinstance(m._parameters.get("weight"), nn.Parameter):
            shareable[name] = m
    return shareable, skipped


def _targets(model: nn.Module, cfg: Cluster, notes: list[str]) -> dict[str, nn.Module]:
    shareable, skipped = _shareable(model)
    for pattern in cfg.layers:
        if not any(fnmatch(name, pattern) for name in shareable):
            raise UserError(f"cluster.layers: {pattern!r} matches no Linear/Conv/Embedding layer; "
                            f"names look like {', '.join(list(shareable)[:4])}.")
    notes += [f"cluster: {name} left alone ({why})" for name, why in skipped.items() if _selected(name, cfg.layers)]
    targets = {name: m for name, m in shareable.items() if m.weight.numel() > 2**cfg.bits and _selected(name, cfg.layers)}
    notes += tie_notes("cluster", tied_weights(model, targets))
    return targets


def _selected(name: str, patterns: tuple[str, ...]) -> bool:
    return not patterns or any(fnmatch(name, p) for p in patterns)


@register(Cluster, replay=lambda model, entry: _replay(model, entry["replay"]))
def cluster(model: nn.Module, cfg: Cluster, ctx) -> nn.Module:
    """Replace selected weights by codebooks + packed indices, then fine-tune the centroids if asked."""
    task = ctx.require_task("cluster") if cfg.epochs else None
    done = {}
    for name, layer in _targets(model, cfg, ctx.notes).items():
        shared = SharedWeight.fit(layer.weight, cfg.bits, cfg.init, cfg.keep_zeros)
        model.set_submodule(name, ClusteredLayer(layer, shared))
        done[name] = {"bits": cfg.bits, "zero": shared.zero}
    if task is not None:
        model = fine_tune(model, cfg, ctx)
    ctx.notes.append(f"cluster: {len(done)} layers share {2**cfg.bits} values each ({cfg.bits}-bit packed indices).")
    if done:
        ctx.record({"layers": done})
    return model


def _replay(model: nn.Module, recorded: dict) -> nn.Module:
    """Rebuild the clustered layers recorded by :func:`cluster` (codebooks and indices are loaded afterwards)."""
    for name, spec in recorded["layers"].items():
        layer = model.get_submodule(name)
        model.set_submodule(name, ClusteredLayer(layer, SharedWeight(layer.weight.shape, spec["bits"], spec["zero"])))
    return model
