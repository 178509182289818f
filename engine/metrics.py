"""A call's metrics: each one a real number, made a float; every metric the guards read passed."""

from __future__ import annotations

import numbers
from typing import Any, Mapping

from engine.core import CurriculumError, Point, did_you_mean, short_repr

__all__ = ["to_metric", "check_metrics"]

_REAL = "a real number (int, float, numpy scalar or 1-element tensor)"


def _bad_metric(name: str, value: Any, call: str, why: str = "") -> CurriculumError:
    return CurriculumError(
        f"{call}: metric {name!r} must be {_REAL}, got {type(value).__name__} {short_repr(value)}{why}; "
        f"pass a number, e.g. {name}=float(...) or {name}=tensor.item(). Nothing was counted: call again with a number"
    )


def to_metric(name: str, value: Any, call: str = "step_end()") -> float:
    """``value`` (an int, a float, NaN included, a numpy scalar or a one-element tensor or array) as a
    float; anything else (a bool: a flag is not a measurement) is a CurriculumError naming it."""
    if type(value) is float:
        return value
    if isinstance(value, bool):
        raise _bad_metric(name, value, call, " (a bool is not a measurement)")
    if isinstance(value, numbers.Integral) or (isinstance(value, numbers.Real) and not hasattr(value, "item")):
        try:
            return float(value)
        except OverflowError:
            raise _bad_metric(name, value, call, " (too large for a float)") from None
    item = getattr(value, "item", None)
    size = getattr(value, "size", None)  # numpy: an int attribute; torch: a method
    count = value.numel() if hasattr(value, "numel") else size if isinstance(size, int) else None
    if callable(item) and count == 1 and getattr(getattr(value, "dtype", None), "kind", "f") != "b":
        inner = item()
        if not isinstance(inner, bool) and isinstance(inner, (int, float)):
            return float(inner)
    if count is not None and count != 1:
        raise _bad_metric(name, value, call, f" ({count} elements; a metric is one number)")
    raise _bad_metric(name, value, call)


def check_metrics(
    needs: Mapping[str, list[str]], metrics: Mapping[str, float], point: Point, everywhere: bool = False
) -> None:
    """Every metric in ``needs`` (name -> who reads it) was passed, or one CurriculumError listing
    the missing ones, their readers, and a close passed name for each (a misspelling)."""
    missing = [name for name in needs if name not in metrics]
    if not missing:
        return
    readers = "; ".join(f"{name!r} (read by {', '.join(needs[name])}){did_you_mean(name, metrics)}" for name in missing)
    call = f"engine.{point.value}(" + ", ".join(f"{name}=..." for name in missing) + ")"
    scope = "transitions of this curriculum read" if everywhere else "the current phase reads"
    raise CurriculumError(
        f"{point.value}(): the {scope} metrics the loop did not pass: {readers}; passed: {sorted(metrics)}. "
        f"Pass them as {call}, or fix a misspelt name in the guard that reads it. "
        "Nothing was counted: call again with them"
    )
