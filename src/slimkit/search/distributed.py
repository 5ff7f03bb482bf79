"""Search trials trained under ``torchrun``: rank 0 drives the Optuna study; every other rank follows each
trial with the same sampled parameters (optuna-integration's ``TorchDistributedTrial`` broadcasts them) and
trains its share of every batch through the shared loop's DistributedDataParallel.

    torchrun --nproc-per-node 4 -m slimkit search --space FILE --out DIR --device cuda
"""
from __future__ import annotations

import os
from typing import Callable

from ..errors import UserError, require


def world_size() -> int:
    """Processes started by torchrun for this run (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


class TrialGroup:
    """The torchrun processes of one search; initialises the process group (NCCL on CUDA, else gloo) and a
    gloo group on which rank 0 tells the others whether another trial follows."""

    def __init__(self, device: str):
        import torch
        import torch.distributed as dist

        from ..train import rank_and_world

        require("optuna_integration", "search")
        if device.startswith("cuda"):
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        self.rank, _ = rank_and_world(torch.device(device))
        self.cpu_group = dist.new_group(backend="gloo") if dist.get_backend() == "nccl" else dist.group.WORLD

    def _next(self, go: bool = False) -> bool:
        import torch.distributed as dist

        flag = [go]
        dist.broadcast_object_list(flag, src=0, group=self.cpu_group)
        return bool(flag[0])

    def lead(self, objective: Callable) -> Callable:
        """Rank 0: ``objective`` wrapped so that the other ranks run each of its trials with it."""
        from optuna_integration import TorchDistributedTrial

        def run(trial):
            self._next(True)
            return objective(TorchDistributedTrial(trial, self.cpu_group))

        return run

    def finish(self) -> None:
        """Rank 0: no more trials; the other ranks return from :meth:`follow`."""
        self._next(False)
        self._close()

    def _close(self) -> None:
        """Every rank, after the last trial: wait for the others, then shut the process groups down (a rank
        that exits with live gloo threads can abort: "terminate called without an active exception")."""
        import torch.distributed as dist

        dist.barrier(group=self.cpu_group)
        dist.destroy_process_group()

    def follow(self, objective: Callable) -> None:
        """Ranks 1..N-1: run every trial rank 0 starts, until it calls :meth:`finish`."""
        import optuna
        from optuna_integration import TorchDistributedTrial

        while self._next():
            try:
                objective(TorchDistributedTrial(None, self.cpu_group))
            except optuna.TrialPruned:
                pass
        self._close()


def check_workers(workers: int) -> None:
    """Worker processes and torchrun do not mix: each torchrun process is one share of every trial."""
    if workers > 1 and world_size() > 1:
        raise UserError(f"--workers {workers} under torchrun: torchrun's processes already share each trial; "
                        "drop --workers (or run several torchrun commands on one --storage).")
