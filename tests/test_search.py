"""slimkit search: space validation, exact-N trial counting under races and dead workers, an end-to-end
search on digits (best checkpoint, recipe and architecture reload), resume, and bad input."""
import json
import os
import re
import subprocess
import sys
import threading
import time

import pytest
import yaml

import slimkit
from slimkit.errors import UserError
from slimkit.measure.counts import count_macs, count_params
from slimkit.measure.metric import evaluate
from slimkit.search import SearchConfig, Space, counts, make_sampler, open_storage, open_study, redact, run_trials, search
from slimkit.search.objective import split
from slimkit.search.run import tidy_trials

pytestmark = pytest.mark.usefixtures("one_thread")
optuna = pytest.importorskip("optuna")

TINY = {  # a seconds-long search on digits
    "version": 1, "name": "tiny", "data": "digits", "model": {"builder": "slimkit.arch:from_params"},
    "budget": {"train": 600, "val": 300, "epochs": 2}, "objectives": ["metric"], "n_trials": 3,
    "params": {
        "train.lr": {"type": "float", "low": 0.003, "high": 0.03, "log": True},
        "train.optimizer": {"type": "categorical", "choices": ["adamw"]},
        "train.batch_size": {"type": "categorical", "choices": [32]},
        "model.stem": {"type": "int", "low": 8, "high": 16, "step": 8},
        "model.s1.block": {"type": "categorical", "choices": ["inverted_residual", "separable"]},
        "model.s1.width": {"type": "int", "low": 8, "high": 16, "step": 8},
        "model.s1.expand": {"type": "int", "low": 2, "high": 4, "when": {"model.s1.block": "inverted_residual"}},
        "model.s2.block": {"type": "categorical", "choices": ["fire", "basic"]},
        "model.s2.width": {"type": "int", "low": 16, "high": 32, "step": 16},
    },
}


def write_space(tmp_path, **changes):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({**TINY, **changes}))
    return path


@pytest.mark.parametrize("params, message", [
    ({}, "params: the search space is empty"),
    ({"x": {"type": "int", "low": 1, "high": 4, "when": {"block": "a"}}}, r"params\.x\.when: its parent 'block' is not a parameter"),
    ({"x": {"type": "int", "low": 1, "high": 4, "when": {"b": "a"}}, "b": {"type": "categorical", "choices": ["a"]}},
     r"params\.x\.when: its parent 'b' is declared below it"),
    ({"b": {"type": "categorical", "choices": ["a"]}, "x": {"type": "int", "low": 1, "high": 4, "when": {"b": "z"}}},
     r"params\.x\.when\.b: \['z'\] are not among its choices"),
    ({"x": {"type": "normal", "low": 0, "high": 1}}, r"params\.x\.type: unknown type 'normal'"),
    ({"x": {"type": "float", "low": 0, "high": 1, "log": True}}, r"params\.x\.low: a log-scale parameter needs low > 0"),
    ({"x": {"type": "categorical", "choices": []}}, r"params\.x\.choices"),
    ({"x": {"type": "int", "low": 1, "hihg": 4}}, r"params\.x\.hihg: unknown field"),
    ({"x": {"type": "float", "low": 1, "high": 1}}, r"params\.x: low \(1\) must be below high \(1\)"),
    ({"x": {"type": "float", "low": float("nan"), "high": 1}}, r"params\.x\.low: must be a finite number"),
    ({"x": {"type": "float", "low": 0, "high": float("inf")}}, r"params\.x\.high: must be a finite number"),
    ({"x": {"type": "int", "low": 0, "high": 10**30}}, r"params\.x\.high: must be a finite number within \+-2\*\*53"),
    ({"x": {"type": "float", "low": 0, "high": 1, "step": 0}}, r"params\.x\.step: must be a finite number > 0"),
    ({"x": {"type": "int", "low": 0, "high": 4, "step": 1.5}}, r"params\.x\.step: .*an integer for an int parameter"),
    ({"x": {"type": "categorical", "choices": [1, True]}}, r"params\.x\.choices: duplicate values"),
    ({"x": {"type": "categorical", "choices": [[1, 2]]}}, r"params\.x\.choices: \[\[1, 2\]\] are not plain values"),
    ({"x": {"type": "categorical", "choices": ["a"], "low": 0}}, r"params\.x: low, high, log and step belong to float"),
    ({"x": {"type": "float", "low": 0, "high": 1, "choices": [0.5]}}, r"params\.x\.choices: only categorical parameters"),
    ({"x": {"type": "int", "low": 1, "high": 4, "when": {"x": 2}}}, r"params\.x\.when: its parent 'x' is the parameter itself"),
    ({"n": {"type": "int", "low": 1, "high": 4}, "x": {"type": "int", "low": 1, "high": 4, "when": {"n": [2, 9]}}},
     r"params\.x\.when\.n: \[9\] are not among its values \(int from 1 to 4\)"),
    ({"b": {"type": "categorical", "choices": ["a"]}, "x": {"type": "int", "low": 1, "high": 4, "when": {"b": []}}},
     r"params\.x\.when\.b: no values given"),
    ({7: {"type": "int", "low": 1, "high": 4}}, r"params\.7: parameter names are non-empty strings"),
])
def test_bad_spaces_name_the_field(params, message):
    with pytest.raises(UserError, match=message):
        Space.from_dict(params)


