"""Ready guards: Plateau, MinEpoch, MinSteps, metric thresholds and combinators (policies.guards)."""

import json
import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import Clock, Context, Curriculum, CurriculumEngine, CurriculumError, Phase, Point, Transition
from policies import (
    Cooldown,
    MaxVisits,
    MetricAbove,
    MetricBelow,
    MinEpoch,
    MinSteps,
    Plateau,
    WorseThanBest,
    all_of,
    any_of,
    not_,
)


def step_ctx(**metrics):
    return Context(clock=Clock(), metrics=metrics, point=Point.STEP_END)


def feed(guard, values, metric="loss"):
    for v in values:
        guard.observe(step_ctx(**{metric: v}))


def naive(values, window, mode="min"):
    """(older mean, newer mean, r) recomputed from scratch, exactly; None until the window is full."""
    kept = [v for v in values if math.isfinite(v)][-window:]
    if len(kept) < window:
        return None
    half = window // 2
    older, newer = kept[:half], kept[half:]
    so, sn = sum(map(Fraction, older)), sum(map(Fraction, newer))
    num = so - sn if mode == "min" else sn - so
    if so == 0:
        r = 0.0
    else:
        try:
            r = float(num / abs(so))
        except OverflowError:
            r = math.copysign(math.inf, num)
    return math.fsum(older) / half, math.fsum(newer) / half, r


# -- Plateau ------------------------------------------------------------------------------------


def test_plateau_repr_reads_like_the_call():
    """Plateau's repr shows window and threshold always, metric and mode only when not default."""
    assert repr(Plateau()) == "Plateau(window=50, threshold=0.005)"
    assert repr(Plateau(window=10, threshold=0.01)) == "Plateau(window=10, threshold=0.01)"
    assert (
        repr(Plateau(8, 0.0, metric="acc", mode="max")) == "Plateau(window=8, threshold=0.0, metric='acc', mode='max')"
    )


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"window": 7}, ["'window'", "even", "window=8"]),
        ({"window": 0}, ["'window'", ">= 2"]),
        ({"window": 2.0}, ["'window'", "int"]),
        ({"threshold": math.nan}, ["'threshold'", "finite"]),
        ({"mode": "lowest"}, ["'mode'", '"min"']),
        ({"metric": ""}, ["'metric'"]),
    ],
)
def test_plateau_rejects_bad_arguments(kwargs, words):
    """A bad Plateau argument is a CurriculumError naming the field, the expectation and the value."""
    with pytest.raises(CurriculumError) as err:
        Plateau(**kwargs)
    for word in words:
        assert word in str(err.value)


def test_plateau_not_plateaued_until_full():
    """A flat metric does not read as a plateau until the window holds `window` values."""
    p = Plateau(window=4, threshold=0.005)
    feed(p, [1.0, 1.0, 1.0])
    assert not p(step_ctx()) and p.evidence(step_ctx())["improvement"] is None
    feed(p, [1.0])
    assert p(step_ctx())


def test_plateau_improvement_and_evidence():
    """Evidence is the older/newer half means and r = (older - newer) / |older| over the last window."""
    p = Plateau(window=4, threshold=0.1)
    feed(p, [9.0, 4.0, 4.0, 3.0, 3.0])  # the window is the last four: older (4, 4), newer (3, 3)
    ev = p.evidence(step_ctx())
    assert ev == {"window": 4, "filled": 4, "older_mean": 4.0, "newer_mean": 3.0, "improvement": 0.25, "threshold": 0.1}
    assert not p(step_ctx())  # improving by 25% >= 10%
    feed(p, [2.9, 2.9])  # older (3, 3), newer (2.9, 2.9): r = 0.0333 < 0.1
    assert p(step_ctx()) and p.improvement() == pytest.approx(0.1 / 3)


def test_plateau_max_mode_and_zero_older_mean():
    """mode='max' negates the numerator; an older mean of exactly 0 gives r = 0."""
    up = Plateau(window=2, threshold=0.05, metric="acc", mode="max")
    feed(up, [0.5, 0.6], metric="acc")
    assert up.improvement() == pytest.approx(0.2) and not up(step_ctx())
    zero = Plateau(window=2, threshold=0.005)
    feed(zero, [0.0, -5.0])
    assert zero.improvement() == 0.0 and zero(step_ctx())


def test_plateau_skips_nonfinite_values():
    """NaN and inf never enter the window."""
    p = Plateau(window=2, threshold=0.005)
    feed(p, [2.0, math.nan, math.inf, -math.inf, 1.0])
    ev = p.evidence(step_ctx())
    assert (ev["filled"], ev["older_mean"], ev["newer_mean"]) == (2, 2.0, 1.0)


