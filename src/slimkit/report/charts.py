"""Which charts a report gets, and the numbers behind each: trade-offs, stages, layers, weights, roofline.

Every function takes report dicts (report.json, schema in docs/report.md) and returns SVG strings; a chart whose data
the report lacks (older reports, runs without a metric, no peers or roofline) is left out silently.
Optional report keys read here: ``peers``, ``roofline`` and ``sensitivity`` (``{"metric": str,
"layers": {name: metric drop}}``) at the top level; ``layers`` and ``weight_histogram`` in METRICS.
"""
from __future__ import annotations

import re

from .svg import PALETTE, Point, bars, histogram, pareto, scale_for
from .table import latency_keys, stages

MAX_LAYERS = 24  # per-layer charts show at most this many layers (the ones with the most MACs/weights)


def metric_axis(report: dict) -> tuple[str, float] | None:
    """(axis label, scale) for the report's task metric, e.g. ("top-1 accuracy (%)", 100); None without one.

    Either metric is at most 1 before scaling (top-1 is a fraction, cosine a similarity)."""
    metric = report["baseline"].get("metric")
    if not metric:
        return None
    return ("top-1 accuracy (%)", 100.0) if metric["name"] == "top1" else (f"{metric['name']} (higher is better)", 1.0)


def batch_sizes(reports: list[dict]) -> list[str]:
    """Batch-size suffixes ("bs1", "bs64") timed in any stage or peer, in first-seen order."""
    keys = [k.rsplit("/", 1)[-1] for r in reports for k in latency_keys(r)]
    keys += [k for r in reports for p in r.get("peers") or [] for k in p.get("latency_ms", {})]
    return sorted(dict.fromkeys(keys), key=lambda k: int(re.sub(r"\D", "", k) or 0))


def size_unit(runs: dict[str, dict]) -> tuple[float, str]:
    """(bytes per unit, unit): KB when every model is under a megabyte, else MB."""
    sizes = [m["size_bytes"] for r in runs.values() for _, m in stages(r)]
    sizes += [p.get("size_bytes") or 0 for r in runs.values() for p in r.get("peers") or []]
    return (1e3, "KB") if max(sizes) < 1e6 else (1e6, "MB")


def tradeoff_points(runs: dict[str, dict], batch: str | None, *, finals_only: bool = False) -> list[Point]:
    """Points for a size–metric (``batch`` None, size in :func:`size_unit`) or latency–metric chart
    (median ms at ``batch``).

    One run: every stage (per backend for latency, coloured by backend) and every peer (diamonds). Several
    runs (``finals_only``): each run's baseline (square) and final stage (circle), coloured by run.
    Stages that share size and metric (e.g. an export after quantization) share one point.
    """
    first = next(iter(runs.values()))
    axis = metric_axis(first)
    name = first["baseline"]["metric"]["name"] if axis else None
    per_unit = size_unit(runs)[0]
    points: dict[tuple, Point] = {}

    def add(label: str, x: float | None, metric: dict | None, series: str, shape: str) -> None:
        if x is None or not metric or metric["name"] != name:
            return
        key = (x, metric["value"], series, shape)
        if key in points:
            points[key].label += f", {label}"
        else:
            points[key] = Point(label, x, metric["value"] * axis[1], series, shape)

    for run, report in runs.items():
        rows = stages(report)
        if finals_only:
            rows = [rows[0], (f"final ({report['steps'][-1]['name']})" if report["steps"] else "final", report["final"])]
        prefix = f"{run}: " if finals_only else ""
        for i, (label, m) in enumerate(rows):
            series, shape = (run, "square" if i == 0 else "circle") if finals_only else ("stages", "circle")
            if batch is None:
                add(prefix + label, m["size_bytes"] / per_unit, m.get("metric"), series, shape)
                continue
            for key, lat in m.get("latency_ms", {}).items():
                backend, bs = key.rsplit("/", 1)
                if bs == batch:
                    add(f"{prefix}{label} · {backend}", lat["median"], m.get("metric"), run if finals_only else backend, shape)
        for peer in [] if finals_only else report.get("peers") or []:
            lat = peer.get("latency_ms", {}).get(batch) if batch else None
            x = peer.get("size_bytes", 0) / per_unit if batch is None else lat and lat["median"]
            add(f"{peer['name']} (peer)", x or None, peer.get("metric"), "peers" if batch is None else peer["backend"], "diamond")
    return list(points.values())


