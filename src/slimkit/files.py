"""Files slimkit reads back (bounded, UTF-8, data only) and writes: run folders it owns and atomic file writes.

A run folder is written to a hidden temporary sibling and renamed into place only when complete; the
marker file ``.slimkit-run`` in it is how slimkit recognises its own runs later. Only a folder holding
that marker is ever replaced, and only when the caller says so (``--overwrite``).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import UserError

RUN_MARKER = ".slimkit-run"
MAX_FILE_BYTES = 64 << 20  # the largest JSON/YAML file slimkit reads back
_WORK_MARKER = ".slimkit-partial"  # inside a temporary sibling while a run is being written


def read_text(path: Path, what: str) -> str:
    """The UTF-8 text of a regular file of at most MAX_FILE_BYTES, or UserError naming it."""
    try:
        if not path.is_file():
            raise UserError(f"{path}: {what} is missing (or not a regular file).")
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise UserError(f"{path}: cannot read {what} ({exc.strerror or exc}).") from None
    if len(data) > MAX_FILE_BYTES:
        raise UserError(f"{path}: {what} is larger than the {MAX_FILE_BYTES >> 20} MiB slimkit reads.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: {what} is not UTF-8 text (byte {exc.start}: {exc.reason}).") from None


def yaml_loader():
    """PyYAML's safe loader, LibYAML's where installed: the pure-Python one takes minutes on deeply nested flow collections."""
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_json(path: Path, what: str) -> Any:
    """Parse a JSON file (see :func:`read_text`); malformed or absurdly nested JSON is a UserError."""
    try:
        return json.loads(read_text(path, what))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: {what} is not valid JSON ({exc}).") from None
    except RecursionError:
        raise UserError(f"{path}: {what} is nested too deeply.") from None


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a sibling temp file, then rename it over ``path``: readers (other workers included)
    never see half a file, and a failed write leaves the old one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def check_out_path(out: str | os.PathLike, flag: str = "--out", file: bool = False) -> Path:
    """``out`` as a Path, or UserError when it could never be a folder of slimkit's own: empty, the current
    folder or one above it, the home or root folder, an existing file, or a path under a file. With
    ``file``, ``out`` names a file to write, and only the folders above it are checked for files."""
    text = os.fspath(out)
    if not text.strip() or "\0" in text:
        what = "file" if file else "folder"
        raise UserError(f"{flag} {text!r} is not a {what} name; name a new {what}, e.g. {flag} "
                        f"{'compare.html' if file else 'runs/a'}.")
    path = Path(text)
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError) as exc:
        raise UserError(f"{flag} {text}: cannot resolve the path ({exc}); name a new folder, e.g. {flag} runs/a.") from None
    cwd, home = Path.cwd().resolve(), Path.home().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise UserError(f"{flag} {text} is the current folder or one above it; slimkit never writes over folders "
                        f"it did not create: name a new folder, e.g. {flag} runs/a.")
    if resolved == home or resolved in home.parents or resolved == Path(resolved.anchor):
        raise UserError(f"{flag} {text} is the home folder, the root folder or above the home folder; "
                        f"name a new folder, e.g. {flag} runs/a.")
    folders = (*([] if file else [resolved]), *resolved.parents)
    for folder in folders:
        if folder.exists() and not folder.is_dir():
            where = "is" if folder == resolved else f"lies under {folder}, which is"
            raise UserError(f"{flag} {text} {where} an existing file, not a folder; name a new folder, e.g. {flag} runs/a.")
    nearest = next(p for p in folders if p.exists())
    if resolved.parts[1:2] in (("proc",), ("sys",), ("dev",)) or not os.access(nearest, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {text}: {nearest} is a system folder or not writable; name a folder you can write, "
                        f"e.g. {flag} runs/a.")
    return path


def is_run(folder: Path) -> bool:
    """True when ``folder`` is a run folder that slimkit wrote (it holds the marker file)."""
    return (folder / RUN_MARKER).is_file()


def check_out(out: str | os.PathLike, overwrite: bool = False, flag: str = "--out") -> Path:
    """``out`` when a run may be written there: a new or empty folder, or (with ``overwrite``) an earlier
    slimkit run. Anything else is refused with UserError before any work starts."""
    path = check_out_path(out, flag)
    if path.is_dir() and any(path.iterdir()):
        if not is_run(path):
            raise UserError(f"{flag} {path} exists and holds files that slimkit did not write; slimkit never deletes "
                            "them: name a new folder.")
        if not overwrite:
            raise UserError(f"{flag} {path} holds an earlier slimkit run; pass --overwrite to replace it, or name a new folder.")
    return path


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike, overwrite: bool = False, kind: str = "run") -> Iterator[Path]:
    """Yield a temporary sibling folder that becomes ``out`` only if the block succeeds.

    ``out`` is checked first (:func:`check_out`). On failure the sibling and any parent folders created
    for it are removed; siblings left by a killed process are removed the next time. ``kind`` is recorded
    in the marker (compress, train, bench).
    """
    out = check_out(out, overwrite)
    created = [p for p in (out.parent, *out.parent.parents) if not p.exists()]  # deepest first
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_siblings(out)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.slimkit-{os.getpid()}-", dir=out.parent))
        (tmp / _WORK_MARKER).touch()
    except OSError as exc:
        _remove_empty(created)
        raise UserError(f"--out {out}: cannot create the run folder there ({exc.strerror}); name a folder you can "
                        "write, e.g. --out runs/a.") from None
    try:
        yield tmp
        (tmp / _WORK_MARKER).unlink()
        (tmp / RUN_MARKER).write_text(json.dumps({"kind": kind}) + "\n")
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(created)
        raise


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) where they are empty."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an earlier run there (checked by :func:`check_out`) is replaced."""
    if not (out.is_dir() and any(out.iterdir())):
        if out.is_dir():
            out.rmdir()
        tmp.rename(out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.slimkit-{os.getpid()}-", dir=out.parent))
    old.rmdir()
    out.rename(old)
    try:
        tmp.rename(out)
    except BaseException:
        old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _remove_stale_siblings(out: Path) -> None:
    """Remove temporary siblings of ``out`` whose writing process is gone (killed mid-run)."""
    prefix = f".{out.name}.slimkit-"
    for sibling in out.parent.iterdir():
        if not sibling.name.startswith(prefix):
            continue
        pid = sibling.name[len(prefix):].split("-", 1)[0]
        ours = (sibling / _WORK_MARKER).is_file() or is_run(sibling)
        if sibling.is_dir() and ours and pid.isdigit() and not alive(int(pid)):
            shutil.rmtree(sibling, ignore_errors=True)


def alive(pid: int) -> bool:
    """True while process ``pid`` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
