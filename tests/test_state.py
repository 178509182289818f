"""Snapshot and restore: JSON-safe state, no callbacks on restore, fingerprints (engine.state)."""

import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import Curriculum, CurriculumEngine, CurriculumError, Phase, Point, Transition
from tests.utils import Always, CountBelow, EpochAtLeast, Log, LossBelow, Never


class Warn:
    """Action with a health check that always warns, to exercise pending checks across a snapshot."""

    def __call__(self, ctx):
        return {"at": ctx.clock.global_step}

    def verify(self, ctx, effect):
        return f"checked at {ctx.clock.global_step} after {effect['at']}"

    def __repr__(self):
        return "Warn()"


def build(calls=None):
    """A cyclic curriculum with stateful step- and epoch-end guards, so transitions keep firing."""
    calls = [] if calls is None else calls
    return Curriculum(
        [Phase("a", on_enter=[Log("enter_a", calls)]), Phase("b", on_enter=[Log("enter_b", calls)]), Phase("c")],
        [
            Transition("a", "b", [CountBelow(0.5, need=3)], [Warn()], when=Point.STEP_END),
            Transition("b", "c", [CountBelow(0.3, need=2), EpochAtLeast(1)], [Log("to_c", calls)]),
            Transition("c", "a", [LossBelow(0.2)], when="step_end"),
        ],
    )


def drive(engine, events):
    for event in events:
        if event is None:
            engine.epoch_end()
        else:
            engine.step_end(loss=event)


def guard_states(curriculum):
    return {key: g.state_dict() for key, g in curriculum.guards if hasattr(g, "state_dict")}


def test_state_dict_is_json_safe_and_round_trips():
    """json.dumps(state_dict()) works and a restored engine reports the same state."""
    eng = CurriculumEngine(build())
    eng.start()
    drive(eng, [0.4, 0.4, 0.4, None, 0.1, 0.1])
    text = json.dumps(eng.state_dict(), allow_nan=False)
    restored = CurriculumEngine(build())
    restored.load_state_dict(json.loads(text))
    assert restored.state_dict() == eng.state_dict()


def test_restore_fires_nothing():
    """Restoring runs no action and no on_enter, even though the saved phase has them."""
    eng = CurriculumEngine(build())
    eng.start()
    drive(eng, [0.4, 0.4, 0.4])
    assert eng.phase.name == "b"
    calls = []
    restored = CurriculumEngine(build(calls))
    restored.load_state_dict(eng.state_dict())
    assert calls == [] and restored.phase.name == "b"


def test_fingerprint_mismatch_is_a_clear_error():
    """A state saved from another curriculum is refused unless the caller opts in."""
    eng = CurriculumEngine(build())
    eng.start()
    other = Curriculum(
        [Phase("a"), Phase("b"), Phase("c")], [Transition("a", "b", [Always()]), Transition("b", "c", [Always()])]
    )
    with pytest.raises(CurriculumError, match=r"(?s)different curriculum.*allow_fingerprint_mismatch=True"):
        CurriculumEngine(other).load_state_dict(eng.state_dict())
    CurriculumEngine(other).load_state_dict(eng.state_dict(), allow_fingerprint_mismatch=True)


def test_fingerprint_changes_with_guard_parameters():
    """Changing a guard's parameter changes the fingerprint (its repr is part of it)."""
    one = Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [LossBelow(0.5)])])
    two = Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [LossBelow(0.6)])])
    assert one.fingerprint() != two.fingerprint()


def test_fingerprint_is_stable_across_processes():
    """The fingerprint is a sha256 of the declaration, the same in a new interpreter."""
    code = "from tests.test_state import build; print(build().fingerprint())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
        cwd=sys.path[0] or ".",
    )
    assert out.stdout.strip() == build().fingerprint()
    assert len(build().fingerprint()) == 64


def test_malformed_state_is_a_clear_error():
    """Bad input to load_state_dict names what is wrong."""
    eng = CurriculumEngine(build())
    with pytest.raises(CurriculumError, match="schema_version"):
        eng.load_state_dict({"phase": "a"})
    state = CurriculumEngine(build()).state_dict()
    state["clock"]["global_step"] = "many"
    with pytest.raises(CurriculumError, match="malformed.*global_step"):
        eng.load_state_dict(state)
    state = CurriculumEngine(build()).state_dict()
    state["surprise"] = 1
    with pytest.raises(CurriculumError, match="malformed"):
        eng.load_state_dict(state)


