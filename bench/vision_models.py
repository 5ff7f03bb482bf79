"""ResNet-18 and MobileNetV2 with random weights (1000 classes, eval mode): torchvision's own when it imports,
otherwise the same architectures built here from the published designs, module for module (same parameter
counts and state_dict keys, so torchvision checkpoints load into them).

Each function returns (model, source): where the architecture came from.
"""
from __future__ import annotations

import torch
from torch import nn


def torchvision_or_reason():
    """(torchvision, "") when it imports, else (None, why not)."""
    try:
        import torchvision
    except Exception as exc:  # ImportError, or OSError/RuntimeError from a wheel built for another torch or CUDA
        return None, f"{type(exc).__name__}: {exc}"
    return torchvision, ""


def resnet18() -> tuple[nn.Module, str]:
    """ResNet-18 (He et al. 2016): (model, source)."""
    return _build("resnet18", ResNet18)


def mobilenet_v2() -> tuple[nn.Module, str]:
    """MobileNetV2 (Sandler et al. 2018), width 1.0: (model, source)."""
    return _build("mobilenet_v2", MobileNetV2)


def _build(name: str, ours: type[nn.Module]) -> tuple[nn.Module, str]:
    torchvision, reason = torchvision_or_reason()
    if torchvision is not None:
        major_minor = ".".join(torchvision.__version__.split(".")[:2])
        return getattr(torchvision.models, name)(weights=None).eval(), f"torchvision {major_minor}"
    return ours().eval(), f"slimkit's copy of torchvision's architecture (torchvision not importable: {reason})"


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN pairs with a ReLU between and after the residual sum; a 1x1 conv-BN shortcut where the
    shape changes."""

    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + shortcut)


class ResNet18(nn.Module):
    """7x7/2 stem and 3x3/2 max pool, four stages of two BasicBlocks (64, 128, 256, 512 channels; the last three
    start at stride 2), global average pool, Linear classifier."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths = (64, 128, 256, 512)
        for i, (before, width) in enumerate(zip((64,) + widths, widths), start=1):
            stride = 1 if i == 1 else 2
            setattr(self, f"layer{i}", nn.Sequential(BasicBlock(before, width, stride), BasicBlock(width, width, 1)))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def conv_bn_relu6(in_channels: int, out_channels: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """1x1 expansion by ``expand`` (none when 1), 3x3 depthwise at ``stride``, linear 1x1 projection; the input is
    added back when the shape is kept."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand: int):
        super().__init__()
        hidden = in_channels * expand
        expansion = [conv_bn_relu6(in_channels, hidden)] if expand != 1 else []
        self.conv = nn.Sequential(*expansion, conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
                                  nn.Conv2d(hidden, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
        self.use_res_connect = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """3x3/2 stem to 32 channels, the inverted-residual stages of the paper's table, 1x1 conv to 1280, global
    average pool, dropout 0.2 and a Linear classifier."""

    # (expansion t, output channels c, blocks n, first block's stride s)
    STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        layers, channels = [conv_bn_relu6(3, 32, 3, 2)], 32
        for expand, out_channels, repeats, stride in self.STAGES:
            for i in range(repeats):
                layers.append(InvertedResidual(channels, out_channels, stride if i == 0 else 1, expand))
                channels = out_channels
        layers.append(conv_bn_relu6(channels, 1280))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))
