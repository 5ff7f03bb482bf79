"""The ``cluster`` step: k-means weight sharing, optional centroid fine-tuning, checkpoint replay."""
from __future__ import annotations

from fnmatch import fnmatch

from torch import nn

from ..errors import UserError
from ..recipe import register
from ..train import fine_tune
from .config import Cluster
from .shared import SHAREABLE, ClusteredLayer, SharedWeight


def _targets(model: nn.Module, cfg: Cluster) -> dict[str, nn.Module]:
    shareable = {name: m for name, m in model.named_modules()
                 if isinstance(m, SHAREABLE) and isinstance(getattr(m, "weight", None), nn.Parameter)}
    for pattern in cfg.layers:
        if not any(fnmatch(name, pattern) for name in shareable):
            raise UserError(f"cluster.layers: {pattern!r} matches no Linear/Conv/Embedding layer; "
                            f"names look like {', '.join(list(shareable)[:4])}.")
    return {name: m for name, m in shareable.items()
            if m.weight.numel() > 2**cfg.bits and (not cfg.layers or any(fnmatch(name, p) for p in cfg.layers))}


@register(Cluster, replay=lambda model, entry: _replay(model, entry["replay"]))
def cluster(model: nn.Module, cfg: Cluster, ctx) -> nn.Module:
    """Replace selected weights by codebooks + packed indices, then fine-tune the centroids if asked."""
    task = ctx.require_task("cluster") if cfg.epochs else None
    done = {}
    for name, layer in _targets(model, cfg).items():
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
