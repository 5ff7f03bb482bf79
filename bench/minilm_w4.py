"""Weight-only int4 on a sentence embedder (issue 16): all-MiniLM-L6-v2's Linear layers at 4 bits in groups of 128,
rounded by slimkit's round-to-nearest, GPTQ, AWQ and HQQ, against onnxruntime's own int4 quantizer
(``MatMulNBitsQuantizer``), each scored by the mean cosine of its embeddings to the FP32 model's on held-out sentences.

    python bench/minilm_w4.py            # full: 1,000 held-out sentences (~10 min on 2 cores)
    python bench/minilm_w4.py --smoke    # CI: a 1-layer BERT with MiniLM's tokenizer, 32 sentences

slimkit quantizes the Linear layers only (the word embeddings stay float), calibrating GPTQ and AWQ on 16 batches of
32 training sentences. onnxruntime's quantizer runs twice: as its documentation shows (MatMul and Gather weights,
symmetric), and on the MatMul weights only, which is what slimkit quantizes. Writes bench/results/minilm_w4[_smoke].json.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import slimkit as sk
from slimkit.compile.peers import build_peers, compare
from slimkit.compile.peers.builtin import ort_matmul_nbits
from slimkit.measure import default_threads
from slimkit.measure.metric import evaluate
from slimkit.pipeline import environment

from results_io import print_checks, write_results
from text_models import minilm_and_sentences

METHODS = ("rtn", "gptq", "awq", "hqq")
GROUP = 128


def quantizer(method: str, symmetric: bool, group: int) -> sk.Quantize:
    """The W4 weight-only step for ``method`` (Linear layers only)."""
    return sk.Quantize(weights="int4", activations="none", group_size=group, symmetric=symmetric, method=method,
                       calibration_batches=16, batch_size=32, exclude=("*embeddings*",))


def slimkit_rows(baseline, task, group: int) -> list[dict]:
    """Cosine of each method, asymmetric and (but HQQ, which optimises zero points) symmetric."""
    rows = []
    for symmetric in (False, True):
        for method in METHODS if not symmetric else ("rtn", "gptq", "awq"):
            model = sk.apply(baseline, quantizer(method, symmetric, group), data=task)
            cosine = evaluate(model, task, reference=baseline)["value"]
            rows.append({"name": f"slimkit_{method}_{'sym' if symmetric else 'asym'}", "method": method,
                         "symmetric": symmetric, "cosine": cosine})
            print(f"{rows[-1]['name']:>24}  cosine {cosine:.5f}")
    return rows


def onnxruntime_rows(baseline, task, threads: int) -> list[dict]:
    """onnxruntime's int4 quantizer as documented, and on MatMul weights only; scored like slimkit's."""
    example = task.example_inputs(1)
    with tempfile.TemporaryDirectory() as tmp:
        peers, skipped = build_peers(baseline, example, Path(tmp), threads, ("onnxruntime", "ort_matmul_nbits"))
        if skipped:
            raise SystemExit(f"onnxruntime peers could not run: {skipped}")
        workdir = Path(tmp) / "matmul_only"
        workdir.mkdir()
        matmul_only = ort_matmul_nbits(Path(tmp) / "fp32.onnx", workdir, threads, op_types=("MatMul",))
        matmul_only.name = "ort_matmul_nbits_matmul_only"
        rows = compare(baseline, peers + [matmul_only], example, task=task, batch_sizes=(1,), threads=threads, repeats=3)
    out = [{"name": r["name"], "cosine": r["metric"]["value"], "size_bytes": r["size_bytes"]} for r in rows]
    for row in out:
        print(f"{row['name']:>24}  cosine {row['cosine']:.5f}  {row['size_bytes'] / 1e6:.1f} MB")
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny BERT and 32 sentences (CI)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    out, threads, suffix = Path(args.out), default_threads(), "_smoke" if args.smoke else ""
    baseline, task = minilm_and_sentences(out / "minilm_w4_smoke_model", args.smoke)
    group = 16 if args.smoke else GROUP
    ours, theirs = slimkit_rows(baseline, task, group), onnxruntime_rows(baseline, task, threads)
    best = {r["method"]: max(x["cosine"] for x in ours if x["method"] == r["method"]) for r in ours}
    peer = {r["name"]: r["cosine"] for r in theirs}
    results = {"benchmark": "minilm_w4", "smoke": args.smoke, "threads": threads, "environment": environment(),
               "group_size": group, "test_sentences": len(task.test[0]), "slimkit": ours, "onnxruntime": theirs,
               "best_cosine_by_method": best}
    results["checks"] = None if args.smoke else {
        **{f"{m}_above_rtn": best[m] > best["rtn"] for m in ("gptq", "awq")},
        **{f"{m}_above_{p}": best[m] > peer[p] for m in ("gptq", "awq")
           for p in ("ort_matmul_nbits", "ort_matmul_nbits_matmul_only")}}
    write_results(out / f"minilm_w4{suffix}.json", results)
    print_checks(results["checks"])
    return results


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
