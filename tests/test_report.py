from slimkit.report import render_html, render_markdown


def _metrics(size, top1, latency):
    return {"params": 100, "nonzero_params": 50, "macs": 1000, "macs_per_layer": {"fc<1>": 1000}, "size_bytes": size,
            "compressed_size_bytes": size // 2, "peak_memory_bytes": 10, "metric": {"name": "top1", "value": top1},
            "latency_ms": {"eager/bs1": {"median": latency, "iqr": 0.1}}}


def _report():
    base, final = _metrics(4000, 0.9, 2.0), _metrics(1000, 0.89, 0.5)
    return {"slimkit_version": "0", "model": "<script>alert(1)</script>", "data": "d&d", "device": "cpu", "threads": 2,
            "baseline": base, "final": final, "steps": [{"name": "export", "config": {}, "seconds": 1, "metrics": final}],
            "artifacts": {}, "notes": ["<b>note</b>"]}


def test_html_is_self_contained_escaped_and_has_charts():
    page = render_html(_report())
    assert "<script>" not in page and "&lt;script&gt;" in page and "&lt;b&gt;note" in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert page.count("<svg") == 4  # latency, size, size-vs-accuracy, MACs per layer


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
