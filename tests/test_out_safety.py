"""--out never destroys a user's files: slimkit replaces only its own runs, only with --overwrite, and a
failed or killed run leaves nothing behind."""
import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import slimkit as sk
from slimkit.cli import main
from slimkit.files import RUN_MARKER, atomic_dir


def snapshot(root: Path) -> dict:
    """Every path under ``root`` with its bytes' hash (folders as None)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
            for p in sorted(root.rglob("*"))}


@pytest.fixture()
def user_home(tmp_path, monkeypatch):
    """A working folder full of a user's files, as the current directory; returns (root, cwd)."""
    cwd = tmp_path / "home" / "thesis"
    (cwd / "figures").mkdir(parents=True)
    (cwd / "thesis.tex").write_text("\\documentclass{article} years of work")
    (cwd / "figures" / "plot.pdf").write_bytes(os.urandom(2048))
    (tmp_path / "home" / "notes.txt").write_text("do not lose")
    (tmp_path / "recipe.yaml").write_text("version: 1\nsteps:\n  - fuse: {}\n")
    (tmp_path / "space.yaml").write_text(json.dumps(SPACE))
    monkeypatch.chdir(cwd)
    return tmp_path, cwd


SPACE = {"version": 1, "name": "s", "data": "digits", "model": {"spec": "zoo:digits-cnn"},
         "budget": {"train": 300, "val": 100, "epochs": 1}, "objectives": ["metric"], "n_trials": 1,
         "params": {"train.lr": {"type": "float", "low": 0.01, "high": 0.1}}}


def _commands(tmp_path: Path, out: str) -> dict[str, list[str]]:
    small = ["--model", "zoo:digits-cnn", "--backends", "eager", "--batch", "1", "--threads", "1"]
    return {
        "compress": ["compress", *small, "--recipe", str(tmp_path / "recipe.yaml"), "--out", out],
        "train": ["train", "--model", "zoo:digits-cnn", "--data", "digits", "--epochs", "1", "--out", out],
        "bench": ["bench", *small, "--repeats", "2", "--out", out],
        "demo": ["demo", "--out", out],
        "search": ["search", "--space", str(tmp_path / "space.yaml"), "--out", out],
    }


DESTRUCTIVE = {".": ".", "..": "..", "empty": "", "root": "/", "non-run folder": "figures", "existing file": "thesis.tex",
               "under a file": "thesis.tex/run"}


@pytest.mark.parametrize("command", ["compress", "train", "bench", "demo", "search"])
@pytest.mark.parametrize("case", DESTRUCTIVE)
def test_destructive_out_is_refused_and_every_byte_stays(user_home, command, case, capsys):
    root, _ = user_home
    before = snapshot(root)
    assert main(_commands(root, DESTRUCTIVE[case])[command]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert snapshot(root) == before


def test_home_folder_is_refused(user_home, monkeypatch, capsys):
    root, cwd = user_home
    monkeypatch.setenv("HOME", str(root / "home"))
    monkeypatch.chdir(root)
    before = snapshot(root)
    assert main(_commands(root, str(root / "home"))["compress"]) == 2
    assert "home folder" in capsys.readouterr().err
    assert snapshot(root) == before


def test_report_out_never_replaces_a_users_file(user_home, capsys):
    root, cwd = user_home
    run = cwd.parent / "run"
    assert main(_commands(root, str(run))["compress"]) == 0
    before = snapshot(root)
    for out in ("thesis.tex", "figures", ".", "", "thesis.tex/x.html"):
        assert main(["report", str(run), str(run), "--out", out]) == 2
    assert snapshot(root) == before
    assert main(["report", str(run), str(run), "--out", "compare.html"]) == 0
    assert main(["report", str(run), str(run), "--out", "compare.html"]) == 2  # its own page: only with --overwrite
    assert main(["report", str(run), str(run), "--out", "compare.html", "--overwrite"]) == 0
    assert "--overwrite" in capsys.readouterr().err


def test_an_earlier_run_is_replaced_only_with_overwrite(user_home, capsys):
    root, cwd = user_home
    out = str(cwd.parent / "runs" / "a")
    assert main(_commands(root, out)["bench"]) == 0
    marker = json.loads((Path(out) / RUN_MARKER).read_text())
    assert marker == {"kind": "bench"}
    first = snapshot(Path(out))
    assert main(_commands(root, out)["bench"]) == 2
    assert "pass --overwrite" in capsys.readouterr().err and snapshot(Path(out)) == first
    (Path(out) / "bench.json").write_text("stale")
    assert main([*_commands(root, out)["bench"], "--overwrite"]) == 0
    assert json.loads((Path(out) / "bench.json").read_text())["model"] == "zoo:digits-cnn"
    assert sorted(p.name for p in Path(out).parent.iterdir()) == ["a"]  # no temporary siblings


def test_a_failed_run_leaves_no_sibling_and_no_parents(user_home):
    root, cwd = user_home
    out = cwd.parent / "new" / "deeper" / "run"
    with pytest.raises(RuntimeError), atomic_dir(out):
        raise RuntimeError("the step failed")
    assert not (cwd.parent / "new").exists()


def test_a_failed_final_rename_leaves_no_sibling(user_home, monkeypatch):
    root, cwd = user_home
    out = cwd.parent / "run"

    def refuse(self, target):
        raise OSError("rename refused")

    monkeypatch.setattr(Path, "rename", refuse)
    with pytest.raises(OSError), atomic_dir(out) as tmp:
        (tmp / "report.json").write_text("{}")
    monkeypatch.undo()
    assert sorted(p.name for p in cwd.parent.iterdir()) == ["notes.txt", "thesis"]


def test_a_killed_runs_sibling_is_removed_when_run_again(user_home, tmp_path):
    root, cwd = user_home
    out = cwd.parent / "run"
    script = (f"import os, signal\nfrom slimkit.files import atomic_dir\n"
              f"with atomic_dir({str(out)!r}) as tmp:\n"
              f"    (tmp / 'half.bin').write_bytes(b'x' * 1000)\n"
              f"    os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", script])
    assert proc.returncode == -9
    left = [p.name for p in cwd.parent.iterdir() if p.name.startswith(".run.")]
    assert len(left) == 1  # the killed process's sibling
    decoy = cwd.parent / ".run.slimkit-1-user"  # same pattern but not slimkit's: no marker inside, kept
    decoy.mkdir()
    assert main(_commands(root, str(out))["bench"]) == 0
    assert sorted(p.name for p in cwd.parent.iterdir()) == [".run.slimkit-1-user", "notes.txt", "run", "thesis"]


