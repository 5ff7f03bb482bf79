import json

import pytest

from benches import load_bench


def test_latency_repeatability_smoke(tmp_path):
    out = tmp_path / "lat.json"
    result = load_bench("latency_repeatability").main(["--smoke", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["results"].keys() == {"eager/bs1"} and saved == json.loads(json.dumps(result))
    row = saved["results"]["eager/bs1"]
    assert row["first"]["median"] > 0 and row["difference_ms"] == abs(row["first"]["median"] - row["second"]["median"])


def test_fashion_fast_smoke_deploys_and_compares_side_by_side(tmp_path):
    """bench/fashion_fast.py --smoke: the recipe's deploy/ is copied out, loads back, and is timed in the same run
    as the peers; its speed-up is the fastest peer's median over its own at each batch size."""
    import slimkit

    result = load_bench("fashion_fast").main(["--smoke", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "fashion_fast_smoke.json").read_text()) == json.loads(json.dumps(result))
    deployed = slimkit.load_deployed(tmp_path / "fashion_fast_smoke" / "deploy")
    assert deployed.record == result["deploy_json"] and deployed.input_names == ["x"]
    rows = {r["name"]: r for r in result["peers"]}
    assert {"eager", "onnxruntime", "slimkit"} <= set(rows) and rows["slimkit"]["backend"] == f"{deployed.runtime}/{deployed.precision}"
    assert deployed.precision == "int8"  # the recipe quantizes before it exports
    for key, name in result["fastest_peer"].items():
        assert name != "slimkit" and all(rows[name]["latency_ms"][key]["median"] <= r["latency_ms"][key]["median"]
                                         for n, r in rows.items() if n != "slimkit")
        assert result["speedup_over_fastest_peer"][key] == rows[name]["latency_ms"][key]["median"] / rows["slimkit"]["latency_ms"][key]["median"]
    assert result["top1_lost_points"] == 100 * (rows["eager"]["metric"]["value"] - rows["slimkit"]["metric"]["value"])
    assert 0 < result["macs_fraction"] < 0.5 and result["checks"] is None


def test_minilm_fast_smoke_deploys_int8_weights_trims_padding_and_compares(tmp_path):
    """bench/minilm_fast.py --smoke (a tiny BERT with MiniLM's tokenizer): the weight-only INT8 deploy/ loads back with the tokenizer's input names, trims
    padding, and is timed beside the peers on padded and on full-length inputs."""
    import slimkit

    pytest.importorskip("transformers")
    result = load_bench("minilm_fast").main(["--smoke", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "minilm_fast_smoke.json").read_text()) == json.loads(json.dumps(result))
    deployed = slimkit.load_deployed(tmp_path / "minilm_fast_smoke" / "deploy")
    assert deployed.input_names == ["input_ids", "attention_mask"] and deployed.precision == "int8"
    assert deployed.record["trim_padding"] == "attention_mask"
    for name in ("padded", "full"):
        rows = {r["name"]: r for r in result[name]["peers"]}
        assert result["deploy_bytes"] < 0.4 * rows["eager"]["size_bytes"]  # int8 weights; per-row scales cost 1/8 at width 32
        assert {"eager", "onnxruntime", "slimkit"} == set(rows)
        assert set(result[name]["speedup_over_fastest_peer"]) == {"bs1", "bs4"}
    assert 0.99 < result["cosine"] <= 1.0 and result["checks"] is None
