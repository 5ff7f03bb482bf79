"""``slimkit bench --peers`` as a function: the peers report, with the torch_pruning peer fine-tuned by slimkit."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from torch import nn

from ...data.task import Task
from ...errors import UserError
from ...files import atomic_dir, check_out
from ...measure import default_threads, example_inputs as synthesized_inputs
from ...models.checkpoint import run_labels
from ...pipeline import apply
from ...report import write_reports
from ...train import FineTune, cosine_to_teacher, fit
from .core import PEERS, peer_report


def fine_tuner(config: FineTune, model: nn.Module, task: Task) -> Callable[[nn.Module], nn.Module]:
    """What a peer that trains (torch_pruning) does to its pruned model: ``config`` on ``task`` through slimkit's
    API (:func:`slimkit.apply`); an embedding task is tuned with :func:`slimkit.fit` towards ``model``'s
    embeddings, which the reported cosine compares with."""
    def fine_tune(pruned: nn.Module) -> nn.Module:
        if task.metric == "cosine":
            fit(pruned, task, config, loss_fn=cosine_to_teacher(model.eval(), task.n_inputs), progress=False)
            return pruned.cpu()
        return apply(pruned, config, data=task)

    return fine_tune


def bench_peers(model: nn.Module, example_inputs: tuple | None = None, *, task: Task | None = None, include=PEERS,
                against: str | Path | None = None, macs_target: float | None = None, fine_tune: FineTune | None = None,
                batch_sizes=(1, 64), threads: int | None = None, repeats: int = 30, device: str = "cpu",
                progress: bool = False, labels: dict | None = None, out_dir: str | Path | None = None,
                overwrite: bool = False) -> dict:
    """The peers report of ``model`` (:func:`peer_report`, whose options these are) as ``slimkit bench --peers``
    makes it, written as report.json/.md/.html to ``out_dir`` when given (the rules of :func:`slimkit.bench`).

    ``fine_tune``: the FineTune config the torch_pruning peer is fine-tuned with on ``task`` (:func:`fine_tuner`;
    None: pruned only); the report's notes say so. ``example_inputs`` default to
    :func:`slimkit.example_inputs` of the model and ``task``; ``labels`` as in :func:`slimkit.compress`.
    """
    if out_dir is not None:
        check_out(out_dir, overwrite)
    if fine_tune is not None and task is None:
        raise UserError("--peer-epochs fine-tunes the torch_pruning peer on the training data: pass --data.")
    if example_inputs is None:
        example_inputs = synthesized_inputs(model, data=task, batch_sizes=batch_sizes)
    labels = run_labels(model, task, labels)
    report = peer_report(model, example_inputs, labels=labels, task=task, against=against, include=include,
                         batch_sizes=batch_sizes, threads=threads or default_threads(), repeats=repeats, device=device,
                         progress=progress, macs_target=macs_target,
                         fine_tune=None if fine_tune is None else fine_tuner(fine_tune, model, task))
    if fine_tune is not None and any(p["name"] == "torch_pruning" for p in report["peers"]):
        how = "slimkit.fit towards the FP32 embeddings" if task.metric == "cosine" else "slimkit.apply"
        report["notes"].append(f"peers: torch_pruning was fine-tuned with {how}: {_as_call(fine_tune)} on "
                               f"{labels['data']} (FineTune's defaults otherwise)")
    if out_dir is not None:
        with atomic_dir(out_dir, overwrite, kind="bench") as tmp:
            write_reports(report, tmp)
    return report


def _as_call(config: FineTune) -> str:
    """``config`` as the call that makes it, with its epochs and the fields that differ from the defaults."""
    default = FineTune()
    fields = [f"{f.name}={getattr(config, f.name)!r}" for f in dataclasses.fields(config)
              if f.name == "epochs" or getattr(config, f.name) != getattr(default, f.name)]
    return f"FineTune({', '.join(fields)})"
