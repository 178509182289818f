"""The engine's clock, evaluation points, firing order and manual transitions (engine.runtime)."""

import copy
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from engine import Clock, Context, Curriculum, CurriculumEngine, CurriculumError, Phase, Point, Transition
from engine.protocols import AllOf
from policies import MinEpoch, any_of
from tests.utils import Always, Both, CountBelow, EpochAtLeast, Log, LossBelow, Never

ROOT = Path(__file__).resolve().parent.parent


class ClockSpy:
    """Guard that records the clock it sees and never holds."""

    def __init__(self):
        self.seen = []

    def __call__(self, ctx):
        c = ctx.clock
        self.seen.append(
            (ctx.point.value, c.global_step, c.epoch, c.step_in_epoch, c.steps_in_phase, c.epochs_in_phase)
        )
        return False

    def __repr__(self):
        return "ClockSpy()"


def run_epochs(engine, epochs, steps, loss=1.0):
    for _ in range(epochs):
        for _ in range(steps):
            engine.step_end(loss=loss)
        engine.epoch_end()


def test_counters_increment_before_guards():
    """step_end counts the step and epoch_end the epoch before guards run; step_in_epoch restarts."""
    spy_s, spy_e = ClockSpy(), ClockSpy()
    cur = Curriculum(
        [Phase("a"), Phase("b")],
        [Transition("a", "b", [spy_s], when=Point.STEP_END), Transition("a", "b", [spy_e], when=Point.EPOCH_END)],
    )
    eng = CurriculumEngine(cur)
    eng.start()
    run_epochs(eng, 3, 2)
    assert spy_s.seen[:3] == [("step_end", 1, 0, 1, 1, 0), ("step_end", 2, 0, 2, 2, 0), ("step_end", 3, 1, 1, 3, 1)]
    assert spy_e.seen == [("epoch_end", 2, 1, 0, 2, 1), ("epoch_end", 4, 2, 0, 4, 2), ("epoch_end", 6, 3, 0, 6, 3)]


def test_raise_after_third_epoch_records_epoch_three():
    """A transition at the boundary after the third epoch sees and records epoch == 3."""
    cur = Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [EpochAtLeast(3)])])
    eng = CurriculumEngine(cur)
    eng.start()
    run_epochs(eng, 2, 5)
    assert eng.phase.name == "a"
    for _ in range(5):
        eng.step_end(loss=1.0)
    record = eng.epoch_end()
    assert (record.epoch, record.global_step, record.point) == (3, 15, "epoch_end")
    assert eng.phase.name == "b" and eng.clock.steps_in_phase == 0 and eng.clock.epochs_in_phase == 0


def test_first_matching_transition_in_declaration_order_and_one_per_point():
    """Of several transitions that hold, the first declared fires, and only one per point (no chaining)."""
    cur = Curriculum(
        [Phase("a"), Phase("b"), Phase("c")],
        [
            Transition("a", "c", [Never()]),
            Transition("a", "b", [Always()]),
            Transition("a", "c", [Always()]),
            Transition("b", "c", [Always()]),
        ],
    )
    eng = CurriculumEngine(cur)
    eng.start()
    first = eng.epoch_end()
    assert (first.source, first.dest) == ("a", "b") and eng.phase.name == "b"
    assert len(eng.history) == 2  # the start, then a -> b
    second = eng.epoch_end()
    assert (second.source, second.dest) == ("b", "c")


def test_step_end_transition_fires_at_the_step():
    """A STEP_END transition fires on the step its guard holds, with that step's loss as evidence."""
    cur = Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [LossBelow(0.5)], when="step_end")])
    eng = CurriculumEngine(cur)
    eng.start()
    assert eng.step_end(loss=0.9) is None
    record = eng.step_end(loss=0.4)
    assert record.global_step == 2 and record.guards[0].evidence == {"loss": 0.4, "value": 0.5}
    assert eng.epoch_end() is None  # no epoch-end transition out of "b"


