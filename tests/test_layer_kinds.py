"""Every technique handles the layers real models contain: Linear subclasses, transformers' Conv1D (GPT-2, with
its head tied to the embedding table), weight_norm/spectral_norm parametrizations, and replaced layers that
models still read ``.weight`` from."""
import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

import slimkit as sk
from slimkit.graph.copying import deep_copy
from slimkit.graph.masks import WeightMask
from slimkit.pipeline import Context
from slimkit.quantize import QuantLinear, quantize_model
from slimkit.recipe import handler_for

pytestmark = pytest.mark.usefixtures("one_thread")


def run_step(model, cfg, *inputs):
    """(the step's result on a copy of ``model``, its notes)."""
    ctx = Context(inputs, None, None, model, progress=False)
    return handler_for(cfg)(copy.deepcopy(model), cfg, ctx), ctx.notes


class Scaled(nn.Linear):
    """A Linear subclass that computes like nn.Linear."""


class Doubled(nn.Linear):
    """A Linear subclass with its own forward."""

    def forward(self, x):
        return 2 * super().forward(x)


def test_linear_subclass_is_quantized_and_one_overriding_forward_is_named():
    torch.manual_seed(0)
    model = nn.Sequential(Scaled(16, 16), nn.ReLU(), Doubled(16, 8)).eval()
    x = torch.randn(4, 16)
    expected = model(x)
    quant, plan = quantize_model(copy.deepcopy(model), sk.Quantize(activations="dynamic"))
    assert isinstance(quant[0], QuantLinear) and isinstance(quant[2], Doubled)
    assert "overrides Linear.forward" in plan.skipped["2"]
    assert torch.allclose(quant(x), expected, atol=0.05)


@pytest.fixture(scope="module")
def gpt2():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=32,
                                     bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config).eval()
    assert model.lm_head.weight is model.transformer.wte.weight  # tied, as in the released GPT-2
    return model, torch.randint(0, 100, (2, 12))


def conv1ds(model):
    return {n: m for n, m in model.named_modules() if type(m).__name__ == "Conv1D"}


def test_gpt2_magnitude_prune_reaches_the_sparsity_and_never_prunes_the_tied_embedding(gpt2):
    model, ids = gpt2
    pruned, notes = run_step(model, sk.MagnitudePrune(sparsity=0.5), ids)
    layers = conv1ds(pruned)
    assert len(layers) == 8
    zeros = sum(int((m.weight == 0).sum()) for m in layers.values())
    assert zeros / sum(m.weight.numel() for m in layers.values()) == pytest.approx(0.5, abs=1e-3)
    assert torch.equal(pruned.transformer.wte.weight, model.transformer.wte.weight)
    assert pruned.lm_head.weight is pruned.transformer.wte.weight
    assert any("lm_head left dense" in n and "transformer.wte" in n for n in notes)
    assert torch.isfinite(pruned(ids).logits).all()


def test_gpt2_nm_groups_run_along_conv1d_inputs(gpt2):
    model, ids = gpt2
    pruned, _ = run_step(model, sk.NMSparsity(n=2, m=4), ids)
    for layer in conv1ds(pruned).values():
        rows = layer.weight.T  # Conv1D stores (in, out): a row of the Linear is a column here
        assert ((rows.reshape(-1, 4) != 0).sum(1) <= 2).all()
    assert torch.equal(pruned.transformer.wte.weight, model.transformer.wte.weight)


def test_gpt2_dynamic_int8_quantizes_conv1d_layers(gpt2):
    model, ids = gpt2
    quant, notes = run_step(model, sk.Quantize(activations="dynamic"), ids)
    originals = conv1ds(model)
    for name, layer in originals.items():
        replaced = quant.get_submodule(name)
        assert isinstance(replaced, QuantLinear) and replaced.dynamic
        assert replaced.weight.shape == layer.weight.shape and replaced.weight.dtype == layer.weight.dtype
        assert torch.allclose(replaced.weight, layer.weight, atol=2 * layer.weight.abs().max().item() / 127)
    assert not conv1ds(quant)
    assert any("lm_head shared its weight with transformer.wte" in n for n in notes)
    reference, logits = model(ids).logits, quant(ids).logits
    assert ((logits - reference).norm() / reference.norm()) < 0.05


