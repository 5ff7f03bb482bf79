"""What every peer shares: the Peer record, the skip signal, toolkit versions, calibration data, static batches."""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Callable

import torch
from torch import nn

from ...data.task import Task

Predict = Callable[..., torch.Tensor]
CALIBRATION_SAMPLES = 256  # the first 256 training inputs of the Task, for every peer that calibrates


@dataclass
class Peer:
    """One alternative: how it runs (``backend``), the callable, the bytes of its deployable file, and which
    toolkit versions made it. ``note``: what the row alone does not say (e.g. "no fine-tuning").

    ``static_batch``: for a program compiled for one batch size (ExecuTorch, torch.compile with freezing), a
    factory that builds it for a batch size; :meth:`predict_for` calls it once per batch size. ``model``: the
    PyTorch model behind a structural peer (torch_pruning), for inspection.
    """

    name: str
    backend: str
    predict: Predict
    size_bytes: int
    toolkit: str = ""
    note: str | None = None
    static_batch: Callable[[int], Predict] | None = None
    model: nn.Module | None = None
    _programs: dict[int, Predict] = field(default_factory=dict, init=False, repr=False)

    def predict_for(self, batch_size: int) -> Predict:
        """The callable to time at ``batch_size``: ``predict``, or for a static-batch peer the program built
        for that batch size (built once), which takes any number of rows in padded chunks of ``batch_size``."""
        if self.static_batch is None:
            return self.predict
        if batch_size not in self._programs:
            self._programs[batch_size] = fixed_batch(self.static_batch(batch_size), batch_size)
        return self._programs[batch_size]

    @classmethod
    def static(cls, name: str, backend: str, build: Callable[[int], Predict], batch_size: int, size_bytes: int,
               **kwargs) -> Peer:
        """A static-batch peer whose ``predict`` is its program for ``batch_size`` (the example inputs')."""
        peer = cls(name, backend, lambda *x: x, size_bytes, static_batch=build, **kwargs)
        peer.predict = peer.predict_for(batch_size)
        return peer


def fixed_batch(program: Predict, batch_size: int) -> Predict:
    """``program`` (which takes exactly ``batch_size`` rows) called on any number of rows: in chunks of
    ``batch_size``, the last one padded by repeating its last row, the padding's outputs dropped."""

    def run(*inputs: torch.Tensor) -> torch.Tensor:
        rows = inputs[0].shape[0]
        if rows == batch_size:
            return program(*inputs)
        outs = []
        for start in range(0, rows, batch_size):
            chunk = tuple(t[start:start + batch_size] for t in inputs)
            n = chunk[0].shape[0]
            if n < batch_size:
                chunk = tuple(torch.cat([t, t[-1:].expand(batch_size - n, *t.shape[1:])]) for t in chunk)
            outs.append(program(*chunk)[:n])
        return torch.cat(outs)

    return run


class Skip(Exception):
    """A peer that cannot run here; the message says why."""


def need(module: str, extra: str = "peers", dist: str | None = None):
    """Import ``module`` for a peer, or Skip naming the pip extra that brings it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise Skip(f"needs {dist or module}: pip install 'slimkit[{extra}]'") from None


def toolkit(*dists: str) -> str:
    """``"nncf 3.4.0, openvino 2026.4.1"``: the installed versions of the distributions a peer used."""
    found = []
    for dist in dists:
        try:
            found.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            found.append(dist)
    return ", ".join(found)


def calibration_inputs(task: Task | None, peer: str) -> tuple[torch.Tensor, ...]:
    """The first 256 training inputs of ``task``: the calibration data of every calibrating peer."""
    if task is None:
        raise Skip(f"{peer} needs calibration data: pass --data")
    return task.input_batches(1, CALIBRATION_SAMPLES)[0]


def chunks(inputs: tuple[torch.Tensor, ...], batch_size: int) -> list[tuple[torch.Tensor, ...]]:
    """``inputs`` in batches of exactly ``batch_size`` rows (for a static-batch program): a short last batch
    is dropped; when there are fewer rows than ``batch_size``, one batch of them repeated."""
    rows = inputs[0].shape[0]
    if rows < batch_size:
        from ...measure.latency import batch_of

        return [batch_of(inputs, batch_size)]
    return [tuple(t[i:i + batch_size] for t in inputs) for i in range(0, rows - batch_size + 1, batch_size)]
