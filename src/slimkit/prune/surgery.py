"""Layer surgery: physically shrink modules to the channels a plan keeps.

A plan maps a module name to ``{"out": [kept output channel indices], "in": [kept input channel indices]}``
(either key may be absent), plus, for parameters the model reads itself (a class token, a layer scale),
``"tensors": {attr: {"dim": d, "keep": [indices]}}`` and, for head counts, ``"attrs": {attr: value}``. It is
plain JSON, so a checkpoint can replay it on a freshly built model.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..errors import UserError
from .graph import CONVS, NORMS

Plan = dict[str, dict[str, list[int]]]


def kept_count(n: int, ratio: float, round_to: int = 1) -> int:
    """Channels kept of ``n`` when ``ratio`` of them go: rounded up to a multiple of ``round_to``, at least 1."""
    return min(n, max(1, math.ceil((n - int(ratio * n + 1e-9)) / round_to) * round_to))


def shrink(model: nn.Module, plan: Plan) -> nn.Module:
    """Shrink every module named in ``plan`` (e.g. :meth:`ChannelPruner.plan`'s) in place to the channels it
    keeps; returns ``model``."""
    for name, keep in plan.items():
        try:
            module = model.get_submodule(name)
        except AttributeError as exc:
            raise UserError(f"Pruning plan names {name!r}, which this model does not have; "
                            "was the checkpoint history written for another model?") from exc
        for attr, sel in keep.get("tensors", {}).items():
            _select(module, attr, sel["dim"], torch.tensor(sel["keep"], dtype=torch.long))
        for attr, value in keep.get("attrs", {}).items():
            setattr(module, attr, value)
        out = torch.tensor(keep["out"], dtype=torch.long) if "out" in keep else None
        inp = torch.tensor(keep["in"], dtype=torch.long) if "in" in keep else None
        if out is None and inp is None:
            continue
        if isinstance(module, CONVS):
            _conv(module, out, inp)
        elif isinstance(module, nn.Linear):
            _linear(module, out, inp)
        elif isinstance(module, NORMS + (nn.LayerNorm, nn.GroupNorm)):
            _norm(module, out)
        else:
            raise UserError(f"Pruning plan names {name!r}, a {type(module).__name__}, which cannot be shrunk.")
    return model


def _select(module: nn.Module, attr: str, dim: int, index: Tensor) -> None:
    """Replace parameter or buffer ``attr`` by its slices ``index`` along ``dim`` (None stays None)."""
    old = getattr(module, attr)
    if old is None:
        return
    new = old.detach().index_select(dim, index).clone()
    if isinstance(old, nn.Parameter):
        setattr(module, attr, nn.Parameter(new, requires_grad=old.requires_grad))
    else:
        module.register_buffer(attr, new)


def _conv(conv: nn.Module, out: Tensor | None, inp: Tensor | None) -> None:
    if out is not None:
        _select(conv, "weight", 0, out)
        _select(conv, "bias", 0, out)
        conv.out_channels = len(out)
    if inp is not None:
        if conv.groups == 1:
            _select(conv, "weight", 1, inp)
        else:  # whole groups go: the per-group weight slice is unchanged
            conv.groups = len(inp) // (conv.in_channels // conv.groups)
        conv.in_channels = len(inp)


def _linear(linear: nn.Linear, out: Tensor | None, inp: Tensor | None) -> None:
    if out is not None:
        _select(linear, "weight", 0, out)
        _select(linear, "bias", 0, out)
        linear.out_features = len(out)
    if inp is not None:
        _select(linear, "weight", 1, inp)
        linear.in_features = len(inp)


def _norm(norm: nn.Module, out: Tensor | None) -> None:
    if out is None:
        return
    for attr in ("weight", "bias", "running_mean", "running_var"):
        if hasattr(norm, attr):
            _select(norm, attr, 0, out)
    if isinstance(norm, nn.LayerNorm):
        norm.normalized_shape = (len(out),)
    elif isinstance(norm, nn.GroupNorm):  # whole groups go
        norm.num_groups = len(out) // (norm.num_channels // norm.num_groups)
        norm.num_channels = len(out)
    else:
        norm.num_features = len(out)
