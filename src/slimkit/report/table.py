"""Rows of a before/after comparison, shared by the markdown, HTML and terminal renderings."""
from __future__ import annotations


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return str(n)


def human_count(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def stages(report: dict) -> list[tuple[str, dict]]:
    """(label, METRICS) for the baseline and each step."""
    rows = [("baseline", report["baseline"])]
    rows += [(f"{i + 1}. {s['name']}", s["metrics"]) for i, s in enumerate(report["steps"])]
    return rows


def latency_keys(report: dict) -> list[str]:
    return list(report["baseline"].get("latency_ms", {}))


def columns(report: dict) -> list[str]:
    metric = report["baseline"].get("metric")
    head = [metric["name"]] if metric else []
    return ["stage", *head, "params", "non-zero", "MACs", "size", "compressed", *[f"{k} ms" for k in latency_keys(report)]]


def cells(report: dict, metrics: dict) -> list[str]:
    """Formatted cells for one row (without the stage label)."""
    out = []
    if report["baseline"].get("metric"):
        m = metrics.get("metric")
        out.append(f"{m['value'] * 100:.2f}%" if m and m["name"] == "top1" else f"{m['value']:.4f}" if m else "-")
    out += [
        human_count(metrics["params"]),
        human_count(metrics["nonzero_params"]),
        human_count(metrics["macs"]),
        human_bytes(metrics["size_bytes"]),
        human_bytes(metrics["compressed_size_bytes"]),
    ]
    for key in latency_keys(report):
        lat = metrics.get("latency_ms", {}).get(key)
        out.append(f"{lat['median']:.2f} ±{lat['iqr']:.2f}" if lat else "-")
    return out


def ratios(report: dict) -> list[tuple[str, str]]:
    """Final vs baseline: size ratio, MAC ratio, latency speed-up per backend, metric delta."""
    b, f = report["baseline"], report["final"]
    out = [
        ("size (final / baseline)", f"{f['size_bytes'] / b['size_bytes']:.3f}x"),
        ("compressed size (final / baseline)", f"{f['compressed_size_bytes'] / b['compressed_size_bytes']:.3f}x"),
        ("MACs (final / baseline)", f"{f['macs'] / max(b['macs'], 1):.3f}x"),
    ]
    before, after = b["latency_ms"], f.get("latency_ms", {})
    for key in latency_keys(report):
        if key in after:
            out.append((f"speed-up {key} (baseline / final latency)", f"{before[key]['median'] / after[key]['median']:.2f}x "
                        f"({before[key]['median']:.3g} -> {after[key]['median']:.3g} ms)"))
    if b.get("metric") and f.get("metric"):
        delta = f["metric"]["value"] - b["metric"]["value"]
        scale = 100 if b["metric"]["name"] == "top1" else 1
        out.append((f"{b['metric']['name']} change", f"{delta * scale:+.2f}{' points' if scale == 100 else ''}"))
    return out
