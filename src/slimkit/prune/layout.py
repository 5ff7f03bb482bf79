"""Layout rules of the dependency analysis: reshapes, slices, splits and the sizes they are computed from.

These ops run on the id tensors themselves. What pruning must not break is the *sizes* written into them:
a literal size along a channel dim must keep its value after pruning, a size read from the same channels
(``c // groups``) follows them, and a size read from other channels (``reshape(B, N, C)`` with ``C`` the
block input's width) ties two widths together, so both are kept. A literal head count is the exception when
the module that wrote it has a head-count attribute of that value: each head becomes one id, and the
attribute follows the kept heads (:class:`.ids.CountUse`).
"""
from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn.functional as F

from .ids import FIXED, CountUse, varies

HEAD_COUNT_ATTRS = ("num_heads", "n_heads", "n_head", "heads", "num_attention_heads")
"""Module attributes that hold an attention head count, set from the kept heads after pruning."""
SIZED = {torch.reshape, torch.flatten, "reshape", "view", "flatten", "expand"}
LIKE = {"reshape_as", "view_as", "expand_as"}
SPLITS = {torch.split, torch.chunk, torch.unbind, torch.narrow, "split", "chunk", "unbind", "narrow"}
REPLAYED = {torch.transpose, torch.permute, torch.cat, torch.concat, torch.stack, torch.squeeze, torch.unsqueeze,
            torch.movedim, torch.roll, torch.flip, "transpose", "permute", "squeeze", "unsqueeze", "movedim",
            "contiguous", "roll", "flip", "repeat"}
SIZE_ARITHMETIC = {operator.add, operator.sub, operator.mul, operator.floordiv, operator.truediv, operator.mod}


def owner_path(n: fx.Node) -> str:
    """The qualified name of the module whose forward created node ``n`` ("" for the root)."""
    stack = n.meta.get("nn_module_stack")
    return next(reversed(stack.values()))[0] if stack else ""


def where(n: fx.Node) -> str:
    """The module path of a node (its qualified name for module calls), for messages."""
    if n.op == "call_module":
        return n.target
    owner = owner_path(n)
    return f"{owner}.{n.name}" if owner else n.name


