"""deploy/: `export` writes the chosen runtime's artifact plus deploy.json; `slimkit.load_deployed` runs it again.
`backend: auto` goes over every available runtime x precision, verified on real inputs and timed side by side."""
import copy
import json

import pytest
import torch
from torch import nn

import slimkit
from slimkit.errors import UserError
from slimkit.runtime import RUNTIMES, Predictor, Runtime

pytest.importorskip("onnxruntime")


def test_default_export_deploys_onnxruntime_and_reloads(trained_digits_cnn, digits, tmp_path):
    model = copy.deepcopy(trained_digits_cnn).eval()
    slimkit.apply(model, slimkit.Export(batch_sizes=(1, 4), repeats=3), data=digits, out_dir=tmp_path)
    record = json.loads((tmp_path / "deploy" / "deploy.json").read_text())
    assert (record["runtime"], record["precision"], record["files"]) == ("onnxruntime", "fp32", ["model.onnx"])
    assert record["inputs"] == [{"name": "x", "shape": [1, 1, 8, 8], "dtype": "float32"}]
    assert set(record["latency_ms"]) == {"bs1", "bs4"} and all(t["median"] > 0 for t in record["latency_ms"].values())
    assert record["max_abs_diff"] <= record["tolerance"] == 1e-4 and record["slimkit_version"] == slimkit.__version__
    deployed = slimkit.load_deployed(tmp_path / "deploy")
    x = digits.example_inputs(16)[0]
    with torch.inference_mode():
        assert (deployed(x) - model(x)).abs().max() < 1e-4  # any batch: the ONNX graph has a dynamic batch
        assert torch.equal(deployed(x=x), deployed(x)) and torch.equal(deployed({"x": x}), deployed(x))


def test_auto_over_runtime_x_precision_deploys_the_fastest_quantized_candidate(trained_digits_cnn, digits, tmp_path):
    recipe = slimkit.Recipe.from_dict({"version": 1, "steps": [
        {"quantize": {"weights": "int8", "activations": "int8", "calibration_batches": 2}},
        {"export": {"backend": "auto", "candidates": ["eager", "onnxruntime", "openvino"], "batch_sizes": [1, 8], "repeats": 3}}]})
    slimkit.compress(copy.deepcopy(trained_digits_cnn), recipe, data=digits, out_dir=tmp_path / "run", backends=())
    run = tmp_path / "run"
    choice = json.loads((run / "backend.json").read_text())
    table = choice["candidates"]
    assert {"eager/int8", "onnxruntime/int8"} <= set(table)  # a quantized model: int8 candidates only
    assert not any(name.endswith(("/fp32", "/fp16", "/bf16")) for name in table)
    timed = {n: r for n, r in table.items() if r["kept"]}
    geo = {n: (r["latency_ms"]["bs1"]["median"] / min(t["latency_ms"]["bs1"]["median"] for t in timed.values())
               * r["latency_ms"]["bs8"]["median"] / min(t["latency_ms"]["bs8"]["median"] for t in timed.values())) for n, r in timed.items()}
    assert choice["chosen"] == min(geo, key=geo.get)
    for row in timed.values():
        assert row["max_abs_diff"] <= choice["tolerances"]["int8"]
    record = json.loads((run / "deploy" / "deploy.json").read_text())
    assert f"{record['runtime']}/{record['precision']}" == choice["chosen"]
    assert record["latency_ms"] == table[choice["chosen"]]["latency_ms"]
    reference = slimkit.load_model(str(run / "checkpoint")).eval()
    deployed = slimkit.load_deployed(run / "deploy")
    x = digits.example_inputs(8)[0]
    with torch.inference_mode():
        assert (deployed(x) - reference(x)).abs().max() <= choice["tolerances"]["int8"]
    assert json.loads((run / "report.json").read_text())["artifacts"]["deploy"] == "deploy/deploy.json"


class _Refuses(Runtime):
    """A runtime that cannot take any model, as a runtime refusing an op does."""

    name = "refuses"

    def prepare(self, source, example_inputs, **options) -> Predictor:
        raise UserError("refuses cannot convert the model: operation Erf is not supported")

    def save(self, source, example_inputs, folder, **options):
        raise AssertionError("never saved")


