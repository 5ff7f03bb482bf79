"""Student builders: narrower ResNets and shallower transformers initialised from the teacher."""
from __future__ import annotations

import copy

from torch import nn

from ..errors import UserError
from ..models.zoo import ResNetSmall


def narrower(model: nn.Module, width: float) -> ResNetSmall:
    """A freshly initialised ResNetSmall with every stage ``width`` times as wide as ``model``'s."""
    if not isinstance(model, ResNetSmall):
        raise UserError(
            f"student: narrow builds students for slimkit's ResNetSmall (zoo:fashion-cnn, zoo:digits-cnn), "
            f"not {type(model).__name__}; use student: same with a smaller model of your own."
        )
    return resnet_small_like(model, [max(1, round(b.conv2.out_channels * width)) for b in model.blocks])


def resnet_small_like(model: ResNetSmall, widths: list[int]) -> ResNetSmall:
    """A ResNetSmall with ``widths`` and ``model``'s input channels and classes."""
    return ResNetSmall(tuple(widths), model.fc.out_features, model.stem[0].in_channels)


def layer_stack(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The model's longest ModuleList (a transformer's layers), with its name."""
    stacks = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 1]
    if not stacks:
        raise UserError(f"student: shallow needs a model with a stack of layers (an nn.ModuleList); {type(model).__name__} has none.")
    return max(stacks, key=lambda item: len(item[1]))


def shallower(model: nn.Module, keep: list[int] | None = None) -> nn.Module:
    """A copy of ``model`` keeping only the layers ``keep`` (default: every other, from the first).

    The kept layers carry the teacher's weights; a transformers config's ``num_hidden_layers`` follows.
    """
    student = copy.deepcopy(model)
    name, stack = layer_stack(student)
    keep = list(range(0, len(stack), 2)) if keep is None else keep
    if not keep or any(not 0 <= i < len(stack) for i in keep):
        raise UserError(f"shallower: layers to keep {keep} must be within 0..{len(stack) - 1}.")
    student.set_submodule(name, nn.ModuleList(stack[i] for i in keep))
    for module in student.modules():
        if hasattr(getattr(module, "config", None), "num_hidden_layers"):
            module.config.num_hidden_layers = len(keep)
    return student