def test_firing_order_actions_then_on_enter_then_resets():
    """Transition actions run in order, then the destination's on_enter, then guard resets."""
    calls = []

    class ResetSpy(Never):
        def reset(self):
            calls.append("reset")

    cur = Curriculum(
        [
            Phase("a", on_enter=[Log("enter_a", calls)]),
            Phase("b", on_enter=[Log("enter_b1", calls), Log("enter_b2", calls)]),
            Phase("c"),
        ],
        [
            Transition("a", "b", [Always()], [Log("act1", calls), Log("act2", calls)]),
            Transition("b", "c", [ResetSpy()]),
        ],
    )
    eng = CurriculumEngine(cur)
    eng.start()
    assert calls == ["enter_a"]
    record = eng.epoch_end()
    assert calls == ["enter_a", "act1", "act2", "enter_b1", "enter_b2", "reset"]
    assert [a.action for a in record.actions] == ["Log('act1')", "Log('act2')", "Log('enter_b1')", "Log('enter_b2')"]
    assert record.actions[0].effect == {"name": "act1", "step": 0}


def test_observe_only_in_source_phase_and_reset_on_entry():
    """Guards observe at step_end only while their phase is current, and start afresh on entry."""
    counter = CountBelow(1.0, need=3)
    cur = Curriculum(
        [Phase("a"), Phase("b")],
        [
            Transition("a", "b", [EpochAtLeast(1)]),
            Transition("b", "a", [counter]),
        ],
    )
    eng = CurriculumEngine(cur)
    eng.start()
    eng.step_end(loss=0.5)
    assert counter.count == 0  # phase a: the guard of b -> a does not observe
    eng.epoch_end()  # a -> b
    eng.step_end(loss=0.5)
    eng.step_end(loss=2.0)
    assert counter.count == 1


def test_missing_metric_names_it_and_the_point():
    """A guard needing a metric the loop did not pass raises, naming the metric and the point."""

    class NeedsVal:
        def __call__(self, ctx):
            return ctx.metric("val_bpb") < 1

        def __repr__(self):
            return "NeedsVal()"

    cur = Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [NeedsVal()])])
    eng = CurriculumEngine(cur)
    eng.start()
    with pytest.raises(CurriculumError, match=r"'val_bpb' is needed at epoch_end.*engine.epoch_end\(val_bpb=\.\.\.\)"):
        eng.epoch_end(val_loss=1.0)


def test_guard_exception_becomes_a_chained_error_naming_where():
    """An exception inside a guard becomes a CurriculumError chained to it, naming transition, guard, point and step."""

    class Boom:
        def __call__(self, ctx):
            raise RuntimeError("boom")

        def __repr__(self):
            return "Boom()"

    eng = CurriculumEngine(Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [Boom()])]))
    eng.start()
    eng.step_end(loss=1.0)
    before = eng.state_dict()
    with pytest.raises(
        CurriculumError,
        match=r"guard Boom\(\) of transition a -> b raised RuntimeError: boom \(at epoch_end, global step 1\)",
    ) as info:
        eng.epoch_end()
    assert isinstance(info.value.__cause__, RuntimeError)
    assert eng.state_dict() == before  # the epoch was not counted


@pytest.mark.parametrize("result", [None, [True, False], "yes", 1])
def test_guard_returning_a_non_truth_value_is_an_error(result):
    """A guard must return a truth value; None, a list, a string or an int is an error naming it and what came."""

    class Odd:
        def __call__(self, ctx):
            return result

        def __repr__(self):
            return "Odd()"

    eng = CurriculumEngine(Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [Odd()])]))
    eng.start()
    with pytest.raises(
        CurriculumError,
        match=rf"guard Odd\(\) of transition a -> b returned {type(result).__name__} .*not a truth value",
    ):
        eng.epoch_end()
    assert eng.clock.epoch == 0
    inside = CurriculumEngine(Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [any_of(Never(), Odd())])]))
    inside.start()
    with pytest.raises(
        CurriculumError,
        match=(
            rf"any_of\(Never\(\), Odd\(\)\) of transition a -> b raised CurriculumError: guard Odd\(\) returned "
            rf"{type(result).__name__}"
        ),
    ):
        inside.epoch_end()  # inside a combinator too: None is not a silent False


