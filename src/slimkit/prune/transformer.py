"""Attention-head and FFN-neuron pruning for transformers BERT-family encoders (BERT, RoBERTa, MiniLM, ...).

A BERT-family layer holds ``attention.self.{query,key,value}`` (one block of ``attention_head_size`` rows per
head), ``attention.output.dense`` (reads every head), ``intermediate.dense`` (one row per FFN neuron) and
``output.dense`` (reads every FFN neuron). Pruning removes whole heads and neurons from these Linear layers
with the plan surgery of :mod:`.surgery`, then sets each attention module's head count from its new shape.
Layers differ after pruning, so the shared transformers config keeps its original sizes; a slimkit
checkpoint rebuilds the shapes by replaying the plan (:func:`sync_heads` runs after it).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .importance import Importance
from .surgery import Plan, kept_count

LINEARS = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
           "intermediate.dense", "output.dense")


def encoder_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The BERT-family encoder layers of ``model`` by module name (empty for other models)."""
    return {name: m for name, m in model.named_modules() if _is_bert_layer(m)}


def _is_bert_layer(module: nn.Module) -> bool:
    try:
        linears = [module.get_submodule(path) for path in LINEARS]
        return all(isinstance(m, nn.Linear) for m in linears) and hasattr(module.attention.self, "attention_head_size")
    except AttributeError:
        return False


def sync_heads(model: nn.Module) -> nn.Module:
    """Set every BERT-family attention module's head count and width from its (pruned) query projection."""
    for layer in encoder_layers(model).values():
        attention = layer.attention.self
        attention.all_head_size = attention.query.out_features
        attention.num_attention_heads = attention.all_head_size // attention.attention_head_size
    return model


def plan(model: nn.Module, heads: float, ffn: float, importance: Importance, task=None, round_to: int = 1,
         ignore: set[str] = frozenset()) -> tuple[Plan, dict[str, tuple[int, int]]]:
    """The rows/columns to keep when ``heads`` of each layer's heads and ``ffn`` of its FFN neurons go.

    A head scores the sum of ``importance`` over its query, key and value rows and its columns of the
    attention output; an FFN neuron over its intermediate row and output column. Every layer keeps at
    least one head and one neuron; kept neurons are rounded up to a multiple of ``round_to``.

    Returns:
        (plan for :func:`slimkit.prune.surgery.shrink`, {layer name: (heads kept, FFN neurons kept)}).
    """
    layers = {name: m for name, m in encoder_layers(model).items()
              if not any(n in ignore for n in [name, *(f"{name}.{p}" for p in LINEARS)])}
    linears = {f"{name}.{p}": layer.get_submodule(p) for name, layer in layers.items() for p in LINEARS}
    scores = importance.score(model, linears, task)
    out: Plan = {}
    kept = {}
    for name, layer in layers.items():
        s = {p: scores[f"{name}.{p}"].double() for p in LINEARS}
        size = layer.attention.self.attention_head_size
        n_heads = layer.attention.self.query.out_features // size
        head_score = sum(s[p].reshape(n_heads, -1).sum(1) for p in LINEARS[:3])
        head_score = head_score + s["attention.output.dense"].t().reshape(n_heads, -1).sum(1)
        keep_heads = _top(head_score, kept_count(n_heads, heads))
        rows = [h * size + j for h in keep_heads for j in range(size)]
        if len(keep_heads) < n_heads:
            out.update({f"{name}.{p}": {"out": rows} for p in LINEARS[:3]})
            out[f"{name}.attention.output.dense"] = {"in": rows}
        neuron_score = s["intermediate.dense"].sum(1) + s["output.dense"].sum(0)
        keep_neurons = _top(neuron_score, kept_count(len(neuron_score), ffn, round_to))
        if len(keep_neurons) < len(neuron_score):
            out[f"{name}.intermediate.dense"] = {"out": keep_neurons}
            out[f"{name}.output.dense"] = {"in": keep_neurons}
        kept[name] = (len(keep_heads), len(keep_neurons))
    return out, kept


def _top(scores: Tensor, k: int) -> list[int]:
    """Indices of the ``k`` highest scores, in ascending index order (ties keep the earlier index)."""
    order = torch.argsort(scores, descending=True, stable=True)
    return sorted(order[:k].tolist())
