"""The runtime layer: every available runtime matches PyTorch within its precision's tolerance, artifacts reload,
slimkit's INT8 model runs in OpenVINO as INT8, and bad input (unknown, missing, unconvertible) is a clear error."""
import copy
import json
import sys

import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

import slimkit
import slimkit.quantize as q
from slimkit.cli import main as cli
from slimkit.compile.backends import candidate_predictors
from slimkit.errors import MissingExtra, UserError
from slimkit.measure.latency import measure_latency
from slimkit.runtime import RUNTIMES, TOLERANCES, get_runtime, verify

ARTIFACTS = {"eager": ["model.safetensors", "history.json"], "onnxruntime": ["model.onnx"],
             "openvino": ["model.xml", "model.bin"]}


@pytest.fixture(scope="module", params=["digits-cnn", "fashion-cnn"])
def case(request, digits, fashion):
    """(model, batch-1 example inputs, 64 test images): trained digits-cnn, or the shipped fashion-cnn."""
    if request.param == "digits-cnn":
        model, task = copy.deepcopy(request.getfixturevalue("trained_digits_cnn")), digits
    else:
        model, task = slimkit.load_model("zoo:fashion-cnn"), fashion
    return request.param, model.eval(), task.example_inputs(1), (task.test[0][:64],)


def test_openvino_is_installed_with_the_test_extras():
    assert RUNTIMES["openvino"].available() is None and {"fp32", "int8"} <= set(RUNTIMES["openvino"].precisions_here())


def test_every_available_runtime_matches_pytorch_within_its_precision_tolerance(case):
    name, model, example, inputs = case
    checked = {}
    for runtime in RUNTIMES.values():
        if runtime.available() or (runtime.name == "compile" and name != "digits-cnn"):  # inductor: ~20 s a model
            continue
        for precision in (p for p in runtime.precisions_here() if p != "int8"):
            shaped = inputs if runtime.static_shapes else example  # a static-shape program runs the batch it was made for
            predictor = runtime.prepare(model, shaped, threads=1, precision=precision)
            assert (predictor.runtime, predictor.precision) == (runtime.name, precision)
            checked[f"{runtime.name}/{precision}"] = verify(predictor, model, inputs, TOLERANCES[precision])
    assert {"eager/fp32", "onnxruntime/fp32", "onnxruntime/fp16", "openvino/fp32", "executorch/fp32"} <= set(checked)
    assert all(diff < 1e-4 for key, diff in checked.items() if key.endswith("/fp32")), checked


@pytest.mark.parametrize("runtime", sorted(ARTIFACTS))
def test_saved_artifacts_reload_and_match_pytorch(case, runtime, tmp_path):
    _, model, example, inputs = case
    files = RUNTIMES[runtime].save(model, example, tmp_path / "deploy")
    assert [f.name for f in files] == ARTIFACTS[runtime] and all(f.stat().st_size > 0 for f in files)
    reloaded = RUNTIMES[runtime].prepare(files[0], example, threads=1)
    assert verify(reloaded, model, inputs, TOLERANCES["fp32"]) < 1e-4


def test_slimkit_int8_model_runs_as_int8_in_openvino_with_onnxruntime_top1(digits, trained_digits_cnn, tmp_path):
    cfg = q.Quantize(weights="int8", activations="int8", calibration_batches=4, batch_size=64)
    quantized = slimkit.apply(copy.deepcopy(trained_digits_cnn), cfg, data=digits)
    example, (x, y) = digits.example_inputs(1), digits.test
    ov = RUNTIMES["openvino"].prepare(quantized, example, threads=1)
    ort = RUNTIMES["onnxruntime"].prepare(quantized, example, threads=1)
    assert ov.precision == ort.precision == "int8"
    layers = {(op.get_rt_info()["layerType"].astype(str), op.get_rt_info()["runtimePrecision"].astype(str))
              for op in ov.handle.get_runtime_model().get_ops()}
    assert ("Convolution", "u8") in layers  # OpenVINO's integer kernels, not a float fallback
    top1 = {name: (p(x).argmax(1) == y).float().mean().item() for name, p in (("openvino", ov), ("onnxruntime", ort))}
    assert top1["onnxruntime"] > 0.9 and abs(top1["openvino"] - top1["onnxruntime"]) <= 0.01, top1
    assert verify(ov, quantized, (x,), TOLERANCES["int8"]) > 0  # integer rounding differs from the eager simulation
    files = RUNTIMES["openvino"].save(quantized, example, tmp_path)
    reloaded = RUNTIMES["openvino"].prepare(files[0], example, threads=1)
    assert reloaded.precision == "int8" and torch.equal(reloaded(x), ov(x))


