"""Faster than the tools users would pick (issue 17): examples/fashion_fast.yaml against real peer toolkits.

    python bench/fashion_fast.py            # full: the whole recipe, every peer, 10,000 test images (~40 min on 2 cores)
    python bench/fashion_fast.py --smoke    # CI: 512 training / 256 test images, a few batches of training, 2 peers

Runs the recipe on zoo:fashion-cnn with slimkit.compress, copies the run's deploy/ to
bench/results/fashion_fast/deploy/, then times the deployed artifact (loaded back with slimkit.load_deployed)
side by side with every peer `slimkit bench --peers` has, round-robin in one run at batch 1 and 64: NNCF
quantize -> OpenVINO INT8, Torch-Pruning at the same MACs with the same training budget, onnxruntime
quantize_static/quantize_dynamic, torchao PT2E X86 INT8 + torch.compile, ExecuTorch XNNPACK INT8, and the
FP32 runtimes. Each is scored on the full test set. Writes bench/results/fashion_fast[_smoke].json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import torch

import slimkit as sk
from slimkit.compile.peers import PEERS, build_peers, compare, deployed_peer, fine_tuner, versus_fastest
from slimkit.measure import default_threads
from slimkit.pipeline import environment
from slimkit.runtime.deploy import DEPLOY_FILE

from results_io import print_checks, write_results

RECIPE = Path(__file__).parent.parent / "examples" / "fashion_fast.yaml"


def smoke_recipe() -> sk.Recipe:
    """The recipe with a training budget of a few batches and short timings."""
    recipe = sk.Recipe.load(RECIPE).to_dict()
    for step in recipe["steps"]:
        (key, options), = step.items()
        if key == "distill":
            options.update(epochs=1, max_batches=2)
        if key == "quantize":
            options.update(calibration_batches=2, batch_size=16)
        if key == "export":
            options.update(batch_sizes=[1, 4], repeats=3, candidates=["eager", "onnxruntime", "openvino"])
    return sk.Recipe.from_dict(recipe)


def training_budget(recipe: sk.Recipe) -> sk.FineTune:
    """The recipe's training budget (epochs, lr, batch size of its distill step) as plain fine-tuning, for peers
    that train (Torch-Pruning), so both get the same number of passes over the same data."""
    (distill,) = [s for s in recipe.steps if s.key == "distill"]
    return sk.FineTune(epochs=distill.epochs, lr=distill.lr, batch_size=distill.batch_size, max_batches=distill.max_batches)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a data subset and a few training batches (CI)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    threads, suffix = default_threads(), "_smoke" if args.smoke else ""
    out = Path(args.out)
    task = sk.load_data("fashion-mnist")
    if args.smoke:
        task = task.subset(train=512, test=256)
    recipe = smoke_recipe() if args.smoke else sk.Recipe.load(RECIPE)
    run_dir = out / f"fashion_fast{suffix}_run"
    report = sk.compress(sk.load_model("zoo:fashion-cnn"), recipe, data=task, out_dir=run_dir, backends=(),
                         threads=threads, progress=not args.smoke, overwrite=True)
    deploy_dir = out / f"fashion_fast{suffix}" / "deploy"
    shutil.rmtree(deploy_dir, ignore_errors=True)
    shutil.copytree(run_dir / "deploy", deploy_dir)

    baseline = sk.load_model("zoo:fashion-cnn").eval()
    example = task.example_inputs(1)
    macs_target = report["final"]["macs"] / report["baseline"]["macs"]
    batch_sizes = (1, 4) if args.smoke else (1, 64)
    include = ("eager", "onnxruntime") if args.smoke else PEERS  # tests/test_peers_real.py covers every peer
    with tempfile.TemporaryDirectory() as tmp:
        peers, skipped = build_peers(baseline, example, Path(tmp), threads, include, calibration=task,
                                     macs_target=macs_target, fine_tune=fine_tuner(training_budget(recipe), baseline, task))
        peers.append(deployed_peer(deploy_dir, threads))
        rows = compare(baseline, peers, example, task=task, batch_sizes=batch_sizes, threads=threads,
                       repeats=5 if args.smoke else 30, progress=not args.smoke)
    by_name = {r["name"]: r for r in rows}
    ours, base_top1 = by_name["slimkit"], by_name["eager"]["metric"]["value"]
    versus = versus_fastest(rows)
    fastest, speedup = versus["fastest_peer"], versus["speedup_over_fastest_peer"]
    lost = 100 * (base_top1 - ours["metric"]["value"])
    results = {
        "benchmark": "fashion_fast", "smoke": args.smoke, "threads": threads, "environment": environment(),
        "recipe": recipe.to_dict(), "deploy": str(deploy_dir.relative_to(out)), "deploy_json": json.loads((deploy_dir / DEPLOY_FILE).read_text()),
        "macs_fraction": macs_target, "top1_baseline": base_top1, "top1_slimkit": ours["metric"]["value"],
        "top1_lost_points": lost, "fastest_peer": fastest, "speedup_over_fastest_peer": speedup,
        "peers": rows, "skipped_peers": skipped, "notes": report["notes"],
    }
    results["checks"] = None if args.smoke else {
        **{f"ge_1.5x_fastest_peer_{k}": v >= 1.5 for k, v in speedup.items()}, "top1_lost_le_0.5pt": lost <= 0.5}
    write_results(out / f"fashion_fast{suffix}.json", results)
    for row in rows:
        print(f"{row['name']:>24} {row['backend']:>22} " + " ".join(f"{k} {v['median']:.3f} ms" for k, v in row["latency_ms"].items())
              + f"  top1 {row['metric']['value']:.4f}  {row['size_bytes'] / 1e6:.2f} MB")
    print("slimkit vs fastest peer: " + ", ".join(f"{k} {v:.2f}x ({fastest[k]})" for k, v in speedup.items())
          + f"; {lost:.2f} pt lost")
    print_checks(results["checks"])
    return results


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
