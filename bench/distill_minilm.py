"""A 3-layer all-MiniLM-L6-v2 student distilled on the text corpus (issue 5): cosine to the teacher, size, speed.

    python bench/distill_minilm.py [--epochs E]   # full: embedding distillation on the corpus' training sentences
    python bench/distill_minilm.py --smoke    # seconds: 64 training / 32 held-out sentences, 2 batches

The student keeps every other transformer layer of zoo:minilm (layers 0, 2, 4), initialised from the
teacher's, and is trained to match the teacher's sentence embeddings (1 - cosine) on the corpus' training
sentences. Sentences are cut to their first TOKENS tokens (the corpus pads every sentence to its longest,
128 tokens, while 99% of them fit in 48: computing on the padding would cost ~2.7x the time for nothing).
Cosine to the teacher is measured on the held-out corpus sentences before and after distillation.
Latency: teacher and student timed side by side (round-robin) per backend on 128-token inputs.
Writes bench/results/distill_minilm[_smoke].json (or --out).
"""
from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
from torch.nn.functional import cosine_similarity

import slimkit as sk
from slimkit.data.text import example_batch, truncated
from slimkit.distill import Distill, shallower
from slimkit.measure import default_threads
from slimkit.measure.counts import count_params
from slimkit.measure.latency import measure_latency_many
from slimkit.measure.metric import outputs
from slimkit.measure.size import artifact_size
from slimkit.pipeline import environment

from results_io import write_results


TOKENS = 48


def config(smoke: bool, max_batches: int | None, epochs: int = 1) -> Distill:
    train = dict(epochs=1, max_batches=2) if smoke else dict(epochs=epochs, max_batches=max_batches)
    return Distill(student="shallow", embedding_loss="cosine", optimizer="adamw", lr=2e-4, weight_decay=0.01,
                   batch_size=32, **train)


def run(smoke: bool, backends: tuple[str, ...], threads: int, max_batches: int | None = None, repeats: int = 20,
        batch_sizes: tuple[int, ...] = (1, 32), held_out: int = 1000, epochs: int = 1) -> dict:
    teacher = sk.load_model("zoo:minilm")
    task = sk.load_data("text", model=teacher)
    task = task.subset(train=64, test=32) if smoke else task.subset(test=held_out)
    task = truncated(task, TOKENS)
    cfg = config(smoke, max_batches, epochs)
    target = outputs(teacher, task)
    before = cosine_similarity(outputs(shallower(teacher), task), target).mean().item()
    start = time.perf_counter()
    student = sk.apply(copy.deepcopy(teacher), cfg, data=task)
    seconds = time.perf_counter() - start
    after = cosine_similarity(outputs(student, task), target).mean().item()
    length = 16 if smoke else 128
    latency = measure_latency_many({"teacher": teacher, "student": student}, example_batch(teacher.tokenizer, 1, length),
                                   backends=backends, batch_sizes=(1,) if smoke else batch_sizes, threads=threads,
                                   repeats=repeats, warmup=1)
    speedup = {key: latency["teacher"][key]["median"] / latency["student"][key]["median"] for key in latency["student"]}
    sizes = {name: artifact_size(m)[0] for name, m in (("teacher", teacher), ("student", student))}
    params = {name: count_params(m)[0] for name, m in (("teacher", teacher), ("student", student))}
    return {
        "mode": "smoke" if smoke else "full", "model": "zoo:minilm", "threads": threads, "config": cfg.to_dict(),
        "train_sentences": len(task.train[0]), "held_out_sentences": len(task.test[0]), "tokens_per_sentence": TOKENS,
        "layers": {"teacher": len(teacher.encoder.encoder.layer), "student": len(student.encoder.encoder.layer)},
        "cosine_to_teacher": {"before_distillation": before, "after_distillation": after},
        "distill_seconds": seconds, "params": params, "size_bytes": sizes,
        "latency_ms": latency, "latency_input": f"{length} tokens", "latency_repeats": repeats, "speedup": speedup,
        "environment": environment(),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny subsets, 2 training batches, few timing repeats")
    parser.add_argument("--backends", default="eager,onnxruntime", help="comma-separated latency backends")
    parser.add_argument("--epochs", type=int, default=1, help="distillation epochs over the training sentences")
    parser.add_argument("--max-batches", type=int, default=None, help="cap on training batches per epoch (default: all)")
    parser.add_argument("--held-out", type=int, default=1000, help="held-out sentences scored (of 1000)")
    parser.add_argument("--batch", default="1,32", help="comma-separated latency batch sizes")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per model, backend and batch size")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: every usable core)")
    parser.add_argument("--out", default=None, help="default: bench/results/distill_minilm[_smoke].json")
    args = parser.parse_args(argv)
    out = Path(args.out or Path(__file__).parent / "results" / f"distill_minilm{'_smoke' if args.smoke else ''}.json")
    threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    result = run(args.smoke, tuple(args.backends.split(",")), threads, args.max_batches, 3 if args.smoke else args.repeats,
                 tuple(int(b) for b in args.batch.split(",")), args.held_out, args.epochs)
    write_results(out, result)
    cos = result["cosine_to_teacher"]
    print(f"{result['layers']['student']}-layer student: cosine to teacher {cos['before_distillation']:.4f} -> "
          f"{cos['after_distillation']:.4f}; params {result['params']['student']} / {result['params']['teacher']}")
    for key, ratio in result["speedup"].items():
        print(f"  {key}: {ratio:.2f}x faster than the teacher")
    return result


if __name__ == "__main__":
    main()