def test_guard_truth_values_from_numpy_and_tensors():
    """numpy bools and one-element boolean tensors count as truth values; a two-element tensor does not."""
    import numpy as np
    import torch

    class Returns:
        def __init__(self, value):
            self.value = value

        def __call__(self, ctx):
            return self.value

        def __repr__(self):
            return "Returns()"

    for value, fires in [(np.bool_(True), True), (torch.tensor([True]), True), (torch.tensor(False), False)]:
        eng = CurriculumEngine(Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [Returns(value)])]))
        eng.start()
        assert (eng.epoch_end() is not None) is fires
    eng = CurriculumEngine(
        Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [Returns(torch.tensor([True, False]))])])
    )
    eng.start()
    with pytest.raises(
        CurriculumError, match=r"returned Tensor tensor\(\[ True, False\]\), which is not a truth value"
    ):
        eng.epoch_end()


def test_calls_before_start_are_errors():
    """step_end/epoch_end before start() or a restore, and a second start(), are clear errors."""
    eng = CurriculumEngine(Curriculum([Phase("a")], []))
    with pytest.raises(CurriculumError, match=r"engine.start\(\)"):
        eng.step_end(loss=1.0)
    eng.start()
    with pytest.raises(CurriculumError, match="already called"):
        eng.start()


def test_force_is_a_recorded_manual_transition():
    """force() moves by hand, runs the destination's on_enter, and records the reason."""
    calls = []
    cur = Curriculum([Phase("a"), Phase("b", on_enter=[Log("enter_b", calls)])], [Transition("a", "b", [Never()])])
    eng = CurriculumEngine(cur)
    eng.start()
    eng.step_end(loss=1.0)
    record = eng.force("b", reason="operator decided")
    assert eng.phase.name == "b" and calls == ["enter_b"]
    assert (record.point, record.reason, record.global_step, record.guards) == ("manual", "operator decided", 1, [])
    with pytest.raises(CurriculumError, match=r"'zz' is not a phase"):
        eng.force("zz", reason="x")


def test_verify_runs_at_next_step_end_and_appends_warning():
    """An action's verify() runs at the next step_end and a warning lands in its transition's record."""

    class Checked:
        requires = ()

        def __call__(self, ctx):
            return {"set": 1.0}

        def verify(self, ctx, effect):
            if ctx.metrics["lr"] < effect["set"] / 2:
                return f"lr {ctx.metrics['lr']} below half of {effect['set']}"
            return None

        def __repr__(self):
            return "Checked()"

    cur = Curriculum(
        [Phase("a"), Phase("b"), Phase("c")],
        [Transition("a", "b", [Always()], [Checked()]), Transition("b", "c", [Always()], [Checked()])],
    )
    eng = CurriculumEngine(cur)
    eng.start()
    eng.epoch_end()
    eng.step_end(loss=1.0, lr=0.1)
    eng.step_end(loss=1.0, lr=0.1)  # checked only once
    assert eng.history[1].warnings == ["lr 0.1 below half of 1.0"]
    eng.epoch_end()
    eng.step_end(loss=1.0, lr=0.9)
    assert eng.history[2].warnings == []


def test_phase_params_reach_the_loop():
    """engine.phase is the current Phase object, params included."""
    cur = Curriculum(
        [Phase("short", params={"seq_len": 64}), Phase("long", params={"seq_len": 256})],
        [Transition("short", "long", [Always()])],
    )
    eng = CurriculumEngine(cur)
    eng.start()
    assert eng.phase.params["seq_len"] == 64
    eng.epoch_end()
    assert eng.phase.params["seq_len"] == 256


def test_context_exposes_registered_objects():
    """Registered objects are attributes of the context; unknown names say how to register them."""
    seen = {}

    def grab(ctx):
        seen["model"] = ctx.model
        return True

    cur = Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [grab])])
    eng = CurriculumEngine(cur, model="M")
    eng.start()
    eng.epoch_end()
    assert seen["model"] == "M"
    with pytest.raises(AttributeError, match=r"no registered object 'optimizer'.*optimizer=\.\.\."):
        eng.ctx.optimizer


