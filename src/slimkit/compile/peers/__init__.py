"""Peer comparison (``slimkit bench --peers``): the user's obvious alternatives, timed side by side.

Peers of an FP32 model: PyTorch eager, torch.compile, onnxruntime FP32, onnxruntime ``quantize_dynamic``
and ``quantize_static`` with their defaults, torch's own dynamic quantization, OpenVINO FP32, NNCF's INT8
quantization for OpenVINO, torchao's PT2E X86 INT8 through torch.compile, ExecuTorch XNNPACK INT8,
Torch-Pruning to the same MACs budget, and slimkit's result (a run directory's deploy/). Every peer runs on the same
inputs, round-robin in one run, per batch size; every calibrating peer gets the first 256 training inputs.

Each peer is reported as ``{"name", "backend", "toolkit", "latency_ms": {"bs<N>": {"median", "iqr"}},
"size_bytes", "metric": {"name", "value"} | None, "speedup_vs_eager": {"bs<N>": float}}`` plus ``"note"``
where the row alone does not say enough (e.g. Torch-Pruning's MACs and fine-tuning).
"""
from .base import Peer
from .bench import bench_peers, fine_tuner
from .core import PEERS, build_peers, compare, deployed_peer, peer_report, slimkit_peer, table
from .versus import verdict, versus, versus_fastest

__all__ = ["PEERS", "Peer", "bench_peers", "build_peers", "compare", "deployed_peer", "fine_tuner", "peer_report",
           "slimkit_peer", "table", "verdict", "versus", "versus_fastest"]
