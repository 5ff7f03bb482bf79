"""Fuzz the command line with bad input. The README's promise for each case: exit code 2, one short message
(argparse's usage lines may precede it) and no traceback, and not one byte changed on disk.

    python bench/fuzz_cli.py --cases 3000 --seed 0     # writes bench/results/fuzz_cli.json
    python bench/fuzz_cli.py --smoke                   # 200 cases; bench/results/fuzz_cli_smoke.json

The cases come from bench/fuzz_cases.py. Each runs in-process (``slimkit.cli.main``) in its own folder: the working
directory and HOME hold a user's files, and a snapshot of the folder (every path, size, mtime, SHA-256) is
compared before and after. A case fails as:

- ``traceback``: an exception escaped ``main``, or a traceback was printed;
- ``wrong_exit``: an exit code other than 2 (0: the bad input was accepted; 1: an internal error);
- ``messy_stderr``: no ``slimkit...error:`` message, or more than 3 lines of it, or warnings beside it;
- ``leftover`` / ``changed``: a path appeared / a path changed or disappeared;
- ``hang``: still running after ``--limit`` seconds (SIGALRM);
- ``guard``: it tried something destructive that the runner blocks: deleting a folder that holds the case
  (or ``/``), starting a worker process, or calling ``os.abort``.

Address space is capped (``--memory-gb`` above what the process uses at the start) so that an attempted
huge allocation fails rather than taking the machine down.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import io
import logging
import multiprocessing.process
import os
import resource
import shutil
import signal
import stat
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

from fuzz_cases import CATEGORIES, DECOYS, Case, cases
from results_io import print_checks, write_results

KINDS = ("traceback", "wrong_exit", "messy_stderr", "leftover", "changed", "hang", "guard")


class Hang(BaseException):
    """Raised by SIGALRM when a case runs past its time limit."""


class Guard(BaseException):
    """Raised instead of a destructive call (BaseException, so that no ``except Exception`` hides it)."""


def snapshot(case: Case) -> dict[str, tuple]:
    """Every path under the case's folder with (size, mtime, SHA-256) for files; the names in ``case.watch``."""
    state: dict[str, tuple] = {}
    for root, dirs, files in os.walk(case.dir):
        for name in dirs + files:
            path = os.path.join(root, name)
            st = os.lstat(path)
            entry: tuple = (stat.S_IFMT(st.st_mode),)
            if stat.S_ISREG(st.st_mode):
                entry = (st.st_size, st.st_mtime_ns, hashlib.sha256(Path(path).read_bytes()).hexdigest())
            state[os.path.relpath(path, case.dir)] = entry
    for folder in case.watch:
        state.update({os.path.join(folder, name): ("entry",) for name in os.listdir(folder)})
    return state


def _materialise(case: Case) -> None:
    for rel, data in {**DECOYS, **case.files}.items():
        path = case.dir / rel
        if data is None:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)


def one_paragraph(err: str) -> bool:
    """argparse's usage lines (optional), then 1-3 lines starting with ``slimkit...error:``, nothing else."""
    lines = err.strip("\n").splitlines()
    i = 0
    if lines and lines[0].startswith("usage:"):
        i = 1
        while i < len(lines) and lines[i].startswith(" "):
            i += 1
    message = lines[i:]
    return (1 <= len(message) <= 3 and all(line.strip() for line in message)
            and message[0].startswith("slimkit") and "error:" in message[0])


class _Guards:
    """Blocks destructive calls while cases run: rmtree of a folder holding the case (or of ``/`` and its
    children), starting processes, os.abort; also caps the address space and empties stdin."""

    def __init__(self, memory_gb: float):
        self.memory_gb, self.case_dir, self.wire, self.armed = memory_gb, "/", None, False
        self.protected = {"/", os.path.realpath(Path.home())} | {os.path.join("/", n) for n in os.listdir("/")}

    def _rmtree(self, path, *args, **kwargs):
        real = os.path.realpath(path)
        if real in self.protected or (self.case_dir + "/").startswith(real.rstrip("/") + "/"):
            raise Guard(f"fuzz guard: refused shutil.rmtree({str(path)!r})")
        return self.rmtree(path, *args, **kwargs)

    @staticmethod
    def _start(process):
        raise Guard("fuzz guard: refused to start a worker process")

    def _tripwire(self):
        try:
            yield
        except GeneratorExit:
            if self.armed:
                raise Guard("fuzz guard: os.abort() was called") from None

    def arm(self, case: Case) -> None:
        """Per case: remember its folder and set a fresh os.abort tripwire.

        The tripwire is a generator's ``close``: a builtin, as the real os.abort is (code that refuses to call
        builtins refuses both), which raises Guard when called."""
        self.case_dir = os.path.realpath(case.dir)
        self.disarm()
        self.wire, self.armed = self._tripwire(), True
        next(self.wire)
        os.abort = self.wire.close

    def disarm(self) -> None:
        self.armed = False
        if self.wire is not None:
            self.wire.close()

    def __enter__(self):
        process = multiprocessing.process.BaseProcess
        self.rmtree, self.start, self.abort, self.stdin = shutil.rmtree, process.start, os.abort, sys.stdin
        shutil.rmtree, process.start, sys.stdin = self._rmtree, self._start, io.StringIO("")
        self.limit = resource.getrlimit(resource.RLIMIT_AS)
        used = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
        cap = used + int(self.memory_gb * 2**30)
        if self.limit[1] == resource.RLIM_INFINITY or cap < self.limit[1]:
            resource.setrlimit(resource.RLIMIT_AS, (cap, self.limit[1]))
        return self

    def __exit__(self, *exc):
        self.disarm()
        resource.setrlimit(resource.RLIMIT_AS, self.limit)
        process = multiprocessing.process.BaseProcess
        shutil.rmtree, process.start, os.abort, sys.stdin = self.rmtree, self.start, self.abort, self.stdin


