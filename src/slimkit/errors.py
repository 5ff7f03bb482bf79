"""Errors that reach the user, and lazy imports of optional extras."""
from __future__ import annotations

import importlib
from types import ModuleType


class UserError(Exception):
    """Bad input: the message names what to fix. The CLI exits with code 2."""


class RunFailed(Exception):
    """A run failed for a reason outside slimkit's input (e.g. a worker process was killed); the message says
    how to resume. The CLI prints it without a traceback and exits with code 1."""


class MissingExtra(UserError, ImportError):
    """An optional dependency is not installed; the message names the pip extra (CLI exit code 2)."""


def require(module: str, extra: str) -> ModuleType:
    """Import an optional dependency, or fail naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(
            f"{module} is needed here but is not installed; install it with "
            f"`pip install 'slimkit[{extra}]'`."
        ) from exc
