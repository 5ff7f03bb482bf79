"""Deep copies of models that share nothing with the original, parametrized layers included."""
from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils import parametrize


def deep_copy(model: nn.Module) -> nn.Module:
    """``copy.deepcopy(model)``, with each parametrized module given a class of its own.

    torch puts a parametrized tensor's property on a class generated for the module, and a plain deep copy
    shares that class: removing a parametrization from the copy would delete the original's ``weight``.
    """
    copied = copy.deepcopy(model)
    for module in copied.modules():
        if parametrize.is_parametrized(module):
            cls = type(module)
            module.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
    return copied
