"""ExecuTorch on the CPU: torch.export, lowered to XNNPACK. Artifact: model.pte.

An ExecuTorch program has static shapes: it runs only the input shapes (batch size included) it was exported
with, so :meth:`ExecuTorch.prepare` exports a model again for the batch of the example inputs it is given.
``int8`` is ExecuTorch's own PT2E quantization of the float model (XNNPACK's symmetric per-channel config),
calibrated on ``calibration``, not slimkit's quantized model.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from ..models.outputs import tensor_model
from .base import Predictor, Runtime, Source, is_quantized
from .diagnose import _first_line, _module_paths

_INT8 = "slimkit_int8"  # a constant method marking a program quantized by save()/prepare(precision="int8")
_OP = re.compile(r"\baten(?:\.|::)(\w+)")
_pool = {"generation": 0}  # bumped whenever slimkit recreates ExecuTorch's process-wide threadpool


def _runtime():
    """ExecuTorch's runtime (its first import warns that the API is experimental)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from executorch.runtime import Runtime as ExecuTorchRuntime

        return ExecuTorchRuntime.get()


def _bind_threads(threads: int) -> int:
    """Size ExecuTorch's threadpool to ``threads``; returns its generation. Resizing recreates the pool, and
    XNNPACK keeps the pool it was loaded with, so a method loaded in an older generation must be loaded again."""
    from executorch.extension.pybindings import portable_lib

    if portable_lib._threadpool_get_thread_count() != threads:
        portable_lib._unsafe_reset_threadpool(threads)
        _pool["generation"] += 1
    return _pool["generation"]


def _pte(source: str | Path) -> Path:
    path = Path(source)
    path = path / "model.pte" if path.is_dir() else path
    if not path.is_file():
        raise UserError(f"{path}: no ExecuTorch program there; pass a model.pte written by runtime executorch.")
    return path


def _refusal(model: nn.Module, inputs: tuple, detail: str) -> UserError:
    """A UserError naming the failing op(s) in ``detail`` and the module that calls each."""
    ops = list(dict.fromkeys(_OP.findall(detail)))
    where = _module_paths(model, inputs, ops)
    located = "".join(f"; {op} is called in {where[op]}" for op in ops if op in where)
    return UserError(f"ExecuTorch (XNNPACK) cannot take this model: {detail}{located}.")


