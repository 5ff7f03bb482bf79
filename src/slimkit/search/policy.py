"""Compression policy search (AMC-style): per-group channel-pruning ratios chosen by Optuna under a MACs budget.

A :class:`PruningProblem` scores any per-group ratios cheaply: prune a copy, recalibrate BatchNorm on a
few training batches, measure the metric on a validation slice held out of the training split (never
the test split). Candidates that miss the budget are projected onto it rather than wasted. The best
:class:`Policy` becomes a ``channel_prune`` recipe with one ratio per group.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..data.task import Task
from ..errors import UserError
from ..measure.metric import evaluate
from ..prune import MAX_RATIO, ChannelPrune, ChannelPruner, shrink
from ..recipe import Recipe, StepConfig

Ratios = list[float]


def holdout(task: Task, n_val: int) -> tuple[Task, Task]:
    """Split the training data: (task without its last ``n_val`` training samples, validation task).

    The validation task trains (recalibrates) on the remaining training samples and is scored on the held-out
    ones, so a search never sees the test split.
    """
    n = task.train_size
    if not 0 < n_val < n:
        raise UserError(f"n_val must be between 1 and {n - 1} (the training split has {n} samples), got {n_val}.")
    train, val = task.train_rows(None, -n_val), task.train_rows(-n_val)
    return (dataclasses.replace(task, train=train),
            dataclasses.replace(task, name=f"{task.name}-val", train=train, test=val, augment=None))


@torch.no_grad()
def recalibrate_bn(model: nn.Module, task: Task, n_batches: int = 8, batch_size: int = 128) -> nn.Module:
    """Re-estimate BatchNorm running statistics on the first training batches (cumulative average); eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    for batch in task.input_batches(n_batches, batch_size):
        model(*batch)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return model.eval()


@dataclasses.dataclass
class Policy:
    """Per-group channel-pruning ratios, their MACs and their proxy score.

    Attributes:
        layers: per group, the layers whose output channels it is (``ChannelPruner.group_layers``).
        ratios: per group, the fraction of channels removed.
        macs_fraction: MACs kept, as a fraction of the unpruned model's.
        score: the proxy metric on the validation slice (after BatchNorm recalibration).
        importance, round_to: the ChannelPrune options the ratios were chosen with.
    """

    layers: list[tuple[str, ...]]
    ratios: Ratios
    macs_fraction: float
    score: float
    importance: str = "l2"
    round_to: int = 1

    def channel_prune(self) -> ChannelPrune:
        """The ``channel_prune`` step that applies this policy (one exact layer name per group)."""
        return ChannelPrune(ratio=0.0, importance=self.importance, round_to=self.round_to,
                            ratios={layers[0]: r for layers, r in zip(self.layers, self.ratios)})

    def recipe(self, *after: StepConfig) -> Recipe:
        """A recipe that prunes by this policy, then runs ``after`` (e.g. a FineTune)."""
        return Recipe([self.channel_prune(), *after])

    def save_recipe(self, path: str | Path, *after: StepConfig) -> Path:
        """Write :meth:`recipe` as YAML (``.json`` suffix: JSON) that ``slimkit compress --recipe`` accepts."""
        import yaml

        path, data = Path(path), self.recipe(*after).to_dict()
        path.write_text(json.dumps(data, indent=2) if path.suffix == ".json" else yaml.safe_dump(data, sort_keys=False))
        return path

    def to_dict(self) -> dict:
        return {"groups": {"+".join(layers): r for layers, r in zip(self.layers, self.ratios)},
                "macs_fraction": self.macs_fraction, "score": self.score}


