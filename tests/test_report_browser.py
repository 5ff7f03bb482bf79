"""report.html of a real (small) run, opened in headless Chromium: every chart drawn, nothing fetched,
no console errors, and names from the model and notes shown as text, never run as markup."""
import html
import json
import os
import shutil
import subprocess
from collections import OrderedDict

import numpy
import pytest
from torch import nn

import slimkit as sk
from slimkit.pipeline import compress
from slimkit.report import render_html
from slimkit.train import FineTune, fit

pytestmark = pytest.mark.usefixtures("one_thread")

EVIL = "<script>alert(1)</script>"
NOTE = 'a note with &<>" in it'

# Injected by the test only, before the page's Content-Security-Policy, so the page itself stays script-free.
# It records every error, console error/warning and blocked fetch, then measures each chart as laid out.
PROBE = """<script>(() => {
  const seen = [];
  addEventListener("error", e => seen.push("error: " + (e.message || (e.target && (e.target.src || e.target.href)))), true);
  addEventListener("securitypolicyviolation", e => seen.push("blocked: " + e.blockedURI));
  for (const level of ["error", "warn"]) {
    const original = console[level];
    console[level] = (...args) => { seen.push(level + ": " + args.join(" ")); original.apply(console, args); };
  }
  addEventListener("load", () => {
    const charts = [...document.querySelectorAll("svg.chart")].map(svg => {
      const box = svg.getBoundingClientRect();
      return {id: svg.dataset.chart, x: box.left + scrollX, y: box.top + scrollY, width: box.width, height: box.height,
              marks: svg.querySelectorAll("rect, circle, path, line").length};
    });
    const out = document.createElement("pre");
    out.id = "probe";
    out.textContent = JSON.stringify({errors: seen, charts, scripts: document.scripts.length,
                                      height: document.documentElement.scrollHeight});
    document.body.append(out);
  });
})();</script>"""


def build_model() -> nn.Module:
    """A small CNN for 8x8 digits whose classifier has a name a browser would run if it were not escaped."""
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 16, 3, padding=1)), ("bn1", nn.BatchNorm2d(16)), ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(16, 32, 3, padding=1)), ("bn2", nn.BatchNorm2d(32)), ("relu2", nn.ReLU()),
        ("pool", nn.AdaptiveAvgPool2d(2)), ("flat", nn.Flatten()), (EVIL, nn.Linear(128, 10))]))


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    message = "headless Chromium is missing: `apt-get install chromium` (./dev test installs it when run as root)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def run_chromium(browser: str, page, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--no-first-run", "--disable-extensions", f"--user-data-dir={page.parent / 'profile'}",
                           *args, page.as_uri()], capture_output=True, text=True, timeout=60, check=True)


@pytest.fixture(scope="module")
def run(tmp_path_factory, digits):
    """A real run: the CNN trained a few epochs, channel-pruned, magnitude-pruned and quantized to int8."""
    model = sk.load_model(f"{__name__}:build_model")
    fit(model, digits, FineTune(epochs=3, lr=0.05, batch_size=64), progress=False)
    recipe = sk.Recipe.from_dict({"version": 1, "steps": [
        {"channel_prune": {"ratio": 0.5}}, {"magnitude_prune": {"sparsity": 0.5}},
        {"quantize": {"weights": "int8", "activations": "int8", "calibration_batches": 2}}]})
    out = tmp_path_factory.mktemp("run") / "run"
    report = compress(model, recipe, data=digits, out_dir=out, backends=("eager",), batch_sizes=(1,), threads=1,
                      progress=False)
    return out, report


def test_the_run_measured_layers_and_weights(run):
    _, report = run
    base, pruned, sparse, quantized = (report["baseline"], *(s["metrics"] for s in report["steps"]))
    assert report["baseline"]["metric"]["value"] > 0.85
    assert base["layers"]["conv2"] == {"weights": 16 * 32 * 9, "nonzero_weights": 16 * 32 * 9, "macs": 16 * 32 * 9 * 64}
    assert pruned["layers"]["conv2"]["weights"] == 8 * 16 * 9  # half the channels on both sides
    total = sum(r["weights"] for r in sparse["layers"].values())
    assert sum(sparse["weight_histogram"]["counts"]) == total
    assert sparse["weight_histogram"]["zeros"] == total - sum(r["nonzero_weights"] for r in sparse["layers"].values())
    assert abs(sparse["weight_histogram"]["zeros"] / total - 0.5) < 0.01
    assert quantized["weight_histogram"]["zeros"] >= sparse["weight_histogram"]["zeros"]  # int8 rounding keeps zeros
    assert len(base["weight_histogram"]["counts"]) == 60 and EVIL in base["layers"]


def test_report_renders_in_headless_chromium(run, tmp_path):
    from PIL import Image

    _, report = run
    page = render_html(report | {"notes": [*report["notes"], NOTE]})
    assert "<script" not in page.lower() and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "a note with &amp;&lt;&gt;&quot; in it" in page
    browser = chromium()
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("<head>", "<head>" + PROBE, 1))
    dom = html.unescape(run_chromium(browser, probed, "--virtual-time-budget=5000", "--dump-dom").stdout)
    probe = json.loads(dom.split('<pre id="probe">', 1)[1].split("</pre>", 1)[0])
    assert probe["errors"] == [] and probe["scripts"] == 1  # only the probe: the evil layer name stayed text
    assert EVIL in dom and NOTE in dom
    charts = {c["id"]: c for c in probe["charts"]}
    assert {"pareto-size", "pareto-latency-bs1", "stage-latency", "stage-size", "layer-macs", "layer-sparsity",
            "histogram-1", "histogram-2", "histogram-3"} <= set(charts)
    for chart in charts.values():
        assert chart["width"] > 250 and chart["height"] > 150 and chart["marks"] > 10, chart

    plain, shot = tmp_path / "report.html", tmp_path / "report.png"
    plain.write_text(page)
    height = min(int(probe["height"]) + 20, 8000)
    run_chromium(browser, plain, f"--window-size=1280,{height}", f"--screenshot={shot}")
    image = Image.open(shot).convert("L")
    assert image.size == (1280, height)
    pixels = numpy.asarray(image, dtype=numpy.float32)
    assert pixels.std() > 20  # not blank: text, bars and axes on a light page
    for chart in charts.values():  # each chart's area holds drawn ink, not only background
        area = pixels[int(chart["y"]):int(chart["y"] + chart["height"]), int(chart["x"]):int(chart["x"] + chart["width"])]
        assert (area < 200).mean() > 0.01, chart["id"]