def test_plateau_reset_clears_window():
    """reset() empties the window, so the guard no longer holds."""
    p = Plateau(window=2, threshold=0.5)
    feed(p, [1.0, 1.0])
    assert p(step_ctx())
    p.reset()
    assert p.filled == 0 and not p(step_ctx())


def test_plateau_missing_metric_names_it_and_the_point():
    """Observing a metric the loop did not pass raises a CurriculumError naming metric and point."""
    with pytest.raises(CurriculumError, match=r"'val_loss'.*step_end"):
        Plateau(window=2, metric="val_loss").observe(step_ctx(loss=1.0))


def test_plateau_load_rejects_malformed_state():
    """load_state_dict with something other than {'values': [finite numbers]} is a clear error."""
    with pytest.raises(CurriculumError, match="values"):
        Plateau(window=2).load_state_dict({"values": [1.0, "x"]})


def test_plateau_window_resets_when_phase_is_entered():
    """In an engine the window holds only values observed since its phase was entered."""
    plateau = Plateau(window=4, threshold=0.5)
    cur = Curriculum(
        [Phase("a"), Phase("b")],
        [Transition("a", "b", [MinSteps(3)], when="step_end"), Transition("b", "a", [plateau], when="step_end")],
    )
    eng = CurriculumEngine(cur)
    eng.start()
    for _ in range(3):
        eng.step_end(loss=1.0)
    assert eng.phase.name == "b" and plateau.filled == 0
    eng.step_end(loss=1.0)
    assert plateau.filled == 1


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_subnormal=False)
values = st.one_of(finite, finite, finite, st.sampled_from([math.nan, math.inf, -math.inf]))


@settings(max_examples=150, deadline=None)
@given(
    stream=st.lists(values, max_size=60),
    half=st.integers(1, 8),
    threshold=st.floats(-0.1, 0.1),
    mode=st.sampled_from(["min", "max"]),
    data=st.data(),
)
def test_plateau_snapshot_restore_and_naive_equivalence(stream, half, threshold, mode, data):
    """Snapshot -> JSON -> fresh Plateau -> continue decides as uninterrupted; both match a naive recomputation."""
    cut = data.draw(st.integers(0, len(stream)))
    live = Plateau(window=2 * half, threshold=threshold, mode=mode)
    feed(live, stream[:cut])
    restored = Plateau(window=2 * half, threshold=threshold, mode=mode)
    restored.load_state_dict(json.loads(json.dumps(live.state_dict(), allow_nan=False)))
    for i in range(cut, len(stream) + 1):
        ctx = step_ctx()
        assert restored(ctx) == live(ctx)
        assert restored.evidence(ctx) == live.evidence(ctx)
        expected = naive(stream[:i], 2 * half, mode)
        ev = live.evidence(ctx)
        if expected is None:
            assert ev["improvement"] is None and not live(ctx)
        else:
            older, newer, r = expected
            assert math.isclose(ev["older_mean"], older, rel_tol=1e-12, abs_tol=0)
            assert math.isclose(ev["newer_mean"], newer, rel_tol=1e-12, abs_tol=0)
            assert ev["improvement"] == r or math.isclose(ev["improvement"], r, rel_tol=1e-12)
            assert live(ctx) == (r < threshold)
        if i < len(stream):
            feed(live, [stream[i]])
            feed(restored, [stream[i]])


# -- Plateau(test="welch") ----------------------------------------------------------------------

# Wikipedia's "Welch's t-test", example 1: t = -2.46, dof = 24.99, two-sided p = 0.021.
WELCH_A1 = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
WELCH_A2 = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]


def naive_welch(values, window, threshold, mode="min"):
    """(t, dof) of the Welch test recomputed from scratch with Fractions; None until full."""
    kept = [v for v in values if math.isfinite(v)][-window:]
    if len(kept) < window:
        return None
    n = window // 2
    older, newer = [Fraction(v) for v in kept[:n]], [Fraction(v) for v in kept[n:]]
    mo, mn = sum(older) / n, sum(newer) / n
    vo = sum((v - mo) ** 2 for v in older) / (n - 1)
    vn = sum((v - mn) ** 2 for v in newer) / (n - 1)
    gain = (mo - mn if mode == "min" else mn - mo) - Fraction(threshold) * abs(mo)
    if vo + vn == 0:
        return None if gain == 0 else (math.copysign(math.inf, gain), None)
    t2 = gain * gain / ((vo + vn) / n)
    dof = (n - 1) * (vo + vn) ** 2 / (vo * vo + vn * vn)
    return math.copysign(math.sqrt(to_float(t2)), gain), to_float(dof)


