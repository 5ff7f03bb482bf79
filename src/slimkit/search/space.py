"""Search spaces: categorical, float, int (optionally log-scaled) and conditional parameters.

A space is plain data (YAML/JSON or Python). A parameter with ``when: {parent: value(s)}`` exists only
while its parent (declared above it) takes one of those values::

    block: {type: categorical, choices: [basic, inverted_residual]}
    expand: {type: int, low: 2, high: 6, when: {block: inverted_residual}}
"""
from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import UserError

TYPES = ("categorical", "float", "int")
_FIELDS = {"type", "choices", "low", "high", "log", "step", "when"}


def number(value: Any) -> bool:
    """A finite int or float within +-2**53 (Optuna stores parameter values as floats); bools are not numbers."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) <= 2**53


def plain(value: Any) -> bool:
    """A value a categorical parameter (or a ``when`` condition) can take: str, bool, null or a number."""
    return value is None or isinstance(value, (str, bool)) or number(value)


@dataclasses.dataclass(frozen=True)
class Param:
    """One search dimension.

    Args:
        name: the parameter's name (unique in the space).
        type: ``categorical``, ``float`` or ``int``.
        choices: the values of a categorical parameter (str, int, float, bool or null).
        low: smallest value of a float/int parameter (inclusive).
        high: largest value (inclusive).
        log: sample on a log scale (low must be > 0).
        step: discretisation step (not with ``log``).
        when: ``{parent: [values]}``: the parameter exists only while every parent takes one of its values.
    """

    name: str
    type: str
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    when: dict[str, tuple] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        where = f"params.{self.name}"
        if not isinstance(self.type, str) or self.type not in TYPES:
            raise UserError(f"{where}.type: unknown type {self.type!r}; use one of {', '.join(TYPES)}.")
        if self.type == "categorical":
            if self.low is not None or self.high is not None or self.log or self.step is not None:
                raise UserError(f"{where}: low, high, log and step belong to float and int parameters, "
                                "not categorical ones.")
            if not self.choices:
                raise UserError(f"{where}.choices: a categorical parameter needs a non-empty list of choices.")
            bad = [c for c in self.choices if not plain(c)]
            if bad:
                raise UserError(f"{where}.choices: {bad!r} are not plain values (str, finite number, bool or null).")
            if any(a == b for i, a in enumerate(self.choices) for b in self.choices[i + 1:]):
                raise UserError(f"{where}.choices: duplicate values in {list(self.choices)} "
                                "(1, 1.0 and true count as equal).")
            return
        if self.choices:
            raise UserError(f"{where}.choices: only categorical parameters have choices; "
                            f"a {self.type} one has low and high.")
        for bound in ("low", "high"):
            value = getattr(self, bound)
            if not number(value):
                raise UserError(f"{where}.{bound}: must be a finite number within +-2**53, got {value!r}.")
            if self.type == "int" and value != int(value):
                raise UserError(f"{where}.{bound}: an int parameter needs an integer {bound}, got {value!r}.")
        if self.low >= self.high:
            raise UserError(f"{where}: low ({self.low}) must be below high ({self.high}); a fixed value is a categorical "
                            "parameter with one choice.")
        if self.log and self.low <= 0:
            raise UserError(f"{where}.low: a log-scale parameter needs low > 0, got {self.low}.")
        if self.step is not None and (self.log or not number(self.step) or self.step <= 0
                                      or (self.type == "int" and self.step != int(self.step))):
            raise UserError(f"{where}.step: must be a finite number > 0 (an integer for an int parameter) and cannot be "
                            f"combined with log: true, got {self.step!r}.")

    def suggest(self, trial) -> Any:
        """Ask an Optuna trial for this parameter's value."""
        if self.type == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), step=self.step, log=self.log)

    def takes(self, value: Any) -> bool:
        """True when ``value`` is one this parameter can be sampled as (what a ``when`` condition may name)."""
        if self.type == "categorical":
            return plain(value) and value in self.choices
        return number(value) and self.low <= value <= self.high and (self.type == "float" or value == int(value))

    def active(self, values: dict) -> bool:
        """True when every parent in ``when`` is present in ``values`` with an allowed value."""
        return all(parent in values and values[parent] in allowed for parent, allowed in self.when.items())

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"type": self.type}
        if self.type == "categorical":
            out["choices"] = list(self.choices)
        else:
            out.update(low=self.low, high=self.high)
            if self.log:
                out["log"] = True
            if self.step is not None:
                out["step"] = self.step
        if self.when:
            out["when"] = {k: list(v) for k, v in self.when.items()}
        return out


