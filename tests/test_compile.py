"""Export and runtimes through bench/compile_fashion.py --smoke: fold + export equivalence, the FP16 graph,
backend auto, peers in report.html; plus the TensorRT fallback and an unexportable op."""
import json

import onnx
import pytest
import torch
from torch import nn

import slimkit
from slimkit.cli import main as cli
from slimkit.compile.onnx import Export
from slimkit.errors import UserError
from slimkit.runtime.onnx import export_onnx

from benches import load_bench


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    results = load_bench("compile_fashion").main(["--smoke", "--out", str(out)])
    assert json.loads((out / "compile_fashion_smoke.json").read_text()) == json.loads(json.dumps(results))
    return results, out / "compile_fashion_smoke_runs"


def test_fold_and_export_match_the_original_within_1e5(smoke):
    (run,) = smoke[0]["auto"]
    diffs = run["max_abs_diff"]  # over 256 Fashion-MNIST test images
    assert diffs["fused_vs_original"] < 1e-5 and diffs["onnx_fp32_vs_original"] < 1e-5
    assert 1e-5 < diffs["onnx_fp16_vs_original"] < 0.05  # really reduced precision, within atol_fp16


def test_fp16_graph_holds_fp16_weights_with_fp32_inputs(smoke):
    graph = onnx.load(str(smoke[1] / "export-bs1" / "model.fp16.onnx")).graph
    assert {init.data_type for init in graph.initializer if len(init.dims) == 4} == {onnx.TensorProto.FLOAT16}
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_backend_auto_keeps_the_fastest_candidate_within_tolerance(smoke):
    (run,) = smoke[0]["auto"]
    record = run["backend"]
    table = record["candidates"]
    assert set(table) == {"eager/fp32", "onnxruntime/fp32", "onnxruntime/fp16"}
    for name, row in table.items():
        tolerance = record["tolerances"][name.split("/")[1]]
        assert row["kept"] == (row["max_abs_diff"] <= tolerance) == ("bs1" in row["latency_ms"]), name
    assert 1e-5 < table["onnxruntime/fp16"]["max_abs_diff"] < record["tolerances"]["fp16"] == 0.05  # really FP16
    assert table["onnxruntime/fp32"]["max_abs_diff"] < 1e-5
    timed = {n: r["latency_ms"]["bs1"]["median"] for n, r in table.items() if r["kept"]}
    assert record["chosen"] == min(timed, key=timed.get) and len(timed) == 3
    # the bench re-timed the choice against every kept candidate in one run
    assert set(run["auto_over_each"]) == set(timed) and all(r > 0 for r in run["auto_over_each"].values())


@pytest.mark.parametrize("name, metric", [("fashion-cnn", "top1"), ("minilm", "cosine")])
def test_peers_are_timed_scored_and_land_in_report_html(smoke, name, metric):
    block = smoke[0]["peers"][name]
    rows = {p["name"]: p for p in block["peers"]}
    assert set(rows) == {"eager", "onnxruntime", "ort_quantize_dynamic", "ort_quantize_static", "torch_dynamic_int8"}
    for row in rows.values():
        assert row["metric"]["name"] == metric and set(row["latency_ms"]) == {"bs1"} and row["size_bytes"] > 0
        assert row["speedup_vs_eager"]["bs1"] == pytest.approx(rows["eager"]["latency_ms"]["bs1"]["median"]
                                                               / row["latency_ms"]["bs1"]["median"])
        assert 0 < block["roofline"][f"{row['name']}/bs1"]["gmacs"]
    if metric == "cosine":
        assert rows["onnxruntime"]["metric"]["value"] > 0.9999  # FP32 runtime: the same embeddings
    else:
        assert rows["onnxruntime"]["metric"] == rows["eager"]["metric"] and rows["eager"]["metric"]["value"] > 0.9
    assert rows["ort_quantize_dynamic"]["size_bytes"] < 0.5 * rows["onnxruntime"]["size_bytes"]
    report = json.loads((smoke[1] / f"peers-{name}" / "report.json").read_text())
    assert report["peers"] == block["peers"]
    html = (smoke[1] / f"peers-{name}" / "report.html").read_text()
    assert "ort_quantize_static" in html and "torch_dynamic_int8" in html


def test_tensorrt_request_without_tensorrt_warns_and_falls_back(tmp_path):
    model, example = slimkit.load_model("zoo:digits-cnn").eval(), (torch.randn(1, 1, 8, 8),)
    with pytest.warns(UserWarning, match=r"TensorRT was requested but this onnxruntime has no TensorrtExecutionProvider.*"
                                         r"falling back to onnxruntime on CPUExecutionProvider"):
        slimkit.apply(model, Export(backend="tensorrt", repeats=3), example_inputs=example, out_dir=tmp_path)
    record = json.loads((tmp_path / "backend.json").read_text())
    assert record["chosen"] == "onnxruntime/fp32" and record["providers"] == ["CPUExecutionProvider"]
    assert json.loads((tmp_path / "deploy" / "deploy.json").read_text())["runtime"] == "onnxruntime"


class Eigen(nn.Module):
    def forward(self, x):
        return torch.linalg.eigvals(x @ x.T).real


def test_unexportable_op_names_the_op_and_the_module(tmp_path):
    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.ReLU(), Eigen())).eval()
    with pytest.raises(UserError, match=r"operator linalg_eig \(called in module 1\.1 \(Eigen\)\)"):
        export_onnx(model, (torch.randn(4, 4),), tmp_path / "m.onnx", dynamic_batch=False)


def test_cli_peers_against_a_folder_that_is_no_run(tmp_path, capsys):
    assert cli(["bench", "--model", "zoo:fashion-cnn", "--peers", "--against", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "not a slimkit run directory" in capsys.readouterr().err and not (tmp_path / "o").exists()
