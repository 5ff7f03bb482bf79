"""Weight-only 1..4-bit models export to ONNX on onnxruntime's low-bit kernels (com.microsoft MatMulNBits and
GatherBlockQuantized) holding slimkit's own integers: small files that onnxruntime and OpenVINO run as eager does."""
import collections
import copy
import json
import warnings

import pytest
import torch
from torch import nn

import slimkit
from slimkit.models.hf import CausalLM, TextClassifier
from slimkit.quantize import QuantEmbedding, QuantLinear, Quantize, export_nbits, quantize_model, quantized_layers
from slimkit.runtime.onnx import export_onnx
from slimkit.runtime.onnxruntime import run_session, session
from test_hf_tasks import tiny_models, tokens

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("one_thread")


def _quantized(model: nn.Module, **options) -> nn.Module:
    return quantize_model(copy.deepcopy(model).eval(), Quantize(activations="none", **options))[0]


def _ops(graph) -> collections.Counter:
    return collections.Counter(node.op_type for node in graph.node)


def _onnxruntime(path, *inputs) -> torch.Tensor:
    return torch.from_numpy(run_session(session(path, 1), inputs))


def _relative(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got - expected).abs().max() / expected.abs().max())


def _float_copies(graph, model: nn.Module) -> list[str]:
    """The quantized layers of ``model`` whose dequantized weight (or its transpose) is a float constant of it."""
    floats = [torch.from_numpy(onnx.numpy_helper.to_array(i).copy()) for i in graph.initializer
              if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 2]
    return [name for name, layer in quantized_layers(model).items()
            if any(w.shape == d.shape and torch.equal(w, d) for w in floats
                   for d in (layer.dequantized(), layer.dequantized().T))]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    models = tiny_models()
    return {"gpt2": CausalLM(models["gpt2"]), "llama": CausalLM(models["llama"]),
            "bert": TextClassifier(models["bert-classifier"])}


