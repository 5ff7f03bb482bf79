"""Faster than the tools users would pick (issue 17), for a sentence embedder: examples/minilm_fast.yaml on
all-MiniLM-L6-v2 against real peer toolkits.

    python bench/minilm_fast.py            # full: 1,000 held-out sentences, every transformer peer (~20 min on 2 cores)
    python bench/minilm_fast.py --smoke    # CI: a 1-layer BERT with MiniLM's tokenizer, 32 sentences, 2 peers, batch 1 and 4

Runs the recipe on zoo:minilm with slimkit.compress, copies the run's deploy/ to bench/results/minilm_fast/deploy/,
then times the deployed artifact (slimkit.load_deployed, fed the tokenizer's output by name) side by side with
the peers, round-robin in one run: NNCF quantize -> OpenVINO INT8 (transformer mode), OpenVINO FP32, onnxruntime
FP32, quantize_dynamic and quantize_static, and torch's dynamic INT8. Two input sets are timed:

- ``padded``: held-out sentences as the tokenizer gives them with ``padding="max_length", max_length=128`` (batch 1
  and 32 x 128 tokens, most of them padding);
- ``full``: 128 real tokens in every row (several sentences joined), where no padding can be skipped.

Every peer is scored by the mean cosine of its embeddings to the FP32 model's on the held-out sentences.
Writes bench/results/minilm_fast[_smoke].json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import torch

import slimkit as sk
from slimkit.compile.peers import build_peers, compare, deployed_peer, versus_fastest
from slimkit.data import text
from slimkit.measure import default_threads
from slimkit.pipeline import environment
from slimkit.runtime.deploy import DEPLOY_FILE

from results_io import print_checks, write_results
from text_models import minilm_and_sentences

RECIPE = Path(__file__).parent.parent / "examples" / "minilm_fast.yaml"
PEERS = ("eager", "onnxruntime", "ort_quantize_dynamic", "ort_quantize_static", "torch_dynamic_int8", "openvino",
         "nncf_openvino_int8")
TOKENS = 128


def smoke_recipe() -> sk.Recipe:
    """The recipe timed at batch 1 and 4 with 3 repeats, over eager and onnxruntime only."""
    recipe = sk.Recipe.load(RECIPE).to_dict()
    for step in recipe["steps"]:
        (key, options), = step.items()
        if key == "export":
            options.update(batch_sizes=[1, 4], repeats=3, candidates=["eager", "onnxruntime"])
    return sk.Recipe.from_dict(recipe)


def token_batches(tokenizer, sentences: list[str], rows: int) -> dict[str, tuple]:
    """{"padded": the first ``rows`` sentences padded to TOKENS, "full": rows of TOKENS real tokens each}."""
    def encode(texts):
        enc = tokenizer(texts, padding="max_length", truncation=True, max_length=TOKENS, return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]

    joined = [" ".join(sentences[i * 16:(i + 1) * 16]) for i in range(rows)]
    batches = {"padded": encode(sentences[:rows]), "full": encode(joined)}
    assert bool(batches["full"][1].all()), "the joined sentences should fill every row"
    return batches


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny BERT, 32 sentences, 2 peers, batch 1 and 4 (CI)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    threads, suffix = default_threads(), "_smoke" if args.smoke else ""
    out = Path(args.out)
    baseline, task = minilm_and_sentences(out / "minilm_fast_smoke_model", args.smoke)
    recipe = smoke_recipe() if args.smoke else sk.Recipe.load(RECIPE)
    run_dir = out / f"minilm_fast{suffix}_run"
    report = sk.compress(baseline, recipe, data=task, out_dir=run_dir, backends=(), threads=threads,
                         progress=not args.smoke, overwrite=True)
    deploy_dir = out / f"minilm_fast{suffix}" / "deploy"
    shutil.rmtree(deploy_dir, ignore_errors=True)
    shutil.copytree(run_dir / "deploy", deploy_dir)

    batch_sizes = (1, 4) if args.smoke else (1, 32)
    inputs = token_batches(baseline.tokenizer, text.sentences(), max(batch_sizes))
    include = ("eager", "onnxruntime") if args.smoke else PEERS
    results = {"benchmark": "minilm_fast", "smoke": args.smoke, "threads": threads, "environment": environment(),
               "recipe": recipe.to_dict(), "tokens": TOKENS, "test_sentences": len(task.test[0]),
               "deploy": str(deploy_dir.relative_to(out)),
               "deploy_json": json.loads((deploy_dir / DEPLOY_FILE).read_text()),
               "deploy_bytes": sum(f.stat().st_size for f in deploy_dir.iterdir() if f.name != DEPLOY_FILE)}
    with tempfile.TemporaryDirectory() as tmp:
        peers, skipped = build_peers(baseline, inputs["padded"], Path(tmp), threads, include, calibration=task)
        peers.append(deployed_peer(deploy_dir, threads))
        for name, example in inputs.items():  # scored once, on the held-out sentences
            rows = compare(baseline, peers, example, task=task if name == "padded" else None, batch_sizes=batch_sizes,
                           threads=threads, repeats=5 if args.smoke else 20, progress=not args.smoke)
            results[name] = {"peers": rows, **versus_fastest(rows)}
    ours = {r["name"]: r for r in results["padded"]["peers"]}["slimkit"]
    results.update(cosine=ours["metric"]["value"], skipped_peers=skipped, notes=report["notes"])
    results["checks"] = None if args.smoke else {
        **{f"ge_1.3x_fastest_peer_{k}": v >= 1.3 for k, v in results["padded"]["speedup_over_fastest_peer"].items()},
        "cosine_ge_0.99": results["cosine"] >= 0.99, "size_le_25MB": results["deploy_bytes"] <= 25e6}
    write_results(out / f"minilm_fast{suffix}.json", results)
    for name in inputs:
        print(f"{name} inputs:")
        for row in results[name]["peers"]:
            metric = f"  cosine {row['metric']['value']:.4f}" if row["metric"] else ""
            print(f"{row['name']:>24} {row['backend']:>22} " + " ".join(f"{k} {v['median']:.2f} ms" for k, v in row["latency_ms"].items())
                  + f"{metric}  {row['size_bytes'] / 1e6:.1f} MB")
        speedup, fastest = results[name]["speedup_over_fastest_peer"], results[name]["fastest_peer"]
        print("  slimkit vs fastest peer: " + ", ".join(f"{k} {v:.2f}x ({fastest[k]})" for k, v in speedup.items()))
    print(f"slimkit: cosine {results['cosine']:.4f}, {results['deploy_bytes'] / 1e6:.1f} MB")
    print_checks(results["checks"])
    return results


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