def to_float(q: Fraction) -> float:
    """``float(q)``, or +-inf where it overflows a float (variances of values near 1e-200 square to 1e-400)."""
    try:
        return float(q)
    except OverflowError:
        return math.inf if q > 0 else -math.inf


def test_plateau_welch_repr_shows_test_and_alpha_only_when_not_default():
    """test and alpha appear in the repr only for the Welch test; the relative repr is unchanged."""
    assert repr(Plateau(window=50, threshold=0.005, test="relative")) == "Plateau(window=50, threshold=0.005)"
    assert (
        repr(Plateau(window=50, threshold=0.0, test="welch"))
        == "Plateau(window=50, threshold=0.0, test='welch', alpha=0.05)"
    )
    assert (
        repr(Plateau(8, 0.01, test="welch", alpha=0.1)) == "Plateau(window=8, threshold=0.01, test='welch', alpha=0.1)"
    )


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"test": "ttest"}, ["'test'", '"welch"']),
        ({"alpha": 0.05}, ["'alpha'", 'test="welch"']),
        ({"test": "welch", "alpha": 1.5}, ["'alpha'", "(0, 1)"]),
        ({"test": "welch", "alpha": True}, ["'alpha'", "(0, 1)"]),
        ({"test": "welch", "window": 2}, ["'window'", ">= 4"]),
    ],
)
def test_plateau_welch_rejects_bad_arguments(kwargs, words):
    """A bad test or alpha is a CurriculumError naming the field and the fix."""
    with pytest.raises(CurriculumError) as err:
        Plateau(**kwargs)
    for word in words:
        assert word in str(err.value)


def test_plateau_welch_matches_a_published_example():
    """Older half A1, newer A2 (the newer mean is higher): t = -2.455, dof = 24.99, p = 1 - 0.0107."""
    worse = Plateau(window=30, threshold=0.0, test="welch")
    feed(worse, WELCH_A1 + WELCH_A2)
    t, dof, p = worse.welch()
    assert t == pytest.approx(-2.4553564, abs=1e-6) and dof == pytest.approx(24.98853, abs=1e-4)
    assert p == pytest.approx(1 - 0.0106890, abs=1e-6) and worse(step_ctx())
    better = Plateau(window=30, threshold=0.0, test="welch")
    feed(better, WELCH_A2 + WELCH_A1)  # now the newer half is lower: significant at 0.05, not at 0.01
    assert better.welch()[2] == pytest.approx(0.0106890, abs=1e-6) and not better(step_ctx())
    strict = Plateau(window=30, threshold=0.0, test="welch", alpha=0.01)
    feed(strict, WELCH_A2 + WELCH_A1)
    assert strict(step_ctx())


def test_plateau_welch_reads_noise_as_a_plateau_and_a_clear_drop_as_progress():
    """A noisy window whose means differ by 12.5% is a plateau for welch, not for relative; a
    clean 5% drop is progress for both."""
    noisy = [1.0, 3.0, 1.0, 3.0, 0.5, 3.0, 0.5, 3.0]  # older mean 2.0, newer 1.75
    relative, welch = Plateau(window=8, threshold=0.01), Plateau(window=8, threshold=0.01, test="welch")
    feed(relative, noisy)
    feed(welch, noisy)
    assert not relative(step_ctx()) and welch(step_ctx())
    clean = [2.0, 2.01, 2.0, 2.01, 1.9, 1.91, 1.9, 1.91]
    relative, welch = Plateau(window=8, threshold=0.01), Plateau(window=8, threshold=0.01, test="welch")
    feed(relative, clean)
    feed(welch, clean)
    assert not relative(step_ctx()) and not welch(step_ctx())


def test_plateau_welch_threshold_is_the_margin():
    """A significant drop smaller than threshold * older mean is still a plateau: H1 is r > threshold."""
    drop = [2.0, 2.001, 2.0, 2.001, 1.99, 1.991, 1.99, 1.991]  # r = 0.5%, very little noise
    assert not _welch_holds(drop, threshold=0.0)
    assert _welch_holds(drop, threshold=0.01)
    assert not _welch_holds(drop, threshold=0.001)


def _welch_holds(values, threshold, mode="min"):
    p = Plateau(window=len(values), threshold=threshold, test="welch", mode=mode)
    feed(p, values)
    return p(step_ctx())


