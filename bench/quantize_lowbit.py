"""Low-bit quantization of the shipped Fashion-MNIST baseline: accuracy recovery side by side.

W4A8 per-channel (4-bit weights, static int8 activations): round-to-nearest vs RTN + Cross-Layer
Equalization + bias correction vs AdaRound (+ CLE + bias correction) vs QAT (LSQ, a short fine-tune);
binary weights; and mixed 4/8-bit precision under a size budget. Accuracy is top-1 on the full test set
with the eager simulation of the integer model; size is the safetensors artifact.

    python bench/quantize_lowbit.py            # full test set (tens of minutes on 2 CPU cores)
    python bench/quantize_lowbit.py --smoke    # small subset, few iterations (CI)

Writes bench/results/quantize_lowbit[_smoke].json and prints one line per config.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import slimkit
from slimkit.models.storage import state_bytes
from slimkit.pipeline import environment
from slimkit.quantize import Quantize, quantize_model

from results_io import write_results


def configs(smoke: bool) -> dict[str, Quantize]:
    calib = dict(calibration_batches=2 if smoke else 16, batch_size=64)
    w4a8 = dict(weights="int4", activations="int8", weight_observer="mse", **calib)
    iterations = 20 if smoke else 800
    qat = {"max_batches": 5 if smoke else 300, "lr": 1e-4, "batch_size": 64}
    return {
        "w4a8_rtn": Quantize(**w4a8),
        "w4a8_rtn_cle_bc": Quantize(**w4a8, cle=True, bias_correction=True),
        "w4a8_adaround": Quantize(**w4a8, adaround=True, adaround_iterations=iterations),
        "w4a8_adaround_cle_bc": Quantize(**w4a8, adaround=True, adaround_iterations=iterations, cle=True, bias_correction=True),
        "w4a8_qat_ste": Quantize(**w4a8, qat=qat),
        "w4a8_qat_lsq": Quantize(**w4a8, qat={**qat, "lsq": True}),
        "binary_a8": Quantize(weights="binary", activations="int8", **calib),
        "binary_a8_bc": Quantize(weights="binary", activations="int8", bias_correction=True, **calib),
        "mixed_4_8_a8": Quantize(weights="int8", activations="int8", weight_observer="mse", **calib,
                                 mixed={"bits": [4, 8], "size_ratio": 0.18, "samples": 200 if smoke else 2000}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny subset and few iterations (CI)")
    parser.add_argument("--only", nargs="*", help="run only these configs")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    task = slimkit.load_data("fashion-mnist")
    if args.smoke:
        task = task.subset(train=1024, test=256)
    fp32 = slimkit.load_model("zoo:fashion-cnn")
    baseline = {"top1": slimkit.measure(fp32, backends=(), data=task)["metric"]["value"], "size_bytes": len(state_bytes(fp32))}
    results = {"benchmark": "quantize_lowbit", "smoke": args.smoke, "environment": environment(),
               "test_samples": len(task.test[0]), "baseline": baseline, "runs": {}}
    out = Path(args.out) / f"quantize_lowbit{'_smoke' if args.smoke else ''}.json"
    for name, cfg in configs(args.smoke).items():
        if args.only and name not in args.only:
            continue
        start = time.perf_counter()
        calibration = task.input_batches(cfg.calibration_batches, cfg.batch_size)
        model, plan = quantize_model(slimkit.load_model("zoo:fashion-cnn"), cfg, calibration, task=task)
        seconds = time.perf_counter() - start
        top1 = slimkit.measure(model, backends=(), data=task)["metric"]["value"]
        size = len(state_bytes(model))
        results["runs"][name] = {
            "config": cfg.to_dict(), "quantize_seconds": seconds, "top1": top1, "size_bytes": size,
            "size_ratio": size / baseline["size_bytes"], "top1_delta_points": 100 * (top1 - baseline["top1"]),
            "plan": {key: getattr(plan, key) for key in ("equalized", "mixed", "adaround", "bias_correction", "qat")},
        }
        print(f"{name}: size x{size / baseline['size_bytes']:.3f}, top-1 {100 * top1:.2f}% "
              f"({100 * (top1 - baseline['top1']):+.2f} pt), {seconds:.0f} s", flush=True)
        write_results(out, results)  # partial results survive an interrupted run


if __name__ == "__main__":
    main()
