"""Hyper-parameter and architecture search with Optuna (``slimkit search``).

API (small and stable; the compression-policy search builds on it)::

    from slimkit.search import SearchConfig, Space, open_storage, open_study, make_sampler, make_pruner, run_trials

    space = Space.from_dict({"lr": {"type": "float", "low": 1e-3, "high": 0.3, "log": True},
                             "block": {"type": "categorical", "choices": ["basic", "fire"]},
                             "expand": {"type": "int", "low": 2, "high": 6, "when": {"block": "fire"}}})
    storage = open_storage("sqlite:///runs/s/study.db")      # or postgresql://user@host/db; UserError if unreachable
    study = open_study(storage, "name", make_sampler("tpe", seed=0, n_trials=30), ["maximize", "minimize"],
                       make_pruner("none"))
    run_trials(study, lambda trial: (acc, macs), n_trials=30)  # stops at exactly 30 finished trials, any number of
                                                               # workers; kill -9 safe (heartbeats + retry)
    values = space.sample(trial)                              # {name: value} of the active parameters

- :mod:`.space`: ``Param`` / ``Space`` (categorical, float, int, log, step, conditional ``when``).
- :mod:`.config`: ``SearchConfig`` (the search file: model builder, data, budget, objectives, params).
- :mod:`.study`: storage, samplers (tpe, gp, random, nsga2), pruners (median, hyperband), ``run_trials``, ``redact``.
- :mod:`.objective`: ``TrialObjective`` (train on the budget, score on held-out data, measure, checkpoint).
- :mod:`.run`: ``search()`` (run folder, workers, resume); :mod:`.report`: results, best/, report.html.
- :mod:`.policy`: compression policy search (per-group channel-pruning ratios under a MACs budget, exported as
  a recipe); :mod:`.sensitivity`: per-group pruning sensitivity; :mod:`.netadapt`: the greedy baseline.

Optuna is imported only when a study is opened (``pip install 'slimkit[search]'``). The study is a plain
Optuna RDB storage, so ``optuna-dashboard sqlite:///DIR/study.db`` (or the PostgreSQL URL) shows it live.
"""
from .config import Budget, Objective, SearchConfig
from .netadapt import netadapt
from .policy import Policy, PruningProblem, holdout, search_policy
from .run import search
from .space import Param, Space
from .sensitivity import prune_sensitivity, ratio_caps
from .study import counts, make_pruner, make_sampler, open_storage, open_study, redact, run_trials, sqlite_url

__all__ = [
    "Budget",
    "Objective",
    "Param",
    "Policy",
    "PruningProblem",
    "SearchConfig",
    "Space",
    "counts",
    "holdout",
    "make_pruner",
    "make_sampler",
    "netadapt",
    "open_storage",
    "open_study",
    "prune_sensitivity",
    "ratio_caps",
    "redact",
    "run_trials",
    "search",
    "search_policy",
    "sqlite_url",
]