def test_start_in_a_later_phase_for_weights_only_resume():
    """start(phase=..., global_step=..., epoch=...) enters that phase (its on_enter runs) at that clock."""
    calls = []
    cur = Curriculum(
        [Phase("a", on_enter=[Log("enter_a", calls)]), Phase("b", on_enter=[Log("enter_b", calls)])],
        [Transition("a", "b", [Never()])],
    )
    eng = CurriculumEngine(cur)
    eng.start("b", global_step=40, epoch=4)
    assert calls == ["enter_b"] and eng.phase.name == "b"
    assert (eng.clock.global_step, eng.clock.epoch) == (40, 4)
    (start,) = eng.history
    assert (start.source, start.dest, start.global_step, start.epoch, start.point) == (None, "b", 40, 4, "start")


def test_importing_engine_leaves_the_transitions_logger_alone():
    """A library must not reconfigure another library's logging: importing engine keeps the level."""
    code = "import logging, engine, engine.runtime; print(logging.getLogger('transitions').level)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == str(logging.NOTSET)


def test_engine_keeps_no_scratch_state_between_callbacks():
    """The record travels in the event, the phase is the machine's state: no _building/_firing/_phase fields."""
    cur = Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [Always()], [Log("x", [])])])
    eng = CurriculumEngine(cur)
    eng.start()
    record = eng.epoch_end()
    assert record is eng.history[-1] and eng.phase.name == "b" == eng._machine.phase
    assert not {"_building", "_building_index", "_firing", "_phase"} & set(vars(eng))
    assert eng.epoch_end() is None  # no transition out of b: nothing fired, found without history lengths


def test_bind_registers_objects_before_start_and_restore():
    """bind() registers objects after construction; start() and load_state_dict() check requirements."""
    calls = []
    cur = Curriculum(
        [Phase("a"), Phase("b")], [Transition("a", "b", [Always()], [Log("x", calls, requires=("schedule",))])]
    )
    eng = CurriculumEngine(cur)
    assert eng.bind(schedule="S") is eng
    eng.start()
    state = eng.state_dict()
    restored = CurriculumEngine(cur)
    with pytest.raises(
        CurriculumError,
        match=r"requires a registered object 'schedule'.*before load_state_dict\(\).*engine.bind\(schedule=\.\.\.\)",
    ):
        restored.load_state_dict(state)
    restored.bind(schedule="S").load_state_dict(state)
    assert restored.ctx.schedule == "S"


def test_bind_after_start_replaces_the_object():
    """Re-binding after start() (a rebuilt optimizer) replaces what guards and actions see from then on."""
    seen = []

    def grab(ctx):
        seen.append(ctx.optimizer)
        return False

    eng = CurriculumEngine(Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [grab])]), optimizer="old")
    eng.start()
    eng.epoch_end()
    eng.bind(optimizer="new")
    eng.epoch_end()
    assert seen == ["old", "new"]
    with pytest.raises(CurriculumError, match=r"cannot register an object named 'clock'.*Context.clock"):
        eng.bind(clock=1)


def test_clock_is_a_read_only_live_view():
    """engine.clock reads the live counters; assigning to it is a clear error and changes nothing."""
    eng = CurriculumEngine(Curriculum([Phase("a")], []))
    eng.start()
    clock = eng.clock
    eng.step_end(loss=1.0)
    eng.epoch_end()
    assert (clock.global_step, clock.epoch, clock.step_in_epoch, clock.steps_in_phase, clock.epochs_in_phase) == (
        1,
        1,
        0,
        1,
        1,
    )
    with pytest.raises(CurriculumError, match=r"engine.clock is read-only: cannot set 'global_step' to 0"):
        eng.clock.global_step = 0
    with pytest.raises(AttributeError):
        eng.ctx.clock.epoch = 5
    assert eng.clock.global_step == 1 and eng.state_dict()["clock"]["global_step"] == 1
    assert eng.clock == Clock(1, 1, 0, 1, 1) and "global_step=1" in repr(eng.clock)
    assert copy.deepcopy(eng.clock) == eng.clock  # copies (frameworks deep-copy callbacks) still work