events = st.lists(
    st.one_of(st.none(), st.floats(min_value=0.0, max_value=1.0, allow_nan=False)), min_size=1, max_size=80
)


@settings(max_examples=150, deadline=None)
@given(stream=events, cut=st.integers(min_value=0, max_value=80))
def test_snapshot_restore_continue_equals_uninterrupted(stream, cut):
    """For any metric stream and cut point: snapshot -> JSON -> restore -> continue == never interrupted."""
    cut = min(cut, len(stream))
    whole_cur = build()
    whole = CurriculumEngine(whole_cur)
    whole.start()
    drive(whole, stream)

    first = CurriculumEngine(build())
    first.start()
    drive(first, stream[:cut])
    snapshot = json.loads(json.dumps(first.state_dict()))
    resumed_cur = build()
    resumed = CurriculumEngine(resumed_cur)
    resumed.load_state_dict(snapshot)
    drive(resumed, stream[cut:])

    assert [r.comparable() for r in resumed.history] == [r.comparable() for r in whole.history]
    assert resumed.phase.name == whole.phase.name
    assert resumed.clock == whole.clock
    assert guard_states(resumed_cur) == guard_states(whole_cur)


def seq_len_curriculum(short=128, threshold=0.01):
    from policies import Plateau

    return Curriculum(
        [Phase("short", params={"seq_len": short}), Phase("long", params={"seq_len": 2048})],
        [Transition("short", "long", [Plateau(window=50, threshold=threshold)])],
    )


def test_params_are_part_of_the_fingerprint():
    """Two curricula differing only in a phase's params have different fingerprints; a resume across them is refused."""
    assert seq_len_curriculum(128).fingerprint() != seq_len_curriculum(256).fingerprint()
    eng = CurriculumEngine(seq_len_curriculum(128))
    eng.start()
    with pytest.raises(CurriculumError, match=r"phase 'short' params: \{'seq_len': 128\} -> \{'seq_len': 256\}"):
        CurriculumEngine(seq_len_curriculum(256)).load_state_dict(eng.state_dict())


def test_fingerprint_mismatch_lists_what_differs():
    """A mismatch names each difference: a guard's repr old vs new, phases added and removed."""
    eng = CurriculumEngine(seq_len_curriculum(threshold=0.01))
    eng.start()
    state = eng.state_dict()
    with pytest.raises(
        CurriculumError,
        match=(
            r"transition short -> long guard Plateau\(window=50, threshold=0.01\) -> Plateau\(window=50, "
            r"threshold=0.02\)"
        ),
    ):
        CurriculumEngine(seq_len_curriculum(threshold=0.02)).load_state_dict(state)
    other = Curriculum(
        [Phase("short", params={"seq_len": 128}), Phase("medium")], [Transition("short", "medium", [Always()])]
    )
    with pytest.raises(CurriculumError) as info:
        CurriculumEngine(other).load_state_dict(state)
    text = str(info.value)
    for line in [
        "phase 'long' removed",
        "phase 'medium' added",
        "transition short -> long removed",
        "transition short -> medium added",
    ]:
        assert line in text


def v1_state(engine, curriculum):
    """What the first release wrote: schema 1, a fingerprint without params, no spec."""
    state = engine.state_dict()
    del state["spec"], state["fingerprint_version"]
    return {**state, "schema_version": 1, "fingerprint": curriculum.fingerprint(version=1)}


