"""Command line: a thin layer over the Python API. Exit 0 ok, 2 bad input, 1 internal error."""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from .errors import RunFailed, UserError


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers, e.g. 1,3,224,224")
    if not shape or min(shape) < 1 or len(shape) > 8:
        raise argparse.ArgumentTypeError(f"{text!r}: give 1 to 8 dimensions, each >= 1")
    if math.prod(shape) > 2**31:
        raise argparse.ArgumentTypeError(f"{text!r}: {math.prod(shape):,} elements per input is more than any model here takes")
    return shape


def _input_spec(text: str):
    """An argparse type: one typed input, ``NAME:DTYPE[D1,D2,...]<HIGH`` (slimkit.measure.inputs.parse_input)."""
    from .measure.inputs import parse_input

    try:
        return parse_input(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _int_in(low: int, high: int):
    """An argparse type: an integer in [low, high]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is outside [{low}, {high}]")
        return value
    return parse


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _labels(args) -> dict[str, str]:
    """The model and data as typed, which runs record as their names."""
    return {"model": args.model, "data": args.data}


def _cmd_train(args) -> int:
    from .data import load_data
    from .devices import check_device
    from .files import check_out
    from .models import load_model
    from .recipe import ConfigError
    from .train import FineTune, train

    check_out(args.out, args.overwrite)
    check_device(args.device)
    options = {k: getattr(args, k) for k in ("epochs", "lr", "batch_size", "optimizer", "weight_decay", "seed")}
    try:
        cfg = FineTune.from_dict(options)
    except ConfigError as exc:
        raise UserError(f"--{exc.field.replace('_', '-')}: {exc.message}") from None
    model = load_model(args.model, base=args.base)
    task = load_data(args.data, data_dir=args.data_dir, model=model)
    summary = train(model, task, cfg, args.out, device=args.device, overwrite=args.overwrite, resume=args.resume,
                    labels=_labels(args))
    metric = summary["metric"]
    print(f"{metric['name']} = {metric['value']:.4f} after {cfg.epochs} epochs ({summary['seconds']:.0f} s); "
          f"checkpoint in {Path(args.out)}/checkpoint")
    return 0


def _batches(text: str) -> tuple[int, ...]:
    sizes = tuple(_int_in(1, 65536)(v) for v in text.split(","))
    if len(sizes) > 16:
        raise argparse.ArgumentTypeError(f"{text!r}: at most 16 batch sizes")
    return sizes


def _names(text: str, known, kind: str, hint: str = "") -> tuple[str, ...]:
    """A comma list of ``kind`` names (backends, peers), each one of ``known``; argparse's error otherwise."""
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",")))
    if "" in names:
        raise argparse.ArgumentTypeError(f"{text!r}: name {kind}s separated by commas{hint}")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {kind}(s) {', '.join(map(repr, unknown))}; choose from {', '.join(known)}")
    return names


def _backends(text: str) -> tuple[str, ...]:
    from .measure import BACKENDS

    return () if text.strip() == "none" else _names(text, BACKENDS, "backend", ", or none for no timing")


def _peer_list(text: str) -> tuple[str, ...]:
    from .compile.peers import PEERS

    return _names(text, PEERS, "peer")


