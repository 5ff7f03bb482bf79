"""Torch-Pruning: structured (channel) pruning to slimkit's MACs budget, optionally fine-tuned, run in
onnxruntime FP32."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ...measure.counts import count_macs
from ...runtime import RUNTIMES
from ...runtime.onnx import export_onnx
from .base import Peer, need, toolkit

MAX_RATIO = 0.9  # the channel pruning ratio of the pruner's last iterative step
STEPS = 36  # iterative steps: the ratio grows by MAX_RATIO / STEPS = 0.025 a step


def torch_pruning(model: nn.Module, example_inputs: tuple, workdir: Path, threads: int, macs_target: float,
                  fine_tune: Callable[[nn.Module], nn.Module] | None) -> Peer:
    """A copy of ``model`` pruned as Torch-Pruning's README shows (``tp.pruner.BasePruner``, a.k.a. MetaPruner,
    with ``tp.importance.GroupMagnitudeImportance(p=2)``, the output layer ignored), iteratively: the pruning
    ratio grows by 0.025 a step (up to 0.9) until slimkit's MAC count is at or below ``macs_target`` times the
    model's. Then ``fine_tune`` (if any), ONNX export, onnxruntime FP32. Size: the ONNX file."""
    tp = need("torch_pruning", dist="torch-pruning")
    pruned = copy.deepcopy(model).eval()
    base = count_macs(pruned, example_inputs)[0]
    pruner = tp.pruner.BasePruner(pruned, example_inputs, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  pruning_ratio=MAX_RATIO, iterative_steps=STEPS, ignored_layers=output_layers(pruned, example_inputs))
    macs = base
    while macs > macs_target * base and pruner.current_step < STEPS:
        pruner.step()
        macs = count_macs(pruned, example_inputs)[0]
    if macs > macs_target * base:
        raise RuntimeError(f"Torch-Pruning reached {macs / base:.1%} of the baseline MACs at pruning ratio {MAX_RATIO}, "
                           f"above the target {macs_target:.1%}")
    ratio = pruner.per_step_pruning_ratio[pruner.current_step]
    note = f"{macs / base:.1%} of the baseline MACs (target {macs_target:.1%}, channel ratio {ratio:.3f}), "
    if fine_tune is not None:
        pruned = fine_tune(pruned).eval()
        note += "fine-tuned"
    else:
        note += "no fine-tuning"
    path = export_onnx(pruned, example_inputs, workdir / "torch_pruning.onnx")
    return Peer("torch_pruning", "onnxruntime", RUNTIMES["onnxruntime"].prepare(path, (), threads=threads),
                path.stat().st_size, toolkit("torch-pruning", "onnxruntime"), note, model=pruned)


def output_layers(model: nn.Module, example_inputs: tuple) -> list[nn.Module]:
    """The layers never to prune (the README's "DO NOT prune the final classifier", generalised): every
    Linear whose out_features is the output's last dimension (classes, embedding dimensions) and every Conv
    whose out_channels is the output's channels."""
    with torch.no_grad():
        out = model(*example_inputs)
    if not isinstance(out, torch.Tensor):
        return []
    return [m for m in model.modules()
            if (isinstance(m, nn.Linear) and m.out_features == out.shape[-1])
            or (isinstance(m, nn.modules.conv._ConvNd) and out.dim() > 2 and m.out_channels == out.shape[1])]
