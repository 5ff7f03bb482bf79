"""Compression policy search: per-group ChannelPrune ratios, sensitivity, Optuna policy search, NetAdapt, bench."""
import copy
import json
import random

import pytest
import torch

import slimkit
from slimkit.errors import UserError
from slimkit.measure.counts import count_macs
from slimkit.measure.metric import evaluate
from slimkit.prune import ChannelPrune, ChannelPruner, shrink
from slimkit.recipe import ConfigError, Recipe
from slimkit.search.netadapt import netadapt
from slimkit.search.policy import PruningProblem, holdout, recalibrate_bn, search_policy
from slimkit.search.sensitivity import prune_sensitivity, ratio_caps
from test_prune_zoo import ZOO, PlainStack

from benches import load_bench

pytestmark = pytest.mark.usefixtures("one_thread")
X16 = (torch.randn(1, 3, 16, 16),)


# -- ChannelPrune per-group ratios ------------------------------------------------------------------

def test_pattern_ratios_override_the_global_ratio_per_group():
    model = slimkit.apply(PlainStack(), ChannelPrune(ratio=0.0, ratios={"features.2.*": 0.5}), example_inputs=X16)
    assert (model.features[0][0].out_channels, model.features[2][0].out_channels, model.fc.in_features) == (16, 16, 256)
    # the first matching pattern wins; the global ratio covers the rest
    model = slimkit.apply(PlainStack(), ChannelPrune(ratio=0.25, ratios={"features.0.0": 0.5, "features.*": 0.75}),
                          example_inputs=X16)
    assert (model.features[0][0].out_channels, model.features[2][0].out_channels) == (8, 8)


def test_target_macs_solves_only_the_groups_without_their_own_ratio():
    model = PlainStack().eval()
    base = count_macs(model, X16)[0]
    pruned = slimkit.apply(model, ChannelPrune(target_macs=0.4, ratios={"features.0.0": 0.0}), example_inputs=X16)
    assert pruned.features[0][0].out_channels == 16
    assert 0.3 < count_macs(pruned, X16)[0] / base <= 0.4
    assert pruned.slimkit_origin["history"][0]["replay"]["ratios"][0] == 0.0


def test_per_group_ratios_survive_checkpoint_and_recipe_round_trip(tmp_path, digits):
    x = digits.example_inputs(4)
    recipe = Recipe.from_dict({"version": 1, "steps": [{"channel_prune": {"ratio": 0, "ratios": {"blocks.1.*": 0.5}}}]})
    pruned = slimkit.apply(slimkit.load_model("zoo:digits-cnn"), recipe.steps[0], example_inputs=x[:1])
    assert pruned.blocks[1].conv1.out_channels == 8 and pruned.blocks[0].conv1.out_channels == 8
    slimkit.save_checkpoint(pruned, tmp_path / "ckpt")
    again = slimkit.load_model(str(tmp_path / "ckpt"))
    assert torch.equal(again(*x), pruned(*x))
    assert Recipe.from_dict(recipe.to_dict()).steps[0].ratios == {"blocks.1.*": 0.5}


def test_bad_ratio_patterns_are_user_errors_naming_the_fix():
    with pytest.raises(ConfigError, match="empty module-name pattern"):
        ChannelPrune(ratios={" ": 0.5})
    with pytest.raises(UserError, match=r"ratios\.fc: must be in \[0, 1\)"):
        Recipe.from_dict({"version": 1, "steps": [{"channel_prune": {"ratios": {"fc": 1.0}}}]})
    with pytest.raises(UserError, match="'features.9' matches no layer.*use one of features.0.0, features.2.0"):
        slimkit.apply(PlainStack(), ChannelPrune(ratios={"features.9": 0.5}), example_inputs=X16)


def test_analytic_macs_equal_measured_macs_of_the_pruned_model():
    rng = random.Random(0)
    for build, shape in ZOO.values():
        model, x = build().eval(), torch.randn(shape)
        pruner = ChannelPruner(model, (x,))
        ratios = [rng.uniform(0, 0.9) for _ in pruner.groups]
        pruned = shrink(copy.deepcopy(model), pruner.plan(ratios))
        assert pruner.macs(ratios) == count_macs(pruned, (x,))[0]


# -- policy search ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def problem(trained_digits_cnn, digits):
    train, val = holdout(digits, 400)
    return PruningProblem(copy.deepcopy(trained_digits_cnn), val, target_macs=0.5, recal_batches=4, batch_size=64)


def test_holdout_keeps_the_test_split_out_of_the_search(digits):
    train, val = holdout(digits, 400)
    n = len(digits.train[0])
    assert len(train.train[0]) == len(val.train[0]) == n - 400 and len(val.test[0]) == 400
    assert torch.equal(val.test[0], digits.train[0][-400:]) and train.test is digits.test


def test_bn_recalibration_restores_accuracy_after_pruning(problem):
    ratios = [0.5] * problem.n_groups
    raw = evaluate(problem.pruned(ratios), problem.val)["value"]
    recal = evaluate(recalibrate_bn(problem.pruned(ratios), problem.val, 4, 64), problem.val)["value"]
    assert recal == problem.score(ratios)
    assert recal > raw + 0.05


