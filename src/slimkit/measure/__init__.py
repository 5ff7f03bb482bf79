"""Measurement: parameters, MACs, artifact size, peak memory, latency per backend, task metric."""
from __future__ import annotations

import os

from torch import nn

from ..data.task import Task
from ..errors import UserError
from ..runtime import RUNTIMES
from .counts import count_macs, count_params
from .layers import layer_stats, layer_weights, weight_histogram
from .latency import BACKENDS, batch_of, measure_latency
from .finite import first_non_finite
from .inputs import example_inputs
from .memory import check_inputs_fit, peak_memory
from .next_token import next_token_loss, perplexity
from .metric import evaluate
from .size import artifact_size, sparse_size

__all__ = ["measure", "default_threads", "check_inputs_fit", "example_inputs", "first_non_finite", "next_token_loss",
           "perplexity", "BACKENDS"]


def default_threads() -> int:
    """Threads used for latency: SLIMKIT_THREADS, else every core this process may use."""
    env = os.environ.get("SLIMKIT_THREADS")
    return int(env) if env else len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def measure(
    model: nn.Module,
    example_inputs: tuple | None = None,
    *,
    backends: tuple[str, ...] = ("eager",),
    batch_sizes: tuple[int, ...] = (1, 64),
    data: Task | None = None,
    reference: nn.Module | None = None,
    threads: int | None = None,
    device: str = "cpu",
    artifact: str | None = None,
    repeats: int = 30,
    metric_backend: str = "eager",
) -> dict:
    """Measure a model; returns the METRICS dict of report.json (docs/report.md).

    Args:
        example_inputs: batch-1 inputs (taken from ``data`` when omitted).
        backends: any of ``BACKENDS`` (eager, compile, onnxruntime, openvino); empty = no latency.
        batch_sizes: batch sizes for latency.
        data: a Task to score the model on (top-1 or cosine); None = no metric.
        reference: the uncompressed model, needed for cosine metrics.
        threads: intra-op threads for latency (default: :func:`default_threads`).
        artifact: size this file (e.g. model.onnx) instead of the safetensors weights.
        metric_backend: ``eager`` or ``onnxruntime``: where the metric is computed (onnxruntime runs
            quantized models on integer kernels, as deployed).
    """
    if example_inputs is None:
        if data is None:
            raise UserError("measure() needs example_inputs or data to build inputs from.")
        example_inputs = data.example_inputs(1)
    if metric_backend not in ("eager", "onnxruntime"):
        raise UserError(f"metric_backend must be eager or onnxruntime, not {metric_backend!r}.")
    threads = threads or default_threads()
    model = model.eval().cpu()
    params, nonzero = count_params(model)
    macs, per_layer = count_macs(model, example_inputs)
    weights = layer_weights(model)
    size, compressed = artifact_size(model, artifact)
    on_device = model.to(device)
    peak = peak_memory(on_device, tuple(t.to(device) for t in batch_of(example_inputs, max(batch_sizes))))
    latency = measure_latency(on_device, example_inputs, backends, batch_sizes, threads, device, repeats) if backends else {}
    metric = None
    if data is not None:
        predictor = (RUNTIMES["onnxruntime"].prepare(model, example_inputs, threads=threads)
                     if metric_backend == "onnxruntime" else on_device)
        metric = evaluate(predictor, data, reference, device)
    model.cpu()
    return {
        "params": params,
        "nonzero_params": nonzero,
        "macs": macs,
        "macs_per_layer": per_layer,
        "layers": layer_stats(weights, per_layer),
        "weight_histogram": weight_histogram(weights),
        "size_bytes": size,
        "compressed_size_bytes": compressed,
        "sparse_size_bytes": sparse_size(model),
        "peak_memory_bytes": peak,
        "latency_ms": latency,
        "metric": metric,
    }
