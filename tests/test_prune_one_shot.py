"""one_shot_prune: SparseGPT, Wanda and layer-wise magnitude, unstructured and 2:4, on tiny transformers and on
single layers whose inputs favour one method over another."""
import json

import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.graph.layers import compute_weight, is_conv1d

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB, LENGTH = 100, 12
SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
METHODS = ("sparsegpt", "wanda", "magnitude")


def tiny_model(name: str) -> nn.Module:
    t = transformers
    torch.manual_seed(0)
    build = {
        "bert": lambda: t.BertModel(t.BertConfig(vocab_size=VOCAB, **SIZES)),  # its pooler runs after the blocks
        "distilbert": lambda: t.DistilBertModel(t.DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4,
                                                                   hidden_dim=64)),
        "roberta": lambda: t.RobertaModel(t.RobertaConfig(vocab_size=VOCAB, max_position_embeddings=64, **SIZES)),
        "vit": lambda: t.ViTForImageClassification(t.ViTConfig(image_size=16, patch_size=8, num_labels=5, **SIZES)),
        "gpt2": lambda: t.GPT2LMHeadModel(t.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4,
                                                       n_positions=64)),
        "llama": lambda: t.LlamaForCausalLM(t.LlamaConfig(vocab_size=VOCAB, num_key_value_heads=2,
                                                          max_position_embeddings=64, **SIZES)),
    }
    return build[name]().eval()


def inputs_task(name: str) -> sk.Task:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 3, 16, 16, generator=g) if name == "vit" else torch.randint(0, VOCAB, (8, LENGTH), generator=g)
    return sk.Task(name, (x,), (x[:2],), "cosine")


def linear_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Each Linear and Conv1D layer's weight as (out, in), by name."""
    return {name: compute_weight(m).detach() for name, m in model.named_modules()
            if isinstance(m, nn.Linear) or is_conv1d(m)}


def zeros(t: torch.Tensor) -> float:
    return float((t == 0).float().mean())


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
@pytest.mark.parametrize("name", ["bert", "distilbert", "roberta", "vit", "gpt2", "llama"])
def test_every_linear_layer_gets_exactly_the_sparsity_and_pattern(name, pattern):
    model, task = tiny_model(name), inputs_task(name)
    ignore = ("lm_head",) if name == "llama" else ()
    dense = {"lm_head"} if name in ("gpt2", "llama") else set()  # GPT-2's head is tied to the embedding table
    before = linear_weights(model)
    for method in METHODS:
        cfg = sk.OneShotPrune(method=method, pattern=pattern, calibration_batches=2, batch_size=4, ignore=ignore)
        pruned = sk.apply(model, cfg, data=task)
        after = linear_weights(pruned)
        assert set(after) == set(before) and len(after) >= 8
        for layer, weight in after.items():
            if layer in dense:
                assert torch.equal(weight, before[layer])
                continue
            assert zeros(weight) == 0.5, (method, layer)
            if pattern == "2:4":
                assert ((weight.reshape(-1, 4) == 0).sum(1) == 2).all(), (method, layer)
            if method == "sparsegpt":  # the kept weights were updated; the others keep their values
                assert not torch.equal(weight[weight != 0], before[layer][weight != 0]), layer
            else:
                assert torch.equal(weight[weight != 0], before[layer][weight != 0]), (method, layer)
        if name == "vit":  # the patch embedding is a Conv2d: left dense
            assert torch.equal(pruned.vit.embeddings.patch_embeddings.projection.weight,
                               model.vit.embeddings.patch_embeddings.projection.weight)
        with torch.no_grad():
            out = pruned(*task.example_inputs(2))
        assert torch.isfinite(out[0]).all()


def single_layer(x: torch.Tensor) -> tuple[nn.Module, sk.Task]:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(x.shape[1], 32, bias=False)), sk.Task("layer", (x,), (x[:8],), "cosine")


def output_errors(x: torch.Tensor, pattern: str, tmp_path) -> dict[str, float]:
    """Each method's relative output error ||X (W - W')^T||^2 / ||X W^T||^2 on the calibration inputs, checked
    against what the step reports in one_shot_prune.json."""
    model, task = single_layer(x)
    w = model[0].weight.detach()
    errors = {}
    for method in METHODS:
        cfg = sk.OneShotPrune(method=method, pattern=pattern, calibration_batches=4, batch_size=64)
        pruned = sk.apply(model, cfg, data=task, out_dir=tmp_path)
        errors[method] = float((x @ (w - pruned[0].weight.detach()).T).square().sum() / (x @ w.T).square().sum())
        reported = json.loads((tmp_path / "one_shot_prune.json").read_text())["0"]
        assert reported == {"sparsity": 0.5, "error": pytest.approx(errors[method], rel=1e-3)}
    return errors


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_sparsegpt_compensates_correlated_inputs_that_wanda_and_magnitude_cannot(pattern, tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g) @ torch.randn(8, 64, generator=g) + 0.1 * torch.randn(256, 64, generator=g)
    errors = output_errors(x, pattern, tmp_path)
    assert errors["sparsegpt"] < 0.2 * min(errors["wanda"], errors["magnitude"]), errors


