"""The one training loop (fine-tuning, distillation, QAT, search trials), the ``fine_tune`` step, and
:func:`train`, which trains a model into a run folder (``slimkit train``).

Runs on CPU or CUDA, shows a progress bar, is seedable, saves/resumes a training-state file, and runs
under ``torchrun`` with DistributedDataParallel (gloo on CPU, NCCL on CUDA) without code changes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Callable, Iterator, Literal

import torch
from torch import Tensor, nn

from .data.task import Task
from .devices import check_device
from .errors import UserError
from .files import atomic_dir, check_out
from .graph.layers import weighted
from .graph.masks import make_permanent, set_masks
from .measure.metric import evaluate
from .models.checkpoint import run_labels, save_checkpoint
from .recipe import StepConfig, check, register

LossFn = Callable[[nn.Module, tuple[Tensor, ...]], Tensor]


@dataclasses.dataclass
class FineTune(StepConfig):
    """Train the model on the task's training split.

    Args:
        epochs: passes over the training data.
        lr: peak learning rate.
        batch_size: samples per step (per process under DDP).
        optimizer: ``sgd`` (momentum 0.9, Nesterov) or ``adamw``.
        weight_decay: L2 penalty (decoupled for AdamW).
        label_smoothing: for classification tasks.
        schedule: ``onecycle``, ``cosine`` or ``constant`` learning rate (``onecycle`` runs of fewer than
            8 steps anneal like ``cosine``: too short for a warm-up phase).
        max_batches: stop each epoch after this many batches (quick runs); null = whole epoch.
        seed: seeds shuffling, augmentation and initialisation of anything random.
        keep_zeros: Linear/Conv weights that are exactly zero (pruned) stay zero while training, so
            fine-tuning after unstructured pruning keeps the sparsity.
    """

    key = "fine_tune"
    needs_data = True
    epochs: int = 1
    lr: float = 0.01
    batch_size: int = 128
    optimizer: Literal["sgd", "adamw"] = "sgd"
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    max_batches: int | None = None
    seed: int = 0
    keep_zeros: bool = True

    def __post_init__(self):
        check(1 <= self.epochs <= 1000, "epochs", f"must be in [1, 1000], got {self.epochs}")
        check(0 < self.lr <= 10, "lr", f"must be in (0, 10], got {self.lr}")
        check(1 <= self.batch_size <= 65536, "batch_size", f"must be in [1, 65536], got {self.batch_size}")
        check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        check(0 <= self.label_smoothing < 1, "label_smoothing", f"must be in [0, 1), got {self.label_smoothing}")
        check(self.max_batches is None or self.max_batches >= 1, "max_batches", "must be >= 1 or null")
        check(0 <= self.seed < 2**32, "seed", f"must be in [0, 2**32), got {self.seed}")

    def batches_per_epoch(self, train_size: int, world_size: int = 1) -> int:
        """Optimizer steps per epoch on ``train_size`` samples shared by ``world_size`` processes."""
        n = math.ceil(train_size / world_size / self.batch_size)
        return min(n, self.max_batches or n)


def rank_and_world(device: torch.device) -> tuple[int, int]:
    """(rank, world size); initialises the process group (NCCL for CUDA, else gloo) under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return (torch.distributed.get_rank(), world) if world > 1 else (0, 1)


def _optimizer(model: nn.Module, cfg: FineTune) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)


def _scheduler(opt, cfg: FineTune, steps: int):
    # torch's OneCycleLR divides by a phase length that is zero for some runs under 8 steps (e.g. 4):
    # such short runs anneal from the peak without a warm-up instead.
    if cfg.schedule == "onecycle" and steps >= 8:
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.25)
    if cfg.schedule in ("cosine", "onecycle"):
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


class Callback:
    """Hooks :func:`fit` calls while training; override the ones you need (each defaults to doing nothing)."""

    def on_step(self, model: nn.Module, step: int, total: int) -> None:
        """After optimizer step ``step`` (1-based) of ``total`` steps in the whole run."""

    def on_epoch(self, model: nn.Module, epoch: int, history: dict) -> None:
        """After epoch ``epoch`` (1-based); ``history["loss"]`` holds the mean loss of every epoch so far."""


def classification_loss(label_smoothing: float = 0.0) -> LossFn:
    """Cross-entropy on (inputs..., labels) batches."""
    ce = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    return lambda model, batch: ce(model(*batch[:-1]), batch[-1])


