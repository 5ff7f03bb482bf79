"""Latency with warm-up and repeats, reported as median and interquartile range, per backend.

Backends are the runtimes of :mod:`slimkit.runtime`: ``eager`` (PyTorch), ``compile`` (torch.compile,
inductor), ``onnxruntime`` (CPUExecutionProvider, or CUDA when the model is on a GPU and the provider
exists) and ``openvino`` (CPU), each at the model's own precision (int8 for slimkit's quantized models).
"""
from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..runtime import RUNTIMES, Predictor, Runtime
from ..runtime.eager import fixed_threads

BACKENDS = tuple(RUNTIMES)
Runner = Callable[[], object]
__all__ = ["BACKENDS", "batch_of", "check_backends", "fixed_threads", "interleaved_timings", "measure_latency",
           "measure_latency_many", "time_side_by_side"]


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


def check_backends(backends) -> None:
    """UserError for a backend that is unknown, or not installed here (naming the pip extra that brings it)."""
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise UserError(f"Unknown backend(s) {unknown}; choose from {', '.join(BACKENDS)}.")
    for backend in backends:
        RUNTIMES[backend].require()


def _runner(predictor: Callable, inputs: tuple) -> Runner:
    """A call of ``predictor`` without arguments, on ``inputs`` moved once to where it takes them (a
    :class:`Predictor`'s ``device``, else the CPU)."""
    inputs = tuple(t.to(getattr(predictor, "device", "cpu")) for t in inputs)
    return lambda: predictor(*inputs)


def time_side_by_side(build: Callable[[int, tuple], dict[str, Callable]], inputs_for: Callable[[int], tuple],
                      batch_sizes, *, threads: int = 1, device: str = "cpu", warmup: int = 5,
                      repeats: int = 30) -> dict[str, dict]:
    """{name: {"bs<N>": {"median", "iqr"}}} in milliseconds: for each batch size, the predictors that
    ``build(batch_size, inputs)`` returns for ``inputs_for(batch_size)``, timed side by side
    (:func:`interleaved_timings`) with PyTorch's threads pinned to ``threads``.

    ``build`` decides what runs at each batch size: it reuses its predictors or prepares them again (static
    shapes), and leaves out those that dropped out; a name is timed at the batch sizes it is returned for.
    Inputs are moved once to each predictor's device; on CUDA every sample waits for the GPU to finish.
    """
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    timings: dict[str, dict] = {}
    with fixed_threads(threads):
        for bs in batch_sizes:
            inputs = inputs_for(bs)
            runners = {name: _runner(predictor, inputs) for name, predictor in build(bs, inputs).items()}
            for name, timing in interleaved_timings(runners, sync, warmup, repeats).items():
                timings.setdefault(name, {})[f"bs{bs}"] = timing
    return timings


def measure_latency_many(models: dict[str, nn.Module], example_inputs: tuple, backends=("eager",), batch_sizes=(1, 64),
                         threads: int = 1, device: str = "cpu", repeats: int = 30, warmup: int = 5) -> dict[str, dict]:
    """{model name: {"<backend>/bs<N>": {"median", "iqr"}}} in milliseconds.

    For each backend and batch size the models are sampled round-robin (side by side); backends are
    measured one after another, because runtimes that spin their thread pools disturb each other.
    """
    check_backends(backends)
    results: dict[str, dict] = {name: {} for name in models}
    for backend in backends:
        timings = _time_on(RUNTIMES[backend], models, example_inputs, batch_sizes, threads, device, repeats, warmup)
        for name, per_batch in timings.items():
            results[name].update({f"{backend}/{bs}": timing for bs, timing in per_batch.items()})
    return results


def _time_on(runtime: Runtime, models: dict[str, nn.Module], example_inputs: tuple, batch_sizes, threads: int,
             device: str, repeats: int, warmup: int) -> dict[str, dict]:
    """{model name: {"bs<N>": timing}} of ``models`` side by side on ``runtime``; onnxruntime's timings name
    the provider they ran on (CUDA is used only when present)."""
    predictors: dict[str, Predictor] = {}

    def prepared(batch_size: int, inputs: tuple) -> dict[str, Predictor]:
        if runtime.static_shapes or not predictors:  # exported / compiled once per model, or per batch size
            predictors.update({name: runtime.prepare(model, inputs, threads=threads, device=device)
                               for name, model in models.items()})
        return predictors

    timings = time_side_by_side(prepared, lambda bs: batch_of(example_inputs, bs), batch_sizes, threads=threads,
                                device=device, warmup=warmup, repeats=repeats)
    if runtime.name == "onnxruntime":
        for name, per_batch in timings.items():
            for timing in per_batch.values():
                timing["provider"] = predictors[name].handle.get_providers()[0]
    return timings


def measure_latency(model: nn.Module, example_inputs: tuple, backends=("eager",), batch_sizes=(1, 64),
                    threads: int = 1, device: str = "cpu", repeats: int = 30, warmup: int = 5) -> dict:
    """{"<backend>/bs<N>": {"median", "iqr"}} in milliseconds for one model."""
    return measure_latency_many({"model": model}, example_inputs, backends, batch_sizes, threads, device, repeats, warmup)["model"]