def test_projection_lands_on_the_budget_from_both_sides(problem):
    caps = [0.9] * problem.n_groups
    over = problem.project([0.05] * problem.n_groups, caps)
    under = problem.project([0.8] * problem.n_groups, caps)
    assert problem.feasible(over) and problem.feasible(under)
    assert all(0.05 < r <= 0.9 for r in over) and all(r < 0.8 for r in under)
    # tight: one step back along each segment misses the budget (digits-cnn's 8/16-channel groups are coarse)
    assert not problem.feasible([r - 0.01 * (0.9 - 0.05) for r in over])
    assert not problem.feasible([r * 0.99 for r in under])


def test_sensitivity_caps_the_space_and_search_respects_budget_and_caps(problem, tmp_path):
    base, drops = prune_sensitivity(problem, (0.25, 0.75), progress=False)
    assert base == problem.score([0.0] * problem.n_groups) and base > 0.9
    assert all(d[0.75] > d[0.25] - 0.02 for d in drops)  # pruning more of one group costs more (or about the same)
    caps, tolerance = ratio_caps(problem, drops, 0.02)
    assert all(c == (0.25 if d[0.25] > tolerance else 0.75) for c, d in zip(caps, drops)) and problem.feasible(caps)
    policy, study = search_policy(problem, 6, caps, progress=False)
    assert len(study.trials) == 6 and study.trials[0].user_attrs["ratios"] == problem.project(
        [min(r, c) for r, c in zip(problem.uniform(), caps)], caps)
    for trial in study.trials:
        assert 0.35 < trial.user_attrs["macs_fraction"] <= 0.5
        assert all(r <= c + 1e-9 for r, c in zip(trial.user_attrs["ratios"], caps))
    assert policy.score == max(t.value for t in study.trials)
    # the exported recipe prunes exactly as the policy: same MACs, same proxy score
    recipe = Recipe.load(policy.save_recipe(tmp_path / "policy.yaml", slimkit.FineTune(max_batches=1)))
    assert [s.key for s in recipe.steps] == ["channel_prune", "fine_tune"]
    model = slimkit.apply(copy.deepcopy(problem.model), recipe.steps[0], example_inputs=problem.val.example_inputs(1))
    assert count_macs(model, problem.val.example_inputs(1))[0] == round(policy.macs_fraction * problem.base_macs)
    assert evaluate(recalibrate_bn(model, problem.val, 4, 64), problem.val)["value"] == policy.score


def test_netadapt_shrinks_one_group_per_iteration_down_to_the_budget(problem):
    policy, history = netadapt(problem, step=0.2, progress=False)
    macs = [1.0] + [h["macs_fraction"] for h in history]
    # each iteration removes at least one step of MACs (channels are discrete), or reaches the budget
    assert len(history) == 3 and all(b <= max(0.5, a - 0.2) for a, b in zip(macs, macs[1:]))
    assert len({h["group"] for h in history}) > 1 and all(0 < h["ratio"] < 0.9 for h in history)
    assert 0.35 < policy.macs_fraction <= 0.5 and policy.score == history[-1]["score"]


def test_bad_budgets_and_settings_are_user_errors(trained_digits_cnn, digits, problem):
    val = holdout(digits, 400)[1]
    for target in (0.0, 1.0, 1.5):
        with pytest.raises(UserError, match=r"target_macs must be the fraction of MACs kept, in \(0, 1\)"):
            PruningProblem(trained_digits_cnn, val, target)
    with pytest.raises(UserError, match="n_val must be between 1 and"):
        holdout(digits, len(digits.train[0]))
    with pytest.raises(UserError, match="step must be"):
        netadapt(problem, step=1.5)
    with pytest.raises(UserError, match="tolerance must be > 0"):
        ratio_caps(problem, [], 0)
    with pytest.raises(UserError, match="cannot be reached with the ratio caps"):
        problem.project([0.0] * problem.n_groups, [0.01] * problem.n_groups)


# -- bench ------------------------------------------------------------------------------------------

def test_policy_search_bench_smoke(tmp_path):
    out = tmp_path / "policy.json"
    result = load_bench("policy_search").main(["--smoke", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    rows = result["results"]
    assert set(rows) == {"uniform", "search", "netadapt"} and result["checks"] is None
    for row in rows.values():
        assert 0.4 < row["macs_fraction"] <= 0.5 and 0.3 < row["params_fraction"] < 0.6
        assert 0 <= row["top1"] <= 1 and len(row["policy"]) == 6
    assert len(set(rows["uniform"]["policy"].values())) == 1
    assert rows["search"]["val_top1_proxy"] >= rows["uniform"]["val_top1_proxy"]  # the search starts from uniform
    first = result["search_history"][0]  # the uniform policy, projected onto the budget
    assert first["ratios"] == pytest.approx([rows["uniform"]["policy"][g] for g in result["groups"]], abs=1e-3)
    assert first["macs_fraction"] == rows["uniform"]["macs_fraction"]
    recipe = Recipe.load(tmp_path / result["recipe"])
    assert recipe.steps[0].ratios == {name.split("+")[0]: r for name, r in rows["search"]["policy"].items()}