def test_plateau_welch_constant_halves_and_max_mode():
    """Constant halves: no variance, so dof is None and p is 0, 1/2 or 1; mode max asks for a rise."""
    flat = Plateau(window=4, threshold=0.0, test="welch")
    feed(flat, [1.0] * 4)
    assert flat.welch() == (0.0, None, 0.5) and flat(step_ctx())
    step = Plateau(window=4, threshold=0.0, test="welch")
    feed(step, [2.0, 2.0, 1.0, 1.0])
    assert step.welch() == (math.inf, None, 0.0) and not step(step_ctx())
    assert _welch_holds([0.5, 0.52, 0.6, 0.61], threshold=0.0, mode="min")  # rising accuracy read as a loss
    assert not _welch_holds([0.5, 0.52, 0.6, 0.61], threshold=0.0, mode="max")


def test_plateau_welch_evidence():
    """Welch evidence adds test, t, dof, p and alpha to the relative evidence (None until full)."""
    p = Plateau(window=4, threshold=0.0, test="welch", alpha=0.2)
    feed(p, [3.0, 2.0, 1.0])
    ev = p.evidence(step_ctx())
    assert ev["test"] == "welch" and ev["t"] is None and ev["p"] is None and ev["alpha"] == 0.2
    feed(p, [1.0])  # older (3, 2): variance 1/2; newer (1, 1): t = 1.5 / sqrt(1/4) = 3 on 1 dof (Cauchy)
    ev = p.evidence(step_ctx())
    assert (ev["older_mean"], ev["newer_mean"], ev["improvement"]) == (2.5, 1.0, 0.6)
    assert (ev["t"], ev["dof"]) == (3.0, 1.0) and ev["p"] == pytest.approx(0.5 - math.atan(3) / math.pi, rel=1e-12)
    assert not p(step_ctx())  # p = 0.102 < 0.2
    assert "test" not in Plateau(window=4).evidence(step_ctx())


@settings(max_examples=150, deadline=None)
@given(
    stream=st.lists(values, max_size=60),
    half=st.integers(2, 8),
    threshold=st.floats(-0.1, 0.1),
    mode=st.sampled_from(["min", "max"]),
    data=st.data(),
)
def test_plateau_welch_snapshot_restore_and_naive_equivalence(stream, half, threshold, mode, data):
    """Welch: snapshot -> JSON -> restore decides bit-identically; t and dof match a Fraction recomputation."""
    from policies._stats import student_t_sf

    cut = data.draw(st.integers(0, len(stream)))
    live = Plateau(window=2 * half, threshold=threshold, mode=mode, test="welch")
    feed(live, stream[:cut])
    restored = Plateau(window=2 * half, threshold=threshold, mode=mode, test="welch")
    restored.load_state_dict(json.loads(json.dumps(live.state_dict(), allow_nan=False)))
    for i in range(cut, len(stream) + 1):
        ctx = step_ctx()
        assert restored(ctx) == live(ctx)
        assert restored.evidence(ctx) == live.evidence(ctx)
        expected = naive_welch(stream[:i], 2 * half, threshold, mode)
        got = live.welch()
        if expected is None:  # not full yet, or both halves constant with no gain beyond the margin
            assert got is None and not live(ctx) or got == (0.0, None, 0.5) and live(ctx)
        else:
            t, dof = expected
            assert got[0] == t or math.isclose(got[0], t, rel_tol=1e-12)
            assert got[1] == dof or math.isclose(got[1], dof, rel_tol=1e-12)
            assert live(ctx) == (got[2] >= 0.05) and (dof is None or got[2] == student_t_sf(got[0], got[1]))
        if i < len(stream):
            feed(live, [stream[i]])
            feed(restored, [stream[i]])


def test_plateau_welch_t_beyond_a_float_is_infinite():
    """A half of variance ~1e-477 (values near 1e-239) makes t**2 overflow: t is -inf, as the exact value rounds."""
    live = Plateau(window=4, threshold=0.0, test="welch")
    stream = [0.0, 5.950857374695602e-239, 1.0, 1.0]  # found by hypothesis
    feed(live, stream)
    t, dof = naive_welch(stream, 4, 0.0)
    assert live.welch()[:2] == (t, dof) and t == -math.inf


# -- MinEpoch, MinSteps ---------------------------------------------------------------------------