def test_wanda_keeps_the_weights_of_inputs_with_large_norms(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 64, generator=g)
    x[:, :4] *= 20  # four outlier features
    errors = output_errors(x, "unstructured", tmp_path)
    assert errors["wanda"] < 0.2 * errors["magnitude"] and errors["sparsegpt"] < 0.2 * errors["magnitude"], errors
    model, task = single_layer(x)
    pruned_outliers = {}  # the fraction of the weights reading the outlier features that each method prunes
    for method in ("wanda", "magnitude"):
        pruned = sk.apply(model, sk.OneShotPrune(method=method, calibration_batches=4, batch_size=64), data=task)
        pruned_outliers[method] = zeros(pruned[0].weight[:, :4])
    assert pruned_outliers["wanda"] < 0.1 and pruned_outliers["magnitude"] > 0.3, pruned_outliers


def test_each_block_is_calibrated_on_the_pruned_blocks_before_it(tmp_path):
    class Stack(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(16, 16), nn.Tanh()) for _ in range(2))

        def forward(self, x):
            for block in self.blocks:
                x = block(x)
            return x

    torch.manual_seed(0)
    model, x = Stack(), torch.randn(64, 16)
    task = sk.Task("x", (x,), (x,), "cosine")
    pruned = sk.apply(model, sk.OneShotPrune(calibration_batches=2, batch_size=32), data=task, out_dir=tmp_path)
    reported = json.loads((tmp_path / "one_shot_prune.json").read_text())["blocks.1.0"]["error"]
    w, w_pruned = model.blocks[1][0].weight.detach(), pruned.blocks[1][0].weight.detach()

    def error(inputs):
        return float(((inputs @ (w - w_pruned).T).square().sum() / (inputs @ w.T).square().sum()))

    with torch.no_grad():
        on_pruned, on_dense = error(pruned.blocks[0](x)), error(model.blocks[0](x))
    assert reported == pytest.approx(on_pruned, rel=1e-4) and on_pruned != pytest.approx(on_dense, rel=1e-2)


def test_sparsity_zero_leaves_the_model_unchanged():
    model, task = tiny_model("gpt2"), inputs_task("gpt2")
    for method in METHODS:
        pruned = sk.apply(model, sk.OneShotPrune(method=method, sparsity=0.0, calibration_batches=1, batch_size=4),
                          data=task)
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), pruned.state_dict().values()))


def test_magnitude_needs_no_data_and_layers_that_do_not_split_into_groups_stay_dense(tmp_path):
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))
    with pytest.warns(UserWarning, match="skipped 0: its 6 inputs do not split into groups of 4"):
        pruned = sk.apply(model, sk.OneShotPrune(method="magnitude", pattern="2:4"),
                          example_inputs=(torch.randn(1, 6),), out_dir=tmp_path)
    assert torch.equal(pruned[0].weight, model[0].weight) and zeros(pruned[2].weight) == 0.5
    assert json.loads((tmp_path / "one_shot_prune.json").read_text()) == {"2": {"sparsity": 0.5, "error": None}}
    pruned = sk.apply(model, sk.OneShotPrune(method="magnitude", sparsity=0.25), example_inputs=(torch.randn(1, 6),))
    assert zeros(pruned[0].weight) == 0.25 and zeros(pruned[2].weight) == 0.25
    kept = model[2].weight.abs() > model[2].weight.abs().flatten().kthvalue(8).values
    assert torch.equal(pruned[2].weight != 0, kept)  # the 8 smallest of 32 magnitudes are gone


def test_bad_input_is_refused_with_the_fix(tmp_path):
    x = (torch.randn(1, 8),)
    with pytest.raises(sk.UserError, match="--data"):
        sk.apply(nn.Sequential(nn.Linear(8, 4)), sk.OneShotPrune(method="wanda"), example_inputs=x)
    with pytest.raises(sk.UserError, match="has none left to prune .* Use magnitude_prune or nm_sparsity"):
        sk.apply(nn.Sequential(nn.Conv2d(3, 4, 3)), sk.OneShotPrune(method="magnitude"),
                 example_inputs=(torch.randn(1, 3, 8, 8),))
    with pytest.raises(sk.UserError, match="ignore: 'O' matches no module of Sequential"):
        sk.apply(nn.Sequential(nn.Linear(8, 4)), sk.OneShotPrune(method="magnitude", ignore=("O",)), example_inputs=x)
    for options, message in [
        ({"pattern": "4:2"}, "must be 'unstructured' or 'N:M' with 1 <= N < M"),
        ({"pattern": "2-4"}, "must be 'unstructured' or 'N:M'"),
        ({"pattern": "2:4", "sparsity": 0.3}, "2:4 zeros 0.5 of the weights; leave sparsity out or set it to 0.5"),
        ({"pattern": "2:4", "block_size": 6}, "must be a multiple of M = 4"),
        ({"sparsity": 1.0}, r"must be in \[0, 1\)"),
        ({"method": "obs"}, "must be one of 'sparsegpt', 'wanda', 'magnitude'"),
        ({"damping": 0}, r"must be in \(0, 1\]"),
    ]:
        with pytest.raises(sk.UserError, match=message):
            sk.Recipe.from_dict({"steps": [{"one_shot_prune": options}]})
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("steps:\n  - one_shot_prune: {pattern: 2:4}\n")
    with pytest.raises(sk.UserError, match='got the number 124 .* quote it: "2:4"'):
        sk.Recipe.load(recipe)
    recipe.write_text("steps:\n  - one_shot_prune: {method: wanda, pattern: \"2:4\"}\n")
    assert sk.Recipe.load(recipe).steps[0] == sk.OneShotPrune(method="wanda", pattern="2:4")
