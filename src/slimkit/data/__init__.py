"""Datasets as in-memory Tasks: ``load_data("fashion-mnist" | "digits" | "text" | "module:callable")``."""
from __future__ import annotations

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
    if ":" in spec:
        from ..models.spec import import_callable

        task = import_callable(spec)()
        if not isinstance(task, Task):
            raise UserError(f"--data {spec} returned {type(task).__name__}, not a slimkit Task.")
        return task
    raise UserError(
        f"Unknown dataset {spec!r}. Use fashion-mnist, digits, text, none, or package.module:callable "
        "returning a slimkit.Task."
    )
