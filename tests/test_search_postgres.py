"""A real PostgreSQL server (Debian's postgresql, started here) shared by two `slimkit search` worker
processes: one is killed with SIGKILL mid-trial and restarted; the study ends with exactly N complete
trials, the killed trial's parameters retried once, nothing lost, and the password never printed."""
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest
import yaml

from test_search import TINY

optuna = pytest.importorskip("optuna")
PASSWORD = "pg-s3cret-for-test"
N = 4


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or ([shutil.which(name)] if shutil.which(name) else [])
    return found[-1] if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def postgres():
    """A throwaway server on 127.0.0.1 (random port, unix socket in its own temp dir); yields the port."""
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if not (initdb and pg_ctl):
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL is not installed; ./dev installs it (apt-get install postgresql) when run as root.")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    root = tempfile.mkdtemp(prefix="slimkit-pg-")
    as_user: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root: run it as the postgres user
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, pwfile, port = f"{root}/data", f"{root}/pw", _free_port()
    with open(pwfile, "w") as f:
        f.write(PASSWORD)
    if as_user:
        shutil.chown(pwfile, "postgres")
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True)  # noqa: E731
    run(initdb, "-D", data, "-U", "postgres", "--auth=scram-sha-256", f"--pwfile={pwfile}")
    run(pg_ctl, "-D", data, "-l", f"{root}/log", "-w", "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start")
    try:
        yield port
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_one_killed_mid_trial_finish_exactly_n_trials(postgres, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({**TINY, "name": "pg", "n_trials": N, "heartbeat_s": 1,
                                     "budget": {"train": 200, "val": 100, "epochs": 2}}))
    url = f"postgresql://postgres@127.0.0.1:{postgres}/postgres"  # the password comes from the environment
    env = {**os.environ, "PGPASSWORD": PASSWORD, "OMP_NUM_THREADS": "1"}

    def worker(name):
        cmd = [sys.executable, "-m", "slimkit.cli", "search", "--space", str(space), "--out", str(tmp_path / name),
               "--storage", url, "--threads", "1"]
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    os.environ["PGPASSWORD"] = PASSWORD
    try:
        first, other = worker("a"), worker("b")
        storage = optuna.storages.RDBStorage(url)
        victim, deadline = None, time.time() + 120
        while victim is None and time.time() < deadline:  # wait until the first worker is inside a trial
            time.sleep(0.1)
            try:
                study = optuna.load_study(study_name="pg", storage=storage)
            except KeyError:
                continue
            victim = next((t for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING"
                           and t.user_attrs.get("worker", "").endswith(f":{first.pid}")), None)
        assert victim is not None, "the first worker never started a trial"
        first.send_signal(signal.SIGKILL)
        first.wait()
        restarted = worker("a")  # the same command again: resumes in its run folder
        logs = [p.communicate(timeout=300)[0] for p in (other, restarted)]
        assert [other.returncode, restarted.returncode] == [0, 0], logs
    finally:
        del os.environ["PGPASSWORD"]

    trials = optuna.load_study(study_name="pg", storage=storage).get_trials()
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == N
    assert {t.state.name for t in trials} <= {"COMPLETE", "FAIL"}  # nothing left RUNNING or WAITING
    killed = trials[victim.number]
    assert killed.state.name == "FAIL" and not killed.user_attrs.get("surplus")
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number
    retried = [t for t in complete if retry(t) == killed.number]
    assert len(retried) == 1 and retried[0].params == killed.params  # retried once: not lost, not repeated
    assert len({t.number for t in complete}) == N
    assert all(os.path.isfile(os.path.join(t.user_attrs["checkpoint"], "model.safetensors")) for t in complete)
    assert all(PASSWORD not in log for log in logs)
    assert PASSWORD not in (tmp_path / "b" / "results.json").read_text() + (tmp_path / "b" / "search.json").read_text()
