"""report.html: one self-contained page (inline CSS and SVG, no scripts, no network), for one run or a
comparison of several. Every string that comes from a model, recipe, layer or note is HTML-escaped."""
from __future__ import annotations

import json
from html import escape

from .charts import histogram_charts, layer_charts, roofline_chart, stage_charts, tradeoff_charts
from .table import cells, columns, latency_keys, metric_cell, peer_columns, peer_rows, ratios, stages

# The policy forbids every fetch (scripts, images, fonts, frames); inline CSS and inline SVG are all the page uses.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_CSS = """:root{color-scheme:light}body{font:15px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;
margin:0 auto;padding:24px 32px 48px;color:#1f2937;max-width:1280px;background:#f9fafb}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:32px 0 8px;padding-top:8px;border-top:1px solid #e5e7eb}
p.meta,p.note{color:#4b5563;margin:4px 0 12px}table{border-collapse:collapse;margin:8px 0 16px;background:#fff;font-size:14px}
td,th{border:1px solid #e5e7eb;padding:5px 10px;text-align:right;white-space:nowrap}td.l,th.l{text-align:left}
th{background:#f3f4f6;font-weight:600;white-space:normal}tr:nth-child(even) td{background:#fafafa}
.charts{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.charts svg{border:1px solid #e5e7eb;border-radius:6px;background:#fff;max-width:100%;height:auto}
code,pre{background:#f3f4f6;border-radius:4px;font-size:13px}code{padding:1px 5px}pre{padding:8px 12px;white-space:pre-wrap}
li{margin:2px 0}.wide{overflow-x:auto}.row{display:flex;flex-wrap:wrap;gap:0 32px}h3{font-size:16px;margin:12px 0 0}"""


def _table(head: list[str], rows: list[list[str]], text_columns: int = 1) -> str:
    """An escaped table; the first ``text_columns`` columns align left, the numbers right."""
    def cell(tag: str, i: int, value) -> str:
        return f'<{tag}{" class=l" if i < text_columns else ""}>{escape(str(value))}</{tag}>'

    out = ['<div class="wide"><table><thead><tr>', *[cell("th", i, h) for i, h in enumerate(head)], "</tr></thead><tbody>"]
    for row in rows:
        out += ["<tr>", *[cell("td", i, c) for i, c in enumerate(row)], "</tr>"]
    return "".join(out + ["</tbody></table></div>"])


def _section(title: str, intro: str, charts: list[str]) -> list[str]:
    if not charts:
        return []
    return [f"<h2>{escape(title)}</h2>", f'<p class="note">{escape(intro)}</p>' if intro else "",
            '<div class="charts">', *charts, "</div>"]


GENERATOR_TAG = '<meta name="generator" content="slimkit">'  # how slimkit recognises a page it wrote


def _page(title: str, body: list[str]) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">{GENERATOR_TAG}'
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{escape(title)}</title>'
            f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n")


def _meta(report: dict) -> str:
    env = report.get("environment", {})
    return (f'<p class="meta">slimkit {escape(str(report["slimkit_version"]))} · device <code>{escape(str(report["device"]))}</code> · '
            f"{escape(str(report['threads']))} threads · torch {escape(str(env.get('torch', '?')))} · "
            f"{escape(str(env.get('processor', '') or env.get('machine', '')))}</p>")


def render_html(report: dict) -> str:
    """The page for one run: tables, trade-off charts, stage, layer, weight and roofline charts, notes."""
    title = f"slimkit report: {report['model']} on {report['data']}"
    body = [
        f"<h1>{escape(title)}</h1>", _meta(report),
        "<h2>Every stage</h2>",
        '<p class="note">Latency is the median over repeated timed runs ± the interquartile range, in ms; all stages '
        "were timed side by side (round-robin) in one run.</p>",
        _table(columns(report), [[label, *cells(report, m)] for label, m in stages(report)]),
        "<h2>Final against baseline</h2>",
        _table(["measure", "value"], [list(r) for r in ratios(report)]),
    ]
    if report.get("peers"):
        body += ["<h2>Peers</h2>", '<p class="note">The obvious alternatives timed on the same inputs; speed-up is '
                 "the baseline's eager PyTorch median latency divided by the peer's, at the same batch size.</p>",
                 _table(peer_columns(report), peer_rows(report), text_columns=2)]
    runs = {"run": report}
    body += _section("Trade-offs", "Each point is one model; the dashed staircase joins the Pareto front, the models "
                     "no other model beats on both axes (outlined, and bold in the list).", tradeoff_charts(runs))
    body += _section("Stages", "", stage_charts(report))
    body += _section("Layers", "", layer_charts(report))
    body += _section("Weight histograms", "All weights of all weight-bearing layers, as each layer computes with "
                     "them (quantized weights dequantized), before (grey) and after every step that changed them.",
                     histogram_charts(report))
    body += _section("Roofline", "", roofline_chart(report))
    if report.get("recipe"):
        steps = [f"- {key}: {json.dumps(cfg)}" for step in report["recipe"].get("steps", []) for key, cfg in step.items()]
        body += ["<h2>Recipe</h2>", f"<pre>{escape(chr(10).join(steps))}</pre>"]
    if report.get("notes"):
        body.append("<h2>Notes</h2><ul>" + "".join(f"<li>{escape(str(n))}</li>" for n in report["notes"]) + "</ul>")
    return _page(title, body)


def render_comparison(runs: dict[str, dict]) -> str:
    """One page comparing runs (label -> report): each run's final stage side by side, and the trade-off
    charts over every run's baseline and final model."""
    keys = list(dict.fromkeys(k for r in runs.values() for k in latency_keys(r)))
    first = next(iter(runs.values()))
    metric = first["baseline"].get("metric")
    head = ["run", "model", "data", "steps", "device", "threads", *(["baseline " + metric["name"]] if metric else []),
            *columns(first, keys)[1:]]
    rows = []
    for label, r in runs.items():
        steps = " → ".join(s["name"] for s in r["steps"]) or "(none)"
        same_metric = bool(metric) and (r["baseline"].get("metric") or {}).get("name") == metric["name"]
        final = r["final"] if same_metric or not metric else r["final"] | {"metric": None}
        rows.append([label, r["model"], r["data"], steps, r["device"], r["threads"], *([metric_cell(r["baseline"].get("metric"))] if metric else []),
                     *cells(first, final, keys)])
    title = f"slimkit comparison of {len(runs)} runs"
    body = [f"<h1>{escape(title)}</h1>",
            "<h2>Final stage of every run</h2>",
            '<p class="note">Latencies come from each run\'s own timing session: compare them across runs only when '
            "the runs used the same machine, threads and load.</p>",
            _table(head, rows, text_columns=5),
            "<h2>Final against baseline, per run</h2>", '<div class="row">']
    for label, r in runs.items():
        body += ["<div>", f"<h3>{escape(label)}</h3>", _table(["measure", "value"], [list(x) for x in ratios(r)]), "</div>"]
    body.append("</div>")
    body += _section("Trade-offs", "Each run's baseline (square) and final model (circle); the dashed staircase joins "
                     "the Pareto front.", tradeoff_charts(runs, finals_only=True))
    return _page(title, body)
