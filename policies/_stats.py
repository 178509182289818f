"""The Student-t tail for Plateau's Welch test, without scipy.

``student_t_sf(t, dof)`` = P(T > t) for T ~ Student-t with ``dof`` degrees of freedom (any real
dof > 0), through the regularized incomplete beta function: for t >= 0,
``P(T > t) = I_x(dof/2, 1/2) / 2`` with ``x = dof / (dof + t**2)``. ``betainc`` evaluates the
continued fraction of I_x(a, b) by the modified Lentz method (Numerical Recipes, 2nd ed., 6.4),
using the symmetry ``I_x(a, b) = 1 - I_{1-x}(b, a)`` where the fraction converges fast. Accurate to
about 1e-12 for dof up to 1e4 (Plateau's dof is at most window - 2); at dof near 1e9 the lgamma
differences lose digits (about 1e-6): far finer than any level ``alpha`` a guard compares it with.
"""

from __future__ import annotations

import math

__all__ = ["betainc", "student_t_sf"]

_EPS = 1e-16
_TINY = 1e-300
_MAX_TERMS = 10_000


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b), modified Lentz; converges for x < (a + 1) / (a + b + 2)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _MAX_TERMS):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + num / c
            c = c if abs(c) > _TINY else _TINY
            delta = c * d
            h *= delta
        if abs(delta - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"betainc({a}, {b}, {x}): the continued fraction did not converge")


def betainc(a: float, b: float, x: float, y: float | None = None) -> float:
    """The regularized incomplete beta function I_x(a, b), for a, b > 0 and 0 <= x <= 1; ``y = 1 - x``
    when the caller knows it more exactly."""
    y = 1.0 - x if y is None else y
    if not (a > 0 and b > 0 and 0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
        raise ValueError(f"betainc needs a > 0, b > 0 and 0 <= x <= 1, got a={a}, b={b}, x={x}")
    if x == 0.0 or y == 0.0:
        return 0.0 if x == 0.0 else 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, y) / b


def student_t_sf(t: float, dof: float) -> float:
    """P(T > t) for a Student-t variable with ``dof`` > 0 degrees of freedom (``t`` may be +-inf)."""
    if not dof > 0:
        raise ValueError(f"student_t_sf needs dof > 0, got {dof}")
    if math.isnan(t):
        raise ValueError("student_t_sf: t is NaN")
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    t2 = t * t
    # P(T > |t|) = I_x(dof/2, 1/2) / 2 with x = dof / (dof + t^2); 1 - x is passed exactly as
    # t^2 / (dof + t^2), which keeps small |t| (x near 1) accurate.
    tail = 0.5 * betainc(dof / 2.0, 0.5, dof / (dof + t2), t2 / (dof + t2))
    return tail if t >= 0 else 1.0 - tail