def tradeoff_charts(runs: dict[str, dict], *, finals_only: bool = False) -> list[str]:
    """Size–metric and, per batch size, latency–metric Pareto charts over every stage and peer."""
    first = next(iter(runs.values()))
    axis = metric_axis(first)
    if axis is None:
        return []
    shapes = {"square": "baseline", "circle": "final"} if finals_only else (
        {"circle": "stage", "diamond": "peer"} if any(r.get("peers") for r in runs.values()) else None)
    out = []
    points = tradeoff_points(runs, None, finals_only=finals_only)
    if len(points) > 1:
        out.append(pareto("pareto-size", f"Size against {axis[0].split(' (')[0]}", points,
                          f"weights file ({size_unit(runs)[1]})", axis[0], y_max=axis[1],
                          subtitle="bytes of the deployable weights file; top-left is better", shapes=shapes))
    for batch in batch_sizes(list(runs.values())):
        points = tradeoff_points(runs, batch, finals_only=finals_only)
        if len(points) > 1:
            out.append(pareto(f"pareto-latency-{batch}", f"Latency against {axis[0].split(' (')[0]}, batch {batch[2:]}",
                              points, f"median latency per batch of {batch[2:]} (ms)", axis[0], shapes=shapes, y_max=axis[1],
                              subtitle=("each run timed in its own session" if finals_only else
                                        f"threads: {first['threads']}, device: {first['device']}") + "; top-left is better"))
    return out


def stage_charts(report: dict) -> list[str]:
    """Latency of every stage relative to the baseline, per backend and batch size; size per stage."""
    rows = stages(report)
    labels = [label for label, _ in rows]
    out = []
    keys = latency_keys(report)
    if keys:
        base = report["baseline"]["latency_ms"]
        series = {k: [m["latency_ms"][k]["median"] / base[k]["median"] if k in m.get("latency_ms", {}) else None
                      for _, m in rows] for k in keys}
        out.append(bars("stage-latency", "Latency per stage relative to the baseline", labels, series,
                        "× baseline median latency (lower is faster)", reference=(1.0, "baseline"),
                        subtitle="median of repeated timings; every stage timed side by side in one run"))
    per_unit, unit = size_unit({"run": report})
    out.append(bars("stage-size", "Size per stage", labels, {
        "weights file": [m["size_bytes"] / per_unit for _, m in rows],
        "after zlib": [m["compressed_size_bytes"] / per_unit for _, m in rows]}, unit,
        subtitle="deployable weights file, and what DEFLATE makes of it (zeros and shared values compress)"))
    return out


def _layer_names(tables: list[dict[str, float]], key) -> list[str]:
    """Layer names in model order (first table first), at most MAX_LAYERS: the largest by ``key``."""
    names = list(dict.fromkeys(n for t in tables for n in t))
    if len(names) > MAX_LAYERS:
        keep = set(sorted(names, key=key, reverse=True)[:MAX_LAYERS])
        names = [n for n in names if n in keep]
    return names


