"""Field rules of the configuration dataclasses: each checks one field and returns its value.

A rule takes ``(name, value)`` (``name`` as the user writes it, e.g. ``"coarse.epochs"``) and
returns the normalised value or raises ``TypeError``/``ValueError`` naming the field. Every field
of a config class has an entry in its ``RULES`` table (:func:`check_fields` refuses a field
without one), so a new field cannot slip in unchecked.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from agcl._validation import check_choice, check_int

__all__ = [
    "POSITIVE",
    "Rule",
    "boolean",
    "check_fields",
    "choice",
    "integer",
    "number",
    "text",
    "tuple_of",
]

Rule = Callable[[str, Any], Any]


def integer(low: int | None = None, high: int | None = None, *, optional: bool = False) -> Rule:
    """An int in ``[low, high]`` (floats, strings and bools refused); ``None`` when ``optional``."""

    def rule(name: str, value: Any) -> Any:
        return None if optional and value is None else check_int(name, value, low=low, high=high)

    return rule


def number(
    low: float, high: float = math.inf, *, low_open: bool = False, high_open: bool = False
) -> Rule:
    """A finite real number in the interval (ints accepted, returned as float)."""

    def rule(name: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a number; got {type(value).__name__} {value!r}")
        ok = (value > low if low_open else value >= low) and (
            value < high if high_open else value <= high
        )
        if not ok or not math.isfinite(value):
            lo, hi = "(" if low_open else "[", ")" if high_open or high == math.inf else "]"
            raise ValueError(f"{name} must lie in {lo}{low}, {high}{hi}; got {value!r}")
        return float(value)

    return rule


def choice(options: tuple[Any, ...]) -> Rule:
    """One of ``options`` (the message lists them)."""

    def rule(name: str, value: Any) -> Any:
        if isinstance(value, bool) or value not in options:
            check_choice(name, value, options)  # raises with the list of options
        return value

    return rule


def text(name: str, value: Any) -> str:
    """A non-empty string."""
    if not isinstance(value, str) or not value:
        raise TypeError(f"{name} must be a non-empty string; got {type(value).__name__} {value!r}")
    return value


def boolean(name: str, value: Any) -> bool:
    """``True`` or ``False`` (0/1 and strings refused)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False; got {type(value).__name__} {value!r}")
    return value


def tuple_of(
    item: Rule,
    length: int | None,
    *,
    increasing: bool = False,
    optional: bool = False,
    nonempty: bool = False,
) -> Rule:
    """A tuple (a list is accepted) of ``length`` values each checked by ``item``."""

    def rule(name: str, value: Any) -> Any:
        if optional and value is None:
            return None
        if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)):
            raise TypeError(
                f"{name} must be a tuple of {length or 'any number of'} values; "
                f"got {type(value).__name__} {value!r}"
            )
        if length is not None and len(value) != length:
            raise ValueError(
                f"{name} must have {length} entries; got {len(value)}: {tuple(value)!r}"
            )
        if nonempty and not value:
            raise ValueError(
                f"{name} must hold at least one value (or be None); got {tuple(value)!r}"
            )
        out = tuple(item(f"{name}[{i}]", v) for i, v in enumerate(value))
        if increasing and not all(a < b for a, b in zip(out, out[1:])):
            raise ValueError(f"{name} must be increasing (low < high); got {out!r}")
        return out

    return rule


def check_fields(obj: Any, where: str) -> None:
    """Apply ``obj.RULES`` to every field (each field must have a rule) before any work is done."""
    for f in dataclasses.fields(obj):
        if f.name not in obj.RULES:
            raise TypeError(
                f"{type(obj).__name__}.{f.name} has no validation rule; add one to RULES"
            )
        rule = obj.RULES[f.name]
        if rule is not None:
            object.__setattr__(obj, f.name, rule(f"{where}{f.name}", getattr(obj, f.name)))


POSITIVE = integer(1)
MAX_PATCHES = integer(0, optional=True)
LEARNING_RATE = number(0.0, low_open=True)
