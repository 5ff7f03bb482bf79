"""``backend: auto`` of the export step: every available runtime x precision, verified against PyTorch on real
inputs, the survivors timed side by side; the fastest is what ``deploy/`` holds.

The choice is the candidate with the smallest geometric mean, over the batch sizes timed, of its median
latency relative to the fastest candidate at that batch size: as fast as the fastest candidate it
considered by construction when one batch size is timed.
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

from torch import nn

from ..errors import UserError
from ..measure.latency import batch_of, time_side_by_side
from ..runtime import RUNTIMES, Predictor, is_quantized, verify
from ..runtime.deploy import write_deployed
from ..runtime.onnxruntime import tensorrt_providers
from ..runtime.padding import trimming

ONNX_BASED = ("onnxruntime", "openvino")  # prepared from the step's own model.onnx instead of exporting again


def real_inputs(ctx, batch_size: int) -> tuple:
    """``batch_size`` rows of the task's test inputs (the example inputs without a task), repeated if too few."""
    rows = ctx.task.example_inputs(batch_size) if ctx.task is not None else ctx.example_inputs
    return batch_of(rows, batch_size)


def candidate_list(model: nn.Module, runtimes: tuple[str, ...], precisions: tuple[str, ...]) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """([(runtime, precision)], {runtime: why it is left out}). int8 candidates run slimkit's own quantized model,
    so a float model gets float precisions and a quantized one int8 only."""
    quantized = is_quantized(model)
    pairs, skipped = [], {}
    for name in runtimes:
        runtime = RUNTIMES[name]
        reason = runtime.available()
        if reason:
            skipped[name] = reason
            continue
        here = [p for p in runtime.precisions_here() if p in precisions and (p == "int8") == quantized]
        if not here:
            skipped[name] = f"runs none of {', '.join(precisions)} for a {'quantized' if quantized else 'float'} model here"
        pairs += [(name, p) for p in here]
    return pairs, skipped


def candidate_predictors(model: nn.Module, pairs: list[tuple[str, str]], onnx_path: Path, inputs: tuple, threads: int,
                         device: str = "cpu", opt_level: str = "all", trim: int | None = None
                         ) -> tuple[dict[str, Predictor], dict[str, str]]:
    """({"runtime/precision": predictor}, {"runtime/precision": why it could not be built}) for inputs shaped
    like ``inputs`` (runtimes with static shapes are prepared for exactly these). ``trim``: the position of the
    attention mask when padding columns are trimmed before the runtime runs (runtimes with dynamic shapes)."""
    built, failed = {}, {}
    for name, precision in pairs:
        runtime, key = RUNTIMES[name], f"{name}/{precision}"
        source = onnx_path if name in ONNX_BASED else model
        options = {"opt_level": opt_level} if name == "onnxruntime" else {}
        try:
            predictor = runtime.prepare(source, inputs, threads=threads, precision=precision,
                                        device=device if name in ("eager", "compile", "onnxruntime") else "cpu", **options)
            built[key] = predictor if trim is None or runtime.static_shapes else trimming(predictor, trim)
        except UserError as exc:  # the runtime cannot take this model (the message names the op): left out
            failed[key] = str(exc)
    return built, failed


def choose(model: nn.Module, pairs: list[tuple[str, str]], onnx_path: Path, ctx, batch_sizes: tuple[int, ...],
           tolerances: dict[str, float], repeats: int = 20, opt_level: str = "all", trim: int | None = None) -> dict:
    """Verify every candidate against eager PyTorch on real inputs at each batch size, time those within their
    precision's tolerance side by side, and return {"chosen", "tolerances", "batch_sizes", "candidates":
    {name: {"max_abs_diff", "latency_ms": {"bs<N>": {"median", "iqr"}}, "kept", "reason"}}}."""
    table: dict[str, dict] = {}
    predictors: dict[str, Predictor] = {}

    def verified(batch_size: int, inputs: tuple) -> dict[str, Predictor]:
        """The candidates still kept and within tolerance on ``inputs``: built once at the first batch size, a
        static-shape runtime again for each."""
        stale = [(n, p) for n, p in pairs if table.get(f"{n}/{p}", {}).get("kept", True)
                 and (not predictors or RUNTIMES[n].static_shapes)]
        fresh, failed = candidate_predictors(model, stale, onnx_path, inputs, ctx.threads, ctx.device, opt_level, trim)
        predictors.update(fresh)
        table.update({key: {"kept": False, "reason": reason} for key, reason in failed.items()})
        return {key: predict for key, predict in predictors.items() if within_tolerance(key, predict, inputs, batch_size)}

    def within_tolerance(key: str, predict: Predictor, inputs: tuple, batch_size: int) -> bool:
        """Whether candidate ``key`` is kept: it was, and it runs ``inputs`` within its precision's tolerance
        (its row records the largest difference, or why it is left out)."""
        row = table.setdefault(key, {"kept": True, "reason": "", "max_abs_diff": 0.0, "latency_ms": {}})
        if not row["kept"]:
            return False
        try:
            diff = verify(predict, model, inputs)
        except Exception as exc:  # e.g. inductor without a C++ compiler: this candidate cannot run here
            row.update(kept=False, reason=f"failed: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}")
            return False
        row["max_abs_diff"] = max(row["max_abs_diff"], diff)
        tol = tolerances[key.split("/")[1]]
        if not diff <= tol:
            row.update(kept=False, reason=f"max abs diff {diff:.2e} > tolerance {tol} at batch {batch_size}")
        return row["kept"]

    latency = time_side_by_side(verified, lambda bs: real_inputs(ctx, bs), batch_sizes, threads=ctx.threads,
                                device=ctx.device, warmup=3, repeats=repeats)
    for key, per_batch in latency.items():
        table[key]["latency_ms"].update(per_batch)
    timed = {k: r for k, r in table.items() if r["kept"] and len(r.get("latency_ms", {})) == len(batch_sizes)}
    best = {f"bs{bs}": min(r["latency_ms"][f"bs{bs}"]["median"] for r in timed.values()) for bs in batch_sizes} if timed else {}
    score = {k: math.prod(r["latency_ms"][b]["median"] / best[b] for b in best) ** (1 / len(best)) for k, r in timed.items()}
    chosen = min(score, key=score.get) if score else None
    return {"chosen": chosen, "tolerances": tolerances, "batch_sizes": list(batch_sizes), "candidates": table}