@dataclasses.dataclass(frozen=True)
class Space:
    """An ordered list of parameters; parents come before the parameters conditioned on them."""

    params: tuple[Param, ...]

    def __post_init__(self):
        if not self.params:
            raise UserError("params: the search space is empty; declare at least one parameter "
                            "(e.g. `train.lr: {type: float, low: 0.001, high: 0.3, log: true}`).")
        seen: dict[str, Param] = {}
        for p in self.params:
            if p.name in seen:
                raise UserError(f"params.{p.name}: declared twice.")
            for parent, allowed in p.when.items():
                where = f"params.{p.name}.when"
                if parent not in seen:
                    declared = ("the parameter itself" if parent == p.name else "declared below it"
                                if any(q.name == parent for q in self.params) else "not a parameter of the space")
                    raise UserError(f"{where}: its parent {parent!r} is {declared}; "
                                    "declare the parent parameter above the parameters that depend on it.")
                owner = seen[parent]
                if not allowed:
                    raise UserError(f"{where}.{parent}: no values given; the parameter would never be sampled.")
                bad = [v for v in allowed if not owner.takes(v)]
                if bad:
                    values = (f"its choices {list(owner.choices)}" if owner.type == "categorical"
                              else f"its values ({owner.type} from {owner.low} to {owner.high})")
                    raise UserError(f"{where}.{parent}: {bad!r} are not among {values}.")
            seen[p.name] = p

    @classmethod
    def from_dict(cls, data: Any) -> "Space":
        """Build from ``{name: {type, choices | low, high, log, step, when}}`` (YAML/JSON data)."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise UserError(f"params: expected a mapping of parameter name -> {{type: ...}}, got {type(data).__name__}.")
        params = []
        for name, spec in data.items():
            where = f"params.{name}"
            if not isinstance(name, str) or not name:
                raise UserError(f"{where}: parameter names are non-empty strings, got {name!r}.")
            if not isinstance(spec, dict):
                raise UserError(f"{where}: expected a mapping like {{type: float, low: 0.001, high: 0.1, log: true}}, got {spec!r}.")
            unknown = set(spec) - _FIELDS
            if unknown:
                raise UserError(f"{where}.{sorted(map(str, unknown))[0]}: unknown field; known fields: {', '.join(sorted(_FIELDS))}.")
            if "type" not in spec:
                raise UserError(f"{where}.type: missing; use one of {', '.join(TYPES)}.")
            when = spec.get("when") or {}
            if not isinstance(when, dict):
                raise UserError(f"{where}.when: expected a mapping {{parent: value or [values]}}, got {when!r}.")
            choices = spec.get("choices") or ()
            if not isinstance(choices, (list, tuple)):
                raise UserError(f"{where}.choices: expected a list, got {choices!r}.")
            log = spec.get("log", False)
            if not isinstance(log, bool):
                raise UserError(f"{where}.log: expected true or false, got {log!r}.")
            params.append(Param(str(name), spec["type"], tuple(choices), spec.get("low"), spec.get("high"), log,
                                spec.get("step"), {str(k): tuple(v) if isinstance(v, (list, tuple)) else (v,) for k, v in when.items()}))
        return cls(tuple(params))

    def to_dict(self) -> dict:
        return {p.name: p.to_dict() for p in self.params}

    def sample(self, trial) -> dict[str, Any]:
        """Values for one trial: each parameter whose conditions hold, in declaration order."""
        values: dict[str, Any] = {}
        for p in self.params:
            if p.active(values):
                values[p.name] = p.suggest(trial)
        return values

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]
