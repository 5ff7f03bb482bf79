"""slimkit.arch: exact params/MACs of the blocks, mixed builds that train, channel pruning, the arch: SPEC."""
import pytest
import torch

import slimkit
from slimkit.arch import (ArchNet, Bottleneck, DenseBlock, DepthwiseSeparable, Fire, InvertedResidual, ShuffleUnit,
                          arch_spec, build, channel_shuffle, from_params)
from slimkit.errors import UserError
from slimkit.measure.counts import count_macs, count_params
from slimkit.train import FineTune, fit

pytestmark = pytest.mark.usefixtures("one_thread")
HW = 8 * 8  # the spatial positions every block below sees


@pytest.mark.parametrize("block, cin, params, macs_per_position", [
    # depthwise 3x3 (8x9) + BN(8) + pointwise (8x16) + BN(16)
    (DepthwiseSeparable(8, 16), 8, 72 + 16 + 128 + 32, 72 + 128),
    # expand 8->32 + BN, depthwise 32x9 + BN, project 32->8 + BN
    (InvertedResidual(8, 8, expand=4), 8, 256 + 64 + 288 + 64 + 256 + 16, 256 + 288 + 256),
    # squeeze 16->8 + BN, expand1x1 8->16 + BN, expand3x3 8->16 (x9) + BN
    (Fire(16, 32), 16, 128 + 16 + 128 + 32 + 1152 + 32, 128 + 128 + 1152),
    # grouped 1x1 16->4 (g=2: 4x8) + BN, depthwise 4x9 + BN, grouped 1x1 4->16 (16x2) + BN
    (ShuffleUnit(16, 16, groups=2), 16, 32 + 8 + 36 + 8 + 32 + 32, 32 + 36 + 32),
    # 1x1 16->4 + BN, 3x3 4->4 + BN, 1x1 4->16 + BN
    (Bottleneck(16, 16), 16, 64 + 8 + 144 + 8 + 64 + 32, 64 + 144 + 64),
    # 3x3 8->4 + BN, 3x3 12->4 + BN, transition 1x1 16->16 + BN
    (DenseBlock(8, 16, growth=4, layers=2), 8, 288 + 8 + 432 + 8 + 256 + 32, 288 + 432 + 256),
])
def test_block_params_and_macs_match_their_formulas(block, cin, params, macs_per_position):
    x = torch.randn(1, cin, 8, 8)
    assert count_params(block)[0] == params
    assert count_macs(block, (x,))[0] == macs_per_position * HW
    assert block.eval()(x).shape[2:] == (8, 8)


def test_residual_only_when_shapes_match_and_stride_halves():
    assert InvertedResidual(8, 8).residual and not InvertedResidual(8, 16).residual
    assert not InvertedResidual(8, 8, stride=2).residual
    for block in (DepthwiseSeparable(8, 16, 2), Fire(8, 16, 2), ShuffleUnit(8, 16, 2), DenseBlock(8, 16, 2), Bottleneck(8, 16, 2)):
        assert block.eval()(torch.randn(2, 8, 8, 8)).shape == (2, 16, 4, 4)


def test_channel_shuffle_interleaves_groups():
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]


def test_mixed_model_trains_loss_drops(digits):
    model = build([{"type": "inverted_residual", "out": 16, "expand": 2}, {"type": "fire", "out": 16, "stride": 2},
                   {"type": "shuffle", "out": 32, "groups": 2}, {"type": "dense", "out": 32, "growth": 8, "layers": 2},
                   {"type": "bottleneck", "out": 32}, {"type": "basic", "out": 32}, {"type": "separable", "out": 32}],
                  (1, 8, 8), 10)
    task = digits.subset(train=512)
    history = fit(model, task, FineTune(epochs=3, lr=0.05, batch_size=32, optimizer="adamw"), progress=False)
    assert history["loss"][-1] < 0.8 * history["loss"][0]


def test_from_params_builds_stages_and_rounds_widths():
    model = from_params({"stem": 8, "s1.block": "inverted_residual", "s1.width": 16, "s1.expand": 2, "s1.depth": 2,
                         "s2.block": "shuffle", "s2.width": 20, "s2.groups": 2}, (1, 28, 28), 10)
    blocks = model.config["blocks"]
    assert [(b["type"], b["out"], b["stride"]) for b in blocks] == [
        ("inverted_residual", 16, 1), ("inverted_residual", 16, 1), ("shuffle", 24, 2)]  # 20 -> multiple of 4 x 2
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(UserError, match="train"):
        from_params({"s1.block": "basic", "s1.width": 8, "lr": 0.1}, (1, 8, 8), 10)


def test_built_model_is_channel_prunable_and_reloads_from_its_arch_spec(tmp_path):
    x = torch.randn(1, 1, 16, 16)
    model = build([{"type": "inverted_residual", "out": 16}, {"type": "basic", "out": 32, "stride": 2},
                   {"type": "fire", "out": 32}], (1, 16, 16), 10)
    model = slimkit.models.checkpoint.set_origin(model.eval(), arch_spec(model), [])
    params, macs = count_params(model)[0], count_macs(model, (x,))[0]
    pruned = slimkit.apply(model, slimkit.ChannelPrune(ratio=0.5), example_inputs=(x,))
    assert count_params(pruned)[0] < 0.4 * params
    assert count_macs(pruned, (x,))[0] < 0.4 * macs
    slimkit.save_checkpoint(pruned, tmp_path / "ckpt")
    again = slimkit.load_model(str(tmp_path / "ckpt"))
    assert torch.equal(again(x), pruned(x))
    (tmp_path / "arch.yaml").write_text("input_shape: [1, 16, 16]\nnum_classes: 10\nstem: 16\n"
                                        "blocks:\n  - {type: separable, out: 24}\n")
    assert count_params(slimkit.load_model(f"arch:{tmp_path / 'arch.yaml'}"))[0] == count_params(
        build([{"type": "separable", "out": 24}], (1, 16, 16), 10))[0]


@pytest.mark.parametrize("blocks, field", [
    ([{"type": "mobile", "out": 8}], r"blocks\[0\]\.type"),
    ([{"type": "basic", "out": 8}, {"type": "basic", "out": 8, "expand": 4}], r"blocks\[1\]\.expand"),
    ([{"type": "fire", "out": 9}], r"blocks\[0\]: Fire needs an even"),
    ([{"type": "basic", "out": 8, "stride": 3}], r"blocks\[0\]\.stride"),
    ([], "blocks"),
])
def test_bad_architectures_name_the_field(blocks, field):
    with pytest.raises(UserError, match=field):
        ArchNet({"input_shape": [1, 8, 8], "num_classes": 10, "stem": 8, "blocks": blocks})