def test_min_epoch_global_and_in_phase():
    """MinEpoch reads clock.epoch, or clock.epochs_in_phase with in_phase=True; evidence says which."""
    ctx = Context(clock=Clock(epoch=3, epochs_in_phase=1))
    assert MinEpoch(3)(ctx) and not MinEpoch(4)(ctx)
    assert MinEpoch(1, in_phase=True)(ctx) and not MinEpoch(2, in_phase=True)(ctx)
    assert MinEpoch(3).evidence(ctx) == {"epoch": 3, "min_epoch": 3}
    assert MinEpoch(2, in_phase=True).evidence(ctx) == {"epochs_in_phase": 1, "min_epoch": 2}


def test_min_steps_global_and_in_phase():
    """MinSteps reads clock.global_step, or clock.steps_in_phase with in_phase=True."""
    ctx = Context(clock=Clock(global_step=120, steps_in_phase=20))
    assert MinSteps(120)(ctx) and not MinSteps(121)(ctx)
    assert MinSteps(20, in_phase=True)(ctx) and not MinSteps(21, in_phase=True)(ctx)
    assert MinSteps(5).evidence(ctx) == {"global_step": 120, "min_steps": 5}


def test_counter_reprs_and_validation():
    """MinEpoch/MinSteps reprs read like the call; negative or non-int n is a CurriculumError."""
    assert [repr(MinEpoch(2)), repr(MinEpoch(0, in_phase=True)), repr(MinSteps(500))] == [
        "MinEpoch(2)",
        "MinEpoch(0, in_phase=True)",
        "MinSteps(500)",
    ]
    with pytest.raises(CurriculumError, match=r"MinEpoch: 'n' must be an int >= 0, got -1"):
        MinEpoch(-1)
    with pytest.raises(CurriculumError, match="'n'"):
        MinSteps(2.5)
    with pytest.raises(CurriculumError, match="in_phase"):
        MinEpoch(1, in_phase="yes")


# -- MetricBelow, MetricAbove ---------------------------------------------------------------------


def test_metric_thresholds():
    """MetricBelow/MetricAbove compare the point's metric strictly; NaN holds for neither."""
    ctx = Context(clock=Clock(), metrics={"val_bpb": 1.4, "nan": math.nan}, point=Point.EPOCH_END)
    assert MetricBelow("val_bpb", 1.5)(ctx) and not MetricBelow("val_bpb", 1.4)(ctx)
    assert MetricAbove("val_bpb", 1.3)(ctx) and not MetricAbove("val_bpb", 1.4)(ctx)
    assert not MetricBelow("nan", 1.0)(ctx) and not MetricAbove("nan", 1.0)(ctx)
    assert MetricBelow("val_bpb", 1.5).evidence(ctx) == {"metric": "val_bpb", "value": 1.4, "below": 1.5}


def test_metric_threshold_missing_metric_and_repr():
    """A missing metric raises naming it and the point; the repr reads like the call; bad args fail."""
    with pytest.raises(CurriculumError, match=r"'val_bpb'.*epoch_end"):
        MetricAbove("val_bpb", 1.0)(Context(clock=Clock(), metrics={}, point=Point.EPOCH_END))
    assert repr(MetricBelow("val_bpb", 1.5)) == "MetricBelow('val_bpb', 1.5)"
    assert repr(MetricAbove("acc", 0.9)) == "MetricAbove('acc', 0.9)"
    with pytest.raises(CurriculumError, match="'value'"):
        MetricBelow("loss", math.nan)
    with pytest.raises(CurriculumError, match="'metric'"):
        MetricBelow("", 1.0)


# -- combinators ----------------------------------------------------------------------------------


def test_combinator_truth_tables():
    """all_of, any_of and not_ combine their children's decisions."""
    ctx = Context(clock=Clock(epoch=3))
    yes, no = MinEpoch(1), MinEpoch(5)
    assert all_of(yes, yes)(ctx) and not all_of(yes, no)(ctx)
    assert any_of(no, yes)(ctx) and not any_of(no, no)(ctx)
    assert not_(no)(ctx) and not not_(yes)(ctx)


def test_combinator_reprs():
    """Combinator reprs read like the call, nesting their children's reprs."""
    guard = all_of(MinEpoch(2), Plateau(window=50, threshold=0.005))
    assert repr(guard) == "all_of(MinEpoch(2), Plateau(window=50, threshold=0.005))"
    assert (
        repr(any_of(not_(MinSteps(10)), MetricBelow("loss", 2.0)))
        == "any_of(not_(MinSteps(10)), MetricBelow('loss', 2.0))"
    )