def test_history_starts_with_the_start_and_its_effects():
    """The first record is the start: no source, the initial phase, point 'start', the on_enter effects."""
    calls = []
    cur = Curriculum([Phase("a", on_enter=[Log("enter_a", calls)]), Phase("b")], [Transition("a", "b", [Always()])])
    eng = CurriculumEngine(cur)
    record = eng.start()
    assert record is eng.history[0] and len(eng.history) == 1
    assert (record.source, record.dest, record.point, record.global_step, record.epoch, record.guards) == (
        None,
        "a",
        "start",
        0,
        0,
        [],
    )
    assert [(a.action, a.effect) for a in record.actions] == [("Log('enter_a')", {"name": "enter_a", "step": 0})]
    assert eng.history.table().startswith(
        "#0  start in a  at step 0 (epoch 0)\n     action Log('enter_a'): name=enter_a, step=0"
    )


def test_force_records_the_destination_on_enter_effects():
    """force() records the destination's on_enter effects in its manual record."""
    calls = []
    cur = Curriculum([Phase("a"), Phase("b", on_enter=[Log("enter_b", calls)])], [Transition("a", "b", [Never()])])
    eng = CurriculumEngine(cur)
    eng.start()
    record = eng.force("b", reason="by hand")
    assert [(a.action, a.effect) for a in record.actions] == [("Log('enter_b')", {"name": "enter_b", "step": 0})]


class NeedsRestartable:
    """An action that can only work on a schedule that restarts: check() refuses any other, at the start."""

    requires = ("schedule",)

    def __init__(self):
        self.checked, self.ran = 0, 0

    def check(self, ctx):
        self.checked += 1
        if not hasattr(ctx.schedule, "restart"):
            raise TypeError(f"{type(ctx.schedule).__name__} cannot restart")

    def __call__(self, ctx):
        self.ran += 1

    def __repr__(self):
        return "NeedsRestartable()"


class Restarts:
    def restart(self):
        pass


class WindowAtMost:
    """A guard whose check() refuses a registered limit below its need."""

    def check(self, ctx):
        if ctx.limit < 4:
            raise ValueError(f"limit {ctx.limit} < 4")

    def __call__(self, ctx):
        return False

    def __repr__(self):
        return "WindowAtMost()"


def test_check_refuses_a_misconfigured_run_at_start_and_changes_nothing():
    """check(ctx) of every action and guard runs once at start(), objects bound; one that raises is a CurriculumError
    naming it and its transition, the engine stays unstarted."""
    action = NeedsRestartable()
    cur = Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [Always()], [action])])
    eng = CurriculumEngine(cur, schedule=object())
    before = eng.state_dict()
    with pytest.raises(
        CurriculumError,
        match=(
            r"action NeedsRestartable\(\) \(in transition a -> b\) refused this run in check\(\) at start\(\): "
            r"TypeError: object cannot restart; nothing was changed"
        ),
    ):
        eng.start()
    assert eng.state_dict() == before and action.ran == 0
    eng.bind(schedule=Restarts())
    eng.start()
    assert action.checked == 2
    eng.epoch_end()
    assert action.ran == 1 and action.checked == 2  # checked at start only, not per call


def test_check_runs_at_load_state_dict_and_a_refusal_loads_nothing():
    """load_state_dict() calls check(ctx) after the requires check; a guard that refuses leaves the engine as it was."""

    def build():
        return Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [WindowAtMost(), Never()])])

    eng = CurriculumEngine(build(), limit=8)
    eng.start()
    eng.step_end(loss=1.0)
    saved = eng.state_dict()
    fresh = CurriculumEngine(build(), limit=2)
    before = fresh.state_dict()
    with pytest.raises(
        CurriculumError,
        match=(
            r"guard WindowAtMost\(\) \(in transition a -> b\) refused this run in check\(\) at load_state_dict\(\): "
            r"ValueError: limit 2 < 4"
        ),
    ):
        fresh.load_state_dict(saved)
    assert fresh.state_dict() == before
    fresh.bind(limit=4).load_state_dict(saved)
    assert fresh.state_dict() == saved


