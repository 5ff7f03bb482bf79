"""Quantizing real models: accuracy, bytes on disk, onnxruntime integer execution, checkpoints, bad input."""
import numpy as np
import onnx
import pytest
import torch
from torch import nn

import slimkit
import slimkit.quantize as q
from slimkit.errors import UserError
from slimkit.models.storage import state_bytes
from slimkit.recipe import Recipe


@pytest.fixture(scope="module")
def fashion_small(fashion):
    return fashion.subset(train=256, test=500)


@pytest.fixture(scope="module")
def w8a8(fashion_small):
    model = slimkit.load_model("zoo:fashion-cnn")
    cfg = q.Quantize(weights="int8", activations="int8", calibration_batches=4, batch_size=64)
    return slimkit.apply(model, cfg, data=fashion_small)


def top1(logits, labels):
    return float((torch.as_tensor(logits).argmax(1) == labels).float().mean())


@torch.inference_mode()
def accuracy(model, task):
    x, y = task.test
    return top1(model(x), y)


def test_w8a8_keeps_accuracy_and_shrinks_fashion_cnn(w8a8, fashion_small):
    baseline = slimkit.load_model("zoo:fashion-cnn")
    assert accuracy(w8a8, fashion_small) >= accuracy(baseline, fashion_small) - 0.006  # 3 of 500
    ratio = len(state_bytes(w8a8)) / len(state_bytes(baseline))
    assert ratio <= 0.28
    layers = q.quantized_layers(w8a8)
    assert len(layers) == 10 and all(m.weight_q.dtype == torch.int8 for m in layers.values())
    assert all(int(m.weight_q.abs().max()) <= 64 for m in layers.values())  # reduce_range: 7-bit weights


def test_w8a8_runs_integer_kernels_in_onnxruntime(w8a8, fashion_small, tmp_path):
    from slimkit.runtime.onnx import export_onnx
    from slimkit.runtime.onnxruntime import run_session
    import onnxruntime as ort

    path = export_onnx(w8a8, fashion_small.example_inputs(1), tmp_path / "q.onnx")
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert ops.count("QLinearConv") == 9  # every conv; the fc runs as QGemm/QLinearMatMul
    x, y = fashion_small.test
    got = run_session(sess, (x,))
    assert abs(top1(got, y) - accuracy(w8a8, fashion_small)) <= 0.004  # no u8s8 saturation
    with torch.inference_mode():
        assert np.abs(got - w8a8(x).numpy()).max() < 0.2


def test_quantized_checkpoint_round_trips(w8a8, fashion_small, tmp_path):
    slimkit.save_checkpoint(w8a8, tmp_path / "ckpt")
    loaded = slimkit.load_model(str(tmp_path / "ckpt"))
    x = fashion_small.test[0][:64]
    with torch.inference_mode():
        assert torch.equal(loaded(x), w8a8(x))


def test_int4_groupwise_weight_only_packs_two_per_byte():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    reference = [m.weight.detach().clone() for m in (model[0], model[2])]
    cfg = q.Quantize(weights="int4", activations="none", group_size=32, weight_observer="mse")
    quant = slimkit.apply(model, cfg, example_inputs=(torch.randn(1, 256),))
    first = quant[0]
    assert first.weight_packed.numel() == 256 * 128 // 2 and first.weight_scale.shape == (128, 8)
    assert q.sqnr(reference[0], first.weight) > 19
    assert q.sqnr(reference[1], quant[2].weight) > 19


def test_embedding_table_shrinks_with_int8_rows():
    emb = nn.Sequential(nn.Embedding(1000, 64), nn.Linear(64, 8))
    before = len(state_bytes(emb))
    ids = torch.randint(0, 1000, (4, 16))
    with torch.inference_mode():
        expected = emb(ids)
    quant = slimkit.apply(emb, q.Quantize(activations="dynamic"), example_inputs=(ids,))
    assert isinstance(quant[0], q.QuantEmbedding)
    assert len(state_bytes(quant)) < 0.3 * before
    with torch.inference_mode():
        assert q.sqnr(expected, quant(ids)) > 35


def test_bf16_cnn_keeps_norms_fp32(fashion_small):
    model = slimkit.load_model("zoo:fashion-cnn")
    small = fashion_small.subset(test=64)
    before = accuracy(model, small)
    cast = slimkit.apply(model, q.Quantize(weights="bf16", activations="none"), data=small)
    assert cast.stem[0].weight.dtype == torch.bfloat16 and cast.stem[1].weight.dtype == torch.float32
    assert len(state_bytes(cast)) < 0.55 * len(state_bytes(slimkit.load_model("zoo:fashion-cnn")))
    assert accuracy(cast, small) >= before - 1 / 64


def test_fp16_transformer_block_keeps_layernorm_fp32():
    layer = nn.TransformerEncoderLayer(64, 4, 128, dropout=0.0, batch_first=True).eval()
    x = torch.randn(2, 16, 64)
    with torch.inference_mode():
        expected = layer(x)
    cast = slimkit.apply(layer, q.Quantize(weights="fp16", activations="none"), example_inputs=(x,))
    assert cast.linear1.weight.dtype == torch.float16 and cast.norm1.weight.dtype == torch.float32
    with torch.inference_mode():
        out = cast(x)
    assert out.dtype == torch.float32 and q.sqnr(expected, out) > 40


def test_bad_input_messages(fashion_small):
    with pytest.raises(UserError, match=r"steps\[0\]\.quantize\.weights"):
        Recipe.from_dict({"steps": [{"quantize": {"weights": "int16"}}]})
    with pytest.raises(UserError, match="activations: dynamic activations need int8 weights"):
        Recipe.from_dict({"steps": [{"quantize": {"weights": "int4", "activations": "dynamic"}}]})
    model = slimkit.load_model("zoo:fashion-cnn")
    with pytest.raises(UserError, match="no batches"):
        q.quantize_model(model, q.Quantize(), calibration=[])


def test_layers_without_kernel_stay_float_and_are_listed():
    model = nn.Sequential(nn.Conv1d(4, 8, 3), nn.Flatten(), nn.Linear(8 * 14, 4))
    x = torch.randn(8, 4, 16)
    cfg = q.Quantize(activations="int8", calibration_batches=1)
    model, plan = q.quantize_model(model, cfg, calibration=[(x,)])
    assert isinstance(model[0], nn.Conv1d) and isinstance(model[2], q.QuantLinear)
    assert "no quantized kernel for Conv1d" in plan.skipped["0"]
    assert any("0 stays float" in line for line in plan.notes())


def test_dynamic_int8_onnx_for_linear_models(tmp_path):
    import onnxruntime as ort
    from slimkit.runtime.onnx import export_onnx
    from slimkit.quantize.export import export_dynamic_int8

    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(2000, 128), nn.Linear(128, 512), nn.GELU(), nn.Linear(512, 128)).eval()
    ids = torch.randint(0, 2000, (8, 32))
    with torch.inference_mode():
        expected = model(ids)
    float_size = export_onnx(model, (ids[:1],), tmp_path / "float.onnx").stat().st_size
    quant = slimkit.apply(model, q.Quantize(activations="dynamic"), example_inputs=(ids[:1],))
    path = export_dynamic_int8(quant, (ids[:1],), tmp_path / "dyn.onnx")
    assert path.stat().st_size < 0.3 * float_size
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "DynamicQuantizeLinear" in ops and "MatMulInteger" in ops
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: ids.numpy()})[0])
    assert torch.nn.functional.cosine_similarity(got, expected, dim=-1).mean() > 0.995
