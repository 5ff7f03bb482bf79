"""Task metrics: top-1 accuracy, cosine similarity of embeddings to a reference model, or the Task's own callable."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..data.task import Task
from ..models.outputs import output_tensor


Predict = Callable[..., torch.Tensor]


@torch.inference_mode()
def outputs_and_targets(model: nn.Module | Predict, task: Task, batch_size: int = 256,
                        device: str = "cpu") -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """(the model's outputs on every test sample, the test split's target columns), on the CPU, in one pass.
    Models returning a ``ModelOutput``, dict or tuple are scored on :func:`slimkit.models.outputs.output_tensor`."""
    if isinstance(model, nn.Module):
        model.eval().to(device)
    outs, targets = [], []
    for batch in task.test_batches(batch_size):
        outs.append(output_tensor(model(*(t.to(device) for t in batch[: task.n_inputs]))).float().cpu())
        targets.append(batch[task.n_inputs :])
    return torch.cat(outs), tuple(torch.cat(columns) for columns in zip(*targets))


def outputs(model: nn.Module | Predict, task: Task, batch_size: int = 256, device: str = "cpu") -> torch.Tensor:
    """The outputs of a model (or any callable on input tensors) on every test sample, on the CPU."""
    return outputs_and_targets(model, task, batch_size, device)[0]


def evaluate(
    model: nn.Module | Predict, task: Task, reference: nn.Module | None = None, device: str = "cpu", batch_size: int = 256
) -> dict:
    """Score ``model`` on the test split: {"name": "top1" | "cosine" | the callable metric's name, "value": float}.

    ``model`` may be any callable on input tensors, e.g. an onnxruntime session wrapper. For ``cosine``
    tasks ``reference`` (the uncompressed model) supplies the target embeddings.
    """
    if task.metric == "cosine" and reference is None:
        raise ValueError("cosine metric needs a reference model")
    out, targets = outputs_and_targets(model, task, batch_size, device)
    target = outputs(reference, task, batch_size, device) if task.metric == "cosine" else None
    return score(out, task, target, targets=targets)


def score(out: torch.Tensor, task: Task, target: torch.Tensor | None = None, *,
          targets: tuple[torch.Tensor, ...] | None = None) -> dict:
    """The task metric of test-set outputs ``out``; ``target`` = the reference outputs (cosine tasks); ``targets`` =
    the test split's target columns (default: read from the task)."""
    if task.metric == "cosine":
        return {"name": "cosine", "value": nn.functional.cosine_similarity(out, target, dim=-1).mean().item()}
    targets = task.test_targets() if targets is None else targets
    if task.metric == "top1":
        return {"name": "top1", "value": (out.argmax(1) == targets[0]).float().mean().item()}
    value = task.metric(out, targets[0] if len(targets) == 1 else targets or None)
    return {"name": task.metric_name, "value": float(value)}