def _fraction(text: str) -> float:
    """An argparse type: a number in (0, 1]."""
    value = _finite(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{value} is outside (0, 1]")
    return value


def _load(args):
    """Model, Task (or None) and example inputs from the common CLI options, failing fast on bad input."""
    from .data import load_data
    from .devices import check_device
    from .measure import example_inputs
    from .models import load_model

    check_device(args.device)
    model = load_model(args.model, base=args.base)
    task = None if args.data == "none" else load_data(args.data, data_dir=args.data_dir, model=model)
    return model, task, example_inputs(model, data=task, shape=args.input_shape, inputs=args.input,
                                       batch_sizes=args.batch)


def _cmd_compress(args) -> int:
    from .files import check_out
    from .models import load_model
    from .pipeline import compress
    from .recipe import Recipe

    check_out(args.out, args.overwrite)
    recipe = Recipe.load(args.recipe)
    model, task, inputs = _load(args)
    teacher = load_model(args.teacher) if args.teacher else None
    report = compress(model, recipe, data=task, out_dir=args.out, example_inputs=inputs, device=args.device,
                      teacher=teacher, backends=args.backends, batch_sizes=args.batch, threads=args.threads,
                      labels=_labels(args), metric_backend=args.metric_backend,
                      overwrite=args.overwrite)
    from .report import render_markdown

    print(render_markdown(report))
    return 0


def _cmd_bench(args) -> int:
    from .files import check_out
    from .measure.benchmark import bench

    if args.out is not None:
        check_out(args.out, args.overwrite)
    if args.peers or args.against or args.peer_list or args.peer_macs is not None or args.peer_epochs:
        return _cmd_peers(args)
    model, task, inputs = _load(args)
    result = bench(model, inputs, data=task, backends=args.backends, batch_sizes=args.batch, threads=args.threads,
                   device=args.device, repeats=args.repeats, metric_backend=args.metric_backend,
                   labels=_labels(args), out_dir=args.out, overwrite=args.overwrite)
    if args.format == "json":
        print(json.dumps(result, indent=2))
    else:
        from .report.table import human_bytes, human_count

        print(f"{args.model}: {human_count(result['params'])} params ({human_count(result['nonzero_params'])} non-zero), "
              f"{human_count(result['macs'])} MACs, {human_bytes(result['size_bytes'])} "
              f"({human_bytes(result['compressed_size_bytes'])} zlib), peak memory {human_bytes(result['peak_memory_bytes'])}")
        if result["metric"]:
            print(f"{result['metric']['name']}: {result['metric']['value']:.4f}")
        roof = result["roofline"]
        print(f"measured peak (FP32 matmul): {roof['peak_gmacs']:.1f} GMAC/s")
        for key, lat in result["latency_ms"].items():
            print(f"  {key:<24} {lat['median']:10.3f} ms  (IQR {lat['iqr']:.3f})  "
                  f"{roof[key]['gmacs']:8.2f} GMAC/s = {roof[key]['fraction']:.1%} of peak")
    return 0


def _cmd_peers(args) -> int:
    from .compile.peers import PEERS, bench_peers, table
    from .train import FineTune

    model, task, inputs = _load(args)
    fine_tune = FineTune(epochs=args.peer_epochs) if args.peer_epochs else None
    report = bench_peers(model, inputs, task=task, include=args.peer_list or PEERS, against=args.against,
                         macs_target=args.peer_macs, fine_tune=fine_tune, batch_sizes=args.batch, threads=args.threads,
                         repeats=args.repeats, device=args.device, progress=True, labels=_labels(args),
                         out_dir=args.out, overwrite=args.overwrite)
    if args.format == "json":
        print(json.dumps(report, indent=2))
    else:
        print(table(report["peers"]))
        print("\n".join(report["notes"]))
    return 0


def _cmd_search(args) -> int:
    from .search import SearchConfig, search

    config = SearchConfig.load(args.space).with_overrides(sampler=args.sampler, n_trials=args.n_trials, seed=args.seed)
    results = search(config, args.out, storage=args.storage, workers=args.workers, device=args.device,
                     threads=args.threads, progress=True)
    if results is not None:  # None on torchrun's other ranks
        from .search.report import render_markdown

        print(render_markdown(results))
    return 0


def _cmd_report(args) -> int:
    from .report import render_markdown, rerender, write_comparison

    if len(args.run_dirs) > 1:
        print(f"wrote {write_comparison(args.run_dirs, args.out, args.overwrite)}")
        return 0
    print(render_markdown(rerender(args.run_dirs[0])))
    return 0


DEMO_PEERS = ("onnxruntime", "ort_quantize_static", "nncf_openvino_int8")  # what a user would reach for instead


def _cmd_demo(args) -> int:
    from importlib.resources import files

    from .devices import check_device
    from .files import check_out
    from .runtime import RUNTIMES

    check_out(args.out, args.overwrite)  # first: OpenVINO's first import, below, writes into the home folder
    check_device(args.device)
    args.model, args.recipe, args.teacher, args.input_shape = "zoo:fashion-cnn", str(files("slimkit") / "recipes" / "demo.yaml"), None, None
    args.base = args.input = None
    args.metric_backend = "onnxruntime"  # score the quantized model on integer kernels (the same QDQ graph OpenVINO runs)
    args.backends = ("onnxruntime", "openvino") if RUNTIMES["openvino"].available() is None else ("onnxruntime",)
    code = _cmd_compress(args)
    _demo_versus_peers(args)
    return code


def _demo_versus_peers(args) -> None:
    """Time the demo's deploy/ side by side with the quantizers a user would reach for instead; print the verdict."""
    from .compile.peers import table, versus
    from .data import load_data
    from .models import load_model

    model, task = load_model("zoo:fashion-cnn").eval(), load_data("fashion-mnist", data_dir=args.data_dir)
    result = versus(model, Path(args.out) / "deploy", task.example_inputs(1), include=DEMO_PEERS, calibration=task,
                    batch_sizes=args.batch, threads=args.threads)
    print("\nThe demo's deploy/ against the peers, side by side in one run (latency only; top-1 is in the report):")
    print(table(result["peers"]))
    print("\n".join(result["verdict"]))
    for name, why in result["skipped"].items():
        print(f"peer {name} skipped: {why}")


def _common(p, data_default: str | None = "none") -> None:
    p.add_argument("--data", default=data_default, help="fashion-mnist, digits, text, imagefolder:DIR[?size=N], "
                   "datasets:PATH?input=COL[&label=COL], none, or package.module:callable")
    p.add_argument("--data-dir", help="folder with the Fashion-MNIST IDX files (default: Debian's location)")
    shapes = p.add_mutually_exclusive_group()
    shapes.add_argument("--input-shape", type=_shape, help="batch-1 input shape for random inputs, e.g. 1,3,224,224")
    shapes.add_argument("--input", type=_input_spec, action="append", metavar="NAME:DTYPE[SHAPE]<HIGH",
                        help="one typed batch-1 input (repeat for each), e.g. input_ids:int64[1,32]<30522 "
                        "attention_mask:int64[1,32] (integers below HIGH; a mask without HIGH is ones)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--backends", type=_backends, default=("eager", "onnxruntime"), help="comma list of eager,compile,onnxruntime,openvino, or none (no timing)")
    p.add_argument("--batch", type=_batches, default=(1, 64), help="comma list of batch sizes for latency")
    p.add_argument("--threads", type=_int_in(1, 1024), help="intra-op threads for latency (default: all cores)")
    p.add_argument("--metric-backend", choices=["eager", "onnxruntime"], default="eager",
                   help="where the task metric is computed (onnxruntime: integer kernels for quantized models)")


def _model(p) -> None:
    p.add_argument("--model", required=True, help="SPEC: zoo:NAME, checkpoint path, package.module:callable, hf:DIR, arch:FILE")
    p.add_argument("--base", help="with a checkpoint --model whose base is package.module:callable: that same SPEC, "
                   "confirming that slimkit may import and call it")


def _out(p, required: bool = True, default: str | None = None, help: str = "the run folder to create") -> None:
    p.add_argument("--out", required=required and default is None, default=default, help=help)
    p.add_argument("--overwrite", action="store_true", help="replace an earlier slimkit run in --out (never other files)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slimkit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model and save a checkpoint")
    _model(p)
    p.add_argument("--data", required=True, help="fashion-mnist, digits, text, imagefolder:DIR[?size=N], "
                   "datasets:PATH?input=COL[&label=COL] or package.module:callable")
    p.add_argument("--data-dir", help="folder with the Fashion-MNIST IDX files")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=_finite, default=0.05)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd")
    p.add_argument("--weight-decay", type=_finite, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--resume", action="store_true",
                   help="save the training state beside OUT (.OUT.slimkit-resume.pt) each epoch and resume from it")
    _out(p)
    p.set_defaults(run=_cmd_train)

    p = sub.add_parser("compress", help="run a recipe, measure after every step, write a report")
    _model(p)
    p.add_argument("--recipe", required=True, help="YAML or JSON recipe file")
    p.add_argument("--teacher", help="SPEC of a fixed teacher (default: the model before each step)")
    _out(p)
    _common(p)
    p.set_defaults(run=_cmd_compress)

    p = sub.add_parser("bench", help="measure a model: params, MACs, size, memory, latency per backend")
    _model(p)
    p.add_argument("--repeats", type=_int_in(1, 10000), default=30, help="timed samples per latency number")
    p.add_argument("--format", choices=["table", "json"], default="table")
    _out(p, required=False, help="folder to write bench.json into (with --peers: report.json/.md/.html)")
    p.add_argument("--peers", action="store_true", help="time the obvious alternatives side by side: eager, "
                   "torch.compile, onnxruntime FP32 and its quantize_dynamic/quantize_static, torch dynamic int8, OpenVINO "
                   "FP32, NNCF INT8, torchao PT2E INT8, ExecuTorch XNNPACK INT8, Torch-Pruning (absent toolkits are skipped)")
    p.add_argument("--against", metavar="RUN_DIR", help="with --peers: add slimkit's result (a `slimkit compress` --out)")
    p.add_argument("--peer-list", type=_peer_list, metavar="A,B,...", help="with --peers: only these peers (default all)")
    p.add_argument("--peer-macs", type=_fraction, metavar="FRACTION", help="with --peers: the fraction of the baseline "
                   "MACs torch_pruning keeps, in (0, 1] (default: the --against run's final/baseline MACs, else 0.5)")
    p.add_argument("--peer-epochs", type=_int_in(0, 1000), default=0, metavar="N", help="with --peers: fine-tune the "
                   "torch_pruning peer for N epochs (slimkit.FineTune; needs --data; default 0: prune only)")
    _common(p)
    p.set_defaults(run=_cmd_bench)

    p = sub.add_parser("search", help="hyper-parameter / architecture search with Optuna (resumable)")
    p.add_argument("--space", required=True, help="YAML or JSON search file (model, data, budget, objectives, params)")
    p.add_argument("--out", required=True, help="run folder (holds study.db by default); an existing search there is resumed")
    p.add_argument("--storage", help="Optuna storage URL, e.g. postgresql://user@host/db (password from PGPASSWORD; "
                   "default: $SLIMKIT_STORAGE, else sqlite in --out)")
    p.add_argument("--workers", type=_int_in(1, 256), default=1, help="worker processes on this machine")
    p.add_argument("--n-trials", type=_int_in(1, 100000), help="finished trials to reach (overrides the space file)")
    p.add_argument("--sampler", choices=["tpe", "gp", "random", "nsga2"], help="overrides the space file (default tpe)")
    p.add_argument("--seed", type=_int_in(0, 2**32 - 1), help="sampler seed (overrides the space file)")
    p.add_argument("--threads", type=_int_in(1, 1024), help="intra-op threads per worker (default: all cores // workers)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.set_defaults(run=_cmd_search)

    p = sub.add_parser("report", help="re-render a run's report.md/html, or compare several runs in one page")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", default="report-compare.html", help="where the comparison page of several RUN_DIRs goes")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier comparison page written by slimkit")
    p.set_defaults(run=_cmd_report)

    p = sub.add_parser("demo", help="compress the shipped Fashion-MNIST baseline with the demo recipe")
    _out(p, default="runs/demo")
    _common(p, data_default="fashion-mnist")
    p.set_defaults(run=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except UserError as exc:
        print(f"slimkit: error: {exc}", file=sys.stderr)
        return 2
    except RunFailed as exc:
        print(f"slimkit: failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
