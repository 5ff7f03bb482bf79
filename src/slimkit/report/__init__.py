"""Reports: report.json (its schema is in docs/report.md), report.md and a self-contained report.html."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError
from ..files import check_out_path, read_json, write_atomic
from .html import GENERATOR_TAG, render_comparison, render_html
from .markdown import render_markdown

__all__ = ["write_reports", "rerender", "write_comparison", "read_report", "render_html", "render_comparison",
           "render_markdown"]

_MALFORMED = (KeyError, TypeError, ValueError, AttributeError, IndexError, ZeroDivisionError, OverflowError)


def _rendered(report: dict, source: str) -> dict[str, str]:
    """report.json/.md/.html as text; UserError naming ``source`` when the report cannot be rendered."""
    try:
        return {"report.json": json.dumps(report, indent=2), "report.md": render_markdown(report),
                "report.html": render_html(report)}
    except _MALFORMED as exc:
        raise UserError(f"{source} is malformed ({type(exc).__name__}: {exc}); it was not written by this version of "
                        "slimkit or was edited. Nothing was changed.") from None


def write_reports(report: dict, directory: str | Path) -> None:
    """Write report.json, report.md and report.html into ``directory`` (each file atomically)."""
    for name, text in _rendered(report, "the report").items():
        write_atomic(Path(directory) / name, text)


def rerender(run_dir: str | Path) -> dict:
    """Re-render a run's report.md and report.html from its report.json; nothing changes when it is malformed."""
    report = read_report(run_dir)
    pages = _rendered(report, str(Path(run_dir) / "report.json"))
    for name in ("report.md", "report.html"):
        write_atomic(Path(run_dir) / name, pages[name])
    return report


def read_report(run_dir: str | Path) -> dict:
    """The report.json of a run directory; UserError naming the fix when there is none."""
    path = Path(run_dir) / "report.json"
    report = read_json(path, "the report of a run written by `slimkit compress`")
    missing = [k for k in ("model", "data", "baseline", "final", "steps") if not isinstance(report, dict) or k not in report]
    if missing:
        raise UserError(f"{path} is not a slimkit report (no {', '.join(missing)}); pass a run directory written by `slimkit compress`.")
    problem = _schema_problem(report)
    if problem:
        raise UserError(f"{path}: {problem}; it was not written by this version of slimkit or was edited. Nothing was changed.")
    return report


def _schema_problem(report: dict) -> str | None:
    """The first place where ``report`` departs from the report.json schema, or None."""
    expected = {"model": str, "data": str, "baseline": dict, "final": dict, "steps": list, "notes": list,
                "artifacts": dict, "environment": dict}
    for key, kind in expected.items():
        if key in report and not isinstance(report[key], kind):
            return f"`{key}` must be a {kind.__name__}, got {type(report[key]).__name__}"
    stages = {"baseline": report["baseline"], "final": report["final"]}
    for i, step in enumerate(report["steps"]):
        if not (isinstance(step, dict) and isinstance(step.get("name"), str) and isinstance(step.get("metrics"), dict)):
            return f"steps[{i}] must be a mapping with a `name` string and a `metrics` mapping"
        stages[f"steps[{i}].metrics"] = step["metrics"]
    for where, metrics in stages.items():
        for key, kind in (("latency_ms", dict), ("metric", (dict, type(None))), ("layers", dict)):
            if key in metrics and not isinstance(metrics[key], kind):
                return f"{where}.{key} has the wrong type ({type(metrics[key]).__name__})"
        for key, value in metrics.items():
            if key.endswith(("params", "macs", "_bytes")) and (isinstance(value, bool) or not isinstance(value, (int, float))):
                return f"{where}.{key} must be a number, got {value!r:.50}"
    return None


def run_labels(run_dirs: list[str | Path]) -> list[str]:
    """Short names for runs: the folder names, or the paths as given where two folder names clash."""
    names = [Path(d).resolve().name for d in run_dirs]
    return [n if names.count(n) == 1 else str(d) for n, d in zip(names, run_dirs)]


def write_comparison(run_dirs: list[str | Path], out: str | Path, overwrite: bool = False) -> Path:
    """Write one HTML page comparing the runs in ``run_dirs`` to ``out``; returns its path.

    Every run is read before anything is written, so a bad directory leaves no page behind. An existing
    file at ``out`` is replaced only when slimkit wrote it and ``overwrite`` is set.
    """
    out = check_out_path(out, file=True)
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; name the HTML file to write, e.g. --out compare.html.")
    if not out.parent.is_dir():
        raise UserError(f"{out.parent} does not exist; create it or pass --out to a file in an existing folder.")
    if out.exists():
        if not _written_by_slimkit(out):
            raise UserError(f"--out {out} exists and slimkit did not write it; slimkit never replaces it: name a new file.")
        if not overwrite:
            raise UserError(f"--out {out} holds an earlier comparison page; pass --overwrite to replace it, or name a new file.")
    reports = [read_report(d) for d in run_dirs]
    try:
        page = render_comparison(dict(zip(run_labels(run_dirs), reports)))
    except _MALFORMED as exc:
        raise UserError(f"A report among {', '.join(map(str, run_dirs))} is malformed ({type(exc).__name__}: {exc}); "
                        "nothing was written.") from None
    write_atomic(out, page)
    return out


def _written_by_slimkit(page: Path) -> bool:
    try:
        with page.open("rb") as f:
            return GENERATOR_TAG.encode() in f.read(4096)
    except OSError:
        return False
