"""ChannelPrune: exact shapes/params/MACs, checkpoints, target_macs, ignore, round_to and bad input."""
import pytest
import torch
from torch import nn

import slimkit
from slimkit.errors import UserError
from slimkit.measure.counts import count_macs, count_params
from slimkit.prune import ChannelPrune, ChannelPruner
from slimkit.recipe import ConfigError, Recipe
from test_prune_zoo import ZOO, PlainStack

pytestmark = pytest.mark.usefixtures("one_thread")


def test_plain_stack_shrinks_to_the_predicted_params_and_macs():
    x = torch.randn(1, 3, 16, 16)
    model = slimkit.apply(PlainStack(), ChannelPrune(ratio=0.5), example_inputs=(x,))
    conv1, conv2, fc = model.features[0][0], model.features[2][0], model.fc
    assert (conv1.out_channels, conv2.in_channels, conv2.out_channels, fc.in_features) == (8, 8, 16, 16 * 4 * 4)
    # conv 8x3x3x3 + bn 2x8 + conv 16x8x3x3 + bn 2x16 + fc 10x256 + 10
    assert count_params(model)[0] == 216 + 16 + 1152 + 32 + 2570
    assert count_macs(model, (x,))[0] == 8 * 27 * 256 + 16 * 72 * 64 + 2560
    assert model(x).shape == (1, 10)


def test_flatten_into_linear_keeps_the_spatial_block_of_each_kept_channel():
    model = PlainStack().eval()
    x = torch.randn(1, 3, 16, 16)
    plan = ChannelPruner(model, (x,)).plan(0.5)
    kept = plan["features.2.0"]["out"]
    assert plan["fc"]["in"] == [c * 16 + s for c in kept for s in range(16)]


def test_pruned_checkpoint_reloads_with_identical_outputs(tmp_path, digits):
    model = slimkit.load_model("zoo:digits-cnn")
    x = digits.example_inputs(4)
    pruned = slimkit.apply(model, ChannelPrune(ratio=0.5, importance="l1"), example_inputs=x[:1])
    slimkit.save_checkpoint(pruned, tmp_path / "ckpt")
    again = slimkit.load_model(str(tmp_path / "ckpt"))
    assert count_params(again) == count_params(pruned)
    assert torch.equal(again(*x), pruned(*x))
    assert [e["step"] for e in again.slimkit_origin["history"]] == ["channel_prune"]


def test_target_macs_is_met_and_tight():
    build, shape = ZOO["resnet_basic"]
    model, x = build().eval(), torch.randn(shape)
    base = count_macs(model, (x,))[0]
    pruned = slimkit.apply(model, ChannelPrune(target_macs=0.5), example_inputs=(x,))
    kept = count_macs(pruned, (x,))[0] / base
    assert 0.4 < kept <= 0.5
    assert pruned(x).shape == (1, 10)


def test_round_to_rounds_kept_channels_up():
    x = torch.randn(1, 3, 16, 16)
    model = slimkit.apply(PlainStack(), ChannelPrune(ratio=0.4, round_to=4), example_inputs=(x,))
    # 16 - floor(6.4) = 10 -> 12; 32 - floor(12.8) = 20 -> 20
    assert (model.features[0][0].out_channels, model.features[2][0].out_channels) == (12, 20)


def test_ignored_layers_keep_their_channels():
    x = torch.randn(1, 3, 16, 16)
    model = slimkit.apply(PlainStack(), ChannelPrune(ratio=0.5, ignore=("features.2",)), example_inputs=(x,))
    assert model.features[0][0].out_channels == 16 and model.features[2][0].out_channels == 32
    assert model.fc.in_features == 512


def test_ignore_name_that_matches_nothing_is_a_user_error():
    with pytest.raises(UserError, match="features.9.*did you mean"):
        slimkit.apply(PlainStack(), ChannelPrune(ignore=("features.9",)), example_inputs=(torch.randn(1, 3, 16, 16),))


def test_ratio_outside_unit_interval_is_rejected():
    with pytest.raises(ConfigError, match="ratio"):
        ChannelPrune(ratio=1.0)
    with pytest.raises(UserError, match=r"steps\[0\]\.channel_prune\.ratio"):
        Recipe.from_dict({"version": 1, "steps": [{"channel_prune": {"ratio": -0.1}}]})


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        y = self.conv(x)
        if y.sum() > 0:  # data-dependent control flow: not traceable
            y = -y
        return self.fc(y.mean((2, 3)))


def test_untraceable_model_is_a_user_error():
    with pytest.raises(UserError, match="could not trace Branchy.*magnitude_prune"):
        slimkit.apply(Branchy(), ChannelPrune(), example_inputs=(torch.randn(1, 3, 8, 8),))


def test_unsupported_layer_is_skipped_with_a_warning_naming_it():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.InstanceNorm2d(8, affine=True), nn.Conv2d(8, 8, 3), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    with pytest.warns(UserWarning, match=r"skipped 1 \(InstanceNorm2d is not supported\)"):
        pruned = slimkit.apply(model, ChannelPrune(ratio=0.5), example_inputs=(torch.randn(1, 3, 12, 12),))
    assert pruned[0].out_channels == 8 and pruned[2].out_channels == 4 and pruned[6].in_features == 4


def test_shuffle_with_constant_group_count_keeps_the_unit_and_says_so():
    build, shape = ZOO["shufflenet"]
    model = build().eval()
    with pytest.warns(UserWarning, match=r"skipped 1\.view \(reshape with constant channel sizes\)"):
        pruned = slimkit.apply(model, ChannelPrune(ratio=0.5), example_inputs=(torch.randn(shape),))
    assert pruned[1].g1[0].weight.shape == (16, 8, 1, 1) and pruned[2][0].out_channels == 8


def test_taylor_importance_needs_data():
    assert ChannelPrune(importance="taylor").needs_data and not ChannelPrune().needs_data
    with pytest.raises(UserError, match="needs training data"):
        slimkit.apply(PlainStack(), ChannelPrune(importance="taylor"), example_inputs=(torch.randn(1, 3, 16, 16),))
