"""LLM compression on a trained causal language model: held-out perplexity after weight-only int4 (RTN, GPTQ, AWQ,
HQQ), one-shot pruning (SparseGPT, Wanda, magnitude; 50% unstructured and 2:4) and static W8A8 with and without
SmoothQuant; then the int4 artifact beside FP32 and dynamic INT8 in onnxruntime: file size and latency per token.

    python bench/train_causal_lm.py --size cpu --minutes 60   # first: the model, in bench/results/causal_lm/model
    python bench/llm_compress.py                              # every variant and the onnxruntime table
    python bench/llm_compress.py --only w4_rtn w4_gptq onnx   # some of them (FP32 is always measured)
    python bench/llm_compress.py --smoke                      # CI: a tiny model trained for 40 steps, ~1 CPU minute

The model is ``hf:MODEL`` (a folder train_causal_lm.py wrote); its train.json names the corpus it was trained on
(bench/stdlib_corpus.py, whose fingerprint must match this Python's standard library) and its block length.
Perplexity is slimkit.measure.perplexity over every held-out block (whole modules never trained on), in PyTorch
(slimkit's simulation of the integer model). Calibration, for every method that reads data: the first 16 batches
of 8 training blocks (32,768 tokens at 256 per block) after a seeded shuffle of all of them. Each variant is one
recipe step applied with slimkit.apply:

    w4_<method>    quantize: {weights: int4, activations: none, group_size: 128, symmetric: false, method: <method>}
                   method: rtn, gptq, awq, hqq; every Linear and the embedding table in 4 bits
    <pruner>50     one_shot_prune: {method: <pruner>, sparsity: 0.5, pattern: unstructured, ignore: [model.lm_head]}
    <pruner>24     one_shot_prune: {method: <pruner>, sparsity: 0.5, pattern: "2:4", ignore: [model.lm_head]}
                   pruner: sparsegpt, wanda, magnitude; the output layer stays dense (as in the SparseGPT, Wanda papers)
    w8a8           quantize: {weights: int8, activations: int8}
    w8a8_smooth    quantize: {weights: int8, activations: int8, smooth: 0.5}

onnx: the FP32 model, its dynamic INT8 (quantize: {weights: int8, activations: dynamic}) and w4_rtn (the other
int4 methods store the same format), each written by the export step (export: {backend: onnxruntime}) once per
``--latency-tokens`` length N (128 and 1; a causal LM's logits follow its length, so the token dimension is
static); the size of each deploy/model.onnx; and the latency of batch 1 x N tokens of the three, loaded with
slimkit.load_deployed and timed round-robin in one run (slimkit.measure.latency.time_side_by_side), per token.

Checks (full run): w4_gptq's perplexity increase over FP32 <= a third of w4_rtn's; sparsegpt50's perplexity below
magnitude50's; the int4 model.onnx <= 0.3 x the FP32 one. Writes bench/results/llm_compress[_smoke].json (after
every variant, so an interrupted run keeps what it measured).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import slimkit as sk
from slimkit.devices import check_device
from slimkit.errors import UserError
from slimkit.measure import default_threads
from slimkit.measure.latency import time_side_by_side
from slimkit.pipeline import environment
from slimkit.prune.masks import sparsity

import stdlib_corpus
import train_causal_lm
from results_io import print_checks, write_results

RESULTS = Path(__file__).parent / "results"
LM_HEAD = "model.lm_head"  # the output layer inside slimkit's CausalLM wrapper
QUANTIZERS = ("rtn", "gptq", "awq", "hqq")
PRUNERS = ("sparsegpt", "wanda", "magnitude")
ONNX = "onnx"
INT8_DYNAMIC = {"quantize": {"weights": "int8", "activations": "dynamic"}}


def variants(group_size: int, calibration: dict) -> dict[str, dict]:
    """{name: {step key: options}}: every compression measured, one recipe step each."""
    int4 = {"weights": "int4", "activations": "none", "group_size": group_size, "symmetric": False, **calibration}
    prune = {"sparsity": 0.5, "ignore": [LM_HEAD], **calibration}
    return {
        **{f"w4_{m}": {"quantize": {**int4, "method": m}} for m in QUANTIZERS},
        **{f"{m}50": {"one_shot_prune": {**prune, "method": m, "pattern": "unstructured"}} for m in PRUNERS},
        **{f"{m}24": {"one_shot_prune": {**prune, "method": m, "pattern": "2:4"}} for m in PRUNERS},
        "w8a8": {"quantize": {"weights": "int8", "activations": "int8", **calibration}},
        "w8a8_smooth": {"quantize": {"weights": "int8", "activations": "int8", "smooth": 0.5, **calibration}},
    }


def step_config(step: dict) -> sk.StepConfig:
    """The config of one recipe step ``{key: options}``, checked as a recipe is (ConfigError naming the field)."""
    return sk.Recipe.from_dict({"version": 1, "steps": [step]}, source="llm_compress").steps[0]


def trained_corpus(train: dict) -> stdlib_corpus.Corpus:
    """The corpus the model was trained on, as its train.json describes it; UserError when this Python's standard
    library holds other texts."""
    recorded = train["corpus"]
    corpus = stdlib_corpus.load().limited(recorded["modules_limit"])
    if corpus.describe()["fingerprint"] != recorded["fingerprint"]:
        raise UserError(f"The model was trained on the standard library of Python {recorded['python']} "
                        f"({recorded['stdlib']}), whose texts differ from this one's; train it again here: "
                        f"{train['command']}")
    return corpus


def language_task(tokenizer, corpus: stdlib_corpus.Corpus, block: int) -> sk.Task:
    """Training blocks (shuffled with seed 0: calibration reads the first ones) and held-out blocks as a Task whose
    inputs are (input_ids, attention_mask); its metric is the logits' cosine to a reference model's."""
    train, heldout = (stdlib_corpus.token_blocks(stdlib_corpus.token_stream(tokenizer, corpus.texts(split)), block)
                      for split in stdlib_corpus.SPLITS)
    order = torch.randperm(len(train[0]), generator=torch.Generator().manual_seed(0))
    return sk.Task("stdlib-lm", train=tuple(t[order] for t in train), test=heldout, metric="cosine", n_inputs=2)


def perplexity(model: nn.Module, task: sk.Task, blocks: int | None, device: str) -> float:
    """slimkit.measure.perplexity of ``model`` on the first ``blocks`` held-out blocks (all when None)."""
    value = sk.measure.perplexity(model.to(device).eval(), train_causal_lm.batches(task.test, blocks))
    model.to("cpu")
    return value


def pruned_fraction(model: nn.Module) -> float:
    """Fraction of zero weights over the Linear layers a pruning variant prunes (all but the output layer)."""
    return sparsity({n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and n != LM_HEAD})


def measure_variant(baseline: nn.Module, step: dict, task: sk.Task, fp32: float, args) -> dict:
    """Apply ``step`` to a copy of ``baseline``; its perplexity, the increase over FP32, sparsity and seconds."""
    start = time.perf_counter()
    model = sk.apply(baseline, step_config(step), data=task, device=args.device)
    seconds = time.perf_counter() - start
    value = perplexity(model, task, args.eval_blocks, args.device)
    return {"step": step, "perplexity": value, "increase": value - fp32, "sparsity": pruned_fraction(model),
            "seconds": round(seconds, 1)}


def export_deployed(models: dict[str, nn.Module], example: tuple, folder: Path) -> dict[str, Path]:
    """Each model through the export step (backend onnxruntime) into ``folder``/NAME; {name: its deploy/ folder}."""
    # a language model's logits reach +-20: dynamic INT8 moves them by ~0.4, more than the default atol_quantized 0.15
    export = sk.Export(backend="onnxruntime", repeats=3, atol_quantized=1.0)
    for name, model in models.items():
        sk.apply(model, export, example_inputs=example, out_dir=folder / name)
    return {name: folder / name / "deploy" for name in models}


def onnx_table(baseline: nn.Module, int4_step: dict, task: sk.Task, args) -> dict:
    """Sizes of the FP32, dynamic INT8 and int4 model.onnx files, each export's largest difference from PyTorch, and
    the latency per token at batch 1 x each of ``args.latency_tokens`` in onnxruntime, timed round-robin."""
    models = {"fp32": baseline, "int8": sk.apply(baseline, step_config(INT8_DYNAMIC), data=task),
              "int4": sk.apply(baseline, step_config(int4_step), data=task)}
    table = {"steps": {"int8": INT8_DYNAMIC, "int4": int4_step}, "max_abs_diff": {}, "latency": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for tokens in args.latency_tokens:
            example, shape = tuple(t[:1, :tokens] for t in task.test), f"1x{tokens}"
            deploy_dirs = export_deployed(models, example, Path(tmp) / shape)
            deployed = {name: sk.load_deployed(folder, threads=args.threads) for name, folder in deploy_dirs.items()}
            table["max_abs_diff"][shape] = {name: d.record["max_abs_diff"] for name, d in deployed.items()}
            timings = time_side_by_side(lambda _bs, _inputs: deployed, lambda _bs: example, (1,), threads=args.threads,
                                        repeats=args.repeats)
            table["latency"][shape] = {name: {**t["bs1"], "ms_per_token": t["bs1"]["median"] / tokens}
                                       for name, t in timings.items()}
        sizes = {name: (folder / "model.onnx").stat().st_size for name, folder in deploy_dirs.items()}  # any length
    return {**table, "size_bytes": sizes, "int4_size_ratio": sizes["int4"] / sizes["fp32"],
            "int8_size_ratio": sizes["int8"] / sizes["fp32"]}


def checks(results: dict) -> dict[str, bool]:
    """The acceptance checks whose variants were measured."""
    runs, out = results["variants"], {}
    if {"w4_gptq", "w4_rtn"} <= runs.keys():
        out["gptq_increase_le_third_of_rtn"] = runs["w4_gptq"]["increase"] <= runs["w4_rtn"]["increase"] / 3
    if {"sparsegpt50", "magnitude50"} <= runs.keys():
        out["sparsegpt50_lt_magnitude50"] = runs["sparsegpt50"]["perplexity"] < runs["magnitude50"]["perplexity"]
    if ONNX in results:
        out["int4_size_ratio_le_0.3"] = results[ONNX]["int4_size_ratio"] <= 0.3
    return out


def smoke_model(folder: Path, threads: int) -> Path:
    """A tiny Llama trained for 40 steps on 20 modules (train_causal_lm.py --size tiny) in ``folder``."""
    train_causal_lm.main(["--size", "tiny", "--steps", "40", "--lr", "5e-3", "--modules", "20", "--eval-every", "1000",
                          "--threads", str(threads), "--out", str(folder)])
    return folder


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=train_causal_lm.OUT, help="folder written by train_causal_lm.py")
    parser.add_argument("--smoke", action="store_true", help="a tiny model, few steps, small settings (CI)")
    parser.add_argument("--only", nargs="+", help="variants to run (and `onnx` for the onnxruntime table)")
    parser.add_argument("--group-size", type=int, default=128, help="int4 weights per scale")
    parser.add_argument("--calibration-batches", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8, help="blocks per calibration batch")
    parser.add_argument("--eval-blocks", type=int, help="held-out blocks scored (default: all)")
    parser.add_argument("--latency-tokens", type=int, nargs="+", default=[128, 1], help="tokens per timed call")
    parser.add_argument("--repeats", type=int, default=20, help="timed samples per model and length")
    parser.add_argument("--threads", type=int, default=default_threads(), help="onnxruntime and torch threads")
    parser.add_argument("--device", default="cpu", help="where compression and perplexity run: cpu, cuda, cuda:N")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    check_device(args.device)
    if args.smoke:
        args.group_size, args.calibration_batches, args.batch_size = 32, 2, 4
        args.eval_blocks, args.latency_tokens, args.repeats = 16, [16], 3
    return args


def selected_steps(args) -> tuple[dict[str, dict], list[str]]:
    """(every variant's step, the names ``--only`` selects); each selected step is checked before any work, and an
    unknown name is a UserError."""
    steps = variants(args.group_size, {"calibration_batches": args.calibration_batches, "batch_size": args.batch_size})
    selected = args.only or [*steps, ONNX]
    unknown = sorted(set(selected) - {*steps, ONNX})
    if unknown:
        raise UserError(f"--only {' '.join(unknown)}: no such variant; choose from {', '.join([*steps, ONNX])}.")
    for name in selected:
        if name != ONNX:
            step_config(steps[name])
    return steps, selected


def main(argv: list[str] | None = None) -> dict:
    """Measure every selected variant; returns (and writes) the results."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    suffix = "_smoke" if args.smoke else ""
    steps, selected = selected_steps(args)
    model_dir = smoke_model(args.out / f"llm_compress{suffix}_model", args.threads) if args.smoke else args.model
    if not (model_dir / train_causal_lm.TRAIN_JSON).is_file():
        raise UserError(f"--model {model_dir}: no {train_causal_lm.TRAIN_JSON}; train the model first: "
                        f"python bench/train_causal_lm.py --size cpu --minutes 60")
    train = json.loads((model_dir / train_causal_lm.TRAIN_JSON).read_text())
    baseline = sk.load_model(f"hf:{model_dir}").eval()
    task = language_task(baseline.tokenizer, trained_corpus(train), train["training"]["block"])
    fp32 = perplexity(baseline, task, args.eval_blocks, args.device)
    results = {"benchmark": "llm_compress", "smoke": args.smoke, "model": str(model_dir), "train": train,
               "environment": environment(), "threads": args.threads, "device": args.device,
               "heldout_blocks": len(task.test[0][:args.eval_blocks]), "block": train["training"]["block"],
               "calibration": {"batches": args.calibration_batches, "batch_size": args.batch_size},
               "fp32_perplexity": fp32, "variants": {}}
    out = args.out / f"llm_compress{suffix}.json"
    print(f"fp32: perplexity {fp32:.3f} on {results['heldout_blocks']} held-out blocks")
    for name in (n for n in selected if n != ONNX):
        row = results["variants"][name] = measure_variant(baseline, steps[name], task, fp32, args)
        print(f"{name}: perplexity {row['perplexity']:.3f} ({row['increase']:+.3f}), sparsity {row['sparsity']:.2f}, "
              f"{row['seconds']:.0f} s", flush=True)
        write_results(out, results)
    if ONNX in selected:
        results[ONNX] = onnx_table(baseline, steps["w4_rtn"], task, args)
        print(f"onnx sizes: {results[ONNX]['size_bytes']} (int4 x{results[ONNX]['int4_size_ratio']:.3f})")
        for length, rows in results[ONNX]["latency"].items():
            print(f"  {length}: " + ", ".join(f"{n} {r['ms_per_token']:.4f} ms/token" for n, r in rows.items()))
    results["checks"] = None if args.smoke else checks(results)
    write_results(out, results)
    print_checks(results["checks"])
    return results


if __name__ == "__main__":
    main()