def test_apply_leaves_no_temporary_folders(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    model = sk.load_model("zoo:digits-cnn")
    sk.apply(model, sk.Fuse(), example_inputs=(torch.randn(1, 1, 8, 8),))
    assert list(tmp_path.iterdir()) == []


def test_input_shape_that_does_not_fit_is_bad_input(user_home, capsys):
    root, cwd = user_home
    before = snapshot(root)
    for shape in ("1,3,5,5", "1,8"):
        assert main([*_commands(root, "run")["bench"], "--input-shape", shape]) == 2
        assert "does not take inputs of shape" in capsys.readouterr().err
    assert snapshot(root) == before


def test_inputs_too_large_for_memory_are_refused_before_running(user_home, monkeypatch, capsys):
    root, cwd = user_home
    monkeypatch.setenv("SLIMKIT_MEMORY_GB", "2")
    before = snapshot(root)
    # 16 MB per input, but ~0.5 GB of activations per image: batch 64 would need ~32 GB
    assert main(["bench", "--model", "zoo:fashion-cnn", "--input-shape", "1,1,2000,2000", "--batch", "1,64",
                 "--backends", "eager", "--out", "run"]) == 2
    assert "memory budget" in capsys.readouterr().err
    # too large to try even once: traced with fake tensors, nothing allocated
    assert main(["bench", "--model", "zoo:fashion-cnn", "--input-shape", "1,1,8000,8000", "--batch", "1",
                 "--backends", "eager"]) == 2
    assert "memory budget" in capsys.readouterr().err
    assert snapshot(root) == before


@dataclasses.dataclass
class Poison(sk.StepConfig):
    """A step that breaks the model as a diverging training run would."""

    key = "poison_for_test"
    where: str = "weight"


@sk.register(Poison)
def _poison(model, config, ctx):
    with torch.no_grad():
        if config.where == "weight":
            model.fc.weight[0, 0] = float("nan")
        else:  # finite weights whose outputs overflow
            model.fc.weight.fill_(3e38)
            model.fc.bias.fill_(3e38)
    return model


@pytest.mark.parametrize("where, layer", [("weight", "weight 'fc.weight'"),
                                          ("output", "the output of layer 'fc'")])
def test_nan_after_a_step_stops_the_run_naming_step_and_layer(tmp_path, where, layer):
    model = sk.load_model("zoo:digits-cnn")
    recipe = sk.Recipe([sk.Fuse(), Poison(where)])
    with pytest.raises(sk.UserError, match=re.escape(f"steps[1] (poison_for_test) left NaN or Inf values in {layer}")):
        sk.compress(model, recipe, example_inputs=(torch.randn(1, 1, 8, 8),), out_dir=tmp_path / "run", backends=(),
                    progress=False)
    assert list(tmp_path.iterdir()) == []
