"""Head and FFN-neuron pruning of all-MiniLM-L6-v2 (issue 3, transformers): cosine, params, size, latency.

    python bench/prune_minilm.py [--epochs E]   # full: 1000 test sentences, fine-tuning on 3000 more
    python bench/prune_minilm.py --smoke    # a minute: 64 sentences, 2 fine-tuning batches, eager batch-1 latency

The recipe removes 50% of every layer's FFN neurons and 25% of its attention heads (ranked by L2 magnitude),
then fine-tunes towards the unpruned model's embeddings. slimkit.compress measures the baseline and every
step in one run (latency side by side, eager and onnxruntime, batch 1 and 32 x 128 tokens); the pruned
checkpoint is then reloaded and must reproduce the pruned model's embeddings. Writes
bench/results/prune_minilm.json (or --out); the run directory goes beside it, in prune_minilm_run/.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

import slimkit as sk
from slimkit.data import text
from slimkit.measure import default_threads
from slimkit.measure.metric import evaluate
from slimkit.pipeline import environment
from slimkit.prune import ChannelPrune
from slimkit.prune.transformer import encoder_layers

from results_io import write_results


TOKENS = 48  # sentences are cut to this many tokens (99% fit; the corpus pads all to its longest, 128)


def recipe(smoke: bool, epochs: int = 1) -> sk.Recipe:
    tune = sk.FineTune(epochs=epochs, lr=1e-4, batch_size=32, optimizer="adamw", weight_decay=0.01,
                       max_batches=2 if smoke else None)
    return sk.Recipe([ChannelPrune(ratio=0.5, heads=0.25, importance="l2"), tune])


def shapes(model: torch.nn.Module) -> list[dict]:
    """Attention heads and FFN neurons of every encoder layer."""
    return [{"heads": layer.attention.self.num_attention_heads, "ffn": layer.intermediate.dense.out_features}
            for layer in encoder_layers(model).values()]


def run(smoke: bool, run_dir: Path, threads: int, backends: tuple[str, ...], epochs: int = 1) -> dict:
    model = sk.load_model("zoo:minilm")
    task = text.truncated(sk.load_data("text", model=model), TOKENS)
    if smoke:
        task = task.subset(train=64, test=64)
    batch_sizes = (1,) if smoke else (1, 32)
    latency_inputs = text.example_batch(model.tokenizer, batch_size=1, length=128)
    reference = sk.load_model("zoo:minilm")
    steps = recipe(smoke, epochs)
    report = sk.compress(model, steps, data=task, out_dir=run_dir, example_inputs=latency_inputs,
                         backends=backends, batch_sizes=batch_sizes, threads=threads, progress=not smoke,
                         overwrite=True)
    reloaded = sk.load_model(str(run_dir / "checkpoint"))
    probe = task.example_inputs(16)
    base, pruned, final = report["baseline"], report["steps"][0]["metrics"], report["final"]
    return {
        "mode": "smoke" if smoke else "full",
        "model": "zoo:minilm",
        "threads": threads,
        "recipe": steps.to_dict(),
        "test_sentences": len(task.test[0]),
        "tokens_per_sentence": TOKENS,
        "cosine_after_pruning": pruned["metric"]["value"],
        "cosine_after_fine_tuning": final["metric"]["value"],
        "reloaded_cosine": evaluate(reloaded, task, reference)["value"],
        "reloaded_max_abs_diff": float((reloaded(*probe) - model(*probe)).abs().max().detach()),
        "layers": {"baseline": shapes(reference), "pruned": shapes(reloaded)},
        "params": [base["params"], final["params"]],
        "encoder_layer_params": [_layer_params(reference), _layer_params(reloaded)],
        "macs": [base["macs"], final["macs"]],
        "size_bytes": [base["size_bytes"], final["size_bytes"]],
        "latency_ms": {"baseline": base["latency_ms"], "pruned": final["latency_ms"]},
        "speedup": {k: base["latency_ms"][k]["median"] / v["median"] for k, v in final["latency_ms"].items()},
        "notes": report["notes"],
        "environment": environment(),
    }


def _layer_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for layer in encoder_layers(model).values() for p in layer.parameters())


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="64 sentences, 2 fine-tuning batches, eager batch 1")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "prune_minilm.json"))
    parser.add_argument("--backends", default=None,
                        help="comma-separated latency backends; '' = no latency (default: eager,onnxruntime; smoke: eager)")
    parser.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs over the 3000 training sentences")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: every usable core)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    threads = args.threads or (1 if args.smoke else default_threads())
    torch.set_num_threads(threads)
    backends = args.backends if args.backends is not None else "eager" if args.smoke else "eager,onnxruntime"
    result = run(args.smoke, out.parent / f"{out.stem}_run", threads, tuple(b for b in backends.split(",") if b), args.epochs)
    write_results(out, result)
    speed = ", ".join(f"{k} {v:.2f}x" for k, v in result["speedup"].items())
    print(f"minilm: cosine {result['cosine_after_pruning']:.4f} pruned, {result['cosine_after_fine_tuning']:.4f} "
          f"fine-tuned, {result['reloaded_cosine']:.4f} reloaded; params {result['params'][0]} -> "
          f"{result['params'][1]}; speedup {speed}")
    return result


if __name__ == "__main__":
    main()