def test_combinators_pass_observe_reset_and_state_through():
    """observe, reset, state_dict and load_state_dict reach the Plateau inside nested combinators."""
    inner = Plateau(window=2, threshold=0.5)
    guard = any_of(not_(MinEpoch(9)), all_of(MinEpoch(0), inner))
    feed(guard, [3.0, 2.0])
    assert inner.filled == 2
    state = json.loads(json.dumps(guard.state_dict()))
    twin_inner = Plateau(window=2, threshold=0.5)
    twin = any_of(not_(MinEpoch(9)), all_of(MinEpoch(0), twin_inner))
    twin.load_state_dict(state)
    assert twin_inner.state_dict() == {"values": [3.0, 2.0]}
    guard.reset()
    assert inner.filled == 0
    with pytest.raises(CurriculumError, match="one entry per child"):
        twin.load_state_dict({"guards": [None]})


def test_requires_inside_a_combinator_is_checked_at_start():
    """start() refuses a run missing an object that a guard inside a combinator requires, naming that guard."""

    class Needs:
        def __init__(self, *names):
            self.requires = names

        def __call__(self, ctx):
            return True

        def __repr__(self):
            return f"Needs{self.requires}"

    cur = Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [all_of(MinEpoch(1), not_(Needs("optimizer")))])])
    with pytest.raises(CurriculumError, match=r"Needs\('optimizer',\) requires a registered object 'optimizer'"):
        CurriculumEngine(cur, model=object()).start()
    CurriculumEngine(cur, optimizer=object()).start()


def test_combinator_evidence_is_nested_per_child():
    """Evidence holds each child's decision and evidence under its repr."""
    ctx = Context(clock=Clock(epoch=3))
    p = Plateau(window=2, threshold=0.005)
    feed(p, [1.0, 1.0])
    ev = all_of(MinEpoch(2), p).evidence(ctx)
    assert ev["MinEpoch(2)"] == {"holds": True, "epoch": 3, "min_epoch": 2}
    assert ev["Plateau(window=2, threshold=0.005)"]["holds"] is True
    assert ev["Plateau(window=2, threshold=0.005)"]["improvement"] == 0.0
    assert list(any_of(MinEpoch(5), MinEpoch(5)).evidence(ctx)) == ["MinEpoch(5)", "MinEpoch(5)#2"]


def test_combinator_evaluates_every_child():
    """A child's missing metric fails at once even when another child already decides (no short-circuit)."""
    ctx = Context(clock=Clock(), metrics={}, point=Point.EPOCH_END)
    with pytest.raises(CurriculumError, match="val_bpb"):
        all_of(MinEpoch(5), MetricBelow("val_bpb", 1.0))(ctx)


def not_a_lambda(ctx):
    return True


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: all_of(), "at least one guard"),
        (lambda: any_of(lambda ctx: True), "lambda"),
        (lambda: all_of(MinEpoch), r"instantiate it, e.g. MinEpoch\(...\)"),
        (lambda: not_("MinEpoch(2)"), "not its name"),
        (lambda: any_of(MinEpoch(1), 3), "callable"),
    ],
)
def test_combinator_validation(build, match):
    """Combinators refuse no guards, lambdas, classes, strings and non-callables with a clear error."""
    with pytest.raises(CurriculumError, match=match):
        build()


def test_combinator_accepts_named_function():
    """A plain named function is a valid child, shown by module.qualname."""
    assert repr(not_(not_a_lambda)) == "not_(tests.test_guards.not_a_lambda)"


def test_plateau_improvement_that_overflows_a_float_is_infinite():
    """A relative improvement too large for a float reads as +inf (found by hypothesis: tiny older mean)."""
    from policies.guards import _ratio

    huge = 1 << 3000
    assert _ratio(huge, 3) == math.inf and _ratio(-huge, 3) == -math.inf and _ratio(huge, -3) == -math.inf


# -- loop-back guards --------------------------------------------------------------------------------


def test_cooldown_counts_epochs_or_steps_since_the_last_transition():
    """Cooldown(n) holds once n epochs (or steps) passed since the phase was entered."""
    cur = Curriculum(
        [Phase("a"), Phase("b")],
        [Transition("a", "b", [Cooldown(2)]), Transition("b", "a", [Cooldown(3, unit="steps")], when="step_end")],
    )
    eng = CurriculumEngine(cur)
    eng.start()
    assert eng.epoch_end() is None
    record = eng.epoch_end()
    assert (record.dest, record.epoch, record.guards[0].evidence) == (
        "b",
        2,
        {"epochs_since_transition": 2, "cooldown": 2},
    )
    assert eng.step_end(loss=1.0) is None and eng.step_end(loss=1.0) is None
    assert eng.step_end(loss=1.0).guards[0].evidence == {"steps_since_transition": 3, "cooldown": 3}
    assert repr(Cooldown(2)) == "Cooldown(2)" and repr(Cooldown(5, unit="steps")) == "Cooldown(5, unit='steps')"
    for bad in (dict(n=0), dict(n=2, unit="days")):
        with pytest.raises(CurriculumError, match="Cooldown"):
            Cooldown(**bad)


