"""The search file: which model to build, on which data, with what trial budget, towards which objectives,
over which space. YAML or JSON, plain data only::

    version: 1
    name: fashion-nas                     # the study name in the storage
    model: {builder: slimkit.arch:from_params}   # or {spec: zoo:fashion-cnn} to tune training only
    data: fashion-mnist
    budget: {train: 10000, val: 2000, epochs: 2}
    objectives: [metric, macs, {latency: {backend: onnxruntime, batch: 1}}]
    sampler: tpe                          # tpe | gp | random | nsga2 (CLI --sampler overrides)
    pruner: median                        # none | median | hyperband (single objective only)
    n_trials: 30
    params:
      train.lr: {type: float, low: 0.01, high: 0.3, log: true}
      model.s1.block: {type: categorical, choices: [basic, inverted_residual]}
      model.s1.expand: {type: int, low: 2, high: 6, when: {model.s1.block: inverted_residual}}

``train.*`` parameters are :class:`slimkit.FineTune` fields; ``model.*`` parameters go to the builder
(``builder(params, input_shape, num_classes) -> nn.Module``; see :func:`slimkit.arch.from_params`).
"""
from __future__ import annotations

import dataclasses
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..recipe import read_data_file
from .space import Param, Space
from .study import PRUNERS, SAMPLERS

OBJECTIVES = ("metric", "macs", "params", "size", "latency")
LATENCY_BACKENDS = ("eager", "onnxruntime")
_TOP = {"version", "name", "model", "data", "budget", "objectives", "sampler", "pruner", "n_trials", "seed",
        "heartbeat_s", "params"}