def test_schema_1_state_is_checked_with_the_rule_it_was_saved_with():
    """A schema-1 state (fingerprint without params) resumes; its fingerprint is checked by the first release's rule."""
    cur = seq_len_curriculum(128)
    eng = CurriculumEngine(cur)
    eng.start()
    eng.step_end(loss=1.0)
    old = v1_state(eng, cur)
    assert old["fingerprint"] != cur.fingerprint()
    restored = CurriculumEngine(seq_len_curriculum(128))
    restored.load_state_dict(old)
    assert restored.clock.global_step == 1
    again = restored.state_dict()
    assert (again["schema_version"], again["fingerprint"], again["fingerprint_version"]) == (2, cur.fingerprint(), 2)
    CurriculumEngine(seq_len_curriculum(256)).load_state_dict(old)  # the v1 rule never saw params
    with pytest.raises(CurriculumError, match=r"(?s)different curriculum.*schema-1 state stores no spec"):
        CurriculumEngine(seq_len_curriculum(threshold=0.02)).load_state_dict(old)


# -- load_state_dict is all or nothing ----------------------------------------------------------------


def stateful():
    """Plateaus and a counter with accumulators in phase a, a health check owed after a -> b."""
    from policies import MinEpoch, Plateau, all_of

    return Curriculum(
        [Phase("a"), Phase("b"), Phase("c")],
        [
            Transition("a", "b", [all_of(MinEpoch(1), Plateau(window=4))], [Warn()], when=Point.STEP_END),
            Transition("a", "c", [CountBelow(0.5, need=3), MinEpoch(5)]),
            Transition("b", "c", [Plateau(window=4)]),
        ],
    )


def saved_state():
    """A run in phase a, one epoch in: every guard has accumulators and held_since is filled."""
    eng = CurriculumEngine(stateful())
    eng.start()
    for loss in (0.4, 0.3, 0.2):
        eng.step_end(loss=loss)
    eng.epoch_end()
    eng.step_end(loss=0.1)
    state = eng.state_dict()
    assert (
        state["phase"] == "a"
        and state["guards"]["t0.g0"]["guards"][1]["values"]
        and state["guards"]["t1.g0"] == {"count": 4}
    )
    assert state["held_since"] == {"0": [[4, 1], None], "1": [[3, 1], None]}
    return state


def with_pending(state):
    """The state of a run that has just moved a -> b: Warn()'s health check is owed."""
    eng = CurriculumEngine(stateful())
    eng.load_state_dict(state)
    while eng.phase.name == "a":
        eng.step_end(loss=0.1)
    state = eng.state_dict()
    assert state["pending_checks"] == [{"record": 1, "transition": 0, "action": 0}]
    return state


def without(key):
    def change(state):
        del state["guards"][key]
        return state

    return change


def corrupt(path, value):
    def change(state):
        *keys, last = path
        target = state
        for key in keys:
            target = target[key]
        target[last] = value
        return state

    return change


