"""Roofline note: achieved GMAC/s of a model per backend and batch, against the machine's measured peak."""
from __future__ import annotations

import re
import time

import torch

from ..measure.latency import fixed_threads


def peak_gmacs(threads: int, device: str = "cpu", size: int = 1024, repeats: int = 10) -> float:
    """Measured peak FP32 throughput in GMAC/s: the fastest of ``repeats`` ``size``-cube torch.matmul calls."""
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=gen).to(device) for _ in range(2))
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    best = float("inf")
    with fixed_threads(threads):
        for i in range(repeats + 2):  # two warm-up calls
            start = time.perf_counter()
            torch.matmul(a, b)
            sync()
            best = min(best, time.perf_counter() - start) if i >= 2 else best
    return size ** 3 / best / 1e9


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
