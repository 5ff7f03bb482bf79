"""What a model returns, as the one tensor slimkit measures, compares and exports.

A model may return a tensor, a tuple or list (its first tensor counts), or a mapping such as transformers'
``ModelOutput`` (an ``OrderedDict``): the output named by the caller, else ``logits``, else ``last_hidden_state``,
else its first tensor. :class:`TensorOutput` makes any model return that tensor, and runs a model whose config
turns the key/value cache on (GPT-2, Llama) with ``use_cache=False``, so exporters never see cache objects.
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping

import torch
from torch import nn

from ..errors import UserError

PREFERRED = ("logits", "last_hidden_state")
TENSOR_NAME = "output"  # the name of an output that is a bare tensor or a tuple's first tensor
CACHE_KEYS = ("cache", "past_key_values")


def pick_output(output, name: str | None = None) -> tuple[str, torch.Tensor]:
    """(name, tensor) of the tensor slimkit measures in ``output`` (see the module docstring); ``name`` picks a
    mapping's output by its key. UserError when there is no such tensor."""
    if isinstance(output, Mapping):
        tensors = {key: value for key, value in output.items() if isinstance(value, torch.Tensor)}
        if name is not None:
            if name not in tensors:
                raise UserError(f"The model has no tensor output named {name!r}; it returns {sorted(tensors)}.")
            return name, tensors[name]
        key = next((k for k in PREFERRED if k in tensors), next(iter(tensors), None))
        if key is not None:
            return key, tensors[key]
    elif name is not None:
        raise UserError(f"The model returns a {type(output).__name__}, whose outputs have no names; "
                        f"ask for no output name (got {name!r}).")
    elif isinstance(output, torch.Tensor):
        return TENSOR_NAME, output
    elif isinstance(output, (tuple, list)):
        first = next((value for value in output if isinstance(value, torch.Tensor)), None)
        if first is not None:
            return TENSOR_NAME, first
    raise UserError(f"The model returns a {type(output).__name__} without a tensor in it; make its forward return "
                    f"a tensor, or a tuple or mapping holding one.")


def output_tensor(output, name: str | None = None) -> torch.Tensor:
    """The tensor slimkit measures in what a model returned (:func:`pick_output`)."""
    return pick_output(output, name)[1]


def cache_in(output) -> str | None:
    """A description of the key/value cache ``output`` holds (``"cache (DynamicCache)"``), else None."""
    items = output.items() if isinstance(output, Mapping) else enumerate(output) if isinstance(output, (tuple, list)) else ()
    for key, value in items:
        if value is not None and not isinstance(value, torch.Tensor) and (
                key in CACHE_KEYS or type(value).__name__.endswith("Cache")):
            return f"{key} ({type(value).__name__})"
    return None


def cache_off(model: nn.Module) -> dict:
    """``{"use_cache": False}`` when ``model``'s config turns the key/value cache on and its forward takes
    ``use_cache`` (GPT-2, Llama), else ``{}``: the keyword arguments that run it without building a cache."""
    if not getattr(getattr(model, "config", None), "use_cache", False):
        return {}
    params = inspect.signature(model.forward).parameters.values()
    return {"use_cache": False} if any(p.name == "use_cache" or p.kind == p.VAR_KEYWORD for p in params) else {}


class TensorOutput(nn.Module):
    """``model`` returning only the tensor :func:`output_tensor` picks (``output``: the mapping key to pick),
    called with :func:`cache_off`'s ``use_cache=False``. ``model`` itself is not changed."""

    def __init__(self, model: nn.Module, output: str | None = None):
        super().__init__()
        self.model, self.output = model, output
        self.options = cache_off(model)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return output_tensor(self.model(*inputs, **self.options), self.output)


def tensor_model(model: nn.Module, example_inputs: tuple, output: str | None = None) -> tuple[nn.Module, str]:
    """(a module returning one tensor, that output's name): ``model`` itself when it returns a tensor and needs no
    ``use_cache=False``, else a :class:`TensorOutput` of it. Runs ``model`` once on ``example_inputs``."""
    if isinstance(model, TensorOutput):
        model, output = model.model, output or model.output
    wrapped = TensorOutput(model, output)
    with torch.inference_mode():
        returned = model.eval()(*example_inputs, **wrapped.options)
    name, _ = pick_output(returned, output)
    return (model if isinstance(returned, torch.Tensor) and not wrapped.options else wrapped), name
