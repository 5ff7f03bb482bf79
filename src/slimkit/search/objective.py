"""One trial: build the model, train it with slimkit's training loop on the budget's subset, score it on
the held-out validation split (reporting every epoch to the pruner), measure MACs/size/latency, and keep
its checkpoint under ``trials/NNNN`` (written as ``trials/.NNNN.PID.*`` and renamed when complete)."""
from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from ..data.task import Task
from ..errors import UserError
from ..measure.counts import count_macs, count_params
from ..measure.metric import evaluate
from ..measure.size import artifact_size
from ..train import Callback, FineTune, fit, rank_and_world
from .config import SearchConfig

TRIALS_DIR = "trials"


def split(task: Task, config: SearchConfig) -> tuple[Task, Task, Task]:
    """(train, val, test) tasks: val is held out from the end of the training split, never trained on."""
    budget = config.budget
    n = task.train_size
    if budget.val >= n:
        raise UserError(f"budget.val: {budget.val} held-out samples leave none to train on ({n} in the training split).")
    train_end = n - budget.val if budget.train is None else min(budget.train, n - budget.val)
    held_out = task.train_rows(n - budget.val)
    val = dataclasses.replace(task, name=f"{task.name}-val", train=held_out, test=held_out, augment=None)
    train = dataclasses.replace(task, train=task.train_rows(None, train_end), test=held_out)
    return train, val, task.subset(test=budget.test)


def trial_params(values: dict) -> tuple[dict, dict]:
    """Split sampled values into (training options, model-builder parameters), prefixes removed."""
    train = {k[len("train."):]: v for k, v in values.items() if k.startswith("train.")}
    model = {k[len("model."):]: v for k, v in values.items() if k.startswith("model.")}
    return train, model


def build_model(config: SearchConfig, model_params: dict, task: Task) -> nn.Module:
    """The trial's model, with an origin SPEC so its checkpoint reloads with ``slimkit.load_model``."""
    from ..arch import ArchNet, arch_spec
    from ..models.checkpoint import set_origin
    from ..models.spec import import_callable, load_model

    if "spec" in config.model:
        return load_model(config.model["spec"])
    shape = tuple(task.example_inputs(1)[0].shape[1:])
    classes = 0
    if task.metric == "top1":
        classes = len(task.classes) or 1 + max(int(batch[-1].max()) for batch in task.train_batches(4096))
    model = import_callable(config.model["builder"])(model_params, shape, classes)
    if not isinstance(model, nn.Module):
        raise UserError(f"model.builder {config.model['builder']} returned {type(model).__name__}, not an nn.Module.")
    return set_origin(model, arch_spec(model), []) if isinstance(model, ArchNet) else model


def measure_objectives(model: nn.Module, config: SearchConfig, val: Task, metric: float, out_dir: Path) -> dict:
    """{objective label: value} plus params/macs/size for the record; a ``table`` latency objective uses the
    run folder's per-block latency table."""
    from ..measure import default_threads
    from ..measure.latency import measure_latency
    from .latency_table import TABLE_FILE, LatencyTable

    example = val.example_inputs(1)
    model = model.eval().cpu()
    out = {"metric": metric, "params": count_params(model)[0], "macs": count_macs(model, example)[0],
           "size_bytes": artifact_size(model)[0]}
    for obj in config.objectives:
        if obj.name != "latency":
            continue
        threads = obj.threads or default_threads()
        if obj.table:
            table = LatencyTable(out_dir / TABLE_FILE, obj.backend, obj.batch, threads, obj.repeats)
            out[obj.label] = table.estimate(model, example)
        else:
            timing = measure_latency(model, example, (obj.backend,), (obj.batch,), threads, repeats=obj.repeats)
            out[obj.label] = timing[f"{obj.backend}/bs{obj.batch}"]["median"]
    return out


class _ReportEpochs(Callback):
    """Scores the validation split after every epoch and lets the Optuna pruner stop the trial."""

    def __init__(self, trial, val: Task, device: str, prune: bool):
        self.trial, self.val, self.device, self.prune, self.scores = trial, val, device, prune, []

    def on_epoch(self, model, epoch, history):
        import optuna

        self.scores.append(evaluate(model, self.val, device=self.device)["value"])
        model.train()
        if self.prune:
            self.trial.report(self.scores[-1], epoch)
            if self.trial.should_prune():
                raise optuna.TrialPruned(f"validation {self.scores[-1]:.4f} after epoch {epoch}")


class TrialObjective:
    """``objective(trial) -> values`` for Optuna, in the order of ``config.objectives``.

    Args:
        config: the search file.
        task: the full task (split into train/val/test here).
        out_dir: the run folder; each trial's checkpoint goes to ``trials/NNNN``.
        device: where trials train.
    """

    def __init__(self, config: SearchConfig, task: Task, out_dir: str | Path, device: str = "cpu"):
        self.config, self.device, self.out = config, device, Path(out_dir)
        self.train, self.val, _ = split(task, config)

    def __call__(self, trial):
        start = time.perf_counter()
        train_opts, model_params = trial_params(self.config.space.sample(trial))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        options = {"epochs": self.config.budget.epochs, "max_batches": self.config.budget.max_batches,
                   "seed": self.config.seed, **train_opts}
        try:
            cfg = FineTune.from_dict(options)
        except ValueError as exc:
            raise UserError(f"trial {trial.number}: training options {options} are invalid: {exc}") from exc
        torch.manual_seed(self.config.seed)
        model = build_model(self.config, model_params, self.train)
        reporter = _ReportEpochs(trial, self.val, self.device, prune=self.config.pruner != "none")
        fit(model, self.train, cfg, device=self.device, progress=False, callbacks=(reporter,))
        rank, processes = rank_and_world(torch.device(self.device))  # (0, 1) unless under torchrun
        values = measure_objectives(model, self.config, self.val, reporter.scores[-1], self.out) if rank == 0 else {}
        values.update(train_seconds=round(time.perf_counter() - start, 2), processes=processes)
        trial.set_user_attr("measured", values)  # under torchrun: collective calls, rank 0's value is stored
        trial.set_user_attr("fine_tune", cfg.to_dict())
        if self._saves(model):
            path = self._save(trial.number, model) if rank == 0 else None
            trial.set_user_attr("checkpoint", path and str(path.resolve()))
        return tuple(values[o.label] for o in self.config.objectives) if rank == 0 else None

    @staticmethod
    def _saves(model: nn.Module) -> bool:
        """Only builder models with an origin SPEC get a checkpoint that reloads."""
        from ..models.checkpoint import origin

        return origin(model)["base"] is not None

    def _save(self, number: int, model: nn.Module) -> Path:
        """Write the trial's checkpoint atomically (a killed worker leaves no half-written folder)."""
        from ..models.checkpoint import save_checkpoint

        final = self.out / TRIALS_DIR / f"{number:04d}"
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{number:04d}.{os.getpid()}.", dir=final.parent))
        save_checkpoint(model, tmp)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        return final

