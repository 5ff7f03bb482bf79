import json
import subprocess
import sys

import pytest

from slimkit.cli import main

METRIC_KEYS = {"params", "nonzero_params", "macs", "size_bytes", "compressed_size_bytes", "latency_ms", "metric"}


@pytest.fixture()
def export_recipe(tmp_path):
    path = tmp_path / "export.yaml"
    path.write_text("version: 1\nsteps:\n  - export: {format: onnx}\n")
    return path


def test_compress_writes_report_in_design_schema(tmp_path, export_recipe):
    out = tmp_path / "run"
    code = main(["compress", "--model", "zoo:fashion-cnn", "--recipe", str(export_recipe), "--data", "fashion-mnist",
                 "--out", str(out), "--batch", "1,4"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert {"slimkit_version", "model", "data", "device", "threads", "baseline", "final", "steps", "artifacts"} <= set(report)
    for metrics in (report["baseline"], report["final"], report["steps"][0]["metrics"]):
        assert METRIC_KEYS <= set(metrics)
        assert set(metrics["latency_ms"]) == {"eager/bs1", "eager/bs4", "onnxruntime/bs1", "onnxruntime/bs4"}
    assert report["baseline"]["metric"]["name"] == "top1"
    assert report["baseline"]["metric"]["value"] == pytest.approx(0.9457, abs=1e-4)
    assert report["baseline"]["macs"] == 37_156_608 and report["baseline"]["params"] == 308_074
    assert report["steps"][0]["name"] == "export" and report["steps"][0]["seconds"] > 0
    assert report["artifacts"] == {"checkpoint": "checkpoint", "onnx": "model.onnx", "deploy": "deploy/deploy.json"}
    assert (out / "model.onnx").stat().st_size > 1_000_000
    assert "<svg" in (out / "report.html").read_text()
    assert "| baseline | 94.57% |" in (out / "report.md").read_text()
    # the run's checkpoint is a SPEC again, and `slimkit report` re-renders the run
    assert main(["bench", "--model", str(out / "checkpoint"), "--input-shape", "1,1,28,28", "--backends", "eager",
                 "--batch", "1", "--repeats", "3", "--format", "json", "--threads", "1"]) == 0
    assert main(["report", str(out)]) == 0


def test_resnet18_measurement_only(tmp_path, export_recipe):
    pytest.importorskip("torchvision")
    out = tmp_path / "rn"
    assert main(["compress", "--model", "torchvision.models:resnet18", "--input-shape", "1,3,224,224",
                 "--recipe", str(export_recipe), "--out", str(out), "--batch", "1", "--backends", "eager"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["baseline"]["params"] == 11_689_512 and report["baseline"]["metric"] is None


def _bad(tmp_path, args, message, capsys):
    out = tmp_path / "out"
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert not out.exists() and not list(tmp_path.glob(".out.*"))  # nothing partial left behind


def test_malformed_recipe(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nsteps:\n  - export: {format: onnx, opset: 'x'}\n")
    _bad(tmp_path, ["compress", "--model", "zoo:fashion-cnn", "--recipe", str(bad)], "steps[0].export.opset: expected int", capsys)


def test_missing_data_dir(tmp_path, export_recipe, capsys):
    _bad(tmp_path, ["compress", "--model", "zoo:fashion-cnn", "--recipe", str(export_recipe), "--data", "fashion-mnist",
                    "--data-dir", str(tmp_path / "missing")], "apt-get install dataset-fashion-mnist", capsys)


def test_spec_that_does_not_import(tmp_path, export_recipe, capsys):
    _bad(tmp_path, ["compress", "--model", "not_a_package.nets:net", "--recipe", str(export_recipe),
                    "--input-shape", "1,3,8,8"], "Could not import 'not_a_package.nets'", capsys)


def test_checkpoint_that_is_not_safetensors(tmp_path, export_recipe, capsys):
    fake = tmp_path / "model.safetensors"
    fake.write_bytes(b"PK\x03\x04 a zip/pickle checkpoint")
    (tmp_path / "history.json").write_text(json.dumps({"format": "slimkit-checkpoint", "version": 1,
                                                        "base": "zoo:digits-cnn", "history": []}))
    _bad(tmp_path, ["compress", "--model", str(fake), "--recipe", str(export_recipe), "--input-shape", "1,1,8,8"],
         "not a valid safetensors file", capsys)


def test_step_needing_data_without_data(tmp_path, capsys):
    recipe = tmp_path / "ft.yaml"
    recipe.write_text("steps:\n  - fine_tune: {epochs: 1}\n")
    _bad(tmp_path, ["compress", "--model", "zoo:digits-cnn", "--recipe", str(recipe)], "needs training data", capsys)


def test_exit_code_two_from_the_installed_command(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "slimkit.cli", "compress", "--model", "zoo:fashion-cnn",
                           "--recipe", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Cannot read recipe" in proc.stderr and "Traceback" not in proc.stderr


def test_import_stays_lean():
    code = "import sys, slimkit; print(sorted(m for m in ('onnx', 'onnxruntime', 'transformers', 'optuna', 'sklearn') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
