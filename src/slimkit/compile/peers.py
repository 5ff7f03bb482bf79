"""Peer comparison (``slimkit bench --peers``): the user's obvious alternatives, timed side by side.

Peers of an FP32 model: PyTorch eager, torch.compile, onnxruntime FP32, onnxruntime ``quantize_dynamic``
and ``quantize_static`` with their defaults, torch's own dynamic quantization, and slimkit's result
(a run directory). Every peer runs on the same inputs, round-robin in one run, per batch size.

Each peer is reported as ``{"name", "backend", "latency_ms": {"bs<N>": {"median", "iqr"}}, "size_bytes",
"metric": {"name", "value"} | None, "speedup_vs_eager": {"bs<N>": float}}``.
"""
from __future__ import annotations

import copy
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..data.task import Task, batches
from ..errors import UserError, require
from ..files import read_json
from ..measure.latency import batch_of, fixed_threads, interleaved_timings
from ..measure.metric import outputs, score
from ..measure.size import state_bytes
from ..models.checkpoint import origin
from ..runtime import RUNTIMES
from ..runtime.onnx import export_onnx

PEERS = ("eager", "compile", "onnxruntime", "ort_quantize_dynamic", "ort_quantize_static", "torch_dynamic_int8")


@dataclass
class Peer:
    """One alternative: how it runs (``backend``), the callable, and the bytes of its deployable file."""

    name: str
    backend: str
    predict: Callable[..., torch.Tensor]
    size_bytes: int


def build_peers(model: nn.Module, example_inputs: tuple, workdir: Path, threads: int, include=PEERS,
                calibration: Task | None = None, against: str | Path | None = None) -> tuple[list[Peer], dict[str, str]]:
    """The peers of ``model`` named in ``include`` (plus slimkit's run dir ``against``), and
    {peer: reason} for those that cannot run here."""
    unknown = [p for p in include if p not in PEERS]
    if unknown:
        raise UserError(f"Unknown peer(s) {unknown}; choose from {', '.join(PEERS)}.")
    model = model.eval().cpu()
    ours = [slimkit_peer(Path(against), threads, origin(model)["base"])] if against is not None else []  # bad --against fails first
    peers, skipped = [], {}
    fp32 = workdir / "fp32.onnx"
    if any(p.startswith(("onnxruntime", "ort_")) for p in include):
        export_onnx(model, example_inputs, fp32)
    weights = len(state_bytes(model))
    for name in include:
        try:
            peer = _build(name, model, fp32, workdir, threads, calibration, weights)
            peer.predict(*example_inputs)  # compiles (torch.compile) and proves the peer runs here
        except _Skip as exc:
            skipped[name] = str(exc)
            continue
        except Exception as exc:  # e.g. inductor without a C++ compiler: report it, time the others
            skipped[name] = f"failed here: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            continue
        peers.append(peer)
    return peers + ours, skipped


class _Skip(Exception):
    """A peer that cannot run here; the message says why."""


def _build(name, model, fp32: Path, workdir: Path, threads: int, calibration: Task | None, weights: int) -> Peer:
    if name in ("eager", "compile"):
        return Peer(name, name, RUNTIMES[name].prepare(model, ()), weights)
    if name == "onnxruntime":
        return Peer(name, "onnxruntime", RUNTIMES[name].prepare(fp32, (), threads=threads), fp32.stat().st_size)
    if name == "torch_dynamic_int8":
        quantization = getattr(torch.ao, "quantization", None)
        if quantization is None or not hasattr(quantization, "quantize_dynamic"):
            raise _Skip("this torch has no torch.ao.quantization.quantize_dynamic")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecation notice of torch.ao.quantization
            quantized = quantization.quantize_dynamic(copy.deepcopy(model))
        buffer = io.BytesIO()
        torch.save(quantized.state_dict(), buffer)  # packed int8 weights have no safetensors form
        return Peer(name, "eager", RUNTIMES["eager"].prepare(quantized, ()), buffer.tell())
    ort_quant = require("onnxruntime.quantization", "onnx")
    path = workdir / f"{name}.onnx"
    if name == "ort_quantize_static" and calibration is None:
        raise _Skip("quantize_static needs calibration data: pass --data")
    logging.disable(logging.WARNING)  # onnxruntime logs a pre-processing suggestion on the root logger
    try:
        if name == "ort_quantize_dynamic":
            ort_quant.quantize_dynamic(fp32, path)
        else:
            ort_quant.quantize_static(fp32, path, _Reader(calibration, fp32))
    finally:
        logging.disable(logging.NOTSET)
    return Peer(name, "onnxruntime", RUNTIMES["onnxruntime"].prepare(path, (), threads=threads), path.stat().st_size)


