"""What works on which model family: every technique applied to every family, checked, written as the README table.

    python bench/support_table.py            # run the matrix, write bench/results/support_table.json, update README
    python bench/support_table.py --check [--families NAME ...]   # fail if those README rows differ (CI test)

Each family is a small model built here with random weights (torchvision's and timm's architectures cannot be
installed on the machines this runs on, so mobilenet_v2 is rebuilt layer for layer in vision_models.py;
transformers models are tiny configs of the real classes, used raw, as a user would pass them). Each cell runs
``slimkit.apply(model, step)`` and checks what the step promises, not only that it returned:

- ``magnitude_prune`` 50%: at least 45% of the weights of weighted layers (not embeddings) are zero;
- ``nm_sparsity`` 2:4: the same, in the 2:4 pattern's terms (>= 45% zeros);
- ``channel_prune`` ratio 0.3: MACs down by at least 20%;
- ``quantize`` dynamic / static INT8: at least 90% of the weighted layers' weights are held in int8;
- ``low_rank``: MACs down; ``cluster`` 4 bits: every clustered layer holds at most 16 distinct values;
- ``fuse``: outputs equal the original's (1e-4); ``export``: an ONNX file that onnxruntime runs with outputs
  equal to PyTorch's within the step's own tolerance.

Every cell also checks that the model still runs and keeps its output shape. A cell is ``yes``, ``partial`` (the
step ran but fell short: the number is given) or ``no`` (with the reason).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Callable

import torch
from torch import nn

import slimkit as sk
from slimkit.data.task import Task
from slimkit.measure.counts import count_macs

from results_io import write_results

README = Path(__file__).parent.parent / "README.md"
BEGIN, END = "<!-- support-table:begin -->", "<!-- support-table:end -->"
VOCAB, TOKENS = 100, 12


def _tokens(batch: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(batch)
    ids = torch.randint(0, VOCAB, (batch, TOKENS), generator=gen)
    return ids, torch.ones_like(ids)


def _transformers(kind: str) -> Callable[[], tuple[nn.Module, Callable[[int], tuple]]]:
    def build():
        import transformers as tf

        small = dict(vocab_size=VOCAB, max_position_embeddings=32)
        config, model_class, inputs = {
            "bert": (tf.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                   **small), tf.BertModel, _tokens),
            "distilbert": (tf.DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=64, **small),
                           tf.DistilBertModel, _tokens),
            "vit": (tf.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                 image_size=32, patch_size=8, num_labels=10), tf.ViTForImageClassification,
                    lambda b: (torch.randn(b, 3, 32, 32),)),
            "gpt2": (tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=VOCAB, n_positions=32),
                     tf.GPT2LMHeadModel, lambda b: _tokens(b)[:1]),  # its second positional argument is the cache
            "llama": (tf.LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                     intermediate_size=64, **small), tf.LlamaForCausalLM, _tokens),
        }[kind]
        torch.manual_seed(0)
        return model_class(config).eval(), inputs
    return build


def _vision(name: str):
    def build():
        import vision_models

        torch.manual_seed(0)
        model, _ = getattr(vision_models, name)()
        return model.eval(), lambda b: (torch.randn(b, 3, 64, 64),)
    return build


FAMILIES: dict[str, Callable[[], tuple[nn.Module, Callable[[int], tuple]]]] = {
    "fashion-cnn (ResNet CNN)": lambda: (sk.load_model("zoo:fashion-cnn").eval(), lambda b: (torch.randn(b, 1, 28, 28),)),
    "mobilenet_v2": _vision("mobilenet_v2"),
    "BERT": _transformers("bert"),
    "DistilBERT": _transformers("distilbert"),
    "ViT (HF, classifier)": _transformers("vit"),
    "GPT-2 (causal LM)": _transformers("gpt2"),
    "Llama, GQA (causal LM)": _transformers("llama"),
}


def _first_tensor(output):
    if isinstance(output, torch.Tensor):
        return output
    values = output.values() if isinstance(output, dict) else output
    return next(v for v in values if isinstance(v, torch.Tensor))


def _weights(model: nn.Module) -> list[torch.Tensor]:
    """The distinct weight tensors of weighted layers (2-D or more, embeddings excluded)."""
    seen, weights = set(), []
    embedding_weights = {id(getattr(m, "weight", None)) for m in model.modules() if isinstance(m, nn.Embedding)}
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.dim() >= 2 and id(weight) not in embedding_weights | seen:
            seen.add(id(weight))
            weights.append(weight.detach())
    return weights


def _zeros(model: nn.Module) -> float:
    weights = _weights(model)
    return sum(int((w == 0).sum()) for w in weights) / max(1, sum(w.numel() for w in weights))


def _int8_share(before: nn.Module, after: nn.Module) -> float:
    """int8 elements ``after`` stores, as a fraction of the weighted layers' weights ``before`` (at most 1)."""
    int8 = sum(t.numel() for t in after.state_dict().values() if isinstance(t, torch.Tensor) and t.dtype == torch.int8)
    return min(1.0, int8 / max(1, sum(w.numel() for w in _weights(before))))


def _check_macs(before: nn.Module, after: nn.Module, inputs: tuple, at_most: float) -> tuple[str, str]:
    kept = count_macs(after, inputs)[0] / count_macs(before, inputs)[0]
    return ("yes" if kept <= at_most else "partial", f"{kept:.2f}x MACs")


