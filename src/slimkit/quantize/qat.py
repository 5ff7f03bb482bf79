"""Quantization-aware training: fake-quantized weights and activations with a straight-through estimator,
optionally with learned step sizes (LSQ, Esser et al., 2020), trained with the shared loop ``slimkit.train.fit``.

Each quantized layer is wrapped in a :class:`FakeQuantLayer` that trains a float weight and bias; rounding
passes gradients straight through (values clipped by the range get none). With LSQ the weight scales (one
per channel) and activation scales are parameters too, their gradients scaled by 1/sqrt(n * qmax). Without
LSQ the scales stay those of the post-training quantization. Afterwards each wrapper turns back into its
integer :class:`QuantModule`, so QAT ends in the same stored low-bit model as PTQ.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..data.task import Task
from .config import QAT
from .modules import ACT_QMAX, ACT_QMIN, QuantEmbedding, QuantModule


def _round_ste(x: Tensor) -> Tensor:
    return x + (torch.round(x) - x).detach()


def _grad_scaled(x: Tensor, factor: float) -> Tensor:
    """``x`` in the forward pass, gradient multiplied by ``factor`` in the backward pass."""
    return x * factor + (x - x * factor).detach()


def fake_quantize_ste(x: Tensor, scale: Tensor, zero: Tensor, qmin: int, qmax: int) -> Tensor:
    """``(clamp(round(x / scale) + zero) - zero) * scale`` with straight-through rounding; the gradient
    with respect to ``scale`` is LSQ's (``round(x/s) - x/s`` inside the range, the clip level outside)."""
    return (torch.clamp(_round_ste(x / scale) + zero, qmin, qmax) - zero) * scale


class FakeQuantLayer(nn.Module):
    """A trainable stand-in for ``quant`` (a quantized layer holding post-training scales).

    Args:
        quant: the quantized layer to train for; its format, activation ranges and operation are used.
        weight: float weight to start from.
        bias: float bias or None.
        lsq: learn weight and activation scales.
    """

    def __init__(self, quant: QuantModule, weight: Tensor, bias: Tensor | None, lsq: bool):
        super().__init__()
        self.quant = quant
        self.weight = nn.Parameter(weight.detach().clone().float())
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone().float())
        scale = quant.weight_scale.detach().clone().reshape(-1, 1)
        self.weight_scale = nn.Parameter(scale) if lsq else nn.Buffer(scale)
        self.register_buffer("weight_zero_point", quant.weight_zero_point.detach().float().reshape(-1, 1))
        self.lsq = lsq
        if quant.static:
            for side in ("input", "output"):
                s = getattr(quant, f"{side}_scale").detach().clone()
                setattr(self, f"{side}_scale", nn.Parameter(s) if lsq else nn.Buffer(s))
                self.register_buffer(f"{side}_zero_point", getattr(quant, f"{side}_zero_point").detach().float())

    def _scale(self, scale: Tensor, values_per_scale: int, qmax: int) -> Tensor:
        return _grad_scaled(scale, 1 / math.sqrt(values_per_scale * qmax)) if self.lsq else scale

    def fake_weight(self) -> Tensor:
        qmin, qmax = self.quant.fmt.qmin_qmax
        rows = self.quant._rows(self.weight)
        scale = self._scale(self.weight_scale, rows.shape[1], qmax)
        return fake_quantize_ste(rows, scale, self.weight_zero_point, qmin, qmax).reshape(self.weight.shape)

    def fake_activation(self, x: Tensor, side: str) -> Tensor:
        if not self.quant.static:
            return x
        scale = self._scale(getattr(self, f"{side}_scale"), x[0].numel(), ACT_QMAX)
        return fake_quantize_ste(x, scale, getattr(self, f"{side}_zero_point"), ACT_QMIN, ACT_QMAX)

    def forward(self, x: Tensor) -> Tensor:
        out = self.quant.op(self.fake_activation(x, "input"), self.fake_weight(), self.bias)
        return self.fake_activation(out, "output") if self.quant.quantize_output else out

    @torch.no_grad()
    def convert(self) -> QuantModule:
        """The integer layer with the trained weight and scales."""
        scale = self.weight_scale.detach().abs().clamp_min(1e-12).reshape(-1)
        zero = self.weight_zero_point.reshape(-1).to(torch.int32)
        act = {}
        if self.quant.static:
            act = {side: (getattr(self, f"{side}_scale").detach().abs().clamp_min(1e-12),
                          getattr(self, f"{side}_zero_point").to(torch.int32)) for side in ("input", "output")}
        self.quant.load_quantized(self.quant.quantize_weight(self.weight, scale, zero), scale, zero, self.bias, act)
        return self.quant


def train_quantized(model: nn.Module, float_params: dict[str, tuple[Tensor, Tensor | None]], task: Task,
                    options: QAT, teacher: nn.Module, device: str = "cpu", progress: bool = False) -> dict:
    """Fine-tune ``model`` (whose layers in ``float_params`` are already quantized) with fake quantization,
    then store the trained integer weights. Returns the training history of :func:`slimkit.train.fit`.

    Embedding tables keep their post-training weights. Tasks scored by cosine train towards the
    ``teacher``'s (the float model's) embeddings; classification tasks use cross-entropy.
    """
    from ..train import FineTune, cosine_to_teacher, fit

    names = [n for n in float_params if not isinstance(model.get_submodule(n), QuantEmbedding)]
    for name in names:
        model.set_submodule(name, FakeQuantLayer(model.get_submodule(name), *float_params[name], options.lsq))
    cfg = FineTune(epochs=options.epochs, lr=options.lr, batch_size=options.batch_size, optimizer="adamw",
                   weight_decay=0.0, schedule="cosine", max_batches=options.max_batches)
    loss_fn = cosine_to_teacher(teacher.to(device).eval(), task.n_inputs) if task.metric == "cosine" else None
    history = fit(model, task, cfg, loss_fn=loss_fn, device=device, progress=progress)
    model.to("cpu")
    for name in names:
        model.set_submodule(name, model.get_submodule(name).convert())
    return history
