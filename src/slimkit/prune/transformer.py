"""Attention-head and FFN-neuron pruning for transformers layers (BERT family, ViT, DistilBERT, Llama with GQA).

A layer is recognised by its structure: an attention module with query, key, value and output Linear layers
(one block of ``head size`` rows per head; the output reads every head) and a head-size attribute, and an FFN
of one or two Linear layers producing the neurons (``up``, and ``gate`` in gated FFNs) and one reading them.
:data:`LAYOUTS` lists where families keep them. With grouped-query attention (fewer key/value heads than query
heads) a key/value head goes together with the query heads that read it, so every group keeps its size.
Pruning removes whole heads and neurons with the plan surgery of :mod:`.surgery`, then sets each attention
module's head count from its new shape (:func:`sync_heads`). Hidden sizes are kept.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from .importance import Importance
from .surgery import Plan, kept_count


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where one model family keeps a layer's attention and FFN Linear layers (paths relative to the layer)."""

    attention: str
    q: str
    k: str
    v: str
    o: str  # relative to the layer, like the FFN paths
    head_size: str  # attribute of the attention module
    up: tuple[str, ...]
    down: str

    def linears(self) -> tuple[str, ...]:
        attention = tuple(f"{self.attention}.{p}" for p in (self.q, self.k, self.v))
        return attention + (self.o,) + self.up + (self.down,)


LAYOUTS = (
    Layout("attention.self", "query", "key", "value", "attention.output.dense", "attention_head_size",
           ("intermediate.dense",), "output.dense"),  # BERT, RoBERTa, MiniLM, ...
    Layout("attention", "q_lin", "k_lin", "v_lin", "attention.out_lin", "attention_head_size", ("ffn.lin1",), "ffn.lin2"),
    Layout("attention", "q_proj", "k_proj", "v_proj", "attention.o_proj", "head_dim", ("mlp.fc1",), "mlp.fc2"),  # ViT
    Layout("self_attn", "q_proj", "k_proj", "v_proj", "self_attn.o_proj", "head_dim",
           ("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj"),  # Llama, Mistral, Qwen2
)
HEAD_COUNTS = ("num_attention_heads", "num_heads", "n_heads")
"""Attention-module attributes holding the query head count, set after pruning (``all_head_size`` too)."""


def encoder_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The transformer layers of ``model`` that :data:`LAYOUTS` describes, by module name (empty for others)."""
    return {name: m for name, m in model.named_modules() if layout_of(m) is not None}


def layout_of(module: nn.Module) -> Layout | None:
    """The layout ``module`` follows as a transformer layer, checked against its Linear shapes, or None."""
    for layout in LAYOUTS:
        try:
            linears = {p: module.get_submodule(p) for p in layout.linears()}
            size = getattr(module.get_submodule(layout.attention), layout.head_size)
        except AttributeError:
            continue
        if all(isinstance(m, nn.Linear) for m in linears.values()) and isinstance(size, int) and _fits(layout, linears, size):
            return layout
    return None


def _fits(layout: Layout, linears: dict[str, nn.Linear], size: int) -> bool:
    q, k, v = (linears[f"{layout.attention}.{p}"] for p in (layout.q, layout.k, layout.v))
    up, down = [linears[p] for p in layout.up], linears[layout.down]
    return (q.out_features % size == 0 and k.out_features == v.out_features and k.out_features % size == 0
            and (q.out_features // size) % (k.out_features // size) == 0 and linears[layout.o].in_features == q.out_features
            and all(u.out_features == down.in_features for u in up))


def sync_heads(model: nn.Module) -> nn.Module:
    """Set every attention module's head count and width from its (pruned) query projection."""
    for layer in encoder_layers(model).values():
        layout = layout_of(layer)
        attention = layer.get_submodule(layout.attention)
        width = attention.get_submodule(layout.q).out_features
        for attr in HEAD_COUNTS:
            if isinstance(getattr(attention, attr, None), int):
                setattr(attention, attr, width // getattr(attention, layout.head_size))
        if isinstance(getattr(attention, "all_head_size", None), int):
            attention.all_head_size = width
    return model


def plan(model: nn.Module, heads: float, ffn: float, importance: Importance, task=None, round_to: int = 1,
         ignore: set[str] = frozenset()) -> tuple[Plan, dict[str, tuple[int, int]]]:
    """The rows/columns to keep when ``heads`` of each layer's heads and ``ffn`` of its FFN neurons go.

    A head scores the sum of ``importance`` over its query, key and value rows and its columns of the
    attention output (with grouped-query attention, a key/value head and its query heads score and go
    together); an FFN neuron over its rows and its output column. Every layer keeps at least one head
    (group) and one neuron; kept neurons are rounded up to a multiple of ``round_to``.

    Returns:
        (plan for :func:`slimkit.prune.surgery.shrink`, {layer name: (query heads kept, FFN neurons kept)}).
    """
    layers = {name: m for name, m in encoder_layers(model).items()
              if not any(n in ignore for n in [name, *(f"{name}.{p}" for p in layout_of(m).linears())])}
    linears = {f"{name}.{p}": layer.get_submodule(p) for name, layer in layers.items() for p in layout_of(layer).linears()}
    scores = importance.score(model, linears, task)
    out: Plan = {}
    kept = {}
    for name, layer in layers.items():
        layout = layout_of(layer)
        s = {p: scores[f"{name}.{p}"].double() for p in layout.linears()}
        q_heads = _plan_heads(out, name, layer, layout, s, heads)
        keep_neurons = _top(sum(s[p].sum(1) for p in layout.up) + s[layout.down].sum(0),
                            kept_count(linears[f"{name}.{layout.down}"].in_features, ffn, round_to))
        if len(keep_neurons) < linears[f"{name}.{layout.down}"].in_features:
            out.update({f"{name}.{p}": {"out": keep_neurons} for p in layout.up})
            out[f"{name}.{layout.down}"] = {"in": keep_neurons}
        kept[name] = (q_heads, len(keep_neurons))
    return out, kept


def _plan_heads(out: Plan, name: str, layer: nn.Module, layout: Layout, s: dict[str, Tensor], heads: float) -> int:
    """Add the kept query/key/value rows and output columns of ``layer`` to ``out``; returns query heads kept."""
    q, k, v = (f"{layout.attention}.{p}" for p in (layout.q, layout.k, layout.v))
    size = getattr(layer.get_submodule(layout.attention), layout.head_size)
    groups, q_heads = s[k].shape[0] // size, s[q].shape[0] // size
    per_group = q_heads // groups  # query heads reading one key/value head
    group_score = (s[q].reshape(groups, -1).sum(1) + s[k].reshape(groups, -1).sum(1) + s[v].reshape(groups, -1).sum(1)
                   + s[layout.o].t().reshape(groups, -1).sum(1))
    keep = _top(group_score, kept_count(groups, heads))
    if len(keep) < groups:
        q_rows = [(g * per_group + h) * size + j for g in keep for h in range(per_group) for j in range(size)]
        kv_rows = [g * size + j for g in keep for j in range(size)]
        out[f"{name}.{q}"] = {"out": q_rows}
        out.update({f"{name}.{p}": {"out": kv_rows} for p in (k, v)})
        out[f"{name}.{layout.o}"] = {"in": q_rows}
    return len(keep) * per_group


def _top(scores: Tensor, k: int) -> list[int]:
    """Indices of the ``k`` highest scores, in ascending index order (ties keep the earlier index)."""
    order = torch.argsort(scores, descending=True, stable=True)
    return sorted(order[:k].tolist())
