"""Train the causal language model that bench/llm_compress.py compresses: a Llama-style decoder (transformers'
LlamaForCausalLM: grouped-query attention, RMSNorm, SwiGLU, rotary positions) on the Python standard library's own
source files, whole modules held out for perplexity (bench/stdlib_corpus.py), with its own byte-level BPE tokenizer.

    python bench/train_causal_lm.py --size cpu --minutes 60                  # 5.1M parameters, on the CPU
    python bench/train_causal_lm.py --size gpu --steps 1500 --device cuda    # 12.6M parameters, on a GPU
    python bench/train_causal_lm.py --size tiny --steps 3 --modules 20 --out /tmp/lm   # seconds (CI)

The corpus is small (2.7M training tokens on CPython 3.11: 330 steps of the cpu preset, 165 of the gpu one, read it
once), so a long run overfits: 1,500 gpu steps are 9 passes over it. train.json records the passes (``epochs``)
and the held-out loss every ``--eval-every`` steps, which shows when more training stops helping.

Presets (``--size``; all with 256-token positions, untied input and output embeddings):

    tiny  hidden 32,  2 layers, 4 heads, 2 key/value heads, FFN 64,   vocabulary 512,  batch 8
    cpu   hidden 256, 4 layers, 8 heads, 2 key/value heads, FFN 768,  vocabulary 4096, batch 32
    gpu   hidden 384, 6 layers, 6 heads, 2 key/value heads, FFN 1024, vocabulary 4096, batch 64

Training: AdamW (betas 0.9/0.95, weight decay 0.1 on weight matrices), the learning rate warmed up linearly over the
first 2% of the budget, then cosine-decayed to 10% of its peak at the end of the budget (``--steps``, or
``--minutes`` of wall clock, whichever ends first); gradients clipped at norm 1; batches of random ``--block``-token
windows of the training modules' token stream; bf16 autocast on CUDA. The held-out loss on the first
``--eval-blocks`` held-out blocks is logged every ``--eval-every`` steps; the final one covers every held-out block.
(slimkit.fit trains whole epochs of fixed batches; this run is budgeted in minutes.)

Writes OUT (default bench/results/causal_lm/model): config.json and model.safetensors (save_pretrained), the
tokenizer (tokenizer.json, tokenizer_config.json), and train.json: the config, steps, minutes, final training and
held-out loss and perplexity, the loss log, the command line, the corpus (with its fingerprint) and the environment.
``slimkit.load_model("hf:OUT")`` loads it as a causal LM that ``slimkit.measure.perplexity`` scores.
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import shutil
import sys
import time
from pathlib import Path

import torch
import transformers
from torch import nn
from tqdm.auto import tqdm

from slimkit.devices import check_device
from slimkit.errors import UserError
from slimkit.measure import default_threads, next_token_loss
from slimkit.models.hf import CausalLM
from slimkit.pipeline import environment

import stdlib_corpus

OUT = Path(__file__).parent / "results" / "causal_lm" / "model"
TRAIN_JSON = "train.json"
SIZES = {
    "tiny": {"model": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           intermediate_size=64), "vocab": 512, "batch": 8},
    "cpu": {"model": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
                          intermediate_size=768), "vocab": 4096, "batch": 32},
    "gpu": {"model": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=6, num_key_value_heads=2,
                          intermediate_size=1024), "vocab": 4096, "batch": 64},
}
WARMUP, FINAL_LR = 0.02, 0.1  # fractions of the budget and of the peak learning rate


def build_model(size: str, tokenizer, block: int) -> transformers.LlamaForCausalLM:
    """A new LlamaForCausalLM of preset ``size`` for ``tokenizer``'s vocabulary and ``block`` positions."""
    eos = tokenizer.eos_token_id
    config = transformers.LlamaConfig(**SIZES[size]["model"], vocab_size=len(tokenizer), max_position_embeddings=block,
                                      tie_word_embeddings=False, bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    return transformers.LlamaForCausalLM(config)


def learning_rate(peak: float, progress: float) -> float:
    """Linear warm-up over the first WARMUP of the budget, then cosine decay from ``peak`` to FINAL_LR x ``peak``."""
    if progress < WARMUP:
        return peak * progress / WARMUP
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - WARMUP) / (1 - WARMUP))))
    return peak * (FINAL_LR + (1 - FINAL_LR) * cosine)