class PruningProblem:
    """A model's channel groups, a MACs budget and a cheap proxy score for any per-group ratios.

    Args:
        model: the trained model (not modified).
        val: validation task (see :func:`holdout`): BatchNorm is recalibrated on its training split and
            the metric is measured on its test split.
        target_macs: fraction of the model's MACs to keep, in (0, 1).
        importance, round_to: as in :class:`~slimkit.prune.ChannelPrune`.
        recal_batches, batch_size: BatchNorm recalibration batches per score.
    """

    def __init__(self, model: nn.Module, val: Task, target_macs: float, importance: str = "l2", round_to: int = 1,
                 recal_batches: int = 8, batch_size: int = 128):
        if not 0 < target_macs < 1:
            raise UserError(f"target_macs must be the fraction of MACs kept, in (0, 1), got {target_macs}; "
                            "e.g. 0.5 keeps half of the model's MACs.")
        self.model, self.val, self.target_macs = model.eval(), val, target_macs
        self.importance, self.round_to = importance, round_to
        self.recal_batches, self.batch_size = recal_batches, batch_size
        self.pruner = ChannelPruner(model, val.example_inputs(1), importance, task=val)
        if not self.pruner.groups:
            raise UserError(f"{type(model).__name__} has no prunable channel group; nothing to search.")
        self.base_macs = self.pruner.layer_macs[0]
        self.evaluations = 0

    @property
    def n_groups(self) -> int:
        return len(self.pruner.groups)

    def macs_fraction(self, ratios: Sequence[float]) -> float:
        """MACs kept by ``ratios`` (one per group), as a fraction of the unpruned model's."""
        return self.pruner.macs(list(ratios), self.round_to) / self.base_macs

    def feasible(self, ratios: Sequence[float]) -> bool:
        return self.macs_fraction(ratios) <= self.target_macs

    def pruned(self, ratios: Sequence[float]) -> nn.Module:
        """A pruned copy of the model (weights not recalibrated)."""
        return shrink(copy.deepcopy(self.model), self.pruner.plan(list(ratios), self.round_to))

    def score(self, ratios: Sequence[float]) -> float:
        """The proxy: validation metric of the pruned copy after BatchNorm recalibration."""
        self.evaluations += 1
        model = recalibrate_bn(self.pruned(ratios), self.val, self.recal_batches, self.batch_size)
        return evaluate(model, self.val)["value"]

    def policy(self, ratios: Sequence[float], score: float) -> Policy:
        return Policy(list(self.pruner.group_layers), [float(r) for r in ratios], self.macs_fraction(ratios), score,
                      self.importance, self.round_to)

    def uniform(self) -> Ratios:
        """One global ratio for every group, solved for the budget (what ``ChannelPrune(target_macs=...)`` does)."""
        return [self.pruner.solve(self.target_macs, self.round_to)] * self.n_groups

    def project(self, ratios: Sequence[float], caps: Sequence[float], iterations: int = 16) -> Ratios:
        """Move ``ratios`` onto the budget: over it, towards ``caps``; under it, towards no pruning.

        Returns the closest point on that segment that keeps at most ``target_macs`` of the MACs.
        """
        ratios, caps = list(ratios), list(caps)
        if self.feasible(ratios):
            def point(t):  # t = 0: the candidate; t = 1: nothing pruned
                return [r * (1 - t) for r in ratios]
            lo, hi = 0.0, 1.0  # point(lo) is feasible; find the largest feasible t
            if self.feasible(point(hi)):
                return point(hi)
            for _ in range(iterations):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if self.feasible(point(mid)) else (lo, mid)
            return point(lo)

        def point(t):  # t = 0: the candidate; t = 1: every group at its cap
            return [r + t * (c - r) for r, c in zip(ratios, caps)]
        if not self.feasible(point(1.0)):
            raise UserError(f"target_macs={self.target_macs} cannot be reached with the ratio caps "
                            f"{[round(c, 3) for c in caps]}; raise the caps (sensitivity tolerance) or target_macs.")
        lo, hi = 0.0, 1.0  # point(hi) is feasible; find the smallest feasible t
        for _ in range(iterations):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if self.feasible(point(mid)) else (mid, hi)
        return point(hi)


def search_policy(problem: PruningProblem, n_trials: int, caps: Sequence[float] | None = None, *,
                  sampler: str = "tpe", seed: int = 0, storage: str | None = None, study_name: str = "policy",
                  progress: bool = True) -> tuple[Policy, "optuna.Study"]:  # noqa: F821
    """Search per-group pruning ratios with Optuna, maximising the proxy score within the MACs budget.

    Each trial samples a ratio in ``[0, cap]`` for every group whose cap is above zero, projects it onto the
    budget (:meth:`PruningProblem.project`) and scores the projected ratios. The first trial is the uniform
    policy (clipped to the caps), so the search starts from what ``ChannelPrune(target_macs=...)`` would do.

    Args:
        caps: the largest ratio per group (see :func:`~slimkit.search.sensitivity.ratio_caps`);
            default ``MAX_RATIO`` everywhere.
        sampler: ``tpe`` (default), ``gp``, ``random`` or ``nsga2``.
        storage: an Optuna storage URL (default: in memory).

    Returns:
        The best policy and the Optuna study (every trial keeps its projected ``ratios`` as a user attribute).
    """
    from .study import make_sampler, open_study, run_trials

    if n_trials < 1:
        raise UserError(f"n_trials must be >= 1, got {n_trials}.")
    caps = [MAX_RATIO] * problem.n_groups if caps is None else [float(c) for c in caps]
    if len(caps) != problem.n_groups:
        raise UserError(f"caps: expected {problem.n_groups} values (one per channel group), got {len(caps)}.")
    names = ["+".join(layers) for layers in problem.pruner.group_layers]
    searched = [i for i, c in enumerate(caps) if c > 0]

    def objective(trial) -> float:
        sampled = [0.0] * problem.n_groups
        for i in searched:
            sampled[i] = trial.suggest_float(names[i], 0.0, caps[i])
        ratios = problem.project(sampled, caps)
        trial.set_user_attr("ratios", ratios)
        trial.set_user_attr("macs_fraction", problem.macs_fraction(ratios))
        return problem.score(ratios)

    study = open_study(storage, study_name, make_sampler(sampler, seed, n_trials), ["maximize"])
    if not study.trials:
        uniform = problem.uniform()
        study.enqueue_trial({names[i]: min(uniform[i], caps[i]) for i in searched})
    run_trials(study, objective, n_trials, progress=progress)
    best = study.best_trial
    return problem.policy(best.user_attrs["ratios"], best.value), study

