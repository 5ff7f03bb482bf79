"""Efficient building blocks. Every block maps (N, cin, H, W) to (N, cout, H/stride, W/stride)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..models.zoo import BasicBlock


def conv_bn(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: nn.Module | None = None) -> nn.Sequential:
    """Conv (no bias) + BatchNorm, followed by ``act`` when given."""
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, *([act] if act is not None else []))


def shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    """Identity when shapes match, else a strided 1x1 conv + BatchNorm projection."""
    return nn.Identity() if stride == 1 and cin == cout else conv_bn(cin, cout, 1, stride)


class DepthwiseSeparable(nn.Module):
    """MobileNet: 3x3 depthwise conv then 1x1 pointwise conv, each with BatchNorm and ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.depthwise = conv_bn(cin, cin, 3, stride, groups=cin, act=nn.ReLU(inplace=True))
        self.pointwise = conv_bn(cin, cout, 1, act=nn.ReLU(inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))


class InvertedResidual(nn.Module):
    """MobileNetV2: 1x1 expansion (x ``expand``), 3x3 depthwise, linear 1x1 projection; residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int = 1, expand: int = 4):
        super().__init__()
        mid = cin * expand
        expansion = [conv_bn(cin, mid, 1, act=nn.ReLU6(inplace=True))] if expand != 1 else []
        self.body = nn.Sequential(*expansion, conv_bn(mid, mid, 3, stride, groups=mid, act=nn.ReLU6(inplace=True)),
                                  conv_bn(mid, cout, 1))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        out = self.body(x)
        return x + out if self.residual else out


class Fire(nn.Module):
    """SqueezeNet: 1x1 squeeze to ``cout * squeeze`` channels, then 1x1 and 3x3 expands concatenated.

    Downsampling (stride 2) is a 3x3 max-pool before the squeeze, as in SqueezeNet. ``cout`` must be even.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1, squeeze: float = 0.25):
        super().__init__()
        if cout % 2:
            raise ValueError(f"Fire needs an even number of output channels, got {cout}")
        mid = max(1, round(cout * squeeze))
        self.pool = nn.MaxPool2d(3, stride, 1) if stride > 1 else nn.Identity()
        self.squeeze = conv_bn(cin, mid, 1, act=nn.ReLU(inplace=True))
        self.expand1 = conv_bn(mid, cout // 2, 1)
        self.expand3 = conv_bn(mid, cout // 2, 3)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        s = self.squeeze(self.pool(x))
        return self.relu(torch.cat([self.expand1(s), self.expand3(s)], 1))


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Interleave the channels of ``groups`` groups, so the next grouped conv sees every group."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNet: grouped 1x1 conv to cout/4, channel shuffle, 3x3 depthwise, grouped 1x1 conv to cout, shortcut add.

    ``cout`` must be a multiple of ``4 * groups``; the shortcut is a projection when shapes differ.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1, groups: int = 2):
        super().__init__()
        mid = cout // 4
        if mid % groups or cout % groups:
            raise ValueError(f"ShuffleUnit needs cout ({cout}) to be a multiple of 4 x groups ({groups})")
        first_groups = groups if cin % groups == 0 else 1
        self.groups = groups
        self.reduce = conv_bn(cin, mid, 1, groups=first_groups, act=nn.ReLU(inplace=True))
        self.depthwise = conv_bn(mid, mid, 3, stride, groups=mid)
        self.expand = conv_bn(mid, cout, 1, groups=groups)
        self.shortcut = shortcut(cin, cout, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.expand(self.depthwise(channel_shuffle(self.reduce(x), self.groups)))
        return self.relu(out + self.shortcut(x))


class DenseBlock(nn.Module):
    """DenseNet: ``layers`` 3x3 convs, each adding ``growth`` channels to the concatenation of all before it,
    then a 1x1 transition to ``cout`` (and a 2x2 average pool when stride is 2)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, growth: int = 12, layers: int = 3):
        super().__init__()
        self.layers = nn.ModuleList(conv_bn(cin + i * growth, growth, 3, act=nn.ReLU(inplace=True)) for i in range(layers))
        self.transition = conv_bn(cin + layers * growth, cout, 1, act=nn.ReLU(inplace=True))
        self.pool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        features = x
        for layer in self.layers:
            features = torch.cat([features, layer(features)], 1)
        return self.pool(self.transition(features))


class Bottleneck(nn.Module):
    """ResNet bottleneck: 1x1 reduce to cout/``reduction``, 3x3 (strided), 1x1 expand, shortcut add, ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1, reduction: int = 4):
        super().__init__()
        mid = max(1, cout // reduction)
        self.body = nn.Sequential(conv_bn(cin, mid, 1, act=nn.ReLU(inplace=True)),
                                  conv_bn(mid, mid, 3, stride, act=nn.ReLU(inplace=True)), conv_bn(mid, cout, 1))
        self.shortcut = shortcut(cin, cout, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


# block type -> (class, its extra options with defaults)
BLOCKS: dict[str, tuple[type[nn.Module], dict[str, int | float]]] = {
    "separable": (DepthwiseSeparable, {}),
    "inverted_residual": (InvertedResidual, {"expand": 4}),
    "fire": (Fire, {"squeeze": 0.25}),
    "shuffle": (ShuffleUnit, {"groups": 2}),
    "dense": (DenseBlock, {"growth": 12, "layers": 3}),
    "basic": (BasicBlock, {}),
    "bottleneck": (Bottleneck, {"reduction": 4}),
}
