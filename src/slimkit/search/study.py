"""Optuna studies on a storage: samplers, pruners, the storage connection and a worker loop that stops at
exactly N finished trials, however many workers share the study and whichever of them is killed.

Finished means COMPLETE or PRUNED. A worker killed mid-trial stops sending heartbeats; once the grace
period passes any worker marks that trial FAIL and re-queues its parameters (RetryFailedTrialCallback),
so no finished trial is repeated or lost. A worker killed before its trial's first heartbeat is caught too
(see :func:`_adopt_orphans`).
"""
from __future__ import annotations

import re
import time
import warnings
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable, Sequence

from ..errors import UserError, require

SAMPLERS = ("tpe", "gp", "random", "nsga2")
PRUNERS = ("none", "median", "hyperband")
STUDY_FILE = "study.db"
GRACE_HEARTBEATS = 3  # a trial is stale after this many heartbeat intervals without one


def _optuna():
    optuna = require("optuna", "search")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def sqlite_url(out_dir: str | Path) -> str:
    """The default storage: ``sqlite:///<out_dir>/study.db`` (absolute path)."""
    return f"sqlite:///{Path(out_dir).resolve() / STUDY_FILE}"


def redact(url: str) -> str:
    """The storage URL with any password replaced by ``***`` (safe to print and to store)."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _scrub(text: str, url: str) -> str:
    """``text`` with the URL and its password (if any) masked."""
    match = re.search(r"://[^:/@]*:([^@]*)@", url)
    text = text.replace(url, redact(url))
    return text.replace(match.group(1), "***") if match and match.group(1) else text


def open_storage(url: str, heartbeat_s: int = 10, max_retry: int = 3):
    """Connect to an Optuna RDB storage (SQLite file, PostgreSQL, MySQL), with heartbeats.

    A trial whose worker sent no heartbeat for ``GRACE_HEARTBEATS * heartbeat_s`` seconds is failed and its
    parameters are queued again (at most ``max_retry`` times). Raises UserError (the password masked) when the
    storage cannot be reached.
    """
    optuna = _optuna()
    sqlalchemy = require("sqlalchemy", "search")
    sqlite = url.startswith("sqlite")
    engine = {"connect_args": {"timeout": 60}} if sqlite else {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
    try:
        return optuna.storages.RDBStorage(
            url, engine_kwargs=engine, heartbeat_interval=heartbeat_s, grace_period=GRACE_HEARTBEATS * heartbeat_s,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry))
    except ImportError as exc:
        raise UserError(f"No database driver for the storage {redact(url)} ({exc.__cause__ or exc}); install it, e.g. "
                        "`pip install 'slimkit[search]'` for PostgreSQL (psycopg).") from None
    except (sqlalchemy.exc.SQLAlchemyError, ValueError) as exc:
        detail = _scrub(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, url)
        raise UserError(f"Cannot open the study storage {redact(url)}: {detail}. Check that the database server "
                        "is running and reachable, the URL (e.g. postgresql://user@host:5432/db) and the credentials "
                        "(PGPASSWORD in the environment); nothing was written.") from None


def make_sampler(name: str, seed: int | None = None, n_trials: int = 20):
    """An Optuna sampler: ``tpe`` (default), ``gp`` (Gaussian-process BO), ``random`` or ``nsga2``.

    Model-based samplers start with ``min(10, n_trials // 3)`` random trials.
    """
    optuna = _optuna()
    startup = max(2, min(10, n_trials // 3))
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True, group=True, constant_liar=True)
    if name == "gp":
        require("scipy", "search")
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, n_trials // 4)))
    raise UserError(f"Unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}.")


def make_pruner(name: str, max_epochs: int = 1):
    """An Optuna pruner on per-epoch intermediate values: ``none``, ``median`` or ``hyperband``."""
    optuna = _optuna()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, max_epochs), reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UserError(f"Unknown pruner {name!r}; choose from {', '.join(PRUNERS)}.")


def open_study(storage, name: str, sampler, directions: Sequence[str], pruner=None):
    """Create the study ``name`` in ``storage`` (a URL or an opened storage), or load it if it exists.

    Raises UserError when an existing study has other optimisation directions.
    """
    optuna = _optuna()
    storage = open_storage(storage) if isinstance(storage, str) else storage
    study = optuna.create_study(storage=storage, study_name=name, sampler=sampler, pruner=pruner,
                                directions=list(directions), load_if_exists=True)
    found = [d.name.lower() for d in study.directions]
    if found != [d.lower() for d in directions]:
        raise UserError(f"Study {name!r} already exists in this storage with directions {found}, not {list(directions)}; "
                        "use another study name (`name:` in the space file) or another --out.")
    return study


class QuotaFull(Exception):
    """Raised inside a trial that started after the study already had its N trials (a race between workers)."""


def counts(study) -> tuple[int, int]:
    """(finished = COMPLETE + PRUNED, RUNNING) trials in the study."""
    from optuna.trial import TrialState

    states = [t.state for t in study.get_trials(deepcopy=False)]
    return (sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states), states.count(TrialState.RUNNING))


def _guarded(objective: Callable, n_trials: int) -> Callable:
    """Wrap ``objective`` so a trial beyond the quota fails at once instead of running."""
    from optuna.trial import TrialState

    def run(trial):
        trials = trial.study.get_trials(deepcopy=False)
        taken = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) or
                    (t.state == TrialState.RUNNING and t.number <= trial.number) for t in trials)
        if taken > n_trials:
            trial.set_user_attr("surplus", True)
            raise QuotaFull(f"the study already has {n_trials} finished or running trials")
        return objective(trial)

    return run


def _adopt_orphans(study, adopted: set[int]) -> None:
    """Send one heartbeat (once per process) for each trial running for longer than the grace period. A worker
    killed between creating a trial and its first heartbeat leaves a trial Optuna never finds stale; after this
    heartbeat it does, a grace period later. A live trial merely gets an extra heartbeat."""
    from optuna.trial import TrialState

    storage = study._storage
    interval = storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None
    if not interval:
        return
    started_before = datetime.now() - timedelta(seconds=GRACE_HEARTBEATS * interval)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t._trial_id not in adopted and t.datetime_start < started_before:
            adopted.add(t._trial_id)
            storage.record_heartbeat(t._trial_id)


def run_trials(study, objective: Callable, n_trials: int, *, poll_s: float = 2.0, progress: bool = True) -> int:
    """Run trials of ``objective`` until the study holds ``n_trials`` finished trials; returns that count.

    Safe to run in many processes (or machines) on one storage, and to restart after kill -9: a worker
    waits while the remaining slots are taken by running trials, and takes over a slot whose worker died.
    """
    optuna = _optuna()
    from tqdm.auto import tqdm

    bar = tqdm(total=n_trials, initial=min(counts(study)[0], n_trials), desc="trials", disable=not progress)
    adopted: set[int] = set()
    while True:
        optuna.storages.fail_stale_trials(study)
        _adopt_orphans(study, adopted)
        finished, running = counts(study)
        bar.update(min(finished, n_trials) - bar.n)
        if finished >= n_trials:
            bar.close()
            return finished
        if finished + running >= n_trials:
            time.sleep(poll_s)
            continue
        study.optimize(_guarded(objective, n_trials), n_trials=1, catch=(QuotaFull,), gc_after_trial=True)
