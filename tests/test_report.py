import json
import re

import torch

from slimkit.report import render_html, render_markdown
from slimkit.report.svg import Axis, Point, pareto_front, span, tick_format


def _metrics(size, top1, latency):
    return {"params": 100, "nonzero_params": 50, "macs": 1000, "macs_per_layer": {"fc<1>": 1000}, "size_bytes": size,
            "compressed_size_bytes": size // 2, "peak_memory_bytes": 10, "metric": {"name": "top1", "value": top1},
            "latency_ms": {"eager/bs1": {"median": latency, "iqr": 0.1}}}


def _report():
    base, final = _metrics(4000, 0.9, 2.0), _metrics(1000, 0.89, 0.5)
    return {"slimkit_version": "0", "model": "<script>alert(1)</script>", "data": "d&d", "device": "cpu", "threads": 2,
            "baseline": base, "final": final, "steps": [{"name": "export", "config": {}, "seconds": 1, "metrics": final}],
            "artifacts": {}, "notes": ["<b>note</b>"]}


def _charts(page):
    return re.findall(r'data-chart="([^"]+)"', page)


def test_html_is_self_contained_escaped_and_has_charts():
    page = render_html(_report())
    assert "<script>" not in page and "&lt;script&gt;" in page and "&lt;b&gt;note" in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    # a report without the optional per-layer keys still gets every chart its data allows
    assert _charts(page) == ["pareto-size", "pareto-latency-bs1", "stage-latency", "stage-size", "layer-macs"]


def test_pareto_front_keeps_the_models_nothing_beats():
    points = [Point(n, x, y, "s") for n, x, y in [("a", 4, 90), ("b", 1, 80), ("c", 2, 89), ("d", 3, 85), ("e", 2, 70)]]
    assert [p.label for p in pareto_front(points)] == ["b", "c", "a"]


def test_ticks_are_nice_and_told_apart():
    ticks = Axis(*span([10.85, 10.95]), 0, 100).ticks()
    assert ticks == [10.85, 10.9, 10.95] and [tick_format(ticks)(t) for t in ticks] == ["10.85", "10.90", "10.95"]
    ticks = Axis(*span([10.91]), 0, 100).ticks()  # one value: a small range around it, ticks still distinct
    assert len({tick_format(ticks)(t) for t in ticks}) == len(ticks) >= 3
    assert Axis(0.2, 30, 0, 100, log=True).ticks() == [0.2, 0.5, 1, 2, 5, 10, 20]


def test_peers_and_roofline_are_drawn_when_present():
    report = _report() | {
        "peers": [{"name": "onnxruntime quantize_dynamic", "backend": "onnxruntime", "size_bytes": 1500,
                   "latency_ms": {"bs1": {"median": 1.0, "iqr": 0.05}}, "metric": {"name": "top1", "value": 0.885}},
                  {"name": "torch.compile <inductor>", "backend": "compile", "size_bytes": 4000,
                   "latency_ms": {"bs1": {"median": 4.0, "iqr": 0.2}}, "metric": None}],
        "roofline": {"peak_gmacs": 40.0, "eager/bs1": {"gmacs": 10.0, "fraction": 0.25}}}
    page = render_html(report)
    assert _charts(page)[-1] == "roofline" and "eager/bs1 (25.0% of peak)" in page and "peak 40 GMAC/s" in page
    assert "<td class=l>onnxruntime quantize_dynamic</td><td class=l>onnxruntime</td><td>88.50%</td><td>1.50 KB</td><td>1 ±0.05</td>" \
           "<td>2.00x</td>" in page  # speed-up over the baseline's eager bs1 (2.0 ms)
    assert "torch.compile &lt;inductor&gt;" in page
    # the peer with a metric is a diamond on both trade-off charts; the one without is in the table only
    assert page.count("onnxruntime quantize_dynamic (peer)") == 6  # 2 charts x (marker tooltip, list entry, its tooltip)
    assert "torch.compile &lt;inductor&gt; (peer)" not in page


def test_layer_stats_and_histogram_count_every_weight():
    from slimkit.measure.layers import layer_stats, layer_weights, weight_histogram

    model = torch.nn.Sequential(torch.nn.Linear(40, 50), torch.nn.LayerNorm(50), torch.nn.Linear(50, 10))
    with torch.no_grad():
        model[0].weight[:, :20] = 0
        model[2].weight[0, 0] = 100.0  # an outlier: clamped into the last bin, not stretching the range
    weights = layer_weights(model)
    assert list(weights) == ["0", "2"]  # the LayerNorm's 1-D weight is not a layer weight
    stats = layer_stats(weights, {"0": 2000, "2": 500})
    assert stats == {"0": {"weights": 2000, "nonzero_weights": 1000, "macs": 2000},
                     "2": {"weights": 500, "nonzero_weights": 500, "macs": 500}}
    hist = weight_histogram(weights)
    assert len(hist["counts"]) == 60 and len(hist["edges"]) == 61 and sum(hist["counts"]) == 2500
    assert hist["zeros"] == 1000 and hist["edges"][-1] < 1 and hist["clamped"] == 2 and hist["counts"][-1] >= 2  # the 0.1% largest


def test_report_compares_runs_and_rejects_a_directory_without_a_report(tmp_path, capsys):
    from slimkit.cli import main

    for name, top1 in (("a", 0.89), ("b", 0.91)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(json.dumps(_report() | {"final": _metrics(1000, top1, 0.5)}))
    out = tmp_path / "cmp.html"
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    page = out.read_text()
    assert ("<td class=l>a</td><td class=l>&lt;script&gt;alert(1)&lt;/script&gt;</td><td class=l>d&amp;d</td>"
            "<td class=l>export</td><td class=l>cpu</td><td>2</td><td>90.00%</td><td>89.00%</td>") in page
    assert "<td class=l>b</td>" in page and _charts(page) == ["pareto-size", "pareto-latency-bs1"]
    out.unlink()
    assert main(["report", str(tmp_path / "a"), str(tmp_path), "--out", str(out)]) == 2
    assert "report.json" in capsys.readouterr().err and not out.exists()


def test_markdown_ratios():
    md = render_markdown(_report())
    assert "| size (final / baseline) | 0.250x |" in md
    assert "| speed-up eager/bs1 (baseline / final latency) | 4.00x (2 -> 0.5 ms) |" in md
    assert "| top1 change | -1.00 points |" in md


def test_steps_that_slow_a_backend_are_reported():
    from slimkit.pipeline import slower_notes

    before = {"onnxruntime/bs1": {"median": 0.70, "iqr": 0.03}, "eager/bs1": {"median": 3.0, "iqr": 0.2}}
    after = {"onnxruntime/bs1": {"median": 0.95, "iqr": 0.02}, "eager/bs1": {"median": 3.1, "iqr": 0.2}}
    notes = slower_notes("quantize", before, after)
    assert notes == ["quantize: slower on onnxruntime/bs1 than before this step (0.7 -> 0.95 ms); "
                     "this backend gains nothing in speed from it here"]
