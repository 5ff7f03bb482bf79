"""slimkit's deploy/ against the peers (``slimkit demo``'s last table): who is fastest, by how much, and the verdict."""
from __future__ import annotations

import tempfile
from pathlib import Path

from torch import nn

from ...data.task import Task
from ...measure import default_threads
from .core import PEERS, build_peers, compare, deployed_peer


def versus(model: nn.Module, deploy_dir: str | Path, example_inputs: tuple, *, include=PEERS,
           calibration: Task | None = None, batch_sizes=(1, 64), threads: int | None = None, repeats: int = 10) -> dict:
    """Time the ``deploy_dir`` folder of a slimkit run side by side with the peers of ``model`` named in ``include``
    (latency only; ``calibration`` calibrates the static INT8 peers). Returns {"peers": the :func:`compare` rows,
    slimkit's last, "skipped": {peer: why}, ...:func:`versus_fastest`, "verdict": :func:`verdict`'s lines}."""
    threads = threads or default_threads()
    with tempfile.TemporaryDirectory() as tmp:
        peers, skipped = build_peers(model, example_inputs, Path(tmp), threads, include, calibration=calibration)
        rows = compare(model, [*peers, deployed_peer(Path(deploy_dir), threads)], example_inputs,
                       batch_sizes=batch_sizes, threads=threads, repeats=repeats)
    return {"peers": rows, "skipped": skipped, **versus_fastest(rows), "verdict": verdict(rows)}


def versus_fastest(rows: list[dict], ours: str = "slimkit") -> dict:
    """{"fastest_peer": {"bs<N>": name}, "speedup_over_fastest_peer": {"bs<N>": its median / ours}} of
    :func:`compare` rows, the fastest peer taken per batch size among all rows but ``ours``."""
    by_name = {r["name"]: r for r in rows}
    mine, others = by_name[ours], {n: r for n, r in by_name.items() if n != ours}
    fastest = {k: min(others, key=lambda n: others[n]["latency_ms"][k]["median"]) for k in mine["latency_ms"]}
    return {"fastest_peer": fastest,
            "speedup_over_fastest_peer": {k: others[n]["latency_ms"][k]["median"] / mine["latency_ms"][k]["median"]
                                          for k, n in fastest.items()}}


def verdict(rows: list[dict], ours: str = "slimkit") -> list[str]:
    """One line per batch size: whether ``ours`` beats the fastest peer (by 5% or more), ties with it or not."""
    toolkits = {r["name"]: r["toolkit"] for r in rows}
    faster = versus_fastest(rows, ours)
    lines = []
    for key, name in faster["fastest_peer"].items():
        ratio = faster["speedup_over_fastest_peer"][key]
        word = "beats" if ratio >= 1.05 else "ties with (within 5%)" if ratio > 0.95 else "does not beat"
        lines.append(f"{key}: {ours} {word} the fastest peer, {name} ({toolkits[name]}): {ratio:.2f}x its speed")
    return lines
