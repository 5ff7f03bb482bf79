"""The ``fuse`` step: inference graph optimisation with torch.fx.

Passes, in order: dropout/identity removal, BatchNorm folding into Conv/Linear, constant folding, and
Conv/Linear + activation fusion into one :class:`Fused` module. Models torch.fx cannot trace get the
BatchNorm folding that needs no graph (adjacent children of an nn.Sequential) and a warning naming what
was skipped.
"""
from __future__ import annotations

import copy
import dataclasses
import warnings

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..graph.fold import LAYERS, fold_into, graph_pairs, sequential_pairs
from ..models.outputs import output_tensor
from ..recipe import StepConfig, register

IDENTITIES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
DROPOUT_FUNCTIONS = (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, torch.dropout)
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardtanh, nn.GELU, nn.SiLU, nn.Hardswish)
# functional activations (called without extra arguments) -> the module that computes the same
ACTIVATION_FUNCTIONS = {F.relu: nn.ReLU, torch.relu: nn.ReLU, F.relu6: nn.ReLU6, F.gelu: nn.GELU, F.silu: nn.SiLU,
                        F.hardswish: nn.Hardswish, "relu": nn.ReLU}


@dataclasses.dataclass
class Fuse(StepConfig):
    """Optimise the inference graph; outputs stay equal to the input model's (FP32 rounding only).

    Args:
        fold_batchnorm: fold eval-mode BatchNorm into the Conv/Linear before it (its parameters disappear).
        remove_identity: drop nn.Identity and dropout (modules and functional calls with training=False).
        fold_constants: precompute operations that depend only on weights/buffers, store them as buffers.
        fuse_activations: wrap a Conv/Linear and the activation that alone consumes it into one
            :class:`Fused` module (one call in eager; exporters see the same two ops).
    """

    key = "fuse"
    fold_batchnorm: bool = True
    remove_identity: bool = True
    fold_constants: bool = True
    fuse_activations: bool = True


class Fused(nn.Module):
    """A Conv/Linear layer (BatchNorm already folded in) followed by its activation, as one module."""

    def __init__(self, layer: nn.Module, act: nn.Module):
        super().__init__()
        self.layer, self.act = layer, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.layer(x))


@dataclasses.dataclass
class FuseResult:
    """What :func:`fuse_model` did: folded (layer, batchnorm) pairs, counts per pass, and what it skipped."""

    traced: bool
    folded: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    removed: int = 0
    constants: int = 0
    fused: list[str] = dataclasses.field(default_factory=list)
    skipped: str = ""

    def summary(self) -> str:
        text = (f"fuse: {len(self.folded)} BatchNorms folded, {len(self.fused)} layer+activation pairs fused, "
                f"{self.removed} identity/dropout calls removed, {self.constants} constants folded")
        return text + (f"; {self.skipped}" if self.skipped else "")


def fuse_model(model: nn.Module, cfg: Fuse = Fuse()) -> tuple[nn.Module, FuseResult]:
    """Apply ``cfg``'s passes to ``model`` (put in eval mode) and return the optimised model.

    Traceable models come back as a ``torch.fx.GraphModule`` with the same submodule names; others are
    changed in place. Warns (and says in ``FuseResult.skipped``) when tracing failed.
    """
    model.eval()
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:  # data-dependent control flow, or a library model fx cannot follow
        return _fold_untraced(model, cfg, exc)
    result = FuseResult(traced=True)
    if cfg.remove_identity:
        result.removed = _remove_identities(gm)
    if cfg.fold_batchnorm:
        result.folded = _fold_graph(gm)
    if cfg.fold_constants:
        result.constants = _fold_constants(gm)
    if cfg.fuse_activations:
        result.fused = _fuse_activations(gm)
    gm.graph.eliminate_dead_code(_mutates)
    gm.graph.lint()
    # A fresh GraphModule keeps only what the graph references, so folded BatchNorms and the weights that
    # constants were computed from leave the state dict.
    return fx.GraphModule(gm, gm.graph, class_name=type(model).__name__).eval(), result


def _fold_untraced(model: nn.Module, cfg: Fuse, exc: Exception) -> tuple[nn.Module, FuseResult]:
    result = FuseResult(traced=False)
    if cfg.fold_batchnorm:
        result.folded = sequential_pairs(model)
        for layer, bn in result.folded:
            fold_into(model.get_submodule(layer), model.get_submodule(bn))
            model.set_submodule(bn, nn.Identity())
    reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
    skipped = [name for name, on in (("BatchNorm folding outside nn.Sequential", cfg.fold_batchnorm),
                                     ("identity/dropout removal", cfg.remove_identity),
                                     ("constant folding", cfg.fold_constants),
                                     ("activation fusion", cfg.fuse_activations)) if on]
    result.skipped = f"torch.fx cannot trace {type(model).__name__} ({reason}); skipped {', '.join(skipped)}"
    warnings.warn(f"fuse: {result.skipped}", stacklevel=3)
    return model, result