def _quantize(module: nn.Module, inputs: tuple, calibration: list) -> nn.Module:
    """PT2E int8 of an exported float module, calibrated on ``calibration`` (input tuples) cut into batches of
    the example inputs' size (the exported graph takes no other)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                          get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    prepared = prepare_pt2e(module, XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True)))
    shapes, used = [t.shape for t in inputs], 0
    with torch.no_grad():
        for batch in calibration:
            batch = batch if isinstance(batch, (tuple, list)) else (batch,)
            for chunk in zip(*(torch.as_tensor(t).split(len(inputs[0])) for t in batch)):
                if [c.shape for c in chunk] == shapes:
                    prepared(*chunk)
                    used += 1
    if not used:
        raise UserError(f"runtime executorch: calibration has no batch of the exported shapes {[tuple(s) for s in shapes]} "
                        f"(each calibration batch is cut into batches of that size; smaller remainders are left out).")
    return convert_pt2e(prepared)


class ExecuTorch(Runtime):
    """ExecuTorch's Python runtime with XNNPACK kernels (ops XNNPACK lacks run on ExecuTorch's portable kernels).
    ``threads`` sizes ExecuTorch's threadpool, one per process: a predictor finding it resized by another one
    resizes it back and loads its program again."""

    name = module = extra = "executorch"
    precisions = ("fp32", "int8")
    static_shapes = True

    def resolve(self, source: Source, precision: str | None, calibration: list | None = None) -> str:
        """fp32 (default) or int8: ExecuTorch's PT2E quantization of a float model, which needs ``calibration``."""
        if is_quantized(source):
            raise UserError("runtime executorch takes slimkit's float model and quantizes it with PT2E itself: "
                            "pass the model before the `quantize` step with precision='int8' and calibration=.")
        precision = precision or "fp32"
        if precision not in self.precisions:
            raise UserError(f"runtime executorch has no precision {precision!r}; it runs {', '.join(self.precisions)}.")
        if precision == "int8" and isinstance(source, nn.Module) and not calibration:
            raise UserError("runtime executorch: int8 quantizes the float model with PT2E and needs `calibration`, "
                            "a list of input tuples (8-32 batches).")
        return precision

    def prepare(self, source: Source, example_inputs: tuple, *, threads: int = 1, precision: str | None = None,
                device: str = "cpu", calibration: list | None = None) -> Predictor:
        """``calibration``: input tuples for ``int8`` (a model only). A .pte runs at the shapes it was saved for."""
        self.require()
        if device != "cpu":
            raise UserError(f"runtime executorch runs on the CPU here, not {device}; use --device cpu.")
        if threads < 1:
            raise UserError(f"runtime executorch needs threads >= 1, got {threads}.")
        if isinstance(source, nn.Module):
            precision = self.resolve(source, precision, calibration)
            data = self._export(source, example_inputs, precision, calibration)
        else:
            data = str(_pte(source))
        program = _runtime().load_program(data)
        precision = self.resolve(source, precision or ("int8" if _INT8 in program.method_names else "fp32"), calibration)
        state = [_bind_threads(threads), program.load_method("forward")]
        meta = state[1].metadata
        shapes = [tuple(meta.input_tensor_meta(i).sizes()) for i in range(meta.num_inputs())]

        def run(*inputs):
            tensors = [t.detach().cpu().contiguous() for t in inputs]
            if [tuple(t.shape) for t in tensors] != shapes:
                raise UserError(f"this ExecuTorch program takes inputs of shape {shapes} (static shapes: export it "
                                f"again with example inputs of the batch to run); got {[tuple(t.shape) for t in tensors]}.")
            if _bind_threads(threads) != state[0]:  # a new pool: load again (a Program caches its methods)
                state[:] = _pool["generation"], _runtime().load_program(data).load_method("forward")
            try:
                return state[1].execute(tensors)[0].float()
            except RuntimeError as exc:  # e.g. a dtype other than the exported one
                raise UserError(f"ExecuTorch refused the inputs ({exc}); the program takes "
                                f"{[str(meta.input_tensor_meta(i)) for i in range(len(shapes))]}.") from None

        return Predictor(run, self.name, precision, program)

    def save(self, source: Source, example_inputs: tuple, folder: str | Path, *, precision: str | None = None,
             calibration: list | None = None) -> list[Path]:
        """model.pte, for the shapes of ``example_inputs``."""
        self.require()
        path = Path(folder) / "model.pte"
        data = (_pte(source).read_bytes() if not isinstance(source, nn.Module) else
                self._export(source, example_inputs, self.resolve(source, precision, calibration), calibration))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return [path]

    def _export(self, model: nn.Module, example_inputs: tuple, precision: str, calibration: list | None) -> bytes:
        """The .pte bytes of ``model`` (returning one tensor, see :mod:`slimkit.models.outputs`) lowered to XNNPACK;
        UserError naming what the exporter or lowering refuses."""
        inputs = tuple(example_inputs)
        with warnings.catch_warnings():  # deprecation notices from torch.export and ExecuTorch's imports
            warnings.simplefilter("ignore")
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            from executorch.exir import to_edge_transform_and_lower

            try:
                model = tensor_model(model.eval(), inputs)[0]
                program = torch.export.export(model, inputs)
                if precision == "int8":
                    program = torch.export.export(_quantize(program.module(), inputs, calibration), inputs)
                manager = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()], constant_methods=(
                    {_INT8: True} if precision == "int8" else None)).to_executorch()
            except UserError:
                raise
            except Exception as exc:  # the exporter's and lowering's errors are the model's
                raise _refusal(model, inputs, _first_line(exc)) from None
            kernels = _runtime().operator_registry.operator_names
            missing = [name for name in (f"{op.name}.{op.overload}" if op.overload else op.name
                                         for op in manager.executorch_program.execution_plan[0].operators)
                       if name not in kernels]
            if missing:
                raise _refusal(model, inputs, f"this ExecuTorch has no kernel for operator {', '.join(missing)}")
        return manager.buffer
