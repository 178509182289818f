"""The Student-t tail without scipy (policies._stats): closed forms and published table values."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies._stats import betainc, student_t_sf


@settings(max_examples=200, deadline=None)
@given(t=st.floats(-1e6, 1e6))
def test_student_t_one_and_two_dof_closed_forms(t):
    """dof = 1 is the Cauchy tail 1/2 - atan(t)/pi; dof = 2 is 1/2 - t / (2 sqrt(2 + t^2))."""
    assert student_t_sf(t, 1.0) == pytest.approx(0.5 - math.atan(t) / math.pi, rel=1e-12, abs=1e-15)
    assert student_t_sf(t, 2.0) == pytest.approx(0.5 - t / (2 * math.sqrt(2 + t * t)), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(
    "t, dof, tail",
    [
        (1.812461, 10, 0.05),
        (2.570582, 5, 0.025),
        (2.457262, 30, 0.01),
        (1.657651, 120, 0.05),
        (1.646379, 1000, 0.05),
        (2.0, 10, 0.0366940),
    ],
)
def test_student_t_matches_table_values(t, dof, tail):
    """Critical values from a t table give their tail areas."""
    assert student_t_sf(t, dof) == pytest.approx(tail, abs=2e-7)
    assert student_t_sf(-t, dof) == pytest.approx(1 - tail, abs=2e-7)


@settings(max_examples=200, deadline=None)
@given(a=st.floats(0.05, 500), b=st.floats(0.05, 500), x=st.floats(0, 1), k=st.integers(0, 2**20))
def test_betainc_closed_forms_and_symmetry(a, b, x, k):
    """I_x(a, 1) = x^a, I_x(1, b) = 1 - (1 - x)^b, and I_y(a, b) = 1 - I_{1-y}(b, a) (y = k / 2^20,
    so that 1 - y is exact)."""
    assert betainc(a, 1.0, x) == pytest.approx(x**a, rel=1e-11, abs=1e-14)
    one_minus_pow = 1.0 if x == 1 else -math.expm1(b * math.log1p(-x))  # 1 - (1 - x)^b, accurate at tiny x too
    assert betainc(1.0, b, x) == pytest.approx(one_minus_pow, rel=1e-11, abs=1e-14)
    y = k / 2**20
    assert betainc(a, b, y) == pytest.approx(1 - betainc(b, a, 1 - y), rel=1e-10, abs=1e-13)


def test_student_t_edges_and_bad_input():
    """Infinite t gives 0 or 1, t = 0 gives 1/2; dof <= 0 and NaN are errors."""
    assert (student_t_sf(math.inf, 3), student_t_sf(-math.inf, 3), student_t_sf(0.0, 7.5)) == (0.0, 1.0, 0.5)
    with pytest.raises(ValueError, match="dof"):
        student_t_sf(1.0, 0)
    with pytest.raises(ValueError, match="NaN"):
        student_t_sf(math.nan, 3)