def _modules(gm: fx.GraphModule) -> dict[str, nn.Module]:
    return dict(gm.named_modules())


def _remove_identities(gm: fx.GraphModule) -> int:
    modules, removed = _modules(gm), 0
    for node in list(gm.graph.nodes):
        identity = node.op == "call_module" and isinstance(modules[node.target], IDENTITIES)
        dropout = node.op == "call_function" and node.target in DROPOUT_FUNCTIONS and _training(node) is False
        if (identity or dropout) and node.args and isinstance(node.args[0], fx.Node):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
            removed += 1
    return removed


def _training(node: fx.Node):
    """The training flag of a functional dropout call (F.dropout defaults to training=True)."""
    positional = node.args[2] if len(node.args) > 2 else True
    return node.kwargs.get("training", node.kwargs.get("train", positional))


def _fold_graph(gm: fx.GraphModule) -> list[tuple[str, str]]:
    pairs = graph_pairs(gm.graph, _modules(gm))
    folded = {bn for _, bn in pairs}
    for layer, bn in pairs:
        fold_into(gm.get_submodule(layer), gm.get_submodule(bn))
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and node.target in folded:
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    return pairs


def _fold_constants(gm: fx.GraphModule) -> int:
    """Replace each computed value that depends only on weights/buffers by a precomputed buffer."""
    values: dict[fx.Node, object] = {}
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            values[node] = _attr(gm, node.target)
        elif (node.op in ("call_function", "call_method") and node.all_input_nodes and not _mutates(node)
              and all(n in values for n in node.all_input_nodes)):
            args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda n: values[n])
            fn = node.target if node.op == "call_function" else getattr(args[0], node.target)
            with torch.no_grad():
                values[node] = fn(*args, **kwargs) if node.op == "call_function" else fn(*args[1:], **kwargs)
    count = 0
    for node, value in values.items():
        # fold the frontier only: computed constants consumed by something that is not constant
        if (node.op == "get_attr" or not isinstance(value, torch.Tensor) or all(u in values for u in node.users)
                or any(_mutates(u) for u in node.users)):  # a buffer must not be changed in place on every call
            continue
        name = f"folded_constant_{count}"
        gm.register_buffer(name, value.detach().clone())
        with gm.graph.inserting_before(node):
            node.replace_all_uses_with(gm.graph.get_attr(name))
        count += 1
    gm.graph.eliminate_dead_code(_mutates)
    return count


def _mutates(node: fx.Node) -> bool:
    """In-place ops (``add_``, ``out=``) and side effects must run at inference time, not at fuse time."""
    name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
    return node.is_impure() or name.endswith("_") or "out" in node.kwargs


def _attr(gm: nn.Module, target: str):
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _activation(node: fx.Node, modules: dict[str, nn.Module]) -> nn.Module | None:
    """The module equivalent of an activation node applied to its first argument alone, else None."""
    if node.op == "call_module" and isinstance(modules[node.target], ACTIVATIONS) and len(node.args) == 1:
        return modules[node.target]
    extra = [v for k, v in node.kwargs.items() if not (k == "inplace" and isinstance(v, bool))]
    if node.op in ("call_function", "call_method") and len(node.args) == 1 and not extra:
        try:
            make = ACTIVATION_FUNCTIONS.get(node.target)
        except TypeError:  # unhashable target
            make = None
        return make() if make else None
    return None


def _fuse_activations(gm: fx.GraphModule) -> list[str]:
    modules, fused = _modules(gm), []
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target], LAYERS) or calls[node.target] != 1:
            continue
        if len(node.users) != 1:
            continue
        (user,) = node.users
        act = _activation(user, modules) if user.args and user.args[0] is node else None
        if act is None:
            continue
        gm.set_submodule(node.target, Fused(modules[node.target], copy.deepcopy(act)))
        user.replace_all_uses_with(node)
        gm.graph.erase_node(user)
        fused.append(node.target)
    return fused


def _replay(model: nn.Module, entry: dict) -> nn.Module:
    return fuse_model(model, Fuse.from_dict(dict(entry["config"])))[0]


@register(Fuse, replay=_replay)
def fuse(model: nn.Module, cfg: Fuse, ctx) -> nn.Module:
    """Optimise the graph, check the outputs (the tensor of what the model returns, see
    :mod:`slimkit.models.outputs`) are unchanged on the example inputs, and note what was done."""
    reference = ctx.batch(2)
    with torch.inference_mode():
        before = output_tensor(model.eval()(*reference))
    model, result = fuse_model(model, cfg)
    with torch.inference_mode():
        diff = (output_tensor(model(*reference)) - before).abs().max().item()
    ctx.record({"traced": result.traced, "folded": [list(p) for p in result.folded], "fused": result.fused})
    ctx.notes.append(f"{result.summary()} (outputs within {diff:.1e} of the unfused model)")
    return model
