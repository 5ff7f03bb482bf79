"""Options of a data SPEC, given after ``?`` (``imagefolder:photos?size=160&holdout=0.2``) or as keyword arguments
to ``load_data`` (``load_data("imagefolder:photos", size=160)``); a keyword argument wins over the SPEC."""
from __future__ import annotations

from typing import Any, Callable, Sequence
from urllib.parse import parse_qsl

from ..errors import UserError

Parser = Callable[[Any], Any]


def split_spec(spec: str) -> tuple[str, dict[str, str]]:
    """(the SPEC without its options, {option: text}) for ``KIND:PATH?name=value&name=value``."""
    path, _, query = spec.partition("?")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise UserError(f"Data {spec!r}: options after '?' must read name=value&name=value.") from None
    return path, dict(pairs)


def parse_options(given: dict[str, Any], parsers: dict[str, Parser], kind: str) -> dict[str, Any]:
    """``given`` (text from the SPEC, or Python values) converted by ``parsers``; UserError naming the option."""
    out = {}
    for name, value in given.items():
        if name not in parsers:
            raise UserError(f"{kind}: unknown option {name!r}; the options are {', '.join(sorted(parsers))}.")
        try:
            out[name] = parsers[name](value)
        except (TypeError, ValueError) as exc:
            raise UserError(f"{kind}: option {name}={value!r} is invalid ({exc}).") from None
    return out


def positive_int(value) -> int:
    number = int(value)
    if number < 1:
        raise ValueError("must be a whole number >= 1")
    return number


def fraction(value) -> float:
    number = float(value)
    if not 0 < number < 1:
        raise ValueError("must be a fraction in (0, 1), e.g. 0.1")
    return number


def numbers(value) -> tuple[float, ...]:
    """``"0.5,0.5,0.5"`` or a sequence of numbers."""
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, Sequence) else [value]
    return tuple(float(v) for v in items)


def names(value) -> tuple[str, ...]:
    """``"a,b"`` or a sequence of names."""
    items = value.split(",") if isinstance(value, str) else value
    out = tuple(str(v).strip() for v in items)
    if not out or not all(out):
        raise ValueError("expected one or more comma-separated names")
    return out


def text(value) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty name")
    return value
