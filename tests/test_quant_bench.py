"""The quantization benches in --smoke mode: they run end to end and write what the README quotes."""
import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).parent.parent / "bench"


def _main(name, argv, monkeypatch):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr("sys.argv", [name, *argv])
    module.main()


def test_quantize_lowbit_smoke(tmp_path, monkeypatch):
    _main("quantize_lowbit", ["--smoke", "--only", "w4a8_rtn", "w4a8_rtn_cle_bc", "--out", str(tmp_path)], monkeypatch)
    runs = json.loads((tmp_path / "quantize_lowbit_smoke.json").read_text())["runs"]
    assert runs.keys() == {"w4a8_rtn", "w4a8_rtn_cle_bc"}
    assert all(0.12 < r["size_ratio"] < 0.16 for r in runs.values())  # 4-bit weights plus scales, BatchNorms folded
    assert all(r["top1"] > 0.8 for r in runs.values())
    plan = runs["w4a8_rtn_cle_bc"]["plan"]
    assert len(plan["equalized"]) == 3 and len(plan["bias_correction"]) == 10