def select_backend(model: nn.Module, cfg, ctx, diffs: dict[str, float], tolerances: dict[str, float],
                   trim: int | None = None) -> dict:
    """Resolve ``cfg.backend`` for the Export step, write ``deploy/`` (the artifact and deploy.json), and record
    any choice but the default onnxruntime in backend.json in the run directory. ``trim``: see :func:`choose`."""
    onnx_path = ctx.out_dir / "model.onnx"
    record = {"requested": cfg.backend, "ort_opt_level": cfg.ort_opt_level, "onnx_max_abs_diff": diffs}
    precision = "int8" if is_quantized(model) else "fp32"
    if cfg.backend == "tensorrt":
        providers, warning = tensorrt_providers(ctx.device)
        if warning:
            warnings.warn(warning, stacklevel=2)
            ctx.notes.append(f"export: {warning}")
        record.update(chosen=f"onnxruntime/{precision}", providers=providers)
    elif cfg.backend == "auto":
        pairs, skipped = candidate_list(model, cfg.candidates, cfg.precisions)
        record.update(choose(model, pairs, onnx_path, ctx, cfg.batch_sizes, tolerances, cfg.repeats, cfg.ort_opt_level, trim))
        record["candidates"].update({name: {"kept": False, "reason": reason} for name, reason in skipped.items()})
        if record["chosen"] is None:
            raise UserError("export: backend auto found no runtime that runs this model within its tolerance: "
                            + "; ".join(f"{n}: {c['reason']}" for n, c in record["candidates"].items()))
        timed = {n: c for n, c in record["candidates"].items() if c["kept"]}
        ctx.notes.append(f"export: backend auto chose {record['chosen']} (median ms at "
                         + ", ".join(f"bs{bs}" for bs in cfg.batch_sizes) + ": "
                         + "; ".join(f"{n} " + "/".join(f"{t['median']:.3g}" for t in c["latency_ms"].values())
                                     for n, c in timed.items()) + ")")
        dropped = {n: c["reason"] for n, c in record["candidates"].items() if not c["kept"]}
        if dropped:
            ctx.notes.append("export: auto left out " + "; ".join(f"{n}: {r}" for n, r in dropped.items()))
    else:
        record["chosen"] = f"{cfg.backend}/{precision}"
    if cfg.backend != "onnxruntime":  # the default needs no record: model.onnx is what it runs
        (ctx.out_dir / "backend.json").write_text(json.dumps(record, indent=2))
        ctx.artifacts["backend"] = "backend.json"
    deploy(model, record, cfg, ctx, tolerances, diffs["onnx"], trim)
    return record


def deploy(model: nn.Module, record: dict, cfg, ctx, tolerances: dict[str, float], onnx_diff: float,
           trim: int | None = None) -> None:
    """Write ``deploy/``: the chosen runtime's artifact and deploy.json with its measured latency per batch size."""
    runtime, precision = record["chosen"].split("/")
    row = record.get("candidates", {}).get(record["chosen"])
    if row is None:  # not timed by auto: verify and time the chosen runtime now, as auto does its candidates
        single = choose(model, [(runtime, precision)], ctx.out_dir / "model.onnx", ctx, cfg.batch_sizes, tolerances,
                        cfg.repeats, cfg.ort_opt_level, trim)
        row = single["candidates"][record["chosen"]]
        if not row["kept"]:
            raise UserError(f"export: backend {runtime} ({precision}): {row['reason']}")
        row = {**row, "max_abs_diff": max(row["max_abs_diff"], onnx_diff)}
    latency, diff = row["latency_ms"], row["max_abs_diff"]
    write_deployed(RUNTIMES[runtime], model, ctx.example_inputs, ctx.out_dir / "deploy", precision=precision,
                   latency_ms=latency, threads=ctx.threads, max_abs_diff=diff, tolerance=tolerances[precision],
                   source=ctx.out_dir / "model.onnx" if runtime in ONNX_BASED and cfg.dynamic_batch else model,
                   trim=trim)
    ctx.artifacts["deploy"] = "deploy/deploy.json"
    ctx.notes.append(f"export: deploy/ holds {runtime} {precision} (load with slimkit.load_deployed)")
