"""Reports: report.json (the schema of DESIGN.md), report.md and a self-contained report.html."""
from __future__ import annotations

import json
from pathlib import Path

from ..files import write_atomic
from .html import render_comparison, render_html
from .markdown import render_markdown

__all__ = ["write_reports", "write_comparison", "read_report", "render_html", "render_comparison", "render_markdown"]


def write_reports(report: dict, directory: str | Path) -> None:
    """Write report.json, report.md and report.html into ``directory``."""
    directory = Path(directory)
    (directory / "report.json").write_text(json.dumps(report, indent=2))
    (directory / "report.md").write_text(render_markdown(report))
    (directory / "report.html").write_text(render_html(report))


def read_report(run_dir: str | Path) -> dict:
    """The report.json of a run directory; UserError naming the fix when there is none."""
    from ..errors import UserError

    path = Path(run_dir) / "report.json"
    try:
        report = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: cannot read a report ({exc}); pass a run directory written by `slimkit compress`.") from exc
    missing = [k for k in ("model", "data", "baseline", "final", "steps") if not isinstance(report, dict) or k not in report]
    if missing:
        raise UserError(f"{path} is not a slimkit report (no {', '.join(missing)}); pass a run directory written by `slimkit compress`.")
    return report


def run_labels(run_dirs: list[str | Path]) -> list[str]:
    """Short names for runs: the folder names, or the paths as given where two folder names clash."""
    names = [Path(d).resolve().name for d in run_dirs]
    return [n if names.count(n) == 1 else str(d) for n, d in zip(names, run_dirs)]


def write_comparison(run_dirs: list[str | Path], out: str | Path) -> Path:
    """Write one HTML page comparing the runs in ``run_dirs`` to ``out``; returns its path.

    Every run is read before anything is written, so a bad directory leaves no page behind.
    """
    from ..errors import UserError

    reports = [read_report(d) for d in run_dirs]
    out = Path(out)
    if not out.parent.is_dir():
        raise UserError(f"{out.parent} does not exist; create it or pass --out to a file in an existing folder.")
    write_atomic(out, render_comparison(dict(zip(run_labels(run_dirs), reports))))
    return out
