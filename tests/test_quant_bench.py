"""The quantization benches in --smoke mode: they run end to end and write what the README quotes."""
import json

from benches import load_bench


def _main(name, argv, monkeypatch):
    monkeypatch.setattr("sys.argv", [name, *argv])
    load_bench(name).main()


def test_quantize_lowbit_smoke(tmp_path, monkeypatch):
    _main("quantize_lowbit", ["--smoke", "--only", "w4a8_rtn_cle_bc", "--out", str(tmp_path)], monkeypatch)
    runs = json.loads((tmp_path / "quantize_lowbit_smoke.json").read_text())["runs"]
    assert runs.keys() == {"w4a8_rtn_cle_bc"}
    run = runs["w4a8_rtn_cle_bc"]
    assert 0.12 < run["size_ratio"] < 0.16  # 4-bit weights plus scales, BatchNorms folded
    assert run["top1"] > 0.9  # 256 test images; 0.953 measured (fp32 0.965)
    assert len(run["plan"]["equalized"]) == 3 and len(run["plan"]["bias_correction"]) == 10