@pytest.mark.parametrize("changes, message", [
    ({"params": {"train.lrr": {"type": "float", "low": 0.1, "high": 1}}}, r"params\.train\.lrr: 'lrr' is not a training option"),
    ({"params": {"lr": {"type": "float", "low": 0.1, "high": 1}}}, r"params\.lr: parameter names start with `train\.`"),
    ({"objectives": ["metric", "macs"], "pruner": "median"}, "pruner: Optuna's pruners work on one objective only"),
    ({"objectives": ["metric", "flops"]}, "objectives: unknown objective 'flops'"),
    ({"objectives": [{"latency": {"backend": "tensorrt"}}]}, r"objectives\.latency\.backend"),
    ({"objectives": [{"latency": {"table": "yes"}}]}, r"objectives\.latency\.table: must be true or false"),
    ({"sampler": "cmaes"}, "sampler: unknown sampler 'cmaes'"),
    ({"budget": {"epoch": 2}}, r"budget\.epoch: unknown field"),
    ({"trials": 3}, "trials: unknown key"),
    ({"name": "../x"}, r"name: must be a study name of up to 64 letters"),
    ({"data": ""}, "data: must be a dataset name"),
    ({"model": {"builder": "slimkit.arch"}}, r"model\.builder: must be a package\.module:callable"),
    ({"model": {"spec": ""}}, r"model\.spec: must be a model SPEC"),
    ({"n_trials": 0}, "n_trials: must be an integer from 1 to 100000, got 0"),
    ({"n_trials": True}, "n_trials: must be an integer from 1 to 100000, got True"),
    ({"seed": 2**32}, "seed: must be an integer from 0 to 4294967295"),
    ({"heartbeat_s": 86400}, "heartbeat_s: must be an integer from 1 to 3600"),
    ({"budget": {"epochs": 0}}, r"budget\.epochs: must be an integer from 1 to 10000"),
    ({"budget": {"train": 1.5}}, r"budget\.train: must be an integer from 1 to 1000000000 or null"),
    ({"objectives": [{"latency": {"batch": 0}}]}, r"objectives\.latency\.batch: must be an integer from 1 to 65536"),
    ({"objectives": [{"latency": {"threads": -1}}]}, r"objectives\.latency\.threads: must be an integer from 1 to 1024 or null"),
    ({"objectives": [{"macs": {"batch": 2}}]}, r"objectives\.macs: only `latency` takes options"),
])
def test_bad_search_files_name_the_field(changes, message):
    with pytest.raises(UserError, match=message):
        SearchConfig.from_dict({**TINY, **changes})


@pytest.mark.parametrize("override, message", [({"n_trials": 0}, "--n-trials: must be an integer from 1 to 100000"),
                                               ({"seed": -1}, "--seed: must be an integer from 0 to 4294967295")])
def test_cli_overrides_are_range_checked(override, message):
    with pytest.raises(UserError, match=message):
        SearchConfig.from_dict(dict(TINY)).with_overrides(**override)


@pytest.mark.parametrize("options, message", [
    ({"workers": 0}, "--workers: must be an integer from 1 to 256"),
    ({"threads": 0}, "--threads: must be an integer from 1 to 1024 or null"),
    ({"device": "gpu"}, "--device 'gpu': use cpu, cuda or cuda:N"),
    ({"device": "cuda:99"}, "--device cuda:99: .* visible"),
])
def test_bad_search_options_fail_before_anything_is_written(tmp_path, options, message):
    with pytest.raises(UserError, match=message):
        search(SearchConfig.from_dict(dict(TINY)), tmp_path / "run", progress=False, **options)
    assert not (tmp_path / "run").exists()