def layer_charts(report: dict) -> list[str]:
    """MACs per layer (baseline and final), per-layer sparsity after each pruning stage, and sensitivity."""
    out = []
    base, final = report["baseline"], report["final"]
    before = {n: r["macs"] for n, r in base.get("layers", {}).items() if "macs" in r} or base.get("macs_per_layer", {})
    after = {n: r["macs"] for n, r in final.get("layers", {}).items() if "macs" in r} or final.get("macs_per_layer", {})
    if before:
        names = _layer_names([before, after], lambda n: max(before.get(n, 0), after.get(n, 0)))
        subtitle = "weight-bearing layers in model order" + (f", the {MAX_LAYERS} with the most MACs" if len(before) > MAX_LAYERS else "")
        scale, unit = scale_for([*before.values(), *after.values()], "MACs per sample")
        out.append(bars("layer-macs", "MACs per layer, baseline and final", names, {
            "baseline": [before[n] / scale if n in before else None for n in names],
            "final": [after[n] / scale if n in after else None for n in names]}, unit, subtitle=subtitle))
    dense = base.get("layers")
    if dense:
        names = _layer_names([dense], lambda n: dense[n]["weights"])
        series: dict[str, list] = {}
        for label, m in stages(report)[1:]:
            layers = m.get("layers", {})
            values = [1 - layers[n]["nonzero_weights"] / dense[n]["weights"] if n in layers else None for n in names]
            previous = next(reversed(series.values()), None)
            if any(v for v in values) and (previous is None or _differs(values, previous)):
                series[label] = values
        if series:
            series = dict(list(series.items())[-len(PALETTE):])
            out.append(bars("layer-sparsity", "Per-layer sparsity", names, series, "of the baseline layer's weights",
                            percent=True, subtitle="share of each layer's baseline weights removed or zero, after each step that changed it"))
    sensitivity = report.get("sensitivity")
    if sensitivity and sensitivity.get("layers"):
        out.append(_sensitivity_chart(sensitivity))
    return out


def _sensitivity_chart(sensitivity: dict) -> str:
    """``{"metric": label, "layers": {name: drop}}``, or ``{name: {ratio: drop}}`` for one series per pruning ratio."""
    layers = {n: v if isinstance(v, dict) else {"": v} for n, v in sensitivity["layers"].items()}
    ratios = list(dict.fromkeys(r for v in layers.values() for r in v))
    names = _layer_names([layers], lambda n: max(abs(v) for v in layers[n].values()))
    unit = str(sensitivity.get("metric", "metric lost"))
    series = {(f"pruned {float(r):.0%}" if r != "" else unit): [layers[n].get(r) for n in names] for r in ratios}
    return bars("layer-sensitivity", "Per-layer sensitivity", names, series, unit,
                subtitle="metric lost when only this layer is compressed, every other layer left whole")


def _differs(a: list, b: list, tolerance: float = 0.005) -> bool:
    return any((x is None) != (y is None) or (x is not None and abs(x - y) > tolerance) for x, y in zip(a, b))


def histogram_charts(report: dict) -> list[str]:
    """For every step that changed the weights: the histogram of all weights before and after it."""
    out = []
    rows = stages(report)
    for (_, before), (label, after) in zip(rows, rows[1:]):
        old, new = before.get("weight_histogram"), after.get("weight_histogram")
        if not new or (old and old["counts"] == new["counts"] and old["edges"] == new["edges"]):
            continue
        total = sum(new["counts"]) or 1
        zeros = f"zeros {old['zeros'] / (sum(old['counts']) or 1):.1%} → {new['zeros'] / total:.1%}" if old else \
            f"zeros {new['zeros'] / total:.1%}"
        out.append(histogram(f"histogram-{len(out) + 1}", f"{label}: weights before and after", new, old,
                             tint=PALETTE[len(out) % len(PALETTE)],
                             subtitle=f"{zeros} · {new['clamped']} beyond ±{new['edges'][-1]:.3g} in the end bins"))
    return out


def roofline_chart(report: dict) -> list[str]:
    """Achieved GMAC/s per backend and batch size against the machine's measured peak."""
    roof = report.get("roofline")
    if not roof or not roof.get("peak_gmacs"):
        return []
    keys = [k for k in roof if k != "peak_gmacs" and isinstance(roof[k], dict)]
    if not keys:
        return []
    labels = [f"{k} ({roof[k]['fraction']:.1%} of peak)" for k in keys]
    return [bars("roofline", "Roofline: achieved throughput against the measured peak", labels,
                 {"achieved": [roof[k]["gmacs"] for k in keys]}, "GMAC/s (MACs / median latency)",
                 reference=(roof["peak_gmacs"], f"peak {roof['peak_gmacs']:.3g} GMAC/s (calibration matmul)"),
                 subtitle="how close each backend runs to what this machine can do")]
