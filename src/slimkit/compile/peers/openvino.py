"""OpenVINO FP32, and NNCF's post-training INT8 quantization of the same OpenVINO model (``nncf.quantize``)."""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from ...data.task import Task
from ...runtime import RUNTIMES
from .base import Peer, calibration_inputs, need, toolkit

# Ops a tensor may pass through between attention's Softmax and the MatMul with the values.
_PASS_THROUGH = {"Cast", "Identity", "Dropout", "Where"}


def openvino_fp32(fp32: Path, workdir: Path, threads: int) -> Peer:
    """The FP32 ONNX export read by OpenVINO, saved as IR (model.xml + model.bin, FP32 weights) and compiled
    by slimkit's openvino runtime. Size: the IR."""
    need("openvino", "openvino")
    runtime = RUNTIMES["openvino"]
    xml, weights = runtime.save(fp32, (), workdir / "openvino")
    return Peer("openvino", "openvino", runtime.prepare(xml, (), threads=threads),
                xml.stat().st_size + weights.stat().st_size, toolkit("openvino"))


def nncf_openvino_int8(fp32: Path, workdir: Path, threads: int, calibration: Task | None) -> Peer:
    """``nncf.quantize`` (default preset; ``model_type=TRANSFORMER`` when the graph has attention) of the
    OpenVINO model read from the FP32 ONNX export, calibrated on the first 256 training inputs one by one,
    saved with ``openvino.save_model`` (its defaults) and compiled by slimkit's openvino runtime (CPU, ``threads`` inference
    threads, latency hint). Size: the saved IR."""
    nncf = need("nncf")
    ov = need("openvino", "openvino")
    inputs = calibration_inputs(calibration, "nncf.quantize")
    items = [tuple(t[i:i + 1] for t in inputs) for i in range(inputs[0].shape[0])]
    dataset = nncf.Dataset(items, lambda item: tuple(t.numpy() for t in item))
    options = {"model_type": nncf.ModelType.TRANSFORMER} if has_attention(fp32) else {}
    with contextlib.redirect_stdout(sys.stderr):  # NNCF's progress bars, off stdout (`bench --format json`)
        quantized = nncf.quantize(ov.Core().read_model(str(fp32)), dataset, subset_size=len(items), **options)
    xml = workdir / "nncf" / "model.xml"
    xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(xml))
    note = "model_type=TRANSFORMER (attention found)" if options else None
    return Peer("nncf_openvino_int8", "openvino/int8", RUNTIMES["openvino"].prepare(xml, (), threads=threads),
                xml.stat().st_size + xml.with_suffix(".bin").stat().st_size, toolkit("nncf", "openvino"), note)


def has_attention(onnx_path: Path) -> bool:
    """True when the graph has scaled dot-product attention: a Softmax whose output reaches a MatMul
    (directly or through Cast/Identity/Dropout/Where)."""
    onnx = need("onnx", "onnx")
    nodes = onnx.load(str(onnx_path), load_external_data=False).graph.node
    reached = {o for n in nodes if n.op_type == "Softmax" for o in n.output}
    for n in nodes:  # ONNX graphs are topologically sorted
        if n.op_type in _PASS_THROUGH and any(i in reached for i in n.input):
            reached.update(n.output)
        elif n.op_type == "MatMul" and any(i in reached for i in n.input):
            return True
    return False
