"""bench/search_fashion.py --smoke: both parts run end to end and the JSON holds consistent numbers."""
import json

import pytest

from benches import load_bench

pytestmark = pytest.mark.usefixtures("one_thread")
pytest.importorskip("optuna")


def test_search_fashion_smoke(tmp_path):
    out = tmp_path / "search.json"
    result = load_bench("search_fashion").main(["--smoke", "--threads", "1", "--out", str(out), "--runs", str(tmp_path / "runs")])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    race = result["tpe_vs_random"]
    for sampler in ("tpe", "random"):
        (run,) = race[sampler]["runs"]
        curve = run["best_so_far"]
        assert len(curve) == 2 and curve == sorted(curve) and run["best"] == curve[-1] == race[sampler]["mean_best"]
        assert run["states"]["COMPLETE"] == 2 and 0 <= run["best_test"] <= 1
    assert race["tpe_better"] == (race["tpe"]["mean_best"] > race["random"]["mean_best"])
    hw = result["hardware_aware"]
    shipped, short = hw["models"]["fashion-cnn (shipped, 40 epochs)"], hw["models"]["fashion-cnn (same short budget)"]
    assert shipped["macs"] == short["macs"] == 37_156_608 and shipped["params"] == 308_074
    assert shipped["test_top1"] > 0.9  # the shipped baseline on the first 200 test images
    found = [name for name in hw["models"] if name.startswith("trial ") and "retrained" not in name]
    assert found and all(hw["models"][n]["latency_ms"]["eager/bs1"]["median"] > 0 for n in found)
    longer = hw["models"]["fashion-cnn (longer budget)"]
    assert longer["train_seconds"] > short["train_seconds"] and hw["longer_budget"]["train"] == 600
    retrained = [name for name in hw["models"] if name.endswith("retrained (longer budget)")]
    assert len(retrained) == 1 and hw["models"][retrained[0]]["macs"] in [hw["models"][n]["macs"] for n in found]
    assert hw["threads"] == 1 and "load_average" in json.dumps(hw["environment"])
    for name in hw["dominate_short_budget_baseline"]:
        assert hw["models"][name]["macs"] < short["macs"] and hw["models"][name]["test_top1"] >= short["test_top1"]
