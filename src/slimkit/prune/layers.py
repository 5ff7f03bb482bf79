"""Which layers a pruning step touches, and the ``ignore`` option shared by every pruning config."""
from __future__ import annotations

from torch import nn

from ..errors import UserError
from ..graph.masks import WEIGHTED


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


def weighted_layers(model: nn.Module, ignore: tuple[str, ...] = ()) -> dict[str, nn.Module]:
    """Linear and Conv layers by name, minus the ignored ones."""
    skip = ignored_names(model, ignore)
    return {n: m for n, m in model.named_modules() if isinstance(m, WEIGHTED) and n not in skip}
