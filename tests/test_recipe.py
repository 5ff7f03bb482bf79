import dataclasses
import json

import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.errors import UserError
from slimkit.quantize import QAT, Mixed
from slimkit.recipe import Recipe, StepConfig, check, register


def test_yaml_and_json_round_trip(tmp_path):
    yaml_file = tmp_path / "r.yaml"
    yaml_file.write_text("version: 1\nsteps:\n  - fine_tune: {epochs: 2, lr: 0.01}\n  - export: {format: onnx}\n")
    recipe = Recipe.load(yaml_file)
    assert [s.key for s in recipe.steps] == ["fine_tune", "export"]
    assert recipe.steps[0].epochs == 2 and isinstance(recipe.steps[0].lr, float)
    json_file = tmp_path / "r.json"
    json_file.write_text(json.dumps(recipe.to_dict()))
    assert Recipe.load(json_file).to_dict() == recipe.to_dict()


@pytest.mark.parametrize(
    "steps, message",
    [
        ([{"fine_tunee": {}}], r"steps\[0\].*Unknown step 'fine_tunee'; did you mean 'fine_tune'"),
        ([{"export": {}}, {"fine_tune": {"epochz": 1}}], r"steps\[1\]\.fine_tune\.epochz: unknown field; did you mean 'epochs'"),
        ([{"fine_tune": {"lr": "fast"}}], r"steps\[0\]\.fine_tune\.lr: expected float, got 'fast'"),
        ([{"fine_tune": {"epochs": 0}}], r"steps\[0\]\.fine_tune\.epochs: must be in \[1, 1000\]"),
        ([{"fine_tune": {"epochs": True}}], r"steps\[0\]\.fine_tune\.epochs: expected int"),
        ([{"export": {"format": "tflite"}}], r"steps\[0\]\.export\.format: must be one of 'onnx'"),
        ([{"export": {}}, {"fine_tune": {}}, {"quantize": {"qat": {"lr": 5}}}],
         r"steps\[2\]\.quantize\.qat\.lr: must be in \(0, 1\], got 5"),
        ([{"quantize": {"qat": 5}}], r"steps\[0\]\.quantize\.qat: expected a mapping of QAT options, got 5"),
        ([{"quantize": {"qat": {"lsq": "yes"}}}], r"steps\[0\]\.quantize\.qat\.lsq: expected bool, got 'yes'"),
        ([{"quantize": {"qat": {"epoch": 2}}}], r"steps\[0\]\.quantize\.qat\.epoch: unknown field; did you mean 'epochs'"),
        ([{"quantize": {"mixed": [4, 8]}}], r"steps\[0\]\.quantize\.mixed: expected a mapping of Mixed options"),
        ([{"quantize": {"mixed": {"bits": [4, "8"]}}}], r"steps\[0\]\.quantize\.mixed\.bits\[1\]: expected int, got '8'"),
        ([{"quantize": {"mixed": {"size_ratio": 2}}}], r"steps\[0\]\.quantize\.mixed\.size_ratio: must be in \(0, 1\], got 2"),
        ([{"quantize": {"mixed": {"bit": [4, 8]}}}], r"steps\[0\]\.quantize\.mixed\.bit: unknown field; did you mean 'bits'"),
        ([{"export": {}, "fine_tune": {}}], r"steps\[0\] must be a single"),
        ([], r"non-empty list"),
    ],
)
def test_invalid_recipes_name_the_step_and_field(steps, message):
    with pytest.raises(UserError, match=message):
        Recipe.from_dict({"version": 1, "steps": steps})


def test_nested_options_round_trip_as_plain_data():
    data = {"steps": [{"quantize": {"weights": "int4", "activations": "none", "qat": {"epochs": 2, "lsq": True}}},
                      {"quantize": {"mixed": {"bits": [2, 4, 8], "size_ratio": 0.2}}}]}
    recipe = Recipe.from_dict(data)
    qat, mixed = recipe.steps[0].qat, recipe.steps[1].mixed
    assert isinstance(qat, QAT) and (qat.epochs, qat.lsq, qat.lr) == (2, True, 1e-4)
    assert isinstance(mixed, Mixed) and mixed.bits == (2, 4, 8)
    plain = json.loads(json.dumps(recipe.to_dict()))
    assert plain["steps"][1]["quantize"]["mixed"] == {"bits": [2, 4, 8], "size_ratio": 0.2, "budget_bytes": None, "samples": 1000}
    assert Recipe.from_dict(plain) == recipe
    step = recipe.steps[0]
    assert type(step).from_dict(step.to_dict()) == step  # how checkpoint histories replay a step


def test_nested_options_take_an_instance_or_a_mapping():
    qat = QAT(epochs=2)
    assert sk.Quantize(weights="int4", qat=qat).qat is qat
    assert sk.Quantize.from_dict({"weights": "int4", "qat": qat}).qat is qat
    assert sk.Quantize(weights="int4", qat={"epochs": 2}).qat == qat
    assert sk.Quantize(mixed=Mixed(size_ratio=0.3)).to_dict()["mixed"]["bits"] == [4, 8]
    with pytest.raises(ValueError, match=r"^qat\.lr: must be in \(0, 1\]"):
        sk.Quantize(weights="int4", qat={"lr": 5})


def test_wrong_version_and_top_level_key():
    with pytest.raises(UserError, match="version: 1"):
        Recipe.from_dict({"version": 2, "steps": [{"export": {}}]})
    with pytest.raises(UserError, match="unknown top-level"):
        Recipe.from_dict({"version": 1, "steps": [{"export": {}}], "stpes": []})


