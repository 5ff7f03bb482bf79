import json

from benches import load_bench


def test_latency_repeatability_smoke(tmp_path):
    out = tmp_path / "lat.json"
    result = load_bench("latency_repeatability").main(["--smoke", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["results"].keys() == {"eager/bs1"} and saved == json.loads(json.dumps(result))
    row = saved["results"]["eager/bs1"]
    assert row["first"]["median"] > 0 and row["difference_ms"] == abs(row["first"]["median"] - row["second"]["median"])