def optimizer(model: nn.Module, lr: float) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only (not on norms)."""
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    others = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": matrices, "weight_decay": 0.1}, {"params": others, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.95))


def windows(stream: torch.Tensor, batch: int, block: int, generator: torch.Generator) -> torch.Tensor:
    """``batch`` random windows of ``block`` consecutive tokens of ``stream``, as (batch, block) token ids."""
    starts = torch.randint(0, len(stream) - block + 1, (batch, 1), generator=generator)
    return stream[starts + torch.arange(block)]


def batches(blocks: tuple[torch.Tensor, torch.Tensor], count: int | None, size: int = 16) -> list[tuple]:
    """The first ``count`` blocks (all when None) as (input_ids, attention_mask) batches of ``size`` rows."""
    ids, mask = (t[:count] for t in blocks)
    return [(ids[i:i + size], mask[i:i + size]) for i in range(0, len(ids), size)]


def train(lm: CausalLM, stream: torch.Tensor, heldout: tuple, args, device: str) -> dict:
    """Train ``lm`` in place on windows of ``stream`` for the budget of ``args``; returns the steps, minutes, the
    loss log and the mean training loss of the last 50 steps."""
    generator = torch.Generator().manual_seed(args.seed)
    opt = optimizer(lm, args.lr)
    autocast = torch.autocast("cuda", torch.bfloat16, enabled=device.startswith("cuda"))
    budget = args.minutes * 60 if args.minutes else math.inf
    start, step, losses, log = time.perf_counter(), 0, [], []
    bar = tqdm(total=args.steps, desc=f"train {args.size}", unit="step")
    while (progress := max(step / args.steps if args.steps else 0.0, (time.perf_counter() - start) / budget)) < 1:
        for group in opt.param_groups:
            group["lr"] = learning_rate(args.lr, progress)
        ids = windows(stream, args.batch, args.block, generator).to(device)
        with autocast:
            logits = lm(ids, torch.ones_like(ids))
        loss = nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
        opt.step()
        step += 1
        losses.append(loss.item())
        bar.update()
        bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{opt.param_groups[0]['lr']:.2e}")
        if step % args.eval_every == 0:
            log.append({"step": step, "minutes": round((time.perf_counter() - start) / 60, 2),
                        "train_loss": recent_mean(losses),
                        "heldout_loss": evaluate(lm, batches(heldout, args.eval_blocks))})
            bar.write(f"step {step}: held-out loss {log[-1]['heldout_loss']:.4f}")
    bar.close()
    return {"steps": step, "minutes": round((time.perf_counter() - start) / 60, 2), "log": log,
            "train_loss": recent_mean(losses)}


def recent_mean(losses: list[float], last: int = 50) -> float:
    """The mean of the ``last`` losses (of all when fewer)."""
    return sum(losses[-last:]) / len(losses[-last:])


def evaluate(lm: CausalLM, token_batches: list[tuple]) -> float:
    """Mean next-token loss (nats) of ``lm`` on ``token_batches``, in eval mode; ``lm`` goes back to training mode."""
    lm.eval()
    loss = next_token_loss(lm, token_batches)
    lm.train()
    return loss


def check_out(out: Path) -> None:
    """UserError unless ``out`` is new, empty, or an earlier model (a folder holding train.json) to replace."""
    if out.exists() and (not out.is_dir() or any(out.iterdir()) and not (out / TRAIN_JSON).is_file()):
        raise UserError(f"--out {out}: it holds something other than a model with {TRAIN_JSON}; give a new or "
                        "empty folder.")


def save(lm: CausalLM, summary: dict, out: Path) -> None:
    """Write the model (save_pretrained), its tokenizer and train.json into ``out`` (see :func:`check_out`), replacing
    an earlier model there only once everything is written."""
    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    lm.model.save_pretrained(partial)
    lm.tokenizer.save_pretrained(partial)
    (partial / TRAIN_JSON).write_text(json.dumps(summary, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    print(f"wrote {out}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=SIZES, default="cpu", help="model preset (see above)")
    parser.add_argument("--steps", type=int, help="optimizer steps (the budget ends at --steps or --minutes)")
    parser.add_argument("--minutes", type=float, help="wall-clock minutes of training")
    parser.add_argument("--batch", type=int, help="windows per step (default: the preset's)")
    parser.add_argument("--block", type=int, default=256, help="tokens per window and per held-out block")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    parser.add_argument("--vocab", type=int, help="BPE vocabulary size (default: the preset's)")
    parser.add_argument("--modules", type=int, help="train on only the first N training modules (quick runs)")
    parser.add_argument("--eval-every", type=int, default=200, help="steps between held-out losses in the log")
    parser.add_argument("--eval-blocks", type=int, default=64, help="held-out blocks each logged loss covers")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (cuda when there is one)")
    parser.add_argument("--threads", type=int, default=default_threads(), help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if args.steps is None and args.minutes is None:
        parser.error("give --steps or --minutes (or both: training stops at whichever ends first)")
    if (args.steps is not None and args.steps < 1) or (args.minutes is not None and args.minutes <= 0):
        parser.error("--steps must be >= 1 and --minutes > 0")
    args.batch = args.batch or SIZES[args.size]["batch"]
    args.vocab = args.vocab or SIZES[args.size]["vocab"]
    args.device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    check_device(args.device)
    check_out(args.out)
    return args


def main(argv: list[str] | None = None) -> dict:
    """Train and save the model; returns the train.json summary."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    corpus = stdlib_corpus.load().limited(args.modules)
    tokenizer = stdlib_corpus.train_tokenizer(corpus.texts("train"), args.vocab)
    stream = stdlib_corpus.token_stream(tokenizer, corpus.texts("train"))
    heldout = stdlib_corpus.token_blocks(stdlib_corpus.token_stream(tokenizer, corpus.texts("heldout")), args.block)
    lm = CausalLM(build_model(args.size, tokenizer, args.block), tokenizer).to(args.device).train()
    parameters = sum(p.numel() for p in lm.parameters())
    print(f"{args.size}: {parameters / 1e6:.2f}M parameters, {len(stream):,} training tokens, "
          f"{heldout[0].numel():,} held-out tokens, on {args.device}")
    run = train(lm, stream, heldout, args, args.device)
    heldout_loss = evaluate(lm, batches(heldout, None))
    lm.eval().to("cpu")
    summary = {
        "model": "LlamaForCausalLM", "size": args.size, "parameters": parameters, "config": SIZES[args.size]["model"],
        "training": {"steps": run["steps"], "minutes": run["minutes"], "batch": args.batch, "block": args.block,
                     "lr": args.lr, "seed": args.seed, "device": args.device, "threads": args.threads,
                     "tokens_seen": run["steps"] * args.batch * args.block,
                     "epochs": round(run["steps"] * args.batch * args.block / len(stream), 2)},
        "loss": {"train": run["train_loss"], "heldout": heldout_loss},
        "perplexity": {"train": math.exp(run["train_loss"]), "heldout": math.exp(heldout_loss)},
        "log": run["log"],
        "command": shlex.join(["python", "bench/train_causal_lm.py", *argv]),
        "corpus": {**corpus.describe(), "vocab_size": len(tokenizer), "train_tokens": len(stream),
                   "heldout_tokens": heldout[0].numel()},
        "environment": {**environment(), "transformers": transformers.__version__},
    }
    save(lm, summary, args.out)
    print(f"after {run['steps']} steps ({run['minutes']} min): training loss {run['train_loss']:.4f}, "
          f"held-out loss {heldout_loss:.4f} (perplexity {math.exp(heldout_loss):.2f})")
    return summary


if __name__ == "__main__":
    main()
