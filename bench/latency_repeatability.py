"""Does a latency number repeat? Measure the same model twice in one run and compare medians with the IQR.

Two ways: *interleaved* (slimkit's method: both measurements sampled round-robin, as compress does for its
side-by-side comparison) and *sequential* (one measurement after the other, to show how much the machine
drifts between them).

    python bench/latency_repeatability.py            # zoo:fashion-cnn, eager + onnxruntime, batch 1 and 64
    python bench/latency_repeatability.py --smoke    # seconds; used by the test suite

Writes bench/results/latency_repeatability.json (or --out). A pair "agrees" when the two medians differ by no
more than the larger of the two interquartile ranges.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

import slimkit as sk
from slimkit.measure import default_threads
from slimkit.measure.latency import measure_latency, measure_latency_many
from slimkit.models.spec import default_input_shape
from slimkit.pipeline import environment

from results_io import write_results


def run(model_spec: str, backends: tuple[str, ...], batch_sizes: tuple[int, ...], repeats: int) -> dict:
    model = sk.load_model(model_spec)
    inputs = (torch.randn(default_input_shape(model_spec)),)
    threads = default_threads()
    both = measure_latency_many({"first": model, "second": model}, inputs, backends, batch_sizes, threads, repeats=repeats)
    interleaved = compare(both["first"], both["second"])
    sequential = compare(measure_latency(model, inputs, backends, batch_sizes, threads, repeats=repeats),
                         measure_latency(model, inputs, backends, batch_sizes, threads, repeats=repeats))
    return {"model": model_spec, "threads": threads, "repeats": repeats, "environment": environment(),
            "results": interleaved, "all_agree": all(r["agrees"] for r in interleaved.values()),
            "sequential": sequential, "sequential_all_agree": all(r["agrees"] for r in sequential.values())}


def compare(first: dict, second: dict) -> dict:
    """Per key: both timings, the difference of medians, and whether it is within the larger IQR."""
    rows = {}
    for key, a in first.items():
        b = second[key]
        diff = abs(a["median"] - b["median"])
        rows[key] = {"first": a, "second": b, "difference_ms": diff, "agrees": diff <= max(a["iqr"], b["iqr"])}
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="zoo:fashion-cnn")
    parser.add_argument("--smoke", action="store_true", help="eager only, batch 1, 5 repeats")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "latency_repeatability.json"))
    args = parser.parse_args(argv)
    if args.smoke:
        result = run(args.model, ("eager",), (1,), 5)
    else:
        result = run(args.model, ("eager", "onnxruntime"), (1, 64), 30)
    write_results(args.out, result)
    for mode in ("results", "sequential"):
        for key, row in result[mode].items():
            print(f"{'interleaved' if mode == 'results' else 'sequential':<12} {key:<18} {row['first']['median']:8.3f} vs "
                  f"{row['second']['median']:8.3f} ms (IQR {row['first']['iqr']:.3f} / {row['second']['iqr']:.3f}) "
                  f"{'agrees' if row['agrees'] else 'DIFFERS'}")
    return result


if __name__ == "__main__":
    main()
