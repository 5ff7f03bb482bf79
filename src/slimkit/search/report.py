"""Search results: ``results.json`` (every trial, the best-so-far curve, the best trial or the Pareto
front scored on the test split), ``best/`` (checkpoint, architecture and recipe that ``slimkit train`` and
``slimkit compress`` accept) and ``report.md`` / ``report.html`` with the history and Pareto charts."""
from __future__ import annotations

import json
import shutil
from html import escape
from pathlib import Path

import yaml

from ..data.task import Task
from .config import SearchConfig
from .objective import TRIALS_DIR, split
from .study import make_sampler, open_storage, open_study

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


def best_so_far(values: list[float], maximize: bool) -> list[float]:
    """The running best of ``values`` (in trial order)."""
    out: list[float] = []
    for v in values:
        out.append(v if not out else (max if maximize else min)(out[-1], v))
    return out


def _trial_row(t) -> dict:
    return {"number": t.number, "state": t.state.name, "params": t.params, "values": t.values,
            "measured": t.user_attrs.get("measured"), "intermediate": {str(k): v for k, v in t.intermediate_values.items()}}


def export_results(config: SearchConfig, out: Path, url: str, task: Task, storage_label: str) -> dict:
    """Read the finished study and write results.json, best/ and report.{md,html}; returns the results."""
    from ..measure.metric import evaluate
    from ..models import load_model

    study = open_study(open_storage(url, config.heartbeat_s), config.name, make_sampler("random"), config.directions)
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    maximize = config.objectives[0].direction == "maximize"
    finalists = (study.best_trials if len(config.objectives) > 1 else [study.best_trial]) if complete else []
    _, _, test = split(task, config)
    front = []
    for t in sorted(finalists, key=lambda t: t.number):
        ckpt = Path(t.user_attrs.get("checkpoint", out / TRIALS_DIR / f"{t.number:04d}"))  # on this machine?
        row = {"number": t.number, "params": t.params, "values": t.values, "measured": t.user_attrs.get("measured"),
               "worker": t.user_attrs.get("worker"), "checkpoint": str(ckpt) if ckpt.is_dir() else None, "test_metric": None}
        if ckpt.is_dir():
            row["test_metric"] = evaluate(load_model(str(ckpt), base=config.model.get("spec")), test)
        front.append(row)
    best = max(front, key=lambda r: r["measured"]["metric"]) if front else None
    results = {
        "study": config.name, "storage": storage_label, "sampler": config.sampler, "pruner": config.pruner,
        "n_trials": config.n_trials, "objectives": [o.label for o in config.objectives], "directions": config.directions,
        "states": {s: sum(t.state.name == s for t in trials) for s in STATES},
        "best_so_far": best_so_far([t.values[0] for t in complete], maximize),
        "best": best, "pareto_front" if len(config.objectives) > 1 else "finalists": front,
        "trials": [_trial_row(t) for t in trials],
    }
    if best is not None:
        _export_best(config, out, study.trials[best["number"]], best)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "report.md").write_text(render_markdown(results))
    (out / "report.html").write_text(render_html(results, config))
    return results


def _export_best(config: SearchConfig, out: Path, trial, row: dict) -> None:
    """best/: the checkpoint, arch.yaml (for ``--model arch:best/arch.yaml``) and recipe.yaml (its training)."""
    best = out / "best"
    tmp = out / ".best.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    if row["checkpoint"]:
        shutil.copytree(row["checkpoint"], tmp / "checkpoint")
        base = json.loads((tmp / "checkpoint" / "history.json").read_text())["base"]
        if base.startswith("arch:"):
            (tmp / "arch.yaml").write_text(yaml.safe_dump(json.loads(base[5:]), sort_keys=False))
    fine_tune = dict(trial.user_attrs.get("fine_tune", {}))
    fine_tune.pop("max_batches", None)
    recipe = {"version": 1, "steps": [{"fine_tune": fine_tune}, {"export": {"format": "onnx"}}]}
    (tmp / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    (tmp / "trial.json").write_text(json.dumps(row, indent=2))
    shutil.rmtree(best, ignore_errors=True)
    tmp.rename(best)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def render_markdown(results: dict) -> str:
    """A short summary: trial states, the best trial (or Pareto front) with its test metric."""
    lines = [f"# slimkit search: {results['study']}", "",
             f"Storage `{results['storage']}`, sampler {results['sampler']}, pruner {results['pruner']}; "
             + ", ".join(f"{n} {s.lower()}" for s, n in results["states"].items() if n), ""]
    rows = results.get("pareto_front") or results.get("finalists") or []
    if rows:
        head = ["trial", *results["objectives"], "test metric", "params"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            test = r["test_metric"]["value"] if r["test_metric"] else None
            lines.append("| " + " | ".join([str(r["number"]), *map(_fmt, r["values"]), _fmt(test),
                                           ", ".join(f"{k}={_fmt(v)}" for k, v in r["params"].items())]) + " |")
    if results["best"]:
        lines += ["", f"Best trial {results['best']['number']}: `best/checkpoint` (`slimkit compress --model best/checkpoint ...`), "
                  "`best/recipe.yaml` (its training as a recipe), `best/arch.yaml` (`slimkit train --model arch:best/arch.yaml`)."]
    return "\n".join(lines) + "\n"


def history_chart(results: dict) -> str:
    """Objective 1 of every complete trial against its number, and the best-so-far line."""
    from ..report import svg

    done = [t for t in results["trials"] if t["state"] == "COMPLETE"]
    if not done:
        return ""
    xs, ys = [t["number"] for t in done], [t["values"][0] for t in done]
    left, top, w, h = 64, 66, 480, 260
    ax = svg.Axis(*svg.span(xs), left, left + w)
    ay = svg.Axis(*svg.span(ys), top + h, top)
    parts = svg._open("search-history", left + w + 20, top + h + 48, "Optimisation history",
                      f"{results['objectives'][0]} per complete trial; line: best so far")
    parts += svg._x_axis(ax, top, top + h, "trial number") + svg._y_axis(ay, left, left + w, results["objectives"][0])
    parts.append(f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="{svg.INK}"/>')
    path = "M" + "L".join(f"{ax(x):.1f} {ay(y):.1f}" for x, y in zip(xs, results["best_so_far"]))
    parts.append(f'<path d="{path}" stroke="{svg.colour(1)}" stroke-width="2" fill="none"/>')
    parts += [svg._marker("circle", ax(x), ay(y), 4, svg.colour(0), tooltip=f"trial {x}: {y:.4g}") for x, y in zip(xs, ys)]
    return "".join(parts) + "</svg>"


def pareto_chart(results: dict, config: SearchConfig) -> str:
    """Metric against the first cost objective for every complete trial, the front highlighted."""
    from ..report import svg

    if len(config.objectives) < 2 or config.objectives[0].name != "metric":
        return ""
    cost = config.objectives[1].label
    points = [svg.Point(f"trial {t['number']}", t["measured"][cost], t["measured"]["metric"], "trials")
              for t in results["trials"] if t["state"] == "COMPLETE" and t["measured"]]
    return svg.pareto("search-pareto", "Pareto front", points, cost, "validation metric") if points else ""


def render_html(results: dict, config: SearchConfig) -> str:
    """A self-contained page: summary table, optimisation history and Pareto charts."""
    from ..report.html import _page

    md = render_markdown(results)
    charts = [c for c in (history_chart(results), pareto_chart(results, config)) if c]
    return _page(f"slimkit search: {results['study']}", [f"<pre>{escape(md)}</pre>", '<div class="charts">', *charts, "</div>"])
