"""Argument checks shared by the policies: each failure says the field, what was expected, what
came, and the fix, as a :class:`engine.CurriculumError` (a ``ValueError``)."""

from __future__ import annotations

import math
import numbers
from typing import Any

from engine import CurriculumError, describe


def fail(where: str, field: str, expected: str, got: Any, fix: str) -> CurriculumError:
    """The error for ``where``'s argument ``field``: expected, received, and the fix."""
    return CurriculumError(f"{where}: {field!r} must be {expected}, got {got!r}; {fix}")


def check_int(where: str, field: str, value: Any, minimum: int, fix: str) -> int:
    """``value`` as an int >= ``minimum`` (bools and floats are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise fail(where, field, f"an int >= {minimum}", value, fix)
    return int(value)


def check_real(
    where: str, field: str, value: Any, fix: str, *, positive: bool = False, nonnegative: bool = False
) -> float:
    """``value`` as a finite float (optionally > 0 or >= 0); bools are refused."""
    kind = "a finite number" + (" > 0" if positive else " >= 0" if nonnegative else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise fail(where, field, kind, value, fix)
    x = float(value)
    if not math.isfinite(x) or (positive and x <= 0) or (nonnegative and x < 0):
        raise fail(where, field, kind, value, fix)
    return x


def check_guard(where: str, field: str, guard: Any) -> Any:
    """A guard object: callable, not a class, a string or a lambda."""
    if isinstance(guard, str):
        raise fail(where, field, "a guard object", guard, "pass the guard itself, not its name")
    if isinstance(guard, type):
        raise fail(where, field, "a guard instance", guard, f"instantiate it, e.g. {guard.__name__}(...)")
    if not callable(guard):
        raise fail(where, field, "a callable guard(ctx) -> bool", guard, "pass a guard such as MinEpoch(2)")
    if getattr(guard, "__name__", None) == "<lambda>":
        raise fail(
            where,
            field,
            "a named guard",
            describe(guard),
            "lambdas cannot be fingerprinted or shown; define a function (def ...) or a small class with a __repr__",
        )
    return guard
