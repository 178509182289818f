"""Atomic calls: validated input, metric coercion, rollback on user errors, early metric checks (engine.runtime)."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import Curriculum, CurriculumEngine, CurriculumError, Phase, Point, Transition
from policies import MetricAbove, MinEpoch, Plateau, WorseThanBest, all_of
from tests.utils import Always, Both, CountBelow, CrashIf, ExplodeIf, Log, LossBelow, Never, ValBelow


class Boom:
    """An action that always raises."""

    def __call__(self, ctx):
        raise ValueError("no")

    def __repr__(self):
        return "Boom()"


def two_phase(guard, when=Point.EPOCH_END):
    eng = CurriculumEngine(Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [guard], when=when)]))
    eng.start()
    return eng


BAD = [
    ("1.5", "str"),
    (None, "NoneType"),
    ([1.0], "list"),
    (complex(1, 2), "complex"),
    (10**400, "int"),
    (True, "bool"),
    (torch.tensor([1.0, 2.0]), "Tensor"),
    (np.array([1.0, 2.0]), "ndarray"),
    (np.bool_(True), type(np.bool_(True)).__name__),  # numpy 2 names it "bool", numpy 1 "bool_"
    (torch.tensor([1j]), "Tensor"),
]


@pytest.mark.parametrize("value, kind", BAD)
def test_step_end_with_a_bad_metric_changes_nothing(value, kind):
    """A metric that is not a real number is a CurriculumError naming it, its type and value; nothing is counted."""
    eng = two_phase(CountBelow(2.0, need=100))
    eng.step_end(loss=1.0)
    before = eng.state_dict()
    with pytest.raises(CurriculumError, match=rf"step_end\(\): metric 'loss' must be a real number.*got {kind} "):
        eng.step_end(loss=value)
    with pytest.raises(CurriculumError, match=rf"metric 'lr' must be a real number.*got {kind} "):
        eng.step_end(loss=1.0, lr=value)
    with pytest.raises(CurriculumError, match=rf"epoch_end\(\): metric 'val' must be a real number.*got {kind} "):
        eng.epoch_end(val=value)
    assert eng.state_dict() == before


@pytest.mark.parametrize(
    "value, expected",
    [
        (2, 2.0),
        (np.float32(0.5), 0.5),
        (np.int64(3), 3.0),
        (np.float64(1.25), 1.25),
        (torch.tensor(2.5), 2.5),
        (torch.tensor([1.5]), 1.5),
        (torch.tensor(4), 4.0),
        (np.array(0.75), 0.75),
        (float("nan"), None),
        (float("inf"), float("inf")),
    ],
)
def test_real_metrics_become_floats(value, expected):
    """int, numpy scalars and one-element tensors become plain floats before any guard sees them."""
    seen = []

    class Spy:
        def __call__(self, ctx):
            seen.append(ctx.metrics["x"])
            return False

        def __repr__(self):
            return "Spy()"

    eng = two_phase(Spy(), when=Point.STEP_END)
    eng.step_end(loss=value, x=value)
    assert type(seen[0]) is float and (seen[0] == expected or (expected is None and seen[0] != seen[0]))


def test_missing_metric_at_epoch_end_changes_nothing():
    """epoch_end without a metric a guard of the current phase declares fails before the epoch is counted."""
    eng = two_phase(ValBelow(1.0))
    eng.step_end(loss=1.0)
    eng.epoch_end(val=2.0)
    before = eng.state_dict()
    with pytest.raises(
        CurriculumError, match=r"'val' \(read by ValBelow\(1.0\) in a -> b\).*engine.epoch_end\(val=\.\.\.\)"
    ):
        eng.epoch_end(other=1.0)
    assert eng.state_dict() == before
    eng.epoch_end(val=0.5)
    assert eng.phase.name == "b" and eng.clock.epoch == 2


def test_undeclared_missing_metric_is_rolled_back_too():
    """A guard that reads a metric it did not declare fails late, naming it, and the call still counts nothing."""
    eng = two_phase(LossBelow(0.5), when=Point.EPOCH_END)  # reads 'loss' at epoch_end, undeclared
    before = eng.state_dict()
    with pytest.raises(
        CurriculumError,
        match=r"LossBelow\(0.5\) of transition a -> b raised CurriculumError: metric 'loss' is needed at epoch_end",
    ):
        eng.epoch_end()
    assert eng.state_dict() == before


def test_first_call_checks_every_metric_the_curriculum_reads_there():
    """At a run's first epoch_end/step_end, every metric any transition reads there must be passed; all missing are
    listed."""
    cur = Curriculum(
        [Phase("short"), Phase("long"), Phase("longest")],
        [
            Transition("short", "long", [MinEpoch(1)]),
            Transition("long", "short", [all_of(MetricAbove("val_loss", 3.0), MetricAbove("val_acc", 0.9))]),
            Transition("long", "longest", [Plateau(window=4, metric="grad_norm")]),
        ],
    )
    eng = CurriculumEngine(cur)
    eng.start()
    with pytest.raises(
        CurriculumError,
        match=(
            r"step_end\(\).*'grad_norm' \(read by Plateau\(window=4, threshold=0.005, metric='grad_norm'\) in long -> "
            r"longest\)"
        ),
    ):
        eng.step_end(loss=1.0)
    eng.step_end(loss=1.0, grad_norm=0.5)
    with pytest.raises(
        CurriculumError,
        match=(
            r"'val_loss' \(read by MetricAbove\('val_loss', 3.0\) in long -> short\); 'val_acc' "
            r".*engine.epoch_end\(val_loss=\.\.\., val_acc=\.\.\.\)"
        ),
    ) as info:
        eng.epoch_end()
    assert "Nothing was counted" in str(info.value) and eng.clock.epoch == 0
    eng.epoch_end(val_loss=1.0, val_acc=0.5)
    assert eng.phase.name == "long"


def test_action_that_raises_rolls_the_transition_back():
    """An action that raises: a chained error naming it and the actions already run; the engine stays in phase a."""
    calls = []
    cur = Curriculum(
        [Phase("a"), Phase("b", on_enter=[Log("enter_b", calls)])],
        [Transition("a", "b", [Always()], [Log("first", calls), ExplodeIf(calls)])],
    )
    eng = CurriculumEngine(cur)
    eng.start()
    eng.step_end(loss=1.0)
    before = eng.state_dict()
    with pytest.raises(
        CurriculumError,
        match=(
            r"action ExplodeIf\(\) of transition a -> b raised ValueError: action exploded \(at epoch_end, global step "
            r"1\); actions that had already run.*Log\('first'\) -> \{'name': 'first', 'step': 1\}"
        ),
    ) as info:
        eng.epoch_end(explode=1.0)
    assert isinstance(info.value.__cause__, ValueError)
    assert calls == ["first"] and eng.phase.name == "a" and eng.state_dict() == before
    record = eng.epoch_end()  # fixed: the retry fires the transition once, actions run again
    assert calls == ["first", "first", "explode_if", "enter_b"] and record.epoch == 1 and len(eng.history) == 2


def test_on_enter_that_raises_leaves_the_source_phase():
    """An on_enter action raising after transitions moved the machine still leaves the engine in the source phase."""
    cur = Curriculum(
        [Phase("a"), Phase("b", on_enter=[ExplodeIf()])], [Transition("a", "b", [Always()], when="step_end")]
    )
    eng = CurriculumEngine(cur)
    eng.start()
    before = eng.state_dict()
    with pytest.raises(CurriculumError, match=r"action ExplodeIf\(\) of transition a -> b raised"):
        eng.step_end(loss=1.0, explode=1.0)
    assert eng.phase.name == "a" and eng.state_dict() == before
    cur = Curriculum([Phase("a"), Phase("b", on_enter=[Boom()])], [Transition("a", "b", [Never()])])
    eng = CurriculumEngine(cur)
    eng.start()
    before = eng.state_dict()
    with pytest.raises(
        CurriculumError, match=r"action Boom\(\) of the manual transition a -> b raised ValueError: no \(at force\(\)"
    ):
        eng.force("b", reason="by hand")
    assert eng.phase.name == "a" and eng.state_dict() == before


def test_observe_that_raises_restores_every_observer():
    """A guard's observe() raising is wrapped; guards that observed before it in the same step are restored."""

    class BadObserver(Never):
        def observe(self, ctx):
            if "crash" in ctx.metrics:
                raise KeyError("observer crashed")

    counter = CountBelow(2.0, need=100)
    cur = Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [counter]), Transition("a", "b", [BadObserver()])])
    eng = CurriculumEngine(cur)
    eng.start()
    eng.step_end(loss=1.0)
    before = eng.state_dict()
    with pytest.raises(CurriculumError, match=r"guard Never\(\) \(in a -> b\) raised in observe\(\) KeyError"):
        eng.step_end(loss=1.0, crash=1.0)
    assert counter.count == 1 and eng.state_dict() == before