def _on_alarm(signum, frame):
    raise Hang()


def _flush() -> None:
    for stream in (sys.__stdout__, sys.__stderr__):
        stream.flush()


@contextlib.contextmanager
def _capture_logging(stream):
    """Point every logging handler that writes to a stream (optuna's, made before the case) at ``stream``."""
    loggers = [logging.getLogger(), *(x for x in logging.Logger.manager.loggerDict.values() if isinstance(x, logging.Logger))]
    handlers = [h for x in loggers for h in x.handlers if type(h) is logging.StreamHandler]
    previous = [h.setStream(stream) for h in handlers]
    try:
        yield
    finally:
        for handler, old in zip(handlers, previous):
            handler.setStream(old)


@contextlib.contextmanager
def _capture_fds():
    """Send file descriptors 1 and 2 to a temporary file (output that bypasses sys.stdout and sys.stderr, from C
    libraries for one); yields a list that receives the text."""
    saved = [os.dup(1), os.dup(2)]
    text: list[str] = []
    with tempfile.TemporaryFile() as tmp:
        _flush()
        for fd in (1, 2):
            os.dup2(tmp.fileno(), fd)
        try:
            yield text
        finally:
            _flush()
            for fd, copy in zip((1, 2), saved):
                os.dup2(copy, fd)
                os.close(copy)
            tmp.seek(0)
            text.append(tmp.read().decode(errors="replace"))


def _verdict(code: int, err: str, out: str) -> list[str]:
    """What is wrong with how a case ended (when it ended by itself)."""
    if "Traceback" in err or "Traceback" in out:
        return ["traceback"]
    if code != 2:
        return ["wrong_exit"]
    return [] if one_paragraph(err) else ["messy_stderr"]


def run_case(case: Case, guards: _Guards, limit: float) -> dict:
    """Run one case in-process and return its outcome: exit code, failure kinds, stderr, seconds."""
    import torch

    from slimkit.cli import main

    _materialise(case)
    before = snapshot(case)
    out, err, kinds, code = io.StringIO(), io.StringIO(), [], None
    cwd, env, threads = os.getcwd(), dict(os.environ), torch.get_num_threads()
    os.chdir(case.dir / "cwd")
    os.environ["HOME"] = str(case.dir / "home")
    guards.arm(case)
    start = time.perf_counter()
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    try:
        with (_capture_fds() as direct, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err),
              _capture_logging(err), warnings.catch_warnings(record=True) as caught):
            warnings.simplefilter("always")
            signal.setitimer(signal.ITIMER_REAL, limit)
            try:
                code = main(list(case.argv))
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
    except SystemExit as exc:  # argparse's usage errors; sys.exit("message") prints it and exits 1
        code = exc.code if isinstance(exc.code, int) or exc.code is None else 1
        if code == 1 and not isinstance(exc.code, int):
            err.write(f"{exc.code}\n")
    except Hang:
        kinds.append("hang")
    except Guard as exc:
        kinds.append("guard")
        err.write(f"{exc}\n")
    except BaseException:
        kinds.append("traceback")
        err.write(traceback.format_exc())
    finally:
        signal.signal(signal.SIGALRM, previous)
        seconds = time.perf_counter() - start
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        torch.set_num_threads(threads)
    text = direct[0] + err.getvalue() + "".join(f"{w.category.__name__}: {w.message}\n" for w in caught
                                    if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning)))
    if not kinds:
        code = 0 if code is None else code
        kinds += _verdict(code, text, out.getvalue())
    after = snapshot(case)
    if set(after) - set(before):
        kinds.append("leftover")
    if any(after.get(path) != entry for path, entry in before.items()):
        kinds.append("changed")
    diff = sorted(set(after) ^ set(before)) + sorted(p for p in before if p in after and after[p] != before[p])
    argv = [a.replace(str(case.dir), "<case>") for a in case.argv]
    return {"case": case.dir.name, "category": case.category, "kind": case.kind, "argv": argv, "exit_code": code,
            "failures": kinds, "seconds": round(seconds, 3),
            "stderr_tail": text.strip().splitlines()[-4:], "paths": diff[:8]}