def test_max_visits_counts_entries_of_the_destination_in_the_history():
    """MaxVisits(n) holds while the destination was entered fewer than n times (the start counts)."""
    cur = Curriculum(
        [Phase("a"), Phase("b")], [Transition("a", "b", [Cooldown(1)]), Transition("b", "a", [MaxVisits(2)])]
    )
    eng = CurriculumEngine(cur)
    eng.start()
    eng.epoch_end()  # a -> b
    back = eng.epoch_end()  # b -> a: a entered once (the start)
    assert (back.dest, back.guards[0].evidence) == ("a", {"dest": "a", "visits": 1, "max_visits": 2})
    eng.epoch_end()  # a -> b
    assert eng.epoch_end() is None and eng.phase.name == "b"  # a entered twice: no third visit
    with pytest.raises(CurriculumError, match="MaxVisits"):
        MaxVisits(0)


def worse_than_best_run(values, patience=2, mode="min", **kwargs):
    guard = WorseThanBest("val", patience=patience, mode=mode, **kwargs)
    cur = Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [guard])])
    eng = CurriculumEngine(cur)
    eng.start()
    fired = [eng.epoch_end(val=v) is not None for v in values]
    return eng, guard, fired


def test_worse_than_best_needs_patience_consecutive_worse_evaluations():
    """It holds after `patience` evaluations in a row worse than the best since the phase began."""
    eng, guard, fired = worse_than_best_run([3.0, 2.5, 2.7, 2.4, 2.6, 2.6, 2.8])
    # best 3.0, 2.5; 2.7 worse (1); 2.4 best; 2.6 worse (1); 2.6 worse (2): fires
    assert fired == [False, False, False, False, False, True, False]  # then in b, which has no way out
    assert eng.history[-1].guards[0].evidence == {
        "metric": "val",
        "value": 2.6,
        "best": 2.4,
        "worse_for": 2,
        "patience": 2,
    }
    assert (guard.best, guard.streak) == (2.4, 2)  # observes only while a is current
    _, _, fired = worse_than_best_run([1.0, 2.0, 1.0, 2.0], patience=1, mode="max")
    assert fired == [False, False, True, False]
    _, _, fired = worse_than_best_run([2.0, 2.0, 3.0, float("nan"), 3.0], patience=2)
    assert fired == [False, False, False, False, True]  # equal clears nothing to count; NaN skipped
    assert repr(WorseThanBest("val_loss")) == "WorseThanBest('val_loss')"
    assert repr(WorseThanBest("acc", patience=3, mode="max")) == "WorseThanBest('acc', patience=3, mode='max')"


def test_worse_than_best_never_backs_off_on_a_flat_noisy_loss():
    """A flat validation loss with 0.1% noise: without a margin the back-off fires; with min_delta (absolute or
    relative) never, in 500 evaluations."""
    import random

    rng = random.Random(0)
    noisy = [2.32 + 0.0023 * rng.uniform(-1, 1) for _ in range(500)]  # 2.32 +- 0.1%
    assert any(worse_than_best_run(noisy, patience=2)[2])
    for kwargs in ({"min_delta": 0.005}, {"min_delta": 0.0025, "relative": True}):
        eng, guard, fired = worse_than_best_run(noisy, patience=2, **kwargs)
        assert not any(fired) and guard.streak == 0
    _, _, fired = worse_than_best_run([2.318, 2.32, 2.3202, 2.33, 2.34], patience=2, min_delta=0.001, relative=True)
    assert fired == [False, False, False, False, True]  # 2.320, 2.3202 are within 0.1% of 2.318; 2.33, 2.34 are not