def test_start_whose_on_enter_raises_stays_unstarted():
    """start() with an on_enter action that raises leaves the engine unstarted; start() can be called again."""
    cur = Curriculum([Phase("a", on_enter=[Boom()]), Phase("b")], [Transition("a", "b", [Never()])])
    eng = CurriculumEngine(cur)
    with pytest.raises(CurriculumError, match=r"on_enter of 'a'\) raised at start\(\) ValueError: no.*left unstarted"):
        eng.start()
    with pytest.raises(CurriculumError, match=r"engine.start\(\)"):
        eng.step_end(loss=1.0)


# -- the property: a call that raises has no effect ---------------------------------------------------


def build(calls):
    return Curriculum(
        [Phase("a"), Phase("b", on_enter=[Log("enter_b", calls)]), Phase("c", on_enter=[ExplodeIf(calls)])],
        [
            Transition("a", "b", [CountBelow(0.5, need=3), CrashIf()], when=Point.STEP_END),
            Transition("a", "c", [Plateau(window=4, threshold=0.5)]),
            Transition("b", "c", [all_of(MinEpoch(1, in_phase=True), ValBelow(0.6))], [Log("to_c", calls)]),
            Transition("c", "a", [LossBelow(0.2)], [ExplodeIf(calls)], when="step_end"),
        ],
    )


