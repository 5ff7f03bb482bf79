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

