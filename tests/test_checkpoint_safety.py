"""Files slimkit reads back (checkpoints, arch: files, hf: folders) are data: never code, never a traceback."""
import json
import os
import pickle
import sys
import uuid

import pytest
import torch
from safetensors.torch import save_file

import slimkit as sk
from slimkit.errors import UserError

X = torch.randn(2, 1, 8, 8)


def pruned_checkpoint(folder):
    """A zoo:digits-cnn checkpoint with one channel_prune entry; returns the model saved."""
    model = sk.apply(sk.load_model("zoo:digits-cnn"), sk.ChannelPrune(ratio=0.5, importance="l1"), example_inputs=(X[:1],))
    sk.save_checkpoint(model, folder)
    return model.eval()


def edit_history(folder, change):
    path = folder / "history.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


@pytest.fixture
def probe(tmp_path, monkeypatch):
    """A fresh module ``slimkit_evil_probe_*`` that writes a marker file when imported or called."""
    name, marker = f"slimkit_evil_probe_{uuid.uuid4().hex[:8]}", tmp_path / "marker"
    (tmp_path / f"{name}.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('imported')\n\n"
        "def boom():\n    from slimkit.models.zoo import digits_cnn\n\n"
        f"    pathlib.Path({str(marker)!r}).write_text('called')\n    return digits_cnn()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield f"{name}:boom", marker
    sys.modules.pop(name, None)


@pytest.fixture
def checkpoint(tmp_path):
    folder = tmp_path / "ck"
    sk.save_checkpoint(sk.load_model("zoo:digits-cnn"), folder)
    return folder


@pytest.mark.parametrize("base", ["os:abort", "sys:exit", "builtins:exec", "subprocess:call", "probe"])
def test_a_checkpoint_never_imports_or_calls_the_code_it_names(checkpoint, probe, base):
    base = probe[0] if base == "probe" else base
    edit_history(checkpoint, lambda meta: meta.update(base=base))
    with pytest.raises(UserError, match=r"(?s)history\.json names the base model .*Python code.*--base"):
        sk.load_model(str(checkpoint))
    with pytest.raises(UserError, match="not 'os:system'"):  # a different confirmation is no confirmation
        sk.load_model(str(checkpoint), base="os:system")
    assert probe[0].partition(":")[0] not in sys.modules
    assert not probe[1].exists()


@pytest.mark.parametrize("base", ["os:abort", "sys:exit"])
def test_the_cli_refuses_such_a_checkpoint_with_exit_2(checkpoint, base, capsys):
    from slimkit.cli import main

    edit_history(checkpoint, lambda meta: meta.update(base=base))
    for extra in ([], ["--base", base]):  # confirmed or not: the standard library builds no models
        assert main(["bench", "--model", str(checkpoint), "--input-shape", "1,1,8,8", "--backends", "none", *extra]) == 2
        err = capsys.readouterr().err
        assert base in err and "Traceback" not in err


def test_passing_the_same_base_loads_the_checkpoint(checkpoint, probe):
    model = sk.load_model(str(checkpoint))
    edit_history(checkpoint, lambda meta: meta.update(base=probe[0]))
    loaded = sk.load_model(str(checkpoint), base=probe[0])
    assert probe[1].read_text() == "called"
    assert torch.equal(loaded(X), model(X))
    assert loaded.slimkit_origin["base"] == probe[0]
    with pytest.raises(UserError, match="not a checkpoint path"):
        sk.load_model("zoo:digits-cnn", base=probe[0])
    edit_history(checkpoint, lambda meta: meta.update(base="zoo:digits-cnn"))
    with pytest.raises(UserError, match="names the base model 'zoo:digits-cnn', not"):
        sk.load_model(str(checkpoint), base=probe[0])
    assert torch.equal(sk.load_model(str(checkpoint), base="zoo:digits-cnn")(X), model(X))


def _entry(step, replay):
    """A history change: entry 0 becomes ``step`` with default config and ``replay``."""
    def change(meta):
        meta["history"][0] = {"step": step, "config": {}, "replay": replay}
    return change


@pytest.mark.parametrize("change, message", [
    (lambda meta: meta.update(version=2), r"version: expected an integer in 1\.\.1, got 2"),
    (lambda meta: meta.update(base=5), "base: expected a string"),
    (lambda meta: meta.update(base=""), "is not of the form package.module:callable"),
    (lambda meta: meta.update(base="zoo:"), "names nothing after the colon"),
    (lambda meta: meta.update(base="/tmp/another/checkpoint"), "is not of the form package.module:callable"),
    (lambda meta: meta.update(base="arch:{\"stem\": -1}"), "architecture"),
    (lambda meta: meta.update(base="hf:/no/such/folder"), "no config.json there"),
    (lambda meta: meta.update(history={}), "history: expected a list"),
    (lambda meta: meta["history"][0].pop("step"), r"history\[0\]\.step: missing"),
    (lambda meta: meta["history"][0].update(step=3), r"history\[0\]\.step: expected a string"),
    (lambda meta: meta["history"][0].update(step="os"), r"history\[0\]\.step: Unknown step 'os'"),
    (lambda meta: meta["history"][0].update(config=[]), r"history\[0\]\.config: expected a mapping"),
    (lambda meta: meta["history"][0]["config"].update(ratio="half"), r"history\[0\]\.config\.ratio: expected float"),
    (lambda meta: meta["history"][0].update(replay=[1]), r"history\[0\]\.replay: expected a mapping or null"),
    (lambda meta: meta["history"][0].update(replay=None), r"history\[0\]\.replay: expected a mapping, got None"),
    (lambda meta: meta["history"][0]["replay"].update(plan={"stem.0": {"out": [0, 1, "2"]}}),
     r"history\[0\]\.replay\.plan\['stem\.0'\]\.out\[2\]: expected an integer"),
    (lambda meta: meta["history"][0]["replay"].update(plan={"stem.0": {"out": [0, 999]}}),
     r"history\[0\] \(channel_prune\) cannot be replayed .*edited or written by another version"),
    (lambda meta: meta["history"][0]["replay"].update(plan={"no.such.layer": {"out": [0]}}),
     r"history\[0\] \(channel_prune\) cannot be replayed"),
    (_entry("low_rank", {"layers": {"fc": {"kind": "svd", "ranks": [-1]}}}),
     r"replay\.layers\['fc'\]\.ranks\[0\]: expected an integer in 1\.\.65536, got -1"),
    (_entry("low_rank", {"layers": {"fc": {"kind": "qr", "ranks": [2]}}}), r"\.kind: expected one of 'cp', 'svd'"),
    (_entry("cluster", {"layers": {"fc": {"bits": 60, "zero": False}}}), r"\['fc'\]\.bits: expected an integer in 1\.\.8"),
    (_entry("distill", {"student": "narrow", "widths": "wide"}), r"replay\.widths: expected a list"),
    (_entry("distill", {"student": "narrow"}), r"cannot be replayed \(KeyError"),
    (_entry("quantize", {"folded": [], "layers": {"fc": {"bits": 8, "symmetric": True, "group_size": "x",
                                                         "per_channel": True, "reduce_range": False, "static": False}}}),
     r"\['fc'\]\.group_size: expected an integer in 1\.\.65536 or null"),
])
def test_history_is_validated_with_the_field_named(tmp_path, change, message):
    folder = tmp_path / "ck"
    pruned_checkpoint(folder)
    edit_history(folder, change)
    with pytest.raises(UserError, match=message) as info:
        sk.load_model(str(folder))
    assert "history.json" in str(info.value)


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe{}", "not UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b"{\"format\": ", "not valid JSON"),
    (b"[]", "not a slimkit checkpoint history"),
    (None, r"missing \(or not a regular file\)"),  # a folder named history.json
])
def test_unreadable_histories(checkpoint, content, message):
    history = checkpoint / "history.json"
    history.unlink()
    history.mkdir() if content is None else history.write_bytes(content)
    with pytest.raises(UserError, match=message):
        sk.load_model(str(checkpoint))