class _Reader:
    """onnxruntime CalibrationDataReader over the first 256 training inputs of a Task, 32 per batch."""

    def __init__(self, task: Task, onnx_path: Path):
        import onnx

        names = [i.name for i in onnx.load(str(onnx_path), load_external_data=False).graph.input]
        inputs = tuple(t[:256] for t in task.train[: task.n_inputs])
        self._feeds = iter([{n: t.numpy() for n, t in zip(names, b)} for b in batches(inputs, 32)])

    def get_next(self):
        return next(self._feeds, None)


def _backend_choice(path: Path) -> dict:
    """The run's backend.json (``{}`` when there is none); UserError naming the file when it is malformed."""
    if not path.exists():
        return {}
    choice = read_json(path, "the --against run's runtime choice")
    chosen = choice.get("chosen") if isinstance(choice, dict) else None
    known = ("eager", "compile", "onnxruntime", "onnxruntime_fp16", "openvino")
    if chosen is not None and not (isinstance(chosen, str) and chosen.split("/")[0] in known):
        raise UserError(f"--against: {path}: `chosen` must be one of {', '.join(known)} (optionally /LEVEL), got {chosen!r:.100}.")
    return choice


def slimkit_peer(run_dir: Path, threads: int, base: str | None = None) -> Peer:
    """slimkit's result: the runtime backend.json chose (or model.onnx in onnxruntime when present, else
    the checkpoint in eager PyTorch). ``base``: the SPEC the run's checkpoint must have been built from
    (that of the model it is compared with)."""
    from ..models import load_model

    if not (run_dir / "checkpoint").is_dir():
        raise UserError(f"--against {run_dir}: not a slimkit run directory (no checkpoint/ in it); pass the --out of `slimkit compress`.")
    choice = _backend_choice(run_dir / "backend.json")
    chosen = choice.get("chosen") or ("onnxruntime" if (run_dir / "model.onnx").is_file() else "eager")
    runtime = chosen.split("/")[0]
    if runtime in ("eager", "compile"):
        model = load_model(str(run_dir / "checkpoint"), base=base).eval()
        return Peer("slimkit", runtime, RUNTIMES[runtime].prepare(model, ()), len(state_bytes(model)))
    if runtime == "openvino":
        path = run_dir / "model.onnx"
        return Peer("slimkit", runtime, RUNTIMES[runtime].prepare(path, (), threads=threads), path.stat().st_size)
    level = chosen.split("/")[1] if "/" in chosen else choice.get("ort_opt_level", "all")
    path = run_dir / ("model.fp16.onnx" if chosen.startswith("onnxruntime_fp16") else "model.onnx")
    predict = RUNTIMES["onnxruntime"].prepare(path, (), threads=threads, opt_level=level)
    return Peer("slimkit", f"onnxruntime/{level}", predict, path.stat().st_size)


def compare(model: nn.Module, peers: list[Peer], example_inputs: tuple, *, task: Task | None = None,
            batch_sizes=(1, 64), threads: int = 1, repeats: int = 30, progress: bool = False) -> list[dict]:
    """Time every peer side by side (round-robin per batch size), score it on ``task`` when given
    (top-1, or cosine to the FP32 model's embeddings), and return the ``peers`` rows of report.json."""
    rows = {p.name: {"name": p.name, "backend": p.backend, "latency_ms": {}, "size_bytes": p.size_bytes, "metric": None}
            for p in peers}
    with fixed_threads(threads):
        for bs in batch_sizes:
            inputs = batch_of(example_inputs, bs)
            runners = {p.name: (lambda f: lambda: f(*inputs))(p.predict) for p in peers}
            for name, timing in interleaved_timings(runners, repeats=repeats).items():
                rows[name]["latency_ms"][f"bs{bs}"] = timing
        if task is not None:
            target = outputs(model, task) if task.metric == "cosine" else None
            for peer in _bar(peers, progress):
                rows[peer.name]["metric"] = score(outputs(peer.predict, task), task, target)
    eager = rows.get("eager")
    for row in rows.values():
        if eager:
            row["speedup_vs_eager"] = {k: eager["latency_ms"][k]["median"] / v["median"] for k, v in row["latency_ms"].items()}
    return list(rows.values())


