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
