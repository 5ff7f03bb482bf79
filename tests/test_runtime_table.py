import json
import math

import pytest

from benches import load_bench

PARAMETERS = {"resnet18": 11_689_512, "mobilenet_v2": 3_504_872}  # torchvision's models, 1000 classes


def auto_choice(rows: list[dict], batch_sizes: list[int]) -> str:
    """The rule of slimkit.compile.backends.choose: among the kept rows timed at every batch size, the smallest
    geometric mean of median latency relative to the fastest row at each batch size."""
    keys = [f"bs{bs}" for bs in batch_sizes]
    timed = [r for r in rows if r["kept"] and set(r["latency_ms"]) == set(keys)]
    best = {k: min(r["latency_ms"][k]["median"] for r in timed) for k in keys}
    score = {r["candidate"]: math.prod(r["latency_ms"][k]["median"] / best[k] for k in keys) for r in timed}
    return min(score, key=score.get)


@pytest.mark.parametrize("name", PARAMETERS)
def test_vision_models_have_torchvisions_parameter_counts(name):
    """Both slimkit's copies and what the bench builds (torchvision's where it imports) match torchvision."""
    vision_models = load_bench("vision_models")
    ours = {"resnet18": vision_models.ResNet18, "mobilenet_v2": vision_models.MobileNetV2}[name]()
    model, source = getattr(vision_models, name)()
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in model.parameters()) == PARAMETERS[name]
    assert not model.training and source.startswith(("torchvision ", "slimkit's copy of torchvision's architecture"))
    torchvision, _ = vision_models.torchvision_or_reason()
    if torchvision is not None:  # same modules: torchvision's checkpoints load into the copies
        reference = getattr(torchvision.models, name)(weights=None)
        assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}


def test_runtime_table_smoke(tmp_path, monkeypatch):
    """bench/runtime_table.py --smoke on resnet18 (mobilenet_v2's exports take a minute more; the full run has both):
    a float and an INT8 export with backend auto, every candidate in one table, auto's choice kept and the fastest,
    every row left out with its reason."""
    monkeypatch.setenv("SLIMKIT_THREADS", "1")  # two threads of small kernels crawl on a shared 2-core CPU
    result = load_bench("runtime_table").main(["--smoke", "--models", "resnet18", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "runtime_table_smoke.json").read_text()) == json.loads(json.dumps(result))
    assert list(result["models"]) == ["resnet18"] and result["batch_sizes"] == [1]
    assert {"cpu_model", "cpu_flags"} <= result["environment"].keys()
    for name, block in result["models"].items():
        assert block["parameters"] == PARAMETERS[name]
        assert block["runs"].keys() == {"float", "int8"}
        for run, summary in block["runs"].items():
            rows = [r for r in block["table"] if r["run"] == run]
            chosen = [r for r in rows if r["chosen"]]
            assert [r["candidate"] for r in chosen] == [summary["chosen"]] == [auto_choice(rows, result["batch_sizes"])]
            assert all(r["reason"] for r in rows if not r["kept"]) and all(r["latency_ms"] for r in rows if r["kept"])
            precisions = {r["candidate"].split("/")[1] for r in rows if "/" in r["candidate"]}
            assert precisions and precisions <= ({"int8"} if run == "int8" else {"fp32", "fp16", "bf16"})
            assert {"eager", "onnxruntime"} <= {r["candidate"].split("/")[0] for r in rows if r["kept"]}
        assert result["markdown"].count("**chosen**") == 2