finite = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
bad_value = st.sampled_from(["0.1", None, [0.1], complex(0, 1), 10**400, True, torch.tensor([0.1, 0.2])])
call = st.one_of(
    st.tuples(st.just("step"), finite, st.sampled_from([{}, {"crash": 1.0}, {"explode": 1.0}])),
    st.tuples(st.just("epoch"), finite, st.sampled_from([{}, {"explode": 1.0}])),
    st.tuples(st.just("bad_step"), bad_value, st.just({})),
    st.tuples(st.just("bad_epoch"), bad_value, st.just({})),
    st.tuples(st.just("epoch_without_val"), finite, st.just({})),
)


def apply(engine, kind, value, extra):
    if kind == "step":
        return engine.step_end(loss=value, **extra)
    if kind == "epoch":
        return engine.epoch_end(val=value, **extra)
    if kind == "bad_step":
        return engine.step_end(loss=value)
    if kind == "bad_epoch":
        return engine.epoch_end(val=value)
    return engine.epoch_end()


def assert_failures_change_nothing(build_engine, calls, check=lambda call, raised: None) -> None:
    """Run ``calls`` on one engine: each that raises must leave ``state_dict()`` as it was, and the
    engine must end where the calls that did not raise, run alone on a fresh engine, end.
    ``check(call, raised)`` asserts more about each call."""
    mixed = build_engine()
    mixed.start()
    kept = []
    for c in calls:
        before = json.dumps(mixed.state_dict(), sort_keys=True)
        try:
            apply(mixed, *c)
        except CurriculumError:
            assert json.dumps(mixed.state_dict(), sort_keys=True) == before
            check(c, True)
            continue
        check(c, False)
        kept.append(c)
    alone = build_engine()
    alone.start()
    for c in kept:
        apply(alone, *c)
    strip = lambda s: {**s, "history": [{k: v for k, v in r.items() if k != "wall_time"} for r in s["history"]]}  # noqa: E731
    assert strip(alone.state_dict()) == strip(mixed.state_dict())


@settings(max_examples=150, deadline=None)
@given(calls=st.lists(call, max_size=60))
def test_calls_that_raise_change_nothing(calls):
    """Any interleaving of valid and invalid calls ends where the calls that did not raise, run alone, end."""

    def check(c, raised):
        if raised:
            assert c[0] != "step" or c[2]  # a plain valid step never raises
        else:
            assert not c[0].startswith("bad")  # input that is not a real number always raises

    assert_failures_change_nothing(lambda: CurriculumEngine(build([])), calls, check)


# -- how a failed call is undone: O(1) marks where guards offer them, state_dict copies otherwise ----------


class ArmReset:
    """Action that arms ``box`` when the loop passed ``reset_crash=...``: a CrashOnReset guard's reset then raises."""

    def __init__(self, box: dict) -> None:
        self.box = box

    def __call__(self, ctx):
        self.box["armed"] = "reset_crash" in ctx.metrics

    def __repr__(self):
        return "ArmReset()"


class CrashOnReset(Never):
    """A guard whose reset() raises when ``box`` is armed (a user guard with a bug in reset)."""

    def __init__(self, box: dict) -> None:
        self.box = box

    def reset(self):
        if self.box.get("armed"):
            raise RuntimeError("reset crashed")

    def __repr__(self):
        return "CrashOnReset()"


