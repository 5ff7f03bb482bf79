"""Dynamic INT8 of all-MiniLM-L6-v2 (issue 4): slimkit vs onnxruntime's own ``quantize_dynamic`` defaults.

slimkit stores every Linear and the word/position embedding tables as per-channel int8 (activations are
quantized at run time) and exports ONNX with int8 MatMul weights and int8 Gather tables. onnxruntime's
``quantize_dynamic`` with default options runs on the same FP32 export. Both are scored by the mean
cosine of their embeddings to the FP32 PyTorch model over the text corpus' test sentences, sized on
disk, and timed side by side in one run (round-robin, onnxruntime, batch 32 x the corpus' padded width).

    python bench/quantize_minilm.py            # 1000 test sentences, latency at batch 32
    python bench/quantize_minilm.py --smoke    # 64 sentences, latency at batch 1 (CI)

Writes bench/results/quantize_minilm[_smoke].json.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import slimkit as sk
from slimkit.data import text
from slimkit.data.task import batches
from slimkit.measure import default_threads
from slimkit.measure.latency import interleaved_timings
from slimkit.measure.metric import outputs
from slimkit.models.storage import state_bytes
from slimkit.pipeline import environment
from slimkit.quantize import Quantize, quantized_layers
from slimkit.runtime.onnx import export_onnx
from slimkit.runtime.onnxruntime import run_session, session

from results_io import write_results


def mean_cosine(sess, task, reference: torch.Tensor) -> float:
    """Mean cosine similarity of an onnxruntime session's embeddings to ``reference`` over the test split."""
    got = np.concatenate([run_session(sess, b) for b in batches(task.test[: task.n_inputs], 32)])
    return float(torch.nn.functional.cosine_similarity(torch.from_numpy(got).float(), reference, dim=-1).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="64 sentences, small latency batch (CI)")
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    from onnxruntime.quantization import quantize_dynamic

    fp32 = sk.load_model("zoo:minilm").eval()
    task = sk.load_data("text", model=fp32)
    if args.smoke:
        task = task.subset(train=0, test=64)
    # The ONNX graphs have a dynamic batch but a fixed sequence length: the corpus' padded width.
    latency_inputs = text.example_batch(fp32.tokenizer, 1 if args.smoke else 32, task.test[0].shape[1])
    reference = outputs(fp32, task)

    start = time.perf_counter()
    quant = sk.apply(sk.load_model("zoo:minilm"), Quantize(activations="dynamic"), data=task)
    seconds = time.perf_counter() - start
    eager_cosine = float(torch.nn.functional.cosine_similarity(outputs(quant, task), reference, dim=-1).mean())
    embeddings = [n for n, m in quantized_layers(quant).items() if type(m).__name__ == "QuantEmbedding"]

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = {"fp32": export_onnx(fp32, latency_inputs, tmp / "fp32.onnx")}
        files["ort_quantize_dynamic_defaults"] = tmp / "ort_default.onnx"
        quantize_dynamic(files["fp32"], files["ort_quantize_dynamic_defaults"])
        files["slimkit_dynamic_int8"] = export_onnx(quant, latency_inputs, tmp / "slimkit.onnx")
        sessions = {name: session(path, args.threads) for name, path in files.items()}
        runs = {name: {"onnx_bytes": path.stat().st_size, "cosine_to_fp32": mean_cosine(sessions[name], task, reference)}
                for name, path in files.items()}
        feeds = {name: {i.name: t.numpy() for i, t in zip(s.get_inputs(), latency_inputs)} for name, s in sessions.items()}
        latency = interleaved_timings({name: (lambda s=s, f=feeds[name]: s.run(None, f)) for name, s in sessions.items()},
                                      repeats=3 if args.smoke else 30, warmup=1 if args.smoke else 5)
    for name in runs:
        runs[name]["latency_ms"] = latency[name]
        runs[name]["latency_ratio_to_fp32"] = latency[name]["median"] / latency["fp32"]["median"]
    slim = runs["slimkit_dynamic_int8"]
    slim.update({
        "eager_cosine_to_fp32": eager_cosine, "safetensors_bytes": len(state_bytes(quant)),
        "int8_embedding_tables": embeddings, "quantize_seconds": seconds,
        "latency_ratio_to_ort_defaults": latency["slimkit_dynamic_int8"]["median"] / latency["ort_quantize_dynamic_defaults"]["median"],
    })
    results = {
        "benchmark": "quantize_minilm", "smoke": args.smoke, "environment": environment(), "threads": args.threads,
        "test_sentences": len(task.test[0]), "latency_batch": list(latency_inputs[0].shape),
        "fp32_safetensors_bytes": len(state_bytes(fp32)), "runs": runs,
        "acceptance": {"cosine_ge_0.99": slim["cosine_to_fp32"] >= 0.99, "size_le_25MB": slim["onnx_bytes"] <= 25e6,
                       "latency_no_worse_than_ort_defaults": slim["latency_ratio_to_ort_defaults"] <= 1.0},
    }
    for name, run in runs.items():
        print(f"{name}: {run['onnx_bytes'] / 1e6:.1f} MB, cosine {run['cosine_to_fp32']:.4f}, "
              f"latency x{run['latency_ratio_to_fp32']:.2f} of fp32 ({run['latency_ms']['median']:.1f} ms)")
    out = Path(args.out) / f"quantize_minilm{'_smoke' if args.smoke else ''}.json"
    write_results(out, results)


if __name__ == "__main__":
    main()