def test_worse_than_best_in_the_run_keeps_the_best_across_visits():
    """since="run": back in the phase, the best of the earlier visit still counts; since="phase" starts afresh."""

    def visits(since):
        cur = Curriculum(
            [Phase("a"), Phase("b")],
            [Transition("a", "b", [WorseThanBest("val", since=since)]), Transition("b", "a", [MinEpoch(0)])],
        )
        eng = CurriculumEngine(cur)
        eng.start()
        return [(eng.epoch_end(val=v) or None) and eng.phase.name for v in (1.0, 1.5, 2.0, 2.5, 2.6)]

    assert visits("run") == [None, "b", "a", "b", "a"]  # 2.5 is worse than 1.0, the best of the first visit
    assert visits("phase") == [None, "b", "a", None, "b"]  # 2.5 is the first value of the new visit: its best
    assert (
        repr(WorseThanBest("v", min_delta=0.01, relative=True, since="run"))
        == "WorseThanBest('v', min_delta=0.01, relative=True, since='run')"
    )
    for kwargs, field in (
        ({"min_delta": -1}, "min_delta"),
        ({"relative": 1}, "relative"),
        ({"since": "epoch"}, "since"),
    ):
        with pytest.raises(CurriculumError, match=field):
            WorseThanBest("v", **kwargs)


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.floats(min_value=0.0, max_value=10.0, allow_nan=False), max_size=30), cut=st.integers(0, 30))
def test_worse_than_best_restores_exactly(values, cut):
    """Snapshot at any epoch + JSON + restore + continue == uninterrupted, for any validation stream."""
    import json

    def build():
        return Curriculum(
            [Phase("a"), Phase("b")],
            [
                Transition("a", "b", [WorseThanBest("val", patience=2, min_delta=0.5)]),
                Transition(
                    "b", "a", [WorseThanBest("val", patience=3, mode="max", min_delta=0.1, relative=True, since="run")]
                ),
            ],
        )

    whole = CurriculumEngine(build())
    whole.start()
    for v in values:
        whole.epoch_end(val=v)
    first = CurriculumEngine(build())
    first.start()
    for v in values[:cut]:
        first.epoch_end(val=v)
    resumed = CurriculumEngine(build())
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    for v in values[cut:]:
        resumed.epoch_end(val=v)
    strip = lambda s: {**s, "history": [{k: v for k, v in r.items() if k != "wall_time"} for r in s["history"]]}  # noqa: E731
    assert strip(resumed.state_dict()) == strip(whole.state_dict())


def test_worse_than_best_declares_and_needs_its_metric():
    """WorseThanBest observes its metric at its transition's point; the loop must pass it there."""
    cur = Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [WorseThanBest("val_loss")])])
    eng = CurriculumEngine(cur)
    eng.start()
    eng.step_end(loss=1.0)  # not read at step_end
    with pytest.raises(CurriculumError, match=r"'val_loss' \(read by WorseThanBest\('val_loss'\) in a -> b\)"):
        eng.epoch_end()
    with pytest.raises(CurriculumError, match="load_state_dict"):
        WorseThanBest("v").load_state_dict({"best": "x"})


# -- mark / undo: the engine's O(1) rollback of a call that raises -----------------------------------


def plateau_internals(p):
    """Everything a Plateau decides from and saves: both halves (exact ints), the four sums and its values."""
    return list(p._older), list(p._newer), p._older_sum, p._newer_sum, p._older_sq, p._newer_sq, p.state_dict()


any_value = st.one_of(st.floats(-1e3, 1e3, allow_nan=False), st.sampled_from([math.nan, math.inf, -math.inf]))


@settings(max_examples=300, deadline=None)
@given(
    stream=st.lists(any_value, max_size=40),
    half=st.integers(2, 6),
    welch=st.booleans(),
    x=any_value,
    case=st.sampled_from(["nothing", "push", "reset", "push, reset"]),
)
def test_plateau_undone_from_its_state_dict_keeps_exact_sums(stream, half, welch, x, case):
    """A copy of state_dict(), then a push, a reset or both, then load_state_dict(copy) (the engine's undo of a call
    that raises): the window, its exact sums (squares too) and decisions are as before, and it goes on as before."""
    kwargs = {"window": 2 * half, "threshold": 0.01, "test": "welch" if welch else "relative"}
    p = Plateau(**kwargs)
    for v in stream:
        p.push(v)
    ctx = step_ctx()
    before, decision, evidence = plateau_internals(p), p(ctx), p.evidence(ctx)
    copy = p.state_dict()
    if "push" in case:
        p.push(x)
    if "reset" in case:
        p.reset()
    p.load_state_dict(copy)
    assert plateau_internals(p) == before and p.state_dict() == copy
    assert p(ctx) == decision and p.evidence(ctx) == evidence
    twin = Plateau(**kwargs)
    for v in stream:
        twin.push(v)
    for v in (x, 1.0, 0.5, 2.0):
        p.push(v)
        twin.push(v)
        assert plateau_internals(p) == plateau_internals(twin)
