"""Export and runtimes: fold + export equivalence, FP16 graph, backend auto, TensorRT fallback, bad ops."""
import json
import types

import onnx
import pytest
import torch
from torch import nn

import slimkit
from slimkit.compile.backends import select_backend
from slimkit.compile.onnx import Export, export_onnx, max_abs_diff
from slimkit.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, fashion):
    """zoo:fashion-cnn fused, then exported (FP32 + FP16) with backend auto over eager and onnxruntime."""
    out = tmp_path_factory.mktemp("export")
    original = slimkit.load_model("zoo:fashion-cnn").eval()
    x = fashion.example_inputs(1)
    fused = slimkit.apply(slimkit.load_model("zoo:fashion-cnn"), slimkit.Fuse(), example_inputs=x)
    cfg = Export(fp16=True, backend="auto", candidates=("eager", "onnxruntime", "onnxruntime_fp16"), repeats=5)
    slimkit.apply(fused, cfg, example_inputs=x, out_dir=out)
    return original, fused, out, fashion.example_inputs(16)


def test_fold_and_export_match_the_original_within_1e5(exported):
    original, fused, out, x = exported
    with torch.no_grad():
        assert (fused(*x) - original(*x)).abs().max().item() < 1e-5
    for level in ("disable", "all"):
        assert max_abs_diff(original, out / "model.onnx", x, opt_level=level) < 1e-5


def test_fp16_graph_holds_fp16_weights_and_stays_close(exported):
    original, _, out, x = exported
    graph = onnx.load(str(out / "model.fp16.onnx")).graph
    kinds = {init.data_type for init in graph.initializer if len(init.dims) == 4}  # conv kernels
    assert kinds == {onnx.TensorProto.FLOAT16}
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # FP32 at the boundary
    diff = max_abs_diff(original, out / "model.fp16.onnx", x)
    assert 1e-5 < diff < 0.05  # really reduced precision, still within the default atol_fp16


def test_backend_auto_keeps_the_fastest_candidate_within_tolerance(exported):
    record = json.loads((exported[2] / "backend.json").read_text())
    table = record["candidates"]
    assert set(table) == {"eager", "onnxruntime/disable", "onnxruntime/basic", "onnxruntime/extended",
                          "onnxruntime/all", "onnxruntime_fp16/all"}
    for name, row in table.items():
        assert row["kept"] == (row["max_abs_diff"] <= record["atol"]), name
        assert ("median_ms" in row) == row["kept"]
    assert not table["onnxruntime_fp16/all"]["kept"]  # FP16 error is far above atol 1e-4
    timed = {n: r["median_ms"] for n, r in table.items() if r["kept"]}
    assert record["chosen"] == min(timed, key=timed.get) and len(timed) == 5


def test_tensorrt_request_without_tensorrt_warns_and_falls_back(exported, tmp_path):
    _, fused, out, x = exported
    ctx = types.SimpleNamespace(out_dir=out, device="cpu", notes=[], artifacts={}, threads=1, example_inputs=x)
    with pytest.warns(UserWarning, match=r"TensorRT was requested but this onnxruntime has no TensorrtExecutionProvider.*falling back to onnxruntime on CPUExecutionProvider"):
        record = select_backend(fused, Export(backend="tensorrt"), ctx, {"onnx": 0.0}, 1e-4)
    assert record["chosen"] == "onnxruntime" and record["providers"] == ["CPUExecutionProvider"]
    assert "TensorRT" in ctx.notes[0]


class Eigen(nn.Module):
    def forward(self, x):
        return torch.linalg.eigvals(x @ x.T).real


def test_unexportable_op_names_the_op_and_the_module(tmp_path):
    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.ReLU(), Eigen())).eval()
    with pytest.raises(UserError, match=r"operator linalg_eig \(called in module 1\.1 \(Eigen\)\)"):
        export_onnx(model, (torch.randn(4, 4),), tmp_path / "m.onnx", dynamic_batch=False)
