"""Run recipes: ``apply`` one step, ``compress`` a whole recipe with measurements and a report."""
from __future__ import annotations

import copy
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

from torch import nn

from .version import __version__
from .data.task import Task
from .devices import check_device
from .errors import UserError
from .files import atomic_dir, check_out
from .graph.copying import deep_copy
from .measure import check_inputs_fit, default_threads, first_non_finite, measure
from .measure.latency import batch_of, check_backends, measure_latency_many
from .measure.machine import environment
from .models.checkpoint import origin, run_labels, save_checkpoint, set_origin
from .recipe import Recipe, StepConfig, handler_for


@dataclasses.dataclass
class Context:
    """What a step handler may use besides the model and its config."""

    example_inputs: tuple
    task: Task | None
    teacher: nn.Module | None
    reference: nn.Module
    device: str = "cpu"
    threads: int = 1
    out_dir: Path = Path(".")
    progress: bool = True
    artifacts: dict[str, str] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    replay: dict | None = None

    def require_task(self, step: str) -> Task:
        if self.task is None:
            raise UserError(f"Step {step!r} needs training data; pass --data (e.g. fashion-mnist).")
        return self.task

    def batch(self, batch_size: int) -> tuple:
        """The example inputs repeated to ``batch_size`` rows."""
        return batch_of(self.example_inputs, batch_size)

    def record(self, replay: dict) -> None:
        """Structural steps call this with what a checkpoint needs to rebuild the new shapes."""
        self.replay = replay


def _run_step(model: nn.Module, config: StepConfig, ctx: Context, fixed_teacher: nn.Module | None):
    ctx.teacher = fixed_teacher if fixed_teacher is not None else copy.deepcopy(model)
    ctx.replay = None
    return handler_for(config)(model, config, ctx)


def apply(model: nn.Module, config: StepConfig, *, example_inputs: tuple | None = None, data: Task | None = None,
          teacher: nn.Module | None = None, device: str = "cpu", out_dir: str | Path | None = None) -> nn.Module:
    """Apply one step config to a copy of ``model`` and return it; ``model`` itself is left as it was."""
    if example_inputs is None and data is None:
        raise UserError("apply() needs example_inputs or data.")
    before_step = copy.deepcopy(model).eval()  # fine_tune's target, and the teacher unless one is given
    before = origin(model)
    model = deep_copy(model)  # shares no parametrized class with the caller's model
    with tempfile.TemporaryDirectory(prefix="slimkit-") as scratch:
        ctx = Context(example_inputs or data.example_inputs(1), data, None, before_step, device, default_threads(),
                      Path(out_dir or scratch), progress=False)
        model = _run_step(model, config, ctx, teacher if teacher is not None else before_step)
    stop_if_non_finite(model, None, f"step {config.key}")  # weights only: apply() runs no forward pass
    history = before["history"] + ([_entry(config, ctx)] if ctx.replay else [])
    return set_origin(model, before["base"], history)


def _entry(config: StepConfig, ctx: Context) -> dict:
    return {"step": config.key, "config": config.to_dict(), "replay": ctx.replay}