def test_step_end_without_loss_names_the_keyword_and_a_close_one_passed():
    """step_end(los=3.0) is a CurriculumError asking "did you mean loss=", and counts nothing; without any close
    keyword it still says loss= is needed."""
    eng = CurriculumEngine(Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [Never()])]))
    eng.start()
    before = eng.state_dict()
    with pytest.raises(
        CurriculumError, match=r"step_end\(\) needs .* as loss=\.\.\.; did you mean loss= \(you passed los=\)"
    ):
        eng.step_end(los=3.0)
    with pytest.raises(
        CurriculumError, match=r"step_end\(\) needs the step's training loss as loss=\.\.\. \(passed: \['acc'\]\)"
    ):
        eng.step_end(acc=0.5)
    assert eng.state_dict() == before


def test_a_misspelt_metric_name_is_answered_with_the_close_one_passed():
    """A guard reading 'val_los' when the loop passes 'val_loss': the errors ask "did you mean 'val_loss'?", not only to
    pass the typo."""
    from policies import MetricBelow, Plateau

    eng = CurriculumEngine(Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [MetricBelow("val_los", 1.0)])]))
    eng.start()
    with pytest.raises(
        CurriculumError,
        match=(
            r"'val_los' \(read by MetricBelow.*\) \(did you mean 'val_loss', which the loop passed\?\).*or fix a "
            r"misspelt name in the guard"
        ),
    ):
        eng.epoch_end(val_loss=0.5)
    eng = CurriculumEngine(
        Curriculum(
            [Phase("a"), Phase("b")], [Transition("a", "b", [Plateau(window=2, metric="val_los")], when="step_end")]
        )
    )
    eng.start()
    with pytest.raises(CurriculumError, match=r"did you mean 'val_loss'"):
        eng.step_end(loss=1.0, val_loss=0.5)
    with pytest.raises(
        CurriculumError,
        match=(
            r"'val_bpb' is needed at epoch_end but the loop did not pass it \(did you mean 'val_bpc', which the loop "
            r"passed\?\)"
        ),
    ):
        Context(clock=Clock(), metrics={"val_bpc": 1.0}, point=Point.EPOCH_END).metric("val_bpb")


def test_the_machine_is_entered_only_when_a_transition_fires(monkeypatch):
    """The engine decides before it triggers: a point where no transition holds never calls into transitions; one that
    fires does, once."""
    import transitions.core

    triggered = []
    real = transitions.core.Event.trigger
    monkeypatch.setattr(
        transitions.core.Event, "trigger", lambda self, *a, **k: triggered.append(self.name) or real(self, *a, **k)
    )
    cur = Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [CountBelow(0.5, need=2)], when=Point.STEP_END)])
    eng = CurriculumEngine(cur)
    eng.start()
    eng.step_end(loss=0.4)
    assert not triggered and eng.phase.name == "a"
    assert eng.step_end(loss=0.4) is not None and eng.phase.name == "b" and len(triggered) == 1


def test_transitions_does_not_flood_an_info_log(caplog):
    """At INFO, a transition logs nothing from the transitions library (it logs each callback at INFO otherwise)."""
    import logging

    from policies import MinSteps

    c = Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [MinSteps(1)], when=Point.STEP_END)])
    engine = CurriculumEngine(c)
    with caplog.at_level(logging.INFO):
        engine.start()
        engine.step_end(loss=1.0)
    assert engine.phase.name == "b"
    assert not [r for r in caplog.records if r.name.startswith("transitions")]
    assert logging.getLogger("transitions").level == logging.NOTSET  # put back as it was


class BothAnd(AllOf, Both):
    """The same AND, declared as one: its children count one by one for the deciding guard."""


@pytest.mark.parametrize("cls, decided_by", [(BothAnd, ["MinEpoch(2)"]), (Both, ["Both(MinEpoch(1), MinEpoch(2))"])])
def test_an_and_subclassing_all_of_is_weighed_child_by_child(cls, decided_by):
    """A combinator subclassing engine.protocols.AllOf is opened for the deciding guard; any other is one guard."""
    eng = CurriculumEngine(
        Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [cls(MinEpoch(1), MinEpoch(2))])])
    )
    eng.start()
    eng.epoch_end()
    record = eng.epoch_end()
    assert record.dest == "b" and record.decision.decided_by == decided_by
