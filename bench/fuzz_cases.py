"""Bad inputs for the slimkit command line, drawn with a fixed seed; bench/fuzz_cli.py runs them.

Every case is a cheap, valid base command (zoo:digits-cnn or zoo:fashion-cnn, --data none or digits, eager
latency at batch 1) with exactly one bad element: a flag value, a SPEC, a path, or the content of a file the
command reads. Categories are drawn by weight; within one, the kind of damage, the command it goes into and a
few harmless optional flags are drawn too, so large runs give many distinct cases (duplicates are dropped).
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import gzip
import hashlib
import json
import math
import random
import tempfile
import types
import typing
from pathlib import Path
from typing import Any

import numpy as np
import yaml

NAN, INF = math.nan, math.inf
HUGE_INTS = (2**63, 2**64 + 7, 10**30, 10**100)
BIG_FILE = 10 * 2**20 + 1  # one byte over the limit for a recipe or search file

# Files every case's folder starts with: a user's work in the working directory and in HOME.
DECOYS = {
    "cwd/thesis.tex": b"\\documentclass{article}\n\\begin{document}Years of work.\\end{document}\n",
    "cwd/data.csv": b"id,value\n1,0.5\n2,0.25\n",
    "cwd/notes/todo.txt": b"- finish chapter 3\n",
    "cwd/notes/drafts/ch1.md": b"# Chapter 1\n",
    "home/.bashrc": b"export PATH=$HOME/bin:$PATH\n",
    "home/Documents/cv.txt": b"Curriculum vitae\n",
}

RECIPE = {"version": 1, "steps": [{"fuse": {}}]}
SPACE = {
    "version": 1, "name": "fuzz", "model": {"spec": "zoo:digits-cnn"}, "data": "digits",
    "budget": {"train": 64, "val": 32, "test": 32, "epochs": 1, "max_batches": 1},
    "objectives": ["metric"], "sampler": "random", "pruner": "none", "n_trials": 1, "seed": 0, "heartbeat_s": 10,
    "params": {
        "train.lr": {"type": "float", "low": 0.01, "high": 0.1, "log": True},
        "train.optimizer": {"type": "categorical", "choices": ["sgd", "adamw"]},
        "train.weight_decay": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True, "when": {"train.optimizer": "adamw"}},
        "train.batch_size": {"type": "int", "low": 16, "high": 64, "step": 16},
    },
}
MODELS = ("zoo:digits-cnn", "zoo:digits-cnn", "zoo:fashion-cnn")
# harmless optional flags per command (None: a switch); a case's own bad element is set after these
EXTRAS = {
    "train": {"--lr": ["0.05", "0.1"], "--batch-size": ["32", "64"], "--optimizer": ["sgd", "adamw"],
              "--seed": ["0", "1", "7"], "--weight-decay": ["0", "0.0001"], "--device": ["cpu"], "--resume": [None]},
    "compress": {"--data": ["none", "digits"], "--threads": ["1"], "--backends": ["eager", "eager,onnxruntime"],
                 "--batch": ["1", "1,2"], "--metric-backend": ["eager"], "--device": ["cpu"]},
    "bench": {"--data": ["none", "digits"], "--threads": ["1", "2"], "--format": ["table", "json"],
              "--repeats": ["3", "5"], "--metric-backend": ["eager"], "--device": ["cpu"],
              "--backends": ["eager", "eager,onnxruntime"]},
    "search": {"--threads": ["1"], "--workers": ["1"], "--device": ["cpu"]},
    "demo": {"--threads": ["1"], "--device": ["cpu"]},
}


@dataclasses.dataclass
class Case:
    """One bad command: ``argv`` for ``slimkit.cli.main``, run in ``dir/cwd`` with HOME=``dir/home`` after
    writing DECOYS and ``files`` (paths relative to ``dir``; None makes an empty folder). ``watch``: folders
    outside ``dir`` whose entries must not change either."""

    category: str
    kind: str
    argv: list[str]
    dir: Path
    files: dict[str, bytes | None] = dataclasses.field(default_factory=dict)
    watch: tuple[str, ...] = ()

    def key(self) -> tuple:
        """What makes two cases the same: category, command, flags in any order and form, file contents."""
        tokens = []
        for arg in self.argv[1:]:
            tokens += arg.split("=", 1) if arg.startswith("--") else [arg]
        tokens = sorted(t.replace(str(self.dir), "<case>") for t in tokens)
        files = sorted((p, None if b is None else hashlib.sha256(b).hexdigest()) for p, b in self.files.items())
        return self.category, tuple(self.argv[:1]), tuple(tokens), tuple(files)


class _Draw:
    """The state of one case being drawn: its random source, folder and files."""

    def __init__(self, rng: random.Random, folder: Path):
        self.rng, self.dir, self.files, self.watch = rng, folder, {}, []

    def pick(self, seq):
        return self.rng.choice(list(seq))

    def pick_lazy(self, makers):
        """Call one of ``makers``: only the chosen one writes its files."""
        return self.pick(makers)()

    def file(self, name: str, data: bytes | str | None) -> str:
        """Put a file (or a folder, for None) under work/ and return its absolute path."""
        self.files[f"work/{name}"] = data.encode() if isinstance(data, str) else data
        return str(self.dir / "work" / name)

    def doc(self, stem: str, data: Any) -> str:
        """Write plain data as YAML, or now and then as JSON (NaN/Infinity allowed, as Python writes them)."""
        if self.rng.random() < 0.3:
            return self.file(f"{stem}.json", json.dumps(data))
        return self.file(f"{stem}.yaml", yaml.safe_dump(data, sort_keys=False))

    def out(self) -> str:
        """A fresh --out that is fine to create."""
        return self.pick(["run", "runs/a", "out/run1", str(self.dir / "cwd" / "fresh")])

    def base(self, cmd: str) -> dict[str, str | None]:
        """A valid, cheap command's flags, with some harmless extras."""
        model = self.pick(MODELS)
        flags = {
            "train": lambda: {"--model": model, "--data": "digits", "--epochs": "1", "--out": self.out()},
            "compress": lambda: {"--model": model, "--recipe": self.doc("recipe", RECIPE), "--out": self.out(),
                                 "--data": "none", "--backends": "eager", "--batch": "1"},
            "bench": lambda: {"--model": model, "--backends": "eager", "--batch": "1", "--repeats": "3"},
            "search": lambda: {"--space": self.doc("space", SPACE), "--out": self.out()},
            "demo": lambda: {"--out": self.out()},
        }[cmd]()
        for flag, values in EXTRAS[cmd].items():
            if self.rng.random() < 0.25:
                flags[flag] = self.pick(values)
        return flags

    def argv(self, cmd: str, flags: dict, positional: tuple = ()) -> list[str]:
        """Flags in random order, as ``--flag value`` or ``--flag=value`` (always ``=`` before a leading dash)."""
        items = list(flags.items())
        self.rng.shuffle(items)
        argv = [cmd, *positional]
        for flag, value in items:
            if value is None:
                argv.append(flag)
            elif value.startswith("-") or self.rng.random() < 0.2:
                argv.append(f"{flag}={value}")
            else:
                argv += [flag, value]
        return argv


