"""`slimkit search` killed with SIGKILL before its first trial, mid-trial and while writing a trial's checkpoint,
and a search whose worker is killed: the same command then ends with exit 0 and exactly N complete trials,
each set of parameters counted once, and nothing half-written left in the run folder."""
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import yaml

import slimkit
from test_search import TINY

optuna = pytest.importorskip("optuna")
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # retried_trial_number
N = 3
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# Run in a child process: the checkpoint writer writes half a weights file, then the process kills itself.
DIE_MID_CHECKPOINT = """
import os, signal, sys
from pathlib import Path

import slimkit.models.checkpoint as checkpoint
from slimkit.cli import main


def half_then_sigkill(model, directory, extra=None):
    (Path(directory) / checkpoint.WEIGHTS_FILE).write_bytes(b"half a checkpoint")
    os.kill(os.getpid(), signal.SIGKILL)


checkpoint.save_checkpoint = half_then_sigkill
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture
def run(tmp_path):
    """``run(*options, driver=None)``: start `slimkit search` on a ~1 s-per-trial space in tmp_path/run."""
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({**TINY, "name": "crash", "n_trials": N, "heartbeat_s": 1,
                                     "budget": {"train": 300, "val": 100, "epochs": 1}}))

    started = []

    def start(*options, driver=None):
        entry = [str(driver)] if driver else ["-m", "slimkit"]
        cmd = [sys.executable, *entry, "search", "--space", str(space), "--out", str(tmp_path / "run"), "--threads", "1",
               "--sampler", "random", *options]
        started.append(subprocess.Popen(cmd, env=ENV, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, start_new_session=True))
        return started[-1]

    yield start
    for proc in started:  # a failed test leaves no search running (its workers included)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def query(out, sql):
    """Rows from the run's study.db (read-only, without Optuna); [] while the file or its tables are missing."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{out / 'study.db'}?mode=ro", uri=True, timeout=10)) as db:
            return db.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []


def kill_when(proc, ready, timeout=90):
    """SIGKILL ``proc`` as soon as ``ready()`` holds (it must still be running then)."""
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, f"the search ended before the kill point:\n{proc.communicate()[0][-3000:]}"
        assert time.time() < deadline, "the kill point was never reached"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


def finished_cleanly(proc, out):
    """The command's exit 0, then N complete trials with distinct parameters and one reloadable checkpoint
    each in trials/, nothing else there; returns the study's trials."""
    log = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0 and "Traceback" not in log, log[-3000:]
    trials = optuna.load_study(study_name="crash", storage=f"sqlite:///{out / 'study.db'}").get_trials()
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == N and {t.state.name for t in trials} <= {"COMPLETE", "FAIL"}
    assert len({json.dumps(t.params, sort_keys=True) for t in complete}) == N  # no parameters counted twice
    retried = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number  # the first killed try
    for killed in (t for t in trials if t.state.name == "FAIL" and retried(t) is None and not t.user_attrs.get("surplus")):
        heirs = [c for c in complete if retried(c) == killed.number]  # its parameters: not lost, not repeated
        assert len(heirs) == 1 and killed.params.items() <= heirs[0].params.items()
    assert sorted(p.name for p in (out / "trials").iterdir()) == [f"{t.number:04d}" for t in complete]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary files
    for t in complete:
        assert slimkit.load_model(str(out / "trials" / f"{t.number:04d}")) is not None
    assert json.loads((out / "results.json").read_text())["states"]["COMPLETE"] == N
    return trials


def test_killed_before_a_trial_mid_trial_and_mid_checkpoint_then_resumed(run, tmp_path):
    out = tmp_path / "run"
    start = time.time()
    kill_when(run(), lambda: any(out.glob("*study.db*")))  # (a) while the study database is being created
    # (b) a trial has just begun, often before its first heartbeat
    kill_when(run(), lambda: query(out, "SELECT 1 FROM trials WHERE state = 'RUNNING'"))
    driver = tmp_path / "die_mid_checkpoint.py"
    driver.write_text(DIE_MID_CHECKPOINT)
    proc = run(driver=driver)  # (c) kills itself in the middle of the trial's checkpoint
    assert proc.wait(timeout=120) == -signal.SIGKILL, proc.communicate()[0][-3000:]
    assert [p.name[:6] for p in (out / "trials").iterdir()] == [".0001."]  # the half-written checkpoint
    trials = finished_cleanly(run(), out)
    assert [t.state.name for t in trials[:2]] == ["FAIL", "FAIL"]  # the trials of (b) and (c)
    assert time.time() - start < 90


def test_a_killed_worker_leaves_the_others_to_finish_the_study(run, tmp_path):
    out = tmp_path / "run"
    proc = run("--workers", "2")
    worker_pids = "SELECT a.value_json FROM trials t JOIN trial_user_attributes a ON a.trial_id = t.trial_id " \
                  "WHERE t.state = 'RUNNING' AND a.key = 'worker'"
    deadline = time.time() + 90
    while not (running := query(out, worker_pids)):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[0][-3000:]
        time.sleep(0.02)
    os.kill(int(json.loads(running[0][0]).rsplit(":", 1)[1]), signal.SIGKILL)
    trials = finished_cleanly(proc, out)
    assert sum(t.state.name == "FAIL" and not t.user_attrs.get("surplus") for t in trials) == 1
