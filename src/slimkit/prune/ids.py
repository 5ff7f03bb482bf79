"""Channel ids: the union-find behind the dependency analysis, and the id-tensor algebra its rules share.

Every tensor of a traced model gets an *id tensor* of its shape mapping each element to a channel id; ids
in one class must be removed together. Id 0 is FIXED: channels that cannot be removed.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

FIXED = 0


@dataclasses.dataclass
class Use:
    """A module with parameters and the channel ids along its output and input channels."""

    module: nn.Module
    out_ids: Tensor  # one id per output channel (weight dim 0; a norm's features)
    in_ids: Tensor | None  # one id per input channel (weight dim 1 for ungrouped Conv/Linear)


@dataclasses.dataclass
class TensorUse:
    """A parameter or buffer the traced code reads itself (a class token, a layer scale): its id per element."""

    module: str
    attr: str
    ids: Tensor


@dataclasses.dataclass
class CountUse:
    """An integer attribute of a module (an attention's head count) equal to the number of kept ``ids``."""

    module: str
    attr: str
    ids: Tensor  # one id per counted unit (per head)


class Dependencies:
    """Union-find over channel ids, the ids each module's parameters are indexed by, and what stays and why."""

    def __init__(self):
        self.parent = [FIXED]
        self.owner: list[str | None] = [None]  # the module whose output channel each id was born as
        self.uses: dict[str, Use] = {}
        self.tensors: list[TensorUse] = []
        self.counts: list[CountUse] = []
        self.skipped: list[str] = []  # "where (why)" for every place whose channels were kept

    def fresh(self, n: int, owner: str | None) -> Tensor:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        self.owner.extend([owner] * n)
        return torch.arange(start, start + n)

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:  # the smaller root wins, so FIXED (0) absorbs every class it touches
            self.parent[max(ra, rb)] = min(ra, rb)

    def unify(self, a: Tensor, b: Tensor) -> None:
        """Union the ids of ``a`` and ``b`` position by position (same shape)."""
        for x, y in torch.unique(torch.stack([a.flatten(), b.flatten()], 1), dim=0).tolist():
            if x != y:
                self.union(x, y)

    def merge(self, ids: Tensor) -> None:
        """Put every id of ``ids`` in one class."""
        values = torch.unique(ids).tolist()
        for v in values[1:]:
            self.union(values[0], v)

    def fix(self, ids: Tensor) -> None:
        for i in torch.unique(ids).tolist():
            self.union(i, FIXED)

    def canonical(self, ids: Tensor) -> Tensor:
        """``ids`` with every id replaced by its class root."""
        values, inverse = torch.unique(ids, return_inverse=True)
        return torch.tensor([self.find(v) for v in values.tolist()], dtype=torch.long)[inverse]

    def roots(self) -> Tensor:
        """The class root of every id."""
        return torch.tensor([self.find(i) for i in range(len(self.parent))])


def varies(ids: Tensor, dim: int) -> bool:
    """True when ids differ along ``dim``."""
    return bool((ids != ids.narrow(dim, 0, 1)).any())


def channel_vector(deps: Dependencies, ids: Tensor, dim: int) -> Tensor | None:
    """The id of each index along ``dim``, for a layer that treats that dim as its channels.

    Ids that share an index along ``dim`` (a class token's features beside the patches') are unified; None
    when one id appears at several indices (channels moved into other dims and mixed there).
    """
    flat = deps.canonical(ids).movedim(dim, 0).reshape(ids.shape[dim], -1)
    if not varies(flat, 1):
        return flat[:, 0].clone()
    rows = [torch.unique(row) for row in flat]
    if sum(len(r) for r in rows) != len(torch.unique(flat)):
        return None
    for row in rows:
        deps.merge(row)
    return flat[:, 0].clone()


def spread(vector: Tensor, shape: torch.Size, dim: int) -> Tensor:
    """Broadcast a per-channel id vector to ``shape`` along ``dim``."""
    view = [1] * len(shape)
    view[dim] = -1
    return vector.view(view).expand(shape).clone()


def matmul_ids(deps: Dependencies, a: Tensor, b: Tensor) -> Tensor | None:
    """Ids of ``a @ b`` (``a``: ...,n,k; ``b``: ...,k,m): the classes meeting in an output element are unified.

    None when the product sums over different classes (the contracted dim holds channels) or when an output
    element would belong to a row channel and a different column channel.
    """
    a, b = deps.canonical(a), deps.canonical(b)
    if a.dim() < 2 or b.dim() < 2 or varies(a, -1) or varies(b, -2):
        return None
    rows, cols = a[..., :, :1], b[..., :1, :]
    rows, cols = torch.broadcast_tensors(rows, cols)
    if varies(rows, -2) and varies(cols, -1):
        return None
    deps.unify(rows, cols)
    return rows.clone()
