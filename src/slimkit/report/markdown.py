"""report.md: the comparison table and ratios as GitHub-flavoured markdown."""
from __future__ import annotations

from .table import cells, columns, ratios, stages


def render_markdown(report: dict) -> str:
    head = columns(report)
    lines = [
        f"# slimkit report: {report['model']} on {report['data']}",
        "",
        f"slimkit {report['slimkit_version']}, device {report['device']}, {report['threads']} threads, "
        f"torch {report.get('environment', {}).get('torch', '?')}. Latency: median ± IQR over repeats, in ms, every stage timed side by side in one run.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    for label, metrics in stages(report):
        lines.append("| " + " | ".join([label, *cells(report, metrics)]) + " |")
    lines += ["", "| final vs baseline | |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in ratios(report)]
    if report.get("notes"):
        lines += ["", "## Notes", *[f"- {n}" for n in report["notes"]]]
    return "\n".join(lines) + "\n"
