"""The fuse step: outputs unchanged within 1e-5, BatchNorm parameters gone, passes that really happen."""
import pytest
import torch
from torch import fx, nn

import slimkit
from slimkit.compile.fuse import Fused, fuse_model
from slimkit.measure.counts import count_macs, count_params
from slimkit.models import save_checkpoint
from test_prune_zoo import ZOO, randomised

pytestmark = pytest.mark.usefixtures("one_thread")


def bn_params(model):
    return sum(m.weight.numel() + m.bias.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def check_fused(model, shape):
    x = torch.randn(4, *shape[1:], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x)
    params, macs = count_params(model)[0], count_macs(model, (x[:1],))[0]
    removed, n_bn = bn_params(model), sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    fused, result = fuse_model(model)
    with torch.no_grad():
        assert (fused(x) - expected).abs().max().item() < 1e-5
    assert isinstance(fused, fx.GraphModule) and result.traced
    assert len(result.folded) == n_bn  # every BatchNorm of these models follows a conv
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    return params, macs, removed, fused, result, x


@pytest.mark.parametrize("name", ["plain", "resnet_bottleneck", "mobilenet_v2", "squeeze_excite"])
def test_fuse_zoo_models_keep_outputs_and_drop_batchnorm(name):
    build, shape = ZOO[name]
    model = randomised(build())
    biasless = {n: m.weight.shape[0] for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.bias is None}
    params, macs, removed, fused, result, x = check_fused(model, shape)
    gained = sum(biasless[layer] for layer, _ in result.folded if layer in biasless)
    assert count_params(fused)[0] == params - removed + gained
    assert count_macs(fused, (x[:1],))[0] == macs  # folding moves no multiply-accumulate
    assert len(result.fused) == sum(isinstance(m, Fused) for m in fused.modules()) > 0


def test_fuse_fashion_cnn_exact_counts():
    model = slimkit.load_model("zoo:fashion-cnn")
    params, macs, removed, fused, result, x = check_fused(model, (1, 1, 28, 28))
    # 9 BatchNorms (stem, 2 in each of 3 blocks, 2 projections) over 32+2*(32+64+128)+64+128 = 672 channels:
    # 2 x 672 affine parameters go, each bias-free conv gains a 672-channel bias in total
    assert removed == 2 * 672 and len(result.folded) == 9
    assert count_params(fused)[0] == params - 672
    # stem ReLU and each block's first ReLU follow a conv directly; the block outputs add a shortcut first
    assert sorted(result.fused) == ["blocks.0.conv1", "blocks.1.conv1", "blocks.2.conv1", "stem.0"]
    assert count_macs(fused, (x[:1],))[0] == macs


class Extras(nn.Module):
    """Identity, dropout (module and functional), a weight-only expression, and Linear+BN1d+ReLU."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([0.5, 2.0, 1.5, 1.0]))
        self.fc = nn.Linear(4, 6, bias=False)
        self.bn = nn.BatchNorm1d(6)
        self.drop, self.ident = nn.Dropout(0.3), nn.Identity()
        self.out = nn.Linear(6, 3)

    def forward(self, x):
        x = x * torch.exp(self.scale).sqrt()  # constant: depends on weights only
        h = torch.relu(self.bn(self.fc(self.ident(x))))
        return self.out(nn.functional.dropout(self.drop(h), 0.2, self.training))


def test_fuse_removes_identity_dropout_folds_constants_and_linear_bn():
    model = Extras().eval()
    torch.nn.init.uniform_(model.bn.weight, 0.5, 1.5)
    model.bn.running_mean.uniform_(-1, 1)
    model.bn.running_var.uniform_(0.5, 2)
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    expected = model(x)
    fused, result = fuse_model(model)
    assert (fused(x) - expected).abs().max().item() < 1e-5
    assert result.removed == 3 and result.constants == 1 and result.folded == [("fc", "bn")] and result.fused == ["fc"]
    ops = [n.op for n in fused.graph.nodes]
    assert ops == ["placeholder", "get_attr", "call_function", "call_module", "call_module", "output"]
    # bn's 12 parameters go, fc gains a 6-wide bias, scale is replaced by the 4-element folded constant
    assert count_params(fused)[0] == count_params(Extras())[0] - 12 + 6
    assert [n for n, _ in fused.named_buffers()] == ["folded_constant_0"]


class InPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.tensor([1.0, 2.0]))

    def forward(self, x):
        w = self.p.clone()
        w.mul_(2)  # an in-place op on a weight-only value: must still run on every call
        return x * w


def test_constant_folding_leaves_in_place_ops_alone():
    fused, result = fuse_model(InPlace())
    x = torch.ones(1, 2)
    assert result.constants == 0 and torch.equal(fused(x), fused(x)) and fused(x).tolist() == [[2.0, 4.0]]


class Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
        self.other = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        if x.sum() > 0:
            return self.body(x)
        return self.bn(self.other(x))


def test_untraceable_model_folds_sequential_pairs_and_warns():
    model = randomised(Branchy())
    x = torch.randn(2, 1, 6, 6, generator=torch.Generator().manual_seed(0)).abs()
    expected = model(x)
    with pytest.warns(UserWarning, match=r"cannot trace Branchy .*skipped BatchNorm folding outside nn.Sequential"):
        fused, result = fuse_model(model)
    assert result.folded == [("body.0", "body.1")]
    assert isinstance(fused.body[1], nn.Identity) and isinstance(fused.bn, nn.BatchNorm2d)
    assert (fused(x) - expected).abs().max().item() < 1e-5


def test_fuse_step_checkpoint_round_trip(tmp_path):
    model = slimkit.load_model("zoo:fashion-cnn")
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    fused = slimkit.apply(model, slimkit.Fuse(), example_inputs=(x[:1],))
    save_checkpoint(fused, tmp_path / "ck")
    loaded = slimkit.load_model(str(tmp_path / "ck"))
    assert sorted(loaded.state_dict()) == sorted(fused.state_dict())
    assert torch.equal(loaded(x), fused(x))
