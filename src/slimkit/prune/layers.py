"""Which layers a pruning step touches, and the ``ignore`` option shared by every pruning config."""
from __future__ import annotations

from torch import nn

from ..errors import UserError
from ..graph.layers import tied_weights, weighted
from ..graph.masks import WEIGHTED  # noqa: F401  (channel pruning's layer kinds)


def ignored_names(model: nn.Module, ignore: tuple[str, ...]) -> set[str]:
    """Module names covered by ``ignore`` (a name also covers the modules inside it).

    Raises:
        UserError: when an ``ignore`` entry names no module, with the closest real names.
    """
    names = [name for name, _ in model.named_modules() if name]
    covered = set()
    for pattern in ignore:
        hits = {n for n in names if n == pattern or n.startswith(pattern + ".")}
        if not hits:
            import difflib

            close = difflib.get_close_matches(pattern, names, n=3)
            hint = f"did you mean {', '.join(map(repr, close))}?" if close else "names come from model.named_modules()"
            raise UserError(f"ignore: {pattern!r} matches no module of {type(model).__name__}; {hint}")
        covered |= hits
    return covered


def weighted_layers(model: nn.Module, ignore: tuple[str, ...] = (), notes: list[str] | None = None,
                    step: str = "prune") -> dict[str, nn.Module]:
    """Linear and Conv layers (subclasses included) and transformers' Conv1D by name, minus the ignored ones.

    Layers whose weight is tied to another module's are left dense, each named in ``notes`` (as ``step``):
    pruning a language-model head tied to the embedding table would prune the table.
    """
    skip = ignored_names(model, ignore)
    ties = tied_weights(model)
    layers = {}
    for name, module in model.named_modules():
        if not weighted(module) or name in skip:
            continue
        if name in ties:
            if notes is not None:
                notes.append(f"{step}: {name} left dense: its weight is tied to {', '.join(ties[name])}, which "
                             "would be pruned with it")
        else:
            layers[name] = module
    return layers
