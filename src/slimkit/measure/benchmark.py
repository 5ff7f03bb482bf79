"""``bench``: one model measured, with the machine it ran on and its roofline (``slimkit bench``'s bench.json)."""
from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from ..data.task import Task
from ..devices import check_device
from ..files import atomic_dir, check_out
from ..models.checkpoint import run_labels
from . import default_threads, inputs, measure
from .machine import environment
from .memory import check_inputs_fit
from .roofline import peak_gmacs, roofline


def bench(
    model: nn.Module,
    example_inputs: tuple | None = None,
    *,
    data: Task | None = None,
    backends: tuple[str, ...] = ("eager", "onnxruntime"),
    batch_sizes: tuple[int, ...] = (1, 64),
    threads: int | None = None,
    device: str = "cpu",
    repeats: int = 30,
    metric_backend: str = "eager",
    labels: dict | None = None,
    out_dir: str | Path | None = None,
    overwrite: bool = False,
) -> dict:
    """Measure ``model`` as ``slimkit bench`` does and return the bench.json dict (docs/report.md): {"model",
    "data", "device", "threads", "environment", ...the METRICS of :func:`measure`, "roofline"}.

    ``example_inputs`` default to :func:`example_inputs` of the model and ``data``; given ones are checked to fit
    the model and the largest batch. ``labels`` names the model and data as in :func:`slimkit.compress`. With
    ``out_dir`` (new or empty, or an earlier slimkit run with ``overwrite``), bench.json is written there.
    """
    if out_dir is not None:
        check_out(out_dir, overwrite)
    check_device(device)
    if example_inputs is None:
        example_inputs = inputs.example_inputs(model, data=data, batch_sizes=batch_sizes)
    else:
        check_inputs_fit(model, example_inputs, batch_sizes)
    threads = threads or default_threads()
    metrics = measure(model, example_inputs, backends=backends, batch_sizes=batch_sizes, data=data, reference=model,
                      threads=threads, device=device, repeats=repeats, metric_backend=metric_backend)
    result = {**run_labels(model, data, labels), "device": device, "threads": threads, "environment": environment(),
              **metrics, "roofline": roofline(metrics["macs"], metrics["latency_ms"], peak_gmacs(threads, device))}
    if out_dir is not None:
        with atomic_dir(out_dir, overwrite, kind="bench") as tmp:
            (tmp / "bench.json").write_text(json.dumps(result, indent=2))
    return result