def test_auto_leaves_out_a_runtime_that_cannot_take_the_model_naming_the_op(trained_digits_cnn, digits, tmp_path, monkeypatch):
    monkeypatch.setitem(RUNTIMES, "refuses", _Refuses())
    cfg = slimkit.Export(backend="auto", candidates=("eager", "refuses"), precisions=("fp32",), repeats=3)
    slimkit.apply(copy.deepcopy(trained_digits_cnn), cfg, data=digits, out_dir=tmp_path)
    table = json.loads((tmp_path / "backend.json").read_text())["candidates"]
    assert table["refuses/fp32"] == {"kept": False, "reason": "refuses cannot convert the model: operation Erf is not supported"}
    assert json.loads((tmp_path / "deploy" / "deploy.json").read_text())["runtime"] == "eager"


def test_auto_with_no_candidate_left_is_a_user_error(trained_digits_cnn, digits, tmp_path, monkeypatch):
    monkeypatch.setitem(RUNTIMES, "refuses", _Refuses())
    cfg = slimkit.Export(backend="auto", candidates=("refuses",), precisions=("fp32",), repeats=3)
    with pytest.raises(UserError, match="no runtime that runs this model.*operation Erf"):
        slimkit.apply(copy.deepcopy(trained_digits_cnn), cfg, data=digits, out_dir=tmp_path)


def test_eager_deploy_reloads_the_checkpoint(trained_digits_cnn, digits, tmp_path):
    model = copy.deepcopy(trained_digits_cnn).eval()
    slimkit.apply(model, slimkit.Export(backend="eager", repeats=3), data=digits, out_dir=tmp_path)
    deployed = slimkit.load_deployed(tmp_path / "deploy")
    assert sorted(json.loads((tmp_path / "deploy" / "deploy.json").read_text())["files"]) == ["history.json", "model.safetensors"]
    x = digits.example_inputs(4)[0]
    with torch.inference_mode():
        assert torch.allclose(deployed(x), model(x), atol=1e-6)


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(50, 8)

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.unsqueeze(-1).float()
        return (self.embed(input_ids) * mask).sum(1) / mask.sum(1)


def test_text_model_deploys_with_named_inputs_fed_from_a_tokenizer_dict(tmp_path):
    model = TwoInputs().eval()
    ids, mask = torch.randint(0, 50, (1, 6)), torch.ones(1, 6, dtype=torch.long)
    slimkit.apply(model, slimkit.Export(repeats=3), example_inputs=(ids, mask), out_dir=tmp_path)
    record = json.loads((tmp_path / "deploy" / "deploy.json").read_text())
    assert [i["name"] for i in record["inputs"]] == ["input_ids", "attention_mask"]
    deployed = slimkit.load_deployed(tmp_path / "deploy")
    batch = {"input_ids": torch.randint(0, 50, (3, 6)), "attention_mask": torch.ones(3, 6, dtype=torch.long),
             "token_type_ids": torch.zeros(3, 6, dtype=torch.long)}  # a tokenizer's extra output is ignored
    assert torch.allclose(deployed(**batch), model(batch["input_ids"], batch["attention_mask"]), atol=1e-5)
    with pytest.raises(UserError, match=r"needs input\(s\) \['attention_mask'\]"):
        deployed(input_ids=batch["input_ids"])


@pytest.mark.parametrize("change, message", [
    (None, "no deploy.json in it"),
    ({"format": 2}, "not a format-1 deploy.json"),
    ({"files": ["../../etc/passwd"]}, "is missing from"),
    ({"inputs": [{"name": "x", "shape": [1, -1], "dtype": "float32"}]}, "positive integer shapes"),
    ({"runtime": "tensorflow"}, "Unknown runtime 'tensorflow'"),
])
def test_malformed_deploy_folder_is_a_user_error(trained_digits_cnn, digits, tmp_path, change, message):
    slimkit.apply(copy.deepcopy(trained_digits_cnn), slimkit.Export(repeats=3), data=digits, out_dir=tmp_path)
    path = tmp_path / "deploy" / "deploy.json"
    if change is None:
        path.unlink()
    else:
        path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(UserError, match=message):
        slimkit.load_deployed(tmp_path / "deploy")