def test_a_fifo_history_does_not_hang(checkpoint):
    (checkpoint / "history.json").unlink()
    os.mkfifo(checkpoint / "history.json")
    with pytest.raises(UserError, match="not a regular file"):
        sk.load_model(str(checkpoint))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_a_history_without_read_permission(checkpoint):
    (checkpoint / "history.json").chmod(0)
    with pytest.raises(UserError, match="cannot read the checkpoint history"):
        sk.load_model(str(checkpoint))


@pytest.mark.parametrize("tensors, metadata, message", [
    (None, None, "not a valid safetensors file"),  # truncated
    ({"fc.weight.mask": torch.zeros(2, dtype=torch.uint8), "fc.weight.values": torch.zeros(1)},
     {"slimkit_sparse": json.dumps({"fc.weight": [100_000, 100_000]})}, r"slimkit_sparse\['fc.weight'\]: the shape does not match"),
    ({}, {"slimkit_sparse": json.dumps({"fc.weight": [10, "x"]})}, r"slimkit_sparse\['fc.weight'\]\[1\]: expected an integer"),
    ({}, {"slimkit_sparse": "{not json"}, "not a valid safetensors file"),
    ({"fc.weight.mask": torch.zeros(2, dtype=torch.uint8), "fc.weight.values": torch.zeros(3)},
     {"slimkit_sparse": json.dumps({"fc.weight": [4, 4]})}, "not a valid safetensors file"),  # values != mask bits
    ({"fc.weight": torch.zeros(3, 3)}, None, "does not match the rebuilt model"),
])
def test_bad_weights_files(checkpoint, tensors, metadata, message):
    weights = checkpoint / "model.safetensors"
    if tensors is None:
        weights.write_bytes(weights.read_bytes()[:200])
    else:
        save_file(tensors, str(weights), metadata)
    with pytest.raises(UserError, match=message) as info:
        sk.load_model(str(checkpoint))
    assert "model.safetensors" in str(info.value)


