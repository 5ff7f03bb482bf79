"""Channel dependencies from a torch.fx trace: which channels must be removed together.

Every tensor in the traced graph gets an *id tensor* of the same shape, mapping each element to a channel
id. Conv/Linear outputs get fresh ids. Elementwise ops unify the ids they combine (residual adds couple
channels); layout ops (cat, flatten, view, transpose, permute) run on the id tensors themselves, so
concatenation offsets, flatten-into-Linear expansion and channel shuffles come out exactly; depthwise convs
pass their input ids through and grouped convs tie each whole group into one id. Id 0 is FIXED: channels
that reach the model output, come from its inputs, feed ignored layers or ops the analysis does not know.
"""
from __future__ import annotations

import dataclasses
import operator

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten, tree_map

from ..errors import UserError

FIXED = 0
CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
UNARY_MODULES = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid,
                 nn.LeakyReLU, nn.ELU, nn.Mish, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Identity)
POOL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
                nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Upsample)
UNARY = {F.relu, F.relu6, F.gelu, F.silu, F.hardswish, F.hardsigmoid, F.leaky_relu, F.elu, F.mish, F.dropout,
         F.sigmoid, F.tanh, torch.relu, torch.sigmoid, torch.tanh, operator.neg,
         "relu", "sigmoid", "tanh", "clone", "contiguous", "neg", "float", "to", "type_as", "detach"}
BINARY = {operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.imul,
          torch.add, torch.sub, torch.mul, torch.div, torch.maximum, torch.minimum,
          "add", "sub", "mul", "div", "add_", "mul_"}
POOLS = {F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
         F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool2d,
         F.interpolate}
REDUCE = {torch.mean, torch.sum, torch.amax, "mean", "sum", "amax"}
RESHAPE = {torch.flatten, torch.reshape, "flatten", "reshape", "view"}
LAYOUT = {torch.transpose, torch.permute, torch.cat, torch.concat, torch.squeeze, torch.unsqueeze,
          "transpose", "permute", "squeeze", "unsqueeze"}


@dataclasses.dataclass
class Use:
    """A module with parameters and the channel ids along its output and input channels."""

    module: nn.Module
    out_ids: Tensor  # one id per output channel (weight dim 0; a norm's features)
    in_ids: Tensor | None  # one id per input channel (weight dim 1 for ungrouped Conv/Linear)


class Dependencies:
    """Union-find over channel ids plus, per module name, the ids its parameters are indexed by."""

    def __init__(self):
        self.parent = [FIXED]
        self.owner: list[str | None] = [None]  # the module whose output channel each id was born as
        self.uses: dict[str, Use] = {}
        self.skipped: list[str] = []

    def fresh(self, n: int, owner: str) -> Tensor:
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
            self.union(x, y)

    def fix(self, ids: Tensor) -> None:
        for i in torch.unique(ids).tolist():
            self.union(i, FIXED)

    def roots(self) -> Tensor:
        """The class root of every id."""
        return torch.tensor([self.find(i) for i in range(len(self.parent))])


