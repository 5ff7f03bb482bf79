"""Post-training quantization of the shipped Fashion-MNIST baseline: accuracy, size and latency per backend.

    python bench/quantize_fashion.py            # full: W8A8 per-channel PTQ and W4 weight-only, full test set
    python bench/quantize_fashion.py --smoke    # seconds: a small subset, one config, batch 1

Writes bench/results/quantize_fashion[_smoke].json and prints one summary line per config.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import slimkit
from slimkit.measure import default_threads
from slimkit.measure.latency import measure_latency_many
from slimkit.pipeline import environment
from slimkit.quantize import Quantize

from results_io import write_results

BACKENDS = ("eager", "onnxruntime")


def configs(smoke: bool) -> dict[str, Quantize]:
    batches = 2 if smoke else 32
    runs = {"w8a8_per_channel": Quantize(weights="int8", activations="int8", calibration_batches=batches)}
    if not smoke:
        runs["w8a8_per_channel_mse"] = Quantize(weights="int8", activations="int8", observer="mse", calibration_batches=batches)
        # stem.0 has 9 weights per channel, which groups of 32 do not divide: it stays float (results up to
        # 2026-11-29 were measured when such layers fell back to one scale per channel)
        runs["w4_group32_weight_only"] = Quantize(weights="int4", activations="none", group_size=32, weight_observer="mse",
                                                  exclude=("stem.0",))
    return runs


def summarize(baseline: dict, quantized: dict) -> dict:
    """Size ratio, latency ratio per backend (quantized / FP32; < 1 is faster) and top-1 delta in points."""
    latency = {key: quantized["latency_ms"][key]["median"] / value["median"] for key, value in baseline["latency_ms"].items()}
    return {
        "size_ratio": quantized["size_bytes"] / baseline["size_bytes"],
        "latency_ratio": latency,
        "faster_than_fp32": {key: ratio < 1 for key, ratio in latency.items()},
        "top1_delta_points": 100 * (quantized["metric"]["value"] - baseline["metric"]["value"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny subset and few repeats (CI)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    task = slimkit.load_data("fashion-mnist")
    if args.smoke:
        task = task.subset(train=256, test=256)
    batch_sizes, repeats = ((1,), 3) if args.smoke else ((1, 64), 30)
    fp32 = slimkit.load_model("zoo:fashion-cnn")
    # Accuracy on the runtime that deploys the model: onnxruntime's integer kernels for int8.
    options = dict(backends=(), data=task, metric_backend="onnxruntime")
    baseline = slimkit.measure(fp32, **options)
    models, runs = {"baseline": fp32}, {}
    for name, cfg in configs(args.smoke).items():
        start = time.perf_counter()
        models[name] = slimkit.apply(slimkit.load_model("zoo:fashion-cnn"), cfg, data=task)
        runs[name] = (cfg, time.perf_counter() - start, slimkit.measure(models[name], **options))
    # Latency of every model timed side by side (round-robin), so ratios are not machine drift.
    timings = measure_latency_many(models, task.example_inputs(1), BACKENDS, batch_sizes, default_threads(), repeats=repeats)
    baseline["latency_ms"] = timings["baseline"]
    results = {"benchmark": "quantize_fashion", "smoke": args.smoke, "environment": environment(),
               "baseline": baseline, "runs": {}}
    for name, (cfg, seconds, metrics) in runs.items():
        metrics["latency_ms"] = timings[name]
        summary = summarize(baseline, metrics)
        results["runs"][name] = {"config": cfg.to_dict(), "quantize_seconds": seconds, "metrics": metrics, "summary": summary}
        latency = ", ".join(f"{k} x{v:.2f}" for k, v in summary["latency_ratio"].items())
        print(f"{name}: size x{summary['size_ratio']:.3f}, latency {latency}, top-1 {summary['top1_delta_points']:+.2f} pt")
    out = Path(args.out) / f"quantize_fashion{'_smoke' if args.smoke else ''}.json"
    write_results(out, results)


if __name__ == "__main__":
    main()
