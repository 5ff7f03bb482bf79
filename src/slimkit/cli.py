"""Command line: a thin layer over the Python API. Exit 0 ok, 2 bad input, 1 internal error."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .errors import UserError


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers, e.g. 1,3,224,224")
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every dimension must be >= 1")
    return shape


def _cmd_train(args) -> int:
    from .data import load_data
    from .measure.metric import evaluate
    from .models import load_model, save_checkpoint
    from .pipeline import atomic_dir
    from .train import FineTune, fit

    model = load_model(args.model)
    task = load_data(args.data, data_dir=args.data_dir, model=model)
    cfg = FineTune(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, optimizer=args.optimizer,
                   weight_decay=args.weight_decay, seed=args.seed)
    state_file = f"{args.out.rstrip('/')}.state.pt" if args.resume else None
    with atomic_dir(args.out) as tmp:
        start = time.perf_counter()
        history = fit(model, task, cfg, device=args.device, state_file=state_file)
        seconds = time.perf_counter() - start
        metric = evaluate(model, task, reference=model, device=args.device)
        model.to("cpu")
        summary = {"model": args.model, "data": args.data, "config": cfg.to_dict(), "seconds": round(seconds, 1),
                   "loss": history["loss"], "metric": metric}
        save_checkpoint(model, tmp / "checkpoint", extra={"train": summary})
        (tmp / "train.json").write_text(json.dumps(summary, indent=2))
    if state_file:
        Path(state_file).unlink(missing_ok=True)
    print(f"{metric['name']} = {metric['value']:.4f} after {cfg.epochs} epochs ({seconds:.0f} s); checkpoint in {args.out}/checkpoint")
    return 0


def _ints(text: str) -> tuple[int, ...]:
    return _shape(text)


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def _inputs(args, model, task):
    """Batch-1 example inputs: --input-shape (random, seeded), else the data, else the zoo's shape."""
    import torch

    from .models.spec import default_input_shape

    shape = args.input_shape or (None if task else default_input_shape(args.model))
    if shape:
        return (torch.randn(shape, generator=torch.Generator().manual_seed(0)),)
    if task is not None:
        return task.example_inputs(1)
    raise UserError(f"Cannot tell what input {args.model} takes: pass --input-shape, e.g. --input-shape 1,3,224,224, or --data.")


def _load(args):
    """Model, Task (or None) and example inputs from the common CLI options, failing fast on bad input."""
    import torch

    from .data import load_data
    from .models import load_model

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was given but no CUDA GPU is visible; use --device cpu.")
    model = load_model(args.model)
    task = None if args.data == "none" else load_data(args.data, data_dir=args.data_dir, model=model)
    return model, task, _inputs(args, model, task)


def _cmd_compress(args) -> int:
    from .models import load_model
    from .pipeline import compress
    from .recipe import Recipe

    recipe = Recipe.load(args.recipe)
    model, task, inputs = _load(args)
    teacher = load_model(args.teacher) if args.teacher else None
    report = compress(model, recipe, data=task, out_dir=args.out, example_inputs=inputs, device=args.device,
                      teacher=teacher, backends=args.backends, batch_sizes=args.batch, threads=args.threads,
                      labels={"model": args.model, "data": args.data}, metric_backend=args.metric_backend)
    from .report import render_markdown

    print(render_markdown(report))
    return 0


def _cmd_bench(args) -> int:
    from .compile.roofline import peak_gmacs, roofline
    from .measure import default_threads, measure
    from .pipeline import atomic_dir, environment

    if args.peers or args.against:
        return _cmd_peers(args)
    model, task, inputs = _load(args)
    threads = args.threads or default_threads()
    metrics = measure(model, inputs, backends=args.backends, batch_sizes=args.batch, data=task, reference=model,
                      threads=threads, device=args.device, repeats=args.repeats, metric_backend=args.metric_backend)
    result = {"model": args.model, "data": args.data, "device": args.device, "threads": threads,
              "environment": environment(), **metrics,
              "roofline": roofline(metrics["macs"], metrics["latency_ms"], peak_gmacs(threads, args.device))}
    if args.out:
        with atomic_dir(args.out) as tmp:
            (tmp / "bench.json").write_text(json.dumps(result, indent=2))
    if args.format == "json":
        print(json.dumps(result, indent=2))
    else:
        from .report.table import human_bytes, human_count

        print(f"{args.model}: {human_count(metrics['params'])} params ({human_count(metrics['nonzero_params'])} non-zero), "
              f"{human_count(metrics['macs'])} MACs, {human_bytes(metrics['size_bytes'])} "
              f"({human_bytes(metrics['compressed_size_bytes'])} zlib), peak memory {human_bytes(metrics['peak_memory_bytes'])}")
        if metrics["metric"]:
            print(f"{metrics['metric']['name']}: {metrics['metric']['value']:.4f}")
        roof = result["roofline"]
        print(f"measured peak (FP32 matmul): {roof['peak_gmacs']:.1f} GMAC/s")
        for key, lat in metrics["latency_ms"].items():
            print(f"  {key:<24} {lat['median']:10.3f} ms  (IQR {lat['iqr']:.3f})  "
                  f"{roof[key]['gmacs']:8.2f} GMAC/s = {roof[key]['fraction']:.1%} of peak")
    return 0


