import json

from benches import load_bench


def test_deep_compression_bench_smoke_writes_an_exact_artifact_over_30x_smaller(tmp_path):
    out = tmp_path / "dc.json"
    result = load_bench("compress_fashion").main(["--smoke", "--only", "deep_compression", "--out", str(out)])
    assert json.loads(out.read_text())["results"] == json.loads(json.dumps(result["results"]))
    dc = result["results"]["deep_compression"]
    artifact = dc["artifact"]
    assert artifact["decodes_exactly"]
    assert sum(artifact["bytes_by_stream"].values()) == artifact["bytes"] == (tmp_path / "dc_runs" / "deep_compression" / artifact["file"]).stat().st_size
    assert dc["size_ratio_vs_fp32"] == dc["size_bytes"][0] / artifact["bytes"] > 30  # 90% sparse whatever the (smoke) training
