"""Compression policy search bench (issue 6): per-group channel pruning under a 50% MACs budget, zoo:fashion-cnn.

    python bench/policy_search.py            # full: about 30 minutes on the quiet 2-core CPU
    python bench/policy_search.py --smoke    # seconds: tiny subsets; used by the test suite

Three ways to reach <= 50% of the baseline MACs, each followed by the SAME fine-tuning (same FineTune config and
data, once per seed 0, 1, 2) and scored on the full test split (mean over the seeds):
- uniform: ``ChannelPrune(target_macs=0.5)``, one global ratio for every channel group;
- search: per-group sensitivity caps the space, then Optuna TPE over per-group ratios, each candidate projected
  onto the budget and scored by validation top-1 after BatchNorm recalibration (AMC-style proxy);
- netadapt: greedy, each iteration shrinks the one group that loses least proxy accuracy for the same MACs.
The search and NetAdapt see only a validation slice held out of the training split (the fine-tuning
excludes it too); the test split is used once per model, at the end.
Writes bench/results/policy_search.json (or --out) and the searched policy as a recipe beside it.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import time
from pathlib import Path

import torch

import slimkit as sk
from slimkit.measure import default_threads
from slimkit.measure.counts import count_macs, count_params
from slimkit.measure.metric import evaluate
from slimkit.pipeline import environment
from slimkit.prune import ChannelPrune
from slimkit.search.netadapt import netadapt
from slimkit.search.policy import Policy, PruningProblem, holdout, search_policy
from slimkit.search.sensitivity import prune_sensitivity, ratio_caps

from results_io import print_checks, write_results

TARGET_MACS = 0.5
SETTINGS = {  # proxy evaluations: search = 1 + groups x sensitivity ratios + trials; netadapt ~ groups x 0.5 / step
    "full": {"n_val": 5000, "val_images": 1000, "recal_batches": 2, "batch_size": 128, "sensitivity": (0.3, 0.6),
             "tolerance": 0.05, "trials": 30, "step": 0.1, "train": None, "test": None, "seeds": (0, 1, 2),
             "fine_tune": sk.FineTune(epochs=1, lr=0.01, max_batches=80)},
    "smoke": {"n_val": 100, "val_images": 64, "recal_batches": 1, "batch_size": 32, "sensitivity": (0.5,),
              "tolerance": 0.05, "trials": 3, "step": 0.3, "train": 400, "test": 100, "seeds": (0,),
              "fine_tune": sk.FineTune(epochs=1, lr=0.01, batch_size=32, max_batches=2)},
}


def run(smoke: bool, out: Path, progress: bool) -> dict:
    cfg = SETTINGS["smoke" if smoke else "full"]
    task = sk.load_data("fashion-mnist").subset(train=cfg["train"], test=cfg["test"])
    train, val = holdout(task, cfg["n_val"])
    val = sk.Task(val.name, val.train, tuple(t[: cfg["val_images"]] for t in val.test), val.metric, val.n_inputs)
    model = sk.load_model("zoo:fashion-cnn")
    x = task.example_inputs(1)
    base_macs, base_params = count_macs(model, x)[0], count_params(model)[0]

    started = time.perf_counter()
    problem = PruningProblem(model, val, TARGET_MACS, recal_batches=cfg["recal_batches"], batch_size=cfg["batch_size"])
    base_score, drops = prune_sensitivity(problem, cfg["sensitivity"], progress=progress)
    caps, tolerance = ratio_caps(problem, drops, cfg["tolerance"])
    searched, study = search_policy(problem, cfg["trials"], caps, progress=progress)
    search = {"policy": searched, "evaluations": problem.evaluations, "seconds": time.perf_counter() - started}

    started, problem.evaluations = time.perf_counter(), 0
    greedy, steps = netadapt(problem, cfg["step"], progress=progress)
    adapt = {"policy": greedy, "evaluations": problem.evaluations, "seconds": time.perf_counter() - started}

    uniform_ratios = problem.uniform()
    uniform = {"policy": problem.policy(uniform_ratios, problem.score(uniform_ratios)), "evaluations": 1}
    recipe = out.with_name(out.stem + "_recipe.yaml")
    searched.save_recipe(recipe, cfg["fine_tune"])

    results = {}
    for name, found, step in (("uniform", uniform, ChannelPrune(target_macs=TARGET_MACS)),
                              ("search", search, searched.channel_prune()),
                              ("netadapt", adapt, greedy.channel_prune())):
        results[name] = finish(step, found, train, x, cfg["fine_tune"], cfg["seeds"], base_macs, base_params)
    return {
        "mode": "smoke" if smoke else "full", "model": "zoo:fashion-cnn", "target_macs": TARGET_MACS,
        "threads": torch.get_num_threads(),
        "settings": {k: (v.to_dict() if isinstance(v, sk.FineTune) else v) for k, v in cfg.items()},
        "baseline": {"top1": evaluate(model, task)["value"], "macs": base_macs, "params": base_params,
                     "val_top1_after_bn_recalibration": base_score},
        "groups": ["+".join(layers) for layers in problem.pruner.group_layers],
        "sensitivity": [{str(r): d for r, d in g.items()} for g in drops],
        "caps": caps, "tolerance": tolerance,
        "search_history": [{"number": t.number, "val_top1": t.value, **t.user_attrs} for t in study.trials],
        "netadapt_history": steps,
        "results": results, "recipe": recipe.name,
        "checks": None if smoke else {"search_beats_uniform_mean_of_seeds": results["search"]["top1"] > results["uniform"]["top1"]},
        "environment": environment(),
    }


def finish(step: ChannelPrune, found: dict, train: sk.Task, x: tuple, tune: sk.FineTune, seeds: tuple[int, ...],
           base_macs: int, base_params: int) -> dict:
    """Prune a fresh baseline with ``step``, fine-tune it with ``tune`` once per seed and score each on the
    full test split; ``top1`` is the mean over seeds."""
    policy: Policy = found["policy"]
    pruned = sk.apply(sk.load_model("zoo:fashion-cnn"), step, example_inputs=x)
    macs = count_macs(pruned, x)[0]
    assert abs(macs / base_macs - policy.macs_fraction) < 1e-9, "the recipe must prune exactly as the policy"
    started, per_seed = time.perf_counter(), []
    for seed in seeds:
        model = copy.deepcopy(pruned)
        sk.fit(model, train, dataclasses.replace(tune, seed=seed), progress=False)
        per_seed.append(evaluate(model, train)["value"])
    return {"top1": statistics.mean(per_seed), "top1_per_seed": dict(zip(seeds, per_seed)),
            "macs_fraction": macs / base_macs, "params_fraction": count_params(pruned)[0] / base_params,
            "val_top1_proxy": policy.score, "proxy_evaluations": found["evaluations"],
            "search_seconds": found.get("seconds", 0.0), "fine_tune_seconds": time.perf_counter() - started,
            "policy": policy.to_dict()["groups"]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny subsets and budgets; numbers are not meaningful")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "policy_search.json"))
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: every usable core)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads or (1 if args.smoke else default_threads()))
    result = run(args.smoke, out, progress=not args.smoke)
    write_results(out, result)
    base = result["baseline"]
    print(f"baseline  top1 {base['top1']:.4f}")
    for name, row in result["results"].items():
        print(f"{name:<9} top1 {row['top1']:.4f} (mean of {len(row['top1_per_seed'])} seeds), "
              f"MACs x{row['macs_fraction']:.3f}, params x{row['params_fraction']:.3f}, "
              f"val proxy {row['val_top1_proxy']:.4f} from {row['proxy_evaluations']} evaluations")
    print_checks(result["checks"])
    return result


if __name__ == "__main__":
    main()
