"""Lazy task splits: samples produced batch by batch, never all in memory.

A :class:`~slimkit.data.task.Task` split is a tuple of tensors (in memory), an :class:`IndexedSplit` (random access
to samples that are loaded on demand: image files, a Hugging Face dataset, a map-style torch Dataset) or a
:class:`LoaderSplit` (an iterable of batches, e.g. a DataLoader, read front to back).
"""
from __future__ import annotations

from itertools import islice
from typing import Callable, Iterable, Iterator, Sequence

import torch
from torch import Tensor

from ..errors import UserError

Batch = tuple[Tensor, ...]


def batch_order(n: int, *, shuffle: bool = False, generator: torch.Generator | None = None, rank: int = 0,
                world_size: int = 1) -> Tensor:
    """The sample order of one pass: shuffled with ``generator`` or not, then this rank's shard."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    return order[rank::world_size]


class LazySplit:
    """A split whose samples are produced on demand; it has no tensors to index."""

    def __len__(self) -> int:
        raise NotImplementedError

    def batches(self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
                rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        """Batches of ``batch_size`` samples (the last may be shorter); each rank gets every world_size-th sample."""
        raise NotImplementedError

    def rows(self, start: int | None = None, stop: int | None = None) -> "LazySplit":
        """The samples ``start:stop`` (Python slice rules) as a split of their own."""
        raise NotImplementedError

    def __getitem__(self, key):
        raise UserError(f"This Task split is loaded lazily ({type(self).__name__}) and has no tensors to "
                        "index: use task.train_batches()/test_batches()/input_batches(), or build the Task from "
                        "tensors (Task(name, train=(x, y), test=(x, y))) for code that indexes task.train/task.test.")


class IndexedSplit(LazySplit):
    """Random access to samples loaded on demand: ``fetch(indices)`` returns one batch of them as tensors.

    Shuffling, sharding and slicing work as for in-memory tensors (the same generator gives the same order).
    """

    def __init__(self, fetch: Callable[[list[int]], Batch], indices: Sequence[int]):
        self.fetch, self.indices = fetch, indices

    def __len__(self) -> int:
        return len(self.indices)

    def batches(self, batch_size, *, shuffle=False, generator=None, rank=0, world_size=1):
        order = batch_order(len(self), shuffle=shuffle, generator=generator, rank=rank, world_size=world_size).tolist()
        for start in range(0, len(order), batch_size):
            yield self.fetch([self.indices[i] for i in order[start : start + batch_size]])

    def rows(self, start=None, stop=None):
        return IndexedSplit(self.fetch, self.indices[start:stop])


class LoaderSplit(LazySplit):
    """Batches read front to back from a DataLoader, any re-iterable of batches, or a function returning a fresh
    iterable each pass. Batches are regrouped to the batch size asked for; their order is the loader's (shuffle
    in the loader), and only leading slices (``rows(0, n)``) exist.

    Args:
        source: yields batches: tuples or lists of tensors with equal first dimension, or single tensors.
        size: samples per pass; default: counted from a DataLoader's sampler, else by one pass over the data.
        limit: stop after this many samples.
    """

    def __init__(self, source, size: int | None = None, limit: int | None = None):
        if isinstance(source, Iterator) or not (callable(source) or isinstance(source, Iterable)):
            raise UserError("A streaming Task split is read once per epoch: pass a DataLoader, a list of batches or a "
                            "function returning a fresh iterable of batches (e.g. lambda: my_batches()), not "
                            f"{type(source).__name__}.")
        self.source, self.size, self.limit = source, size, limit

    def __len__(self) -> int:
        if self.size is None:
            self.size = _loader_size(self.source)
        if self.size is None:
            self.size = sum(len(chunk[0]) for chunk in self._chunks())
        return self.size if self.limit is None else min(self.size, self.limit)

    def _chunks(self) -> Iterator[Batch]:
        """The source's batches as tuples of tensors, cut at ``limit`` samples."""
        left = self.limit
        if left == 0:
            return
        for batch in self.source() if callable(self.source) else self.source:
            chunk = as_batch(batch)
            if left is not None:
                chunk, left = tuple(t[:left] for t in chunk), left - len(chunk[0])
            yield chunk
            if left is not None and left <= 0:
                return

    def batches(self, batch_size, *, shuffle=False, generator=None, rank=0, world_size=1):
        return regroup(shard(self._chunks(), rank, world_size), batch_size)

    def rows(self, start=None, stop=None):
        if start not in (None, 0):
            raise UserError("A streaming Task (built from a DataLoader or iterable) is read front to back: only its "
                            "first samples can be taken, not a slice further in (e.g. a hold-out from the end of the "
                            "training split). Build the Task from tensors or a map-style Dataset for this.")
        if stop is not None and stop < 0:
            stop = max(len(self) + stop, 0)
        limit = self.limit if stop is None else stop if self.limit is None else min(stop, self.limit)
        return LoaderSplit(self.source, self.size, limit)


def as_batch(batch) -> Batch:
    """A loader's batch as a tuple of tensors; UserError for anything else."""
    batch = (batch,) if isinstance(batch, Tensor) else batch
    if not isinstance(batch, (tuple, list)) or not batch or not all(isinstance(t, Tensor) for t in batch):
        raise UserError(f"A streaming Task's loader yielded {type(batch).__name__}; each batch must be a tensor or a "
                        "tuple/list of tensors (inputs first, then targets).")
    if len({len(t) for t in batch}) > 1:
        raise UserError("A streaming Task's loader yielded a batch whose tensors differ in length (first dimension).")
    return tuple(batch)


def shard(chunks: Iterable[Batch], rank: int, world_size: int) -> Iterator[Batch]:
    """Every ``world_size``-th sample starting at ``rank``, counted over the whole stream."""
    seen = 0
    for chunk in chunks:
        n = len(chunk[0])
        if world_size > 1:
            chunk = tuple(t[(rank - seen) % world_size :: world_size] for t in chunk)
        seen += n
        if len(chunk[0]):
            yield chunk


def regroup(chunks: Iterable[Batch], batch_size: int) -> Iterator[Batch]:
    """Batches of exactly ``batch_size`` samples (the last may be shorter), whatever size the chunks have."""
    held: list[Batch] = []
    count = 0
    for chunk in chunks:
        held.append(chunk)
        count += len(chunk[0])
        while count >= batch_size:
            joined = held[0] if len(held) == 1 else tuple(torch.cat(columns) for columns in zip(*held))
            yield tuple(t[:batch_size] for t in joined)
            count -= batch_size
            held = [tuple(t[batch_size:] for t in joined)] if count else []
    if count:
        yield held[0] if len(held) == 1 else tuple(torch.cat(columns) for columns in zip(*held))


def _loader_size(source) -> int | None:
    """Samples per pass of a DataLoader, when its sampler tells without reading data."""
    from torch.utils.data import DataLoader

    if not isinstance(source, DataLoader):
        return None
    if source.batch_sampler is None:  # batch_size=None: the loader yields single samples
        return None
    try:
        if source.batch_size is None or source.drop_last:
            return sum(len(indices) for indices in source.batch_sampler)
        return len(source.sampler)
    except TypeError:  # an IterableDataset: no length
        return None


def first_batch(split: LazySplit, batch_size: int) -> Batch:
    """The first ``batch_size`` samples of ``split``."""
    batch = next(islice(split.batches(batch_size), 1), None)
    if batch is None:
        raise UserError("This Task split is empty: it needs at least one sample.")
    return batch
