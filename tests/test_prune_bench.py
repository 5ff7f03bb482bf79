import json

from benches import load_bench


def test_prune_fashion_smoke(tmp_path):
    out = tmp_path / "prune.json"
    result = load_bench("prune_fashion").main(["--smoke", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    magnitude, channel = result["results"]["magnitude"], result["results"]["channel"]
    assert 0.85 < magnitude["sparsity"] < 0.9 and magnitude["macs_fraction"] == 1.0
    assert magnitude["compressed_size_bytes"][1] < 0.5 * magnitude["compressed_size_bytes"][0]
    assert 0.4 < channel["macs_fraction"] <= 0.5 and channel["params_fraction"] < 0.6
    assert channel["size_bytes"][1] < 0.6 * channel["size_bytes"][0]
    assert (tmp_path / "prune_runs" / "channel" / "checkpoint" / "model.safetensors").is_file()
    assert result["checks"] is None and set(channel["speedup"]) == {"eager/bs1"}
