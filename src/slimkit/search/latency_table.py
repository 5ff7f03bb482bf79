"""A per-block latency lookup table (as in FBNet / ProxylessNAS) for hardware-aware search over
:class:`slimkit.arch.ArchNet` models: each distinct part (stem, block, head) at its input shape is timed once on
the target backend and kept in a JSON file; a model's latency is estimated as the sum of its parts.

Later trials that reuse a block configuration cost no timing at all. The sum includes one call overhead per part,
so estimates run above a whole-model measurement; they rank models, and the search's finalists can be re-timed whole.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from ..files import write_atomic

TABLE_FILE = "latency_table.json"


def parts(model: nn.Module) -> list[nn.Module]:
    """The parts an ArchNet runs one after another: stem, each block, and the pool + classifier head."""
    from ..arch import ArchNet

    if not isinstance(model, ArchNet):
        raise UserError(f"objectives.latency.table needs a slimkit.arch model (model.builder: slimkit.arch:from_params), "
                        f"not {type(model).__name__}; time the whole model instead (drop `table: true`).")
    return [model.stem, *model.blocks, nn.Sequential(model.pool, nn.Flatten(1), model.fc)]


class LatencyTable:
    """Median latencies (ms) of model parts, keyed by the part's structure, input shape and timing setup.

    Args:
        path: the JSON file holding the table (created on first use; shared by the workers of one run).
        backend, batch, threads, repeats: how each part is timed (see :func:`slimkit.measure.latency.measure_latency`).
    """

    def __init__(self, path: str | Path, backend: str, batch: int, threads: int, repeats: int):
        self.path, self.backend, self.batch, self.threads, self.repeats = Path(path), backend, batch, threads, repeats
        self.timed = 0  # parts this object had to time (the rest came from the table)

    def estimate(self, model: nn.Module, example_inputs: tuple) -> float:
        """Sum of the part latencies of ``model`` at ``example_inputs`` (batch 1; timed at ``batch``)."""
        from ..measure.latency import measure_latency

        pieces, inputs = parts(model), []
        x = example_inputs[0]
        with torch.no_grad():
            for piece in pieces:
                inputs.append(x)
                x = piece.eval()(x)
        table = self._load()
        total = 0.0
        for piece, x in zip(pieces, inputs):
            key = json.dumps([repr(piece), list(x.shape[1:]), self.backend, self.batch, self.threads])
            if key not in table:
                timing = measure_latency(piece, (x,), (self.backend,), (self.batch,), self.threads, repeats=self.repeats)
                table = {**self._load(), key: timing[f"{self.backend}/bs{self.batch}"]["median"]}
                write_atomic(self.path, json.dumps(table, indent=1))  # another worker may share the table
                self.timed += 1
            total += table[key]
        return total

    def _load(self) -> dict:
        return json.loads(self.path.read_text()) if self.path.is_file() else {}
