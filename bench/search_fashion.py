"""Search bench on Fashion-MNIST (issue 6).

    python bench/search_fashion.py                 # full: TPE vs random (3 seeds each) + hardware-aware search
    python bench/search_fashion.py --smoke         # seconds: tiny subsets and budgets; used by the test suite
    python bench/search_fashion.py --only tpe_vs_random   # one part; its entry replaces that of the JSON on disk

1. TPE vs random: examples/search-fashion.yaml (mixed efficient blocks + training options), the same trial
   budget for both samplers and seeds 0, 1, 2; the best-so-far validation accuracy of every run is recorded.
2. Hardware-aware: examples/search-fashion-hw.yaml (TPE, multi-objective: validation accuracy, MACs,
   onnxruntime latency at batch 1), compared with the hand-designed baseline zoo:fashion-cnn as shipped (40 GPU
   epochs) and re-trained from scratch with the searched training options of the most accurate Pareto model:
   on the search's short budget, and on a longer one (1 epoch over every training image) beside that Pareto
   architecture re-trained the same way. Test accuracy on the full test split; latency of all measured side by side.

Writes bench/results/search_fashion.json (or --out); study folders go to runs/search_fashion/ (--runs; not kept).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import time
from pathlib import Path

import torch

import slimkit as sk
from slimkit.measure import default_threads
from slimkit.measure.counts import count_macs, count_params
from slimkit.measure.latency import measure_latency_many
from slimkit.measure.metric import evaluate
from slimkit.pipeline import environment
from slimkit.search import Budget, SearchConfig, search
from slimkit.search.objective import build_model, split, trial_params

from results_io import write_results

ROOT = Path(__file__).parent.parent
UNTRAINED_CNN = "slimkit.models.zoo:fashion_cnn"  # the shipped baseline's architecture, freshly initialised


def settings(smoke: bool) -> dict:
    if smoke:
        tiny = Budget(train=300, val=100, test=200, epochs=1)
        return {"tpe_budget": tiny, "budget": tiny, "longer_budget": Budget(train=600, val=100, test=200, epochs=1),
                "n_trials": 2, "seeds": [0], "hw_trials": 2,
                "latency_repeats": 3, "backend": "eager"}  # no ONNX exports: they cost more CPU than the smoke's training
    # TPE vs random: many cheap trials; with 10 trials the best of each run was mostly luck
    return {"tpe_budget": Budget(train=1000, val=1000, test=None, epochs=1), "n_trials": 30, "seeds": [0, 1, 2],
            "budget": Budget(train=2000, val=1000, test=None, epochs=1),
            "longer_budget": Budget(train=None, val=1000, test=None, epochs=1),  # every other training image
            "hw_trials": 16, "latency_repeats": 30, "backend": "onnxruntime"}


def _run(config: SearchConfig, out: Path, threads: int, task) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    results = search(config, out, threads=threads, progress=False, task=task)
    results["seconds"] = round(time.perf_counter() - start, 1)
    return results


def tpe_vs_random(s: dict, threads: int, runs_dir: Path, task) -> dict:
    base = SearchConfig.load(ROOT / "examples" / "search-fashion.yaml")
    out: dict = {"space": "examples/search-fashion.yaml", "budget": dataclasses.asdict(s["tpe_budget"]), "n_trials": s["n_trials"]}
    runs: dict[str, list] = {"tpe": [], "random": []}
    for seed in s["seeds"]:  # seeds outermost, so a cut-short run still compares the samplers on equal seeds
        for sampler in runs:
            config = dataclasses.replace(base, budget=s["tpe_budget"], n_trials=s["n_trials"], sampler=sampler, seed=seed)
            r = _run(config, runs_dir / f"{sampler}-{seed}", threads, task)
            runs[sampler].append({"seed": seed, "best_so_far": r["best_so_far"], "best": r["best"]["measured"]["metric"],
                                  "best_test": r["best"]["test_metric"]["value"], "best_params": r["best"]["params"],
                                  "states": r["states"], "seconds": r["seconds"]})
            print(f"{sampler} seed {seed}: best validation top-1 {runs[sampler][-1]['best']:.4f} ({r['seconds']:.0f} s)", flush=True)
    for sampler, done in runs.items():
        curves = [r["best_so_far"] for r in done]
        out[sampler] = {"runs": done, "mean_best": statistics.mean(r["best"] for r in done),
                        "mean_curve": [statistics.mean(c[i] for c in curves) for i in range(min(map(len, curves)))]}
    out["tpe_minus_random_points"] = 100 * (out["tpe"]["mean_best"] - out["random"]["mean_best"])
    out["tpe_better"] = out["tpe"]["mean_best"] > out["random"]["mean_best"]
    return out


def _trained(model: torch.nn.Module, train, options: dict, epochs: int, seed: int) -> tuple:
    """``model`` trained from scratch with the searched training options; (model, seconds)."""
    start = time.perf_counter()
    sk.fit(model, train, sk.FineTune(epochs=epochs, seed=seed, **options), progress=False)
    return model, round(time.perf_counter() - start, 1)


def hardware_aware(s: dict, threads: int, runs_dir: Path, task) -> dict:
    config = SearchConfig.load(ROOT / "examples" / "search-fashion-hw.yaml")
    latency = dataclasses.replace(config.objectives[2], backend=s["backend"], repeats=s["latency_repeats"], threads=threads)
    config = dataclasses.replace(config, budget=s["budget"], n_trials=s["hw_trials"],
                                 objectives=(*config.objectives[:2], latency))
    r = _run(config, runs_dir / "hardware-aware", threads, task)
    train, _, test = split(task, config)
    longer, _, _ = split(task, dataclasses.replace(config, budget=s["longer_budget"]))
    x = test.example_inputs(1)
    best = max(r["pareto_front"], key=lambda row: row["measured"]["metric"])
    options, arch = trial_params(best["params"])
    seconds, everyone = {}, {"fashion-cnn (shipped, 40 epochs)": sk.load_model("zoo:fashion-cnn")}
    long_name = f"trial {best['number']} retrained (longer budget)"
    torch.manual_seed(config.seed)
    runs = [("fashion-cnn (same short budget)", sk.load_model(UNTRAINED_CNN), train, s["budget"].epochs),
            ("fashion-cnn (longer budget)", sk.load_model(UNTRAINED_CNN), longer, s["longer_budget"].epochs),
            (long_name, build_model(config, arch, train), longer, s["longer_budget"].epochs)]
    torch.set_num_threads(threads)
    for name, model, data, epochs in runs:
        everyone[name], seconds[name] = _trained(model, data, options, epochs, config.seed)
    everyone |= {f"trial {row['number']}": sk.load_model(row["checkpoint"]) for row in r["pareto_front"]}
    lat = measure_latency_many(everyone, x, tuple(dict.fromkeys(("eager", s["backend"]))), (1,), threads=threads,
                               repeats=s["latency_repeats"])
    rows = {}
    for name, model in everyone.items():
        rows[name] = {"test_top1": evaluate(model, test)["value"], "macs": count_macs(model, x)[0],
                      "params": count_params(model)[0], "latency_ms": lat[name]}
        if name in seconds:
            rows[name]["train_seconds"] = seconds[name]
    for row in r["pareto_front"]:
        rows[f"trial {row['number']}"].update(val_top1=row["measured"]["metric"], params_searched=row["params"],
                                              latency_during_search_ms=row["values"][2])

    def dominates(a: str, b: str) -> bool:
        a, b, key = rows[a], rows[b], f"{s['backend']}/bs1"
        return (a["test_top1"] >= b["test_top1"] and a["macs"] < b["macs"]
                and a["latency_ms"][key]["median"] < b["latency_ms"][key]["median"])

    found = [f"trial {row['number']}" for row in r["pareto_front"]]
    shipped = "fashion-cnn (shipped, 40 epochs)"
    return {"space": "examples/search-fashion-hw.yaml", "latency_backend": s["backend"],
            "budget": dataclasses.asdict(s["budget"]), "longer_budget": dataclasses.asdict(s["longer_budget"]),
            "n_trials": s["hw_trials"], "states": r["states"], "search_seconds": r["seconds"],
            "searched_training": options, "models": rows,
            "dominate_short_budget_baseline": [n for n in found if dominates(n, "fashion-cnn (same short budget)")],
            "longer_budget_dominates": dominates(long_name, "fashion-cnn (longer budget)"),
            "dominate_shipped_baseline": [n for n in [*found, long_name] if dominates(n, shipped)],
            "closest_to_shipped_top1_points": 100 * (max(rows[n]["test_top1"] for n in [*found, long_name])
                                                     - rows[shipped]["test_top1"])}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--only", choices=["tpe_vs_random", "hardware_aware"])
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--runs", default=None, help="folder for the study folders (default: runs/search_fashion[_smoke])")
    args = parser.parse_args(argv)
    out = Path(args.out or ROOT / "bench" / "results" / f"search_fashion{'_smoke' if args.smoke else ''}.json")
    threads = args.threads or default_threads()
    s = settings(args.smoke)
    task = sk.load_data("fashion-mnist")
    runs_dir = Path(args.runs or ROOT / "runs" / f"search_fashion{'_smoke' if args.smoke else ''}")
    result = json.loads(out.read_text()) if args.only and out.exists() else {}
    result["smoke"] = args.smoke
    for part, fn in (("tpe_vs_random", tpe_vs_random), ("hardware_aware", hardware_aware)):
        if args.only in (None, part):
            result[part] = {**fn(s, threads, runs_dir, task), "threads": threads, "environment": environment()}
    write_results(out, result)
    return result


if __name__ == "__main__":
    main()
