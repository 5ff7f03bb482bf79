"""Weight rounding for transformers (GPTQ, AWQ, HQQ next to round-to-nearest), SmoothQuant, and the messages
for bad input. Tiny random models (hidden size 32, two blocks), int4 weights in groups of 16."""
import copy

import pytest
import torch
from torch import nn

import slimkit as sk
import slimkit.quantize as q
from slimkit.errors import UserError
from slimkit.recipe import Recipe

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB, LENGTH, SAMPLES = 100, 12, 48
SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
INT4 = dict(weights="int4", activations="none", group_size=16, symmetric=False, calibration_batches=3, batch_size=16)


def tiny(name: str) -> tuple[nn.Module, torch.Tensor]:
    """A random-weight transformers model and SAMPLES inputs for it."""
    t = transformers
    torch.manual_seed(0)
    model = {
        "bert": lambda: t.BertModel(t.BertConfig(vocab_size=VOCAB, **SIZES)),
        "distilbert": lambda: t.DistilBertModel(t.DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4,
                                                                   hidden_dim=64)),
        "roberta": lambda: t.RobertaModel(t.RobertaConfig(vocab_size=VOCAB, **SIZES)),
        "vit": lambda: t.ViTForImageClassification(t.ViTConfig(image_size=16, patch_size=8, num_labels=5, **SIZES)),
        "gpt2": lambda: t.GPT2LMHeadModel(t.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4,
                                                       n_positions=64)),
        "llama": lambda: t.LlamaForCausalLM(t.LlamaConfig(vocab_size=VOCAB, num_key_value_heads=2,
                                                          max_position_embeddings=64, **SIZES)),
    }[name]().eval()
    x = torch.randn(SAMPLES, 3, 16, 16) if name == "vit" else torch.randint(0, VOCAB, (SAMPLES, LENGTH))
    return model, x


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got - expected).pow(2).mean() / expected.pow(2).mean())


@pytest.mark.parametrize("name", ["bert", "distilbert", "roberta", "vit", "gpt2", "llama"])
def test_every_method_quantizes_transformers_to_packed_int4_groups(name):
    model, x = tiny(name)
    batches = [(b,) for b in x.split(16)]
    with torch.no_grad():
        expected = model(x[:8])[0]
    errors = {}
    for method in ("rtn", "gptq", "awq", "hqq"):
        quant, plan = q.quantize_model(copy.deepcopy(model), q.Quantize(**INT4, method=method), calibration=batches)
        linears = {n: m for n, m in q.quantized_layers(quant).items() if isinstance(m, q.QuantLinear)}
        assert len(linears) >= 9  # GPT-2 fuses q, k and v
        for layer in linears.values():
            outputs, inputs = layer.weight_shape
            assert layer.weight_packed.numel() == outputs * inputs // 2
            assert layer.weight_scale.shape == (outputs, inputs // 16)
        if method in ("gptq", "awq"):  # every Linear is fitted, heads and poolers outside the blocks too
            assert set(plan.rounding) == set(linears)
        elif method == "hqq":
            assert set(plan.rounding) == set(plan.layers)
        with torch.no_grad():
            got = quant(x[:8])[0]
        assert torch.isfinite(got).all()
        errors[method] = relative_error(got, expected)
    assert max(errors.values()) < 0.05, errors  # random weights at int4 (embeddings too): measured 0.002..0.014


def _linear_output_error(method: str, x: torch.Tensor, test: torch.Tensor, **options) -> tuple[float, q.Plan]:
    torch.manual_seed(0)
    layer = nn.Sequential(nn.Linear(x.shape[1], 32))
    with torch.no_grad():
        expected = layer(test)
    cfg = q.Quantize(**{**INT4, **options}, method=method)
    quant, plan = q.quantize_model(layer, cfg, calibration=[(b,) for b in x.split(64)])
    with torch.no_grad():
        return relative_error(quant(test), expected), plan


def test_gptq_beats_rounding_to_nearest_on_correlated_inputs():
    torch.manual_seed(1)
    mixing = torch.randn(8, 64)
    x, test = (torch.randn(n, 8) @ mixing + 0.05 * torch.randn(n, 64) for n in (512, 256))
    x[:, 5] = test[:, 5] = 0  # a dead input: zero row and column in the Hessian
    rtn, _ = _linear_output_error("rtn", x, test)
    gptq, plan = _linear_output_error("gptq", x, test)
    assert gptq < 0.1 * rtn, (gptq, rtn)  # measured 0.03x
    assert plan.rounding["0"]["gptq_error"] < 0.1 * plan.rounding["0"]["rtn_error"]
    assert "quantize: GPTQ on 1 layers, output error" in "\n".join(plan.notes())
    in_order, _ = _linear_output_error("gptq", x, test, gptq_act_order=False)
    assert gptq < in_order < 0.2 * rtn, (gptq, in_order, rtn)  # activation order helps: measured 0.09x


def test_awq_beats_rounding_to_nearest_with_outlier_input_channels():
    torch.manual_seed(2)
    outliers = torch.ones(64)
    outliers[:4] = 30
    x, test = (torch.randn(n, 64) * outliers for n in (512, 256))
    rtn, _ = _linear_output_error("rtn", x, test)
    awq, plan = _linear_output_error("awq", x, test)
    assert awq < 0.7 * rtn, (awq, rtn)  # measured 0.57x
    assert plan.rounding["0"]["alpha"] > 0 and plan.layers["0"]["input_multiplier"]


def test_hqq_lowers_the_weight_error_without_data():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(128, 64))
    with torch.no_grad():
        model[0].weight.copy_(torch.distributions.StudentT(3.0).sample((64, 128)))
    reference = model[0].weight.detach().clone()
    for symmetric in (False, True):
        cfg = dict(INT4, symmetric=symmetric)
        rtn = sk.apply(model, q.Quantize(**cfg), example_inputs=(torch.randn(1, 128),))
        hqq = sk.apply(model, q.Quantize(**cfg, method="hqq"), example_inputs=(torch.randn(1, 128),))
        assert q.sqnr(reference, hqq[0].weight) > q.sqnr(reference, rtn[0].weight) + 0.15  # measured +0.24 / +0.85 dB


