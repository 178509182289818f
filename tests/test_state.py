"""Snapshot and restore: JSON-safe state, no callbacks on restore, fingerprints (engine.state)."""

import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import Curriculum, CurriculumEngine, CurriculumError, Phase, Point, Transition
from tests.utils import Always, CountBelow, EpochAtLeast, Log, LossBelow


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
    other = Curriculum([Phase("a"), Phase("b"), Phase("c")], [Transition("a", "b", [Always()]), Transition("b", "c", [Always()])])
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
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "123", "PATH": ""}, cwd=sys.path[0] or ".")
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


events = st.lists(st.one_of(st.none(), st.floats(min_value=0.0, max_value=1.0, allow_nan=False)), min_size=1, max_size=80)


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
    """Two curricula that differ only in a phase's params have different fingerprints; a resume across them is refused."""
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
    with pytest.raises(CurriculumError, match=r"transition short -> long guard Plateau\(window=50, threshold=0.01\) -> Plateau\(window=50, threshold=0.02\)"):
        CurriculumEngine(seq_len_curriculum(threshold=0.02)).load_state_dict(state)
    other = Curriculum([Phase("short", params={"seq_len": 128}), Phase("medium")], [Transition("short", "medium", [Always()])])
    with pytest.raises(CurriculumError) as info:
        CurriculumEngine(other).load_state_dict(state)
    text = str(info.value)
    for line in ["phase 'long' removed", "phase 'medium' added", "transition short -> long removed", "transition short -> medium added"]:
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