def _check_close(before: nn.Module, after: nn.Module, inputs: tuple, atol: float = 1e-4) -> tuple[str, str]:
    with torch.no_grad():
        diff = (_first_tensor(before(*inputs)) - _first_tensor(after(*inputs))).abs().max().item()
    return ("yes" if diff <= atol else "partial", f"max diff {diff:.1e}")


TECHNIQUES: dict[str, tuple[sk.StepConfig, Callable]] = {
    "magnitude_prune": (sk.MagnitudePrune(sparsity=0.5),
                        lambda b, a, x: ("yes" if _zeros(a) >= 0.45 else "partial", f"{_zeros(a):.0%} zeros")),
    "nm_sparsity 2:4": (sk.NMSparsity(n=2, m=4),
                        lambda b, a, x: ("yes" if _zeros(a) >= 0.45 else "partial", f"{_zeros(a):.0%} zeros")),
    "channel_prune": (sk.ChannelPrune(ratio=0.3), lambda b, a, x: _check_macs(b, a, x, 0.8)),
    "quantize dynamic": (sk.Quantize(weights="int8", activations="dynamic"), None),
    "quantize static": (sk.Quantize(weights="int8", activations="int8", calibration_batches=2, batch_size=4), None),
    "low_rank": (sk.LowRank(), lambda b, a, x: _check_macs(b, a, x, 0.95)),
    "cluster": (sk.Cluster(bits=4), None),
    "fuse": (sk.Fuse(), _check_close),
    "export": (sk.Export(), None),
}


def _quantized(before, after, inputs):
    share = _int8_share(before, after)
    return ("yes" if share >= 0.9 else "partial", f"{share:.0%} of weights int8")


def _clustered(before, after, inputs):
    distinct = max((len(torch.unique(w)) for w in _weights(after)), default=0)
    return ("yes" if distinct <= 16 else "partial", f"at most {distinct} values per layer")


def _exported(before, after, inputs, out_dir: Path):
    return ("yes", "ONNX verified") if (out_dir / "model.onnx").exists() else ("no", "no model.onnx written")


def run_cell(family: str, technique: str) -> dict:
    """Apply one technique to one family and check it; {"status", "detail"}."""
    model, make_inputs = FAMILIES[family]()
    step, check = TECHNIQUES[technique]
    inputs = make_inputs(2)
    data = Task(family, make_inputs(16), make_inputs(4), "cosine", len(inputs))
    with torch.no_grad():
        shape = _first_tensor(model(*inputs)).shape
    try:
        with tempfile.TemporaryDirectory() as tmp:
            after = sk.apply(model, step, data=data, out_dir=tmp)
            with torch.no_grad():
                got = _first_tensor(after(*inputs)).shape
            if got != shape:
                return {"status": "no", "detail": f"output shape {tuple(got)} instead of {tuple(shape)}"}
            if technique == "export":
                status, detail = _exported(model, after, inputs, Path(tmp))
            else:
                status, detail = (check or (_quantized if technique.startswith("quantize") else _clustered))(model, after, inputs)
    except Exception as exc:  # a cell that fails is the table's content, not the script's failure
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return {"status": "no", "detail": f"{type(exc).__name__}: {reason[:160]}"}
    return {"status": status, "detail": detail}


def matrix(families: list[str] | None = None, progress: bool = True) -> dict[str, dict[str, dict]]:
    """Every family (or those named) x every technique."""
    cells = {}
    for family in families or FAMILIES:
        cells[family] = {}
        for technique in TECHNIQUES:
            cells[family][technique] = run_cell(family, technique)
            if progress:
                print(f"{family:>26} {technique:>18}: {cells[family][technique]}", flush=True)
    return cells


def markdown(cells: dict[str, dict[str, dict]]) -> str:
    """The README table: one row per family, one column per technique, the reason or shortfall in the cell."""
    techniques = list(next(iter(cells.values())))
    lines = ["| family | " + " | ".join(f"`{t}`" for t in techniques) + " |", "|---|" + "---|" * len(techniques)]
    for family, row in cells.items():
        shown = [c["status"] if c["status"] == "yes" else f"{c['status']}: {c['detail'][:90]}".replace("|", "\\|")
                 for c in (row[t] for t in techniques)]
        lines.append(f"| {family} | " + " | ".join(shown) + " |")
    return "\n".join(lines) + "\n"


def readme_block(text: str) -> str:
    """The table between the README's support-table markers."""
    if BEGIN not in text or END not in text:
        raise SystemExit(f"README.md lacks the {BEGIN} ... {END} markers")
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the README table is not what this run gives")
    parser.add_argument("--families", nargs="+", choices=list(FAMILIES), help="with --check: only these rows")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cells = matrix(args.families if args.check else None, progress=not args.check)
    table = markdown(cells)
    text = README.read_text()
    if args.check:
        rows = table.splitlines()[2:]
        missing = [row for row in rows if row not in readme_block(text).splitlines()]
        if missing:
            print("README's support table differs from this run; regenerate it with python bench/support_table.py:\n"
                  + "\n".join(missing))
            return 1
        return 0
    write_results(Path(args.out) / "support_table.json", {"benchmark": "support_table", "cells": cells})
    before, _, rest = text.partition(BEGIN)
    README.write_text(before + BEGIN + "\n" + table + END + rest.partition(END)[2])
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
