"""report.html: one self-contained page (inline CSS and SVG, no scripts, no network)."""
from __future__ import annotations

from html import escape

from .svg import grouped_bars, scatter
from .table import cells, columns, latency_keys, ratios, stages

_CSS = """body{font-family:sans-serif;margin:2em;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f3f4f6}.charts svg{margin:1em 1em 0 0;border:1px solid #eee}
code{background:#f3f4f6;padding:1px 4px}"""


def _table(head: list[str], rows: list[list[str]]) -> str:
    out = ["<table><tr>", *[f"<th>{escape(h)}</th>" for h in head], "</tr>"]
    for row in rows:
        out += ["<tr>", *[f"<td>{escape(str(c))}</td>" for c in row], "</tr>"]
    return "".join(out + ["</table>"])


def charts(report: dict) -> list[str]:
    """The SVG charts for one run: latency per stage, size against metric, MACs per layer."""
    rows = stages(report)
    labels = [label for label, _ in rows]
    out = []
    keys = latency_keys(report)
    if keys:
        base = report["baseline"]["latency_ms"]
        series = {k: [m["latency_ms"].get(k, {}).get("median", 0.0) / base[k]["median"] for _, m in rows] for k in keys}
        out.append(grouped_bars("Latency relative to the baseline (median, lower is better)", labels, series, "x baseline"))
    out.append(grouped_bars("Size per stage (MB)", labels, {
        "weights file": [m["size_bytes"] / 1e6 for _, m in rows],
        "compressed (zlib)": [m["compressed_size_bytes"] / 1e6 for _, m in rows],
    }, "MB"))
    if report["baseline"].get("metric"):
        name = report["baseline"]["metric"]["name"]
        merged: dict[tuple[float, float], list[str]] = {}  # stages that did not change size or metric share a point
        for label, m in rows:
            if m.get("metric"):
                merged.setdefault((m["size_bytes"] / 1e6, m["metric"]["value"]), []).append(label)
        points = [(", ".join(names), x, y) for (x, y), names in merged.items()]
        out.append(scatter(f"Size against {name}", points, "weights file (MB)", name))
    layers = report["baseline"].get("macs_per_layer", {})
    if layers:
        top = sorted(layers, key=layers.get, reverse=True)[:16]
        final = report["final"].get("macs_per_layer", {})
        out.append(grouped_bars("MACs per layer (millions), largest 16", top, {
            "baseline": [layers[n] / 1e6 for n in top], "final": [final.get(n, 0) / 1e6 for n in top]}, "M MACs"))
    return out


def render_html(report: dict) -> str:
    title = f"slimkit report: {report['model']} on {report['data']}"
    env = report.get("environment", {})
    body = [
        f"<h1>{escape(title)}</h1>",
        f"<p>slimkit {escape(report['slimkit_version'])}, device <code>{escape(report['device'])}</code>, "
        f"{report['threads']} threads, torch {escape(str(env.get('torch', '?')))}, {escape(str(env.get('processor', '')))}. "
        "Latency is the median over repeated timed runs, ± the interquartile range; all stages were timed "
        "side by side (round-robin) in one run.</p>",
        _table(columns(report), [[label, *cells(report, m)] for label, m in stages(report)]),
        "<h2>Final against baseline</h2>",
        _table(["", ""], [list(r) for r in ratios(report)]),
        '<h2>Charts</h2><div class="charts">', *charts(report), "</div>",
    ]
    if report.get("notes"):
        body.append("<h2>Notes</h2><ul>" + "".join(f"<li>{escape(n)}</li>" for n in report["notes"]) + "</ul>")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n")
