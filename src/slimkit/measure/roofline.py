"""Roofline note: achieved GMAC/s of a model per backend and batch, against the machine's measured peak."""
from __future__ import annotations

import importlib.util
import re
import time

import torch

from ..runtime.eager import fixed_threads


def peak_gmacs(threads: int, device: str = "cpu", size: int = 1024, repeats: int = 10) -> float:
    """Measured peak FP32 throughput in GMAC/s: the fastest ``size``-cube matmul of ``repeats`` calls, taken
    over torch and (on the CPU, when installed) onnxruntime, whose MLAS kernels can be the faster of the two."""
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=gen).to(device) for _ in range(2))
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    runners = [lambda: torch.matmul(a, b)]
    if device == "cpu" and importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):
        runners.append(_ort_matmul(a.numpy(), b.numpy(), threads))
    best = float("inf")
    with fixed_threads(threads):
        for run in runners:
            for i in range(repeats + 2):  # two warm-up calls
                start = time.perf_counter()
                run()
                sync()
                best = min(best, time.perf_counter() - start) if i >= 2 else best
    return size ** 3 / best / 1e9


def _ort_matmul(a, b, threads: int):
    """A one-node onnxruntime MatMul graph computing ``a @ b``, as a callable."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(x.shape)) for n, x in (("a", a), ("b", b))],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [a.shape[0], b.shape[1]])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return lambda: sess.run(None, {"a": a, "b": b})


def roofline(macs: int, latency_ms: dict[str, dict], peak: float) -> dict:
    """{"peak_gmacs", "<backend>/bs<N>": {"gmacs", "fraction"}}: MACs per batch-1 sample times N over the
    median time, as GMAC/s and as a fraction of ``peak``."""
    out: dict = {"peak_gmacs": round(peak, 2)}
    for key, timing in latency_ms.items():
        match = re.search(r"/bs(\d+)$", key)
        if match and timing.get("median"):
            gmacs = macs * int(match.group(1)) / (timing["median"] / 1000) / 1e9
            out[key] = {"gmacs": round(gmacs, 3), "fraction": round(gmacs / peak, 4)}
    return out