class LayoutRules:
    """Mixed into the analysis' interpreter; needs its ``deps``, ``ids``, ``sources``, ``model``, ``_args``
    and ``_keep_all``."""

    def _layout(self, n: fx.Node, value):
        target = n.target
        if target is operator.getitem:
            if isinstance(self.ids[n.args[0]], (tuple, list)):
                return self._replay(n)
            return self._index(n, value)
        if target in SIZED:
            return self._sized(n, value)
        if target in LIKE:
            return self._like(n, value)
        if target in SPLITS:
            return self._split(n, value)
        if target is F.pad:
            return self._pad(n, value)
        if target in REPLAYED:
            return self._replay(n)
        return self._keep_all(n, value, f"unsupported op {getattr(target, '__name__', target)}")

    def _replay(self, n: fx.Node):
        """Run the node's op itself on the id tensors (cat, transpose, permute, ...)."""
        args, kwargs = self._args(n)
        if n.op == "call_method":
            target = "reshape" if n.target == "view" else n.target  # ids may be laid out differently in memory
            return getattr(args[0], target)(*args[1:], **kwargs)
        return n.target(*args, **kwargs)

    # -- sizes ---------------------------------------------------------------------------------
    def _track_size(self, n: fx.Node, value) -> None:
        """Remember which channel ids a size (``x.shape``, ``x.size(1)``, ``c // 2``) was read from."""
        args = n.args
        if n.target == "size" or (n.target is getattr and len(args) > 1 and args[1] == "shape"):
            ids = self.ids[args[0]]
            per_dim = [[ids.movedim(d, 0).reshape(ids.shape[d], -1)[:, 0]] if varies(ids, d) else []
                       for d in range(ids.dim())]
            if n.target == "size" and len(args) > 1:
                self.sources[n] = per_dim[args[1]]
            elif n.target == "size" and "dim" in n.kwargs:
                self.sources[n] = per_dim[n.kwargs["dim"]]
            else:
                self.sources[n] = per_dim
        elif n.target is operator.getitem and args[0] in self.sources:
            self.sources[n] = self.sources[args[0]][args[1]]
        elif n.target in SIZE_ARITHMETIC:
            self.sources[n] = [v for a in args if isinstance(a, fx.Node) for v in self._counted(a)]

    def _counted(self, size) -> list:
        """The channel id vectors an int size (a node or a literal) counts."""
        found = self.sources.get(size, []) if isinstance(size, fx.Node) else []
        return [v for v in found if torch.is_tensor(v)]

    def _size_args(self, n: fx.Node) -> list | None:
        """The sizes a reshape/view/expand was given, one per output dim (None for flatten)."""
        if n.target in (torch.flatten, "flatten"):
            return None
        sizes = list(n.args[1:] if n.op == "call_method" else n.args[1:2])
        sizes += [n.kwargs[k] for k in ("shape", "size") if k in n.kwargs]
        if len(sizes) == 1 and isinstance(sizes[0], (tuple, list, fx.Node)):
            sizes = sizes[0]
            if isinstance(sizes, fx.Node):  # a whole torch.Size node
                return [[v for v in per if torch.is_tensor(v)] for per in self.sources.get(sizes, [])] or None
        return [None if s == -1 else self._counted(s) for s in sizes]

    def _classes(self, ids) -> set[int]:
        return set(self.deps.canonical(ids).unique().tolist()) - {FIXED}

    # -- rules ---------------------------------------------------------------------------------
    def _sized(self, n: fx.Node, value):
        """Reshape the ids; a split channel dim may only shrink along its one size that is not a constant."""
        out = self._replay(n)
        varying = [d for d in range(out.dim()) if varies(out, d)]
        if not varying:
            return out
        sizes = self._size_args(n)
        if sizes is not None and len(sizes) != out.dim():
            return self._keep_all(n, value, "reshape with sizes the analysis cannot follow")
        mine = self._classes(self.ids[n.args[0]])
        free = set(range(out.dim()))
        for d, counted in enumerate(sizes or []):
            if counted is None:
                continue
            theirs = set().union(*(self._classes(v) for v in counted))
            if theirs - mine:
                for v in counted:
                    self.deps.fix(v)
                return self._keep_all(n, value, "reshape to the width of other channels (read from their shape)")
            if not theirs:
                free.discard(d)
        free = [d for d in varying if d in free]
        head = self._head_count(n, out, varying) if not free else None
        if head is not None:
            free = [head[0]]
        if len(free) != 1:
            return self._keep_all(n, value, "reshape with constant channel sizes")
        pieces = [out.select(free[0], i) for i in range(out.shape[free[0]])]
        for piece in pieces:
            self.deps.merge(piece)
        if head is not None:
            self.deps.counts.append(CountUse(head[1], head[2], torch.stack([p.flatten()[0] for p in pieces])))
        return out

    def _head_count(self, n: fx.Node, out, varying: list[int]) -> tuple[int, str, str] | None:
        """(dim, module, attribute) when exactly one constant channel size of this reshape is its module's
        head count (``reshape(B, N, 3, self.num_heads, self.head_dim)``)."""
        path = owner_path(n)
        module = self.model.get_submodule(path)
        hits = [(d, path, attr) for d in varying for attr in HEAD_COUNT_ATTRS
                if type(getattr(module, attr, None)) is int and getattr(module, attr) == out.shape[d]]
        return hits[0] if len(hits) == 1 else None

    def _like(self, n: fx.Node, value):
        """reshape_as/view_as/expand_as: the result takes the other tensor's sizes, so its positions are tied."""
        args, _ = self._args(n)
        out = self._replay(n)
        other = args[1] if torch.is_tensor(args[1]) else None
        if other is None or other.shape != out.shape:
            return self._keep_all(n, value, "takes its shape from a non-tensor")
        self.deps.unify(out, other)
        return out

    def _index(self, n: fx.Node, value):
        """``x[...]``: slices at constant positions of a channel dim keep the channels before their bounds."""
        ids = self.ids[n.args[0]]
        raw = n.args[1] if isinstance(n.args[1], tuple) else (n.args[1],)
        dim = 0
        for item in raw:
            if item is None:
                continue
            if item is Ellipsis:
                dim = ids.dim() - sum(1 for i in raw[raw.index(Ellipsis) + 1:] if i is not None)
                continue
            if not isinstance(item, (int, slice)):
                return self._keep_all(n, value, "indexes channels with a tensor")
            if varies(ids, dim) and not self._keep_before_bounds(n, ids, dim, item):
                return self._keep_all(n, value, "slices channels at a position computed at run time")
            dim += 1
        return self._replay(n).clone()

    def _keep_before_bounds(self, n: fx.Node, ids, dim: int, item, clamps: bool = True) -> bool:
        """Fix the positions along ``dim`` that a constant index or slice counts from; False if not constant.

        A slice bound past the end (``x[:, :99]``) is clamped and needs nothing, unless ``clamps`` is False."""
        if isinstance(item, int):
            item = slice(item, None if item == -1 else item + 1)
        bounds = (item.start, item.stop)
        if item.step not in (None, 1) or not all(b is None or isinstance(b, int) for b in bounds):
            return False
        size = ids.shape[dim]
        for b in bounds:
            if b is None or (clamps and b >= size) or b <= -size:
                continue
            kept = ids.narrow(dim, 0, min(b, size)) if b >= 0 else ids.narrow(dim, size + b, -b)
            if bool((kept != FIXED).any()):
                self.deps.skipped.append(f"{where(n)} (the channels a constant slice bound {b} counts)")
            self.deps.fix(kept)
        return True

    def _split(self, n: fx.Node, value):
        """chunk into equal parts ties the parts position by position; constant split sizes keep the channels."""
        args, kwargs = self._args(n)
        ids = args[0]
        name = n.target if isinstance(n.target, str) else n.target.__name__
        dim = kwargs.get("dim", args[2] if len(args) > 2 else 0) if name != "unbind" else \
            kwargs.get("dim", args[1] if len(args) > 1 else 0)
        if name == "narrow":
            dim, start, length = args[1], args[2], args[3]
            if varies(ids, dim) and not self._keep_before_bounds(n, ids, dim, slice(start, start + length), False):
                return self._keep_all(n, value, "narrows channels at a position computed at run time")
            return self._replay(n).clone()
        if not varies(self.deps.canonical(ids), dim):  # e.g. q, k, v of heads that are one id each
            return self._replay(n)
        if name == "chunk" and ids.shape[dim] % args[1] == 0:
            parts = self._replay(n)
            for part in parts[1:]:
                self.deps.unify(parts[0], part)
            return parts
        return self._keep_all(n, value, f"{name} of channels into constant sizes")

    def _pad(self, n: fx.Node, value):
        """F.pad: padding of spatial dims extends their ids; padded channels are new, FIXED ones."""
        args, kwargs = self._args(n)
        ids, pad = args[0], args[1] if len(args) > 1 else kwargs["pad"]
        padded = [ids.dim() - 1 - i for i in range(len(pad) // 2)]
        if any(varies(ids, d) for d in padded):
            return F.pad(ids, pad, value=FIXED)
        for d in padded:
            ids = ids.narrow(d, 0, 1)
        return ids.expand(value.shape).clone()
