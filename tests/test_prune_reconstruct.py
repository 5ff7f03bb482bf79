"""Least-squares reconstruction after channel pruning: exact where the removed channels carried nothing, and a
pruned model that works before any training."""
import copy

import pytest
import torch
from torch import nn

import slimkit
from slimkit.data.task import Task
from slimkit.measure.metric import evaluate
from slimkit.prune import ChannelPrune
from slimkit.recipe import ConfigError
from slimkit.prune.reconstruct import reconstruct
from slimkit.prune.surgery import shrink
from test_prune_transformer import inputs, tiny_bert

pytestmark = pytest.mark.usefixtures("one_thread")


def test_layers_reading_only_removed_dead_channels_are_refit_exactly():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU(), nn.Conv2d(8, 6, 3, stride=2, padding=1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(6 * 4 * 4, 5)).eval()
    kept = [0, 2, 3, 6]
    with torch.no_grad():
        model[0].weight[[1, 4, 5, 7]] = 0  # these channels are always 0: a layer reading only the rest can be exact
    plan = {"0": {"out": kept}, "2": {"in": kept}}
    batches = [(torch.randn(16, 3, 8, 8),) for _ in range(3)]
    pruned = shrink(copy.deepcopy(model), plan)
    scrambled = copy.deepcopy(pruned)
    with torch.no_grad():
        scrambled[2].weight.normal_()
        scrambled[2].bias.normal_()
    assert reconstruct(scrambled, model, plan, batches, ridge=1e-9) == ["2"]
    x = torch.randn(4, 3, 8, 8)
    torch.testing.assert_close(scrambled(x), model(x), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(scrambled[2].weight, pruned[2].weight, atol=1e-4, rtol=0)


def test_reconstruction_turns_a_broken_pruned_cnn_into_a_working_one(trained_digits_cnn, digits):
    base = evaluate(trained_digits_cnn, digits)["value"]
    plain = slimkit.apply(trained_digits_cnn, ChannelPrune(ratio=0.5), data=digits)
    refit = slimkit.apply(trained_digits_cnn, ChannelPrune(ratio=0.5, reconstruct=True, calibration_batches=4,
                                                           batch_size=128), data=digits)
    assert [m.weight.shape for m in refit.modules() if hasattr(m, "weight")] == \
           [m.weight.shape for m in plain.modules() if hasattr(m, "weight")]
    plain_top1, refit_top1 = evaluate(plain, digits)["value"], evaluate(refit, digits)["value"]
    assert plain_top1 < 0.2 and refit_top1 > 0.6 and refit_top1 < base, (base, plain_top1, refit_top1)


def test_reconstruction_brings_a_pruned_encoder_closer_to_the_original():
    pytest.importorskip("transformers")
    model = tiny_bert()
    with torch.no_grad():  # no dead units: pruning now changes the output
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 50, (256, 7), generator=gen)
    task = Task("tokens", (ids, torch.ones_like(ids)), inputs(32), "cosine", 2)
    cfg = dict(ratio=0.5, heads=0.25)
    plain = slimkit.apply(model, ChannelPrune(**cfg), data=task)
    refit = slimkit.apply(model, ChannelPrune(**cfg, reconstruct=True, calibration_batches=4, batch_size=64), data=task)
    reference = model(*task.test)
    cosine = lambda m: nn.functional.cosine_similarity(m(*task.test), reference, dim=-1).mean().item()
    plain_gap, refit_gap = 1 - cosine(plain), 1 - cosine(refit)
    assert plain_gap > 1e-5 and refit_gap < plain_gap / 10, (plain_gap, refit_gap)


def test_reconstruction_needs_data_and_positive_batches():
    assert ChannelPrune(reconstruct=True).needs_data and not ChannelPrune().needs_data
    with pytest.raises(ConfigError, match="calibration_batches: must be >= 1, got 0"):
        ChannelPrune(reconstruct=True, calibration_batches=0)