LIMITS = {"n_trials": (1, 100_000), "seed": (0, 2**32 - 1), "heartbeat_s": (1, 3600)}  # also for CLI overrides
_CALLABLE = r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*"
_TEXT = {  # field: (pattern, what it must be)
    "name": (r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", "a study name of up to 64 letters, digits, '.', '_' or '-'"),
    "data": (rf"[a-z0-9-]{{1,64}}|{_CALLABLE}", "a dataset name (fashion-mnist, digits) or package.module:callable"),
    "model.builder": (_CALLABLE, "a package.module:callable"),
    "model.spec": (r"[^\x00-\x1f\x7f]{1,4096}", "a model SPEC (zoo:NAME, a checkpoint folder, arch:FILE, ...)"),
}


def check_int(value: Any, field: str, low: int, high: int, optional: bool = False) -> None:
    """UserError naming ``field`` unless ``value`` is an integer in [low, high] (or None when ``optional``)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UserError(f"{field}: must be an integer from {low} to {high}{' or null' if optional else ''}, got {value!r}.")


def _check_text(value: Any, field: str) -> None:
    pattern, what = _TEXT[field]
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        raise UserError(f"{field}: must be {what}, got {value!r}.")


def _exists(path: str) -> bool:
    try:
        return Path(path).exists()
    except OSError:  # e.g. a name too long for the file system
        return False


def _extremes(p: Param) -> list:
    """The values of ``p`` that bound every other (as Optuna suggests them): each choice, or low and the highest
    reachable value (``high`` rounded down to a whole number of steps above ``low``)."""
    if p.type == "categorical":
        return list(p.choices)
    if p.type == "int":
        step = int(p.step or 1)
        low, high = int(p.low), int(p.high)
        return [low, low + (high - low) // step * step]
    high = p.high
    if p.step is not None:
        d_low, d_step = Decimal(str(p.low)), Decimal(str(p.step))
        high = float((Decimal(str(p.high)) - d_low) // d_step * d_step + d_low)
    return [float(p.low), float(high)]


@dataclasses.dataclass(frozen=True)
class Objective:
    """One thing a trial is scored on.

    Args:
        name: ``metric`` (task metric on the validation split, maximised), ``macs``, ``params``,
            ``size`` (safetensors bytes) or ``latency`` (median ms, measured on ``backend``), minimised.
        backend: latency backend, ``eager`` or ``onnxruntime``.
        batch: latency batch size.
        threads: latency intra-op threads (None = slimkit's default, every core).
        repeats: timed latency samples.
        table: estimate latency from a per-block lookup table (``latency_table.json`` in the run folder; each
            distinct block is timed once) instead of timing every whole model; slimkit.arch models only.
    """

    name: str
    backend: str = "onnxruntime"
    batch: int = 1
    threads: int | None = None
    repeats: int = 10
    table: bool = False

    def __post_init__(self):
        if self.name not in OBJECTIVES:
            raise UserError(f"objectives: unknown objective {self.name!r}; choose from {', '.join(OBJECTIVES)}.")
        if self.backend not in LATENCY_BACKENDS:
            raise UserError(f"objectives.latency.backend: {self.backend!r} is not one of {', '.join(LATENCY_BACKENDS)}.")
        check_int(self.batch, "objectives.latency.batch", 1, 65536)
        check_int(self.threads, "objectives.latency.threads", 1, 1024, optional=True)
        check_int(self.repeats, "objectives.latency.repeats", 1, 10_000)
        if not isinstance(self.table, bool):
            raise UserError(f"objectives.latency.table: must be true or false, got {self.table!r}.")

    @property
    def direction(self) -> str:
        return "maximize" if self.name == "metric" else "minimize"

    @property
    def label(self) -> str:
        table = ", table" if self.table else ""
        return f"latency_ms[{self.backend}/bs{self.batch}{table}]" if self.name == "latency" else {
            "size": "size_bytes"}.get(self.name, self.name)

    @classmethod
    def from_data(cls, item: Any) -> "Objective":
        if isinstance(item, str):
            return cls(item)
        if isinstance(item, dict) and len(item) == 1:
            (name, options), = item.items()
            if options is not None and not isinstance(options, dict):
                raise UserError(f"objectives.{name}: expected a mapping of options, got {options!r}.")
            if options and name != "latency":
                raise UserError(f"objectives.{name}: only `latency` takes options; list it as a plain name.")
            fields = {f.name for f in dataclasses.fields(cls)} - {"name"}
            unknown = set(options or {}) - fields
            if unknown:
                raise UserError(f"objectives.{name}.{sorted(map(str, unknown))[0]}: unknown option; known: {', '.join(sorted(fields))}.")
            return cls(str(name), **(options or {}))
        raise UserError(f"objectives: each item is a name (metric, macs, ...) or {{latency: {{backend, batch}}}}, got {item!r}.")

    def to_data(self):
        return self.name if self.name != "latency" else {"latency": {"backend": self.backend, "batch": self.batch,
                                                                      "threads": self.threads, "repeats": self.repeats,
                                                                      **({"table": True} if self.table else {})}}


@dataclasses.dataclass(frozen=True)
class Budget:
    """What one trial costs.

    Args:
        train: training samples per trial (taken from the start of the training split; None = all the rest).
        val: samples held out from the end of the training split; the ``metric`` objective is scored on them.
        test: test-split samples used to score the finalists at the end (None = all).
        epochs: training epochs per trial (a ``train.epochs`` parameter overrides it).
        max_batches: cap on batches per epoch (None = whole epoch).
    """

    train: int | None = 10000
    val: int = 2000
    test: int | None = None
    epochs: int = 1
    max_batches: int | None = None

    def __post_init__(self):
        for key in ("train", "test", "max_batches"):
            check_int(getattr(self, key), f"budget.{key}", 1, 10**9, optional=True)
        check_int(self.val, "budget.val", 1, 10**9)
        check_int(self.epochs, "budget.epochs", 1, 10_000)


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """A validated search file (see the module docstring)."""

    name: str
    model: dict
    data: str
    budget: Budget
    objectives: tuple[Objective, ...]
    space: Space
    sampler: str = "tpe"
    pruner: str = "none"
    n_trials: int = 20
    seed: int = 0
    heartbeat_s: int = 10

    def __post_init__(self):
        _check_text(self.name, "name")
        _check_text(self.data, "data")
        if set(self.model) not in ({"builder"}, {"spec"}):
            raise UserError("model: give exactly one of `builder: package.module:callable` (called with the model.* "
                            "parameters, input shape and class count) or `spec: SPEC` (a fixed model; tune training only).")
        (key, value), = self.model.items()
        _check_text(value, f"model.{key}")
        if not self.objectives:
            raise UserError("objectives: empty; list at least `metric`.")
        if len({o.label for o in self.objectives}) != len(self.objectives):
            raise UserError("objectives: an objective is listed twice.")
        if self.sampler not in SAMPLERS:
            raise UserError(f"sampler: unknown sampler {self.sampler!r}; choose from {', '.join(SAMPLERS)}.")
        if self.pruner not in PRUNERS:
            raise UserError(f"pruner: unknown pruner {self.pruner!r}; choose from {', '.join(PRUNERS)}.")
        if self.pruner != "none" and len(self.objectives) > 1:
            raise UserError("pruner: Optuna's pruners work on one objective only; use `pruner: none` for a multi-objective search.")
        if self.pruner != "none" and self.objectives[0].name != "metric":
            raise UserError("pruner: pruning needs the per-epoch `metric` objective; put `metric` first or use `pruner: none`.")
        for key, (low, high) in LIMITS.items():
            check_int(getattr(self, key), key, low, high)
        from ..train import FineTune

        tunable = {f.name for f in dataclasses.fields(FineTune)} - {"max_batches"}
        for name in self.space.names:
            group, _, field = name.partition(".")
            if group not in ("train", "model") or not field:
                raise UserError(f"params.{name}: parameter names start with `train.` (a FineTune field) or `model.` "
                                "(passed to the model builder).")
            if group == "train" and field not in tunable:
                raise UserError(f"params.{name}: {field!r} is not a training option; choose from {', '.join(sorted(tunable))}.")
            if group == "model" and "spec" in self.model:
                raise UserError(f"params.{name}: a fixed `model: {{spec: ...}}` takes no model.* parameters; use a builder.")
        self._check_training()

    def _check_training(self) -> None:
        """Every training option a trial can get must be valid for FineTune: the budget's fixed options (epochs,
        max_batches, seed) unless a parameter always replaces them, and the extremes (low, reachable high, every
        choice) of each ``train.*`` parameter combined with them. FineTune's checks are ranges and choices, so
        valid extremes mean every sampled value is valid."""
        from ..recipe import ConfigError
        from ..train import FineTune

        fixed = {"epochs": ("budget.epochs", self.budget.epochs), "max_batches": ("budget.max_batches", self.budget.max_batches),
                 "seed": ("seed", self.seed)}  # what TrialObjective passes besides the sampled options
        always = {p.name[len("train."):] for p in self.space.params if p.name.startswith("train.") and not p.when}
        base = {key: value for key, (_, value) in fixed.items() if key not in always}
        try:
            FineTune.from_dict(dict(base))
        except ConfigError as exc:
            where = fixed.get(exc.field, (exc.field,))[0]
            raise UserError(f"{where}: not a valid training option: {exc.message}.") from None
        for p in self.space.params:
            if not p.name.startswith("train."):
                continue
            field = p.name[len("train."):]
            for value in _extremes(p):
                try:
                    FineTune.from_dict({**base, field: value})
                except ConfigError as exc:
                    reason = exc.message if exc.field == field else str(exc)
                    raise UserError(f"params.{p.name}: it can take the value {value!r}, which is not a valid training "
                                    f"option ({reason}); every value it can take must be one.") from None

    def check_model(self) -> "SearchConfig":
        """UserError unless the model can be built: a builder must resolve to a callable (its module is imported,
        which the search does anyway); a fixed spec is built (``package.module:callable`` is only resolved, not
        called). Returns the config."""
        from ..models.spec import DATA_PREFIXES, import_callable, load_model

        (key, value), = self.model.items()
        try:
            if key == "builder" or (":" in value and not value.startswith(DATA_PREFIXES) and not _exists(value)):
                import_callable(value)
            else:
                load_model(value)
        except UserError as exc:
            raise UserError(f"model.{key}: {exc}") from None
        return self

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @classmethod
    def from_dict(cls, data: Any, source: str = "space") -> "SearchConfig":
        """Validate plain data; errors name the field (prefixed with ``source``)."""
        try:
            if not isinstance(data, dict):
                raise UserError(f"expected a mapping with model, data, objectives and params, got {type(data).__name__}.")
            unknown = set(data) - _TOP
            if unknown:
                raise UserError(f"{sorted(map(str, unknown))[0]}: unknown key; known keys: {', '.join(sorted(_TOP))}.")
            if type(data.get("version", 1)) is not int or data.get("version", 1) != 1:  # not true, not 1.0
                raise UserError(f"version: {data.get('version')!r} is not supported; use `version: 1`.")
            if "data" not in data:
                raise UserError("data: missing; name the dataset (fashion-mnist, digits or package.module:callable).")
            model = data.get("model", {"builder": "slimkit.arch:from_params"})
            if not isinstance(model, dict):
                raise UserError(f"model: expected {{builder: ...}} or {{spec: ...}}, got {model!r}.")
            budget = data.get("budget") or {}
            if not isinstance(budget, dict):
                raise UserError(f"budget: expected a mapping, got {budget!r}.")
            known = {f.name for f in dataclasses.fields(Budget)}
            if set(budget) - known:
                raise UserError(f"budget.{sorted(map(str, set(budget) - known))[0]}: unknown field; known: {', '.join(sorted(known))}.")
            objectives = data.get("objectives", ["metric"])
            if not isinstance(objectives, list):
                raise UserError(f"objectives: expected a list, got {objectives!r}.")
            return cls(name=data.get("name", "search"), model=model, data=data["data"], budget=Budget(**budget),
                       objectives=tuple(Objective.from_data(o) for o in objectives),
                       space=Space.from_dict(data.get("params")), sampler=data.get("sampler", "tpe"),
                       pruner=data.get("pruner", "none"), n_trials=data.get("n_trials", 20),
                       seed=data.get("seed", 0), heartbeat_s=data.get("heartbeat_s", 10)).check_model()
        except UserError as exc:
            raise UserError(f"{source}: {exc}") from None

    @classmethod
    def load(cls, path: str | Path) -> "SearchConfig":
        """Read a YAML or JSON search file (plain data; nothing is executed)."""
        return cls.from_dict(read_data_file(path, "the search space", "--space"), source=str(path))

    def with_overrides(self, **changes) -> "SearchConfig":
        """This config with command-line style overrides applied (None values ignored), re-validated; a bad
        override names its option (``--n-trials``, ``--seed``)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        for key in changes.keys() & LIMITS.keys():
            check_int(changes[key], f"--{key.replace('_', '-')}", *LIMITS[key])
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return {"version": 1, "name": self.name, "model": dict(self.model), "data": self.data,
                "budget": dataclasses.asdict(self.budget), "objectives": [o.to_data() for o in self.objectives],
                "sampler": self.sampler, "pruner": self.pruner, "n_trials": self.n_trials, "seed": self.seed,
                "heartbeat_s": self.heartbeat_s, "params": self.space.to_dict()}