def build_observers(box):
    """Plateaus (relative and welch) and a WorseThanBest observing, in phases entered and left again,
    with guards, on_enter actions and resets that raise on request."""
    shared = Plateau(window=4, threshold=0.5)  # observes in a, is reset when b is entered
    return Curriculum(
        [Phase("a"), Phase("b", on_enter=[ExplodeIf()])],
        [
            Transition(
                "a",
                "b",
                [all_of(Plateau(window=6, threshold=0.2, test="welch"), CrashIf()), shared],
                [ArmReset(box)],
                when=Point.STEP_END,
            ),
            Transition(
                "a", "b", [all_of(WorseThanBest("val", patience=2), MinEpoch(1, in_phase=True))], [ArmReset(box)]
            ),
            Transition(
                "b",
                "a",
                [shared, Plateau(window=4, threshold=0.5, test="welch"), CrashOnReset(box)],
                when=Point.STEP_END,
            ),
            Transition("b", "a", [WorseThanBest("val", mode="max")]),
        ],
    )


observer_call = st.one_of(
    st.tuples(
        st.just("step"), finite, st.sampled_from([{}, {}, {"crash": 1.0}, {"explode": 1.0}, {"reset_crash": 1.0}])
    ),
    st.tuples(st.just("epoch"), finite, st.sampled_from([{}, {"explode": 1.0}, {"reset_crash": 1.0}])),
)


@settings(max_examples=150, deadline=None)
@given(calls=st.lists(observer_call, max_size=80))
def test_calls_that_raise_undo_every_observer_and_reset(calls):
    """With Plateau and WorseThanBest: any interleaving of failing and good calls ends as the good calls alone."""
    assert_failures_change_nothing(lambda: CurriculumEngine(build_observers({})), calls)


def test_a_user_guard_is_restored_from_its_state_dict():
    """A user guard that observes is copied with state_dict() before a call and restored with load_state_dict()."""
    counter = CountBelow(2.0, need=100)
    eng = two_phase(all_of(counter, CrashIf()), when=Point.STEP_END)
    eng.step_end(loss=1.0)
    before = eng.state_dict()
    with pytest.raises(CurriculumError, match="CrashIf"):
        eng.step_end(loss=1.0, crash=1.0)
    assert counter.count == 1 and eng.state_dict() == before


def test_start_whose_reset_raises_undoes_the_resets_before_it():
    """start() with a guard whose reset() raises leaves the guards reset before it as they were, and stays unstarted."""
    box = {"armed": True}
    plateau = Plateau(window=4)
    for v in (4.0, 3.0, 2.0):
        plateau.push(v)
    values = plateau.state_dict()
    eng = CurriculumEngine(Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [plateau, CrashOnReset(box)])]))
    with pytest.raises(
        CurriculumError,
        match=r"CrashOnReset\(\) \(in a -> b\) raised in reset\(\) RuntimeError: reset crashed \(at start\(\)",
    ):
        eng.start()
    assert plateau.state_dict() == values
    box["armed"] = False
    eng.start()
    assert plateau.state_dict() == {"values": []}


def test_guards_inside_a_stateless_combinator_are_undone_too():
    """Guards inside a user's combinator that has no state_dict() are each undone from their own state_dict()."""
    plateau = Plateau(window=4)
    counter = CountBelow(2.0, need=100)
    eng = two_phase(Both(CrashIf(), plateau, counter), when=Point.STEP_END)
    for loss in (0.4, 0.3, 0.2):
        eng.step_end(loss=loss)
    values = plateau.state_dict()
    with pytest.raises(CurriculumError, match="CrashIf"):
        eng.step_end(loss=0.1, crash=1.0)
    assert plateau.state_dict() == values


def test_a_force_whose_reset_raises_keeps_the_guards_held_since():
    """A manual move that fails while entering its phase leaves the held_since of the phase it stayed in."""
    crash = CrashOnReset({"armed": True})
    cur = Curriculum(
        [Phase("a"), Phase("b"), Phase("c")],
        [
            Transition("a", "b", [LossBelow(2.0), Never()], when=Point.STEP_END),
            Transition("a", "c", [Never()], when=Point.STEP_END),
            Transition("c", "b", [crash], when=Point.STEP_END),
        ],
    )
    eng = CurriculumEngine(cur)
    eng.start()
    eng.step_end(loss=1.0)
    before = eng.state_dict()
    assert before["held_since"]["0"] == [[1, 0], None]
    with pytest.raises(CurriculumError, match=r"CrashOnReset\(\) \(in c -> b\) raised in reset\(\)"):
        eng.force("c", "by hand")
    assert eng.state_dict() == before
