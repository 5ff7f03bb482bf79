"""Example inputs for a model: what the measurements, the exports and the peers run it on."""
from __future__ import annotations

import inspect
import math
import re
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from ..data.task import Task
from ..errors import UserError
from ..models.checkpoint import origin
from ..models.spec import default_input_shape
from .memory import check_inputs_fit

SYNTAX = ("NAME:DTYPE[D1,D2,...] with an optional <HIGH for integer values 0..HIGH-1, "
          "e.g. input_ids:int64[1,32]<30522 or pixel_values:float32[1,3,224,224]")
DTYPES = {name: getattr(torch, name) for name in
          ("float16", "bfloat16", "float32", "float64", "uint8", "int8", "int16", "int32", "int64")}
_FORM = re.compile(r"(?P<name>[A-Za-z_]\w*):(?P<dtype>\w+)\[(?P<shape>[^\]]*)\](?:<(?P<high>\d+))?")


@dataclass(frozen=True)
class InputSpec:
    """One model input: ``forward``'s argument name, dtype, batch-1 shape and, for integers, the exclusive upper
    bound of its random values (None: ones for a ``*mask`` input, else the bound the model's own specs give)."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    high: int | None = None

    def __str__(self) -> str:
        dtype = str(self.dtype).removeprefix("torch.")
        return f"{self.name}:{dtype}[{','.join(map(str, self.shape))}]" + (f"<{self.high}" if self.high else "")


def parse_input(text: str) -> InputSpec:
    """Parse ``NAME:DTYPE[D1,D2,...]<HIGH`` (see :data:`SYNTAX`); UserError naming the syntax when it is not one."""
    form = _FORM.fullmatch(text.replace(" ", "")) if isinstance(text, str) else None
    if form is None:
        raise UserError(f"Input spec {text!r:.100} is not of the form {SYNTAX}.")
    name, dtype = form["name"], DTYPES.get(form["dtype"])
    if dtype is None:
        raise UserError(f"Input spec {text!r:.100}: unknown dtype {form['dtype']!r:.30}; use one of {', '.join(DTYPES)} "
                        f"({SYNTAX}).")
    try:
        shape = tuple(int(d) for d in form["shape"].split(","))
    except ValueError:
        shape = ()
    if not 1 <= len(shape) <= 8 or min(shape) < 1 or math.prod(shape) > 2**31:
        raise UserError(f"Input spec {text!r:.100}: the shape takes 1 to 8 dimensions, each >= 1, at most 2**31 "
                        f"elements ({SYNTAX}).")
    high = None if form["high"] is None else int(form["high"])
    if high is not None and dtype.is_floating_point:
        raise UserError(f"Input spec {text!r:.100}: <HIGH bounds integer values only; drop it for {form['dtype']} "
                        f"({SYNTAX}).")
    if high is not None and not 1 <= high <= torch.iinfo(dtype).max + 1:
        raise UserError(f"Input spec {text!r:.100}: HIGH must be in 1..{torch.iinfo(dtype).max + 1} for "
                        f"{form['dtype']} ({SYNTAX}).")
    return InputSpec(name, dtype, shape, high)


def example_inputs(model: nn.Module, *, data: Task | None = None, shape: tuple[int, ...] | None = None,
                   inputs: Iterable[str | InputSpec] | None = None, batch_sizes: tuple[int, ...] = (1,)) -> tuple:
    """Batch-1 inputs for ``model``, checked to fit it and the memory of its largest batch in ``batch_sizes``.

    They are, in this order of precedence: built from ``inputs`` (:func:`parse_input` specs or strings, passed in
    the order of ``forward``'s arguments); random (seeded) float of ``shape`` (checked on an uninitialised tensor
    first, which takes no memory until touched); ``data``'s first test inputs; random of the zoo shape of the
    model's base SPEC; built from the model's own ``input_specs()`` (``hf:`` models: token ids below the
    vocabulary size and a mask of ones, or an image). UserError when none of these says what the model takes, or
    the inputs do not fit.
    """
    specs = [i if isinstance(i, InputSpec) else parse_input(i) for i in inputs or ()]
    if specs and shape:
        raise UserError("Give the inputs' shape (--input-shape) or typed input specs (--input), not both.")
    if specs:
        return _from_specs(model, specs, batch_sizes)
    if shape is None and data is None:
        shape = default_input_shape(origin(model)["base"] or "")
        if shape is None and callable(getattr(model, "input_specs", None)):
            return _from_specs(model, [parse_input(text) for text in model.input_specs()], batch_sizes)
    if shape:
        check_inputs_fit(model, (torch.empty(shape),), batch_sizes)
        return (torch.randn(shape, generator=torch.Generator().manual_seed(0)),)
    if data is None:
        raise UserError(f"Cannot tell what input {origin(model)['base'] or 'the model'} takes: pass --input-shape, "
                        f"e.g. --input-shape 1,3,224,224, --input {SYNTAX} (repeat it for each input), or --data.")
    first = data.example_inputs(1)
    check_inputs_fit(model, first, batch_sizes)
    return first


def _from_specs(model: nn.Module, specs: list[InputSpec], batch_sizes: tuple[int, ...]) -> tuple:
    """Seeded tensors for ``specs`` in ``forward``'s order, checked to fit (floats first as uninitialised tensors)."""
    specs = _in_forward_order(model, specs)
    model_highs = {s.name: s.high for s in map(parse_input, getattr(model, "input_specs", list)())}
    generator = torch.Generator().manual_seed(0)
    integers = {s.name: _integers(s, model_highs.get(s.name), generator) for s in specs if not s.dtype.is_floating_point}
    check_inputs_fit(model, tuple(integers[s.name] if s.name in integers else torch.empty(s.shape, dtype=s.dtype)
                                  for s in specs), batch_sizes)
    return tuple(integers[s.name] if s.name in integers else torch.randn(s.shape, generator=generator).to(s.dtype)
                 for s in specs)