def fit(
    model: nn.Module,
    task: Task,
    cfg: FineTune,
    *,
    loss_fn: LossFn | None = None,
    device: str | torch.device = "cpu",
    state_file: str | Path | None = None,
    progress: bool = True,
    callbacks: tuple[Callback, ...] = (),
) -> dict:
    """Train ``model`` in place on the task's training split; returns {"loss": [mean loss per epoch], "epochs"}.

    Args:
        loss_fn: ``loss_fn(model, batch)``; default cross-entropy with ``cfg.label_smoothing``.
        device: where to train; the model is moved there and left there.
        state_file: if given, the training state is saved there after every epoch and training
            resumes from it when it exists (same cfg expected).
        progress: show a progress bar (rank 0 only).
        callbacks: :class:`Callback` objects told about every step and epoch (e.g. gradual pruning).
    """
    from tqdm.auto import tqdm

    device = torch.device(device)
    rank, world = rank_and_world(device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    torch.manual_seed(cfg.seed)
    model.to(device).train()
    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    loss_fn = loss_fn or classification_loss(cfg.label_smoothing)
    per_epoch = cfg.batches_per_epoch(task.train_size, world)
    opt = _optimizer(model, cfg)
    sched = _scheduler(opt, cfg, per_epoch * cfg.epochs)
    history, start = {"loss": []}, 0
    if state_file and Path(state_file).exists():
        history, start = _resume(state_file, model, opt, sched, device)
    for epoch in range(start, cfg.epochs):
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        total, count = 0.0, 0
        bar = tqdm(total=per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress or rank != 0, leave=False)
        for i, batch in enumerate(task.train_batches(cfg.batch_size, shuffle=True, generator=gen, rank=rank, world_size=world)):
            if i >= per_epoch:
                break
            batch = tuple(t.to(device) for t in batch)
            if task.augment is not None:
                batch = (task.augment(batch[0]), *batch[1:])
            loss = loss_fn(net, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            for callback in callbacks:
                callback.on_step(model, epoch * per_epoch + i + 1, per_epoch * cfg.epochs)
            total, count = total + loss.item(), count + 1
            bar.set_postfix(loss=f"{total / count:.4f}")
            bar.update()
        bar.close()
        history["loss"].append(total / max(count, 1))
        for callback in callbacks:
            callback.on_epoch(model, epoch + 1, history)
        if state_file and rank == 0:
            partial = Path(f"{state_file}.partial")  # a kill during the save leaves the last state intact
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                        "history": history, "epoch": epoch + 1}, partial)
            partial.replace(state_file)
    model.eval()
    history["epochs"] = cfg.epochs
    return history


def train(model: nn.Module, data: Task, config: FineTune, out_dir: str | Path, *, device: str = "cpu",
          overwrite: bool = False, resume: bool = False, progress: bool = True, labels: dict | None = None) -> dict:
    """Train ``model`` in place with :func:`fit`, score it on ``data``'s test split and write the run folder
    ``out_dir`` (checkpoint/ and train.json) as ``slimkit train`` does. Returns the summary that train.json holds
    (and the checkpoint's history records): {"model", "data", "config", "seconds", "loss": [per epoch], "metric"}.

    ``out_dir`` must be new or empty, or an earlier slimkit run with ``overwrite``; it appears only when complete.
    With ``resume`` the training state is saved beside it (``.NAME.slimkit-resume.pt``) after every epoch, an
    interrupted run continues from there, and the file goes once the run is written. ``labels`` names the model
    and data as in :func:`slimkit.compress`. The model is left on the CPU.
    """
    out = check_out(out_dir, overwrite)
    check_device(device)
    state_file = out.parent / f".{out.name}.slimkit-resume.pt" if resume else None
    with atomic_dir(out, overwrite, kind="train") as tmp:
        start = time.perf_counter()
        history = fit(model, data, config, device=device, state_file=state_file, progress=progress)
        seconds = time.perf_counter() - start
        metric = evaluate(model, data, reference=model, device=device)
        model.to("cpu")
        summary = {**run_labels(model, data, labels), "config": config.to_dict(), "seconds": round(seconds, 1),
                   "loss": history["loss"], "metric": metric}
        save_checkpoint(model, tmp / "checkpoint", extra={"train": summary})
        (tmp / "train.json").write_text(json.dumps(summary, indent=2))
    if state_file:
        state_file.unlink(missing_ok=True)
    return summary


def _resume(state_file: str | Path, model: nn.Module, opt, sched, device) -> tuple[dict, int]:
    """Load a training-state file into model, optimizer and scheduler; (history, epochs done)."""
    try:
        state = torch.load(state_file, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        return state["history"], int(state["epoch"])
    except Exception as exc:  # any unreadable or mismatched file is the same bad input
        raise UserError(f"{state_file}: cannot resume from this training state ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); delete it to start over.") from None


def cosine_distance(output: Tensor, target: Tensor) -> Tensor:
    """1 - cosine similarity along the last dimension, batch-averaged."""
    return 1 - nn.functional.cosine_similarity(output, target, dim=-1).mean()


def cosine_to_teacher(teacher: nn.Module, n_inputs: int) -> LossFn:
    """Loss for embedding tasks without labels: 1 - cosine(student(x), teacher(x))."""
    def loss(model, batch):
        with torch.no_grad():
            target = teacher(*batch[:n_inputs])
        return cosine_distance(model(*batch[:n_inputs]), target)

    return loss


@contextlib.contextmanager
def zeros_kept(model: nn.Module) -> Iterator[None]:
    """Inside the block, Linear/Conv weights that are exactly zero (pruned) stay zero while the rest train.

    Clustered and quantized layers are not touched: their weights are not plain parameters.
    """
    layers = {name: m for name, m in model.named_modules() if weighted(m)
              and isinstance(getattr(m, "weight", None), nn.Parameter) and bool((m.weight == 0).any())}
    set_masks(layers, {name: layer.weight.detach() != 0 for name, layer in layers.items()})
    try:
        yield
    finally:
        make_permanent(layers)


@register(FineTune)
def fine_tune(model: nn.Module, cfg: FineTune, ctx) -> nn.Module:
    """Fine-tune on ctx.task; embedding tasks are tuned towards the embeddings of the model the run started
    from (``ctx.reference``, which the reported cosine compares with), not the pruned model before this step."""
    task = ctx.require_task("fine_tune")
    loss_fn = None
    if task.metric == "cosine":
        loss_fn = cosine_to_teacher(ctx.reference.to(ctx.device).eval(), task.n_inputs)
    with zeros_kept(model) if cfg.keep_zeros else contextlib.nullcontext():
        fit(model, task, cfg, loss_fn=loss_fn, device=ctx.device, progress=ctx.progress)
    return model.to("cpu")
