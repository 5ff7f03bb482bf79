"""Reports: report.json (the schema of DESIGN.md), report.md and a self-contained report.html."""
from __future__ import annotations

import json
from pathlib import Path

from .html import render_html
from .markdown import render_markdown

__all__ = ["write_reports", "read_report", "render_html", "render_markdown"]


def write_reports(report: dict, directory: str | Path) -> None:
    """Write report.json, report.md and report.html into ``directory``."""
    directory = Path(directory)
    (directory / "report.json").write_text(json.dumps(report, indent=2))
    (directory / "report.md").write_text(render_markdown(report))
    (directory / "report.html").write_text(render_html(report))


def read_report(run_dir: str | Path) -> dict:
    from ..errors import UserError

    path = Path(run_dir) / "report.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: cannot read a report ({exc}); pass a run directory written by `slimkit compress`.") from exc