def test_gpt2_cluster_and_low_rank_treat_conv1d_as_linear(gpt2):
    model, ids = gpt2
    reference = model(ids).logits
    clustered, _ = run_step(model, sk.Cluster(bits=6), ids)
    name = "transformer.h.0.attn.c_attn"
    assert type(clustered.get_submodule(name)).__name__ == "ClusteredLayer"
    assert clustered.get_submodule(name).weight.shape == model.get_submodule(name).weight.shape
    assert ((clustered(ids).logits - reference).norm() / reference.norm()) < 0.05
    factored, _ = run_step(model, sk.LowRank(rank_by="fixed", rank=8, layers=("transformer.h.*.mlp.c_fc",)), ids)
    layer, original = factored.get_submodule("transformer.h.0.mlp.c_fc"), model.get_submodule("transformer.h.0.mlp.c_fc")
    assert isinstance(layer, nn.Sequential) and layer.weight.shape == original.weight.shape  # (32, 128): (in, out)
    x = torch.randn(3, 32)
    assert torch.allclose(layer(x), x @ layer.weight + original.bias, atol=1e-5)
    assert torch.isfinite(factored(ids).logits).all()


def test_weight_norm_survives_pruning_and_the_original_keeps_its_weight():
    torch.manual_seed(0)
    model = nn.Sequential(weight_norm(nn.Linear(16, 16)), nn.ReLU(), nn.Linear(16, 4)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(8, 16)
    pruned = sk.apply(model, sk.MagnitudePrune(sparsity=0.5, scope="layer"), example_inputs=(x,))
    chain = pruned[0].parametrizations.weight
    assert [type(p).__name__ for p in chain] == ["_WeightNorm"]
    assert (pruned[0].weight == 0).float().mean() == pytest.approx(0.5, abs=0.01)
    assert model[0].weight.shape == (16, 16) and parametrize.is_parametrized(model[0], "weight")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    nm = sk.apply(model, sk.NMSparsity(), example_inputs=(x,))
    assert ((nm[0].weight.reshape(-1, 4) != 0).sum(1) <= 2).all() and len(nm[0].parametrizations.weight) == 1


def test_spectral_norm_keeps_its_mask_when_it_cannot_store_the_zeros():
    torch.manual_seed(0)
    model = nn.Sequential(spectral_norm(nn.Linear(16, 16)), nn.ReLU(), nn.Linear(16, 4)).eval()
    pruned, notes = run_step(model, sk.MagnitudePrune(sparsity=0.5, scope="layer"), torch.randn(2, 16))
    chain = pruned[0].parametrizations.weight
    assert type(chain[0]).__name__ == "_SpectralNorm" and isinstance(chain[-1], WeightMask)
    assert (pruned[0].weight == 0).float().mean() == pytest.approx(0.5, abs=0.01)
    assert any("0 keeps its mask as a parametrization" in n for n in notes)


def test_deep_copy_gives_parametrized_layers_their_own_class():
    model = nn.Sequential(weight_norm(nn.Linear(4, 4)))
    copied = deep_copy(model)
    parametrize.remove_parametrizations(copied[0], "weight")
    assert type(copied[0]) is nn.Linear and model[0].weight.shape == (4, 4)


@pytest.mark.parametrize("step", [
    sk.LowRank(rank_by="fixed", rank=8, layers=("0", "2")),
    sk.Cluster(bits=4),
    sk.Quantize(activations="dynamic"),
])
def test_replaced_layers_still_report_their_weight(step):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    out = sk.apply(model, step, example_inputs=(torch.randn(2, 32),))
    for i in (0, 2):
        layer, original = out[i], model[i]
        assert type(layer) is not nn.Linear
        assert layer.weight.dtype == torch.float32 and layer.weight.device == original.weight.device
        assert layer.weight.shape == original.weight.shape
        if not isinstance(step, sk.LowRank):
            assert (layer.weight - original.weight).norm() / original.weight.norm() < 0.1
        h = torch.randn(3, 32)
        assert torch.allclose(layer(h), nn.functional.linear(h, layer.weight, _bias(layer)), atol=1e-5)


def _bias(layer):
    """The bias a replaced layer adds: a factorisation's last factor's, a clustered layer's inner layer's."""
    if isinstance(layer, nn.Sequential):
        return layer[-1].bias
    return layer.bias_value() if isinstance(layer, QuantLinear) else layer.layer.bias


@pytest.mark.parametrize("step", [sk.Quantize(activations="dynamic"), sk.Cluster(bits=6), sk.LowRank(rank_by="fixed", rank=8)])
def test_attention_out_proj_is_never_replaced_and_the_fast_path_still_runs(step):
    torch.manual_seed(0)
    model = nn.TransformerEncoderLayer(16, 2, 64, batch_first=True).eval()
    x = torch.randn(2, 5, 16)
    out, notes = run_step(model, step, x)
    assert type(out.self_attn.out_proj) is type(model.self_attn.out_proj)
    assert any("self_attn.out_proj" in n and "reads its weight" in n for n in notes)
    with torch.no_grad():  # the encoder layer's fast path reads linear1/linear2's weight and bias
        reference, got = model(x), out(x)
    assert ((got - reference).norm() / reference.norm()) < 0.3
