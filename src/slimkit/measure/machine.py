"""The machine a measurement ran on: versions and hardware facts that numbers depend on."""
from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16", "avx512_fp16")


def cpu_model_and_flags() -> dict:
    """{"cpu_model", "cpu_flags"}: the CPU's name and which of the instruction sets that decide INT8/BF16 speed it
    has (from /proc/cpuinfo; empty where there is none)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return {"cpu_model": platform.processor(), "cpu_flags": []}
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    return {"cpu_model": fields.get("model name", ""), "cpu_flags": [f for f in SPEED_FLAGS if f in flags]}


def environment() -> dict:
    """Versions and machine facts that numbers depend on."""
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        **cpu_model_and_flags(),
        "load_average_1_5_15_min": [round(x, 2) for x in os.getloadavg()],  # > cpu_count: timings ran on a busy machine
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
