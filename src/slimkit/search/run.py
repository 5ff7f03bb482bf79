"""``slimkit search``: run (or resume) a study in a run folder with one or more worker processes, then
export the best configuration(s) and a report."""
from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import warnings
from pathlib import Path

import numpy as np

from ..devices import check_device
from ..errors import RunFailed, UserError
from ..files import alive, check_out_path, write_atomic
from .config import SearchConfig, check_int
from .distributed import TrialGroup, check_workers, world_size
from .objective import TRIALS_DIR, split
from .study import STUDY_FILE, counts, make_pruner, make_sampler, open_storage, open_study, redact, run_trials, sqlite_url

RUN_FILE = "search.json"


def _prepare_out(out: Path, config: SearchConfig, storage_label: str) -> bool:
    """Make ``out`` ready; returns True when it was created now. A folder holding a search with the
    same space and storage is resumed in place (never replaced); anything else there is refused, and a
    folder that cannot be read or created is a UserError naming --out and the system's reason."""
    try:
        return _prepare_out_unchecked(out, config, storage_label)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot read or create the folder ({exc.strerror or exc}); name a folder you "
                        "can write, e.g. --out runs/a.") from None


def _prepare_out_unchecked(out: Path, config: SearchConfig, storage_label: str) -> bool:
    marker = out / RUN_FILE
    if out.is_dir():  # files a killed search was writing
        _remove_orphans(out, rf"\.(?:{re.escape(RUN_FILE)}|{re.escape(STUDY_FILE)})\.([0-9]+)\.tmp(?:-journal)?")
    if marker.is_file():
        try:
            previous = json.loads(marker.read_text())
        except (ValueError, UnicodeError):
            previous = None
        if not isinstance(previous, dict):
            raise UserError(f"{out / RUN_FILE} is damaged (not a JSON object); pick a new --out, or remove the folder.")
        if _resumable(previous.get("config", {})) != _resumable(config.to_dict()) or previous.get("storage") != storage_label:
            raise UserError(f"{out} holds a search with another space, budget, sampler, seed or storage; resume it "
                            "with the same --space/--sampler/--seed/--storage (only --n-trials may change), or pick a new --out.")
        return False
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not a slimkit search folder; pick a new --out (nothing was written).")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    return created


def _resumable(config: dict) -> dict:
    """What must match for a search to be resumed: everything but the trial count."""
    return {k: v for k, v in config.items() if k != "n_trials"}


def _remove_orphans(folder: Path, pattern: str) -> None:
    """Remove what dead processes were writing in ``folder``: entries named like ``pattern``, whose first group
    is the writer's pid, unless that process (on this machine) still runs."""
    for path in folder.iterdir():
        match = re.fullmatch(pattern, path.name)
        if match and not alive(int(match[1])):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def tidy_trials(out: Path, study) -> None:
    """Remove what killed workers left in ``trials/``: checkpoints they were writing (``.NNNN.PID.*``) and the
    checkpoints of trials that neither finished nor are still running."""
    folder = out / TRIALS_DIR
    if not folder.is_dir():
        return
    _remove_orphans(folder, r"\.[0-9]+\.([0-9]+)\.\w+")
    keep = {f"{t.number:04d}" for t in study.get_trials(deepcopy=False) if t.state.name in ("COMPLETE", "PRUNED", "RUNNING")}
    for path in folder.iterdir():
        if re.fullmatch("[0-9]+", path.name) and path.name not in keep:
            shutil.rmtree(path, ignore_errors=True)


def _create_sqlite(out: Path, config: SearchConfig) -> None:
    """Create the run folder's study database under a temporary name, then link it into place: a search killed
    meanwhile leaves no half-made schema (which Optuna would not complete), only a file removed on resume."""
    if (out / STUDY_FILE).exists():
        return
    tmp = out / f".{STUDY_FILE}.{os.getpid()}.tmp"
    storage = open_storage(f"sqlite:///{tmp.resolve()}", config.heartbeat_s)
    open_study(storage, config.name, None, config.directions)
    storage.engine.dispose()
    try:
        os.link(tmp, out / STUDY_FILE)  # unlike a rename, never replaces one another process made meanwhile
    except FileExistsError:
        pass
    tmp.unlink()


def _seeds(seed: int, workers: int, started: int) -> list[int]:
    """Sampler seeds of this machine's workers: seed, seed + 1, ... on a new study; on resume (``started`` trials
    so far) fresh ones drawn from (seed, started), or the samplers would propose the first run's trials again."""
    if not started:
        return [(seed + i) % 2**32 for i in range(workers)]
    return [int(s) for s in np.random.SeedSequence([seed, started]).generate_state(workers)]