def warm_up() -> None:
    """Import what cases reach, so that no case pays for first imports within its time limit."""
    import importlib

    from slimkit.recipe import BUILTIN_STEPS

    for module in ("slimkit.cli", "slimkit.pipeline", "slimkit.search.run", "slimkit.report", "slimkit.data.digits",
                   "slimkit.data.fashion_mnist", "slimkit.measure", "slimkit.compile.peers", "optuna", "onnxruntime",
                   "sklearn.datasets", *BUILTIN_STEPS.values()):
        importlib.import_module(module)
    importlib.import_module("sklearn.datasets").load_digits()


def fuzz(n: int, seed: int, limit: float = 5.0, memory_gb: float = 8.0, progress: bool = False) -> dict:
    """Draw ``n`` cases with ``seed``, run them all, and summarise: counts per category and kind, examples, the
    slowest cases, and under ``failures`` every failing case (main() leaves that list out of the JSON)."""
    from slimkit.pipeline import environment

    warm_up()
    start = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="slimkit-fuzz-"))
    try:
        drawn = cases(n, seed, root)
        outcomes = []
        with _Guards(memory_gb) as guards:
            for i, case in enumerate(drawn):
                outcomes.append(run_case(case, guards, limit))
                guards.rmtree(case.dir, ignore_errors=True)
                if progress and (i + 1) % 100 == 0:
                    print(f"{i + 1}/{len(drawn)} cases, {sum(bool(o['failures']) for o in outcomes)} failing", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    counts = {c: dict.fromkeys(("cases", "ok", *KINDS), 0) for c in CATEGORIES}
    for o in outcomes:
        row = counts[o["category"]]
        row["cases"] += 1
        row["ok"] += not o["failures"]
        for kind in o["failures"]:
            row[kind] += 1
    totals = {k: sum(row[k] for row in counts.values()) for k in ("cases", "ok", *KINDS)}
    slowest = sorted(outcomes, key=lambda o: -o["seconds"])[:10]
    return {"seed": seed, "cases": len(outcomes), "time_limit_s": limit, "seconds": round(time.perf_counter() - start, 1),
            "environment": {**environment(), "cpu_flags": cpu_flags()}, "totals": totals, "counts": counts,
            "exit_codes": dict(collections.Counter(str(o["exit_code"]) for o in outcomes)),
            "examples": examples(outcomes),
            "slowest": [{k: o[k] for k in ("case", "category", "kind", "seconds", "argv")} for o in slowest],
            "failures": [o for o in outcomes if o["failures"]]}


def examples(outcomes: list[dict], per_kind: int = 10) -> dict[str, list[dict]]:
    """Up to ``per_kind`` failures of each kind, spread over categories and case kinds first."""
    picked = {}
    for kind in KINDS:
        groups = collections.defaultdict(list)
        for o in outcomes:
            if kind in o["failures"]:
                groups[(o["category"], o["kind"])].append(o)
        rows, queues = [], list(groups.values())
        while queues and len(rows) < per_kind:
            rows += [q.pop(0) for q in queues][: per_kind - len(rows)]
            queues = [q for q in queues if q]
        if rows:
            keys = ("case", "category", "kind", "argv", "exit_code", "stderr_tail", "paths")
            picked[kind] = [{k: o[k] for k in keys} for o in rows]
    return picked


def cpu_flags() -> list[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line.split(":", 1)[1].split()
    return []


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, help="how many cases (default 3000; 200 with --smoke)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=float, default=5.0, help="seconds per case before it counts as a hang")
    parser.add_argument("--memory-gb", type=float, default=8.0, help="address space allowed above the start")
    parser.add_argument("--smoke", action="store_true", help="fewer cases, written to fuzz_cli_smoke.json")
    parser.add_argument("--out", help="result JSON (default bench/results/fuzz_cli[_smoke].json)")
    args = parser.parse_args(argv)
    n = args.cases or (200 if args.smoke else 3000)
    result = fuzz(n, args.seed, args.limit, args.memory_gb, progress=True)
    default = Path(__file__).parent / "results" / f"fuzz_cli{'_smoke' if args.smoke else ''}.json"
    write_results(args.out or default, {k: v for k, v in result.items() if k != "failures"})
    for category, row in result["counts"].items():
        bad = ", ".join(f"{k} {row[k]}" for k in KINDS if row[k])
        print(f"{category:<8} {row['ok']:>5}/{row['cases']:<5} ok  {bad}")
    print_checks({f"no {kind} ({result['totals'][kind]} of {result['cases']} cases)": not result["totals"][kind] for kind in KINDS})
    return result


if __name__ == "__main__":
    main()
