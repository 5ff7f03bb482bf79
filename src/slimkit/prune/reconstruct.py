"""Least-squares reconstruction after channel pruning (as in He et al. 2017 and ThiNet).

Removing channels leaves every layer that read them computing something else, and the model usually falls to
chance accuracy. Each shrunk Conv2d and Linear is refit, in the order the model runs them, so that on calibration
inputs its output (the channels it keeps) matches the unpruned layer's: a ridge regression from the pruned
model's actual inputs (earlier layers already refit) to the original outputs. The BatchNorm statistics after
the layer then hold again, and training starts from a working model instead of from scratch.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .surgery import Plan


def reconstruct(pruned: nn.Module, original: nn.Module, plan: Plan, batches: list[tuple], ridge: float = 1e-3) -> list[str]:
    """Refit, in execution order, every layer of ``plan`` that lost input channels and can be refit (Conv2d with
    one group and zero padding, Linear); ``original`` is the model before pruning. Returns the names refit."""
    device = next(pruned.parameters()).device
    batches = [tuple(t.to(device) for t in batch) for batch in batches]
    order = _execution_order(pruned, batches[0])
    names = [n for n in order if "in" in plan.get(n, {}) and refittable(pruned.get_submodule(n))]
    for name in names:
        _refit(pruned, original, name, plan[name].get("out"), batches, ridge)
    return names


def refittable(layer: nn.Module) -> bool:
    """Whether :func:`reconstruct` can refit ``layer``."""
    if isinstance(layer, nn.Linear):
        return True
    return isinstance(layer, nn.Conv2d) and layer.groups == 1 and layer.padding_mode == "zeros"


@torch.no_grad()
def _execution_order(model: nn.Module, batch: tuple) -> list[str]:
    seen: list[str] = []
    hooks = [m.register_forward_pre_hook(lambda _m, _i, n=name: seen.append(n)) for name, m in model.named_modules()]
    try:
        model.eval()(*batch)
    finally:
        for h in hooks:
            h.remove()
    return list(dict.fromkeys(seen))


@torch.no_grad()
def _layer_io(model: nn.Module, name: str, batch: tuple) -> tuple[Tensor, Tensor]:
    """The input and output of module ``name`` when ``model`` runs ``batch``."""
    caught = {}
    hook = model.get_submodule(name).register_forward_hook(lambda _m, i, o: caught.update(x=i[0], y=o))
    try:
        model.eval()(*batch)
    finally:
        hook.remove()
    return caught["x"], caught["y"]


def _rows(layer: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """(inputs, targets) as one row per output position, so that ``targets = inputs @ weight.T`` (+ bias)."""
    if isinstance(layer, nn.Conv2d):
        cols = F.unfold(x, layer.kernel_size, layer.dilation, layer.padding, layer.stride)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1]), y.flatten(2).transpose(1, 2).reshape(-1, y.shape[1])
    return x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])


@torch.no_grad()
def _refit(pruned: nn.Module, original: nn.Module, name: str, kept_out: list[int] | None, batches: list[tuple],
           ridge: float) -> None:
    layer = pruned.get_submodule(name)
    channel_dim = 1 if isinstance(layer, nn.Conv2d) else -1
    gram = cross = 0
    for batch in batches:
        x, _ = _layer_io(pruned, name, batch)
        _, y = _layer_io(original, name, batch)
        if kept_out is not None:
            y = y.index_select(channel_dim, torch.tensor(kept_out, device=y.device))
        inputs, targets = (t.double() for t in _rows(layer, x, y))
        if layer.bias is not None:
            inputs = torch.cat([inputs, torch.ones_like(inputs[:, :1])], dim=1)
        gram = gram + inputs.T @ inputs
        cross = cross + inputs.T @ targets
    gram = gram + ridge * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype, device=gram.device)
    solution = torch.linalg.solve(gram, cross).T.to(layer.weight.dtype)
    if layer.bias is not None:
        layer.bias.copy_(solution[:, -1])
        solution = solution[:, :-1]
    layer.weight.copy_(solution.reshape(layer.weight.shape))
