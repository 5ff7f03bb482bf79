"""Datasets as Tasks: ``load_data("fashion-mnist" | "digits" | "text" | "imagefolder:DIR" | "datasets:PATH" |
"module:callable")``."""
from __future__ import annotations

import inspect

from ..errors import UserError
from .task import Task, batches

__all__ = ["Task", "batches", "load_data"]


KINDS = "fashion-mnist, digits, text, imagefolder:DIR, datasets:PATH, none, or package.module:callable"


def load_data(spec: str, *, data_dir: str | None = None, model=None, **options) -> Task:
    """Load a Task by name.

    Args:
        spec: ``fashion-mnist``, ``digits``, ``text``, ``imagefolder:DIR`` (a folder of class folders, read lazily),
            ``datasets:PATH`` (a Hugging Face ``datasets`` folder or a CSV/JSON/Parquet file, read lazily) or
            ``package.module:callable`` returning a Task. ``imagefolder:`` and ``datasets:`` take options after
            ``?``: ``datasets:reviews.csv?input=text&label=stars``.
        data_dir: folder holding the Fashion-MNIST IDX files (default: Debian's install location).
        model: the model the data is for: its ``tokenizer`` attribute tokenises text (``text``, text columns), and
            its input shape, when its SPEC tells (zoo models), sets the image size and channels.
        options: the options of ``imagefolder:``/``datasets:`` as keyword arguments (they win over the SPEC's).
    """
    kind, _, rest = spec.partition(":")
    if kind in ("imagefolder", "datasets"):
        from .options import split_spec

        path, given = split_spec(rest)
        if not path:
            raise UserError(f"{spec!r} names no path: write {kind}:PATH, e.g. {kind}:data/photos.")
        if kind == "imagefolder":
            from . import imagefolder

            return imagefolder.load(path, model, **{**given, **options})
        from . import hf_datasets

        return hf_datasets.load(path, model, **{**given, **options})
    if options:
        raise UserError(f"Options {', '.join(sorted(options))} apply to imagefolder: and datasets: data, not {spec!r}.")
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
        raise UserError(f"This needs data: pass {KINDS.replace(', none', '')}, not none.")
    if ":" in spec:
        return _from_callable(spec)
    raise UserError(f"Unknown dataset {spec!r}. Use {KINDS} returning a slimkit.Task.")


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
