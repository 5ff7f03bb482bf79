"""Block-by-block calibration (slimkit.graph.blockwise): the statistics equal those of a whole-model pass, each
block sees what the changed blocks before it produce, and only one group is processed at a time."""
import pytest
import torch
from torch import nn

from slimkit.graph.blockwise import InputStats, calibrate_blockwise, input_features, repeated_blocks
from slimkit.graph.layers import layer_base

transformers = pytest.importorskip("transformers")


def tiny(kind: str) -> nn.Module:
    t = transformers
    torch.manual_seed(0)
    if kind == "gpt2":
        return t.GPT2LMHeadModel(t.GPT2Config(vocab_size=64, n_embd=32, n_layer=3, n_head=4, n_positions=32)).eval()
    return t.LlamaForCausalLM(t.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                                            num_attention_heads=4, num_key_value_heads=2,
                                            max_position_embeddings=32)).eval()


def linears(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if layer_base(m, (nn.Linear,))}


def batches(n=3, rows=2, length=12):
    g = torch.Generator().manual_seed(1)
    return [(torch.randint(0, 64, (rows, length), generator=g),) for _ in range(n)]


def whole_model_stats(model, targets, data):
    stats = {n: InputStats(input_features(m), gram=True) for n, m in targets.items()}
    hooks = [m.register_forward_pre_hook(lambda _, a, s=stats[n]: s.add(a[0])) for n, m in targets.items()]
    with torch.no_grad():
        for batch in data:
            model(*batch, use_cache=False)
    for h in hooks:
        h.remove()
    return stats


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_unchanged_blocks_see_what_the_whole_model_feeds_them(kind):
    model, data = tiny(kind), batches()
    targets = linears(model)
    groups = []
    calibrate_blockwise(model, data, targets, lambda n, m: InputStats(input_features(m), gram=True), groups.append)
    assert [len(g) for g in groups] == [len(groups[0])] * 3 + [1]  # three blocks, then lm_head on its own
    expected = whole_model_stats(model, targets, data)
    for group in groups:
        for name, stats in group.items():
            assert stats.rows == expected[name].rows == 3 * 2 * 12
            torch.testing.assert_close(stats.hessian, expected[name].hessian, rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(stats.abs_max, expected[name].abs_max)


def test_each_block_sees_the_changes_made_to_the_blocks_before_it():
    model, data = tiny("llama"), batches()
    targets = linears(model)
    changed_layer = "model.layers.0.mlp.down_proj"

    def triple_a_layer_of_block_0(group):
        if changed_layer in group:
            model.get_submodule(changed_layer).weight.data.mul_(3)

    seen = {}
    calibrate_blockwise(model, data, targets, lambda n, m: InputStats(input_features(m)),
                        lambda g: (triple_a_layer_of_block_0(g), seen.update(g)))
    changed = whole_model_stats(model, targets, data)  # the model with block 0 changed, end to end
    name = "model.layers.1.self_attn.q_proj"
    torch.testing.assert_close(seen[name].abs_max, changed[name].abs_max)


def test_kept_rows_and_means():
    stats = InputStats(3, keep_rows=4)
    x = torch.tensor([[1.0, -2, 0], [3, 0, -1], [-1, 1, 1]])
    stats.add(x)
    stats.add(x)
    assert stats.rows == 6 and stats.kept.shape == (4, 3)
    torch.testing.assert_close(stats.abs_mean, x.abs().mean(0))
    torch.testing.assert_close(stats.norm, (2 * x.square().sum(0)).sqrt())
    with pytest.raises(ValueError, match="gram=True"):
        stats.hessian


def test_a_model_without_repeated_blocks_is_one_group():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    assert repeated_blocks(model) is None
    groups = []
    calibrate_blockwise(model, [(torch.randn(5, 4),)], linears(model), lambda n, m: InputStats(input_features(m)),
                        groups.append)
    assert [sorted(g) for g in groups] == [["0", "2"]] and groups[0]["2"].rows == 5
