"""The real peer toolkits of `slimkit bench --peers`: OpenVINO, NNCF, torchao PT2E, ExecuTorch XNNPACK and
Torch-Pruning, each built as its documentation shows, timed and scored beside eager FP32 on digits."""
import json
import sys

import pytest
import torch
from torch import nn

import slimkit
from slimkit.cli import main as cli
from slimkit.compile.peers import PEERS, Peer, build_peers, compare
from slimkit.measure.counts import count_macs
from slimkit.measure.latency import batch_of
from slimkit.runtime import RUNTIMES

NEW = ("openvino", "nncf_openvino_int8", "torchao_pt2e_int8", "executorch_xnnpack_int8", "torch_pruning")


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Small kernels oversubscribe this shared 2-core CPU; every peer here runs on one thread."""


def _run(model, task, tmp_path, include, batch_sizes=(1,), example=None, **kwargs):
    """Build ``include`` (plus eager) for ``model``, time and score them; {name: row}, {name: Peer}."""
    example = example or task.example_inputs(1)
    peers, skipped = build_peers(model, example, tmp_path, 1, ("eager", *include), task, **kwargs)
    assert not skipped, skipped
    rows = compare(model, peers, example, task=task, batch_sizes=batch_sizes, threads=1, repeats=2)
    return {r["name"]: r for r in rows}, {p.name: p for p in peers}


def _close_to_eager(rows, name, points=0.02):
    eager, peer = rows["eager"]["metric"], rows[name]["metric"]
    assert peer["name"] == "top1" and eager["value"] > 0.9
    assert abs(peer["value"] - eager["value"]) <= points, (name, peer, eager)


def test_openvino_fp32_and_nncf_int8(trained_digits_cnn, digits, tmp_path):
    rows, peers = _run(trained_digits_cnn, digits, tmp_path, ("openvino", "nncf_openvino_int8"))
    assert rows["openvino"]["metric"] == rows["eager"]["metric"]  # FP32: the same predictions
    _close_to_eager(rows, "nncf_openvino_int8")
    assert peers["openvino"].predict.precision == "fp32" and peers["nncf_openvino_int8"].predict.precision == "int8"
    assert (tmp_path / "nncf" / "model.bin").stat().st_size < 0.5 * (tmp_path / "openvino" / "model.bin").stat().st_size
    assert rows["nncf_openvino_int8"]["size_bytes"] == sum((tmp_path / "nncf" / f).stat().st_size for f in ("model.xml", "model.bin"))
    assert rows["nncf_openvino_int8"]["toolkit"].startswith("nncf 3.") and "openvino 20" in rows["openvino"]["toolkit"]
    assert "note" not in rows["nncf_openvino_int8"]  # a CNN: no model_type=TRANSFORMER


def test_torchao_pt2e_int8_per_batch_size(trained_digits_cnn, digits, tmp_path):
    pytest.importorskip("torchao")
    rows, peers = _run(trained_digits_cnn, digits, tmp_path, ("torchao_pt2e_int8",), batch_sizes=(1, 4))
    _close_to_eager(rows, "torchao_pt2e_int8")
    assert set(rows["torchao_pt2e_int8"]["latency_ms"]) == {"bs1", "bs4"} and set(peers["torchao_pt2e_int8"]._programs) == {1, 4}
    assert rows["torchao_pt2e_int8"]["size_bytes"] < 0.75 * rows["eager"]["size_bytes"]  # int8 weights
    assert rows["torchao_pt2e_int8"]["toolkit"].startswith("torchao 0.")


def test_executorch_xnnpack_int8_at_two_batch_sizes(digits, tmp_path):
    pytest.importorskip("executorch")
    if "executorch" not in RUNTIMES:
        pytest.skip("no executorch runtime in this slimkit")
    torch.manual_seed(0)  # an MLP: XNNPACK's conv+BN patterns make each static-batch build of the CNN ~3x slower
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    slimkit.fit(model, digits, slimkit.FineTune(epochs=8, lr=0.1, batch_size=64), progress=False)
    example = batch_of(digits.example_inputs(1), 2)
    rows, peers = _run(model.eval(), digits, tmp_path, ("executorch_xnnpack_int8",), batch_sizes=(2, 8), example=example)
    _close_to_eager(rows, "executorch_xnnpack_int8")
    peer = peers["executorch_xnnpack_int8"]
    assert set(peer._programs) == {2, 8} and set(rows[peer.name]["latency_ms"]) == {"bs2", "bs8"}
    assert rows[peer.name]["size_bytes"] == (tmp_path / "executorch-bs2" / "model.pte").stat().st_size
    assert peer.predict_for(8)(*batch_of(example, 8)).shape == (8, 10)
    assert peer.predict_for(8)(*batch_of(example, 3)).shape == (3, 10)  # padded to the program's batch


def test_torch_pruning_reaches_the_macs_target_and_is_fine_tuned(trained_digits_cnn, digits, tmp_path):
    pytest.importorskip("torch_pruning")
    config = slimkit.FineTune(epochs=3, lr=0.05, batch_size=64)
    rows, peers = _run(trained_digits_cnn, digits, tmp_path, ("torch_pruning",), macs_target=0.5,
                       fine_tune=lambda m: slimkit.apply(m, config, data=digits))
    example = digits.example_inputs(1)
    pruned = peers["torch_pruning"].model
    assert count_macs(pruned, example)[0] <= 0.5 * count_macs(trained_digits_cnn, example)[0]
    assert trained_digits_cnn.stem[0].out_channels == 8  # pruned a copy
    row = rows["torch_pruning"]
    assert row["metric"]["name"] == "top1" and row["metric"]["value"] > 0.8  # recovered by fine-tuning
    assert "fine-tuned" in row["note"] and row["toolkit"].startswith("torch-pruning 1.") and row["backend"] == "onnxruntime"


def test_torch_pruning_without_fine_tuning_says_so(trained_digits_cnn, digits, tmp_path):
    pytest.importorskip("torch_pruning")
    peers, skipped = build_peers(trained_digits_cnn, digits.example_inputs(1), tmp_path, 1, ("torch_pruning",),
                                 digits, macs_target=0.8)
    (peer,) = peers
    assert "no fine-tuning" in peer.note and "target 80.0%" in peer.note
    assert count_macs(peer.model, digits.example_inputs(1))[0] <= 0.8 * count_macs(trained_digits_cnn, digits.example_inputs(1))[0]


def test_missing_toolkits_are_skipped_naming_the_extra(trained_digits_cnn, digits, tmp_path, monkeypatch):
    for module in ("nncf", "torchao", "torch_pruning", "executorch", "openvino"):
        monkeypatch.setitem(sys.modules, module, None)
    peers, skipped = build_peers(trained_digits_cnn, digits.example_inputs(1), tmp_path, 1, ("eager", *NEW), digits)
    assert [p.name for p in peers] == ["eager"]
    assert skipped == {"openvino": "needs openvino: pip install 'slimkit[openvino]'",
                       "nncf_openvino_int8": "needs nncf: pip install 'slimkit[peers]'",
                       "torchao_pt2e_int8": "needs torchao: pip install 'slimkit[peers]'",
                       "executorch_xnnpack_int8": "needs executorch: pip install 'slimkit[peers]'",
                       "torch_pruning": "needs torch-pruning: pip install 'slimkit[peers]'"}


def test_calibrating_peers_without_data_are_skipped(trained_digits_cnn, digits, tmp_path):
    include = ("nncf_openvino_int8", "torchao_pt2e_int8", "executorch_xnnpack_int8")
    peers, skipped = build_peers(trained_digits_cnn, digits.example_inputs(1), tmp_path, 1, include, None)
    assert not peers and all("needs calibration data: pass --data" in skipped[n] or "needs executorch" in skipped[n]
                             or "no executorch runtime" in skipped[n] for n in include), skipped


def test_static_batch_peer_is_built_per_batch_size_and_scored_padded(digits):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    built = []

    def build(batch_size):
        built.append(batch_size)

        def program(x):
            assert x.shape[0] == batch_size  # a static program takes nothing else
            return model(x)

        return program

    eager = Peer("eager", "eager", RUNTIMES["eager"].prepare(model, ()), 1)
    static = Peer.static("static", "test", build, 1, 1)
    rows = {r["name"]: r for r in compare(model, [eager, static], digits.example_inputs(1), task=digits,
                                          batch_sizes=(1, 3), repeats=2)}
    assert built == [1, 3] and set(rows["static"]["latency_ms"]) == {"bs1", "bs3"}
    assert rows["static"]["metric"] == rows["eager"]["metric"]  # 449 test rows = 149 x 3 + 2 padded


@pytest.mark.parametrize("args, message", [
    (["--peer-macs", "0"], "--peer-macs: 0.0 is outside (0, 1]"),
    (["--peer-macs", "1.5"], "--peer-macs: 1.5 is outside (0, 1]"),
    (["--peer-macs", "nan"], "--peer-macs: 'nan' is not a finite number"),
    (["--peer-list", "eager,tensorrt"], "unknown peer(s) 'tensorrt'; choose from " + ", ".join(PEERS)),
    (["--peer-epochs", "2"], "--peer-epochs fine-tunes the torch_pruning peer on the training data: pass --data"),
])
def test_cli_rejects_bad_peer_options(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_:  # argparse's own exit 2, or main()'s UserError exit 2
        sys.exit(cli(["bench", "--model", "zoo:digits-cnn", "--peers", *args, "--out", str(tmp_path / "o")]))
    assert exit_.value.code == 2 and message in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_cli_peer_list_macs_and_epochs(tmp_path, capsys):
    pytest.importorskip("torch_pruning")
    out = tmp_path / "o"
    assert cli(["bench", "--model", "zoo:digits-cnn", "--data", "digits", "--peer-list", "eager,torch_pruning,nncf_openvino_int8",
                "--peer-macs", "0.6", "--peer-epochs", "1", "--batch", "1", "--repeats", "2", "--threads", "1",
                "--format", "json", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert json.loads(capsys.readouterr().out) == report  # NNCF's progress bars stay off stdout
    rows = {r["name"]: r for r in report["peers"]}
    assert list(rows) == ["eager", "torch_pruning", "nncf_openvino_int8"] and "target 60.0%" in rows["torch_pruning"]["note"]
    assert "fine-tuned" in rows["torch_pruning"]["note"] and rows["torch_pruning"]["metric"]["name"] == "top1"
    assert any("slimkit.apply: FineTune(epochs=1) on digits" in n for n in report["notes"])
    html = (out / "report.html").read_text()
    assert "torch_pruning" in html


def test_ort_matmul_nbits_runs_int4_kernels(tmp_path):
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 128)).eval()
    tokens = (torch.randn(2, 16, 128),)
    peers, skipped = build_peers(model, tokens, tmp_path, 1, ("onnxruntime", "ort_matmul_nbits"))
    assert not skipped, skipped
    fp32, int4 = peers
    kinds = {n.op_type for n in onnx.load(str(tmp_path / "ort_matmul_nbits.onnx")).graph.node}
    assert "MatMulNBits" in kinds and "MatMul" not in kinds
    assert int4.size_bytes < 0.2 * fp32.size_bytes
    expected = model(*tokens)
    error = (int4.predict(*tokens) - expected).abs().mean() / expected.abs().mean()
    assert 1e-4 < error < 0.1  # int4 rounding: close, not equal
