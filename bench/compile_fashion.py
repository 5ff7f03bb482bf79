"""Compilation bench (issue 7): fold + export equivalence, `backend: auto` against every single backend it
considered (re-timed side by side in one run), and the peer comparison for fashion-cnn and all-MiniLM-L6-v2.

    python bench/compile_fashion.py            # full: 1000 test images, bs 1 and 64 (MiniLM: 1 and 32), torch.compile, zoo:minilm
    python bench/compile_fashion.py --smoke    # CI: 256 images, bs 1, no torch.compile, a 1-layer BERT in MiniLM's place

Writes bench/results/compile_fashion[_smoke].json and the peer reports (report.json/.md/.html) into
bench/results/compile_fashion[_smoke]_runs/peers-{fashion-cnn,minilm}/.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import slimkit
from slimkit.compile.backends import candidate_predictors
from slimkit.compile.onnx import Export
from slimkit.compile.peers import PEERS, peer_report
from slimkit.data import text as text_data
from slimkit.data.task import batches
from slimkit.measure import default_threads
from slimkit.measure.latency import batch_of, fixed_threads, interleaved_timings
from slimkit.pipeline import environment
from slimkit.report import write_reports
from slimkit.runtime import RUNTIMES

from results_io import write_results
from text_models import tiny_text_model


def max_diff(predict, reference, inputs: tuple, batch_size: int = 128) -> float:
    """Largest |predict - reference| over all rows of ``inputs``."""
    worst = 0.0
    with torch.inference_mode():
        for batch in batches(inputs, batch_size):
            worst = max(worst, (predict(*batch).float() - reference(*batch)).abs().max().item())
    return worst


def equivalence_and_auto(task, run_dir: Path, batch_size: int, candidates: tuple, repeats: int, threads: int) -> dict:
    """Fuse and export the baseline with backend auto (every runtime x float precision) at ``batch_size``; check
    outputs; re-time the choice."""
    original = slimkit.load_model("zoo:fashion-cnn").eval()
    x = task.example_inputs(1)
    fused = slimkit.apply(slimkit.load_model("zoo:fashion-cnn"), slimkit.Fuse(), example_inputs=x)
    cfg = Export(fp16=True, backend="auto", candidates=candidates, batch_sizes=(batch_size,), repeats=repeats)
    slimkit.apply(fused, cfg, example_inputs=x, out_dir=run_dir)
    record = json.loads((run_dir / "backend.json").read_text())
    test = task.test[: task.n_inputs]
    ort = RUNTIMES["onnxruntime"]
    diffs = {"fused_vs_original": max_diff(fused, original, test),
             "onnx_fp32_vs_original": max_diff(ort.prepare(run_dir / "model.onnx", (), threads=threads), original, test),
             "onnx_fp16_vs_original": max_diff(ort.prepare(run_dir / "model.fp16.onnx", (), threads=threads), original, test)}
    # Re-time the chosen backend against every kept candidate in one interleaved run.
    inputs = batch_of(x, batch_size)
    kept = [tuple(n.split("/")) for n, row in record["candidates"].items() if row["kept"]]
    kept, _ = candidate_predictors(fused, kept, run_dir / "model.onnx", inputs, threads)
    runners = {f"auto={record['chosen']}": (lambda p: lambda: p(*inputs))(kept[record["chosen"]]),
               **{n: (lambda p: lambda: p(*inputs))(p) for n, p in kept.items()}}
    with fixed_threads(threads):
        retimed = interleaved_timings(runners, repeats=repeats)
    auto = retimed.pop(f"auto={record['chosen']}")
    fastest = min(retimed, key=lambda n: retimed[n]["median"])
    return {"batch_size": batch_size, "max_abs_diff": diffs, "backend": record,
            "retimed_ms": {f"auto={record['chosen']}": auto, **retimed},
            "auto_over_each": {n: auto["median"] / t["median"] for n, t in retimed.items()},
            "fastest_in_retiming": fastest,
            "auto_within_noise_of_fastest": auto["median"] <= retimed[fastest]["median"] + max(auto["iqr"], retimed[fastest]["iqr"])}


def peers(name: str, model, task, out: Path, include: tuple, batch_sizes: tuple, repeats: int, threads: int) -> dict:
    report = peer_report(model, task.example_inputs(1), labels={"model": name, "data": task.name}, task=task,
                         include=include, batch_sizes=batch_sizes, threads=threads, repeats=repeats)
    out.mkdir(parents=True, exist_ok=True)
    write_reports(report, out)
    return {"report": str(out), "peers": report["peers"], "roofline": report["roofline"], "notes": report["notes"]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="small subset, batch 1, no torch.compile (CI)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    threads, suffix = default_threads(), "_smoke" if args.smoke else ""
    runs = Path(args.out) / f"compile_fashion{suffix}_runs"
    fashion = slimkit.load_data("fashion-mnist").subset(train=256, test=256 if args.smoke else 1000)
    if args.smoke:
        batch_sizes, repeats, candidates = (1,), 5, ("eager", "onnxruntime")
        text_batches, text_repeats = batch_sizes, repeats
        include = ("eager", "onnxruntime", "ort_quantize_dynamic", "ort_quantize_static", "torch_dynamic_int8")
        text_model = tiny_text_model()
        text = text_data.load(text_model.tokenizer, n=160).subset(train=64)
    else:
        batch_sizes, repeats, candidates, include = (1, 64), 30, ("eager", "compile", "onnxruntime", "openvino", "executorch"), PEERS
        # MiniLM at 32 x 128 tokens takes ~1.5 s a call in eager here: batch 32 (the reference batch) and 10 samples
        text_batches, text_repeats = (1, 32), 10
        text_model = slimkit.load_model("zoo:minilm")
        text = slimkit.load_data("text", model=text_model).subset(train=256)
    results = {"benchmark": "compile_fashion", "smoke": args.smoke, "threads": threads, "environment": environment(),
               "auto": [equivalence_and_auto(fashion, runs / f"export-bs{bs}", bs, candidates, repeats, threads)
                        for bs in batch_sizes],
               "peers": {"fashion-cnn": peers("zoo:fashion-cnn", slimkit.load_model("zoo:fashion-cnn"), fashion,
                                              runs / "peers-fashion-cnn", include, batch_sizes, repeats, threads),
                         "minilm": peers("tiny-bert (MiniLM tokenizer)" if args.smoke else "zoo:minilm", text_model, text,
                                         runs / "peers-minilm", include, text_batches, text_repeats, threads)}}
    for run in results["auto"]:
        print(f"bs{run['batch_size']}: auto chose {run['backend']['chosen']}; re-timed auto/each: "
              + ", ".join(f"{n} {r:.2f}" for n, r in run["auto_over_each"].items())
              + f"; max abs diff {run['max_abs_diff']}")
    for name, block in results["peers"].items():
        print(name + ": " + ", ".join(f"{p['name']} {p['speedup_vs_eager']['bs1']:.2f}x" for p in block["peers"]))
    out = Path(args.out) / f"compile_fashion{suffix}.json"
    write_results(out, results)
    return results


if __name__ == "__main__":
    main()
