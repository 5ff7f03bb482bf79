"""What kind of layer a module is, for every technique that picks layers by kind.

A subclass counts as its base (nn.Linear, nn.Conv2d, ...) when it computes like it: it overrides neither
``forward`` nor a Conv's ``_conv_forward``. transformers' ``Conv1D`` (GPT-2 and relatives) counts as an
nn.Linear whose weight is stored transposed, (in, out); it is recognised without importing transformers.
"""
from __future__ import annotations

from typing import Iterable

from torch import Tensor, nn

from .masks import WEIGHTED

COMPUTE_METHODS = ("forward", "_conv_forward")
READS_CHILD_WEIGHTS = (nn.MultiheadAttention,)  # parents that read their layers' weights instead of calling them


def is_conv1d(module: nn.Module) -> bool:
    """transformers' Conv1D, or a subclass computing like it: ``x @ weight + bias`` with weight (nx, nf)."""
    base = next((c for c in type(module).__mro__
                 if c.__name__ == "Conv1D" and c.__module__.split(".")[0] == "transformers"), None)
    weight = getattr(module, "weight", None)
    return (base is not None and _computes_like(type(module), base) and isinstance(weight, Tensor)
            and weight.dim() == 2 and weight.shape[1] == getattr(module, "nf", None))


def layer_base(module: nn.Module, bases: tuple[type[nn.Module], ...]) -> type[nn.Module] | None:
    """The first of ``bases`` that ``module`` is and computes like; a Conv1D counts as nn.Linear. None otherwise."""
    if nn.Linear in bases and is_conv1d(module):
        return nn.Linear
    return next((b for b in bases if isinstance(module, b) and _computes_like(type(module), b)), None)


def unlike_base(module: nn.Module, bases: tuple[type[nn.Module], ...]) -> str | None:
    """Why an instance of one of ``bases`` does not count as it (its class overrides how it computes), else None."""
    for base in bases:
        overridden = [m for m in COMPUTE_METHODS if getattr(type(module), m, None) is not getattr(base, m, None)]
        if isinstance(module, base) and overridden:
            return (f"{type(module).__name__} overrides {base.__name__}.{overridden[0]}, so slimkit cannot replace "
                    f"it by its own {base.__name__}")
    return None


def editable(module: nn.Module, bases: tuple[type[nn.Module], ...]) -> bool:
    """One of ``bases`` (or a subclass computing like it) whose weight is a plain parameter, so that editing
    it in place edits the layer: not a parametrized weight, not a Conv1D's transposed one."""
    return (not is_conv1d(module) and layer_base(module, bases) is not None
            and isinstance(module._parameters.get("weight"), nn.Parameter))


def is_leaf(module: nn.Module) -> bool:
    """No submodules but its parametrizations (``weight_norm``, masks): a layer, not a container."""
    return all(name == "parametrizations" for name, _ in module.named_children())


def read_by_parent(model: nn.Module) -> dict[str, str]:
    """Layer name -> why it cannot be replaced: its parent reads its weight instead of calling it
    (nn.MultiheadAttention's ``out_proj``), so a replacement would break the parent."""
    return {f"{name}.{child}" if name else child: f"{type(parent).__name__} reads its weight instead of calling it"
            for name, parent in model.named_modules() if isinstance(parent, READS_CHILD_WEIGHTS)
            for child, _ in parent.named_children()}


def weighted(module: nn.Module) -> bool:
    """Linear and Conv layers (any subclass: a mask acts on the weight, whatever forward does) and Conv1D, with
    a weight (a clustered layer's inner layer has none)."""
    return (isinstance(module, WEIGHTED) and isinstance(getattr(module, "weight", None), Tensor)) or is_conv1d(module)


def compute_weight(module: nn.Module) -> Tensor:
    """The weight in its base layer's layout: a Conv1D's (nx, nf) as a Linear's (nf, nx)."""
    return module.weight.T if is_conv1d(module) else module.weight


def tied_weights(model: nn.Module, among: Iterable[str] | None = None) -> dict[str, list[str]]:
    """Module name (of ``among``, default all) -> the other modules holding the same weight parameter (a
    language-model head tied to the embedding table), for every such module whose weight is shared."""
    owners: dict[int, list[str]] = {}
    for name, module in model.named_modules():
        weight = module._parameters.get("weight")
        if weight is not None:
            owners.setdefault(id(weight), []).append(name)
    ties = {name: [o for o in names if o != name] for names in owners.values() if len(names) > 1 for name in names}
    return ties if among is None else {name: ties[name] for name in among if name in ties}


def tie_notes(step: str, ties: dict[str, list[str]]) -> list[str]:
    """Notes for layers that ``step`` replaced although their weight was tied (:func:`tied_weights`)."""
    return [f"{step}: {name} shared its weight with {', '.join(others)}; replacing it broke the tie, and each now "
            "stores its own copy" for name, others in ties.items()]


def _computes_like(cls: type, base: type) -> bool:
    return all(getattr(cls, m, None) is getattr(base, m, None) for m in COMPUTE_METHODS)
