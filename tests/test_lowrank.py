import math

import pytest
import torch
from torch import nn

import slimkit as sk
from slimkit.lowrank import LowRank, energy_rank, factorise, vbmf_rank
from slimkit.lowrank.step import low_rank
from slimkit.measure.counts import count_macs
from slimkit.measure.metric import evaluate
from slimkit.pipeline import Context
from slimkit.recipe import Recipe


pytestmark = pytest.mark.usefixtures("one_thread")


def rel_error(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_svd_error_follows_discarded_singular_values():
    layer = nn.Linear(64, 48)
    x = torch.randn(32, 64)
    s2 = torch.linalg.svdvals(layer.weight.detach().double()).square()
    errors = []
    for r in (4, 16, 32, 48):
        seq = factorise(layer, "svd", [r])
        weight = seq[1].weight @ seq[0].weight
        expected = math.sqrt(s2[r:].sum() / s2.sum())
        assert rel_error(weight, layer.weight) == pytest.approx(expected, abs=1e-5)
        errors.append(rel_error(seq(x) - layer.bias, layer(x) - layer.bias))
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-5
    assert energy_rank(layer.weight, 1.0) == 48
    r = energy_rank(layer.weight, 0.8)
    assert s2[:r].sum() / s2.sum() >= 0.8 > s2[: r - 1].sum() / s2.sum()


@pytest.mark.parametrize("kind, ranks, tol", [("tucker", [24, 16], 1e-5), ("cp", [144], 1e-3), ("svd", [16], 1e-5)])
def test_full_rank_conv_factorisations_are_exact(kind, ranks, tol):
    k = 1 if kind == "svd" else 3
    conv = nn.Conv2d(16, 24, k, stride=2, padding=k // 2)
    x = torch.randn(2, 16, 9, 9)
    seq = factorise(conv, kind, ranks)
    assert rel_error(seq(x), conv(x)) < tol


def test_tucker_error_falls_as_rank_grows():
    conv = nn.Conv2d(16, 24, 3, padding=1)
    x = torch.randn(2, 16, 8, 8)
    errors = [rel_error(factorise(conv, "tucker", [r, r])(x), conv(x)) for r in (2, 6, 12, 16)]
    assert errors == sorted(errors, reverse=True) and errors[0] > 0.3


def test_vbmf_recovers_the_rank_of_a_noisy_low_rank_matrix():
    signal = torch.randn(60, 5) @ torch.randn(5, 80)
    assert vbmf_rank(signal + 0.1 * torch.randn(60, 80)) == 5
    assert vbmf_rank((signal + 0.1 * torch.randn(60, 80)).T) == 5


def _context(model, x):
    return Context((x,), None, None, model)


def test_mac_target_halves_every_decomposed_layer(digits):
    model = sk.load_model("zoo:digits-cnn")
    x = digits.example_inputs(1)[0]
    _, dense = count_macs(model, (x,))
    ctx = _context(model, x)
    model = low_rank(model, LowRank(rank_by="macs", target_macs=0.5), ctx)
    total, layers = count_macs(model, (x,))
    assert set(ctx.replay["layers"]) == set(dense)  # every conv and the classifier were factorised
    for name, entry in ctx.replay["layers"].items():
        new = sum(v for k, v in layers.items() if k.startswith(name + "."))
        assert new <= 0.5 * dense[name], (name, entry)
    assert total <= 0.5 * sum(dense.values())


@pytest.mark.parametrize("rank_by", ["macs", "energy"])
def test_round_to_gives_ranks_in_multiples_of_8(rank_by):
    model = sk.load_model("zoo:fashion-cnn")
    x = torch.randn(1, 1, 28, 28)
    cfg = dict(rank_by=rank_by, layers=("blocks.*.conv*",), target_macs=0.6, energy=0.6)
    plain, eights = _context(model, x), _context(model, x)
    low_rank(sk.load_model("zoo:fashion-cnn"), LowRank(**cfg), plain)
    low_rank(sk.load_model("zoo:fashion-cnn"), LowRank(**cfg, round_to=8), eights)
    assert eights.replay["layers"].keys() == plain.replay["layers"].keys()
    _, dense = count_macs(model, (x,))
    for name, entry in eights.replay["layers"].items():
        ranks, unrounded = entry["ranks"], plain.replay["layers"][name]["ranks"]
        assert all(r % 8 == 0 for r in ranks), (name, ranks)
        if rank_by == "energy":  # rounded up: at least the energy asked for
            assert all(r >= u for r, u in zip(ranks, unrounded))
    if rank_by == "macs":  # still within each layer's MAC target
        model = low_rank(model, LowRank(**cfg, round_to=8), _context(model, x))
        _, layers = count_macs(model, (x,))
        for name in eights.replay["layers"]:
            assert sum(v for k, v in layers.items() if k.startswith(name + ".")) <= 0.6 * dense[name]


def test_layers_that_would_not_save_macs_are_left_alone_and_listed(digits):
    model = sk.load_model("zoo:digits-cnn")
    x = digits.example_inputs(1)[0]
    ctx = _context(model, x)
    low_rank(model, LowRank(energy=1.0, conv="tucker"), ctx)
    assert ctx.replay is None  # full rank never pays: nothing replaced
    assert "left alone" in ctx.notes[-1] and "stem.0" in ctx.notes[-1] and "fc" in ctx.notes[-1]
    assert all(isinstance(m, (nn.Conv2d, nn.Linear)) for n, m in model.named_modules() if n in ("stem.0", "fc"))


def test_rank_larger_than_layer_allows_is_a_clear_error(digits):
    model = sk.load_model("zoo:digits-cnn")
    with pytest.raises(sk.UserError, match=r"rank 9 is larger than layer 'blocks.0.conv1' allows"):
        sk.apply(model, LowRank(rank_by="fixed", rank=9, layers=("blocks.0.conv1",)), data=digits)
    with pytest.raises(sk.UserError, match="rank: is required"):
        Recipe.from_dict({"steps": [{"low_rank": {"rank_by": "fixed"}}]})
    with pytest.raises(sk.UserError, match="low_rank.layers: 'block.0.*' matches no Linear/Conv2d layer"):
        sk.apply(model, LowRank(layers=("block.0.*",)), data=digits)


@pytest.mark.parametrize("conv", ["tucker", "cp"])
def test_checkpoint_round_trip_rebuilds_the_factorised_model(digits, tmp_path, conv):
    model = sk.load_model("zoo:digits-cnn")
    recipe = Recipe.from_dict({"steps": [{"low_rank": {"conv": conv, "rank_by": "macs", "target_macs": 0.6}}]})
    small = sk.apply(model, recipe.steps[0], data=digits)
    sk.save_checkpoint(small, tmp_path / "ckpt")
    loaded = sk.load_model(str(tmp_path / "ckpt"))
    x = digits.test[0][:16]
    assert str(loaded) == str(small)
    assert torch.equal(loaded(x), small.eval()(x))


def test_fashion_cnn_keeps_accuracy_at_95_percent_energy(fashion):
    task = fashion.subset(train=0, test=500)
    model = sk.load_model("zoo:fashion-cnn")
    x = task.example_inputs(1)
    before, macs_before = evaluate(model, task)["value"], count_macs(model, x)[0]
    small = sk.apply(model, LowRank(energy=0.95, layers=("blocks.0.*", "blocks.1.*")), example_inputs=x)
    after, macs_after = evaluate(small, task)["value"], count_macs(small, x)[0]
    assert macs_after < 0.85 * macs_before
    assert after >= before - 0.02