def _tiny_sentence_embedder():
    transformers = pytest.importorskip("transformers")
    from slimkit.models.hf import SentenceEmbedder

    torch.manual_seed(0)
    config = transformers.BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                                     vocab_size=100, max_position_embeddings=64, attn_implementation="eager")
    return SentenceEmbedder(transformers.BertModel(config).eval())


def _padded(lengths: list[int], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and an attention mask for rows of ``lengths`` real tokens, right-padded to ``width``."""
    mask = (torch.arange(width) < torch.tensor(lengths)[:, None]).long()
    return torch.randint(1, 50, (len(lengths), width)) * mask, mask


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_padding_is_trimmed_for_a_sentence_embedder_and_outputs_do_not_change(tmp_path, runtime, monkeypatch):
    from slimkit.runtime import padding

    onnx = pytest.importorskip("onnx")
    model = _tiny_sentence_embedder()
    cfg = slimkit.Export(backend=runtime, batch_sizes=(1, 4), repeats=3)
    slimkit.apply(model, cfg, example_inputs=_padded([5], 32), out_dir=tmp_path)
    record = json.loads((tmp_path / "deploy" / "deploy.json").read_text())
    assert record["trim_padding"] == "attention_mask"
    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    assert all(i.type.tensor_type.shape.dim[1].dim_param for i in graph.input)  # a symbolic token dimension
    deployed = slimkit.load_deployed(tmp_path / "deploy")
    seen, trim = [], padding.trim
    monkeypatch.setattr(padding, "trim", lambda inputs, position: seen.append(trim(inputs, position)[0].shape) or trim(inputs, position))
    ids, mask = _padded([5, 9, 3, 7], 32)
    with torch.inference_mode():
        assert torch.allclose(deployed(input_ids=ids, attention_mask=mask), model(ids, mask), atol=1e-5)
    assert seen == [(4, 9)]  # the runtime ran 9 of the 32 columns


def test_trim_cuts_after_the_longest_row_and_keeps_two_columns():
    from slimkit.runtime.padding import trim

    ids, mask = _padded([5, 9, 3], 32)
    assert [t.shape for t in trim((ids, mask), 1)] == [(3, 9), (3, 9)]
    assert [t.shape for t in trim(_padded([1], 8), 1)] == [(1, 2), (1, 2)]
    full = _padded([8, 2], 8)
    assert trim(full, 1) is full


class PerToken(TwoInputs):
    def forward(self, input_ids, attention_mask):
        return self.embed(input_ids) * attention_mask.unsqueeze(-1)


def test_a_model_whose_output_has_a_token_axis_is_not_trimmed(tmp_path):
    model = PerToken().eval()
    slimkit.apply(model, slimkit.Export(repeats=3), example_inputs=_padded([3], 8), out_dir=tmp_path)
    assert json.loads((tmp_path / "deploy" / "deploy.json").read_text())["trim_padding"] is None


def test_weight_only_int8_deploys_to_openvino_as_int8_weights_and_reloads(tmp_path):
    """activations: none keeps int8 weights in the graph: the OpenVINO IR holds them (a quarter of the FP32 bytes)
    and reloads as an int8 artifact."""
    pytest.importorskip("openvino")
    model = _tiny_sentence_embedder()
    example = _padded([5, 7], 32)
    quantized = slimkit.apply(model, slimkit.Quantize(weights="int8", activations="none"), example_inputs=example)
    slimkit.apply(quantized, slimkit.Export(backend="openvino", repeats=3), example_inputs=example, out_dir=tmp_path)
    deployed = slimkit.load_deployed(tmp_path / "deploy")
    assert deployed.precision == "int8" and 'element_type="i8"' in (tmp_path / "deploy" / "model.xml").read_text()
    ids, mask = _padded([5, 9, 3, 7], 32)
    with torch.inference_mode():
        assert (deployed(ids, mask) - quantized(ids, mask)).abs().max() < 1e-4