def test_precisions_a_runtime_or_this_cpu_lacks_are_user_errors(trained_digits_cnn, digits):
    example, openvino = digits.example_inputs(1), RUNTIMES["openvino"]
    with pytest.raises(UserError, match="apply the `quantize` step first"):
        openvino.prepare(trained_digits_cnn, example, precision="int8")
    with pytest.raises(UserError, match="no precision 'bf16'; it runs fp32, fp16, int8"):
        RUNTIMES["onnxruntime"].prepare(trained_digits_cnn, example, precision="bf16")
    for precision in {"fp16", "bf16"} - set(openvino.precisions_here()):  # never a silent FP32 run instead
        with pytest.raises(UserError, match=f"this CPU has no {precision}"):
            openvino.prepare(trained_digits_cnn, example, precision=precision)


def test_export_auto_considers_openvino(trained_digits_cnn, digits, tmp_path):
    cfg = slimkit.Export(backend="auto", candidates=("eager", "openvino"), repeats=3)
    slimkit.apply(copy.deepcopy(trained_digits_cnn), cfg, example_inputs=digits.example_inputs(1), out_dir=tmp_path)
    record = json.loads((tmp_path / "backend.json").read_text())
    openvino = {f"openvino/{p}" for p in RUNTIMES["openvino"].precisions_here() if p != "int8"}
    assert set(record["candidates"]) == {"eager/fp32"} | openvino and record["chosen"] in record["candidates"]
    assert record["candidates"]["openvino/fp32"]["kept"] and record["candidates"]["openvino/fp32"]["max_abs_diff"] < 1e-4


def test_unknown_runtime_is_a_user_error_listing_the_known_ones():
    with pytest.raises(UserError, match="Unknown runtime 'tensorrtt'; choose from eager, compile, onnxruntime, openvino"):
        get_runtime("tensorrtt")
    with pytest.raises(UserError, match="choose from eager, compile, onnxruntime, openvino"):
        measure_latency(nn.Linear(2, 2), (torch.randn(1, 2),), ("openvinoo",))


def test_runtime_not_installed_names_its_pip_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now fails, as when it is not installed
    extra = "pip install 'slimkit[openvino]'"
    assert extra in RUNTIMES["openvino"].available()
    with pytest.raises(MissingExtra, match=r"pip install 'slimkit\[openvino\]'"):
        RUNTIMES["openvino"].prepare(nn.Linear(2, 2), (torch.randn(1, 2),))
    assert cli(["bench", "--model", "zoo:digits-cnn", "--input-shape", "1,1,8,8", "--backends", "eager,openvino",
                "--batch", "1", "--repeats", "3"]) == 2
    assert extra in capsys.readouterr().err


def test_cli_bench_times_openvino_beside_eager_and_onnxruntime(capsys):
    assert cli(["bench", "--model", "zoo:digits-cnn", "--input-shape", "1,1,8,8", "--backends", "eager,onnxruntime,openvino",
                "--batch", "1", "--repeats", "3", "--threads", "1", "--format", "json"]) == 0
    latency = json.loads(capsys.readouterr().out)["latency_ms"]
    assert set(latency) == {"eager/bs1", "onnxruntime/bs1", "openvino/bs1"} and latency["openvino/bs1"]["median"] > 0


class Eigen(nn.Module):
    def forward(self, x):
        return torch.linalg.eigvals(x @ x.T).real


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_unexportable_model_is_reported_with_the_op(runtime):
    model = nn.Sequential(nn.Linear(4, 4), Eigen()).eval()
    with pytest.raises(UserError, match=r"operator linalg_eig \(called in module 1 \(Eigen\)\)"):
        RUNTIMES[runtime].prepare(model, (torch.randn(4, 4),))


