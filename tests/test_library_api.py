"""What the CLI does, called from Python: sk.train, sk.bench, sk.example_inputs, the peers' library functions,
and step config classes found through the step table."""
import json
import sys

import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit import recipe
from slimkit.compile.peers import bench_peers, fine_tuner, verdict, versus_fastest
from slimkit.files import RUN_MARKER

QUICK = sk.FineTune(epochs=1, max_batches=2, batch_size=32)


def test_train_writes_checkpoint_and_summary(digits, tmp_path):
    out = tmp_path / "trained"
    model = sk.load_model("zoo:digits-cnn")
    summary = sk.train(model, digits, QUICK, out, resume=True, progress=False)
    assert summary["model"] == "zoo:digits-cnn" and summary["data"] == digits.name
    assert summary["config"] == QUICK.to_dict() and len(summary["loss"]) == 1 and summary["metric"]["name"] == "top1"
    assert json.loads((out / "train.json").read_text()) == summary
    assert json.loads((out / RUN_MARKER).read_text()) == {"kind": "train"}
    assert not (tmp_path / ".trained.slimkit-resume.pt").exists()  # the training state goes once the run is written
    reloaded = sk.load_model(str(out / "checkpoint"))
    for a, b in zip(model.parameters(), reloaded.parameters()):
        assert torch.equal(a, b)


def test_sk_train_is_callable_and_keeps_its_module():
    import slimkit.train as module  # failed while sk.train was a function hiding the module

    assert sk.train is module and module.Callback and module.fit is sk.fit


def test_train_refuses_an_earlier_run_without_overwrite(digits, tmp_path):
    sk.train(sk.load_model("zoo:digits-cnn"), digits, QUICK, tmp_path / "a", progress=False, labels={"model": "m"})
    with pytest.raises(sk.UserError, match="pass --overwrite"):
        sk.train(sk.load_model("zoo:digits-cnn"), digits, QUICK, tmp_path / "a", progress=False)
    summary = sk.train(sk.load_model("zoo:digits-cnn"), digits, QUICK, tmp_path / "a", overwrite=True, progress=False,
                       labels={"model": "m", "data": "d"})
    assert (summary["model"], summary["data"]) == ("m", "d")


def test_bench_measures_writes_bench_json_and_roofline(digits, tmp_path):
    model = sk.load_model("zoo:digits-cnn")
    result = sk.bench(model, data=digits, backends=("eager",), batch_sizes=(1, 2), threads=1, repeats=3,
                      out_dir=tmp_path / "b")
    assert json.loads((tmp_path / "b" / "bench.json").read_text()) == json.loads(json.dumps(result))
    assert result["model"] == "zoo:digits-cnn" and result["data"] == digits.name and result["threads"] == 1
    assert set(result["latency_ms"]) == {"eager/bs1", "eager/bs2"} and result["metric"]["name"] == "top1"
    assert result["roofline"]["peak_gmacs"] > 0 and set(result["roofline"]) == {"peak_gmacs", "eager/bs1", "eager/bs2"}
    assert "torch" in result["environment"] and result["macs"] == sk.measure(model, backends=(), data=digits)["macs"]


def test_bench_without_data_or_timing_takes_the_zoo_shape():
    result = sk.bench(sk.load_model("zoo:digits-cnn"), backends=(), labels={"model": "digits"})
    assert result["model"] == "digits" and result["data"] == "none" and result["metric"] is None
    assert result["latency_ms"] == {} and result["roofline"] == {"peak_gmacs": result["roofline"]["peak_gmacs"]}


def test_example_inputs_from_shape_data_or_zoo(digits):
    model = sk.load_model("zoo:digits-cnn")
    (x,) = sk.example_inputs(model, shape=(1, 1, 8, 8))
    assert torch.equal(x, sk.example_inputs(model, shape=(1, 1, 8, 8))[0])  # seeded
    assert torch.equal(sk.example_inputs(model, data=digits)[0], digits.example_inputs(1)[0])
    assert sk.example_inputs(model)[0].shape == (1, 1, 8, 8)  # the zoo model's own shape


def test_example_inputs_that_cannot_be_told_or_do_not_fit_are_user_errors(monkeypatch):
    with pytest.raises(sk.UserError, match="Cannot tell what input the model takes"):
        sk.example_inputs(nn.Linear(4, 2))
    with pytest.raises(sk.UserError, match="does not take inputs of shape"):
        sk.example_inputs(nn.Linear(4, 2), shape=(1, 5))
    monkeypatch.setenv("SLIMKIT_MEMORY_GB", "1")
    with pytest.raises(sk.UserError, match="memory budget"):
        sk.example_inputs(nn.Linear(4, 2), shape=(1, 2**24), batch_sizes=(1, 64))


def _rows(**medians):
    return [{"name": name, "toolkit": f"{name} 1.0", "latency_ms": {k: {"median": v, "iqr": 0.0} for k, v in ms.items()}}
            for name, ms in medians.items()]


def test_versus_fastest_and_verdict():
    rows = _rows(onnxruntime={"bs1": 2.0, "bs8": 4.0}, openvino={"bs1": 3.0, "bs8": 3.0}, slimkit={"bs1": 1.0, "bs8": 3.1})
    assert versus_fastest(rows) == {"fastest_peer": {"bs1": "onnxruntime", "bs8": "openvino"},
                                    "speedup_over_fastest_peer": {"bs1": 2.0, "bs8": 3.0 / 3.1}}
    assert verdict(rows) == ["bs1: slimkit beats the fastest peer, onnxruntime (onnxruntime 1.0): 2.00x its speed",
                             "bs8: slimkit ties with (within 5%) the fastest peer, openvino (openvino 1.0): 0.97x its speed"]
    assert verdict(_rows(eager={"bs1": 1.0}, slimkit={"bs1": 2.0}))[0].startswith("bs1: slimkit does not beat")


def test_fine_tuner_trains_a_copy_with_the_config(digits):
    model = sk.load_model("zoo:digits-cnn")
    tuned = fine_tuner(QUICK, model, digits)(model)
    assert tuned is not model and any(not torch.equal(a, b) for a, b in zip(model.parameters(), tuned.parameters()))


def test_bench_peers_fine_tuning_needs_data(tmp_path):
    with pytest.raises(sk.UserError, match="pass --data"):
        bench_peers(sk.load_model("zoo:digits-cnn"), fine_tune=QUICK, out_dir=tmp_path / "p")
    assert not (tmp_path / "p").exists()


def test_config_classes_come_from_the_step_table(tmp_path, monkeypatch):
    (tmp_path / "my_technique.py").write_text(  # not registered: the registry is shared with the other tests
        "import dataclasses\nfrom slimkit import StepConfig\n\n"
        "@dataclasses.dataclass\nclass MyStep(StepConfig):\n    key = 'my_step'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(recipe.BUILTIN_STEPS, "my_step", "my_technique")
    monkeypatch.delitem(sys.modules, "my_technique", raising=False)
    assert sk.MyStep is sys.modules["my_technique"].MyStep and sk.MyStep.key == "my_step"
    assert sk.Quantize is sys.modules["slimkit.quantize"].Quantize
    with pytest.raises(AttributeError, match="no attribute 'NoSuchStep'"):
        sk.NoSuchStep