def _junk_specs(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "text.txt").write_text("hello")
    (tmp_path / "random.bin").write_bytes(os.urandom(4096))
    (tmp_path / "only_history").mkdir()
    (tmp_path / "only_history" / "history.json").write_text("{}")
    return {"empty-dir": str(tmp_path / "empty"), "text-file": str(tmp_path / "text.txt"),
            "binary-file": str(tmp_path / "random.bin"), "history-only": str(tmp_path / "only_history")}


@pytest.mark.parametrize("spec", [
    "", "   ", ":", "zoo:", "zoo:nope", "a:b:c", "hf:", "arch:", "arch:   ", "a\x00b", "x" * 5000, "hf:" + "x" * 5000,
    "arch:" + "x" * 5000, "..:x", "os.path:", "hf:/no/such/dir", "arch:/no/such.yaml", "arch:{", "arch:/dev/zero",
    "empty-dir", "text-file", "binary-file", "history-only", None, 42,
])
def test_junk_specs_are_user_errors(tmp_path, spec):
    spec = _junk_specs(tmp_path).get(spec, spec)
    with pytest.raises(UserError):
        sk.load_model(spec)


@pytest.mark.parametrize("text, message", [
    (b"\xff\xfe", "not UTF-8"),
    (b"input_shape: [1, 8, 8]\nnum_classes: 10\nstem: x\nblocks: [{type: basic, out: 8}]", "architecture.stem"),
    (b"input_shape: [1, 8, 8]\nnum_classes: 10\nstem: 8\nwidth: 2\nblocks: [{type: basic, out: 8}]", r"unknown key\(s\) \['width'\]"),
    (b"input_shape: [1, 8, 8]\nnum_classes: 10\nstem: 8\nblocks: [{type: basic, out: -8}]", r"blocks\[0\]\.out"),
    (b"input_shape: [1, 8, 8]\nnum_classes: 10\nstem: 100000\nblocks: [{type: basic, out: 100000}]", "parameters is more than"),
    (b"input_shape: [1, 8, 8]\nnum_classes: 10\nstem: 8\nblocks: [{type: inverted_residual, out: 8, expand: -4}]",
     "not a valid architecture"),
    (b"input_shape: [1, 8, 8]\nnum_classes: 10\nstem: 8\nblocks: [{type: basic, out: 8, stride: 2020-01-01}]", "stride"),
    (b"a: &a [1, 1, 1, 1, 1, 1, 1, 1]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b]", "aliases"),
    (b"[" * 100_000 + b"]" * 100_000, "not a valid architecture|YAML"),
    (b"- 1\n- 2", "architecture"),
])
def test_bad_arch_files_name_the_file_and_field(tmp_path, text, message):
    path = tmp_path / "arch.yaml"
    path.write_bytes(text)
    with pytest.raises(UserError, match=message) as info:
        sk.load_model(f"arch:{path}")
    assert str(path) in str(info.value)


def test_inline_arch_json_is_checked_too():
    with pytest.raises(UserError, match="nested too deeply|not valid JSON|not a valid architecture"):
        sk.load_model("arch:{" + "[" * 100_000)
    with pytest.raises(UserError, match="parameters is more than"):
        sk.load_model('arch:{"input_shape": [1, 8, 8], "num_classes": 10, "stem": 65536, '
                      '"blocks": [{"type": "basic", "out": 65536}]}')


TINY_BERT = {"model_type": "bert", "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
             "intermediate_size": 16, "vocab_size": 30}


@pytest.mark.parametrize("files, message", [
    ({}, "no config.json there"),
    ({"config.json": b"\xff"}, "not UTF-8"),
    ({"config.json": b"[1, 2]"}, "not a JSON object"),
    ({"config.json": b'{"model_type": "no-such-model"}'}, "transformers cannot load this folder"),
    ({"config.json": json.dumps({"model_type": "evil", "auto_map": {"AutoConfig": "evil.Config"}}).encode()},
     "transformers cannot load this folder"),
    ({"config.json": json.dumps({**TINY_BERT, "vocab_size": 10**9}).encode()}, "parameters is more than"),
    ({"config.json": json.dumps(TINY_BERT).encode(), "pytorch_model.bin": "pickle"}, "model.safetensors"),
])
def test_bad_hf_folders(tmp_path, files, message):
    pytest.importorskip("transformers")
    marker = tmp_path / "unpickled"

    class Evil:
        def __reduce__(self):
            return open, (str(marker), "w")

    folder = tmp_path / "hf"
    folder.mkdir()
    for name, content in files.items():
        (folder / name).write_bytes(pickle.dumps(Evil()) if content == "pickle" else content)
    with pytest.raises(UserError, match=message) as info:
        sk.load_model(f"hf:{folder}")
    assert str(folder) in str(info.value)
    assert not marker.exists()
