"""The Task: a train and a test split, how to score a model on them, and how to read them batch by batch."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from itertools import islice
from typing import Callable, Iterator, Sequence, Union

import torch
from torch import Tensor
from torch.utils.data import Dataset, IterableDataset, default_collate

from .splits import Batch, IndexedSplit, LazySplit, LoaderSplit, as_batch, batch_order, first_batch

Augment = Callable[[Tensor], Tensor]
Split = Union[tuple[Tensor, ...], LazySplit]
Metric = Union[str, Callable[[Tensor, object], float]]


@dataclass
class Task:
    """A dataset split into train/test plus the metric that scores a model on it.

    Args:
        name: short name shown in reports.
        train: tensors of equal first dimension; the first ``n_inputs`` are model inputs, the rest (if any) are
            targets. Or a lazy split (:meth:`from_loaders`, ``imagefolder:``/``datasets:`` data) with that layout.
        test: same layout as ``train``.
        metric: ``"top1"`` (classification accuracy), ``"cosine"`` (mean cosine similarity of the model's outputs
            to a reference model's outputs on the test inputs), or a callable ``metric(outputs, targets) -> float``
            (higher is better; ``targets``: the test split's target column, a tuple of them when there are several,
            None when there are none), named in reports by its ``name`` attribute, else its ``__name__``.
        n_inputs: how many leading tensors are model inputs.
        augment: optional batch-wise augmentation applied to the first input during training.
        classes: the class names of label 0, 1, ... when known (``imagefolder:`` data: the folder names).
    """

    name: str
    train: Split
    test: Split
    metric: Metric = "top1"
    n_inputs: int = 1
    augment: Augment | None = field(default=None, repr=False)
    classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not (self.metric in ("top1", "cosine") if isinstance(self.metric, str) else callable(self.metric)):
            raise ValueError(f"Task.metric must be 'top1', 'cosine' or a callable, not {self.metric!r}")
        for split in (self.train, self.test):
            if not isinstance(split, (tuple, LazySplit)):
                raise ValueError(f"Task {self.name!r}: a split is a tuple of tensors or a lazy split, not "
                                 f"{type(split).__name__}; use Task.from_loaders for loaders and datasets")
            if isinstance(split, tuple) and len({len(t) for t in split}) > 1:
                raise ValueError(f"Task {self.name!r}: tensors in a split differ in length")

    @classmethod
    def from_loaders(cls, name: str, train, test, metric: Metric = "top1", n_inputs: int = 1,
                     augment: Augment | None = None, classes: Sequence[str] = ()) -> "Task":
        """A Task whose samples are loaded batch by batch, never all at once.

        ``train``/``test`` are each a ``torch.utils.data.DataLoader`` or any re-iterable of batches (read front to
        back, in its own order: shuffle in the loader), a function returning a fresh iterable of batches per pass,
        or a map-style ``torch.utils.data.Dataset`` of samples (random access: shuffled and sliced like tensors).
        A batch is a tuple of tensors (inputs first, then targets) or one tensor.
        """
        return cls(name, lazy_split(train), lazy_split(test), metric, n_inputs, augment, tuple(classes))

    @property
    def metric_name(self) -> str:
        """``top1``, ``cosine``, or a callable metric's ``name`` (else ``__name__``)."""
        if isinstance(self.metric, str):
            return self.metric
        return str(getattr(self.metric, "name", None) or getattr(self.metric, "__name__", type(self.metric).__name__))

    @property
    def in_memory(self) -> bool:
        """Whether both splits are tensors (random access, cheap to index); False for lazy splits."""
        return isinstance(self.train, tuple) and isinstance(self.test, tuple)

    @property
    def train_size(self) -> int:
        """Samples in the training split (a streaming split whose loader does not say is counted by one pass)."""
        return split_size(self.train)

    @property
    def test_size(self) -> int:
        """Samples in the test split."""
        return split_size(self.test)

    def train_batches(self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
                      rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        """Batches of every training column; with ``world_size > 1`` each rank gets its own shard. A split read from
        a loader keeps the loader's order (``shuffle`` does not apply)."""
        return split_batches(self.train, batch_size, shuffle=shuffle, generator=generator, rank=rank,
                             world_size=world_size)

    def test_batches(self, batch_size: int) -> Iterator[Batch]:
        """Batches of every test column, in order."""
        return split_batches(self.test, batch_size)

    def example_inputs(self, batch_size: int = 1) -> tuple[Tensor, ...]:
        """The first ``batch_size`` test samples, as a tuple of model inputs."""
        if isinstance(self.test, tuple):
            return tuple(t[:batch_size] for t in self.test[: self.n_inputs])
        return first_batch(self.test, batch_size)[: self.n_inputs]

    def input_batches(self, n_batches: int, batch_size: int) -> list[tuple[Tensor, ...]]:
        """The first ``n_batches`` batches of model inputs from the training split (calibration data)."""
        return [b[: self.n_inputs] for b in islice(self.train_batches(batch_size), n_batches)]

    def test_targets(self) -> tuple[Tensor, ...]:
        """The test split's target columns (those after the inputs); a lazy split is read once for them."""
        if isinstance(self.test, tuple):
            return self.test[self.n_inputs :]
        columns = [b[self.n_inputs :] for b in self.test_batches(1024)]
        return tuple(torch.cat(c) for c in zip(*columns))

    def train_rows(self, start: int | None = None, stop: int | None = None) -> Split:
        """Training samples ``start:stop`` (Python slice rules) as a split, e.g. to hold some out for validation.
        A split read from a loader has only leading slices (UserError otherwise)."""
        return split_rows(self.train, start, stop)

    def subset(self, train: int | None = None, test: int | None = None) -> "Task":
        """A copy keeping only the first ``train``/``test`` samples (for fast tests and trials)."""
        return replace(self, train=split_rows(self.train, None, train), test=split_rows(self.test, None, test))


def lazy_split(source) -> Split:
    """A Task split for ``source``: tensors and lazy splits as they are, a map-style Dataset as an
    :class:`IndexedSplit`, anything else (a DataLoader, an iterable, a function) as a :class:`LoaderSplit`."""
    if isinstance(source, (tuple, LazySplit)):
        return source
    if isinstance(source, Dataset) and not isinstance(source, IterableDataset):
        return IndexedSplit(lambda indices: as_batch(default_collate([source[i] for i in indices])), range(len(source)))
    return LoaderSplit(source)


def split_size(split: Split) -> int:
    return len(split[0]) if isinstance(split, tuple) else len(split)


def split_batches(split: Split, batch_size: int, **order) -> Iterator[Batch]:
    if isinstance(split, tuple):
        return batches(split, batch_size, **order)
    return split.batches(batch_size, **order)


def split_rows(split: Split, start: int | None, stop: int | None) -> Split:
    return tuple(t[start:stop] for t in split) if isinstance(split, tuple) else split.rows(start, stop)


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
    order = batch_order(len(tensors[0]), shuffle=shuffle, generator=generator, rank=rank, world_size=world_size)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        yield tuple(t[idx] for t in tensors)
