"""Name the operator ONNX cannot export and the module that calls it."""
from __future__ import annotations

import re

from torch import nn

from ..models.outputs import TensorOutput

# "No ONNX function found for <OpOverload(op='aten.linalg_eig', ...)>" (dynamo exporter),
# "Exporting the operator 'aten::linalg_eigvals' to ONNX opset ..." (TorchScript exporter)
_OP = re.compile(r"op='(?:aten|prims)\.(\w+)'|operator '(?:aten|prims)::(\w+)'")


def unsupported_op(model: nn.Module, example_inputs: tuple, first: Exception, second: Exception) -> str:
    """A UserError message for a failed export: the unsupported op(s) and the module path that calls each.

    The op names come from both exporters' errors; the module paths from the ``nn_module_stack`` that
    torch.export records on every node of the exported program.
    """
    ops = list(dict.fromkeys(a or b for a, b in _OP.findall(f"{first}\n{second}")))
    brief = f"{_first_line(first)}; the TorchScript exporter also failed: {_first_line(second)}"
    if not ops:
        return f"ONNX export failed: {brief}"
    where = _module_paths(model, example_inputs, ops)
    located = [f"{op} (called in {where[op]})" if op in where else op for op in ops]
    return (f"ONNX export failed: no ONNX conversion for operator {' / '.join(located)}. Replace that op in the "
            f"module's forward, or register a custom ONNX function for it. Exporter errors: {brief}")


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = next((line for line in lines if _OP.search(line)), lines[0] if lines else type(exc).__name__)
    return detail[:300]


def _module_paths(model: nn.Module, example_inputs: tuple, ops: list[str]) -> dict[str, str]:
    """{op: "path (Class)"} for each op found in the exported program (before and after decompositions); paths
    inside a :class:`TensorOutput` are those of the model it wraps."""
    import torch

    wrapped = isinstance(model, TensorOutput)
    try:
        program = torch.export.export(model, tuple(example_inputs), strict=False)
        graphs = [program.graph, program.run_decompositions().graph]
    except Exception:  # not exportable at all: the op names alone must do
        return {}
    found: dict[str, str] = {}
    for graph in graphs:
        for node in graph.nodes:
            name = getattr(node.target, "__name__", str(node.target)).split(".")[0]
            stack = node.meta.get("nn_module_stack")
            if name in ops and name not in found and stack:
                path, cls = list(stack.values())[-1]
                path = _clean(path)
                if wrapped:  # "model.<path>" inside the wrapper is "<path>" of the model it wraps
                    path = path.partition(".")[2]
                found[name] = f"module {path or '<root>'} ({getattr(cls, '__name__', str(cls).split('.')[-1])})"
    return found


def _clean(path: str) -> str:
    """torch.export writes some paths as L['self'].b[1]-style accessors; turn them into b.1."""
    path = re.sub(r"^L\['self'\]\.?", "", path)
    return re.sub(r"\[(\d+)\]", r".\1", path).replace("._modules['", ".").replace("']", "")
