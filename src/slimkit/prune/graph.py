"""Channel dependencies from a torch.fx trace: which channels must be removed together.

Every tensor in the traced graph gets an *id tensor* of the same shape, mapping each element to a channel
id (:mod:`.ids`). Conv/Linear outputs get fresh ids, and so do the parameters the traced code reads itself
(class tokens, position embeddings, layer scales). Elementwise ops unify the ids they combine (residual adds
couple channels); layout ops (cat, flatten, view, transpose, permute, slicing) run on the id tensors
themselves, so concatenation offsets, flatten-into-Linear expansion and channel shuffles come out exactly;
depthwise convs pass their input ids through, grouped convs and GroupNorm tie each whole group into one id,
and a reshape that splits channels into heads ties each head into one id (its head-count attribute follows).
Subclasses of the standard layers (timm's ``BatchNormAct2d``, ``Conv2dSame``, ``LayerNorm2d``) are traced as
those layers. Id 0 is FIXED: channels that reach the model output, come from its inputs, feed ignored layers
or ops the analysis does not know; ``Dependencies.skipped`` names each such place and why.
"""
from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten, tree_map

from ..errors import UserError
from .ids import FIXED, Dependencies, TensorUse, Use, channel_vector, matmul_ids, spread, varies
from .layout import LayoutRules, where

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
LAYERS = CONVS + NORMS + (nn.Linear, nn.LayerNorm, nn.GroupNorm)
"""Layers traced as one node even when subclassed (their subclasses' extra work must be elementwise)."""
UNARY_MODULES = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid,
                 nn.LeakyReLU, nn.ELU, nn.Mish, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Identity)
POOL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
                nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Upsample)
UNARY = {F.relu, F.relu6, F.gelu, F.silu, F.hardswish, F.hardsigmoid, F.leaky_relu, F.elu, F.mish, F.dropout,
         F.sigmoid, F.tanh, torch.relu, torch.sigmoid, torch.tanh, operator.neg, torch.exp, torch.sqrt, torch.rsqrt,
         "relu", "sigmoid", "tanh", "clone", "neg", "float", "to", "type_as", "detach", "exp", "sqrt", "rsqrt",
         "masked_fill", "pow", operator.pow}
BINARY = {operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.imul,
          torch.add, torch.sub, torch.mul, torch.div, torch.maximum, torch.minimum,
          "add", "sub", "mul", "div", "add_", "mul_"}
POOLS = {F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
         F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool2d,
         F.interpolate}
REDUCE = {torch.mean, torch.sum, torch.amax, "mean", "sum", "amax"}
SOFTMAX = {F.softmax, F.log_softmax, torch.softmax, F.normalize, "softmax", "log_softmax"}
MATMUL = {operator.matmul, torch.matmul, torch.bmm, "matmul", "bmm"}


class _Tracer(fx.Tracer):
    """fx's tracer, with subclasses of the standard layers kept as single calls instead of traced into."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, LAYERS) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolically trace ``model``; raise a UserError naming the way out when it cannot be traced."""
    tracer = _Tracer()
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # fx raises many types (TraceError, TypeError, ...) for untraceable code
        raise UserError(
            f"channel_prune could not trace {type(model).__name__} with torch.fx ({type(exc).__name__}: {exc}). "
            "Structured pruning needs a forward without data-dependent control flow; make it traceable "
            "or use magnitude_prune (unstructured), which needs no graph."
        ) from exc
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


def analyse(model: nn.Module, example_inputs: tuple, ignore: set[str] = frozenset()) -> Dependencies:
    """Trace ``model`` on ``example_inputs`` and return its channel dependencies.

    Args:
        ignore: module names whose input and output channels are all kept.
    """
    deps, was_training = Dependencies(), model.training
    model.eval()
    try:
        with torch.no_grad():
            _Propagator(trace(model), model, deps, ignore).run(*example_inputs)
    finally:
        model.train(was_training)
    _settle_tensors(deps)
    return deps


def _settle_tensors(deps: Dependencies) -> None:
    """Keep every read parameter whose channels do not lie along exactly one of its dims."""
    for use in deps.tensors:
        ids = deps.canonical(use.ids)
        channel_dims = [d for d in range(ids.dim()) if varies(ids, d)]
        if len(channel_dims) != 1:
            deps.fix(ids)