def test_smoothquant_w8a8_beats_plain_w8a8_with_activation_outliers():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 16)).eval()
    outliers = torch.ones(32)
    outliers[:3] = 50  # as in LLMs, a few input channels are 50x larger and their weights no larger than the others'
    with torch.no_grad():
        model[0].weight[:, :3] /= 50
    x, test = (torch.randn(n, 32) * outliers for n in (256, 128))
    task = sk.Task("outliers", (x,), (test,), metric="cosine")
    with torch.no_grad():
        expected = model(test)
    w8a8 = dict(weights="int8", activations="int8", calibration_batches=4, batch_size=64)
    plain = sk.apply(model, q.Quantize(**w8a8), data=task)
    smooth = sk.apply(model, q.Quantize(**w8a8, smooth=0.5), data=task)
    assert smooth[0].input_multiplier is not None and plain[0].input_multiplier is None
    with torch.no_grad():
        errors = relative_error(plain(test), expected), relative_error(smooth(test), expected)
    assert errors[1] < 0.05 * errors[0], errors  # measured 5e-4 vs 0.11


def test_awq_checkpoint_reloads_equal(tmp_path):
    model, ids = tiny("llama")
    with torch.no_grad():  # outlier channels into every block's attention and MLP
        for block in model.model.layers:
            block.input_layernorm.weight[:3] = 20
            block.post_attention_layernorm.weight[:3] = 20
    model.save_pretrained(tmp_path / "llama")
    loaded = sk.load_model(f"hf:{tmp_path / 'llama'}")
    mask = torch.ones_like(ids)
    task = sk.Task("tokens", (ids, mask), (ids[:8], mask[:8]), metric="cosine", n_inputs=2)
    quant = sk.apply(loaded, q.Quantize(**INT4, method="awq"), data=task)
    assert any(m.input_multiplier is not None for m in q.quantized_layers(quant).values())
    sk.save_checkpoint(quant, tmp_path / "ckpt")
    again = sk.load_model(str(tmp_path / "ckpt"))
    with torch.no_grad():
        logits = quant(ids[:8], mask[:8])
        assert torch.equal(again(ids[:8], mask[:8]), logits)
        float_copy = q.dequantized_copy(quant)  # the multipliers fold into the float weights
        assert torch.allclose(float_copy(ids[:8], mask[:8]), logits, atol=1e-4)


def test_bad_input_names_the_fix():
    with pytest.raises(UserError, match=r"quantize\.method: hqq needs integer weights \(int2\.\.int8\), not binary"):
        Recipe.from_dict({"steps": [{"quantize": {"weights": "binary", "activations": "none", "method": "hqq"}}]})
    with pytest.raises(UserError, match=r"quantize\.method: gptq rounds weights for weight-only"):
        Recipe.from_dict({"steps": [{"quantize": {"weights": "int4", "method": "gptq"}}]})
    with pytest.raises(UserError, match=r"quantize\.smooth: .*needs activations: int8"):
        Recipe.from_dict({"steps": [{"quantize": {"activations": "none", "smooth": 0.5}}]})
    assert q.Quantize(method="awq", activations="none").needs_data
    assert not q.Quantize(method="hqq", activations="none").needs_data
    x = torch.randn(16, 64)
    with pytest.raises(UserError, match=r"group_size 32 does not divide the input features of 1 \(48\); use a group "
                                        r"size that divides every layer \(2, 4, 8, 16\), or .*exclude: \['1'\]"):
        q.quantize_model(nn.Sequential(nn.Linear(64, 48), nn.Linear(48, 8)), q.Quantize(**dict(INT4, group_size=32)))
    with pytest.raises(UserError, match="too small for GPTQ's Hessian: layer 0 saw 16 rows, needs at least 64"):
        q.quantize_model(nn.Sequential(nn.Linear(64, 8)), q.Quantize(**INT4, method="gptq"), calibration=[(x,)])
    with pytest.raises(UserError, match="method: gptq or awq.*need calibration data"):
        q.quantize_model(nn.Sequential(nn.Linear(64, 8)), q.Quantize(**INT4, method="awq"))
    with pytest.raises(UserError, match="needs training data"):
        sk.apply(nn.Sequential(nn.Linear(64, 8)), q.Quantize(**INT4, method="gptq"), example_inputs=(x,))
    with pytest.raises(UserError, match="method awq fits Linear layers.*use method: rtn or hqq"):
        q.quantize_model(nn.Sequential(nn.Conv2d(3, 8, 3)), q.Quantize(**dict(INT4, group_size=None), method="awq"),
                         calibration=[(torch.randn(2, 3, 8, 8),)])