def _worker(config: SearchConfig, url: str, out: str, seed: int | None, threads: int, device: str, progress: bool,
            task=None, group=None) -> None:
    """One worker: open the study and run trials until the study has its N finished trials (with ``group``,
    rank 0 of torchrun, whose other ranks train each trial with it)."""
    import torch

    from ..data import load_data
    from .objective import TrialObjective

    torch.set_num_threads(threads)
    storage = open_storage(url, config.heartbeat_s)
    study = open_study(storage, config.name, make_sampler(config.sampler, seed, config.n_trials), config.directions,
                       make_pruner(config.pruner, config.budget.epochs))
    objective = TrialObjective(config, task or load_data(config.data), out, device)
    run_trials(study, group.lead(objective) if group else objective, config.n_trials, progress=progress)
    if group:
        group.finish()


def search(config: SearchConfig, out_dir: str | Path, *, storage: str | None = None, workers: int = 1,
           device: str = "cpu", threads: int | None = None, progress: bool = True, task=None) -> dict | None:
    """Run or resume the study, then write results: ``results.json``, ``best/`` and ``report.{md,html}``.
    Under torchrun every process runs this; rank 0 drives the study and the others train each trial with it.

    Args:
        config: the validated search file (CLI overrides already applied).
        out_dir: the run folder; holds ``study.db`` when ``storage`` is None.
        storage: an Optuna RDB URL (``postgresql://user@host/db``; the password from PGPASSWORD or the URL,
            never printed or stored); default: ``$SLIMKIT_STORAGE``, else SQLite in ``out_dir``.
        workers: worker processes on this machine.
        threads: intra-op threads per process (default: slimkit's thread count // processes on this machine).
        task: the already loaded ``config.data`` Task (loaded here when None).
    Returns:
        the results dict (also in ``results.json``); None on torchrun ranks other than 0.
    """
    from ..data import load_data
    from ..measure import default_threads

    out = check_out_path(out_dir)
    storage = storage or os.environ.get("SLIMKIT_STORAGE")
    check_int(workers, "--workers", 1, 256)
    check_int(threads, "--threads", 1, 1024, optional=True)
    check_device(device)
    check_workers(workers)
    group = TrialGroup(device) if world_size() > 1 else None
    threads = threads or max(1, default_threads() // (workers * int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    if group and group.rank > 0:
        import torch

        from .objective import TrialObjective

        torch.set_num_threads(threads)
        group.follow(TrialObjective(config, task or load_data(config.data), out, device))
        return None
    label = redact(storage) if storage else f"sqlite:///{STUDY_FILE} (in the run folder)"
    if storage:  # fail on an unreachable server before touching the run folder
        open_study(open_storage(storage, config.heartbeat_s), config.name, None, config.directions)
    task = task or load_data(config.data)  # bad data fails before anything is written
    split(task, config)  # so does a budget the data cannot hold
    created = _prepare_out(out, config, label)
    url = storage or sqlite_url(out)
    try:  # the run file first: a folder with a study in it is always recognised as a search to resume
        write_atomic(out / RUN_FILE, json.dumps({"config": config.to_dict(), "storage": label}, indent=2))
        if not storage:
            _create_sqlite(out, config)
        study = open_study(open_storage(url, config.heartbeat_s), config.name, None, config.directions)
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    tidy_trials(out, study)
    # On a shared server every process (of any machine) seeds itself at random, or machines running the same
    # command would propose the same trials.
    seeds = [None] * workers if storage else _seeds(config.seed, workers, len(study.get_trials(deepcopy=False)))
    if workers == 1:
        _worker(config, url, str(out), seeds[0], threads, device, progress, task, group)
    else:
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_worker, args=(config, url, str(out), seeds[i], threads, device, progress and i == 0))
                 for i in range(workers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        failed = [p.exitcode for p in procs if p.exitcode]
        if failed and counts(study)[0] < config.n_trials:
            raise RunFailed(f"{len(failed)} of {workers} search workers failed (exit codes {failed}); "
                            f"run the same command again to resume from {label}.")
        if failed:
            warnings.warn(f"{len(failed)} of {workers} search workers died (exit codes {failed}); the others "
                          f"finished the study's {config.n_trials} trials.", stacklevel=2)
    tidy_trials(out, study)
    from .report import export_results

    return export_results(config, out, url, task, label)
