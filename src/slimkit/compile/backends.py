"""``backend: auto`` of the export step: time the candidate runtimes side by side, keep the fastest.

The auto choice is the minimum median over the candidates it timed in one interleaved run, so it is
as fast as the fastest candidate it considered by construction.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

from torch import nn

from ..errors import UserError
from ..measure.latency import batch_of, fixed_threads, interleaved_timings
from ..runtime import RUNTIMES, Predictor, verify
from ..runtime.onnxruntime import OPT_LEVELS, tensorrt_providers


def candidate_predictors(model: nn.Module, names: tuple[str, ...], onnx_path: Path, fp16_path: Path | None,
                         threads: int, device: str = "cpu") -> tuple[dict[str, Predictor], dict[str, str]]:
    """({candidate: predictor}, {candidate: why it was left out}). ``onnxruntime`` expands to one
    candidate per graph optimisation level (``onnxruntime/<level>``); ``openvino`` reads ``onnx_path``."""
    built, skipped = {}, {}
    ort = RUNTIMES["onnxruntime"]
    for name in names:
        try:
            if name in ("eager", "compile"):
                built[name] = RUNTIMES[name].prepare(model, ())  # where export_onnx left it: on the CPU
            elif name == "onnxruntime":
                for level in OPT_LEVELS:
                    built[f"onnxruntime/{level}"] = ort.prepare(onnx_path, (), threads=threads, device=device, opt_level=level)
            elif name == "openvino":
                built[name] = RUNTIMES[name].prepare(onnx_path, (), threads=threads, device=device)
            elif fp16_path is None:
                skipped[name] = "no FP16 graph (export with `fp16: true`)"
            else:
                built["onnxruntime_fp16/all"] = ort.prepare(fp16_path, (), threads=threads, device=device)
        except UserError as exc:  # not installed here, or the runtime cannot take this model: left out
            skipped[name] = str(exc)
    return built, skipped


def choose(model: nn.Module, predictors: dict[str, Predictor], inputs: tuple, atol: float, threads: int,
           repeats: int = 20, skipped: dict[str, str] | None = None) -> dict:
    """Check each predictor's outputs against eager PyTorch, time those within ``atol`` side by side, and
    return {"chosen", "atol", "batch_size", "candidates": {name: {"max_abs_diff", "median_ms", "iqr_ms",
    "kept", "reason"}}}. ``chosen`` has the smallest median of the kept candidates."""
    table = {name: {"kept": False, "reason": reason} for name, reason in (skipped or {}).items()}
    runners = {}
    with fixed_threads(threads):
        for name, predict in predictors.items():
            try:
                diff = verify(predict, model, inputs)
            except Exception as exc:  # e.g. inductor without a C++ compiler: the candidate is not available
                table[name] = {"kept": False, "reason": f"failed: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}"}
                continue
            ok = diff <= atol
            table[name] = {"max_abs_diff": diff, "kept": ok, "reason": "" if ok else f"max abs diff {diff:.2e} > atol {atol}"}
            if ok:
                runners[name] = (lambda p: lambda: p(*inputs))(predict)
        timings = interleaved_timings(runners, warmup=3, repeats=repeats) if runners else {}
    for name, timing in timings.items():
        table[name].update(median_ms=timing["median"], iqr_ms=timing["iqr"])
    chosen = min(timings, key=lambda n: timings[n]["median"]) if timings else None
    return {"chosen": chosen, "atol": atol, "batch_size": int(inputs[0].shape[0]), "candidates": table}


def select_backend(model: nn.Module, cfg, ctx, diffs: dict[str, float], atol: float) -> dict:
    """Resolve ``cfg.backend`` for the Export step; any backend but the default onnxruntime is recorded
    in backend.json in the run directory."""
    onnx_path = ctx.out_dir / "model.onnx"
    fp16_path = ctx.out_dir / "model.fp16.onnx" if cfg.fp16 else None
    record = {"requested": cfg.backend, "ort_opt_level": cfg.ort_opt_level, "onnx_max_abs_diff": diffs}
    if cfg.backend == "tensorrt":
        providers, warning = tensorrt_providers(ctx.device)
        if warning:
            warnings.warn(warning, stacklevel=2)
            ctx.notes.append(f"export: {warning}")
        record.update(chosen="onnxruntime", providers=providers)
    elif cfg.backend == "auto":
        predictors, skipped = candidate_predictors(model, cfg.candidates, onnx_path, fp16_path, ctx.threads, ctx.device)
        record.update(choose(model, predictors, batch_of(ctx.example_inputs, cfg.batch_size), atol, ctx.threads,
                             cfg.repeats, skipped))
        timed = {n: c for n, c in record["candidates"].items() if "median_ms" in c}
        ctx.notes.append(f"export: backend auto chose {record['chosen']} at batch {cfg.batch_size} (median ms: "
                         + ", ".join(f"{n} {c['median_ms']:.3g}" for n, c in timed.items()) + ")")
        dropped = {n: c["reason"] for n, c in record["candidates"].items() if not c["kept"]}
        if dropped:
            ctx.notes.append("export: auto dropped " + "; ".join(f"{n}: {r}" for n, r in dropped.items()))
    else:
        record["chosen"] = cfg.backend
    if cfg.backend != "onnxruntime":  # the default needs no record: model.onnx is what it runs
        (ctx.out_dir / "backend.json").write_text(json.dumps(record, indent=2))
        ctx.artifacts["backend"] = "backend.json"
    return record
