"""Datasets as in-memory Tasks: ``load_data("fashion-mnist" | "digits" | "text" | "module:callable")``."""
from __future__ import annotations

import inspect

from ..errors import UserError
from .task import Task, batches

__all__ = ["Task", "batches", "load_data"]


def load_data(spec: str, *, data_dir: str | None = None, model=None) -> Task:
    """Load a Task by name.

    Args:
        spec: ``fashion-mnist``, ``digits``, ``text`` or ``package.module:callable`` returning a Task.
        data_dir: folder holding the Fashion-MNIST IDX files (default: Debian's install location).
        model: for ``text``, the model whose ``tokenizer`` attribute tokenises the corpus.
    """
    if spec == "fashion-mnist":
        from . import fashion_mnist

        return fashion_mnist.load(data_dir)
    if spec == "digits":
        from . import digits

        return digits.load()
    if spec == "text":
        from . import text

        return text.load(getattr(model, "tokenizer", None))
    if spec == "none":
        raise UserError("This needs data: pass fashion-mnist, digits, text or package.module:callable, not none.")
    if ":" in spec:
        return _from_callable(spec)
    raise UserError(
        f"Unknown dataset {spec!r}. Use fashion-mnist, digits, text, none, or package.module:callable "
        "returning a slimkit.Task."
    )


def _from_callable(spec: str) -> Task:
    """Call ``package.module:callable`` with no arguments; it must be a Python function or class returning a Task."""
    from ..models.spec import import_callable

    fn = import_callable(spec)
    if inspect.isbuiltin(fn):  # e.g. os:abort, sys:exit: never a dataset, and calling them ends the process
        raise UserError(f"Data {spec!r} is a built-in function, not one that returns a slimkit.Task.")
    try:
        task = fn()
    except TypeError as exc:
        raise UserError(f"Calling {spec}() with no arguments failed ({exc}); point the data spec at a function "
                        "that takes none and returns a slimkit.Task.") from None
    if not isinstance(task, Task):
        raise UserError(f"Data {spec!r} returned {type(task).__name__}, not a slimkit.Task.")
    return task