def test_graph_a_runtime_cannot_take_is_reported_with_the_op_and_left_out(tmp_path):
    path = tmp_path / "custom.onnx"
    graph = helper.make_graph([helper.make_node("NoSuchOp", ["x"], ["y"], domain="com.example")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.example", 1)]),
              str(path))
    for runtime in ("onnxruntime", "openvino"):
        with pytest.raises(UserError, match="NoSuchOp"):
            RUNTIMES[runtime].prepare(path, ())
    pairs = [("eager", "fp32"), ("onnxruntime", "fp32"), ("openvino", "fp32")]
    built, skipped = candidate_predictors(nn.Identity(), pairs, path, (torch.randn(1, 4),), threads=1)
    assert set(built) == {"eager/fp32"} and set(skipped) == {"onnxruntime/fp32", "openvino/fp32"}
    assert all("NoSuchOp" in reason for reason in skipped.values()), skipped


def _fake_quantize_ops(predictor) -> int:
    return sum(op.get_rt_info()["layerType"].astype(str) == "FakeQuantize"
               for op in predictor.handle.get_runtime_model().get_ordered_ops())


def test_output_qdq_false_quantizes_inputs_only_so_openvino_fuses_more(fashion, tmp_path):
    """NNCF's placement: no requantized outputs, so OpenVINO runs fewer FakeQuantize ops; eager and reload agree."""
    example, images = fashion.example_inputs(1), fashion.test[0][:64]
    models = {flag: slimkit.apply(slimkit.load_model("zoo:fashion-cnn"), q.Quantize(output_qdq=flag, calibration_batches=2),
                                  data=fashion) for flag in (True, False)}
    predictors = {flag: RUNTIMES["openvino"].prepare(m, example) for flag, m in models.items()}
    assert _fake_quantize_ops(predictors[False]) < _fake_quantize_ops(predictors[True])
    for flag, model in models.items():
        assert verify(predictors[flag], model, (images,)) <= TOLERANCES["int8"]
    slimkit.save_checkpoint(models[False], tmp_path / "ckpt")
    reloaded = slimkit.load_model(str(tmp_path / "ckpt")).eval()
    assert not any(getattr(m, "quantize_output", True) for m in reloaded.modules() if hasattr(m, "weight_q"))
    with torch.inference_mode():
        assert torch.equal(reloaded(images), models[False].eval()(images))
        assert not torch.equal(models[True](images), models[False](images))


def test_residual_adds_read_the_shared_quantized_tensor_so_openvino_fuses_its_quantizer(fashion, tmp_path):
    """NNCF's placement of residual adds: the stem's output, quantized for blocks.0.conv1, reaches blocks.0's add
    through the same QuantizeLinear -> DequantizeLinear; OpenVINO then runs one FakeQuantize fewer, within tolerance."""
    import openvino

    from slimkit.runtime.onnx import export_onnx
    from slimkit.runtime.openvino import share_quantizers

    model = slimkit.apply(slimkit.load_model("zoo:fashion-cnn"), q.Quantize(output_qdq=False, calibration_batches=2), data=fashion)
    example, images = fashion.example_inputs(1), fashion.test[0][:64]
    raw = export_onnx(model, example, tmp_path / "model.onnx")
    shared = share_quantizers(raw, tmp_path / "shared.onnx")
    producers = {o: n.op_type for n in onnx.load(str(shared)).graph.node for o in n.output}
    adds = [n for n in onnx.load(str(shared)).graph.node if n.op_type == "Add"]
    assert shared != raw and sum(producers.get(i) == "DequantizeLinear" for n in adds for i in n.input) == 1
    onnx.checker.check_model(str(shared))
    unshared = openvino.Core().compile_model(str(raw), "CPU")
    predictor = RUNTIMES["openvino"].prepare(raw, example)  # reads the ONNX file through share_quantizers
    assert _fake_quantize_ops(predictor) == _fake_quantize_ops(type(predictor)(None, "", "", unshared)) - 1
    assert verify(predictor, model, (images,)) <= TOLERANCES["int8"]
    float_onnx = export_onnx(nn.Sequential(nn.Conv2d(1, 4, 3)), (torch.randn(1, 1, 8, 8),), tmp_path / "float.onnx")
    assert share_quantizers(float_onnx, tmp_path / "unused.onnx") == float_onnx and not (tmp_path / "unused.onnx").exists()


def test_latency_of_a_static_shape_runtime_is_measured_at_every_batch_size(trained_digits_cnn):
    pytest.importorskip("executorch")
    timings = measure_latency(trained_digits_cnn, (torch.randn(1, 1, 8, 8),), ("executorch",), batch_sizes=(1, 4), repeats=3)
    assert set(timings) == {"executorch/bs1", "executorch/bs4"} and all(t["median"] > 0 for t in timings.values())