# -- damaged file contents, shared by recipes, search files, report.json and history.json -----------------

def _deep(dr: _Draw, json_style: bool) -> str:
    """A value nested far deeper than any config needs (100 levels is the limit)."""
    depth = dr.pick([101, 150, 300, 1000, 5000, 10000]) + dr.rng.randint(0, 40)
    if dr.rng.random() < 0.5:
        return "[" * depth + "1" + "]" * depth
    return ('{"a": ' if json_style else "{a: ") * depth + "1" + "}" * depth


def _alias_bomb() -> str:
    """YAML aliases that expand to 9^9 values ("billion laughs")."""
    lines = ['a0: &a0 ["lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    return "\n".join(lines) + "\nsteps: *a9\n"


def _damaged_text(dr: _Draw, valid: str, json_style: bool, where: str) -> tuple[str, bytes]:
    """(kind, bytes) of a file that is broken as a whole: syntax, encoding, nesting, size or emptiness."""
    kind = dr.pick(["syntax", "not_utf8", "deep", "empty", "binary", "too_big", "alias_bomb"])
    rng = dr.rng
    if kind == "syntax":
        cut = valid.rstrip()
        cut = cut[: rng.randint(1, len(cut) - 1)] if json_style else cut
        snippets = ([cut] if json_style else []) + [
            f"{where}: [unclosed\n", f"{where}: {{a: 1\n", "key: value\n  bad indent: 1\n - item\n",
            "\t- tab: indented\n", f"{where}: [a, b]]\n", "a: b: c\n", "? [complex\n", "{'a': 1,,}\n", "*undefined_alias\n",
            f"{where}:\n  - {{x: 1}}\n   - {{y: 2}}\n", "!!python/object/apply:os.system ['true']\n",
            "%YAML 9.9\n---\na: 1\n", "@reserved\n", "`backtick\n"]
        text = rng.choice(snippets)
        if json_style and text is not cut:
            text = "{" + text  # any snippet is broken JSON too
        return kind, text.encode()
    if kind == "not_utf8":
        lines = valid.splitlines(keepends=True)
        at = rng.randrange(len(lines) + 1)
        bad = rng.choice([b"# caf\xe9\n", b"\xff\xfe", b"\xc3\x28", b"\x80\x80\x80", b"# \xed\xa0\x80\n"])
        if rng.random() < 0.2:
            return kind, valid.encode(rng.choice(["utf-16", "utf-32"]))
        return kind, "".join(lines[:at]).encode() + bad + "".join(lines[at:]).encode()
    if kind == "deep":
        inner = _deep(dr, json_style)
        text = rng.choice([inner, (f'{{"{where}": {inner}}}' if json_style else f"{where}: {inner}\n")])
        return kind, text.encode()
    if kind == "empty":
        return kind, rng.choice([b"", b"\n\n", b"   ", b"---\n", b"null\n", b"~\n", b"# only a comment\n", b"[]", b"{}", b'""'])
    if kind == "binary":
        blob = rng.randbytes(rng.randint(16, 2048))
        return kind, rng.choice([blob, b"\x89PNG\r\n\x1a\n" + blob, gzip.compress(valid.encode(), mtime=0), b"\x00" * len(blob)])
    if kind == "too_big":
        pad = BIG_FILE + rng.randint(0, 1024)
        return kind, (valid + ("\n" + " " * pad if json_style else "\n#" + "x" * pad + "\n")).encode()
    return kind, (_alias_bomb() if not json_style else '{"a": ' + "[" * 5000).encode()


def _path_instead_of_file(dr: _Draw) -> tuple[str, str]:
    """(kind, path) of something that is not a readable data file."""
    kind = dr.pick(["folder", "missing", "under_a_file", "device", "user_file"])
    return kind, {
        "folder": lambda: dr.pick_lazy([lambda: dr.file("folder", None), lambda: str(dr.dir / "cwd" / "notes"),
                                        lambda: "", lambda: ".", lambda: "notes/"]),
        "missing": lambda: dr.pick([str(dr.dir / "work" / "nope.yaml"), "missing.yaml", "/nonexistent/recipe.yaml"]),
        "under_a_file": lambda: dr.pick(["thesis.tex/recipe.yaml", str(dr.dir / "cwd" / "data.csv" / "x.yaml")]),
        "device": lambda: dr.pick(["/dev/null", "/dev/zero", "/dev/urandom"]),
        "user_file": lambda: dr.pick(["thesis.tex", "data.csv", "notes/todo.txt"]),
    }[kind]()


# -- recipe files --------------------------------------------------------------------------------------------

@functools.cache
def _step_fields(key: str) -> dict[str, Any]:
    """Field name -> type hint of a built-in step's config."""
    from slimkit.recipe import config_class

    cls = config_class(key)
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _fits(value, tp) -> bool:
    """Whether plain data ``value`` has type ``tp`` (ints count as floats, bools are neither)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if tp is type(None):
        return value is None
    if origin is typing.Literal:
        return any(type(value) is type(a) and value == a for a in args)
    if origin in (list, tuple):
        return isinstance(value, list) and all(_fits(v, args[0] if args else Any) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) and _fits(v, args[1]) for k, v in value.items())
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp) if isinstance(tp, type) else True


WRONG = ["seven", 1.5, [1], {"a": 1}, True, None, 7, [["a"]], {"a": "x"}, "", [None]]
RANGES = {  # values each step's checks must refuse
    "fine_tune": {"epochs": [0, -1], "lr": [0, -0.1, 11.0, 1e300], "batch_size": [0, -64], "weight_decay": [-1e-4],
                  "label_smoothing": [1.0, -0.1, 2], "max_batches": [0, -1]},
    "magnitude_prune": {"sparsity": [1.0, -0.1, 1.5], "steps": [0, -2], "epochs": [-1], "lr": [0, -1, 1e300]},
    "channel_prune": {"ratio": [1.0, -0.5, 2.0], "heads": [1.0, -0.1], "round_to": [0, -8], "target_macs": [0, -0.5, 1.5],
                      "ratios": [{"blocks.1.*": NAN}, {"blocks.1.*": 1.5}, {"": 0.5}, {"blocks.*": -0.2}]},
    "nm_sparsity": {"m": [1, 0, -4], "n": [0, 4, 5, -1]},
    "export": {"opset": [0, 7, 99, -1], "atol": [0, -1e-4], "batch_size": [0], "repeats": [0, 2]},
    "quantize": {"calibration_batches": [0, -1], "batch_size": [0], "adaround_iterations": [0],
                 "qat": [{"epochs": 0}, {"lr": 2.0}, {"batch_size": 0}, {"lr": NAN}],
                 "mixed": [{"bits": [4]}, {"bits": [1, 8], "size_ratio": 0.5}, {"bits": [4, 8], "size_ratio": 2.0},
                           {"bits": [4, 8], "size_ratio": NAN}, {"bits": [4, 8], "budget_bytes": 0}]},
    "low_rank": {"energy": [0, 1.5, -0.1], "target_macs": [0, 1, 1.5], "round_to": [0], "rank": [0, -1]},
    "cluster": {"bits": [0, 9, -1], "epochs": [-1]},
    "distill": {"temperature": [0, -1], "alpha": [-0.1, 1.5], "feature_weight": [-1], "width": [0, 1.5]},
}
UNKNOWN_STEPS = ["fine_tunee", "prune", "Fuse", "", "123", "__import__", "os.system", "quantise", "steps", "null"]


def _recipe_doc(dr: _Draw) -> tuple[str, Any]:
    """(kind, data) of a recipe that parses but is wrong."""
    kind = dr.pick(["wrong_type", "non_finite", "range", "huge_int", "unknown_step", "unknown_field",
                    "options_not_mapping", "top_level"])
    key = dr.pick(RANGES if kind == "range" else [*RANGES, "fuse"])
    steps = [{"fuse": {}}] if dr.rng.random() < 0.5 else []
    fields = _step_fields(key)
    if kind == "wrong_type":
        name = dr.pick(fields)
        bad = dr.pick([v for v in WRONG if not _fits(v, fields[name])] or ["seven"])
        step = {key: {name: bad}}
    elif kind == "non_finite":
        floats = [n for n, tp in fields.items() if _fits(0.5, tp)]
        key, name = ("fine_tune", "lr") if not floats else (key, dr.pick(floats))
        step = {key: {name: dr.pick([NAN, INF, -INF])}}
    elif kind == "range":
        name = dr.pick(RANGES[key])
        step = {key: {name: dr.pick(RANGES[key][name])}}
    elif kind == "huge_int":
        ints = [n for n, tp in fields.items() if _fits(3, tp) and not _fits(0.5, tp) and not _fits(True, tp)]
        key, name = ("fine_tune", "epochs") if not ints else (key, dr.pick(ints))
        value = dr.pick(HUGE_INTS)
        step = {key: {name: dr.pick([value, -value - 1])}}
    elif kind == "unknown_step":
        step = {dr.pick(UNKNOWN_STEPS + [1, None, True]): {}}
    elif kind == "unknown_field":
        step = {key: {dr.pick(["epochz", "lrate", "bogus", "", "1", "__class__", "sparsity_"]): 1}}
    elif kind == "options_not_mapping":
        step = {key: dr.pick([[1, 2], "fast", 3, True, 0.5, ["epochs", 1], [{"epochs": 1}]])}
    else:
        return kind, dr.pick([
            [{"fuse": {}}], "fuse", 42, {"version": 2, "steps": [{"fuse": {}}]}, {"version": "1", "steps": [{"fuse": {}}]},
            {"version": True, "steps": [{"fuse": {}}]}, {"version": None, "steps": [{"fuse": {}}]},
            {"version": 1, "steps": []}, {"version": 1, "steps": {"fuse": {}}}, {"version": 1, "steps": None},
            {"version": 1, "steps": "fuse"}, {"version": 1}, {"version": 1, "steps": [{"fuse": {}, "export": {}}]},
            {"version": 1, "steps": [{}]}, {"version": 1, "steps": [["fuse"]]}, {"version": 1, "steps": [None]},
            {"version": 1, "steps": [{"fuse": {}}], "stpes": []}, {"steps": [{"fuse": {}}], "extra": 1}])
    steps.insert(dr.rng.randint(0, len(steps)), step)
    return kind, {"version": 1, "steps": steps}


def _data_file(dr: _Draw, name: str, valid_doc: dict, key: str, bad_doc, odds: tuple[float, float]):
    """(kind, path) of a bad recipe or search file: a bad document (``bad_doc``), damaged text of a valid one,
    or a path that is not a readable file; ``odds`` are the cumulative chances of the first two."""
    roll = dr.rng.random()
    if roll < odds[0]:
        kind, data = bad_doc(dr)
        return kind, dr.doc(name, data)
    if roll < odds[1]:
        json_style = dr.rng.random() < 0.3
        valid = json.dumps(valid_doc) if json_style else yaml.safe_dump(valid_doc, sort_keys=False)
        kind, data = _damaged_text(dr, valid, json_style, key)
        return kind, dr.file(f"{name}.json" if json_style else f"{name}.yaml", data)
    return _path_instead_of_file(dr)


def _recipe(dr: _Draw):
    flags = dr.base("compress")
    flags["--data"] = "digits"  # data is never what is wrong here
    kind, flags["--recipe"] = _data_file(dr, "recipe", RECIPE, "steps", _recipe_doc, (0.55, 0.85))
    return kind, "compress", flags, ()


# -- search files --------------------------------------------------------------------------------------------

def _space_edits() -> list[tuple[str, tuple, list]]:
    """(kind, path in the search file, bad values) for single edits of SPACE."""
    lr, bs = ("params", "train.lr"), ("params", "train.batch_size")
    opt, wd = ("params", "train.optimizer"), ("params", "train.weight_decay")
    return [
        ("bounds", lr + ("low",), [0.5, NAN, INF, -INF, "abc", None, True, [0.01], 0, -0.1]),
        ("bounds", lr + ("high",), [0.001, NAN, INF, "x", None, False]),
        ("bounds", lr + ("step",), [0, -0.01, NAN, 0.01, "x", INF]),
        ("bounds", lr + ("log",), ["yes", 1, None, [True]]),
        ("bounds", bs + ("low",), [1.5, 128, NAN, "16", INF, -INF]),
        ("bounds", bs + ("high",), [8, INF, NAN, 64.5, "64"]),
        ("bounds", bs + ("step",), [0, -16, 0.5, NAN, INF, "16"]),
        ("bounds", lr, [{"type": "float", "low": 0.01}, {"type": "float", "high": 0.1},
                        {"type": "int", "low": 0.01, "high": 0.1}]),
        ("field_range", lr, [{"type": "float", "low": 20.0, "high": 50.0},
                             {"type": "float", "low": 11, "high": 1e300, "log": True}]),
        ("field_range", bs, [{"type": "int", "low": -32, "high": 0, "step": 16}, {"type": "int", "low": -8, "high": -1}]),
        ("field_range", opt + ("choices",), [["rmsprop", "adam"], ["adam"], [1, 2]]),
        ("choices", opt + ("choices",), [[], "sgd", ["sgd", "sgd"], [["sgd"]], [{"a": 1}], None, 3, {"sgd": 1}]),
        ("choices", opt + ("type",), ["categorial", "choice", None, 1, "str"]),
        ("conditions", wd + ("when",), [{"train.nope": "adamw"}, {"train.optimizer": "rmsprop"}, "adamw", ["adamw"],
                                        {"train.weight_decay": "adamw"}, {"model.block": "x"}, 3,
                                        {"train.optimizer": ["rmsprop"]}]),
        ("seed", ("seed",), ["abc", -1, 1.5, NAN, 2**70, True, [1], INF]),
        ("n_trials", ("n_trials",), [0, -1, "10", 1.5, NAN, INF, 10**30, True, None, [1]]),
        ("budget", ("budget", "train"), [0, -1, "x", NAN, 1.5, INF, True]),
        ("budget", ("budget", "val"), [0, -1, "x", NAN, 1.5, INF, 10**30, None, 10**6]),
        ("budget", ("budget", "test"), [0, -1, "x", NAN, 1.5]),
        ("budget", ("budget", "epochs"), [0, -1, "x", NAN, 1.5, INF, 10**30, None]),
        ("budget", ("budget", "max_batches"), [0, -1, "x", NAN, 2.5]),
        ("budget", ("budget",), ["x", [1], 5, {"epoch": 1}, {"train": 64, "bogus": 1}]),
        ("objectives", ("objectives",), [
            "metric", [], ["nope"], ["metric", "metric"], [{"latency": {"backend": "tensorrt"}}],
            [{"latency": {"batch": 0}}], [{"latency": {"batch": NAN}}], [{"latency": {"repeats": 0}}],
            [{"latency": {"threads": 0}}], [{"latency": {"threads": -1}}], [{"latency": {"table": "yes"}}],
            [{"latency": {"table": True}}], [{"latency": [1]}], [{"latency": {}, "macs": {}}],
            [{"latency": {"bogus": 1}}], [3], [None], [{"latency": {"batch": 10**30}}]]),
        ("top", ("sampler",), ["cmaes", "", 3, None, ["tpe"], "TPE"]),
        ("top", ("pruner",), ["nope", 1, ["median"], None]),
        ("top", ("heartbeat_s",), [0, -1, NAN, "10", 1.5, INF, 10**30]),
        ("top", ("version",), [2, "1", 0, None, True]),
        ("top", ("bogus",), [1, None]),
        ("data", ("data",), [123, None, "mnist", "text", "os:abort", "sys:exit", "nope_pkg_xyz:f", "", ["digits"], "none",
                             "os:getcwd", "math:pi", "builtins:dict", "slimkit.data:load_data"]),
        ("model", ("model",), ["zoo:digits-cnn", {}, {"spec": "zoo:digits-cnn", "builder": "slimkit.arch:from_params"},
                               {"spec": "zoo:nope"}, {"spec": "os:abort"}, {"spec": 123}, {"builder": "os:abort"},
                               {"builder": "math:pi"}, {"builder": "nope_pkg_xyz:f"}, {"spec": "sys:exit"}, {"spec": ""},
                               {"bogus": 1}, None, ["zoo:digits-cnn"]]),
        ("params", ("params",), [None, {}, [], "x", {"lr": {"type": "float", "low": 0.01, "high": 0.1}},
                                 {"train.nope": {"type": "float", "low": 0.01, "high": 0.1}},
                                 {"model.width": {"type": "int", "low": 8, "high": 16}},
                                 {"train.lr": "x"}, {"train.lr": {"low": 0.01, "high": 0.1}},
                                 {"train.lr": {"type": "double", "low": 0.01, "high": 0.1}},
                                 {"train.lr": {"type": "float", "low": 0.01, "high": 0.1, "default": 0.05}}]),
    ]


SPACE_EDITS = _space_edits()


def _edit(doc: dict, path: tuple, value) -> dict:
    doc = copy.deepcopy(doc)
    target = doc
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return doc


def _space_doc(dr: _Draw) -> tuple[str, Any]:
    roll = dr.rng.random()
    if roll < 0.08:  # a conditional parameter declared above its parent
        params = dict(reversed(list(SPACE["params"].items())))
        return "conditions", {**SPACE, "params": params}
    if roll < 0.14:  # pruning with several or non-metric objectives
        return "top", {**SPACE, "pruner": dr.pick(["median", "hyperband"]),
                       "objectives": dr.pick([["metric", "macs"], ["macs"], ["params", "metric"]])}
    if roll < 0.18:  # a required key missing
        missing = dr.pick(["data", "params"])
        return "top", {k: v for k, v in SPACE.items() if k != missing}
    kind, path, values = dr.pick(SPACE_EDITS)
    return kind, _edit(SPACE, path, dr.pick(values))


def _space(dr: _Draw):
    flags = dr.base("search")
    kind, flags["--space"] = _data_file(dr, "space", SPACE, "params", _space_doc, (0.65, 0.9))
    return kind, "search", flags, ()


# -- model SPECs and checkpoints -----------------------------------------------------------------------------

JUNK_SPECS = ["", " ", "zoo:", "zoo:nope", "zoo:Digits-CNN", "zoo:digits-cnn ", "hf:", "hf:/nonexistent", "arch:",
              "arch:{bad json", "arch:/nonexistent.yaml", ":", "::", "a:b", "os:", ":abort", "-", "zoo:minilm:x",
              "..", "/", "~", "$HOME", "%s%s%s", "\x00", "zoo:\u00e9", "http://example.com/model.safetensors"]
CALLABLE_SPECS = ["os:abort", "sys:exit", "os:getcwd", "math:pi", "builtins:int", "builtins:object", "json:loads",
                  "collections:OrderedDict", "nope_pkg_xyz:f", "os.path:nope", "slimkit.models.zoo:ZOO",
                  "slimkit:__version__", "builtins:ValueError", "os.path:join", "slimkit.data:load_data",
                  "slimkit.models.zoo:BasicBlock", "torch.nn:Conv2d", "builtins:print", "sys:getrecursionlimit"]


@functools.cache
def _checkpoint(name: str) -> tuple[bytes, dict]:
    """(model.safetensors bytes, history.json data) of a freshly saved zoo model."""
    from slimkit.models import load_model, save_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        folder = save_checkpoint(load_model(f"zoo:{name}"), Path(tmp) / "ckpt")
        return (folder / "model.safetensors").read_bytes(), json.loads((folder / "history.json").read_text())


def _corrupt_checkpoint(dr: _Draw) -> tuple[str, str]:
    """(kind, path) of a digits-cnn checkpoint folder (or its weights file) with one thing broken."""
    weights, history = _checkpoint("digits-cnn")
    rng = dr.rng
    kind = dr.pick(["truncated", "header", "other_model", "bad_base", "bad_history", "bad_replay", "bad_format",
                    "bad_version", "history_not_utf8", "history_not_json", "history_missing", "history_folder",
                    "weights_folder"])
    files = {"model.safetensors": weights, "history.json": json.dumps(history).encode()}
    meta = copy.deepcopy(history)
    if kind == "truncated":
        files["model.safetensors"] = weights[: rng.randrange(len(weights) - 1)]
    elif kind == "header":
        header_len = int.from_bytes(weights[:8], "little")
        if rng.random() < 0.4:  # the header's length
            size = rng.choice([2**60, 2**40, header_len + 10**6, header_len - 1, 0, 1])
            files["model.safetensors"] = size.to_bytes(8, "little") + weights[8:]
        else:  # a byte of the JSON header that is not UTF-8
            at = rng.randrange(8, 8 + header_len)
            files["model.safetensors"] = weights[:at] + b"\xff" + weights[at + 1:]
    elif kind == "other_model":
        files["model.safetensors"] = _checkpoint("fashion-cnn")[0]
    elif kind == "bad_base":
        meta["base"] = dr.pick(["zoo:nope", "", None, 123, "os:abort", "sys:exit", "/nonexistent", "zoo:fashion-cnn",
                                str(dr.dir / "work" / "ckpt"), ["zoo:digits-cnn"], "math:pi", "hf:/nonexistent"])
    elif kind == "bad_history":
        meta["history"] = dr.pick(["x", 1, {}, [1], [{"step": "nope"}], [{"nostep": 1}], [None], [["fuse"]], None,
                                   [{"step": 3}], [{"step": "fuse"}], [{"step": "channel_prune"}]])
    elif kind == "bad_replay":
        meta["history"] = [dr.pick([
            {"step": "fuse", "config": "x"}, {"step": "fuse", "config": {"nope": 1}}, {"step": "fuse", "config": {}},
            {"step": "channel_prune", "replay": {"plan": "x"}}, {"step": "channel_prune", "replay": None},
            {"step": "channel_prune", "replay": {"plan": {"stem.0": {"out": [0, 1, 99999]}}}},
            {"step": "channel_prune", "replay": {"plan": {"nope.layer": {"out": [0]}}}},
            {"step": "channel_prune", "replay": {"plan": {"stem.0": {"out": "all"}}}},
            {"step": "low_rank", "replay": {"layers": 1}}, {"step": "quantize", "replay": "int8"},
            {"step": "cluster", "replay": []}, {"step": "distill", "replay": {"student": "nope"}}])]
    elif kind == "bad_format":
        meta["format"] = dr.pick(["other", None, 1, "", "SLIMKIT-CHECKPOINT"])
    elif kind == "bad_version":
        meta["version"] = dr.pick([2, 999, "x", -1, 1.5, "1", [1]])
    elif kind == "history_not_utf8":
        files["history.json"] = json.dumps(history).encode().replace(b'"', b'"\xff', 1)
    elif kind == "history_not_json":
        files["history.json"] = dr.pick([b"", b"{", b"[]", b'"x"', b"null", b"1", _deep(dr, True).encode(), b"\x00" * 64,
                                         json.dumps(history).encode()[:-1]])
    elif kind == "history_missing":
        del files["history.json"]
    elif kind == "history_folder":
        files["history.json"] = None
    else:
        files["model.safetensors"] = None
    if kind in ("bad_base", "bad_history", "bad_replay", "bad_format", "bad_version"):
        files["history.json"] = json.dumps(meta).encode()
    for name, data in files.items():
        dr.file(f"ckpt/{name}", data)
    folder = str(dr.dir / "work" / "ckpt")
    return kind, folder if kind == "weights_folder" or rng.random() < 0.7 else folder + "/model.safetensors"


def _spec(dr: _Draw) -> tuple[str, str]:
    kind = dr.pick(["junk", "junk", "callable", "callable", "missing_path", "not_checkpoint", "corrupt", "corrupt", "corrupt"])
    if kind == "junk":
        word = "".join(dr.rng.choice("abcdefghijklmnopqrstuvwxyz-_.") for _ in range(dr.rng.randint(3, 12)))
        return kind, dr.pick(JUNK_SPECS + [f"{p}{word}" for p in ("zoo:", "hf:", "arch:", "zoo:x", "")])
    if kind == "callable":
        return kind, dr.pick(CALLABLE_SPECS)
    if kind == "missing_path":
        return kind, dr.pick([str(dr.dir / "work" / "nope"), "/nonexistent/ckpt", "./nope/model.safetensors",
                              str(dr.dir / "work" / "ckpt" / "model.safetensors"), "runs/a/checkpoint"])
    if kind == "not_checkpoint":
        return kind, dr.pick_lazy([
            lambda: dr.file("notes.txt", "just text\n"), lambda: dr.file("empty.safetensors", b""),
            lambda: dr.file("model.pt", b"\x80\x04\x95" + bytes(64)),
            lambda: dr.file("image.png", b"\x89PNG\r\n\x1a\n" + bytes(100)),
            lambda: dr.file("empty_dir", None), lambda: str(dr.dir / "cwd" / "notes"), lambda: "thesis.tex", lambda: "notes",
            lambda: ".", lambda: dr.file("model.safetensors", b"\x08" + bytes(7) + b"{}      "),
            lambda: dr.file("no_weights/history.json", json.dumps(_checkpoint("digits-cnn")[1])).rsplit("/", 1)[0]])
    return _corrupt_checkpoint(dr)


def _model(dr: _Draw):
    cmd = dr.pick(["bench", "bench", "compress", "train"])
    flags = dr.base(cmd)
    kind, spec = _spec(dr)
    flag = "--teacher" if cmd == "compress" and dr.rng.random() < 0.15 else "--model"
    flags[flag] = spec
    return f"{flag[2:]}_{kind}", cmd, flags, ()


# -- data specs ----------------------------------------------------------------------------------------------

UNKNOWN_DATA = ["mnist", "Digits", "fashion_mnist", "fashion", "cifar10", "", " ", "digits ", "imagenet", "FASHION-MNIST",
                "text,digits", "digits:", "-"]
CALLABLE_DATA = ["os:abort", "sys:exit", "os:getcwd", "math:pi", "builtins:dict", "slimkit.data:load_data",
                 "slimkit.data:Task", "nope_pkg_xyz:f", ":", "a:", ":b", "os.path:join", "json:dumps", "builtins:list",
                 "slimkit.data.task:batches", "slimkit.models.zoo:digits_cnn"]


def _idx(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape) + arr.astype(np.uint8).tobytes()


def _bad_idx_dir(dr: _Draw) -> tuple[str, str]:
    """(kind, folder) of Fashion-MNIST IDX files with one of them broken."""
    rng = np.random.default_rng(dr.rng.randrange(2**32))
    files = {"train-images-idx3-ubyte": _idx(rng.integers(0, 256, (4, 28, 28))), "train-labels-idx1-ubyte": _idx(np.arange(4)),
             "t10k-images-idx3-ubyte": _idx(rng.integers(0, 256, (2, 28, 28))), "t10k-labels-idx1-ubyte": _idx(np.arange(2))}
    name = dr.pick(files)
    images = "images" in name
    n = 4 if name.startswith("train") else 2
    kind = dr.pick(["truncated", "magic", "count", "labels_range", "dims", "missing", "not_gzip", "huge_dims", "folder", "empty"])
    if kind == "truncated":
        files[name] = files[name][: dr.rng.randrange(1, len(files[name]) - 1)]
    elif kind == "magic":
        files[name] = dr.pick([b"\x00\x00\x09", b"\x01\x00\x08", b"\x00\x00\x0d", b"PK\x03"]) + files[name][3:]
    elif kind == "count":
        files[name] = _idx(rng.integers(0, 256, (n + 1, 28, 28)) if images else np.arange(n + 1) % 10)
    elif kind == "labels_range":
        name = name.replace("images-idx3", "labels-idx1")
        files[name] = _idx(np.full(n, dr.pick([10, 200, 255])))
    elif kind == "dims":
        files[name] = _idx(rng.integers(0, 256, dr.pick([(n, 27, 28), (n, 28), (n, 1, 28, 28), (n, 28, 28, 3)])) if images
                           else np.zeros((n, 2)))
    elif kind == "missing":
        del files[name]
    elif kind == "not_gzip":
        files[name + ".gz"] = files.pop(name)
    elif kind == "huge_dims":
        files[name] = files[name][:4] + (10**9).to_bytes(4, "big") + files[name][8:]
    elif kind == "folder":
        files[name] = None
    else:
        files[name] = b""
    for file, data in files.items():
        dr.file(f"fashion/{file}", data)
    return f"data_dir_{kind}", str(dr.dir / "work" / "fashion")


def _data(dr: _Draw):
    cmd = dr.pick(["train", "train", "bench", "compress"])
    flags = dr.base(cmd)
    roll = dr.rng.random()
    if roll < 0.3:
        kind, flags["--data"] = "unknown", dr.pick(UNKNOWN_DATA + (["none"] if cmd == "train" else []))
    elif roll < 0.6:
        kind, flags["--data"] = "callable", dr.pick(CALLABLE_DATA)
    elif roll < 0.7:
        kind, flags["--data"] = "text_without_tokenizer", "text"
    else:
        flags["--data"] = "fashion-mnist"
        kind, flags["--data-dir"] = dr.pick_lazy([
            lambda: ("data_dir_missing", str(dr.dir / "work" / "nope")), lambda: ("data_dir_missing", "/nonexistent/fashion"),
            lambda: ("data_dir_file", "thesis.tex"), lambda: ("data_dir_file", str(dr.dir / "cwd" / "data.csv")),
            lambda: ("data_dir_empty", dr.file("empty", None)), lambda: ("data_dir_user_files", "notes"),
            lambda: ("data_dir_empty_string", ""), lambda: _bad_idx_dir(dr), lambda: _bad_idx_dir(dr), lambda: _bad_idx_dir(dr)])
    return kind, cmd, flags, ()


# -- numeric, device and list flags --------------------------------------------------------------------------

def _huge() -> list[str]:
    return [str(v) for v in HUGE_INTS]


INT_BAD = ["0", "-1", "nan", "inf", "1.5", "", "abc", "1e3", "0x10", "-99999999999999999999"]
FLOAT_BAD = ["nan", "inf", "-inf", "NaN", "Infinity", "1e400", "-1e400", "", "fast", "0x1p-3"]
DEVICES = ["tpu", "gpu", "cuda:x", "meta", "xla", "mps", "CPU", "", "cuda:-1", "cpu,cuda", "0", "cuda:99", "cuda:0:1", "vulkan"]
INPUT_SHAPES = {"zoo:digits-cnn": ["1,3,5,5", "1,3,8,8", "1,2,8,8", "1,1,8,8,8", "8", "1,64", "1,1,0,8", "nan", "1,1,8,8.5",
                                   "-1,1,8,8", "", ",", "1,,8,8", "1,1,2000,2000", "1,1,8000,8000", "64,1,4096,4096",
                                   "64,3,4096,4096",
                                   "1,1,100000,100000", "1,1,65536,65536", "1,1,99999999999999999999,1"],
                "zoo:fashion-cnn": ["1,3,28,28", "1,2,28,28", "1,28,28,1", "28,28", "1,1,28,28,28", "64,3,4096,4096",
                                    "1,1,2000,2000", "1,1,100000,100000", "1,1,inf,28"]}
BATCHES = ["0", "-1", "1,0", "nan", "", ",", "1,,64", "1.5", "1,nan", "inf", "100000000", "1,100000000", str(10**30),
           "1,-64", "a,b", "1;64"]
BACKENDS = ["", ",", "tensorrt", "eager,nope", "EAGER", "onnx", "torchscript", "tflite", "eager;onnxruntime", " "]
STORAGES = ["notaurl", "mysql://u@127.0.0.1:1/db", "postgresql://u@127.0.0.1:1/db", "sqlite:////nonexistent-dir/x/study.db",
            "redis://localhost", "file:///etc/passwd", "postgresql://"]


def _no_gpu_devices() -> list[str]:
    import torch

    return [] if torch.cuda.is_available() else ["cuda", "cuda:0", "cuda:1"]


def _flags(dr: _Draw):
    cmd = dr.pick(["train", "train", "bench", "bench", "compress", "compress", "search", "search", "demo"])
    flags = dr.base(cmd)
    devices = DEVICES + _no_gpu_devices()
    table = {
        "train": {"--epochs": INT_BAD + _huge(), "--lr": FLOAT_BAD + ["-0.1", "0", "1e300", "11"],
                  "--batch-size": INT_BAD + _huge(), "--seed": ["nan", "1.5", "abc", ""] + _huge(),
                  "--weight-decay": FLOAT_BAD + ["-1", "-1e-3"], "--device": devices},
        "bench": {"--repeats": INT_BAD + _huge(), "--threads": INT_BAD + _huge(), "--batch": BATCHES,
                  "--backends": BACKENDS, "--device": devices},
        "compress": {"--threads": INT_BAD + _huge(), "--batch": BATCHES, "--backends": BACKENDS, "--device": devices},
        "search": {"--n-trials": INT_BAD + _huge(), "--workers": INT_BAD + _huge(), "--seed": ["-1", "nan", "1.5", ""] + _huge(),
                   "--threads": INT_BAD + _huge(), "--device": devices, "--storage": STORAGES},
        "demo": {"--threads": INT_BAD + _huge(), "--device": devices, "--batch": BATCHES},
    }[cmd]
    if cmd in ("bench", "compress") and dr.rng.random() < 0.3:
        flag, value = "--input-shape", dr.pick(INPUT_SHAPES[flags["--model"]])
        if value in ("1,1,2000,2000", "1,1,8000,8000"):
            flags.pop("--batch")  # the default batch sizes (1 and 64) need tens of GB
    else:
        flag = dr.pick(table)
        value = dr.pick(table[flag])
    flags[flag] = value
    return flag[2:], cmd, flags, ()


# -- --out paths ---------------------------------------------------------------------------------------------

def _out(dr: _Draw):
    cmd = dr.pick(["train", "compress", "compress", "bench", "search", "demo"])
    flags = dr.base(cmd)
    d = dr.dir
    kind, value = dr.pick([
        ("cwd", "."), ("cwd", "./"), ("cwd", str(d / "cwd")), ("cwd", ""), ("parent", ".."), ("parent", str(d)),
        ("parent", "../"), ("root", "/"), ("home", str(d / "home")), ("home", str(d / "home") + "/"),
        ("user_folder", "notes"), ("user_folder", "notes/"), ("user_folder", str(d / "cwd" / "notes")),
        ("user_folder", "notes/drafts"), ("user_file", "thesis.tex"), ("user_file", str(d / "cwd" / "data.csv")),
        ("user_file", "notes/todo.txt"), ("under_a_file", "thesis.tex/run"), ("under_a_file", "data.csv/a/b"),
        ("device", "/dev/null"), ("unwritable", "/proc/slimkit-fuzz/run"), ("unwritable", "/sys/slimkit-fuzz")])
    if kind == "root":
        dr.watch.append("/")
    if value.startswith("/dev"):
        dr.watch.append("/dev")
    flags["--out"] = value
    return kind, cmd, flags, ()


# -- report folders ------------------------------------------------------------------------------------------

REPORT_FILE = Path(__file__).parent / "results" / "demo" / "report.json"


@functools.cache
def _report() -> dict:
    return json.loads(REPORT_FILE.read_text())


def _bad_report(dr: _Draw) -> tuple[str, bytes | None]:
    """(kind, report.json bytes or None for a folder) of a report that is broken."""
    valid = json.dumps(_report(), indent=2)
    report = copy.deepcopy(_report())
    kind = dr.pick(["truncated", "wrong_type", "missing_key", "bad_field", "not_utf8", "deep", "empty", "binary", "folder"])
    if kind == "truncated":
        return kind, valid[: dr.rng.randrange(1, valid.rindex("}"))].encode()
    if kind == "wrong_type":
        return kind, json.dumps(dr.pick([[], "report", 1, None, True, [report]])).encode()
    if kind == "missing_key":
        del report[dr.pick(["model", "data", "baseline", "final", "steps"])]
    elif kind == "bad_field":
        key, value = dr.pick([("baseline", "x"), ("baseline", []), ("baseline", 1), ("final", None), ("final", "x"),
                              ("steps", {}), ("steps", "x"), ("steps", [1]), ("steps", [None]), ("baseline", {}),
                              ("final", {}), ("steps", [{"bogus": 1}])])
        report[key] = value
    elif kind == "not_utf8":
        return kind, valid.encode().replace(b'"model"', b'"mod\xe9l"', 1)
    elif kind == "deep":
        return kind, _deep(dr, True).encode()
    elif kind == "empty":
        return kind, dr.pick([b"", b"\n", b"{}", b"null"])
    elif kind == "binary":
        return kind, dr.rng.randbytes(dr.rng.randint(16, 1024))
    elif kind == "folder":
        return kind, None
    return kind, json.dumps(report).encode()


def _run_dir(dr: _Draw, name: str, report: bytes | None) -> str:
    """A run folder with report.json (``report``) beside an earlier report.md and report.html."""
    dr.file(f"{name}/report.json", report)
    dr.file(f"{name}/report.md", "# an earlier report\n")
    dr.file(f"{name}/report.html", "<html>an earlier report</html>\n")
    dr.file(f"{name}/.slimkit-run", '{"kind": "compress"}')
    return str(dr.dir / "work" / name)


def _report_case(dr: _Draw):
    roll = dr.rng.random()
    valid = json.dumps(_report()).encode()
    if roll < 0.45:
        kind, data = _bad_report(dr)
        return kind, "report", {}, (_run_dir(dr, "run", data),)
    if roll < 0.55:
        kind, run = dr.pick_lazy([lambda: ("no_report", dr.file("run/report.md", "# only markdown\n").rsplit("/", 1)[0]),
                                  lambda: ("missing_dir", str(dr.dir / "work" / "nope")), lambda: ("file", "thesis.tex"),
                                  lambda: ("empty_arg", ""), lambda: ("user_folder", "notes"), lambda: ("cwd", ".")])
        return kind, "report", {}, (run,)
    if roll < 0.75:
        kind, data = _bad_report(dr)
        runs = [_run_dir(dr, "a", valid), _run_dir(dr, "b", data)]
        dr.rng.shuffle(runs)
        flags = {"--out": "compare.html"} if dr.rng.random() < 0.5 else {}
        return f"compare_{kind}", "report", flags, tuple(runs)
    kind, out = dr.pick([("compare_out_user_file", "thesis.tex"), ("compare_out_user_file", "data.csv"),
                         ("compare_out_user_file", "notes/todo.txt"), ("compare_out_folder", "notes"),
                         ("compare_out_folder", "."), ("compare_out_folder", "notes/"),
                         ("compare_out_folder", str(dr.dir / "home")),
                         ("compare_out_under_a_file", "thesis.tex/compare.html"), ("compare_out_folder", ""),
                         ("compare_out_folder", "..")])
    return kind, "report", {"--out": out}, (_run_dir(dr, "a", valid), _run_dir(dr, "b", valid))


# -- valid parts that do not fit together ------------------------------------------------------------------------

NEEDS_DATA = [{"fine_tune": {"epochs": 1}}, {"distill": {}}, {"magnitude_prune": {"sparsity": 0.5, "epochs": 1}},
              {"magnitude_prune": {"importance": "taylor"}}, {"channel_prune": {"importance": "taylor"}},
              {"quantize": {}}, {"quantize": {"weights": "int4", "activations": "int8", "qat": {"max_batches": 1}}},
              {"cluster": {"epochs": 1}}, {"magnitude_prune": {"importance": "snip"}}]


def _combo(dr: _Draw):
    kind = dr.pick(["needs_data", "needs_data", "input_shape", "heads_without_transformer", "against", "text_data"])
    if kind in ("needs_data", "heads_without_transformer"):
        flags = dr.base("compress")
        flags["--data"] = "none"
        bad = dr.pick(NEEDS_DATA) if kind == "needs_data" else {"channel_prune": {"ratio": 0.25, "heads": 0.5}}
        if kind == "heads_without_transformer":
            flags["--data"] = "digits"
        steps = [{"fuse": {}}] * dr.rng.randint(0, 2) + [bad] + [{"export": {}}] * dr.rng.randint(0, 1)
        flags["--recipe"] = dr.doc("recipe", {"version": 1, "steps": steps})
        return kind, "compress", flags, ()
    if kind == "input_shape":
        cmd = dr.pick(["bench", "compress"])
        flags = dr.base(cmd)
        flags["--input-shape"] = dr.pick({"zoo:digits-cnn": ["1,3,5,5", "1,3,8,8", "1,4,8,8"],
                                          "zoo:fashion-cnn": ["1,3,28,28", "1,2,28,28", "1,3,5,5"]}[flags["--model"]])
        return kind, cmd, flags, ()
    if kind == "against":
        flags = dr.base("bench")
        flags["--peers"] = None
        flags["--against"] = dr.pick_lazy([lambda: str(dr.dir / "work" / "nope"), lambda: "thesis.tex", lambda: "notes",
                                           lambda: dr.file("empty_run", None), lambda: ""])
        return kind, "bench", flags, ()
    flags = dr.base("train")
    flags["--data"] = "text"
    return kind, "train", flags, ()


# -- the argument parser's own errors --------------------------------------------------------------------------

REQUIRED = {"train": ["--model", "--data", "--out"], "compress": ["--model", "--recipe", "--out"], "bench": ["--model"],
            "search": ["--space", "--out"]}
CHOICES = {"train": ("--optimizer", ["rmsprop", "SGD", ""]), "bench": ("--format", ["xml", "csv", ""]),
           "compress": ("--metric-backend", ["tensorrt", "compile", ""]), "search": ("--sampler", ["cmaes", "grid", "TPE"])}


def _argv_case(dr: _Draw):
    cmd = dr.pick(REQUIRED)
    flags = dr.base(cmd)
    kind = dr.pick(["no_command", "unknown_command", "missing_required", "missing_value", "unknown_flag",
                    "extra_positional", "choice"])
    if kind == "no_command":
        return kind, dr.pick([None, "--model", "--out", "-x", "--verbose"]), {}, ()
    if kind == "unknown_command":
        return kind, dr.pick(["compres", "Train", "run", "export", "prune", "benchmark", " "]), flags, ()
    if kind == "missing_required":
        flags.pop(dr.pick(REQUIRED[cmd]))
    elif kind == "missing_value":
        flag = dr.pick(f for f, v in flags.items() if v is not None)
        argv = dr.argv(cmd, {f: v for f, v in flags.items() if f != flag})
        return kind, argv[0], {}, tuple(argv[1:]) + (flag,)
    elif kind == "unknown_flag":
        flags[dr.pick(["--bogus", "--epochz", "--model-spec", "-z", "--out-dir", "--recipe-file", "--gpu"])] = "1"
    elif kind == "extra_positional":
        return kind, cmd, flags, (dr.pick(["extra", "zoo:digits-cnn", "1"]),)
    else:
        flag, values = CHOICES[cmd]
        flags[flag] = dr.pick(values)
    return kind, cmd, flags, ()


CATEGORIES = {  # name -> (weight, generator returning (kind, command, flags, positional arguments))
    "recipe": (3.0, _recipe), "space": (2.5, _space), "model": (2.5, _model), "data": (1.5, _data),
    "flags": (3.0, _flags), "out": (2.0, _out), "report": (2.0, _report_case), "combo": (1.0, _combo),
    "argv": (1.0, _argv_case),
}


def cases(n: int, seed: int, workdir: str | Path) -> list[Case]:
    """``n`` distinct bad-input cases, the same ones for the same seed; case i lives in ``workdir/NNNNN``."""
    rng = random.Random(seed)
    names = list(CATEGORIES)
    weights = [CATEGORIES[c][0] for c in names]
    out, seen = [], set()
    for _ in range(n * 50):
        if len(out) == n:
            break
        category = rng.choices(names, weights)[0]
        dr = _Draw(rng, Path(workdir) / f"{len(out):05d}")
        kind, cmd, flags, positional = CATEGORIES[category][1](dr)
        argv = [] if cmd is None else dr.argv(cmd, flags, positional)
        case = Case(category, kind, argv, dr.dir, dr.files, tuple(dr.watch))
        if case.key() not in seen:
            seen.add(case.key())
            out.append(case)
    return out
