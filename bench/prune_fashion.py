"""Pruning acceptance bench on Fashion-MNIST (issue 3): zoo:fashion-cnn, unstructured and structured.

    python bench/prune_fashion.py            # full: the acceptance runs (about half an hour on 2 CPU cores)
    python bench/prune_fashion.py --smoke    # seconds: a data subset and a few batches; used by the test suite
    python bench/prune_fashion.py --only magnitude   # one recipe; its entry replaces that of the JSON on disk

Full mode runs two recipes through slimkit.compress and measures baseline and result in the same run:
- magnitude: global magnitude pruning to 90% sparsity, ranked by LAMP scores (magnitudes normalised per
  layer: raw L1 ranking left blocks.2.conv2 0.7% dense and lost 1.32 points), gradually (cubic AGP over 30
  mask updates) while training 4 epochs with distillation from the unpruned model (target: at most 1.0
  point top-1 lost);
- channel: channel pruning solved for <= 50% of the baseline MACs with widths rounded to multiples of 8
  (onnxruntime's CPU conv kernels work on blocks of 8 channels: 22/44/88 channels ran 1.3x faster than
  32/64/128 where 24/48/96 ran 1.5x), then 4 epochs of distillation from the unpruned model (targets: at
  most 1.0 point lost, >= 1.6x lower median latency at batch 1 and 64, same backend).
Writes bench/results/prune_fashion.json (or --out); run directories go beside it, in prune_fashion_runs/.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import slimkit as sk
import slimkit.prune  # noqa: F401  (registers the pruning steps)
from slimkit.distill import Distill
from slimkit.measure import default_threads
from slimkit.pipeline import environment
from slimkit.prune import ChannelPrune, MagnitudePrune

from results_io import print_checks, write_results


def recipes(smoke: bool) -> dict[str, sk.Recipe]:
    if smoke:
        return {
            "magnitude": sk.Recipe([MagnitudePrune(sparsity=0.9, schedule="gradual", steps=2, epochs=1, lr=0.01,
                                                   max_batches=2, distill=True)]),
            "channel": sk.Recipe([ChannelPrune(target_macs=0.5), sk.FineTune(epochs=1, lr=0.01, max_batches=1)]),
        }
    return {
        "magnitude": sk.Recipe([MagnitudePrune(sparsity=0.9, importance="lamp", schedule="gradual", steps=30, epochs=4,
                                               lr=0.1, distill=True)]),
        "channel": sk.Recipe([ChannelPrune(target_macs=0.5, round_to=8),
                              Distill(teachers=("zoo:fashion-cnn",), epochs=4, lr=0.02)]),
    }


def summary(report: dict) -> dict:
    """Accuracy, sparsity, MACs and latency of the result relative to the baseline of the same run."""
    base, final = report["baseline"], report["final"]
    speedup = {key: base["latency_ms"][key]["median"] / final["latency_ms"][key]["median"] for key in final["latency_ms"]}
    return {
        "top1_baseline": base["metric"]["value"],
        "top1_final": final["metric"]["value"],
        "top1_drop_points": 100 * (base["metric"]["value"] - final["metric"]["value"]),
        "sparsity": 1 - final["nonzero_params"] / final["params"],
        "params_fraction": final["params"] / base["params"],
        "macs_fraction": final["macs"] / base["macs"],
        "size_bytes": [base["size_bytes"], final["size_bytes"]],
        "compressed_size_bytes": [base["compressed_size_bytes"], final["compressed_size_bytes"]],
        "speedup": speedup,
        "notes": report["notes"],
    }


def run(smoke: bool, runs: Path, threads: int, only: tuple[str, ...]) -> dict:
    task = sk.load_data("fashion-mnist")
    if smoke:
        task = task.subset(train=256, test=128)
    backends, batch_sizes = (("eager",), (1,)) if smoke else (("eager", "onnxruntime"), (1, 64))
    steps, results = {k: r for k, r in recipes(smoke).items() if k in only}, {}
    for name, recipe in steps.items():
        report = sk.compress(sk.load_model("zoo:fashion-cnn"), recipe, data=task, out_dir=runs / name,
                             backends=backends, batch_sizes=batch_sizes, threads=threads, progress=not smoke,
                             overwrite=True)
        results[name] = summary(report)
    return {"mode": "smoke" if smoke else "full", "model": "zoo:fashion-cnn", "threads": threads,
            "recipes": {k: r.to_dict() for k, r in steps.items()}, "results": results,
            "environment": environment()}


def acceptance(results: dict) -> dict[str, bool]:
    """Issue 3's acceptance targets (of the recipes present), each as pass/fail."""
    checks = {}
    if "magnitude" in results:
        magnitude = results["magnitude"]
        checks["magnitude_sparsity_ge_0.9"] = magnitude["sparsity"] >= 0.9 * _weight_share()
        checks["magnitude_drop_le_1pt"] = magnitude["top1_drop_points"] <= 1.0
    if "channel" in results:
        channel = results["channel"]
        checks["channel_macs_le_0.5"] = channel["macs_fraction"] <= 0.5
        checks["channel_drop_le_1pt"] = channel["top1_drop_points"] <= 1.0
        backends = {k.split("/")[0] for k in channel["speedup"]}
        checks["channel_speedup_ge_1.6_bs1_and_bs64_on_one_backend"] = any(
            all(v >= 1.6 for k, v in channel["speedup"].items() if k.startswith(b + "/")) for b in backends)
        checks.update({f"channel_speedup_ge_1.6_{k}": v >= 1.6 for k, v in channel["speedup"].items()})
    return checks


def merged(previous: dict, new: dict) -> dict:
    """``previous`` (a full run) with the recipes of ``new`` replaced; each entry keeps its own environment."""
    out = {**previous, "recipes": {**previous["recipes"], **new["recipes"]},
           "results": {**previous["results"], **new["results"]}}
    out["environments"] = {**previous.get("environments", dict.fromkeys(previous["results"], previous.get("environment"))),
                           **dict.fromkeys(new["results"], new["environment"])}
    out.pop("environment", None)
    return out


def _weight_share() -> float:
    """Fraction of fashion-cnn's parameters that are Conv/Linear weights (what magnitude_prune prunes)."""
    model = sk.load_model("zoo:fashion-cnn")
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    return weights / sum(p.numel() for p in model.parameters())


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="256 training / 128 test images, one batch per epoch; checks are not meaningful")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "prune_fashion.json"))
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: every usable core)")
    parser.add_argument("--only", nargs="+", choices=("magnitude", "channel"), default=("magnitude", "channel"),
                        help="run these recipes; the other entries of an existing full-mode --out are kept")
    args = parser.parse_args(argv)
    out = Path(args.out)
    threads = args.threads or (1 if args.smoke else default_threads())
    torch.set_num_threads(threads)
    result = run(args.smoke, out.parent / f"{out.stem}_runs", threads, tuple(args.only))
    if not args.smoke and out.is_file() and set(args.only) != {"magnitude", "channel"}:
        result = merged(json.loads(out.read_text()), result)
    result["checks"] = None if args.smoke else acceptance(result["results"])
    write_results(out, result)
    for name, row in result["results"].items():
        speed = ", ".join(f"{k} {v:.2f}x" for k, v in row["speedup"].items())
        print(f"{name:<10} top1 {row['top1_baseline']:.4f} -> {row['top1_final']:.4f} "
              f"({row['top1_drop_points']:+.2f} pt lost), sparsity {row['sparsity']:.3f}, "
              f"MACs x{row['macs_fraction']:.3f}, speedup {speed}")
    print_checks(result["checks"])
    return result


if __name__ == "__main__":
    main()
