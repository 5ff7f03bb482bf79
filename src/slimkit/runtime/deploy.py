"""The deployable folder: a runtime's artifact plus ``deploy.json``, and :func:`load_deployed` to run it again.

deploy.json: ``{"format": 1, "runtime", "precision", "files", "inputs": [{"name", "shape", "dtype"}],
"static_batch", "trim_padding", "latency_ms": {"bs<N>": {"median", "iqr"}}, "threads", "max_abs_diff", "tolerance",
"slimkit_version"}``. ``trim_padding`` names the attention-mask input when batches are cut to their longest row
before the runtime runs them (see :mod:`slimkit.runtime.padding`), else null.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from ..files import read_json
from ..version import __version__
from . import get_runtime
from .base import Predictor, Runtime
from .onnx import input_names
from .padding import trimming

DEPLOY_FILE = "deploy.json"
_DTYPES = {str(d).removeprefix("torch."): d for d in (torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32,
                                                       torch.int8, torch.uint8, torch.bool)}


def write_deployed(runtime: Runtime, model: nn.Module, example_inputs: tuple, folder: Path, *, precision: str,
                   latency_ms: dict, threads: int, max_abs_diff: float, tolerance: float, source=None,
                   trim: int | None = None, **save_options) -> dict:
    """Write ``runtime``'s artifact of ``model`` (or of ``source``, e.g. its verified ONNX file) and deploy.json
    into ``folder``; ``trim``: the attention mask's input position when padding is trimmed (runtimes with static
    shapes run the full length). Returns the record."""
    folder.mkdir(parents=True, exist_ok=True)
    files = runtime.save(model if source is None else source, example_inputs, folder, precision=precision, **save_options)
    names = input_names(model, len(example_inputs))
    record = {
        "format": 1, "runtime": runtime.name, "precision": precision,
        "files": [str(f.relative_to(folder)) for f in files],
        "inputs": [{"name": n, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
                   for n, t in zip(names, example_inputs)],
        "static_batch": runtime.static_shapes, "trim_padding": None if trim is None or runtime.static_shapes else names[trim],
        "latency_ms": latency_ms, "threads": threads,
        "max_abs_diff": max_abs_diff, "tolerance": tolerance, "slimkit_version": __version__,
    }
    (folder / DEPLOY_FILE).write_text(json.dumps(record, indent=2))
    return record


class Deployed:
    """A deployed model, ready to run: ``deployed(*tensors)`` in the order of ``input_names``, or by name
    (``deployed(**tokenizer(texts, return_tensors="pt"))`` or ``deployed(encoding)``; names the model does not
    take, such as ``token_type_ids`` for a model without them, are ignored). Returns a float CPU tensor."""

    def __init__(self, predictor: Predictor, record: dict):
        self.predictor, self.record = predictor, record
        self.runtime, self.precision = record["runtime"], record["precision"]
        self.input_names = [i["name"] for i in record["inputs"]]

    def __call__(self, *inputs, **named) -> torch.Tensor:
        if len(inputs) == 1 and isinstance(inputs[0], Mapping) and not named:
            inputs, named = (), dict(inputs[0])
        if named:
            if inputs:
                raise UserError("Pass a deployed model's inputs either in order or by name, not both.")
            missing = [n for n in self.input_names if n not in named]
            if missing:
                raise UserError(f"The deployed model needs input(s) {missing}; got {sorted(named)}.")
            inputs = tuple(named[n] for n in self.input_names)
        if len(inputs) != len(self.input_names):
            raise UserError(f"The deployed model takes {len(self.input_names)} input(s) {self.input_names}, got {len(inputs)}.")
        return self.predictor(*(torch.as_tensor(t) for t in inputs))

    def __repr__(self) -> str:
        return f"Deployed({self.runtime}/{self.precision}, inputs={self.input_names})"


def _schema_problem(record) -> str | None:
    if not isinstance(record, dict) or record.get("format") != 1:
        return "it is not a format-1 deploy.json"
    if not isinstance(record.get("runtime"), str) or not isinstance(record.get("precision"), str):
        return "`runtime` and `precision` must be strings"
    files, inputs = record.get("files"), record.get("inputs")
    if not (isinstance(files, list) and files and all(isinstance(f, str) for f in files)):
        return "`files` must be a non-empty list of file names"
    if not (isinstance(inputs, list) and inputs and all(
            isinstance(i, dict) and isinstance(i.get("name"), str) and i.get("dtype") in _DTYPES
            and isinstance(i.get("shape"), list) and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in i["shape"])
            for i in inputs)):
        return "`inputs` must list {name, shape, dtype} with positive integer shapes"
    if record.get("trim_padding") not in (None, *(i["name"] for i in inputs)):
        return "`trim_padding` must be null or the name of an input"
    return None


def load_deployed(folder: str | Path, *, threads: int = 1) -> Deployed:
    """The model in a deploy folder (``deploy/`` of a ``slimkit compress`` run with an ``export`` step), on the
    runtime and precision recorded in its deploy.json, with ``threads`` intra-op threads."""
    folder = Path(folder)
    path = folder / DEPLOY_FILE
    if not path.is_file():
        raise UserError(f"{folder}: no {DEPLOY_FILE} in it; pass the deploy/ folder of a run with an `export` step.")
    record = read_json(path, "the deploy record")
    problem = _schema_problem(record)
    if problem:
        raise UserError(f"{path}: {problem}; write it again with `slimkit compress` (a recipe ending in `export`).")
    runtime = get_runtime(record["runtime"])
    artifact = (folder / record["files"][0]).resolve()
    if not artifact.is_relative_to(folder.resolve()) or not artifact.exists():
        raise UserError(f"{path}: its artifact {record['files'][0]!r:.100} is missing from {folder}.")
    example = tuple(torch.zeros(i["shape"], dtype=_DTYPES[i["dtype"]]) for i in record["inputs"])
    source = folder if record["runtime"] in ("eager", "compile") else artifact
    predictor = runtime.prepare(source, example, threads=threads, precision=record["precision"])
    names = [i["name"] for i in record["inputs"]]
    if record.get("trim_padding"):
        predictor = trimming(predictor, names.index(record["trim_padding"]))
    return Deployed(predictor, record)