def _integers(spec: InputSpec, model_high: int | None, generator: torch.Generator) -> torch.Tensor:
    """Random integers below the spec's bound, else ones for a mask, else below the model's own bound."""
    if spec.high is None and spec.name.endswith("mask"):
        return torch.ones(spec.shape, dtype=spec.dtype)
    high = spec.high or model_high
    if high is None:
        raise UserError(f"Input {spec}: give the integers' exclusive upper bound, e.g. {spec}<30522 for token ids "
                        f"below a vocabulary of 30522 ({SYNTAX}).")
    return torch.randint(0, high, spec.shape, generator=generator, dtype=spec.dtype)


def _in_forward_order(model: nn.Module, specs: list[InputSpec]) -> list[InputSpec]:
    """``specs`` sorted into ``forward``'s positional arguments, with an ``attention_mask`` of ones added after
    ``input_ids`` when ``forward`` takes one; the order given when ``forward`` takes ``*args``."""
    names = [s.name for s in specs]
    if len(set(names)) < len(names):
        raise UserError(f"Inputs {', '.join(map(str, specs))} name an input twice; give each once.")
    params = inspect.signature(model.forward).parameters.values()
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return specs
    takes = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    by_name = {s.name: s for s in specs}
    if "input_ids" in by_name and "attention_mask" in takes and "attention_mask" not in by_name:
        by_name["attention_mask"] = InputSpec("attention_mask", torch.int64, by_name["input_ids"].shape)
    if set(takes[:len(by_name)]) != set(by_name):
        raise UserError(f"{type(model).__name__}.forward takes ({', '.join(takes)}), not ({', '.join(by_name)}): "
                        f"name its first {len(by_name)} argument(s) in the inputs ({SYNTAX}).")
    return [by_name[name] for name in takes[:len(by_name)]]