CORRUPTED = [
    (
        "held_since of the wrong length",
        corrupt(["held_since", "0"], [None]),
        r"held_since\['0'\] = \[None\] does not fit transition 0 \(a -> b, 2 guards\)",
    ),
    (
        "held_since pair of one number",
        corrupt(["held_since", "0"], [[1], None]),
        r"held_since\['0'\].*one \[global_step, epoch\] or None per guard",
    ),
    (
        "held_since of a transition out of another phase",
        corrupt(["held_since", "2"], [[1, 1]]),
        r"held_since\['2'\].*transition 2 \(b -> c, 1 guards\) out of phase 'a'",
    ),
    ("held_since of no transition", corrupt(["held_since", "7"], [None]), r"held_since\['7'\].*this curriculum has 3"),
    (
        "unknown guard key",
        corrupt(["guards", "t9.g0"], {"values": []}),
        r"accumulators for t9\.g0, which this curriculum has no stateful guard at \(its stateful guards: t0\.g0, "
        r"t1\.g0, t2\.g0\)",
    ),
    (
        "a guard missing",
        without("t2.g0"),
        r"no accumulators for guard t2\.g0 \(Plateau\(window=4, threshold=0\.005\)\)",
    ),
    (
        "Plateau refuses its state",
        corrupt(["guards", "t2.g0"], {"values": ["x"]}),
        r"accumulators for guard t2\.g0 \(Plateau\(window=4, threshold=0\.005\)\) were refused by its "
        r"load_state_dict\(\): CurriculumError: .*expected \{'values': \[finite numbers\]\}",
    ),
    (
        "more values than the guard's window",
        corrupt(["guards", "t2.g0"], {"values": [0.1] * 10}),
        r"accumulators for guard t2\.g0 \(Plateau\(window=4, threshold=0\.005\)\) do not fit it: "
        r"expected at most 4 values at \['values'\] \(what it keeps\), got 10; nothing was restored",
    ),
    (
        "keys the guard does not keep",
        corrupt(["guards", "t0.g0"], {"guards": [None, {"values": [], "extra": 1}]}),
        r"accumulators for guard t0\.g0 \(all_of\(.*\)\) do not fit it: "
        r"expected the keys \['values'\] at \['guards'\]\[1\], got \['extra', 'values'\]",
    ),
    (
        "a user guard refuses its state",
        corrupt(["guards", "t1.g0"], {}),
        r"accumulators for guard t1\.g0 \(CountBelow\(0\.5, need=3\)\) were refused by its load_state_dict\(\): "
        r"KeyError: 'count'; nothing was restored",
    ),
    (
        "negative clock",
        corrupt(["clock", "steps_in_phase"], -1),
        r"clock\.steps_in_phase must be an int >= 0, got int -1",
    ),
    (
        "clock parts larger than the whole",
        corrupt(["clock", "epochs_in_phase"], 9),
        r"clock\.epochs_in_phase \(9\) is larger than clock\.epoch \(1\)",
    ),
    (
        "history naming no phase",
        corrupt(["history", 0, "dest"], "z"),
        r"history\[0\]\.dest is 'z', not a phase of this curriculum",
    ),
    (
        "clock of floats",
        corrupt(["clock", "global_step"], 10.7),
        r"clock\.global_step must be an int >= 0, got float 10\.7 \(no conversion is made",
    ),
    (
        "clock of text",
        corrupt(["clock", "global_step"], "10"),
        r"clock\.global_step must be an int >= 0, got str '10' \(no conversion is made",
    ),
    (
        "clock of bools",
        corrupt(["clock", "epoch"], True),
        r"clock\.epoch must be an int >= 0, got bool True \(no conversion is made",
    ),
    (
        "empty history out of the initial phase",
        lambda s: {**s, "history": [], "phase": "b", "held_since": {}},
        r"history is empty but its phase is 'b'; a run without records is in the phase start\(\) enters \('a'\)",
    ),
    (
        "last record not ending in the phase",
        corrupt(["phase"], "c"),
        r"last history record \(#0, None -> a\) does not end in its phase 'c'",
    ),
    (
        "record later than the clock",
        corrupt(["history", 0, "global_step"], 99),
        r"history\[0\] is at global step 99 \(epoch 0\), later than its clock \(global step 4, epoch 1\)",
    ),
    (
        "not started but ran",
        corrupt(["started"], False),
        r"started is False, but it has 1 history record, clock\.global_step = 4, clock\.epoch = 1.*claims a run in "
        r"progress",
    ),
    (
        "pending check past the history",
        lambda s: {**with_pending(s), "pending_checks": [{"record": 9, "transition": 0, "action": 0}]},
        r"pending_checks\[0\] points at history record 9, but the history has 2 records",
    ),
    (
        "pending check on an action without verify",
        lambda s: {**with_pending(s), "pending_checks": [{"record": 0, "transition": -1, "action": 0}]},
        r"pending_checks\[0\] names action 0 of history record 0, which has 0",
    ),
]


@pytest.mark.parametrize("name, change, match", CORRUPTED, ids=[c[0] for c in CORRUPTED])
def test_a_corrupted_state_changes_nothing(name, change, match):
    """A state that fails any check, or whose guard state a guard refuses, is a CurriculumError; the engine, its guards
    included, is as before."""
    cur = stateful()
    fresh = CurriculumEngine(cur)
    before, guards_before = fresh.state_dict(), guard_states(cur)
    with pytest.raises(CurriculumError, match=match):
        fresh.load_state_dict(change(saved_state()))
    assert fresh.state_dict() == before and guard_states(cur) == guards_before
    good = saved_state()
    fresh.load_state_dict(good)  # and it still loads a good state
    assert fresh.state_dict() == good