def test_a_budget_larger_than_the_data_fails_before_anything_is_written(tmp_path):
    config = SearchConfig.from_dict({**TINY, "budget": {"val": 1_000_000, "epochs": 1}})
    with pytest.raises(UserError, match="budget.val: 1000000 held-out samples leave none to train on"):
        search(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_out_must_not_be_a_file(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="existing file"):
        search(SearchConfig.from_dict(dict(TINY)), tmp_path / "notes.txt", threads=1, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_tidy_trials_removes_dead_writers_and_unfinished_trials_only(tmp_path):
    study = open_study(open_storage(f"sqlite:///{tmp_path}/s.db"), "tidy", make_sampler("random"), ["minimize"])
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)  # trial 0: complete
    study.optimize(lambda t: 1 / 0, n_trials=1, catch=(ZeroDivisionError,))  # trial 1: failed
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live, trials = f".0003.{os.getpid()}.abc", tmp_path / "trials"
    for name in ("0000", "0001", "0009", live, f".0002.{dead.pid}.abc", "notes"):
        (trials / name).mkdir(parents=True)
    tidy_trials(tmp_path, study)
    assert sorted(p.name for p in trials.iterdir()) == [live, "0000", "notes"]


def test_conditional_parameter_exists_only_under_its_parent():
    space = Space.from_dict(TINY["params"])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        values = space.sample(study.ask())
        assert ("model.s1.expand" in values) == (values["model.s1.block"] == "inverted_residual")
        assert 0.003 <= values["train.lr"] <= 0.03 and values["model.stem"] in (8, 16)
        seen.add(values["model.s1.block"])
    assert seen == {"inverted_residual", "separable"}


@pytest.mark.parametrize("sampler, directions", [("gp", ["maximize"]), ("nsga2", ["maximize", "minimize"]),
                                                 ("tpe", ["maximize", "minimize"])])
def test_every_sampler_drives_a_conditional_space(sampler, directions):
    space = Space.from_dict(TINY["params"])
    study = optuna.create_study(directions=directions, sampler=make_sampler(sampler, seed=0, n_trials=4))

    def objective(trial):  # best: lr near 0.01 with separable blocks; the second objective prefers a narrow stem
        v = space.sample(trial)
        score = -abs(v["train.lr"] - 0.01) + 0.1 * (v["model.s1.block"] == "separable")
        return score if len(directions) == 1 else (score, v["model.stem"])

    study.optimize(objective, n_trials=4)
    assert len(study.trials) == 4 and all(("model.s1.expand" in t.params) == (t.params["model.s1.block"] == "inverted_residual") for t in study.trials)


def test_redact_hides_passwords():
    assert redact("postgresql://ann:s3cr3t@db:5432/x") == "postgresql://ann:***@db:5432/x"
    assert redact("sqlite:////tmp/a.db") == "sqlite:////tmp/a.db"


def test_two_racing_workers_stop_at_exactly_n_finished_trials(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path}/s.db", heartbeat_s=1)
    study = open_study(storage, "race", make_sampler("random", seed=0), ["minimize"])

    def objective(trial):
        time.sleep(0.05)
        return trial.suggest_float("x", 0, 1)

    workers = [threading.Thread(target=run_trials, args=(study, objective, 7), kwargs={"poll_s": 0.05, "progress": False})
               for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    states = [t.state.name for t in study.get_trials()]
    assert states.count("COMPLETE") == 7 and "RUNNING" not in states
    assert all(t.user_attrs.get("surplus") for t in study.get_trials() if t.state.name == "FAIL")


def test_a_dead_workers_trial_is_failed_and_retried_not_lost(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path}/s.db", heartbeat_s=1)
    study = open_study(storage, "dead", make_sampler("random", seed=0), ["minimize"])
    orphan = study.ask()  # a worker took this trial, sent one heartbeat, then died (kill -9)
    x = orphan.suggest_float("x", 0, 1)
    storage.record_heartbeat(orphan._trial_id)
    time.sleep(3.2)  # past the 3 x heartbeat grace period
    assert run_trials(study, lambda t: t.suggest_float("x", 0, 1), 3, poll_s=0.05, progress=False) == 3
    trials = study.get_trials()
    assert trials[0].state.name == "FAIL" and counts(study) == (3, 0)
    assert [t.params["x"] for t in trials if t.state.name == "COMPLETE"].count(x) == 1  # its parameters were retried


def test_search_end_to_end_best_reloads_and_resume_adds_exactly_the_new_trials(tmp_path, digits):
    out = tmp_path / "run"
    config = SearchConfig.from_dict(dict(TINY))
    results = search(config, out, threads=1, progress=False)
    assert results["states"]["COMPLETE"] == 3 and results["states"]["FAIL"] == 0
    assert len(results["best_so_far"]) == 3 and results["best_so_far"] == sorted(results["best_so_far"])
    best = results["best"]
    assert best["measured"]["metric"] == max(t["values"][0] for t in results["trials"])
    assert best["measured"]["metric"] > 0.5  # digits, 600 images x 2 epochs
    model = slimkit.load_model(str(out / "best" / "checkpoint"))
    _, val, test = split(digits, config)
    assert evaluate(model, val)["value"] == pytest.approx(best["measured"]["metric"], abs=1e-6)
    assert evaluate(model, test)["value"] == pytest.approx(best["test_metric"]["value"], abs=1e-6)
    assert count_params(model)[0] == best["measured"]["params"]
    assert count_params(slimkit.load_model(f"arch:{out / 'best' / 'arch.yaml'}"))[0] == best["measured"]["params"]
    recipe = slimkit.Recipe.load(out / "best" / "recipe.yaml")
    assert recipe.steps[0].lr == pytest.approx(best["params"]["train.lr"]) and recipe.steps[0].epochs == 2
    assert "<svg" in (out / "report.html").read_text() and "Best trial" in (out / "report.md").read_text()
    first = [(t["number"], t["values"]) for t in results["trials"]]

    again = search(SearchConfig.from_dict({**TINY, "n_trials": 4}), out, threads=1, progress=False)  # resume, one more trial
    assert again["states"]["COMPLETE"] == 4
    assert [(t["number"], t["values"]) for t in again["trials"]][:3] == first
    with pytest.raises(UserError, match="another space"):
        search(SearchConfig.from_dict({**TINY, "seed": 5}), out, threads=1, progress=False)


def test_trials_train_under_torchrun_with_every_rank_sharing_each_trial(tmp_path, digits):
    # the 2 processes split each epoch's batches: 4 epochs make as many optimiser steps as 2 in one process
    out, space = tmp_path / "run", write_space(tmp_path, n_trials=2, budget={**TINY["budget"], "epochs": 4})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29519",
           "-m", "slimkit", "search", "--space", str(space), "--out", str(out), "--threads", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["states"]["COMPLETE"] == 2 and results["states"]["FAIL"] == 0
    assert [t["measured"]["processes"] for t in results["trials"]] == [2, 2]
    assert sorted(p.name for p in (out / "trials").iterdir()) == ["0000", "0001"]  # rank 0 alone saved
    model = slimkit.load_model(str(out / "best" / "checkpoint"))
    _, val, _ = split(digits, SearchConfig.load(space))
    assert evaluate(model, val)["value"] == pytest.approx(results["best"]["measured"]["metric"], abs=1e-6)
    assert results["best"]["measured"]["metric"] > 0.5


def test_workers_and_torchrun_do_not_mix(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="torchrun"):
        search(SearchConfig.from_dict(dict(TINY)), tmp_path / "run", workers=2, threads=1, progress=False)
    assert not (tmp_path / "run").exists()


def test_multi_objective_search_reports_a_pareto_front_of_measured_models(tmp_path, digits):
    config = SearchConfig.from_dict({**TINY, "budget": {"train": 300, "val": 100, "epochs": 1}, "n_trials": 3,
                                     "objectives": ["metric", "macs", {"latency": {"backend": "eager", "repeats": 3}}]})
    results = search(config, tmp_path / "mo", threads=1, progress=False)
    front = results["pareto_front"]
    assert front and results["objectives"] == ["metric", "macs", "latency_ms[eager/bs1]"]
    for row in front:
        model = slimkit.load_model(row["checkpoint"])
        assert count_macs(model, digits.example_inputs(1))[0] == row["measured"]["macs"] == row["values"][1]
        assert row["values"][2] > 0
    assert 'data-chart="search-pareto"' in (tmp_path / "mo" / "report.html").read_text()


def test_latency_table_times_each_distinct_block_once_and_sums_the_parts(tmp_path, digits):
    from slimkit.arch import from_params
    from slimkit.search.latency_table import LatencyTable

    x = digits.example_inputs(1)
    small = from_params({"stem": 8, "s1.block": "separable", "s1.width": 16, "s2.block": "fire", "s2.width": 32},
                        (1, 8, 8), 10)
    deeper = from_params({"stem": 8, "s1.block": "separable", "s1.width": 16, "s2.block": "fire", "s2.width": 32,
                          "s3.block": "basic", "s3.width": 32}, (1, 8, 8), 10)
    path = tmp_path / "table.json"
    first = LatencyTable(path, "eager", 1, 1, 3)
    estimate = first.estimate(small, x)
    assert first.timed == 4 and estimate == pytest.approx(sum(json.loads(path.read_text()).values()))  # stem, 2 blocks, head
    again = LatencyTable(path, "eager", 1, 1, 3)
    assert again.estimate(small, x) == estimate and again.timed == 0  # all from the file
    again.estimate(deeper, x)
    assert again.timed == 2 and len(json.loads(path.read_text())) == 6  # the new block, and the head at its smaller input
    with pytest.raises(UserError, match="slimkit.arch model"):
        LatencyTable(path, "eager", 1, 1, 3).estimate(slimkit.load_model("zoo:digits-cnn"), x)


def test_search_with_a_latency_table_objective(tmp_path):
    config = SearchConfig.from_dict({**TINY, "budget": {"train": 300, "val": 100, "epochs": 1}, "n_trials": 2,
                                     "objectives": ["metric", {"latency": {"backend": "eager", "repeats": 3, "table": True}}]})
    results = search(config, tmp_path / "run", threads=1, progress=False)
    assert results["objectives"] == ["metric", "latency_ms[eager/bs1, table]"]
    table = json.loads((tmp_path / "run" / "latency_table.json").read_text())
    assert all(row["values"][1] > 0 for row in results["trials"]) and len(table) >= 4


def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path, capsys):
    from slimkit.cli import main

    empty = write_space(tmp_path, params={})
    assert main(["search", "--space", str(empty), "--out", str(tmp_path / "a")]) == 2
    assert "search space is empty" in capsys.readouterr().err and not (tmp_path / "a").exists()
    good = write_space(tmp_path)
    url = "postgresql://ann:s3cr3t@127.0.0.1:9/none"
    assert main(["search", "--space", str(good), "--out", str(tmp_path / "b"), "--storage", url]) == 2
    out = capsys.readouterr()
    assert "Cannot open the study storage postgresql://ann:***@127.0.0.1:9/none" in out.err
    assert "s3cr3t" not in out.err + out.out and not (tmp_path / "b").exists()


LR = {"train.lr": {"type": "float", "low": 0.01, "high": 0.1}}


@pytest.mark.parametrize("changes, message", [
    ({"version": True}, r"version: True is not supported"),
    ({"version": 1.0}, r"version: 1\.0 is not supported"),
    ({"params": {"train.batch_size": {"type": "int", "low": -32, "high": 0, "step": 16}}},
     r"params\.train\.batch_size: it can take the value -32, which is not a valid training option \(must be in \[1, 65536\]"),
    ({"params": {"train.batch_size": {"type": "int", "low": 16, "high": 65560, "step": 16}}},  # reaches 65552
     r"params\.train\.batch_size: it can take the value 65552,"),
    ({"params": {"train.batch_size": {"type": "float", "low": 16, "high": 64}}}, r"params\.train\.batch_size: .*expected int"),
    ({"params": {"train.lr": {"type": "float", "low": 20, "high": 50}}}, r"params\.train\.lr: it can take the value 20\.0"),
    ({"params": {"train.lr": {"type": "float", "low": 0.5, "high": 12, "step": 0.5}}}, r"params\.train\.lr: .*value 12\.0"),
    ({"params": {"train.optimizer": {"type": "categorical", "choices": ["sgd", "rmsprop"]}}},
     r"params\.train\.optimizer: it can take the value 'rmsprop'.*must be one of 'sgd', 'adamw'"),
    ({"params": {"train.optimizer": {"type": "categorical", "choices": ["adamw"]},
                 "train.weight_decay": {"type": "float", "low": -1, "high": 0.1, "when": {"train.optimizer": "adamw"}}}},
     r"params\.train\.weight_decay: it can take the value -1\.0"),
    ({"params": {"train.epochs": {"type": "int", "low": 1, "high": 2000}}}, r"params\.train\.epochs: .*value 2000"),
    ({"budget": {**TINY["budget"], "epochs": 5000}}, r"budget\.epochs: not a valid training option: must be in \[1, 1000\]"),
    ({"model": {"builder": "os:abort"}}, r"model\.builder: 'os:abort' names the Python standard library"),
    ({"model": {"builder": "math:pi"}}, r"model\.builder: 'math:pi' names the Python standard library"),
    ({"model": {"builder": "nope_pkg_xyz:f"}}, r"model\.builder: Could not import 'nope_pkg_xyz'"),
    ({"model": {"builder": "slimkit.arch:nope"}}, r"model\.builder: 'slimkit\.arch' has no attribute 'nope'"),
    ({"model": {"builder": "slimkit:__version__"}}, r"model\.builder: 'slimkit:__version__' is not callable"),
    ({"model": {"spec": "zoo:nope"}, "params": LR}, r"model\.spec: Unknown zoo model 'nope'"),
    ({"model": {"spec": "os:abort"}, "params": LR}, r"model\.spec: 'os:abort' names the Python standard library"),
    ({"model": {"spec": "nope_pkg_xyz:f"}, "params": LR}, r"model\.spec: Could not import 'nope_pkg_xyz'"),
    ({"model": {"spec": "no/such/checkpoint"}, "params": LR}, r"model\.spec: Model SPEC 'no/such/checkpoint' is neither"),
])
def test_search_files_that_would_fail_in_a_trial_are_refused_before_anything_is_written(tmp_path, capsys, changes, message):
    from slimkit.cli import main

    space, out = write_space(tmp_path, **changes), tmp_path / "run"
    with pytest.raises(UserError, match=rf"{re.escape(str(space))}: ({message})"):
        SearchConfig.load(space)
    assert main(["search", "--space", str(space), "--out", str(out), "--threads", "1"]) == 2
    assert str(space) in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("changes", [
    {"params": {"train.batch_size": {"type": "int", "low": 16, "high": 65540, "step": 16}}},  # reaches 65536 at most
    {"params": {"train.lr": {"type": "float", "low": 0.5, "high": 10.3, "step": 0.5}}},  # reaches 10.0 at most
    {"params": {"train.epochs": {"type": "int", "low": 1, "high": 3}}, "budget": {**TINY["budget"], "epochs": 5000}},
    {"params": {"train.keep_zeros": {"type": "categorical", "choices": [True, False]}, **LR}},
    {"model": {"spec": "zoo:digits-cnn"}, "params": LR},
])
def test_valid_training_ranges_and_models_are_accepted(changes):
    SearchConfig.from_dict({**TINY, **changes})


@pytest.mark.parametrize("out", ["/sys/slimkit-fuzz", "/proc/slimkit-fuzz/run"])
def test_out_in_a_system_folder_is_refused(tmp_path, capsys, out):
    from slimkit.cli import main

    with pytest.raises(UserError, match="--out"):
        search(SearchConfig.from_dict(dict(TINY)), out, threads=1, progress=False)
    assert main(["search", "--space", str(write_space(tmp_path)), "--out", out, "--threads", "1"]) == 2
    assert "--out" in capsys.readouterr().err and not os.path.exists(out)


def test_out_that_cannot_be_created_is_a_user_error(tmp_path, monkeypatch):
    from pathlib import Path

    from slimkit.search.run import _prepare_out

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(UserError, match=r"--out .*run: cannot read or create the folder \(Permission denied\)"):
        _prepare_out(tmp_path / "run", SearchConfig.from_dict(dict(TINY)), "label")
    assert not (tmp_path / "run").exists()


def test_a_damaged_run_file_is_a_user_error(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "search.json").write_text("[1, 2")
    with pytest.raises(UserError, match=r"search\.json is damaged"):
        search(SearchConfig.from_dict(dict(TINY)), out, threads=1, progress=False)
    assert (out / "search.json").read_text() == "[1, 2"


def test_existing_study_survives_bad_input(tmp_path):
    out = tmp_path / "run"
    storage = open_storage(f"sqlite:///{tmp_path}/keep.db")
    study = open_study(storage, "tiny", make_sampler("random"), ["maximize"])
    study.optimize(lambda t: t.suggest_float("train.lr", 0.003, 0.03), n_trials=2)
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a slimkit search folder"):
        search(SearchConfig.from_dict(dict(TINY)), out, threads=1, progress=False)
    with pytest.raises(UserError, match="Cannot open the study storage"):
        search(SearchConfig.from_dict(dict(TINY)), tmp_path / "c", storage="postgresql://127.0.0.1:9/x", threads=1, progress=False)
    assert (out / "notes.txt").read_text() == "mine" and not (tmp_path / "c").exists()
    assert counts(open_study(open_storage(f"sqlite:///{tmp_path}/keep.db"), "tiny", None, ["maximize"])) == (2, 0)
