"""``datasets:PATH?input=COLUMN[,COLUMN]&label=COLUMN``: a Hugging Face ``datasets`` table, read lazily as a Task.

PATH is a folder written by ``save_to_disk`` (a Dataset or a DatasetDict) or a ``.csv``, ``.json``/``.jsonl`` or
``.parquet`` file. A DatasetDict's ``train`` split is trained on and its ``test`` (else ``validation``) split scored;
otherwise a seeded ``holdout`` fraction of the rows (default 0.1) is the test split. Input columns become model
inputs in the order given: a text column is tokenised with the model's ``tokenizer`` (two inputs: ids and attention
mask), an image column is preprocessed as ``imagefolder:`` images are, a numeric column becomes a tensor. With
``label`` (class ids, a ClassLabel or class names) the metric is top-1 accuracy; without, cosine similarity of the
outputs to the original model's (an embedding task).
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError, require
from . import images, options
from .splits import IndexedSplit
from .task import Task

OPTIONS = {**images.OPTIONS, "input": options.names, "label": options.text, "train": options.text,
           "test": options.text, "holdout": options.fraction, "seed": int, "max_length": options.positive_int}
READERS = {".csv": "from_csv", ".json": "from_json", ".jsonl": "from_json", ".parquet": "from_parquet"}
Columns = Callable[[list], tuple[Tensor, ...]]


def load(path: str, model=None, **given) -> Task:
    """The table at ``path`` as a Task (see the module docstring for the options)."""
    kind = f"datasets:{path}"
    opts = options.parse_options(given, OPTIONS, kind)
    if "input" not in opts:
        raise UserError(f"{kind}: name the model's input column(s), e.g. datasets:{path}?input=text&label=label.")
    train, test, test_rows = _splits(_open(Path(path).expanduser(), kind), opts, kind)
    columns = [*opts["input"], *([opts["label"]] if "label" in opts else [])]
    for name in columns:
        if name not in train.features or name not in test.features:
            raise UserError(f"{kind}: no column {name!r}; the columns are {', '.join(train.features)}.")
    image_opts = {k: v for k, v in opts.items() if k in images.OPTIONS}
    convert = [_input_column(train.features[c], c, model, image_opts, opts.get("max_length", 128), kind)
               for c in opts["input"]]
    classes: tuple[str, ...] = ()
    if "label" in opts:
        label, classes = _label_column(train, test, opts["label"], kind)
        convert.append(label)
    train_rows = range(len(train)) if test is not train else sorted(set(range(len(train))) - set(test_rows))
    if not train_rows:
        raise UserError(f"{kind}: the training split is empty.")
    n_inputs = len(_fetch(train, columns, convert)([train_rows[0]])) - ("label" in opts)  # also checks the columns

    def split(table, rows) -> IndexedSplit:
        return IndexedSplit(_fetch(table, columns, convert), rows)

    return Task(Path(path).stem or kind, split(train, train_rows), split(test, test_rows),
                "top1" if "label" in opts else "cosine", n_inputs, None, classes)


def _open(path: Path, kind: str):
    """A Dataset or DatasetDict from a ``save_to_disk`` folder or a CSV/JSON/Parquet file."""
    datasets = require("datasets", "data")
    if path.is_dir():
        try:
            return datasets.load_from_disk(str(path))
        except FileNotFoundError as exc:
            raise UserError(f"{kind}: not a folder written by Dataset.save_to_disk ({exc}).") from None
    if not path.is_file():
        raise UserError(f"{kind}: no such file or folder; give a save_to_disk folder or a .csv, .json, .jsonl or "
                        ".parquet file.")
    if path.suffix.lower() not in READERS:
        raise UserError(f"{kind}: cannot read {path.suffix or 'files without a suffix'}; give a .csv, .json, .jsonl "
                        "or .parquet file, or a save_to_disk folder.")
    try:
        return getattr(datasets.Dataset, READERS[path.suffix.lower()])(str(path))
    except Exception as exc:  # any parse error of the user's file
        raise UserError(f"{kind}: cannot read the file ({type(exc).__name__}: {str(exc)[:200]}).") from None


def _splits(data, opts: dict, kind: str):
    """(train table, test table, test rows): named splits of a DatasetDict, else a seeded hold-out of one table."""
    if hasattr(data, "keys"):  # a DatasetDict
        names = list(data.keys())
        train_name = opts.get("train", "train")
        test_name = opts.get("test") or next((n for n in ("test", "validation", "val") if n in data), None)
        for name in (train_name, test_name):
            if name is not None and name not in data:
                raise UserError(f"{kind}: no split {name!r}; the splits are {', '.join(names)} (choose with "
                                "?train=NAME&test=NAME).")
        if test_name is not None:
            return data[train_name], data[test_name], range(len(data[test_name]))
        data = data[train_name]
    if len(data) < 2:
        raise UserError(f"{kind}: {len(data)} row(s); a train and a test split need at least two.")
    order = list(range(len(data)))
    random.Random(opts.get("seed", 0)).shuffle(order)
    n_test = min(len(data) - 1, max(1, round(len(data) * opts.get("holdout", 0.1))))
    return data, data, sorted(order[:n_test])


def _fetch(table, columns: list[str], convert: list[Columns]) -> Callable[[list[int]], tuple[Tensor, ...]]:
    def fetch(indices: list[int]) -> tuple[Tensor, ...]:
        rows = table[indices]
        return tuple(t for name, to_tensors in zip(columns, convert) for t in to_tensors(rows[name]))

    return fetch


def _input_column(feature, name: str, model, image_opts: dict, max_length: int, kind: str) -> Columns:
    """How one input column's values become tensors."""
    datasets = require("datasets", "data")
    if isinstance(feature, datasets.Image):
        preprocess = images.preprocess_for(model, **image_opts)
        return lambda values: (torch.stack([preprocess(v) for v in values]),)
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        tokenizer = getattr(model, "tokenizer", None)
        if tokenizer is None:
            raise UserError(f"{kind}: column {name!r} holds text, which needs a model with a tokenizer "
                            "(e.g. --model zoo:minilm or hf:DIR).")

        def tokens(values):
            enc = tokenizer(values, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            return enc["input_ids"], enc["attention_mask"]

        return tokens
    return lambda values: (_numeric(values, name, kind),)


def _numeric(values: list, name: str, kind: str) -> Tensor:
    try:
        array = np.asarray(values)
    except ValueError as exc:  # ragged lists
        raise UserError(f"{kind}: column {name!r} holds values of different shapes ({exc}).") from None
    if array.dtype.kind not in "biuf":
        raise UserError(f"{kind}: column {name!r} holds {array.dtype} values; an input column holds numbers, text "
                        "or images.")
    tensor = torch.from_numpy(array.copy())
    return tensor.float() if array.dtype.kind == "f" else tensor.long()


def _label_column(train, test, name: str, kind: str) -> tuple[Columns, tuple[str, ...]]:
    """(how label values become class ids, the class names when the column says)."""
    datasets = require("datasets", "data")
    feature = train.features[name]
    if isinstance(feature, datasets.ClassLabel):
        return (lambda values: (torch.tensor(values, dtype=torch.int64),)), tuple(feature.names)
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        classes = tuple(sorted(set(train.unique(name)) | set(test.unique(name))))
        ids = {c: i for i, c in enumerate(classes)}
        return (lambda values: (torch.tensor([ids[v] for v in values], dtype=torch.int64),)), classes
    if isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint", "bool")):
        return (lambda values: (torch.tensor(values, dtype=torch.int64),)), ()
    raise UserError(f"{kind}: label column {name!r} holds {feature}; a label is a class id, a ClassLabel or a class "
                    "name. For other targets build a Task with a callable metric (slimkit.Task.from_loaders).")