def compress(
    model: nn.Module,
    recipe: Recipe,
    *,
    data: Task | None = None,
    out_dir: str | Path,
    example_inputs: tuple | None = None,
    device: str = "cpu",
    teacher: nn.Module | None = None,
    backends: tuple[str, ...] = ("eager", "onnxruntime"),
    batch_sizes: tuple[int, ...] = (1, 64),
    threads: int | None = None,
    progress: bool = True,
    labels: dict | None = None,
    metric_backend: str = "eager",
    overwrite: bool = False,
) -> dict:
    """Run every step of ``recipe``, measuring after each, and write the run directory.

    ``out_dir`` receives checkpoint/ (safetensors + history.json), model.onnx when exported, and
    report.json/.md/.html. It is written to a temporary sibling first and only appears complete.
    ``metric_backend`` (eager | onnxruntime) is where the task metric is computed after each step.
    ``labels`` ({"model", "data"}, either optional) names the model and data in the report instead of the model's
    base SPEC and the Task's name: the CLI passes the SPECs as typed (a checkpoint path, ``none``).
    ``model`` itself is not modified. Returns the report dict (the report.json schema in docs/report.md).
    """
    from .report import write_reports

    check_out(out_dir, overwrite)
    check_device(device)
    check_backends(backends)
    if example_inputs is None:
        if data is None:
            raise UserError("compress() needs example_inputs (CLI: --input-shape) or data (--data).")
        example_inputs = data.example_inputs(1)
    for i, step in enumerate(recipe.steps):
        if step.needs_data and data is None:
            raise UserError(f"steps[{i}].{step.key} needs training data; pass --data (e.g. fashion-mnist).")
        try:
            step.check_model(model)
        except UserError as exc:
            raise UserError(f"steps[{i}].{step.key}: {exc}") from None
    threads = threads or default_threads()
    check_inputs_fit(model, example_inputs, batch_sizes)
    stop_if_non_finite(model, example_inputs, "the input model")
    base, history = origin(model)["base"], list(origin(model)["history"])
    reference = copy.deepcopy(model).eval()
    model = deep_copy(model)  # the caller's model is left as it was, parametrized classes included
    say = _printer(progress)

    def measured(m: nn.Module) -> dict:  # everything but latency, which is timed side by side at the end
        return measure(m, example_inputs, backends=(), data=data, reference=reference, threads=threads,
                       device=device, metric_backend=metric_backend)

    with atomic_dir(out_dir, overwrite, kind="compress") as tmp:
        ctx = Context(example_inputs, data, None, reference, device, threads, tmp, progress)
        say("measuring the baseline")
        report = {
            "slimkit_version": __version__,
            **run_labels(model, data, labels),
            "device": device,
            "threads": threads,
            "metric_backend": metric_backend,
            "environment": environment(),
            "recipe": recipe.to_dict(),
            "baseline": measured(model),
            "steps": [],
        }
        stages = {"baseline": reference}
        for i, step in enumerate(recipe.steps):
            say(f"step {i + 1}/{len(recipe.steps)}: {step.key}")
            start = time.perf_counter()
            model = _run_step(model, step, ctx, teacher)
            seconds = time.perf_counter() - start
            stop_if_non_finite(model, example_inputs, f"steps[{i}] ({step.key})")
            if ctx.replay:
                history.append(_entry(step, ctx))
            set_origin(model, base, history)
            if backends:
                stages[str(i)] = copy.deepcopy(model)
            report["steps"].append({"name": step.key, "config": step.to_dict(), "seconds": round(seconds, 3),
                                    "metrics": measured(model)})
        rows = [report["baseline"], *(s["metrics"] for s in report["steps"])]
        if backends:
            say(f"timing {len(stages)} stages side by side ({', '.join(backends)})")
            timings = measure_latency_many(stages, example_inputs, backends, batch_sizes, threads, device)
            for metrics, name in zip(rows, stages):
                metrics["latency_ms"] = timings[name]
            for step, before, after in zip(recipe.steps, rows, rows[1:]):
                ctx.notes += slower_notes(step.key, before["latency_ms"], after["latency_ms"])
        report["final"] = rows[-1]
        save_checkpoint(model, tmp / "checkpoint")
        report["artifacts"] = {"checkpoint": "checkpoint", **ctx.artifacts}
        report["notes"] = ctx.notes
        write_reports(report, tmp)
    say(f"wrote {out_dir}/report.json, report.md, report.html")
    return report


def stop_if_non_finite(model: nn.Module, example_inputs: tuple | None, where: str) -> None:
    """UserError naming ``where`` and the first layer with NaN/Inf weights or outputs, if there is one."""
    layer = first_non_finite(model, example_inputs)
    if layer:
        raise UserError(f"{where} left NaN or Inf values in {layer}; the run stopped and nothing was written. "
                        "A lower learning rate or a milder setting for that step usually fixes this.")


def slower_notes(step: str, before: dict, after: dict) -> list[str]:
    """Say where a step made the model slower than before it, beyond the measurement spread (IQR)."""
    notes = []
    for key, new in after.items():
        old = before.get(key)
        if old and new["median"] - old["median"] > max(new["iqr"], old["iqr"]):
            notes.append(f"{step}: slower on {key} than before this step ({old['median']:.3g} -> "
                         f"{new['median']:.3g} ms); this backend gains nothing in speed from it here")
    return notes


def _printer(enabled: bool):
    return (lambda msg: print(f"[slimkit] {msg}", file=sys.stderr, flush=True)) if enabled else (lambda msg: None)
