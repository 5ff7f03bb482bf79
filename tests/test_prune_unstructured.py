"""MagnitudePrune (schedules, sparse storage), importance criteria and NMSparsity."""
import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import slimkit
from slimkit.data.task import Task
from slimkit.errors import UserError
from slimkit.measure.metric import evaluate
from slimkit.prune import MagnitudePrune, NMSparsity, Snip, Taylor, criterion, ranked_masks
from slimkit.measure import measure
from slimkit.measure.size import sparse_size
from slimkit.models.storage import pack_sparse, state_bytes, unpack_sparse
from slimkit.prune.unstructured import Gradual, schedule
from slimkit.train import FineTune, fit

pytestmark = pytest.mark.usefixtures("one_thread")


def two_layers() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    with torch.no_grad():
        model[0].weight.mul_(10)  # the first layer's weights are ten times larger
    return model


def zeros(t: torch.Tensor) -> float:
    return float((t == 0).float().mean())


def test_global_scope_prunes_the_small_weights_wherever_they_are():
    model = slimkit.apply(two_layers(), MagnitudePrune(sparsity=0.25), example_inputs=(torch.randn(1, 16),))
    first, second = model[0].weight, model[2].weight
    assert int((first == 0).sum() + (second == 0).sum()) == round(0.25 * (512 + 128))
    assert zeros(second) > 0.9 and zeros(first) < 0.1


def test_layer_scope_gives_every_layer_the_same_sparsity():
    model = slimkit.apply(two_layers(), MagnitudePrune(sparsity=0.75, scope="layer", importance="l2"),
                          example_inputs=(torch.randn(1, 16),))
    assert zeros(model[0].weight) == 0.75 and zeros(model[2].weight) == 0.75


def test_masks_are_made_permanent_as_plain_tensors():
    model = slimkit.apply(two_layers(), MagnitudePrune(sparsity=0.5), example_inputs=(torch.randn(1, 16),))
    assert not parametrize.is_parametrized(model[0])
    assert set(model.state_dict()) == {"0.weight", "0.bias", "2.weight", "2.bias"}


def test_ignored_layers_stay_dense():
    model = slimkit.apply(two_layers(), MagnitudePrune(sparsity=0.5, ignore=("2",)), example_inputs=(torch.randn(1, 16),))
    assert zeros(model[2].weight) == 0 and zeros(model[0].weight) == 0.5


def test_cubic_schedule_reaches_the_target():
    assert schedule(0.9, 3) == pytest.approx([0.9 * (1 - (2 / 3) ** 3), 0.9 * (1 - (1 / 3) ** 3), 0.9])