def test_malformed_yaml_is_a_user_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [export: {format: onnx\n")
    with pytest.raises(UserError, match="not valid YAML"):
        Recipe.load(bad)


@dataclasses.dataclass
class HalveHidden(StepConfig):
    """A test-only structural step: replaces the first Linear with a narrower one."""

    key = "halve_hidden"
    keep: int = 4

    def __post_init__(self):
        check(self.keep >= 1, "keep", "must be >= 1")


def _narrow(model: nn.Sequential, keep: int) -> nn.Sequential:
    first, last = model[0], model[2]
    model[0] = nn.Linear(first.in_features, keep)
    model[2] = nn.Linear(keep, last.out_features)
    return model


@register(HalveHidden, replay=lambda model, entry: _narrow(model, entry["replay"]["keep"]))
def _halve_hidden(model, cfg, ctx):
    old0, old2 = model[0], model[2]
    _narrow(model, cfg.keep)
    with torch.no_grad():
        model[0].weight.copy_(old0.weight[: cfg.keep])
        model[0].bias.copy_(old0.bias[: cfg.keep])
        model[2].weight.copy_(old2.weight[:, : cfg.keep])
        model[2].bias.copy_(old2.bias)
    ctx.record({"keep": cfg.keep})
    return model


def mlp():
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


def test_registry_is_open_and_structural_steps_replay_from_checkpoints(tmp_path):
    model = sk.load_model("tests.test_recipe:mlp")
    recipe = Recipe.from_dict({"steps": [{"halve_hidden": {"keep": 5}}]})
    x = torch.randn(4, 6)
    small = sk.apply(model, recipe.steps[0], example_inputs=(x[:1],))
    assert small[0].out_features == 5
    sk.save_checkpoint(small, tmp_path / "ck")
    history = json.loads((tmp_path / "ck" / "history.json").read_text())
    assert history["base"] == "tests.test_recipe:mlp"
    assert history["history"] == [{"step": "halve_hidden", "config": {"keep": 5}, "replay": {"keep": 5}}]
    reloaded = sk.load_model(str(tmp_path / "ck"), base="tests.test_recipe:mlp")
    assert reloaded[0].out_features == 5
    torch.testing.assert_close(reloaded(x), small(x), rtol=0, atol=0)


@pytest.mark.parametrize("config", [sk.Quantize(activations="none"), sk.MagnitudePrune(sparsity=0.5), sk.ChannelPrune(ratio=0.5), sk.LowRank(energy=0.9)])
def test_apply_returns_a_new_model_and_leaves_its_input_alone(config):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.Linear(8 * 4 * 4, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    after = sk.apply(model, config, example_inputs=(torch.randn(2, 1, 8, 8),))
    assert after is not model
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in before.items()}
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    assert type(model[0]) is nn.Conv2d and not list(model[0].parametrizations.keys() if hasattr(model[0], "parametrizations") else [])


def test_compress_leaves_its_input_model_alone(tmp_path):
    torch.manual_seed(0)
    model = sk.load_model("zoo:digits-cnn")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    recipe = sk.Recipe([sk.Quantize(activations="none"), sk.ChannelPrune(ratio=0.5)])
    sk.compress(model, recipe, example_inputs=(torch.randn(1, 1, 8, 8),), out_dir=tmp_path / "run", backends=(), progress=False)
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_registering_a_taken_key_is_an_error_unless_replace():
    @dataclasses.dataclass
    class Impostor(StepConfig):
        key = "quantize"

    sk.Quantize()  # the built-in quantize step is registered
    with pytest.raises(ValueError, match="already registered by slimkit.quantize.config.Quantize; pass replace=True"):
        register(Impostor)(lambda model, cfg, ctx: model)
    from slimkit.recipe import config_class

    assert config_class("quantize") is sk.Quantize


PLUGIN = '''
import dataclasses

import torch

import slimkit as sk


@dataclasses.dataclass
class ScaleWeights(sk.StepConfig):
    """Multiply every weight by ``factor`` (a third-party step for the entry point test)."""

    key = "scale_weights"
    factor: float = 1.0


@sk.register(ScaleWeights)
def scale_weights(model, cfg, ctx):
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(cfg.factor)
    return model
'''


def test_a_step_from_an_installed_package_reaches_the_cli_through_its_entry_point(tmp_path):
    """docs/extending.md's recipe: a separate package declares ``[slimkit.steps] scale_weights = MODULE``."""
    import subprocess
    import sys

    site = tmp_path / "site"
    (site / "slimkit_scale_plugin-0.1.dist-info").mkdir(parents=True)
    (site / "slimkit_scale_plugin-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: slimkit-scale-plugin\nVersion: 0.1\n")
    (site / "slimkit_scale_plugin-0.1.dist-info" / "entry_points.txt").write_text("[slimkit.steps]\nscale_weights = slimkit_scale_plugin\n")
    (site / "slimkit_scale_plugin.py").write_text(PLUGIN)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("steps:\n  - scale_weights: {factor: 0.5}\n")
    env = {**__import__("os").environ, "PYTHONPATH": str(site)}
    done = subprocess.run([sys.executable, "-m", "slimkit", "compress", "--model", "zoo:digits-cnn", "--data", "digits",
                           "--recipe", str(recipe), "--out", str(tmp_path / "run"), "--backends", "eager"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert [s["name"] for s in report["steps"]] == ["scale_weights"] and report["steps"][0]["config"] == {"factor": 0.5}
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("steps:\n  - scale_weight: {factor: 0.5}\n")
    done = subprocess.run([sys.executable, "-m", "slimkit", "compress", "--model", "zoo:digits-cnn", "--data", "digits",
                           "--recipe", str(wrong), "--out", str(tmp_path / "run2")], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and "did you mean 'scale_weights'" in done.stderr
