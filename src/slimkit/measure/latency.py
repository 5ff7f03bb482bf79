"""Latency with warm-up and repeats, reported as median and interquartile range, per backend.

Backends: ``eager`` (PyTorch), ``compile`` (torch.compile, inductor) and ``onnxruntime``
(CPUExecutionProvider, or CUDA when the model is on a GPU and the provider exists).
"""
from __future__ import annotations

import contextlib
import math
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from ..errors import UserError

BACKENDS = ("eager", "compile", "onnxruntime")
Runner = Callable[[], object]


@contextlib.contextmanager
def fixed_threads(threads: int) -> Iterator[None]:
    """Pin PyTorch's intra-op thread count for the duration of a measurement."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def interleaved_timings(runners: dict[str, Runner], sync: Callable[[], None] = lambda: None, warmup: int = 5,
                        repeats: int = 30, min_sample_ms: float = 20.0) -> dict[str, dict]:
    """Median and IQR in milliseconds of each runner, sampled round-robin.

    Every round takes one sample of each runner, so a slow spell of the machine falls on all of them
    alike and side-by-side ratios stay fair. Fast calls are looped so one sample lasts >= min_sample_ms.
    """
    inner = {}
    for name, fn in runners.items():
        for _ in range(warmup):
            fn()
        sync()
        start = time.perf_counter()
        fn()
        sync()
        inner[name] = max(1, math.ceil(min_sample_ms / 1000 / max(time.perf_counter() - start, 1e-7)))
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, fn in runners.items():
            start = time.perf_counter()
            for _ in range(inner[name]):
                fn()
            sync()
            samples[name].append((time.perf_counter() - start) / inner[name] * 1000)
    out = {}
    for name, values in samples.items():
        q1, median, q3 = np.percentile(values, [25, 50, 75])
        out[name] = {"median": float(median), "iqr": float(q3 - q1)}
    return out


def batch_of(inputs: tuple, batch_size: int) -> tuple:
    """Repeat batch-1 (or any) example inputs to ``batch_size`` rows."""
    out = []
    for t in inputs:
        reps = math.ceil(batch_size / t.shape[0])
        out.append(t.repeat(reps, *[1] * (t.dim() - 1))[:batch_size].contiguous())
    return tuple(out)


def onnxruntime_predictor(model: nn.Module, example_inputs: tuple, threads: int) -> Callable[..., torch.Tensor]:
    """Export ``model`` and return a callable that runs it in onnxruntime on CPU tensors."""
    from ..compile.onnx import exported_session, run_session

    with tempfile.TemporaryDirectory() as tmp:
        sess = exported_session(model, example_inputs, tmp, threads)
    return lambda *inputs: torch.from_numpy(run_session(sess, inputs))


class _Backends:
    """Builds one runner per (backend, batch size), exporting/compiling once per model."""

    def __init__(self, model: nn.Module, example_inputs: tuple, device: str, threads: int, workdir: Path):
        self.model, self.example, self.device, self.threads, self.workdir = model.eval(), example_inputs, device, threads, workdir
        self._compiled = self._session = None

    def sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    def runner(self, backend: str, inputs: tuple) -> Runner:
        if backend == "onnxruntime":
            from ..compile.onnx import exported_session, run_session

            if self._session is None:
                self._session = exported_session(self.model, self.example, self.workdir, self.threads, self.device)
            return lambda: run_session(self._session, inputs)
        model = self.model
        if backend == "compile":
            if self._compiled is None:
                self._compiled = torch.compile(self.model, dynamic=False)
            model = self._compiled
        inputs = tuple(t.to(self.device) for t in inputs)

        def run():
            with torch.inference_mode():
                return model(*inputs)

        return run


def measure_latency_many(models: dict[str, nn.Module], example_inputs: tuple, backends=("eager",), batch_sizes=(1, 64),
                         threads: int = 1, device: str = "cpu", repeats: int = 30, warmup: int = 5) -> dict[str, dict]:
    """{model name: {"<backend>/bs<N>": {"median", "iqr"}}} in milliseconds.

    For each backend and batch size the models are sampled round-robin (side by side); backends are
    measured one after another, because runtimes that spin their thread pools disturb each other.
    """
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise UserError(f"Unknown backend(s) {unknown}; choose from {', '.join(BACKENDS)}.")
    results: dict[str, dict] = {name: {} for name in models}
    with tempfile.TemporaryDirectory() as tmp, fixed_threads(threads):
        runtimes = {}
        for i, (name, model) in enumerate(models.items()):
            (Path(tmp) / str(i)).mkdir()
            runtimes[name] = _Backends(model.to(device), example_inputs, device, threads, Path(tmp) / str(i))
        for backend in backends:
            for bs in batch_sizes:
                key, inputs = f"{backend}/bs{bs}", batch_of(example_inputs, bs)
                runners = {name: be.runner(backend, inputs) for name, be in runtimes.items()}
                sync = next(iter(runtimes.values())).sync
                for name, timing in interleaved_timings(runners, sync, warmup, repeats).items():
                    if backend == "onnxruntime":  # say where it ran: CUDA is used only when present
                        timing["provider"] = runtimes[name]._session.get_providers()[0]
                    results[name][key] = timing
    return results


def measure_latency(model: nn.Module, example_inputs: tuple, backends=("eager",), batch_sizes=(1, 64),
                    threads: int = 1, device: str = "cpu", repeats: int = 30, warmup: int = 5) -> dict:
    """{"<backend>/bs<N>": {"median", "iqr"}} in milliseconds for one model."""
    return measure_latency_many({"model": model}, example_inputs, backends, batch_sizes, threads, device, repeats, warmup)["model"]
