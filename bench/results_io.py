"""What every bench does last: write its results as JSON and say which acceptance checks pass."""
from __future__ import annotations

import json
from pathlib import Path


def write_results(out: str | Path, result: dict) -> None:
    """Write ``result`` to ``out`` as indented JSON (creating the folder) and say where."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


def print_checks(checks: dict[str, bool] | None) -> None:
    """One PASS/FAIL line per acceptance check (none in smoke mode)."""
    for check, ok in (checks or {}).items():
        print(f"{'PASS' if ok else 'FAIL'} {check}")


def versus_fastest(rows: list[dict], batch_sizes, ours: str = "slimkit") -> dict:
    """{"fastest_peer": {"bs<N>": name}, "speedup_over_fastest_peer": {"bs<N>": its median / ours}} of
    ``compare`` rows, the fastest peer taken per batch size among all rows but ``ours``."""
    by_name = {r["name"]: r for r in rows}
    mine, others = by_name[ours], {n: r for n, r in by_name.items() if n != ours}
    keys = [f"bs{bs}" for bs in batch_sizes]
    fastest = {k: min(others, key=lambda n: others[n]["latency_ms"][k]["median"]) for k in keys}
    return {"fastest_peer": fastest,
            "speedup_over_fastest_peer": {k: others[n]["latency_ms"][k]["median"] / mine["latency_ms"][k]["median"]
                                          for k, n in fastest.items()}}
