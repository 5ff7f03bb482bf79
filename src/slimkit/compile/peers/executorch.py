"""ExecuTorch with the XNNPACK delegate, INT8 (PT2E XNNPACK quantizer), through slimkit's executorch runtime."""
from __future__ import annotations

from pathlib import Path

from torch import nn

from ...data.task import Task
from ...measure.latency import batch_of
from ...runtime import RUNTIMES
from .base import Peer, Skip, calibration_inputs, chunks, need, toolkit


def executorch_xnnpack_int8(model: nn.Module, example_inputs: tuple, workdir: Path, threads: int,
                            calibration: Task | None) -> Peer:
    """``RUNTIMES["executorch"]`` at ``precision="int8"``, calibrated on the first 256 training inputs. An
    ExecuTorch program has a static batch size: it is built per batch size, calibrated on those inputs in
    batches of exactly that size, saved (model.pte) and loaded from there. Size: the model.pte of the example
    inputs' batch size."""
    need("executorch")
    runtime = RUNTIMES.get("executorch")
    if runtime is None:
        raise Skip("this slimkit has no executorch runtime (slimkit/runtime/executorch.py)")
    reason = runtime.available()
    if reason:
        raise Skip(reason)
    inputs = calibration_inputs(calibration, "executorch int8")

    files = {}

    def build(batch_size: int):
        files[batch_size] = runtime.save(model, batch_of(example_inputs, batch_size), workdir / f"executorch-bs{batch_size}",
                                         precision="int8", calibration=chunks(inputs, batch_size))[0]
        return runtime.prepare(files[batch_size], (), threads=threads)

    batch = example_inputs[0].shape[0]
    peer = Peer.static("executorch_xnnpack_int8", "executorch/xnnpack", build, batch, 0, toolkit=toolkit("executorch"))
    peer.size_bytes = Path(files[batch]).stat().st_size
    return peer
