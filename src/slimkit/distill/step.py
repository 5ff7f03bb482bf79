"""The ``distill`` step: build the student, then train it on the teachers' outputs with the shared loop."""
from __future__ import annotations

import contextlib
import dataclasses

import torch
from torch import nn
from torch.nn import functional as F

from ..data.task import Task
from ..errors import UserError
from ..models import load_model
from ..recipe import register
from ..train import fit, zeros_kept
from .config import Distill
from .losses import Taps, adapter, embedding_loss, soft_target_loss
from .students import layer_stack, narrower, resnet_small_like, shallower


class Harness(nn.Module):
    """The student plus the feature adapters, trained together; only the student is kept afterwards."""

    def __init__(self, student: nn.Module, adapters: list[nn.Module]):
        super().__init__()
        self.student, self.adapters = student, nn.ModuleList(adapters)

    def forward(self, *inputs):
        return self.student(*inputs)


def build_student(model: nn.Module, cfg: Distill) -> tuple[nn.Module, dict | None]:
    """The student for ``cfg.student`` and what a checkpoint needs to rebuild its structure."""
    torch.manual_seed(cfg.seed)
    if cfg.student == "narrow":
        student = narrower(model, cfg.width)
        return student, {"student": "narrow", "widths": [b.conv2.out_channels for b in student.blocks]}
    if cfg.student == "shallow":
        keep = list(range(0, len(layer_stack(model)[1]), 2))
        return shallower(model, keep), {"student": "shallow", "keep": keep}
    return model, None


def distill_into(student: nn.Module, teachers: list[nn.Module], task, cfg: Distill, example_inputs: tuple,
                 device: str = "cpu", progress: bool = False) -> dict:
    """Train ``student`` in place from ``teachers`` on ``task`` with :func:`slimkit.train.fit`; returns its history."""
    for t in teachers:
        t.to(device).eval()
    pairs = list(cfg.features.items())
    student_taps = Taps(student, [s for s, _ in pairs])
    teacher_taps = Taps(teachers[0], [t for _, t in pairs])
    try:
        with zeros_kept(student) if cfg.keep_zeros else contextlib.nullcontext():
            with torch.no_grad():
                probe = tuple(x.to(device) for x in example_inputs)
                out, ref = student.to(device).eval()(*probe), teachers[0](*probe)
                for other in teachers[1:]:
                    _check_outputs(out, other(*probe))
                _check_outputs(out, ref)
                adapters = [adapter(s, t, f"{a} -> {b}") for s, t, (a, b) in zip(student_taps.take(), teacher_taps.take(), pairs)]
            harness = Harness(student, adapters)
            cached = not pairs and task.augment is None and task.in_memory and _passes(task, cfg) >= 2
            if cached:
                task = with_teacher_outputs(task, teachers, device, cfg.batch_size)
            return fit(harness, task, cfg, loss_fn=_loss(teachers, student_taps, teacher_taps, harness, task, cfg, cached),
                       device=device, progress=progress)
    finally:
        student_taps.remove()
        teacher_taps.remove()


def _passes(task, cfg: Distill) -> float:
    """How many times training reads each training sample on average."""
    return cfg.epochs * cfg.batches_per_epoch(task.train_size) * cfg.batch_size / task.train_size


@torch.no_grad()
def with_teacher_outputs(task: Task, teachers: list[nn.Module], device: str, batch_size: int) -> Task:
    """``task`` with the teachers' outputs on every training sample appended to its training split, computed once:
    without augmentation a teacher sees the same inputs every epoch, so its outputs can be read instead of recomputed.
    In-memory tasks only: a streaming task's teachers run on every batch instead."""
    outputs = [torch.cat([t(*(x.to(device) for x in b[: task.n_inputs])).cpu() for b in task.train_batches(batch_size)])
               for t in teachers]
    return dataclasses.replace(task, train=(*task.train, *outputs))


def _check_outputs(student_out, teacher_out) -> None:
    if student_out.shape != teacher_out.shape:
        raise UserError(
            f"distill: teacher output {tuple(teacher_out.shape)} and student output {tuple(student_out.shape)} are "
            "incompatible; the student must predict the same classes (or embedding width) as every teacher."
        )


def _loss(teachers, student_taps: Taps, teacher_taps: Taps, harness: Harness, task, cfg: Distill, cached: bool):
    """The training loss; with ``cached``, the teachers' outputs are the last columns of each batch."""
    n = task.n_inputs

    def loss(net, batch):
        inputs = batch[:n]
        with torch.no_grad():
            targets = list(batch[-len(teachers):]) if cached else [t(*inputs) for t in teachers]
            teacher_features = teacher_taps.take()
        out = net(*inputs)
        if task.metric == "cosine":
            total = embedding_loss(out, targets, cfg.embedding_loss)
        else:
            hard = F.cross_entropy(out, batch[n], label_smoothing=cfg.label_smoothing)
            total = cfg.alpha * soft_target_loss(out, targets, cfg.temperature) + (1 - cfg.alpha) * hard
        for adapt, s, t in zip(harness.adapters, student_taps.take(), teacher_features):
            total = total + cfg.feature_weight * F.mse_loss(adapt(s), t)
        return total

    return loss


@register(Distill, replay=lambda model, entry: _replay(model, entry["replay"]))
def distill(model: nn.Module, cfg: Distill, ctx) -> nn.Module:
    """Distil ``ctx.teacher`` (or ``cfg.teachers``) into the model or a student built from it."""
    task = ctx.require_task("distill")
    teachers = [load_model(spec) for spec in cfg.teachers] or [ctx.teacher]
    student, structure = build_student(model, cfg)
    history = distill_into(student, teachers, task, cfg, ctx.batch(2), ctx.device, ctx.progress)
    ctx.notes.append(f"distill: {len(teachers)} teacher(s), final training loss {history['loss'][-1]:.4f}.")
    if structure:
        ctx.record(structure)
    return student.to("cpu")


def _replay(model: nn.Module, recorded: dict) -> nn.Module:
    """Rebuild the student structure recorded by :func:`distill` (weights are loaded afterwards)."""
    if recorded["student"] == "narrow":
        return resnet_small_like(model, recorded["widths"])
    return shallower(model, recorded["keep"])
