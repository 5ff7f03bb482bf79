"""Head and FFN-neuron pruning of a (tiny, random) transformers BERT encoder: equivalence, shapes, checkpoints."""
import pytest
import torch

import slimkit
from slimkit.errors import UserError
from slimkit.measure.counts import count_params
from slimkit.models.hf import SentenceEmbedder
from slimkit.prune import ChannelPrune
from slimkit.prune.transformer import encoder_layers
from slimkit.recipe import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

HIDDEN, HEADS, FFN, LAYERS = 32, 4, 64, 2


def tiny_bert() -> SentenceEmbedder:
    """A 2-layer BERT (4 heads of 8, FFN 64) with random weights; head 1 and FFN neurons 0-31 are dead."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                        intermediate_size=FFN, max_position_embeddings=32, attn_implementation="eager")
    model = BertModel(config, add_pooling_layer=False).eval()
    with torch.no_grad():
        for layer in model.encoder.layer:
            dead = slice(8, 16)  # head 1: no query/key/value rows, no output columns
            for linear in (layer.attention.self.query, layer.attention.self.key, layer.attention.self.value):
                linear.weight[dead] = 0
                linear.bias[dead] = 0
            layer.attention.output.dense.weight[:, dead] = 0
            layer.intermediate.dense.weight[:32] = 0  # neurons 0-31 read nothing and write nothing
            layer.output.dense.weight[:, :32] = 0
    return SentenceEmbedder(model)


def inputs(batch=3, length=7):
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 50, (batch, length), generator=gen)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, 5:] = 0
    return ids, mask


def test_dead_heads_and_neurons_are_removed_without_changing_outputs():
    model = tiny_bert()
    before = model(*inputs())
    pruned = slimkit.apply(model, ChannelPrune(ratio=0.5, heads=0.25), example_inputs=inputs(1))
    for layer in encoder_layers(pruned).values():
        attention = layer.attention.self
        assert (attention.num_attention_heads, attention.all_head_size) == (3, 24)
        assert attention.query.weight.shape == (24, HIDDEN) and layer.attention.output.dense.weight.shape == (HIDDEN, 24)
        assert layer.intermediate.dense.weight.shape == (32, HIDDEN) and layer.output.dense.weight.shape == (HIDDEN, 32)
        assert attention.query.weight.abs().sum(1).view(3, 8).sum(1).min() > 0  # the dead head went, not a live one
    removed = LAYERS * (3 * (8 * HIDDEN + 8) + 8 * HIDDEN + 2 * 32 * HIDDEN + 32)
    assert count_params(pruned)[0] == count_params(tiny_bert())[0] - removed
    torch.testing.assert_close(pruned(*inputs()), before, atol=1e-5, rtol=0)


def test_pruned_encoder_reloads_from_its_checkpoint(tmp_path):
    model = slimkit.models.checkpoint.set_origin(tiny_bert(), "test_prune_transformer:tiny_bert", [])
    pruned = slimkit.apply(model, ChannelPrune(ratio=0.75, heads=0.5, round_to=8), example_inputs=inputs(1))
    slimkit.save_checkpoint(pruned, tmp_path / "ckpt")
    again = slimkit.load_model(str(tmp_path / "ckpt"), base="test_prune_transformer:tiny_bert")
    layer = encoder_layers(again)["encoder.encoder.layer.1"]
    assert layer.attention.self.num_attention_heads == 2 and layer.intermediate.dense.out_features == 16
    assert torch.equal(again(*inputs()), pruned(*inputs()))


def test_ignored_layer_keeps_its_heads_and_neurons():
    pruned = slimkit.apply(tiny_bert(), ChannelPrune(ratio=0.5, heads=0.25, ignore=("encoder.encoder.layer.0",)),
                           example_inputs=inputs(1))
    first, second = encoder_layers(pruned).values()
    assert first.attention.self.num_attention_heads == 4 and first.intermediate.dense.out_features == FFN
    assert second.attention.self.num_attention_heads == 3 and second.intermediate.dense.out_features == 32


def test_bad_transformer_options_are_user_errors():
    with pytest.raises(ConfigError, match="heads"):
        ChannelPrune(heads=1.0)
    with pytest.raises(UserError, match="target_macs .* not supported on transformers"):
        slimkit.apply(tiny_bert(), ChannelPrune(target_macs=0.5), example_inputs=inputs(1))
    with pytest.raises(UserError, match="heads applies to transformers"):
        slimkit.apply(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)),
                      ChannelPrune(heads=0.5), example_inputs=(torch.randn(1, 4),))
