"""torchao's PT2E static INT8 quantization for x86 (``X86InductorQuantizer``), lowered by torch.compile."""
from __future__ import annotations

import copy
import io
import warnings

import torch
from torch import nn

from ...data.task import Task, batches
from ...measure.latency import batch_of
from .base import Peer, Skip, calibration_inputs, need, toolkit


def torchao_pt2e_int8(model: nn.Module, example_inputs: tuple, calibration: Task | None) -> Peer:
    """The flow of torchao's "PyTorch 2 Export Quantization with X86 Backend through Inductor" tutorial:
    ``torch.export`` -> ``prepare_pt2e(X86InductorQuantizer().set_global(default config))`` -> calibrate on
    the first 256 training inputs (32 per batch) -> ``convert_pt2e`` -> ``torch.compile`` under ``no_grad``
    with inductor freezing (the tutorial's ``TORCHINDUCTOR_FREEZING=1``, which packs the int8 weights for
    oneDNN's kernels).

    Exported with ``strict=True`` and a dynamic batch dimension: non-strict export groups every call of a
    reused module (a ReLU called twice) into one partition, which the quantizer rejects (pytorch/ao#4478).
    Freezing is applied by ``torch._inductor.config.patch`` while each batch size compiles (passing it as
    ``torch.compile(options=...)`` fails here: the weight-prepack op has no fake kernel then), so the program
    is compiled per batch size (``dynamic=False``): a static-batch peer.

    Size: ``torch.save`` bytes of the tensors the converted graph uses (int8 weights, their scales and zero
    points, float biases).
    """
    need("torchao")
    inputs = calibration_inputs(calibration, "torchao PT2E")
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )
    import torch._inductor.config as inductor_config

    if not torch.backends.mkldnn.is_available():
        raise Skip("X86InductorQuantizer needs oneDNN (mkldnn), which this torch lacks")
    dynamic = tuple({0: torch.export.Dim.AUTO} for _ in example_inputs)
    with torch.no_grad():
        exported = torch.export.export(copy.deepcopy(model).eval(), batch_of(example_inputs, 2),
                                       dynamic_shapes=dynamic, strict=True).module()
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for batch in batches(inputs, 32):
            prepared(*batch)
    converted = convert_pt2e(prepared)
    compiled = torch.compile(converted, dynamic=False)

    def run(*x):
        with torch.no_grad():
            return compiled(*x)

    def build(batch_size: int):
        with inductor_config.patch(freezing=True), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # inductor's notice on how it copies zero points
            run(*batch_of(example_inputs, batch_size))  # compiles (and freezes) this batch size
        return run

    return Peer.static("torchao_pt2e_int8", "inductor/int8", build, example_inputs[0].shape[0], _graph_bytes(converted),
                       toolkit=toolkit("torchao", "torch"))


def _graph_bytes(module: torch.fx.GraphModule) -> int:
    """``torch.save`` bytes of the tensors the graph reads (get_attr), not of attributes it no longer uses."""
    state = {}
    for node in module.graph.nodes:
        if node.op == "get_attr":
            value = module
            for part in node.target.split("."):
                value = getattr(value, part)
            if isinstance(value, torch.Tensor):
                state[node.target] = value
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.tell()
