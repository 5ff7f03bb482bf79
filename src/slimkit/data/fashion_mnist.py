"""Fashion-MNIST from the IDX files that Debian's ``dataset-fashion-mnist`` package installs."""
from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError
from .task import Task

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
MEAN, STD = 0.2860, 0.3530
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find(directory: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    raise UserError(
        f"Fashion-MNIST file {stem}(.gz) not found in {directory}. Install the data with "
        "`apt-get install dataset-fashion-mnist` (as root), or pass --data-dir DIR pointing at a "
        "folder that holds the four IDX files."
    )


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally gzipped) into a numpy array; UserError when it is damaged."""
    fix = "re-install dataset-fashion-mnist, or point --data-dir at intact files"
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise UserError(f"Cannot read {path} ({exc}); {fix}.") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise UserError(f"{path} is not an unsigned-byte IDX file; {fix}.")
    ndim = data[3]
    offset = 4 + 4 * ndim
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if ndim == 0 or len(data) != offset + math.prod(dims):
        raise UserError(f"{path} is truncated or damaged: its header gives shape {dims}, which does not match "
                        f"its {len(data)} bytes; {fix}.")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def normalize(images: np.ndarray) -> Tensor:
    """uint8 images (N, 28, 28) to normalised float tensors (N, 1, 28, 28)."""
    x = torch.from_numpy(images.copy()).float().div_(255.0)
    return x.sub_(MEAN).div_(STD).unsqueeze(1)


def flip_and_shift(x: Tensor, pad: int = 2) -> Tensor:
    """Random horizontal flips and random crops of ``pad`` pixels, batch-wise on x's device."""
    n, _, h, w = x.shape
    flip = torch.rand(n, device=x.device) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    background = -MEAN / STD
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad), value=background)
    dy = torch.randint(0, 2 * pad + 1, (n,), device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    return padded[batch, 0, rows, cols]


def load(data_dir: str | os.PathLike | None = None) -> Task:
    """Load Fashion-MNIST (60k train / 10k test) as a top-1 classification Task."""
    directory = Path(data_dir if data_dir is not None else os.environ.get("SLIMKIT_FASHION_MNIST_DIR") or DEFAULT_DIR)
    if not directory.is_dir():
        problem = "is not a folder" if directory.exists() else "does not exist"
        raise UserError(
            f"Fashion-MNIST folder {directory} {problem}. Install the data with "
            "`apt-get install dataset-fashion-mnist` (as root), or pass --data-dir DIR."
        )
    splits = {}
    for split, (images, labels) in _FILES.items():
        x, y = read_idx(_find(directory, images)), read_idx(_find(directory, labels))
        if x.ndim != 3 or x.shape[1:] != (28, 28) or y.shape != (len(x),) or (len(y) and y.max() > 9):
            raise UserError(f"The Fashion-MNIST {split} files in {directory} hold images of shape {x.shape} and labels "
                            f"of shape {y.shape}; expected N 28x28 images, N labels in 0..9. Re-install "
                            "dataset-fashion-mnist, or point --data-dir at intact files.")
        splits[split] = (normalize(x), torch.from_numpy(y.astype(np.int64)))
    return Task("fashion-mnist", splits["train"], splits["test"], "top1", 1, flip_and_shift)
