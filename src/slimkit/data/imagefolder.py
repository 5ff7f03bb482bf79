"""``imagefolder:DIR``: a folder of images, one sub-folder per class, read lazily as a top-1 Task.

DIR holds either ``train/`` and ``val/`` (or ``test/``), each with one folder per class, or the class folders
themselves, from which a seeded ``holdout`` fraction (default 0.1) becomes the test split.
"""
from __future__ import annotations

import random
from pathlib import Path

import torch

from ..errors import UserError, require
from . import images, options
from .splits import IndexedSplit
from .task import Task

OPTIONS = {**images.OPTIONS, "holdout": options.fraction, "seed": int}
EXAMPLE = "DIR/cat/1.jpg, DIR/dog/2.png (or DIR/train/cat/..., DIR/val/cat/...)"


def load(directory: str, model=None, **given) -> Task:
    """The images under ``directory`` as a Task whose labels are the sorted class folder names."""
    require("PIL.Image", "data")
    opts = options.parse_options(given, OPTIONS, f"imagefolder:{directory}")
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise UserError(f"imagefolder:{directory}: {'not a folder' if root.exists() else 'no such folder'}; "
                        f"point it at a folder of class folders, e.g. {EXAMPLE}.")
    preprocess = images.preprocess_for(model, **{k: v for k, v in opts.items() if k in images.OPTIONS})
    test_dir = next((root / name for name in ("val", "test") if (root / name).is_dir()), None)
    if (root / "train").is_dir() and test_dir is not None:
        classes, train = _labelled_files(root / "train")
        _, test = _labelled_files(test_dir, classes)
    else:
        classes, samples = _labelled_files(root)
        order = list(range(len(samples)))
        random.Random(opts.get("seed", 0)).shuffle(order)
        n_test = max(1, round(len(samples) * opts.get("holdout", 0.1)))
        test, train = [samples[i] for i in sorted(order[:n_test])], [samples[i] for i in sorted(order[n_test:])]
    if not train:
        raise UserError(f"imagefolder:{directory}: every image went to the test split; lower holdout or add images.")

    def split(samples: list[tuple[Path, int]]) -> IndexedSplit:
        def fetch(indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
            x = torch.stack([preprocess(images.open_image(samples[i][0])) for i in indices])
            return x, torch.tensor([samples[i][1] for i in indices], dtype=torch.int64)

        return IndexedSplit(fetch, range(len(samples)))

    return Task(root.name or str(root), split(train), split(test), "top1", 1, None, classes)


def _labelled_files(folder: Path, classes: tuple[str, ...] | None = None
                    ) -> tuple[tuple[str, ...], list[tuple[Path, int]]]:
    """(class names, [(image file, label)]) of a folder of class folders; non-image files are skipped.

    With ``classes`` (the training split's), every class folder here must be one of them."""
    from PIL import Image

    suffixes = set(Image.registered_extensions())
    found = {d.name: sorted(p for p in d.rglob("*") if p.suffix.lower() in suffixes and p.is_file())
             for d in sorted(folder.iterdir()) if d.is_dir() and not d.name.startswith(".")}
    found = {name: files for name, files in found.items() if files}
    if not found:
        raise UserError(f"imagefolder: no images in class folders under {folder}; put each class's images in a folder "
                        f"named after it, e.g. {EXAMPLE}.")
    if classes is None:
        classes = tuple(found)
        if len(classes) < 2:
            raise UserError(f"imagefolder: {folder} has one class folder ({classes[0]!r}); classification needs two or "
                            f"more, e.g. {EXAMPLE}.")
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise UserError(f"imagefolder: {folder} has class folders {unknown} that the training split lacks; the "
                        "test split's classes must all appear in train/.")
    labels = {name: i for i, name in enumerate(classes)}
    return classes, [(path, labels[name]) for name, files in found.items() for path in files]
