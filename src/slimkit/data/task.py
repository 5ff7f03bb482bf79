"""The Task: in-memory tensors, how to score a model on them, and how to make example inputs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor

Augment = Callable[[Tensor], Tensor]


@dataclass
class Task:
    """A dataset split into train/test tensors plus the metric that scores a model on it.

    Args:
        name: short name shown in reports.
        train: tensors of equal first dimension; the first ``n_inputs`` are model inputs,
            the rest (if any) are targets.
        test: same layout as ``train``.
        metric: ``"top1"`` (classification accuracy) or ``"cosine"`` (mean cosine similarity of
            the model's outputs to a reference model's outputs on the test inputs).
        n_inputs: how many leading tensors are model inputs.
        augment: optional batch-wise augmentation applied to the first input during training.
    """

    name: str
    train: tuple[Tensor, ...]
    test: tuple[Tensor, ...]
    metric: str = "top1"
    n_inputs: int = 1
    augment: Augment | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.metric not in ("top1", "cosine"):
            raise ValueError(f"Task.metric must be 'top1' or 'cosine', not {self.metric!r}")
        for split in (self.train, self.test):
            if len({len(t) for t in split}) > 1:
                raise ValueError(f"Task {self.name!r}: tensors in a split differ in length")

    def example_inputs(self, batch_size: int = 1) -> tuple[Tensor, ...]:
        """The first ``batch_size`` test samples, as a tuple of model inputs."""
        return tuple(t[:batch_size] for t in self.test[: self.n_inputs])

    def input_batches(self, n_batches: int, batch_size: int) -> list[tuple[Tensor, ...]]:
        """The first ``n_batches`` batches of model inputs from the training split (calibration data)."""
        return [b for _, b in zip(range(n_batches), batches(self.train[: self.n_inputs], batch_size))]

    def subset(self, train: int | None = None, test: int | None = None) -> "Task":
        """A copy keeping only the first ``train``/``test`` samples (for fast tests and trials)."""
        return Task(
            self.name,
            tuple(t[:train] for t in self.train),
            tuple(t[:test] for t in self.test),
            self.metric,
            self.n_inputs,
            self.augment,
        )


def batches(
    tensors: Sequence[Tensor],
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[Tensor, ...]]:
    """Yield batches of in-memory tensors; with ``world_size > 1`` each rank gets its own shard."""
    n = len(tensors[0])
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    order = order[rank::world_size]
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        yield tuple(t[idx] for t in tensors)
