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
