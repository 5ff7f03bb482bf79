"""Images as a model expects them: resize, center-crop and normalise (the preprocessing of ``imagefolder:`` data and
of image columns in ``datasets:`` data)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError
from . import options

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
GRAY_MEAN, GRAY_STD = (0.449,), (0.226,)  # ImageNet's statistics averaged over the channels
DEFAULT_SIZE = 224
CROP_FRACTION = 0.875  # 224 of 256: the usual ImageNet evaluation crop

OPTIONS = {"size": options.positive_int, "resize": options.positive_int, "channels": options.positive_int,
           "mean": options.numbers, "std": options.numbers}


@dataclass(frozen=True)
class Preprocess:
    """Resize the shorter side to ``resize`` pixels, center-crop ``size`` (height, width), scale to [0, 1], then
    subtract ``mean`` and divide by ``std`` per channel; ``channels`` 1 reads grayscale, 3 RGB."""

    size: tuple[int, int]
    resize: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int

    def __call__(self, image) -> Tensor:
        """One PIL image as a (channels, height, width) float tensor."""
        from PIL import Image

        image = image.convert("L" if self.channels == 1 else "RGB")
        scale = self.resize / min(image.size)
        width, height = max(self.size[1], round(image.width * scale)), max(self.size[0], round(image.height * scale))
        image = image.resize((width, height), Image.BILINEAR)
        left, top = (image.width - self.size[1]) // 2, (image.height - self.size[0]) // 2
        image = image.crop((left, top, left + self.size[1], top + self.size[0]))
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).reshape(*self.size, self.channels)
        mean, std = torch.tensor(self.mean), torch.tensor(self.std)
        return ((pixels - mean) / std).permute(2, 0, 1).contiguous()


def preprocess_for(model=None, **given) -> Preprocess:
    """The preprocessing for ``model``: its example input's channels and size when its SPEC says (zoo models),
    else 3 channels at 224x224 (shorter side resized to 256); ImageNet mean/std (their channel average for
    grayscale). ``given`` overrides: ``size`` (square crop), ``resize``, ``channels`` (1 or 3), ``mean``, ``std``."""
    shape = _model_input_shape(model)
    channels = given.get("channels") or (shape[1] if shape else 3)
    if channels not in (1, 3):
        raise UserError(f"Images are read with 1 (grayscale) or 3 (RGB) channels, not {channels}; "
                        "pass channels=1 or 3.")
    size = (given["size"],) * 2 if "size" in given else tuple(shape[2:]) if shape else (DEFAULT_SIZE,) * 2
    resize = given.get("resize") or round(max(size) / CROP_FRACTION)
    mean = given.get("mean") or (GRAY_MEAN if channels == 1 else IMAGENET_MEAN)
    std = given.get("std") or (GRAY_STD if channels == 1 else IMAGENET_STD)
    for label, values in (("mean", mean), ("std", std)):
        if len(values) != channels:
            raise UserError(f"{label} has {len(values)} values for {channels}-channel images; give {channels}.")
    if min(std) <= 0:
        raise UserError(f"std must be positive, got {std}.")
    return Preprocess(size, resize, tuple(mean), tuple(std), channels)


def _model_input_shape(model) -> tuple[int, ...] | None:
    """The (N, C, H, W) input of ``model`` when its base SPEC names one, else None."""
    if model is None:
        return None
    from ..models.checkpoint import origin
    from ..models.spec import default_input_shape

    shape = default_input_shape(origin(model)["base"] or "")
    return tuple(shape) if shape and len(shape) == 4 else None


def open_image(path) -> "PIL.Image.Image":  # noqa: F821
    """The image at ``path``, decoded; UserError naming the file when it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            return image
    except (OSError, UnidentifiedImageError) as exc:
        raise UserError(f"Cannot read the image {path} ({exc}); delete or replace it.") from None
