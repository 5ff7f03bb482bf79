"""Calibration one block at a time, for the techniques that fit each layer to its own inputs (GPTQ, AWQ,
SmoothQuant, SparseGPT, Wanda).

A transformer is a stack of repeated blocks. :func:`calibrate_blockwise` captures the inputs of the first block
once, then for each block in turn collects statistics of its layers' inputs, lets the technique change those
layers, and runs the changed block again to get the next block's inputs. So only one block's activations are held
at a time, and each block is calibrated on what the already compressed blocks before it produce (the errors
of earlier blocks are compensated, not ignored). Layers outside the blocks (a classifier head, ``lm_head``) are
calibrated last on a pass through the whole model; a model without repeated blocks is one group.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import Tensor, nn

from ..models.outputs import cache_off
from .layers import compute_weight

MIN_BLOCKS = 2


class InputStats:
    """Statistics of one layer's inputs, accumulated batch by batch over rows of ``features`` values.

    Always kept: the row count, each feature's squared norm (Wanda), largest magnitude (SmoothQuant) and mean
    magnitude (AWQ). On request: the Gram matrix ``X^T X`` (``gram``; GPTQ's and SparseGPT's Hessian) and the
    first ``keep_rows`` rows themselves (AWQ's scale search).
    """

    def __init__(self, features: int, gram: bool = False, keep_rows: int = 0):
        self.features, self.keep_rows, self.rows = features, keep_rows, 0
        self.sq_norm = torch.zeros(features, dtype=torch.float64)
        self.abs_max = torch.zeros(features)
        self._abs_sum = torch.zeros(features, dtype=torch.float64)
        self.gram = torch.zeros(features, features, dtype=torch.float64) if gram else None
        self._kept: list[Tensor] = []

    @torch.no_grad()
    def add(self, x: Tensor) -> None:
        """Take a batch of inputs whose last dimension is the features."""
        x = x.detach().reshape(-1, self.features).float().cpu()
        self.rows += len(x)
        self.sq_norm += x.double().square().sum(0)
        self.abs_max = torch.maximum(self.abs_max, x.abs().amax(0))
        self._abs_sum += x.double().abs().sum(0)
        if self.gram is not None:
            self.gram += x.double().T @ x.double()
        room = self.keep_rows - sum(len(k) for k in self._kept)
        if room > 0:
            self._kept.append(x[:room].clone())

    @property
    def abs_mean(self) -> Tensor:
        """Each feature's mean magnitude."""
        return (self._abs_sum / max(self.rows, 1)).float()

    @property
    def norm(self) -> Tensor:
        """Each feature's L2 norm over all rows seen."""
        return self.sq_norm.sqrt().float()

    @property
    def hessian(self) -> Tensor:
        """``2 X^T X / rows`` in float64: the Hessian of the layer's squared output error in its weights."""
        if self.gram is None:
            raise ValueError("InputStats(gram=True) keeps the Gram matrix; this one was made without it")
        return 2 * self.gram / max(self.rows, 1)

    @property
    def kept(self) -> Tensor:
        """The rows kept (up to ``keep_rows``), shape (rows, features)."""
        return torch.cat(self._kept) if self._kept else torch.zeros(0, self.features)


MakeStats = Callable[[str, nn.Module], InputStats]
Process = Callable[[dict[str, InputStats]], None]


def repeated_blocks(model: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """(name, list) of the ModuleList holding the most parameters whose entries are ``MIN_BLOCKS`` or more modules
    of one class (a transformer's layers), or None."""
    best, best_size = None, 0
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) >= MIN_BLOCKS and len({type(m) for m in module}) == 1:
            size = sum(p.numel() for p in module.parameters())
            if size > best_size:
                best, best_size = (name, module), size
    return best


@torch.no_grad()
def calibrate_blockwise(model: nn.Module, batches: Iterable[tuple[Tensor, ...]], targets: dict[str, nn.Module],
                        make_stats: MakeStats, process: Process, progress: bool = False) -> None:
    """Collect input statistics of ``targets`` (name -> layer of ``model``) block by block and hand each group to
    ``process``, which may change or replace those layers before the next block is calibrated.

    Args:
        batches: model inputs (tuples), used for every block.
        make_stats: the :class:`InputStats` to fill for a layer (its name and module).
        process: called once per group with {layer name: its stats}; a layer never called has ``rows == 0``.
        progress: show a progress bar over the blocks.
    """
    batches = [tuple(b) for b in batches]
    options = cache_off(model)
    found = repeated_blocks(model)
    prefixes = [f"{found[0]}.{i}." if found[0] else f"{i}." for i in range(len(found[1]))] if found else []
    grouped = [{n: m for n, m in targets.items() if n.startswith(p)} for p in prefixes]
    rest = {n: m for n, m in targets.items() if not any(n.startswith(p) for p in prefixes)}
    if any(grouped):
        inputs = _block_inputs(model, found[1][0], batches, options)
        bar = _bar(len(grouped), progress)
        for block, group in zip(found[1], grouped):
            if group:
                process(_collect(group, make_stats, lambda: [block(*a, **k) for a, k in inputs]))
            inputs = [_next_inputs(args, kwargs, block(*args, **kwargs)) for args, kwargs in inputs]
            bar.update()
        bar.close()
    if rest:
        process(_collect(rest, make_stats, lambda: [model(*b, **options) for b in batches]))


def _collect(group: dict[str, nn.Module], make_stats: MakeStats, run: Callable[[], object]) -> dict[str, InputStats]:
    """Stats of ``group``'s inputs while ``run()`` runs."""
    stats = {name: make_stats(name, layer) for name, layer in group.items()}
    hooks = [layer.register_forward_pre_hook(lambda _, args, s=stats[name]: s.add(args[0]))
             for name, layer in group.items()]
    try:
        run()
    finally:
        for hook in hooks:
            hook.remove()
    return stats


class _Captured(Exception):
    """Raised by the hook on the first block once its inputs are recorded: the rest of the model is not run."""


def _block_inputs(model: nn.Module, first: nn.Module, batches: list[tuple], options: dict) -> list[tuple[tuple, dict]]:
    """The (args, kwargs) the first block is called with, for each batch."""
    captured = []

    def record(_, args, kwargs):
        captured.append((args, kwargs))
        raise _Captured

    hook = first.register_forward_pre_hook(record, with_kwargs=True)
    try:
        for batch in batches:
            try:
                model(*batch, **options)
            except _Captured:
                pass
    finally:
        hook.remove()
    return captured


def _next_inputs(args: tuple, kwargs: dict, output) -> tuple[tuple, dict]:
    """The next block's inputs: this block's, with the hidden states replaced by its output."""
    hidden = output[0] if isinstance(output, (tuple, list)) else output
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


def _bar(total: int, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="blocks", disable=not progress, leave=False)


def input_features(layer: nn.Module) -> int:
    """The number of input features of a Linear (or transformers' Conv1D)."""
    return compute_weight(layer).shape[1]