def test_iterative_pruning_keeps_masks_through_fine_tuning(digits):
    model = slimkit.load_model("zoo:digits-cnn")
    fit(model, digits, FineTune(epochs=6, lr=0.1, batch_size=64), progress=False)
    cfg = MagnitudePrune(sparsity=0.8, steps=2, epochs=2, lr=0.05)
    assert cfg.needs_data
    pruned = slimkit.apply(model, cfg, data=digits)
    convs = [m.weight for m in pruned.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    total = sum(w.numel() for w in convs)
    assert sum(int((w == 0).sum()) for w in convs) == pytest.approx(0.8 * total, abs=1)
    assert evaluate(pruned, digits)["value"] > 0.85


def test_a_fine_tune_step_after_pruning_keeps_the_pruned_weights_zero(trained_digits_cnn, digits):
    pruned = slimkit.apply(copy.deepcopy(trained_digits_cnn), MagnitudePrune(sparsity=0.7), data=digits)
    zeros = {n: p == 0 for n, p in pruned.named_parameters() if p.dim() > 1}
    tuned = slimkit.apply(pruned, FineTune(epochs=1, lr=0.05, batch_size=64, max_batches=10), data=digits)
    params = dict(tuned.named_parameters())
    assert all(bool((params[n][z] == 0).all()) for n, z in zeros.items())  # still zero, masks gone (plain names)
    regrown = slimkit.apply(copy.deepcopy(pruned), FineTune(epochs=1, lr=0.05, batch_size=64, max_batches=10,
                                                             keep_zeros=False), data=digits)
    regrown_params = dict(regrown.named_parameters())
    assert sum(int((regrown_params[n][z] != 0).sum()) for n, z in zeros.items()) > 0.5 * sum(int(z.sum()) for z in zeros.values())


def test_fine_tuning_steps_need_data():
    with pytest.raises(UserError, match="needs training data"):
        slimkit.apply(two_layers(), MagnitudePrune(epochs=1), example_inputs=(torch.randn(1, 16),))
    with pytest.raises(ValueError, match="epochs"):
        MagnitudePrune(steps=3)
    with pytest.raises(ValueError, match="sparsity"):
        MagnitudePrune(sparsity=1.0)


def linear_task() -> tuple[nn.Module, Task]:
    torch.manual_seed(0)
    x, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
    return nn.Sequential(nn.Linear(5, 3, bias=False)), Task("toy", (x, y), (x, y))


def test_lamp_ignores_layer_scale_and_leaves_no_layer_empty():
    model = two_layers()
    layers = {"0": model[0], "2": model[2]}
    scores = criterion("lamp").score(model, layers)
    w = model[2].weight.detach().flatten().double().pow(2)
    i = int(w.argsort()[5])  # the 6th smallest: its square over the squares of itself and every larger weight
    assert float(scores["2"].flatten()[i]) == pytest.approx(float(w[i] / w[w >= w[i]].sum()), rel=1e-5)
    assert all(float(s.max()) == 1.0 for s in scores.values())  # each layer's largest weight
    with torch.no_grad():
        model[0].weight.div_(10)  # undo the first layer's scale: LAMP scores do not change
    torch.testing.assert_close(criterion("lamp").score(model, layers)["0"], scores["0"])
    pruned = slimkit.apply(two_layers(), MagnitudePrune(sparsity=0.9, importance="lamp"), example_inputs=(torch.randn(1, 16),))
    assert 0.5 < zeros(pruned[0].weight) < 0.99 and 0.5 < zeros(pruned[2].weight) < 0.99
    l1 = slimkit.apply(two_layers(), MagnitudePrune(sparsity=0.9), example_inputs=(torch.randn(1, 16),))
    assert zeros(l1[2].weight) == 1.0  # raw magnitudes empty the small-scaled layer


def test_taylor_is_weight_times_mean_gradient():
    model, task = linear_task()
    layers = {"0": model[0]}
    scores = Taylor(batches=2, batch_size=32).score(model, layers, task)["0"]
    loss = sum(nn.functional.cross_entropy(model(task.train[0][i:i + 32]), task.train[1][i:i + 32]) for i in (0, 32)) / 2
    (grad,) = torch.autograd.grad(loss, [model[0].weight])
    torch.testing.assert_close(scores, (model[0].weight * grad).abs().detach())


def test_snip_scores_sum_to_one_and_random_is_seeded():
    model, task = linear_task()
    layers = {"0": model[0]}
    assert float(Snip().score(model, layers, task)["0"].sum()) == pytest.approx(1.0)
    a, b = (criterion("random").score(model, layers)["0"] for _ in range(2))
    assert torch.equal(a, b)


def test_ranked_masks_count_exactly():
    scores = {"a": torch.arange(10.0), "b": torch.arange(10.0) + 5}
    masks = ranked_masks(scores, 0.3, "global")
    assert masks["a"].tolist() == [False] * 6 + [True] * 4 and masks["b"].all()
    assert [int((~m).sum()) for m in ranked_masks(scores, 0.3, "layer").values()] == [3, 3]


def test_two_four_sparsity_keeps_the_two_largest_of_every_four():
    model = nn.Sequential(nn.Linear(8, 4), nn.Conv2d(4, 2, 1), nn.Linear(6, 2))
    before = model[0].weight.detach().clone()
    with pytest.warns(UserWarning, match="skipped 2: its rows of 6 weights"):
        ctx_model = slimkit.apply(model, NMSparsity(), example_inputs=(torch.randn(1, 8),))
    groups = ctx_model[0].weight.detach().view(-1, 4)
    assert ((groups != 0).sum(1) == 2).all()
    expected = before.view(-1, 4).abs().topk(2, dim=1).values.sort(1).values
    torch.testing.assert_close(groups.abs().sort(1).values[:, 2:], expected)
    assert ((ctx_model[1].weight.view(-1, 4) != 0).sum(1) == 2).all()
    assert (ctx_model[2].weight != 0).all()
    with pytest.raises(ValueError, match="n"):
        NMSparsity(n=4, m=4)


def test_gradual_updates_follow_the_cubic_ramp_over_the_first_half_of_training():
    targets, when = [], []
    gradual = Gradual(targets.append, schedule(0.8, 4))
    gradual.on_step(None, 0, 1)  # the first update, before training
    for step in range(1, 101):
        done = len(targets)
        gradual.on_step(None, step, 100)
        when += [step] * (len(targets) - done)
    assert when == [13, 25, 38] and targets == pytest.approx(schedule(0.8, 4))


def test_gradual_pruning_with_distillation_keeps_accuracy(trained_digits_cnn, digits):
    cfg = MagnitudePrune(sparsity=0.8, schedule="gradual", steps=4, epochs=3, lr=0.05, distill=True)
    pruned = slimkit.apply(copy.deepcopy(trained_digits_cnn), cfg, data=digits)
    weights = [m.weight for m in pruned.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    total = sum(w.numel() for w in weights)
    assert sum(int((w == 0).sum()) for w in weights) == pytest.approx(0.8 * total, abs=1)
    assert evaluate(pruned, digits)["value"] > 0.9


def test_schedule_options_are_validated():
    with pytest.raises(ValueError, match="epochs: gradual pruning happens during training"):
        MagnitudePrune(schedule="gradual", steps=1)
    with pytest.raises(ValueError, match="distill: distillation needs training"):
        MagnitudePrune(distill=True)
    with pytest.raises(UserError, match="ignore: 'layer9' matches no module"):
        slimkit.apply(two_layers(), MagnitudePrune(ignore=("layer9",)), example_inputs=(torch.randn(1, 16),))


def test_pack_sparse_round_trips_exactly_and_keeps_dense_tensors_dense():
    state = {"a": torch.tensor([[0.0, 1.5, 0.0], [0.0, 0.0, -2.0]]), "b": torch.randn(3),
             "n": torch.tensor(5), "h": torch.zeros(100, dtype=torch.float16)}
    state["h"][7] = 3.0
    tensors, metadata = pack_sparse(state)
    assert set(tensors) == {"a.mask", "a.values", "b", "n", "h.mask", "h.values"}
    assert tensors["h.mask"].numel() == 13 and tensors["h.values"].tolist() == [3.0]
    again = unpack_sparse(tensors, metadata)
    assert set(again) == set(state)
    for name, tensor in state.items():
        assert torch.equal(again[name], tensor) and again[name].dtype == tensor.dtype


def test_sparse_checkpoint_is_small_and_reloads_exactly(tmp_path, trained_digits_cnn):
    x = torch.randn(1, 1, 8, 8)
    pruned = slimkit.apply(copy.deepcopy(trained_digits_cnn), MagnitudePrune(sparsity=0.9), example_inputs=(x,))
    slimkit.save_checkpoint(pruned, tmp_path / "ckpt")
    stored, dense = (tmp_path / "ckpt" / "model.safetensors").stat().st_size, len(state_bytes(pruned))
    assert stored == sparse_size(pruned) and stored < 0.35 * dense  # headers and dense BN tensors stay
    metrics = measure(pruned, (x,), backends=())
    assert (metrics["size_bytes"], metrics["sparse_size_bytes"]) == (dense, stored)
    again = slimkit.load_model(str(tmp_path / "ckpt"))
    for name, tensor in pruned.state_dict().items():
        assert torch.equal(again.state_dict()[name], tensor), name