@pytest.mark.parametrize("name, group_size, symmetric", [("gpt2", 16, False), ("llama", 32, True), ("bert", 32, False)])
def test_every_int4_layer_of_a_transformer_runs_on_the_low_bit_kernels(tiny, tmp_path, name, group_size, symmetric):
    model = _quantized(tiny[name], weights="int4", group_size=group_size, symmetric=symmetric)
    ids, mask = tokens(batch=1), torch.ones(1, 12, dtype=torch.long)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", "export: low-bit")  # every quantized layer is converted
        path = export_nbits(model, (ids, mask), tmp_path / "model.onnx", dynamic_tokens=True)
    graph = onnx.load(str(path)).graph
    layers = quantized_layers(model)
    linears = [n for n, m in layers.items() if isinstance(m, QuantLinear)]
    embeddings = [n for n, m in layers.items() if isinstance(m, QuantEmbedding)]
    assert _ops(graph)["MatMulNBits"] == len(linears) and _ops(graph)["GatherBlockQuantized"] == len(embeddings) >= 1
    assert {f"{n}.weight_packed" for n in layers} <= {i.name for i in graph.initializer}
    blocks = {a.i for n in graph.node if n.op_type == "MatMulNBits" for a in n.attribute if a.name == "block_size"}
    assert blocks == {group_size}
    assert not _float_copies(graph, model)
    ids, mask = tokens(batch=3, length=7, seed=2), torch.ones(3, 7, dtype=torch.long)
    mask[1, -2:] = 0
    with torch.inference_mode():
        expected = model(ids, mask)
    assert _relative(_onnxruntime(path, ids, mask), expected) < 1e-4
    ov = pytest.importorskip("openvino")
    compiled = ov.Core().compile_model(ov.Core().read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert _relative(torch.from_numpy(compiled([ids.numpy(), mask.numpy()])[0]), expected) < 1e-4


def _stack(width: int, depth: int) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(*[nn.Linear(width, width) for _ in range(depth)]).eval()


def _quantize_each(model: nn.Module, formats: list[dict]) -> nn.Module:
    """Layer ``i`` of ``model`` quantized weight-only with ``formats[i]``."""
    for i, options in enumerate(formats):
        others = tuple(str(j) for j in range(len(formats)) if j != i)
        model = quantize_model(model, Quantize(activations="none", exclude=others, **options))[0]
    return model


def test_every_low_bit_format_runs_on_the_kernels_in_under_a_third_of_the_fp32_file(tmp_path):
    model, x = _stack(256, 4), torch.randn(2, 256)
    quantized = _quantize_each(copy.deepcopy(model), [
        {"weights": "int4", "group_size": 32}, {"weights": "int3", "group_size": 16, "symmetric": False},
        {"weights": "int2", "symmetric": False}, {"weights": "binary"}])
    path = export_nbits(quantized, (x,), tmp_path / "low.onnx")
    graph = onnx.load(str(path)).graph
    kernels = [n for n in graph.node if n.op_type == "MatMulNBits"]
    attrs = [{a.name: a.i for a in n.attribute} for n in kernels]
    assert [(a["bits"], a["block_size"]) for a in attrs] == [(4, 32), (4, 16), (2, 128), (2, 128)]
    assert [len(n.input) for n in kernels] == [3, 4, 4, 3]  # zero points only where some are not 0
    assert not _float_copies(graph, quantized)
    assert path.stat().st_size <= 0.3 * export_onnx(model, (x,), tmp_path / "fp32.onnx").stat().st_size
    with torch.inference_mode():
        assert _relative(_onnxruntime(path, x), quantized(x)) < 1e-4


def test_an_input_multiplier_runs_before_the_kernel_and_a_layer_it_cannot_hold_stays_float(tmp_path):
    model, x = _stack(64, 2), torch.randn(2, 64)
    model = _quantize_each(model, [{"weights": "int4", "group_size": 32}, {"weights": "int4", "group_size": 8}])
    model[0].input_multiplier = torch.rand(64) + 0.5  # as AWQ and SmoothQuant set it: op(x * input_multiplier)
    stays_float = r"GatherBlockQuantized: 1 \(group size 8 is not a power of two >= 16; it stays float\)$"
    with pytest.warns(UserWarning, match=stays_float):
        path = export_nbits(model, (x,), tmp_path / "model.onnx")
    graph = onnx.load(str(path)).graph
    kernel = next(n for n in graph.node if n.op_type == "MatMulNBits")
    assert next(n for n in graph.node if kernel.input[0] in n.output).op_type == "Mul"
    assert _ops(graph)["MatMulNBits"] == 1 and _float_copies(graph, model) == ["1"]
    with torch.inference_mode():
        assert _relative(_onnxruntime(path, x), model(x)) < 1e-4


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "auto"])
def test_export_step_deploys_the_int4_file_and_it_reloads(tmp_path, backend):
    if backend != "onnxruntime":
        pytest.importorskip("openvino")
    model, x = _stack(64, 2), torch.randn(1, 64)
    quantized = slimkit.apply(model, slimkit.Quantize(weights="int4", activations="none", group_size=32),
                              example_inputs=(x,))
    cfg = slimkit.Export(backend=backend, candidates=("onnxruntime", "openvino"), repeats=3)
    slimkit.apply(quantized, cfg, example_inputs=(x,), out_dir=tmp_path)
    assert _ops(onnx.load(str(tmp_path / "model.onnx")).graph)["MatMulNBits"] == 2
    record = json.loads((tmp_path / "deploy" / "deploy.json").read_text())
    if backend == "auto":  # both run the same file within tolerance, and the faster one is deployed
        choice = json.loads((tmp_path / "backend.json").read_text())
        assert all(choice["candidates"][f"{n}/int8"]["kept"] for n in cfg.candidates), choice["candidates"]
        assert f"{record['runtime']}/{record['precision']}" == choice["chosen"]
    else:
        assert (record["runtime"], record["precision"]) == (backend, "int8")
    if record["runtime"] == "openvino":  # the IR keeps the weights as 4-bit constants
        assert 'element_type="u4"' in (tmp_path / "deploy" / "model.xml").read_text()
    deployed = slimkit.load_deployed(tmp_path / "deploy")
    x = torch.randn(5, 64)
    with torch.inference_mode():
        assert _relative(deployed(x), quantized(x)) < 1e-4
