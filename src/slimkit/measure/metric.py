"""Task metrics: top-1 accuracy, or cosine similarity of embeddings to a reference model."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..data.task import Task, batches


Predict = Callable[..., torch.Tensor]


@torch.inference_mode()
def outputs(model: nn.Module | Predict, task: Task, batch_size: int = 256, device: str = "cpu") -> torch.Tensor:
    """The outputs of a model (or any callable on input tensors) on every test sample, on the CPU."""
    if isinstance(model, nn.Module):
        model.eval().to(device)
    inputs = task.test[: task.n_inputs]
    return torch.cat([model(*(t.to(device) for t in b)).float().cpu() for b in batches(inputs, batch_size)])


def evaluate(
    model: nn.Module | Predict, task: Task, reference: nn.Module | None = None, device: str = "cpu", batch_size: int = 256
) -> dict:
    """Score ``model`` on ``task.test``: {"name": "top1" | "cosine", "value": float}.

    ``model`` may be any callable on input tensors, e.g. an onnxruntime session wrapper. For ``cosine``
    tasks ``reference`` (the uncompressed model) supplies the target embeddings.
    """
    out = outputs(model, task, batch_size, device)
    if task.metric == "cosine" and reference is None:
        raise ValueError("cosine metric needs a reference model")
    return score(out, task, outputs(reference, task, batch_size, device) if task.metric == "cosine" else None)


def score(out: torch.Tensor, task: Task, target: torch.Tensor | None = None) -> dict:
    """The task metric of test-set outputs ``out``; ``target`` = the reference outputs (cosine tasks)."""
    if task.metric == "top1":
        labels = task.test[task.n_inputs]
        return {"name": "top1", "value": (out.argmax(1) == labels).float().mean().item()}
    return {"name": "cosine", "value": nn.functional.cosine_similarity(out, target, dim=-1).mean().item()}
