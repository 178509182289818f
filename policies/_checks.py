"""Argument checks shared by the policies: each failure says the field, what was expected, what
came, and the fix, as a :class:`engine.CurriculumError` (a ``ValueError``)."""

from __future__ import annotations

import math
import numbers
from typing import Any

import attrs

from engine import CurriculumError


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


def _call_repr(self: Any) -> str:
    """The call that made a policy (a fingerprint reads it): its required fields by value, then by name
    the knobs in ``_named`` and the other fields that differ from their default."""
    named, parts = getattr(self, "_named", ()), []
    for field in (f for f in attrs.fields(type(self)) if f.init):
        value = getattr(self, field.name)
        if field.default is attrs.NOTHING:
            parts.append(repr(value))
        elif field.name in named or value != field.default:
            parts.append(f"{field.name}={value!r}")
    return f"{type(self).__name__}({', '.join(parts)})"


# The built-in guards and actions are attrs classes: their fields are what a curriculum file names
# (engine.datafile), their reprs read like the call (:func:`_call_repr`, unless a class writes its
# own), and they compare by identity, as the engine keys their state by the object. Their fields
# are checked when they are built, not on every assignment: attrs' per-assignment hook would run on
# each accumulator update (it made a Plateau's step_end 5x slower).
_define = attrs.define(eq=False, repr=False, slots=False, on_setattr=attrs.setters.NO_OP)


def policy(cls: type) -> type:
    """A built-in guard or action class, made an attrs class (above)."""
    if cls.__repr__ is object.__repr__:
        cls.__repr__ = _call_repr  # type: ignore[method-assign]
    return _define(cls)


def _cls(obj: Any) -> str:
    return type(obj).__name__


# -- the same checks as attrs converters and validators: they name the class and the field --------


def _converter(check: Any, fix: str, **options: Any) -> attrs.Converter:
    """An attrs converter: ``check(class name, field, value, fix=fix, **options)``; ``{cls}`` in
    ``fix`` is the class's name."""
    return attrs.Converter(
        lambda value, self, field: check(
            _cls(self), field.alias, value, fix=fix.replace("{cls}", _cls(self)), **options
        ),
        takes_self=True,
        takes_field=True,
    )


def integer(minimum: int, fix: str) -> attrs.Converter:
    """An attrs converter: the field as an int >= ``minimum`` (see :func:`check_int`)."""
    return _converter(check_int, fix, minimum=minimum)


def real(fix: str, *, nonnegative: bool = False) -> attrs.Converter:
    """An attrs converter: the field as a finite float (see :func:`check_real`)."""
    return _converter(check_real, fix, nonnegative=nonnegative)


def _validator(ok: Any, expected: str, fix: str) -> Any:
    """An attrs validator: ``ok(value)``, else the error naming the class, the field and ``fix``."""

    def validate(self: Any, field: attrs.Attribute, value: Any) -> None:
        if not ok(value):
            raise fail(_cls(self), field.alias, expected, value, fix.replace("{cls}", _cls(self)))

    return validate


def choice(options: tuple, expected: str, fix: str) -> Any:
    """An attrs validator: the field is one of ``options``."""
    return _validator(lambda value: isinstance(value, str) and value in options, expected, fix)


def flag(fix: str) -> Any:
    """An attrs validator: the field is a bool."""
    return _validator(lambda value: isinstance(value, bool), "a bool", fix)


def metric_name(fix: str) -> Any:
    """An attrs validator: the field names a metric (a non-empty string)."""
    return _validator(lambda value: isinstance(value, str) and bool(value), "a metric name the loop passes", fix)
