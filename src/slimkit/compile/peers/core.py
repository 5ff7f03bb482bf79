"""Building the peers, timing and scoring them side by side, and the peers report."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from torch import nn

from ...data.task import Task
from ...errors import UserError
from ...measure.latency import batch_of, fixed_threads, time_side_by_side
from ...measure.metric import outputs, score
from ...models.storage import state_bytes
from ...models.checkpoint import origin
from ...runtime import RUNTIMES
from ...runtime.onnx import export_onnx
from . import builtin
from ...runtime.deploy import DEPLOY_FILE, load_deployed
from .base import Peer, Skip, fixed_batch, toolkit

PEERS = ("eager", "compile", "onnxruntime", "ort_quantize_dynamic", "ort_quantize_static", "ort_matmul_nbits", "torch_dynamic_int8",
         "openvino", "nncf_openvino_int8", "torchao_pt2e_int8", "executorch_xnnpack_int8", "torch_pruning")
_NEEDS_ONNX = ("onnxruntime", "ort_quantize_dynamic", "ort_quantize_static", "ort_matmul_nbits", "openvino",
               "nncf_openvino_int8")


def build_peers(model: nn.Module, example_inputs: tuple, workdir: Path, threads: int, include=PEERS,
                calibration: Task | None = None, against: str | Path | None = None, *, macs_target: float = 0.5,
                fine_tune: Callable[[nn.Module], nn.Module] | None = None) -> tuple[list[Peer], dict[str, str]]:
    """The peers of ``model`` named in ``include`` (plus slimkit's run dir ``against``), and
    {peer: reason} for those that cannot run here.

    ``calibration``: the Task whose first 256 training inputs calibrate every static INT8 peer.
    ``macs_target``: the fraction of ``model``'s MACs that ``torch_pruning`` keeps (at most).
    ``fine_tune``: what ``torch_pruning`` does to the pruned model before it is timed (None: nothing).
    """
    unknown = [p for p in include if p not in PEERS]
    if unknown:
        raise UserError(f"Unknown peer(s) {unknown}; choose from {', '.join(PEERS)}.")
    if not 0 < macs_target <= 1:
        raise UserError(f"The MACs target of torch_pruning must be in (0, 1], got {macs_target}.")
    model = model.eval().cpu()
    ours = [slimkit_peer(Path(against), threads, origin(model)["base"])] if against is not None else []  # bad --against fails first
    peers, skipped = [], {}
    fp32 = workdir / "fp32.onnx"
    if any(p in _NEEDS_ONNX for p in include):
        export_onnx(model, example_inputs, fp32)
    weights = len(state_bytes(model))
    for name in include:
        try:
            peer = _build(name, model, example_inputs, fp32, workdir, threads, calibration, weights, macs_target, fine_tune)
            peer.predict(*example_inputs)  # compiles (torch.compile) and proves the peer runs here
        except Skip as exc:
            skipped[name] = str(exc)
            continue
        except Exception as exc:  # e.g. inductor without a C++ compiler: report it, time the others
            skipped[name] = f"failed here: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            continue
        peers.append(peer)
    return peers + ours, skipped


def _build(name, model, example_inputs, fp32: Path, workdir: Path, threads: int, calibration: Task | None,
           weights: int, macs_target: float, fine_tune) -> Peer:
    if name in ("eager", "compile"):
        return builtin.torch_peer(name, model, weights)
    if name == "onnxruntime":
        return builtin.onnxruntime_fp32(fp32, threads)
    if name == "torch_dynamic_int8":
        return builtin.torch_dynamic_int8(model)
    if name in ("ort_quantize_dynamic", "ort_quantize_static"):
        return builtin.ort_quantize(name, fp32, workdir, threads, calibration)
    if name == "ort_matmul_nbits":
        return builtin.ort_matmul_nbits(fp32, workdir, threads)
    if name == "openvino":
        from .openvino import openvino_fp32

        return openvino_fp32(fp32, workdir, threads)
    if name == "nncf_openvino_int8":
        from .openvino import nncf_openvino_int8

        return nncf_openvino_int8(fp32, workdir, threads, calibration)
    if name == "torchao_pt2e_int8":
        from .pt2e import torchao_pt2e_int8

        return torchao_pt2e_int8(model, example_inputs, calibration)
    if name == "executorch_xnnpack_int8":
        from .executorch import executorch_xnnpack_int8

        return executorch_xnnpack_int8(model, example_inputs, workdir, threads, calibration)
    from .pruning import torch_pruning

    return torch_pruning(model, example_inputs, workdir, threads, macs_target, fine_tune)


def slimkit_peer(run_dir: Path, threads: int, base: str | None = None) -> Peer:
    """slimkit's result: the run's deploy/ (what its ``export`` step chose), else its checkpoint in eager PyTorch.
    ``base``: the SPEC the run's checkpoint must have been built from (that of the model it is compared with)."""
    from ...models import load_model

    if not (run_dir / "checkpoint").is_dir():
        raise UserError(f"--against {run_dir}: not a slimkit run directory (no checkpoint/ in it); pass the --out of `slimkit compress`.")
    if (run_dir / "deploy" / DEPLOY_FILE).is_file():
        return deployed_peer(run_dir / "deploy", threads)
    model = load_model(str(run_dir / "checkpoint"), base=base).eval()
    return Peer("slimkit", "eager", RUNTIMES["eager"].prepare(model, ()), len(state_bytes(model)), toolkit("slimkit", "torch"))


def deployed_peer(folder: Path, threads: int) -> Peer:
    """A deploy/ folder (``slimkit.load_deployed``) as the ``slimkit`` peer; a static-batch program runs larger
    batches in chunks of its own batch size."""
    deployed = load_deployed(folder, threads=threads)
    size = sum((folder / f).stat().st_size for f in deployed.record["files"])
    tools = toolkit("slimkit", {"eager": "torch", "compile": "torch"}.get(deployed.runtime, deployed.runtime))
    predict = fixed_batch(deployed, deployed.record["inputs"][0]["shape"][0]) if deployed.record["static_batch"] else deployed
    return Peer("slimkit", f"{deployed.runtime}/{deployed.precision}", predict, size, tools)


def compare(model: nn.Module, peers: list[Peer], example_inputs: tuple, *, task: Task | None = None,
            batch_sizes=(1, 64), threads: int = 1, repeats: int = 30, progress: bool = False) -> list[dict]:
    """Time every peer side by side (round-robin per batch size), score it on ``task`` when given
    (top-1, or cosine to the FP32 model's embeddings), and return the ``peers`` rows of report.json.

    A static-batch peer runs its program for each batch size (:meth:`Peer.predict_for`), and is scored with
    the program of the largest one."""
    rows = {}
    for p in peers:
        rows[p.name] = {"name": p.name, "backend": p.backend, "toolkit": p.toolkit, "latency_ms": {},
                        "size_bytes": p.size_bytes, "metric": None, **({"note": p.note} if p.note else {})}
    latency = time_side_by_side(lambda bs, inputs: {p.name: p.predict_for(bs) for p in peers},
                                lambda bs: batch_of(example_inputs, bs), batch_sizes, threads=threads, repeats=repeats)
    for name, per_batch in latency.items():
        rows[name]["latency_ms"] = per_batch
    if task is not None:
        with fixed_threads(threads):
            target = outputs(model, task) if task.metric == "cosine" else None
            for peer in _bar(peers, progress):
                rows[peer.name]["metric"] = score(outputs(peer.predict_for(max(batch_sizes)), task), task, target)
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
    width = max([14, *(len(r["name"]) for r in rows)])
    lines = ["  ".join(f"{h:>{width if i == 0 else 14}}" for i, h in enumerate(head))]
    for r in rows:
        speed = r.get("speedup_vs_eager", {})
        metric = f"{r['metric']['name']} {r['metric']['value']:.4f}" if r["metric"] else "-"
        cells = [r["name"], r["backend"], *[f"{r['latency_ms'][k]['median']:.3f}" for k in keys],
                 *[f"{speed[k]:.2f}x" if k in speed else "-" for k in keys], f"{r['size_bytes'] / 1e6:.2f} MB", metric]
        lines.append("  ".join(f"{c:>{width if i == 0 else 14}}" for i, c in enumerate(cells)))
    return "\n".join(lines)


def peer_report(model: nn.Module, example_inputs: tuple, *, labels: dict, task: Task | None = None,
                against: str | Path | None = None, include=PEERS, batch_sizes=(1, 64), threads: int = 1,
                repeats: int = 30, device: str = "cpu", progress: bool = False, macs_target: float | None = None,
                fine_tune: Callable[[nn.Module], nn.Module] | None = None) -> dict:
    """A report.json dict (the schema in docs/report.md, plus ``peers`` and ``roofline``) comparing ``model``'s peers.

    ``baseline`` is the FP32 model (latency from its eager and onnxruntime peers); ``final`` is the
    ``against`` run's final metrics when that run has a report.json, else the baseline.
    ``macs_target`` (torch_pruning's fraction of the baseline MACs): default the ``against`` run's final MACs
    over its baseline MACs when it has a report.json, else 0.5.
    """
    import tempfile

    from ...version import __version__
    from ...measure import measure
    from ...measure.machine import environment
    from ...report import read_report
    from ...measure.roofline import peak_gmacs, roofline

    if device != "cpu":
        raise UserError("--peers runs on the CPU (onnxruntime CPU, torch dynamic int8); drop --device or use cpu.")
    against_report = read_report(against) if against is not None and (Path(against) / "report.json").exists() else None
    if macs_target is None:
        macs_target = _macs_fraction(against_report) if against_report else 0.5
    with tempfile.TemporaryDirectory() as tmp:
        peers, skipped = build_peers(model, example_inputs, Path(tmp), threads, include, task, against,
                                     macs_target=macs_target, fine_tune=fine_tune)
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
    notes += [f"peers: {row['name']}: {row['note']}" for row in rows if row.get("note")]
    notes.append("peers: toolkits: " + "; ".join(f"{row['name']} {row['toolkit']}" for row in rows if row["toolkit"]))
    notes.append(f"peers: timed side by side (round-robin) in one run, {threads} threads; speed-ups are eager FP32 "
                 "median / peer median; roofline fractions are against the FP32 matmul peak")
    return {"slimkit_version": __version__, **labels, "device": device, "threads": threads, "environment": environment(),
            "baseline": baseline, "final": final, "steps": [], "artifacts": {}, "notes": notes, "peers": rows,
            "roofline": roof}


def _macs_fraction(report: dict) -> float:
    """The ``against`` run's final MACs over its baseline MACs, clipped into (0, 1]."""
    try:
        fraction = report["final"]["macs"] / report["baseline"]["macs"]
    except (KeyError, TypeError, ZeroDivisionError):
        raise UserError("--against: its report.json has no final and baseline MACs; pass --peer-macs.") from None
    return min(max(fraction, 1e-6), 1.0)
