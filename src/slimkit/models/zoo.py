"""Built-in architectures. ``zoo:fashion-cnn`` ships trained weights inside the package."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from torch import nn

WEIGHTS = Path(__file__).parent / "weights"


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with BatchNorm and an identity or 1x1 projection shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNetSmall(nn.Module):
    """A small ResNet for 1-channel images: stem, one basic block per stage, global pool, classifier."""

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128), num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)
        )
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths):
            blocks.append(BasicBlock(cin, w, stride=1 if i == 0 else 2))
            cin = w
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.blocks(self.stem(x))).flatten(1))


def fashion_cnn() -> nn.Module:
    """The Fashion-MNIST baseline: ResNetSmall(32, 64, 128), 0.30M params."""
    return ResNetSmall((32, 64, 128))


def digits_cnn() -> nn.Module:
    """A tiny ResNet for 8x8 digits (fast tests)."""
    return ResNetSmall((8, 16), num_classes=10)


# name -> (builder, shipped weights file or None, default input shape)
ZOO: dict[str, tuple[Callable[[], nn.Module], str | None, tuple[int, ...]]] = {
    "fashion-cnn": (fashion_cnn, "fashion-cnn.safetensors", (1, 1, 28, 28)),
    "digits-cnn": (digits_cnn, None, (1, 1, 8, 8)),
}
