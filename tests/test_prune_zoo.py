"""Structured pruning on a zoo of small architectures: equivalence, shapes, params and MACs."""
import copy

import pytest
import torch
from torch import nn

import slimkit.prune  # noqa: F401  (registers the pruning steps)
from slimkit.measure.counts import count_macs, count_params
from slimkit.models.zoo import ResNetSmall
from slimkit.prune import ChannelPruner, shrink


pytestmark = pytest.mark.usefixtures("one_thread")


def conv_bn(cin, cout, k=3, stride=1, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class PlainStack(nn.Module):
    """conv(3->16) conv(16->32) pool, flatten 32x4x4 into Linear(512->10)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(conv_bn(3, 16), nn.MaxPool2d(2), conv_bn(16, 32), nn.MaxPool2d(2))
        self.fc = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.features(x), 1))


class Bottleneck(nn.Module):
    def __init__(self, cin, mid, cout, stride=1):
        super().__init__()
        self.body = nn.Sequential(conv_bn(cin, mid, 1), conv_bn(mid, mid, 3, stride),
                                  nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.short = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return torch.relu(self.body(x) + self.short(x))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 project, identity add."""

    def __init__(self, c, expand=4):
        super().__init__()
        h = c * expand
        self.block = nn.Sequential(conv_bn(c, h, 1), conv_bn(h, h, 3, groups=h),
                                   nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return x + self.block(x)


class ShuffleUnit(nn.Module):
    """ShuffleNet v1 unit (stride 2): grouped 1x1, channel shuffle, depthwise 3x3, grouped 1x1, concat."""

    def __init__(self, cin, cout, groups=2):
        super().__init__()
        self.groups = groups
        mid = (cout - cin) // 2
        self.g1 = conv_bn(cin, mid, 1, groups=groups)
        self.dw = nn.Sequential(nn.Conv2d(mid, mid, 3, 2, 1, groups=mid, bias=False), nn.BatchNorm2d(mid))
        self.g2 = nn.Sequential(nn.Conv2d(mid, cout - cin, 1, groups=groups, bias=False), nn.BatchNorm2d(cout - cin))
        self.pool = nn.AvgPool2d(3, 2, 1)

    def forward(self, x):
        out = self.g1(x)
        n, c, h, w = out.size()
        out = out.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, -1, h, w)
        out = self.g2(self.dw(out))
        return torch.relu(torch.cat([self.pool(x), out], 1))


class DenseBlock(nn.Module):
    def __init__(self, c, growth=8, layers=3):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(nn.BatchNorm2d(c + i * growth), nn.ReLU(), nn.Conv2d(c + i * growth, growth, 3, 1, 1))
            for i in range(layers))

    def forward(self, x):
        for layer in self.layers:
            x = torch.cat([x, layer(x)], 1)
        return x


class Fire(nn.Module):
    def __init__(self, cin, squeeze, expand):
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(cin, squeeze, 1), nn.ReLU())
        self.e1 = nn.Sequential(nn.Conv2d(squeeze, expand, 1), nn.ReLU())
        self.e3 = nn.Sequential(nn.Conv2d(squeeze, expand, 3, padding=1), nn.ReLU())

    def forward(self, x):
        s = self.squeeze(x)
        return torch.cat([self.e1(s), self.e3(s)], 1)


class SqueezeExcite(nn.Module):
    """conv, then x * sigmoid(fc(pool(x))): the gate's channels are coupled to x's by the multiply."""

    def __init__(self, c, r=4):
        super().__init__()
        self.conv = conv_bn(c, c)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c // r, 1), nn.ReLU(), nn.Conv2d(c // r, c, 1), nn.Sigmoid())

    def forward(self, x):
        y = self.conv(x)
        return y * self.gate(y)


def net(body: nn.Module, stem: int, out: int) -> nn.Module:
    """stem conv(3->stem) -> body -> conv(out->16) -> global pool -> Linear(16->10)."""
    return nn.Sequential(conv_bn(3, stem), body, conv_bn(out, 16), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(16, 10))


ZOO = {
    "plain": (PlainStack, (1, 3, 16, 16)),
    "resnet_basic": (lambda: ResNetSmall((8, 16, 32), in_channels=3), (1, 3, 16, 16)),
    "resnet_bottleneck": (lambda: net(nn.Sequential(Bottleneck(16, 8, 32, 2), Bottleneck(32, 8, 32)), 16, 32), (1, 3, 16, 16)),
    "mobilenet_v2": (lambda: net(nn.Sequential(InvertedResidual(16), InvertedResidual(16)), 16, 16), (1, 3, 16, 16)),
    "shufflenet": (lambda: net(ShuffleUnit(16, 48, 2), 16, 48), (1, 3, 16, 16)),
    "densenet": (lambda: net(DenseBlock(16), 16, 40), (1, 3, 16, 16)),
    "squeeze_excite": (lambda: net(SqueezeExcite(16), 16, 16), (1, 3, 16, 16)),
    "squeezenet_fire": (lambda: net(nn.Sequential(Fire(16, 8, 16), Fire(32, 8, 16)), 16, 32), (1, 3, 16, 16)),
}


def randomised(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine terms, so the equivalence test sees every tensor."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5, generator=gen)
            m.running_var.uniform_(0.5, 1.5, generator=gen)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)
    return model.eval()


def zero_pruned_inputs(model: nn.Module, plan: dict) -> None:
    """Zero the weights that read the channels the plan removes (the pruned channels then carry nothing)."""
    with torch.no_grad():
        for name, keep in plan.items():
            module = model.get_submodule(name)
            if "in" in keep and getattr(module, "groups", 1) == 1:
                gone = sorted(set(range(module.weight.shape[1])) - set(keep["in"]))
                module.weight[:, gone] = 0


@pytest.mark.parametrize("name", sorted(ZOO))
def test_pruning_zeroed_channels_keeps_outputs(name):
    build, shape = ZOO[name]
    model = randomised(build())
    x = torch.randn(shape)
    pruner = ChannelPruner(model, (x,))
    plan = pruner.plan(0.5)
    assert plan, f"{name}: nothing was pruned"
    zero_pruned_inputs(model, plan)
    expected = model(x)
    params, macs = count_params(model)[0], count_macs(model, (x,))[0]
    pruned = shrink(copy.deepcopy(model), plan)
    out = pruned(x)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert count_params(pruned)[0] < params and count_macs(pruned, (x,))[0] < macs
    assert pruner.macs(0.5) == count_macs(pruned, (x,))[0]
    assert pruned(torch.randn(4, *shape[1:])).shape == (4, 10)
