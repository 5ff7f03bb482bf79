"""Models that return what real models return (transformers' ModelOutput with key/value caches, dicts, tuples) go
through fuse and ONNX export: outputs match PyTorch, ONNX graphs keep real input and output names, and a failed
export leaves nothing behind."""
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import slimkit
from slimkit.errors import UserError
from slimkit.models.outputs import TensorOutput, cache_off, output_tensor, pick_output
from slimkit.runtime import RUNTIMES
from slimkit.runtime.onnx import export_onnx

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore:fuse")]


class DictNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.head = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 3)

    def forward(self, image):
        features = torch.relu(self.bn(self.conv(image))).mean((2, 3))
        return {"features": features, "logits": self.head(features)}


class TupleNet(DictNet):
    def forward(self, image):
        out = super().forward(image)
        return out["logits"], out["features"]


class ToyCache:
    """A key/value cache that no exporter can trace."""

    def __init__(self, keys):
        if torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting():
            raise RuntimeError("ToyCache cannot be traced")
        self.keys = keys


class CachingNet(nn.Module):
    """Its config turns the cache on, but its forward takes no ``use_cache``: the cache stays."""

    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(use_cache=True)
        self.proj = nn.Linear(4, 4)

    def forward(self, x):
        y = self.proj(x)
        return {"logits": y, "cache": ToyCache(y)}


def transformers_model(name):
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    small = dict(vocab_size=100, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64)
    if name == "gpt2":
        config = transformers.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                         bos_token_id=0, eos_token_id=0)
        return transformers.GPT2LMHeadModel(config).eval()
    if name == "llama":
        config = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_key_value_heads=2, **small)
        return transformers.LlamaForCausalLM(config).eval()
    config = transformers.BertConfig(hidden_size=32, intermediate_size=64, **small)
    return (transformers.BertModel if name == "bert" else transformers.BertForSequenceClassification)(config).eval()


def test_pick_output_prefers_logits_then_last_hidden_state_then_the_first_tensor():
    a, b, c = torch.zeros(1), torch.ones(1), torch.full((1,), 2.0)
    assert pick_output({"pooler_output": a, "last_hidden_state": b, "logits": c}) == ("logits", c)
    assert pick_output({"cache": object(), "pooler_output": a, "last_hidden_state": b})[0] == "last_hidden_state"
    assert pick_output({"cache": None, "hidden": a}) == ("hidden", a)
    assert pick_output({"logits": c, "pooler_output": a}, "pooler_output") == ("pooler_output", a)
    assert pick_output((object(), b, c)) == ("output", b) and pick_output(a) == ("output", a)
    with pytest.raises(UserError, match=r"no tensor output named 'scores'; it returns \['logits'\]"):
        pick_output({"logits": c}, "scores")
    with pytest.raises(UserError, match="without a tensor"):
        output_tensor((None, "text"))


@pytest.mark.parametrize("name, output", [("bert", "last_hidden_state"), ("bert_classifier", "logits"),
                                          ("gpt2", "logits"), ("llama", "logits")])
def test_transformers_models_fuse_and_export_with_real_names(tmp_path, name, output):
    model = transformers_model(name)
    ids = torch.randint(0, 100, (3, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = output_tensor(model(ids))
    fused = slimkit.apply(model, slimkit.Fuse(), example_inputs=(ids[:1],))
    with torch.no_grad():
        assert (output_tensor(fused(ids)) - expected).abs().max().item() < 1e-5
    path = export_onnx(model, (ids[:1],), tmp_path / "model.onnx")
    predictor = RUNTIMES["onnxruntime"].prepare(path, (ids,))
    session = predictor.handle
    assert [i.name for i in session.get_inputs()] == ["input_ids"]
    assert [o.name for o in session.get_outputs()] == [output]
    assert (predictor(ids) - expected).abs().max().item() < 1e-4  # three different rows: the batch is symbolic
    assert model.config.use_cache and cache_off(model) == {"use_cache": False}  # exported without, config unchanged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


@pytest.mark.parametrize("net, output", [(DictNet, "logits"), (TupleNet, "output")])
def test_dict_and_tuple_models_fuse_export_and_run_on_every_runtime_path(tmp_path, net, output):
    model = net().eval()
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = output_tensor(model(x))
    fused = slimkit.apply(model, slimkit.Fuse(), example_inputs=(x[:1],))
    with torch.no_grad():
        assert (output_tensor(fused(x)) - expected).abs().max().item() < 1e-5
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    path = export_onnx(model, (x[:1],), tmp_path / "model.onnx")
    onnx_run = RUNTIMES["onnxruntime"].prepare(path, (x,))
    assert [o.name for o in onnx_run.handle.get_outputs()] == [output]
    assert [i.name for i in onnx_run.handle.get_inputs()] == ["image"]
    eager = RUNTIMES["eager"].prepare(model, (x[:1],))
    for predictor in (onnx_run, eager):
        assert (predictor(x) - expected).abs().max().item() < 1e-5


def test_tensor_output_picks_a_named_output_and_leaves_the_model_alone():
    model = DictNet().eval()
    x = torch.randn(2, 1, 8, 8)
    wrapped = TensorOutput(model, "features")
    with torch.no_grad():
        assert torch.equal(wrapped(x), model(x)["features"])
    assert wrapped.model is model


def test_a_cache_that_cannot_be_exported_is_named_and_nothing_is_written(tmp_path):
    model, x = CachingNet().eval(), torch.randn(1, 4)
    with pytest.raises(UserError, match=r"CachingNet returns a key/value cache, cache \(ToyCache\), which the ONNX "
                                        r"exporters cannot take: give it a config with use_cache=False"):
        export_onnx(model, (x,), tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []
    out = tmp_path / "run"
    with pytest.raises(UserError, match="key/value cache"):
        slimkit.apply(model, slimkit.Export(), example_inputs=(x,), out_dir=out)
    assert list(out.iterdir()) == []
