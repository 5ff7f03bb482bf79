import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).parent.parent / "bench"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_latency_repeatability_smoke(tmp_path):
    out = tmp_path / "lat.json"
    result = _load("latency_repeatability").main(["--smoke", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["results"].keys() == {"eager/bs1"} and saved == json.loads(json.dumps(result))
    row = saved["results"]["eager/bs1"]
    assert row["first"]["median"] > 0 and row["difference_ms"] == abs(row["first"]["median"] - row["second"]["median"])


def test_quantize_lowbit_smoke(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["quantize_lowbit", "--smoke", "--only", "w4a8_rtn", "w4a8_rtn_cle_bc", "--out", str(tmp_path)])
    _load("quantize_lowbit").main()
    runs = json.loads((tmp_path / "quantize_lowbit_smoke.json").read_text())["runs"]
    assert runs.keys() == {"w4a8_rtn", "w4a8_rtn_cle_bc"}
    assert all(0.12 < r["size_ratio"] < 0.16 for r in runs.values())  # 4-bit weights, scales and float BatchNorm-free
    assert all(r["top1"] > 0.8 for r in runs.values())
    assert len(runs["w4a8_rtn_cle_bc"]["plan"]["equalized"]) == 3 and len(runs["w4a8_rtn_cle_bc"]["plan"]["bias_correction"]) == 10