def _cmd_peers(args) -> int:
    from .compile.peers import peer_report, table
    from .measure import default_threads
    from .pipeline import atomic_dir

    model, task, inputs = _load(args)
    report = peer_report(model, inputs, labels={"model": args.model, "data": args.data}, task=task, against=args.against,
                         batch_sizes=args.batch, threads=args.threads or default_threads(), repeats=args.repeats,
                         device=args.device, progress=True)
    if args.out:
        from .report import write_reports

        with atomic_dir(args.out) as tmp:
            write_reports(report, tmp)
    if args.format == "json":
        print(json.dumps(report, indent=2))
    else:
        print(table(report["peers"]))
        print("\n".join(report["notes"]))
    return 0


def _cmd_search(args) -> int:
    import os

    from .search import SearchConfig, search
    from .search.objective import replace

    config = replace(SearchConfig.load(args.space), sampler=args.sampler, n_trials=args.n_trials, seed=args.seed)
    storage = args.storage or os.environ.get("SLIMKIT_STORAGE")
    results = search(config, args.out, storage=storage, workers=args.workers, device=args.device,
                     threads=args.threads, progress=True)
    if results is not None:  # None on torchrun's other ranks
        from .search.report import render_markdown

        print(render_markdown(results))
    return 0


def _cmd_report(args) -> int:
    from .report import read_report, render_markdown, write_comparison, write_reports

    if len(args.run_dirs) > 1:
        print(f"wrote {write_comparison(args.run_dirs, args.out)}")
        return 0
    report = read_report(args.run_dirs[0])
    write_reports(report, args.run_dirs[0])
    print(render_markdown(report))
    return 0


def _cmd_demo(args) -> int:
    from importlib.resources import files

    args.model, args.recipe, args.teacher, args.input_shape = "zoo:fashion-cnn", str(files("slimkit") / "recipes" / "demo.yaml"), None, None
    args.metric_backend = "onnxruntime"  # score the quantized model on the integer runtime it deploys to
    return _cmd_compress(args)


def _common(p, data_default: str | None = "none") -> None:
    p.add_argument("--data", default=data_default, help="fashion-mnist, digits, text, none, or package.module:callable")
    p.add_argument("--data-dir", help="folder with the Fashion-MNIST IDX files (default: Debian's location)")
    p.add_argument("--input-shape", type=_shape, help="batch-1 input shape for random inputs, e.g. 1,3,224,224")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--backends", type=_names, default=("eager", "onnxruntime"), help="comma list of eager,compile,onnxruntime")
    p.add_argument("--batch", type=_ints, default=(1, 64), help="comma list of batch sizes for latency")
    p.add_argument("--threads", type=int, help="intra-op threads for latency (default: all cores)")
    p.add_argument("--metric-backend", choices=["eager", "onnxruntime"], default="eager",
                   help="where the task metric is computed (onnxruntime: integer kernels for quantized models)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slimkit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model and save a checkpoint")
    p.add_argument("--model", required=True, help="SPEC: zoo:NAME, checkpoint path, package.module:callable, hf:DIR")
    p.add_argument("--data", required=True, help="fashion-mnist, digits, text or package.module:callable")
    p.add_argument("--data-dir", help="folder with the Fashion-MNIST IDX files")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--resume", action="store_true", help="save the training state to OUT.state.pt each epoch and resume from it")
    p.add_argument("--out", required=True)
    p.set_defaults(run=_cmd_train)

    p = sub.add_parser("compress", help="run a recipe, measure after every step, write a report")
    p.add_argument("--model", required=True, help="SPEC")
    p.add_argument("--recipe", required=True, help="YAML or JSON recipe file")
    p.add_argument("--teacher", help="SPEC of a fixed teacher (default: the model before each step)")
    p.add_argument("--out", required=True)
    _common(p)
    p.set_defaults(run=_cmd_compress)

    p = sub.add_parser("bench", help="measure a model: params, MACs, size, memory, latency per backend")
    p.add_argument("--model", required=True, help="SPEC")
    p.add_argument("--repeats", type=int, default=30, help="timed samples per latency number")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("--out", help="folder to write bench.json into (with --peers: report.json/.md/.html)")
    p.add_argument("--peers", action="store_true", help="time the obvious alternatives side by side: eager, "
                   "torch.compile, onnxruntime FP32 and its quantize_dynamic/quantize_static, torch dynamic int8")
    p.add_argument("--against", metavar="RUN_DIR", help="with --peers: add slimkit's result (a `slimkit compress` --out)")
    _common(p)
    p.set_defaults(run=_cmd_bench)

    p = sub.add_parser("search", help="hyper-parameter / architecture search with Optuna (resumable)")
    p.add_argument("--space", required=True, help="YAML or JSON search file (model, data, budget, objectives, params)")
    p.add_argument("--out", required=True, help="run folder (holds study.db by default); an existing search there is resumed")
    p.add_argument("--storage", help="Optuna storage URL, e.g. postgresql://user@host/db (password from PGPASSWORD; "
                   "default: $SLIMKIT_STORAGE, else sqlite in --out)")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    p.add_argument("--n-trials", type=int, help="finished trials to reach (overrides the space file)")
    p.add_argument("--sampler", choices=["tpe", "gp", "random", "nsga2"], help="overrides the space file (default tpe)")
    p.add_argument("--seed", type=int, help="sampler seed (overrides the space file)")
    p.add_argument("--threads", type=int, help="intra-op threads per worker (default: all cores // workers)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(run=_cmd_search)

    p = sub.add_parser("report", help="re-render a run's report.md/html, or compare several runs in one page")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", default="report-compare.html", help="where the comparison page of several RUN_DIRs goes")
    p.set_defaults(run=_cmd_report)

    p = sub.add_parser("demo", help="compress the shipped Fashion-MNIST baseline with the demo recipe")
    p.add_argument("--out", default="runs/demo")
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
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
