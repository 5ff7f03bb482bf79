"""The devices slimkit runs on: ``cpu``, ``cuda`` or ``cuda:N``."""
from __future__ import annotations

import re

from .errors import UserError


def check_device(device: str) -> None:
    """UserError unless ``device`` is ``cpu``, ``cuda`` or ``cuda:N`` naming a visible GPU."""
    if not isinstance(device, str) or not re.fullmatch(r"cpu|cuda(:[0-9]{1,3})?", device):
        raise UserError(f"--device {device!r:.50}: use cpu, cuda or cuda:N.")
    if device != "cpu":
        import torch

        visible = torch.cuda.device_count()
        if int(device.partition(":")[2] or 0) >= visible:
            raise UserError(f"--device {device}: {visible or 'no'} CUDA GPU(s) visible; use --device cpu"
                            f"{f' or cuda:0 to cuda:{visible - 1}' if visible else ''}.")
