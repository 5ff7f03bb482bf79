"""channel_prune on hand-written families that mimic real model zoos (timm, torchvision, transformers): at ratio
0.3 the pruned model runs, keeps its output shape and loses at least 20% of its MACs where the structure allows,
and removing dead (zeroed) channels does not change its outputs."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import slimkit
from slimkit.measure.counts import count_macs
from slimkit.prune import ChannelPrune, ChannelPruner, shrink
from test_prune_zoo import randomised, zero_pruned_inputs

pytestmark = pytest.mark.usefixtures("one_thread")


class BatchNormAct2d(nn.BatchNorm2d):
    """timm's BatchNormAct2d: a BatchNorm2d subclass that calls F.batch_norm itself, then an activation."""

    def __init__(self, c):
        super().__init__(c)
        self.act = nn.SiLU()

    def forward(self, x):
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return self.act(x)


class LayerNorm2d(nn.LayerNorm):
    """timm's LayerNorm2d: a LayerNorm over the channels of an NCHW tensor."""

    def forward(self, x):
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps).permute(0, 3, 1, 2)


def conv_bn_act(cin, cout, k=3, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, 1, k // 2, groups=groups, bias=False), BatchNormAct2d(cout))


class TimmConvNet(nn.Module):
    """EfficientNet-like: BatchNormAct2d everywhere, a residual, a LayerNorm2d and GroupNorm stage, a layer scale."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn_act(3, 16)
        self.block = nn.Sequential(conv_bn_act(16, 32, 1), conv_bn_act(32, 32, 3, groups=32), nn.Conv2d(32, 16, 1))
        self.gamma = nn.Parameter(torch.full((16,), 0.5))
        self.norm = LayerNorm2d(16)
        self.head = nn.Sequential(nn.Conv2d(16, 32, 1), nn.GroupNorm(8, 32), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), nn.Linear(32, 10))

    def forward(self, x):
        x = self.stem(x)
        x = x + self.block(x) * self.gamma.reshape(1, -1, 1, 1)
        return self.head(self.norm(x))


class SliceNet(nn.Module):
    """Channel slicing with constant bounds (x[:, :8], narrow) and chunk (CSP / SwiGLU style)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU())
        self.mix = nn.Conv2d(24, 32, 3, padding=1)
        self.glu = nn.Conv2d(32, 64, 1)
        self.out = nn.Conv2d(32, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        part = torch.cat([x[:, -8:], x[:, :24].narrow(1, 0, 16)], 1)  # keeps channels 24-31 and 0-15
        a, b = self.glu(torch.relu(self.mix(part))).chunk(2, dim=1)
        y = self.out(a * torch.sigmoid(b))
        return self.fc(y.mean((2, 3)))


def channel_shuffle(x, groups):
    """torchvision's shufflenet_v2 channel shuffle: reshape, transpose, contiguous, view."""
    n, c, h, w = x.size()
    x = x.view(n, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(n, -1, h, w)


class ShuffleV2Block(nn.Module):
    """torchvision's InvertedResidual (stride 1): chunk, a branch on one half, cat, channel shuffle."""

    def __init__(self, c):
        super().__init__()
        h = c // 2
        self.branch = nn.Sequential(nn.Conv2d(h, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU(),
                                    nn.Conv2d(h, h, 3, 1, 1, groups=h, bias=False), nn.BatchNorm2d(h),
                                    nn.Conv2d(h, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU())

    def forward(self, x):
        x1, x2 = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat((x1, self.branch(x2)), dim=1), 2)


def shufflenet_v2():
    return nn.Sequential(nn.Conv2d(3, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                         ShuffleV2Block(32), ShuffleV2Block(32), nn.Conv2d(32, 64, 1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


class Attention(nn.Module):
    """timm's ViT attention: one fused qkv Linear, reshape(B, N, 3, heads, head_dim), SDPA or matmuls."""

    def __init__(self, dim, num_heads, fused=True, width_from_input=False):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.fused, self.width_from_input = fused, width_from_input
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.fused:
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = (q * self.head_dim ** -0.5) @ k.transpose(-2, -1)
            x = attn.softmax(dim=-1) @ v
        x = x.transpose(1, 2).reshape(B, N, C if self.width_from_input else -1)
        return self.proj(x)


class Block(nn.Module):
    def __init__(self, dim, heads, **attention):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, **attention)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Patch conv, class token, position embedding, blocks, final norm, head on the class token."""

    def __init__(self, dim=32, heads=4, depth=2, **attention):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, 4)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, 17, dim) * 0.02)
        self.blocks = nn.Sequential(*(Block(dim, heads, **attention) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


FAMILIES = {
    "timm_convnet": TimmConvNet,
    "slicing_chunk": SliceNet,
    "shufflenet_v2": shufflenet_v2,
    "vit_fused_qkv": ViT,
    "vit_matmul_attention": lambda: ViT(fused=False),
    "vit_width_from_input": lambda: ViT(width_from_input=True),
}


def macs_kept(model, pruned, x):
    return count_macs(pruned, (x,))[0] / count_macs(model, (x,))[0]


@pytest.mark.parametrize("name", sorted(set(FAMILIES) - {"vit_width_from_input"}))  # that one: see below
def test_family_prunes_at_ratio_0_3(name):
    torch.manual_seed(0)
    model, x = randomised(FAMILIES[name]()), torch.randn(2, 3, 16, 16)
    pruned = slimkit.apply(copy.deepcopy(model), ChannelPrune(ratio=0.3), example_inputs=(x[:1],))
    assert pruned(x).shape == model(x).shape
    assert macs_kept(model, pruned, x) <= 0.8


RESIDUAL_PRODUCER = {"timm_convnet": ("stem",), "vit_fused_qkv": ("patch",), "vit_matmul_attention": ("patch",),
                     "vit_width_from_input": ("patch",)}
"""A LayerNorm's statistics change when even a dead channel goes, so there the residual width is kept."""


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_removing_dead_channels_keeps_outputs(name):
    torch.manual_seed(0)
    model, x = randomised(FAMILIES[name]()), torch.randn(2, 3, 16, 16)
    plan = ChannelPruner(model, (x[:1],), ignore=RESIDUAL_PRODUCER.get(name, ())).plan(0.3)
    assert plan
    zero_pruned_inputs(model, plan)
    expected = model(x)
    torch.testing.assert_close(shrink(copy.deepcopy(model), plan)(x), expected, atol=1e-5, rtol=1e-5)


def test_timm_width_from_input_keeps_heads_and_width_and_says_why():
    model, x = ViT(width_from_input=True).eval(), torch.randn(1, 3, 16, 16)
    pruner = ChannelPruner(model, (x,))
    assert "blocks.0.attn.reshape_1 (reshape to the width of other channels (read from their shape))" in pruner.skipped
    pruned = shrink(copy.deepcopy(model), pruner.plan(0.3))
    assert pruned.blocks[0].attn.num_heads == 4 and pruned.blocks[0].mlp[0].out_features == 128 - 38
    assert pruned(x).shape == (1, 10)


def test_fused_qkv_heads_and_embedding_shrink_together():
    model, x = ViT().eval(), torch.randn(1, 3, 16, 16)
    pruned = shrink(copy.deepcopy(model), ChannelPruner(model, (x,)).plan(0.3))
    attention = pruned.blocks[1].attn
    assert attention.num_heads == 3 and attention.qkv.out_features == 3 * 3 * 8 and attention.proj.in_features == 24
    width = 32 - int(0.3 * 32)
    assert pruned.cls_token.shape == (1, 1, width) and pruned.pos_embed.shape == (1, 17, width)
    assert pruned.norm.normalized_shape == (width,) and pruned.head.in_features == width


class Context:
    """The parts of a pipeline step context channel_prune uses."""

    def __init__(self, example_inputs):
        self.example_inputs, self.task, self.notes, self.replay = example_inputs, None, [], None

    def record(self, replay):
        self.replay = replay


def test_little_removed_is_a_note_not_only_a_log_line():
    from slimkit.prune.channel import channel_prune

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.InstanceNorm2d(8, affine=True), nn.Flatten(), nn.Linear(8 * 14 * 14, 2))
    ctx = Context((torch.randn(1, 3, 16, 16),))
    with pytest.warns(UserWarning, match="removed 0.0% of the MACs where about 30% was asked"):
        channel_prune(model, ChannelPrune(ratio=0.3), ctx)
    assert ctx.notes[0] == "channel_prune skipped 1 (InstanceNorm2d is not supported): the channels it touches are kept"
    assert "removed 0.0% of the MACs" in ctx.notes[1]


def hf_model(family: str) -> tuple[nn.Module, tuple]:
    """A tiny random transformers model (2 layers, 4 query heads of 8, FFN 64) and inputs for it."""
    import transformers as tf

    torch.manual_seed(0)
    tokens = (torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(1)),)
    if family == "vit":
        config = tf.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                              image_size=16, patch_size=4, attn_implementation="eager")
        return tf.ViTModel(config, add_pooling_layer=False).eval(), (torch.randn(2, 3, 16, 16),)
    if family == "distilbert":
        config = tf.DistilBertConfig(vocab_size=50, dim=32, n_layers=2, n_heads=4, hidden_dim=64, attn_implementation="eager")
        return tf.DistilBertModel(config).eval(), tokens
    config = tf.LlamaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, intermediate_size=64, attn_implementation="eager")
    return tf.LlamaModel(config).eval(), tokens


def kill_last_heads_and_first_neurons(model: nn.Module) -> None:
    """Zero query heads 2-3 (with GQA: key/value head 1, which only they read) and FFN neurons 0-31."""
    from slimkit.prune.transformer import encoder_layers, layout_of

    with torch.no_grad():
        for layer in encoder_layers(model).values():
            layout = layout_of(layer)
            for p in (layout.q, layout.k, layout.v):
                linear = layer.get_submodule(f"{layout.attention}.{p}")
                linear.weight[linear.out_features // 2:] = 0
                if linear.bias is not None:
                    linear.bias[linear.out_features // 2:] = 0
            layer.get_submodule(layout.o).weight[:, 16:] = 0
            for p in layout.up:
                layer.get_submodule(p).weight[:32] = 0
                if layer.get_submodule(p).bias is not None:
                    layer.get_submodule(p).bias[:32] = 0
            layer.get_submodule(layout.down).weight[:, :32] = 0


@pytest.mark.parametrize("family", ["vit", "distilbert", "llama"])
def test_transformers_family_loses_dead_heads_and_neurons_without_changing_outputs(family):
    pytest.importorskip("transformers")
    from slimkit.prune.transformer import encoder_layers, layout_of

    model, x = hf_model(family)
    kill_last_heads_and_first_neurons(model)
    before = model(*x).last_hidden_state
    pruned = slimkit.apply(model, ChannelPrune(ratio=0.5, heads=0.5), example_inputs=x)
    for layer in encoder_layers(pruned).values():
        layout = layout_of(layer)
        assert layer.get_submodule(f"{layout.attention}.{layout.q}").out_features == 16
        assert layer.get_submodule(f"{layout.attention}.{layout.k}").out_features == (8 if family == "llama" else 16)
        assert layer.get_submodule(layout.o).in_features == 16 and layer.get_submodule(layout.down).in_features == 32
    torch.testing.assert_close(pruned(*x).last_hidden_state, before, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["vit", "distilbert", "llama"])
def test_transformers_family_at_ratio_0_3_runs_smaller(family):
    pytest.importorskip("transformers")
    model, x = hf_model(family)
    pruned = slimkit.apply(model, ChannelPrune(ratio=0.3, heads=0.3), example_inputs=x)
    assert pruned(*x).last_hidden_state.shape == model(*x).last_hidden_state.shape
    assert count_macs(pruned, x)[0] < count_macs(model, x)[0]


def test_grouped_query_heads_at_ratio_0_equal_the_original():
    pytest.importorskip("transformers")
    model, x = hf_model("llama")
    pruned = slimkit.apply(model, ChannelPrune(ratio=0.0, heads=0.0), example_inputs=x)
    assert torch.equal(pruned(*x).last_hidden_state, model(*x).last_hidden_state)
