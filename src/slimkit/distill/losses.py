"""Distillation losses: soft targets, embedding matching and feature (hint) matching with adapters."""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import UserError
from ..train import cosine_distance


def soft_target_loss(student_logits: Tensor, teacher_logits: list[Tensor], temperature: float) -> Tensor:
    """Hinton et al.: ``T^2 * KL(mean_teachers softmax(t / T) || softmax(s / T))``, batch-averaged."""
    target = torch.stack([F.softmax(t / temperature, -1) for t in teacher_logits]).mean(0)
    log_student = F.log_softmax(student_logits / temperature, -1)
    return F.kl_div(log_student, target, reduction="batchmean") * temperature**2


def embedding_loss(student: Tensor, teachers: list[Tensor], kind: str) -> Tensor:
    """``1 - cosine`` or MSE between the student's and the teachers' mean embeddings."""
    target = torch.stack(teachers).mean(0)
    if kind == "mse":
        return F.mse_loss(student, target)
    return cosine_distance(student, target)


class Taps:
    """Forward hooks that keep the outputs of named submodules (the first element of tuple outputs)."""

    def __init__(self, model: nn.Module, names: list[str]):
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise UserError(f"distill.features: no module named {missing[0]!r} in {type(model).__name__}; "
                            f"names look like {', '.join(list(modules)[1:6])}.")
        self.names, self.outputs = names, {}
        self.handles = [modules[n].register_forward_hook(self._keeper(n)) for n in names]

    def _keeper(self, name: str):
        def keep(module, args, output):
            self.outputs[name] = output[0] if isinstance(output, (tuple, list)) else output
        return keep

    def take(self) -> list[Tensor]:
        """The outputs of the last forward pass, in ``names`` order."""
        outputs, self.outputs = [self.outputs[n] for n in self.names], {}
        return outputs

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def adapter(student: Tensor, teacher: Tensor, where: str) -> nn.Module:
    """A learned map from a student feature to the teacher's width: identity, 1x1 conv or linear."""
    if student.shape == teacher.shape:
        return nn.Identity()
    if student.dim() == 4 and teacher.dim() == 4 and student.shape[2:] == teacher.shape[2:]:
        return nn.Conv2d(student.shape[1], teacher.shape[1], 1, bias=False)
    if student.dim() == teacher.dim() and student.shape[:-1] == teacher.shape[:-1]:
        return nn.Linear(student.shape[-1], teacher.shape[-1], bias=False)
    raise UserError(
        f"distill.features {where}: student output {tuple(student.shape)} cannot be mapped to teacher output "
        f"{tuple(teacher.shape)} (only the channel/last dimension may differ); pair layers with equal spatial sizes."
    )