def _bar(items, enabled: bool):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc="scoring peers", unit="peer")


def table(rows: list[dict]) -> str:
    """A plain-text table of peers: latency per batch, speed-up vs eager FP32, size and metric."""
    keys = list(rows[0]["latency_ms"]) if rows else []
    head = ["peer", "backend", *[f"{k} ms" for k in keys], *[f"{k} vs eager" for k in keys], "size", "metric"]
    lines = ["  ".join(f"{h:>14}" for h in head)]
    for r in rows:
        speed = r.get("speedup_vs_eager", {})
        metric = f"{r['metric']['name']} {r['metric']['value']:.4f}" if r["metric"] else "-"
        cells = [r["name"], r["backend"], *[f"{r['latency_ms'][k]['median']:.3f}" for k in keys],
                 *[f"{speed[k]:.2f}x" if k in speed else "-" for k in keys], f"{r['size_bytes'] / 1e6:.2f} MB", metric]
        lines.append("  ".join(f"{c:>14}" for c in cells))
    return "\n".join(lines)


def peer_report(model: nn.Module, example_inputs: tuple, *, labels: dict, task: Task | None = None,
                against: str | Path | None = None, include=PEERS, batch_sizes=(1, 64), threads: int = 1,
                repeats: int = 30, device: str = "cpu", progress: bool = False) -> dict:
    """A report.json dict (DESIGN.md schema plus ``peers`` and ``roofline``) comparing ``model``'s peers.

    ``baseline`` is the FP32 model (latency from its eager and onnxruntime peers); ``final`` is the
    ``against`` run's final metrics when that run has a report.json, else the baseline.
    """
    import tempfile

    from .. import __version__
    from ..measure import measure
    from ..pipeline import environment
    from ..report import read_report
    from .roofline import peak_gmacs, roofline

    if device != "cpu":
        raise UserError("--peers runs on the CPU (onnxruntime CPU, torch dynamic int8); drop --device or use cpu.")
    against_report = read_report(against) if against is not None and (Path(against) / "report.json").exists() else None
    with tempfile.TemporaryDirectory() as tmp:
        peers, skipped = build_peers(model, example_inputs, Path(tmp), threads, include, task, against)
        rows = compare(model, peers, example_inputs, task=task, batch_sizes=batch_sizes, threads=threads,
                       repeats=repeats, progress=progress)
    baseline = measure(model, example_inputs, backends=(), threads=threads)
    by_name = {r["name"]: r for r in rows}
    baseline["latency_ms"] = {f"{n}/{k}": v for n in ("eager", "onnxruntime") if n in by_name
                              for k, v in by_name[n]["latency_ms"].items()}
    baseline["metric"] = (by_name.get("eager") or {}).get("metric")
    roof = {"peak_gmacs": round(peak_gmacs(threads), 2)}
    for row in rows:
        timed = {f"{row['name']}/{k}": v for k, v in row["latency_ms"].items()}
        roof.update({k: v for k, v in roofline(baseline["macs"], timed, roof["peak_gmacs"]).items() if k != "peak_gmacs"})
    final = against_report["final"] if against_report else baseline
    notes = [f"peers: {name} skipped: {why}" for name, why in skipped.items()]
    notes.append(f"peers: timed side by side (round-robin) in one run, {threads} threads; speed-ups are eager FP32 "
                 "median / peer median; roofline fractions are against the FP32 matmul peak")
    return {"slimkit_version": __version__, **labels, "device": device, "threads": threads, "environment": environment(),
            "baseline": baseline, "final": final, "steps": [], "artifacts": {}, "notes": notes, "peers": rows,
            "roofline": roof}