def test_a_fresh_engine_whose_load_failed_can_start():
    """After a refused load (guards already loaded by the old code), a fresh engine starts as if nothing happened."""
    cur = stateful()
    eng = CurriculumEngine(cur)
    with pytest.raises(CurriculumError, match="refused"):
        eng.load_state_dict(corrupt(["guards", "t2.g0"], {"values": ["x"]})(saved_state()))
    eng.start()
    eng.step_end(loss=0.4)
    assert eng.clock.global_step == 1 and guard_states(cur)["t1.g0"] == {"count": 1}


def test_a_running_engine_whose_load_failed_runs_on():
    """A refused load into an engine that is running leaves its phase, clock, history and guards, and it runs on."""
    cur = stateful()
    eng = CurriculumEngine(cur)
    eng.start()
    for loss in (0.9, 0.8):
        eng.step_end(loss=loss)
    before = eng.state_dict()
    with pytest.raises(CurriculumError, match=r"held_since"):
        eng.load_state_dict(corrupt(["held_since", "0"], [None])(saved_state()))
    assert eng.state_dict() == before
    eng.step_end(loss=0.7)
    assert eng.clock.global_step == 3


def test_lenient_load_leaves_out_what_does_not_fit():
    """With allow_fingerprint_mismatch=True, unknown guard keys, misfit held_since and unrunnable pending checks are
    left out."""
    state = with_pending(saved_state())
    state["guards"]["t9.g0"] = {"values": []}
    state["held_since"] = {"0": [None], "2": [[1, 1]]}
    state["pending_checks"].append({"record": 9, "transition": 0, "action": 0})
    eng = CurriculumEngine(stateful())
    eng.load_state_dict(state, allow_fingerprint_mismatch=True)
    again = eng.state_dict()
    assert (
        "t9.g0" not in again["guards"] and again["held_since"] == {"2": [[1, 1]]} and len(again["pending_checks"]) == 1
    )


def test_a_whole_hf_trainer_state_says_which_part_to_pass():
    """Loading a whole trainer_state.json by mistake names the key the HF callback keeps the engine state under."""
    STATE_KEY = "curriculum_engine"  # engine.integrations.hf.STATE_KEY (not imported: transformers is slow to import)
    state = saved_state()
    trainer_state = {"global_step": 4, "log_history": [], "stateful_callbacks": {STATE_KEY: state}}
    eng = CurriculumEngine(stateful())
    with pytest.raises(
        CurriculumError,
        match=(
            r"whole Hugging Face "
            rf"trainer_state\.json.*engine\.load_state_dict\(state\[\"stateful_callbacks\"\]\[\"{STATE_KEY}\"\]\)"
        ),
    ):
        eng.load_state_dict(trainer_state)
    eng.load_state_dict(trainer_state["stateful_callbacks"][STATE_KEY])
    assert eng.state_dict() == state


def test_open_state_reads_a_saved_state_without_binding_objects(tmp_path):
    """open_state gives the phase, clock, history, guard states and recorded metrics of a state whose actions need a
    schedule, with none bound; with the curriculum it also checks the state is that curriculum's."""
    from engine.saved import open_state

    def build():
        return Curriculum(
            [Phase("a"), Phase("b")],
            [Transition("a", "b", [CountBelow(0.5, need=2)], [Log("x", [], requires=("schedule",))], when="step_end")],
        )

    eng = CurriculumEngine(build(), record_metrics=True, schedule=object())
    eng.start()
    for loss in (0.4, 0.3, 0.2):
        eng.step_end(loss=loss)
    state = eng.state_dict()
    (tmp_path / "state.json").write_text(json.dumps({"engine": state}))
    for opened in (open_state(state, build()), open_state(state), open_state(tmp_path / "state.json")):
        assert opened.phase == "b" and opened.clock.global_step == 3 and opened.started
        assert [(r.source, r.dest, r.global_step) for r in opened.history] == [(None, "a", 0), ("a", "b", 2)]
        assert opened.guards == {"t0.g0": {"count": 2}} and opened.recorded.steps == 3
    other = Curriculum([Phase("a"), Phase("c")], [Transition("a", "c", [Never()])])
    with pytest.raises(CurriculumError, match="saved from a different curriculum"):
        open_state(state, other)