def _is_tensor(x) -> bool:
    return isinstance(x, Tensor)


class _Propagator(LayoutRules, fx.Interpreter):
    """Runs the traced model for real and, beside each value, computes its id tensor."""

    def __init__(self, gm: fx.GraphModule, model: nn.Module, deps: Dependencies, ignore: set[str]):
        super().__init__(gm)
        self.model, self.deps, self.ignore = model, deps, ignore
        self.ids: dict[fx.Node, object] = {}
        self.sources: dict[fx.Node, list] = {}  # sizes read from tensors: the channel ids they count

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
            self.deps.skipped.append(f"{where(n)} ({why})")
        for t in inputs:
            self.deps.fix(t)
        return self._fixed_like(value)

    # -- rules ---------------------------------------------------------------------------------
    def _ids(self, n: fx.Node, value):
        if n.op == "placeholder":
            return self._fixed_like(value)
        if n.op == "get_attr":
            return self._attribute(n, value)
        if n.op == "output":
            for t in tree_flatten(self._args(n))[0]:
                if _is_tensor(t):
                    self.deps.fix(t)
            return None
        if not any(_is_tensor(v) for v in tree_flatten(value)[0]):
            self._track_size(n, value)
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
        if target in SOFTMAX:
            return self._softmax(n, value)
        if target in MATMUL:
            args = self._args(n)[0]
            return self._product(n, value, matmul_ids(self.deps, args[0], args[1]))
        if target is F.scaled_dot_product_attention:
            return self._attention(n, value)
        return self._layout(n, value)

    def _attribute(self, n: fx.Node, value):
        """A parameter or buffer read by the traced code: fresh ids, so it can shrink with what it meets."""
        if not _is_tensor(value) or value.dim() == 0 or not value.is_floating_point():
            return self._fixed_like(value)
        module, _, attr = n.target.rpartition(".")
        for use in self.deps.tensors:  # read twice: the same ids
            if (use.module, use.attr) == (module, attr):
                return use.ids
        ids = self.deps.fresh(value.numel(), None).view(value.shape)
        self.deps.tensors.append(TensorUse(module, attr, ids))
        return ids

    def _same(self, n: fx.Node, value):
        ids = self._args(n)[0][0]
        if not _is_tensor(ids) or ids.shape != value.shape:
            return self._keep_all(n, value, "changes the shape")
        return ids

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
        return any(t.shape[d] == 1 and shape[d] > 1 and varies(other, d) for d in range(len(shape)))

    def _pool(self, n: fx.Node, value, ids: Tensor):
        vector = channel_vector(self.deps, ids, 1)
        if vector is None:
            return self._keep_all(n, value, "channels mixed along other dims")
        return spread(vector, value.shape, 1)

    def _reduce(self, n: fx.Node, value):
        args, kwargs = self._args(n)
        ids = args[0]
        dims = args[1] if len(args) > 1 else kwargs.get("dim")
        if dims is None:
            return self._keep_all(n, value, "reduces over every dim")
        dims = [d % ids.dim() for d in ([dims] if isinstance(dims, int) else dims)]
        if any(varies(ids, d) for d in dims):
            return self._keep_all(n, value, "reduces across channels")
        for d in dims:
            ids = ids.narrow(d, 0, 1)
        return ids.reshape(value.shape).clone()

    def _softmax(self, n: fx.Node, value, dim=None):
        args, kwargs = self._args(n)
        default = 1 if n.target is F.normalize else None
        dim = dim if dim is not None else (args[1] if len(args) > 1 else kwargs.get("dim", default))
        if dim is None or varies(args[0], dim):
            return self._keep_all(n, value, "normalises across channels")
        return args[0].clone()

    def _product(self, n: fx.Node, value, ids: Tensor | None):
        if ids is None or ids.shape != value.shape:
            return self._keep_all(n, value, "a product that sums over channels")
        return ids

    def _attention(self, n: fx.Node, value):
        """scaled_dot_product_attention(q, k, v): softmax(q @ k^T) @ v, head by head."""
        args, kwargs = self._args(n)
        q, k, v = (list(args) + [kwargs.get(name) for name in ("query", "key", "value")[len(args):]])[:3]
        try:
            scores = matmul_ids(self.deps, q, k.transpose(-2, -1))
            out = None if scores is None else matmul_ids(self.deps, scores, v)
        except RuntimeError:  # heads that do not broadcast (enable_gqa)
            out = None
        return self._product(n, value, out)

    def _module(self, n: fx.Node, value):
        name, module = n.target, self.module.get_submodule(n.target)
        ids = self._args(n)[0][0] if n.args else None
        if name in self.ignore:
            return self._keep_all(n, value)
        if isinstance(module, UNARY_MODULES):
            return self._same(n, value)
        if isinstance(module, POOL_MODULES):
            return self._pool(n, value, ids)
        if isinstance(module, nn.Softmax):
            return self._softmax(n, value, module.dim)
        if isinstance(module, nn.Flatten):
            return ids.flatten(module.start_dim, module.end_dim).clone()
        if not isinstance(module, LAYERS) or isinstance(module, CONVS) and module.transposed:
            return self._keep_all(n, value, f"{type(module).__name__} is not supported")
        if not _keeps_layout(module, ids, value):
            return self._keep_all(n, value, f"{type(module).__name__} changes the shape its base layer would")
        if isinstance(module, CONVS):
            return self._conv(n, name, module, value, ids)
        if isinstance(module, nn.Linear):
            return self._linear(n, name, module, value, ids)
        if isinstance(module, nn.GroupNorm):
            return self._group_norm(n, name, module, value, ids)
        return self._norm(n, name, module, value, ids)

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
        vector = channel_vector(self.deps, ids, 1)
        if vector is None:
            return self._keep_all(n, value, "input channels mixed by a reshape")
        if module.groups == 1:
            out = self._record(name, module, self.deps.fresh(module.out_channels, name), vector)
            return spread(out, value.shape, 1)
        per_in, per_out = module.in_channels // module.groups, module.out_channels // module.groups
        blocks = vector.view(module.groups, per_in)
        for block in blocks:  # a group is removed whole: its inputs (and so its outputs) are one class
            self.deps.merge(block)
        out = blocks[:, :1].expand(module.groups, per_out).reshape(-1).clone()
        return spread(self._record(name, module, out, vector), value.shape, 1)

    def _linear(self, n, name, module, value, ids):
        vector = channel_vector(self.deps, ids, ids.dim() - 1)
        if vector is None:
            return self._keep_all(n, value, "input features vary along other dims")
        out = self._record(name, module, self.deps.fresh(module.out_features, name), vector)
        return spread(out, value.shape, value.dim() - 1)

    def _norm(self, n, name, module, value, ids):
        """BatchNorm (channels at dim 1) or LayerNorm over its last dim; a LayerNorm subclass may normalise
        another dim of that size (timm's LayerNorm2d: channels first)."""
        size = module.num_features if isinstance(module, NORMS) else module.normalized_shape[-1]
        dims = [1] if isinstance(module, NORMS) else [ids.dim() - 1]
        if type(module) is not nn.LayerNorm and isinstance(module, nn.LayerNorm):
            dims += [d for d in range(ids.dim() - 1) if ids.shape[d] == size and varies(ids, d)]
        for dim in dims:
            vector = channel_vector(self.deps, ids, dim) if ids.shape[dim] == size else None
            if vector is not None:
                return spread(self._record(name, module, vector, None), value.shape, dim)
        return self._keep_all(n, value, "features vary along other dims")

    def _group_norm(self, n, name, module, value, ids):
        """GroupNorm: its statistics are per group, so each group of channels is removed whole."""
        vector = channel_vector(self.deps, ids, 1)
        if vector is None:
            return self._keep_all(n, value, "features vary along other dims")
        for block in vector.view(module.num_groups, -1):
            self.deps.merge(block)
        return spread(self._record(name, module, vector, None), value.shape, 1)


def _keeps_layout(module: nn.Module, ids, value) -> bool:
    """Whether a (possibly subclassed) layer's output has the channels its base class would produce."""
    if not _is_tensor(ids) or not _is_tensor(value):
        return False
    if isinstance(module, CONVS):
        return value.dim() == ids.dim() and value.shape[1] == module.out_channels
    if isinstance(module, nn.Linear):
        return value.shape[:-1] == ids.shape[:-1] and value.shape[-1] == module.out_features
    return value.shape == ids.shape
