"""Runtime x precision table (issue 17): torchvision's resnet18 and mobilenet_v2 (random weights) exported with
`backend: auto`, as float models and after slimkit's static INT8 quantization.

    python bench/runtime_table.py            # full: 224x224 images, bs 1 and 8, 10 repeats, every runtime (~20 min on 2 cores)
    python bench/runtime_table.py --smoke    # CI: 32x32 images, bs 1, 3 repeats, eager + onnxruntime + openvino

Each export verifies every runtime x precision candidate against PyTorch on random images, times the survivors
side by side and deploys the fastest; the candidates of both runs form one table per model, printed as Markdown
and written to bench/results/runtime_table[_smoke].json (the export run folders next to it).
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

import slimkit
from slimkit.compile.onnx import Export
from slimkit.data.task import Task
from slimkit.measure import default_threads
from slimkit.pipeline import environment
from slimkit.quantize.config import Quantize
from slimkit.runtime import RUNTIMES

from results_io import write_results
from vision_models import mobilenet_v2, resnet18

MODELS = {"resnet18": resnet18, "mobilenet_v2": mobilenet_v2}


def random_images(size: int, train: int, test: int) -> Task:
    """Standard-normal images (what a normalized photo looks like to the first conv): ``train`` to calibrate on,
    ``test`` to verify and time the candidates on."""
    images = torch.randn(train + test, 3, size, size, generator=torch.Generator().manual_seed(0))
    return Task("random-images", train=(images[:train],), test=(images[train:],))


def export_auto(model, task: Task, export: Export, run_dir: Path) -> dict:
    """Export ``model`` with backend auto into ``run_dir`` (emptied first): its backend.json record and the
    seconds the step took."""
    shutil.rmtree(run_dir, ignore_errors=True)
    start = time.perf_counter()
    slimkit.apply(model, export, data=task, out_dir=run_dir)
    seconds = time.perf_counter() - start
    return {**json.loads((run_dir / "backend.json").read_text()), "seconds": seconds}


def table_rows(run: str, record: dict) -> list[dict]:
    """One row per candidate of a backend auto ``record`` (a runtime left out as a whole has no precision)."""
    return [{"run": run, "candidate": name, "max_abs_diff": row.get("max_abs_diff"), "latency_ms": row.get("latency_ms", {}),
             "kept": row["kept"], "reason": row["reason"], "chosen": name == record["chosen"]}
            for name, row in record["candidates"].items()]


def markdown(name: str, block: dict, batch_sizes: tuple[int, ...]) -> str:
    """``block``'s table as Markdown: median (IQR) ms per batch size, and the choice or why a row is left out."""
    lines = [f"### {name}: {block['parameters']:,} parameters, {block['source']}", "",
             "| run | candidate | max abs diff | " + " | ".join(f"bs{bs} ms" for bs in batch_sizes) + " | auto |",
             "|---|---|---|" + "---|" * len(batch_sizes) + "---|"]
    for row in block["table"]:
        diff = "" if row["max_abs_diff"] is None else f"{row['max_abs_diff']:.1e}"
        times = [row["latency_ms"].get(f"bs{bs}") for bs in batch_sizes]
        verdict = "**chosen**" if row["chosen"] else "kept" if row["kept"] else " ".join(row["reason"].split()).replace("|", "/")
        lines.append(f"| {row['run']} | {row['candidate']} | {diff} | "
                     + " | ".join(f"{t['median']:.2f} ({t['iqr']:.2f})" if t else "" for t in times) + f" | {verdict} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="32x32 images, bs 1, 3 repeats, three runtimes (CI)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS), help="default: both")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    threads, suffix = default_threads(), "_smoke" if args.smoke else ""
    runs = Path(args.out) / f"runtime_table{suffix}_runs"
    if args.smoke:
        size, batch_sizes, repeats, candidates = 32, (1,), 3, ("eager", "onnxruntime", "openvino")
    else:
        size, batch_sizes, repeats, candidates = 224, (1, 8), 10, tuple(RUNTIMES)
    quantize = Quantize(weights="int8", activations="int8", granularity="per_channel", output_qdq=False,
                        calibration_batches=1 if args.smoke else 4, batch_size=8 if args.smoke else 16)
    task = random_images(size, train=quantize.calibration_batches * quantize.batch_size, test=max(batch_sizes))
    export = Export(backend="auto", candidates=candidates, batch_sizes=batch_sizes, repeats=repeats)
    results = {"benchmark": "runtime_table", "smoke": args.smoke, "threads": threads, "environment": environment(),
               "image_size": size, "batch_sizes": list(batch_sizes), "repeats": repeats, "candidates": list(candidates),
               "quantize": quantize.to_dict(), "models": {}}
    for name in args.models:
        torch.manual_seed(0)
        model, source = MODELS[name]()
        quantized = slimkit.apply(model, quantize, data=task)
        records = {"float": export_auto(model, task, export, runs / f"{name}-float"),
                   "int8": export_auto(quantized, task, export, runs / f"{name}-int8")}
        results["models"][name] = {
            "source": source, "parameters": sum(p.numel() for p in model.parameters()),
            "runs": {run: {k: v for k, v in r.items() if k != "candidates"} for run, r in records.items()},
            "table": [row for run, record in records.items() for row in table_rows(run, record)]}
    results["markdown"] = "\n\n".join(markdown(n, b, batch_sizes) for n, b in results["models"].items())
    print(results["markdown"])
    write_results(Path(args.out) / f"runtime_table{suffix}.json", results)
    return results


if __name__ == "__main__":
    main()
