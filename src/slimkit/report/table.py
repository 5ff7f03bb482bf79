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


def columns(report: dict, keys: list[str] | None = None) -> list[str]:
    """Header of the stage table; ``keys``: latency columns (default: the report's)."""
    metric = report["baseline"].get("metric")
    head = [metric["name"]] if metric else []
    keys = latency_keys(report) if keys is None else keys
    return ["stage", *head, "params", "non-zero", "MACs", "size", "compressed", *[f"{k} ms" for k in keys]]


def metric_cell(metric: dict | None) -> str:
    if not metric:
        return "-"
    return f"{metric['value'] * 100:.2f}%" if metric["name"] == "top1" else f"{metric['value']:.4f}"


def milliseconds(v: float) -> str:
    """3 significant digits without scientific notation: 0.452, 2.45, 141, 1820."""
    return f"{v:.0f}" if v >= 100 else f"{v:.3g}"


def latency_cell(lat: dict | None) -> str:
    return f"{milliseconds(lat['median'])} ±{milliseconds(lat['iqr'])}" if lat else "-"


def cells(report: dict, metrics: dict, keys: list[str] | None = None) -> list[str]:
    """Formatted cells for one row (without the stage label); ``keys``: latency columns (default: the report's)."""
    out = []
    if report["baseline"].get("metric"):
        out.append(metric_cell(metrics.get("metric")))
    out += [
        human_count(metrics["params"]),
        human_count(metrics["nonzero_params"]),
        human_count(metrics["macs"]),
        human_bytes(metrics["size_bytes"]),
        human_bytes(metrics["compressed_size_bytes"]),
    ]
    for key in latency_keys(report) if keys is None else keys:
        out.append(latency_cell(metrics.get("latency_ms", {}).get(key)))
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
                        f"({milliseconds(before[key]['median'])} -> {milliseconds(after[key]['median'])} ms)"))
    if b.get("metric") and f.get("metric"):
        delta = f["metric"]["value"] - b["metric"]["value"]
        scale = 100 if b["metric"]["name"] == "top1" else 1
        out.append((f"{b['metric']['name']} change", f"{delta * scale:+.2f}{' points' if scale == 100 else ''}"))
    return out


def peer_columns(report: dict) -> list[str]:
    batches = list(dict.fromkeys(k for p in report.get("peers") or [] for k in p.get("latency_ms", {})))
    metric = report["baseline"].get("metric")
    head = ["peer", "backend", *([metric["name"]] if metric else []), "size"]
    for bs in batches:
        head += [f"{bs} ms", f"{bs} speed-up"]
    return head


def peer_rows(report: dict) -> list[list[str]]:
    """One row per peer: metric, size, and per batch size the median ± IQR and the speed-up over the
    baseline's eager PyTorch latency at that batch size (a measured ratio; "-" where not timed)."""
    batches = [h[:-3] for h in peer_columns(report) if h.endswith(" ms")]
    base = report["baseline"].get("latency_ms", {})
    rows = []
    for peer in report.get("peers") or []:
        row = [peer["name"], peer["backend"]]
        if report["baseline"].get("metric"):
            row.append(metric_cell(peer.get("metric")))
        row.append(human_bytes(peer["size_bytes"]) if peer.get("size_bytes") else "-")
        for bs in batches:
            lat, ref = peer.get("latency_ms", {}).get(bs), base.get(f"eager/{bs}")
            row += [latency_cell(lat), f"{ref['median'] / lat['median']:.2f}x" if lat and ref else "-"]
        rows.append(row)
    return rows