def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolically trace ``model``; raise a UserError naming the way out when it cannot be traced."""
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types (TraceError, TypeError, ...) for untraceable code
        raise UserError(
            f"channel_prune could not trace {type(model).__name__} with torch.fx ({type(exc).__name__}: {exc}). "
            "Structured pruning needs a forward without data-dependent control flow; make it traceable "
            "or use magnitude_prune (unstructured), which needs no graph."
        ) from exc


def analyse(model: nn.Module, example_inputs: tuple, ignore: set[str] = frozenset()) -> Dependencies:
    """Trace ``model`` on ``example_inputs`` and return its channel dependencies.

    Args:
        ignore: module names whose input and output channels are all kept.
    """
    deps, was_training = Dependencies(), model.training
    model.eval()
    try:
        with torch.no_grad():
            _Propagator(trace(model), deps, ignore).run(*example_inputs)
    finally:
        model.train(was_training)
    return deps


def _is_tensor(x) -> bool:
    return isinstance(x, Tensor)


def _varies(ids: Tensor, dim: int) -> bool:
    """True when ids differ along ``dim``."""
    return bool((ids != ids.narrow(dim, 0, 1)).any())


def _channel_vector(ids: Tensor, dim: int) -> Tensor | None:
    """The id of each index along ``dim``, or None when ids also vary along other dims."""
    if any(_varies(ids, d) for d in range(ids.dim()) if d != dim):
        return None
    return ids.movedim(dim, 0).reshape(ids.shape[dim], -1)[:, 0].clone()


def _where(n: fx.Node) -> str:
    """The module path of a node (its qualified name for module calls), for messages."""
    if n.op == "call_module":
        return n.target
    stack = n.meta.get("nn_module_stack")
    owner = next(reversed(stack.values()))[0] if stack else ""
    return f"{owner}.{n.name}" if owner else n.name


def _spread(vector: Tensor, shape: torch.Size, dim: int) -> Tensor:
    """Broadcast a per-channel id vector to ``shape`` along ``dim``."""
    view = [1] * len(shape)
    view[dim] = -1
    return vector.view(view).expand(shape).clone()


class _Propagator(fx.Interpreter):
    """Runs the traced model for real and, beside each value, computes its id tensor."""

    def __init__(self, gm: fx.GraphModule, deps: Dependencies, ignore: set[str]):
        super().__init__(gm)
        self.deps, self.ignore = deps, ignore
        self.ids: dict[fx.Node, object] = {}

    def run_node(self, n: fx.Node):
        value = super().run_node(n)
        self.ids[n] = self._ids(n, value)
        return value

    # -- helpers -------------------------------------------------------------------------------
    def _args(self, n: fx.Node):
        """(args, kwargs) with tensors replaced by their id tensors and other nodes by their values."""
        return fx.node.map_arg((n.args, n.kwargs), lambda a: self.ids[a])

    def _fixed_like(self, value):
        return tree_map(lambda v: torch.full(v.shape, FIXED, dtype=torch.long) if _is_tensor(v) else v, value)

    def _keep_all(self, n: fx.Node, value, why: str | None = None):
        """Keep every channel this node touches; report it in ``skipped`` when some could have been pruned."""
        inputs = [t for t in tree_flatten(self._args(n))[0] if _is_tensor(t)]
        if why is not None and any(bool((t != FIXED).any()) for t in inputs):
            self.deps.skipped.append(f"{_where(n)} ({why})")
        for t in inputs:
            self.deps.fix(t)
        return self._fixed_like(value)

    # -- rules ---------------------------------------------------------------------------------
    def _ids(self, n: fx.Node, value):
        if n.op in ("placeholder", "get_attr"):
            return self._fixed_like(value)
        if n.op == "output":
            for t in tree_flatten(self._args(n))[0]:
                if _is_tensor(t):
                    self.deps.fix(t)
            return None
        if not any(_is_tensor(v) for v in tree_flatten(value)[0]):
            return value  # sizes, shapes and other plain values are used as they are
        if n.op == "call_module":
            return self._module(n, value)
        target = n.target
        if target in UNARY:
            return self._same(n, value)
        if target in BINARY:
            return self._binary(n, value)
        if target in POOLS:
            return self._pool(n, value, self._args(n)[0][0])
        if target in REDUCE:
            return self._reduce(n, value)
        if target in RESHAPE:
            return self._reshape(n, value)
        if target in LAYOUT or (target is operator.getitem and isinstance(self.ids[n.args[0]], (tuple, list))):
            return self._replay(n)
        return self._keep_all(n, value, f"unsupported op {getattr(target, '__name__', target)}")

    def _replay(self, n: fx.Node):
        """Run the node's op itself on the id tensors (cat, transpose, permute, ...)."""
        args, kwargs = self._args(n)
        if n.op == "call_method":
            return getattr(args[0], n.target)(*args[1:], **kwargs)
        return n.target(*args, **kwargs)

    def _same(self, n: fx.Node, value):
        ids = self._args(n)[0][0]
        return ids if ids.shape == value.shape else self._keep_all(n, value, "changes the shape")

    def _binary(self, n: fx.Node, value):
        args, _ = self._args(n)
        tensors = [a for a in args[:2] if _is_tensor(a)]
        if not tensors:
            return self._keep_all(n, value, "no tensor operand")
        if len(tensors) == 1:
            return tensors[0].expand(value.shape).clone()
        a, b = torch.broadcast_tensors(*tensors)
        broadcast_a = self._broadcasts_across_channels(tensors[0], tensors[1], value.shape)
        broadcast_b = self._broadcasts_across_channels(tensors[1], tensors[0], value.shape)
        if broadcast_a and broadcast_b:
            return self._keep_all(n, value, "both operands broadcast across channels")
        if broadcast_a or broadcast_b:  # e.g. x * gate(N,1,H,W): the gate's one channel is kept as is
            self.deps.fix(tensors[0] if broadcast_a else tensors[1])
            return (b if broadcast_a else a).clone()
        self.deps.unify(a, b)
        return a.clone()

    @staticmethod
    def _broadcasts_across_channels(t: Tensor, other: Tensor, shape) -> bool:
        """True when ``t`` is broadcast along a dim where ``other``'s ids vary (one value, many channels)."""
        t = t.view((1,) * (len(shape) - t.dim()) + tuple(t.shape))
        other = other.expand(shape)
        return any(t.shape[d] == 1 and shape[d] > 1 and _varies(other, d) for d in range(len(shape)))

    def _pool(self, n: fx.Node, value, ids: Tensor):
        vector = _channel_vector(ids, 1)
        if vector is None:
            return self._keep_all(n, value, "channels mixed along other dims")
        return _spread(vector, value.shape, 1)

    def _reduce(self, n: fx.Node, value):
        args, kwargs = self._args(n)
        ids = args[0]
        dims = args[1] if len(args) > 1 else kwargs.get("dim")
        if dims is None:
            return self._keep_all(n, value, "reduces over every dim")
        dims = [d % ids.dim() for d in ([dims] if isinstance(dims, int) else dims)]
        if any(_varies(ids, d) for d in dims):
            return self._keep_all(n, value, "reduces across channels")
        for d in dims:
            ids = ids.narrow(d, 0, 1)
        return ids.reshape(value.shape).clone()

    def _reshape(self, n: fx.Node, value):
        """Reshape the ids; a split channel dim may only shrink along its one size that is not a constant."""
        out = self._replay(n)
        varying = [d for d in range(out.dim()) if _varies(out, d)]
        free = [d for d in varying if d not in self._literal_dims(n, out.dim())]
        if not varying:
            return out
        if len(free) != 1:
            return self._keep_all(n, value, "reshape with constant channel sizes")
        for i in range(out.shape[free[0]]):
            piece = out.select(free[0], i)
            self.deps.unify(piece, torch.full_like(piece, int(piece.flatten()[0])))
        return out

    @staticmethod
    def _literal_dims(n: fx.Node, rank: int) -> set[int]:
        """Output dims whose size is written as a constant (not -1, not computed from a tensor's size)."""
        if n.target in (torch.flatten, "flatten"):
            return set()
        sizes = n.args[1:] if n.op == "call_method" else n.args[1:2]
        if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
            sizes = sizes[0]
        if len(sizes) != rank:
            return set(range(rank))
        return {d for d, s in enumerate(sizes) if isinstance(s, int) and s != -1}

    def _module(self, n: fx.Node, value):
        name, module = n.target, self.module.get_submodule(n.target)
        ids = self._args(n)[0][0] if n.args else None
        if name in self.ignore:
            return self._keep_all(n, value)
        if isinstance(module, UNARY_MODULES):
            return self._same(n, value)
        if isinstance(module, POOL_MODULES):
            return self._pool(n, value, ids)
        if isinstance(module, nn.Flatten):
            return ids.flatten(module.start_dim, module.end_dim).clone()
        if isinstance(module, CONVS) and not module.transposed:
            return self._conv(n, name, module, value, ids)
        if isinstance(module, nn.Linear):
            return self._linear(n, name, module, value, ids)
        if isinstance(module, NORMS):
            return self._norm(n, name, module, value, ids, 1)
        if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) == 1:
            return self._norm(n, name, module, value, ids, -1)
        return self._keep_all(n, value, f"{type(module).__name__} is not supported")

    def _record(self, name: str, module: nn.Module, out_ids: Tensor, in_ids: Tensor | None) -> Tensor:
        """Remember the ids of a module's channels; a module called twice must agree with itself."""
        if name in self.deps.uses:
            use = self.deps.uses[name]
            self.deps.unify(use.out_ids, out_ids)
            if in_ids is not None:
                self.deps.unify(use.in_ids, in_ids)
            return use.out_ids
        self.deps.uses[name] = Use(module, out_ids, in_ids)
        return out_ids

    def _conv(self, n, name, module, value, ids):
        vector = _channel_vector(ids, 1)
        if vector is None:
            return self._keep_all(n, value, "input channels mixed by a reshape")
        if module.groups == 1:
            out = self._record(name, module, self.deps.fresh(module.out_channels, name), vector)
            return _spread(out, value.shape, 1)
        per_in, per_out = module.in_channels // module.groups, module.out_channels // module.groups
        blocks = vector.view(module.groups, per_in)
        for block in blocks:  # a group is removed whole: its inputs (and so its outputs) are one class
            self.deps.unify(block, torch.full_like(block, int(block[0])))
        out = blocks[:, :1].expand(module.groups, per_out).reshape(-1).clone()
        return _spread(self._record(name, module, out, vector), value.shape, 1)

    def _linear(self, n, name, module, value, ids):
        vector = _channel_vector(ids, ids.dim() - 1)
        if vector is None:
            return self._keep_all(n, value, "input features vary along other dims")
        out = self._record(name, module, self.deps.fresh(module.out_features, name), vector)
        return _spread(out, value.shape, value.dim() - 1)

    def _norm(self, n, name, module, value, ids, dim):
        vector = _channel_vector(ids, dim % ids.dim())
        if vector is None:
            return self._keep_all(n, value, "features vary along other dims")
        out = self._record(name, module, vector, None)
        return _spread(out, value.shape, dim % value.dim())
