"""Construction-time validation of the curriculum vocabulary (engine.core)."""

import pytest

from engine import Curriculum, CurriculumEngine, CurriculumError, Phase, Point, Transition
from tests.utils import Always, Log


def named_guard(ctx):
    return True


def test_curriculum_error_is_value_error():
    """CurriculumError subclasses ValueError so callers can catch either."""
    assert issubclass(CurriculumError, ValueError)


def test_unknown_phase_in_transition():
    """A transition naming a phase that does not exist says which field, what exists and the fix."""
    with pytest.raises(
        CurriculumError, match=r"transitions\[0\]\.dest is 'c'.*expected one of \['a', 'b'\].*add Phase"
    ):
        Curriculum([Phase("a"), Phase("b")], [Transition("a", "c", [Always()])])


def test_unknown_source_phase():
    """An unknown source is reported as such."""
    with pytest.raises(CurriculumError, match=r"transitions\[0\]\.source is 'x'"):
        Curriculum([Phase("a"), Phase("b")], [Transition("x", "b", [Always()])])


def test_unknown_initial():
    """An initial phase that does not exist is an error (transitions would silently add it)."""
    with pytest.raises(CurriculumError, match=r"initial is 'zz'.*expected one of"):
        Curriculum([Phase("a")], [], initial="zz")


def test_duplicate_phase_names():
    """Two phases with one name are rejected, naming it."""
    with pytest.raises(CurriculumError, match=r"'a' is used twice"):
        Curriculum([Phase("a"), Phase("a")], [])


def test_unreachable_phase():
    """A phase no transition leads to from the initial phase is rejected, with the fix."""
    with pytest.raises(CurriculumError, match=r"\['c'\] cannot be reached.*add a Transition"):
        Curriculum([Phase("a"), Phase("b"), Phase("c")], [Transition("a", "b", [Always()])])


def test_transition_without_guard():
    """A transition with no guard would fire at once: rejected with a suggested guard."""
    with pytest.raises(CurriculumError, match=r"no guard.*at least one guard"):
        Transition("a", "b", [])


def test_non_callable_guard():
    """A guard that is not callable names its index, type and the fix."""
    with pytest.raises(CurriculumError, match=r"guards\[1\] must be callable.*got int: 3.*__call__"):
        Transition("a", "b", [Always(), 3])


def test_string_guard_rejected():
    """Guards named by strings (resolved at run time in transitions) are rejected."""
    with pytest.raises(CurriculumError, match=r"guards\[0\].*string 'is_ready'.*not its name"):
        Transition("a", "b", ["is_ready"])


def test_non_callable_action():
    """A non-callable action is rejected the same way."""
    with pytest.raises(CurriculumError, match=r"actions\[0\] must be callable"):
        Transition("a", "b", [Always()], actions=[None])


def test_lambda_rejected():
    """Lambdas cannot be fingerprinted or shown: rejected with the fix."""
    with pytest.raises(CurriculumError, match=r"guards\[0\] is a lambda.*named function"):
        Transition("a", "b", [lambda ctx: True])
    with pytest.raises(CurriculumError, match=r"on_enter\[0\] is a lambda"):
        Phase("a", on_enter=[lambda ctx: None])


def test_single_callable_instead_of_list():
    """Passing one guard instead of a list says to wrap it."""
    with pytest.raises(CurriculumError, match=r"sequence of callables.*wrap it in a list"):
        Transition("a", "b", Always())


def test_bad_point():
    """`when` accepts Point or its string value, and names the choices otherwise."""
    assert Transition("a", "b", [Always()], when="step_end").when is Point.STEP_END
    with pytest.raises(CurriculumError, match=r"when must be one of \['epoch_end', 'step_end'\]"):
        Transition("a", "b", [Always()], when="epoch")


def test_phase_name_must_be_identifier():
    """Names with spaces or dashes (invalid Mermaid, invalid triggers) are rejected with a suggestion."""
    with pytest.raises(CurriculumError, match=r"identifier.*'warm-up'.*'warm_up'"):
        Phase("warm-up")


def test_missing_registered_object():
    """An action requiring an object nobody registered fails at start(), naming both ways to register it."""
    calls = []
    cur = Curriculum(
        [Phase("a"), Phase("b")], [Transition("a", "b", [Always()], [Log("x", calls, requires=("schedule",))])]
    )
    eng = CurriculumEngine(cur)  # frameworks build the schedule later: construction is fine
    with pytest.raises(
        CurriculumError,
        match=(
            r"Log\('x'\) requires a registered object 'schedule'.*before start\(\).*CurriculumEngine\(curriculum, "
            r"schedule=\.\.\.\) or call engine.bind\(schedule=\.\.\.\)"
        ),
    ):
        eng.start()
    CurriculumEngine(cur, schedule=object()).start()  # given: fine


def test_named_functions_are_accepted_and_described():
    """Plain functions are valid guards; they are described by module.qualname."""
    cur = Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [named_guard])])
    from engine import describe

    assert describe(named_guard) == "tests.test_core.named_guard"
    assert cur.initial_name == "a"


def test_phase_params_are_kept():
    """A phase carries free-form params for the loop."""
    assert Phase("a", params={"seq_len": 128}).params == {"seq_len": 128}


def test_class_instead_of_instance_rejected():
    """Passing a guard class instead of an instance says to instantiate it."""
    with pytest.raises(
        CurriculumError, match=r"guards\[0\] is the class Always.*instantiate it, e\.g\. Always\(\.\.\.\)"
    ):
        Transition("a", "b", [Always])


def test_phase_params_are_immutable():
    """Phase.params is an immutable mapping, nested values too; a new phase is built with attrs.evolve."""
    import attrs

    phase = Phase("a", params={"seq_len": 128, "sizes": [1, 2], "opt": {"lr": 1e-3}})
    with pytest.raises(TypeError, match=r"immutable.*'seq_len'.*attrs.evolve"):
        phase.params["seq_len"] = 256
    with pytest.raises(TypeError):
        phase.params["opt"]["lr"] = 1.0
    assert phase.params["sizes"] == (1, 2) and dict(phase.params)["seq_len"] == 128
    assert attrs.evolve(phase, params={**phase.params, "seq_len": 256}).params["seq_len"] == 256
    with pytest.raises(CurriculumError, match=r"Phase.params must be a mapping, got list"):
        Phase("a", params=[("seq_len", 1)])


def test_one_observing_guard_shared_by_two_transitions_is_rejected():
    """A stateful guard object shared by two transitions out of one phase would observe twice: rejected, naming both."""
    from policies import MinEpoch, Plateau, all_of

    plateau = Plateau(window=4)
    with pytest.raises(
        CurriculumError,
        match=(
            r"Plateau\(window=4, threshold=0.005\) observes out of phase 'a' twice \(transitions\[0\] \(a -> b\) and "
            r"\[1\] \(a -> c\) share it\)"
        ),
    ):
        Curriculum(
            [Phase("a"), Phase("b"), Phase("c")],
            [Transition("a", "b", [plateau]), Transition("a", "c", [all_of(MinEpoch(1), plateau)])],
        )
    with pytest.raises(CurriculumError, match=r"transition\[0\] \(a -> b\) uses it twice"):
        Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [plateau, plateau])])
    # out of different phases it observes in one phase at a time: allowed
    Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [plateau]), Transition("b", "a", [plateau])])
    # guards that do not observe may be shared
    gate = MinEpoch(1)
    Curriculum([Phase("a"), Phase("b"), Phase("c")], [Transition("a", "b", [gate]), Transition("a", "c", [gate])])


def test_semantics_names_tests_that_exist():
    """docs/semantics.md says the tests in brackets check each rule: every `file::function` it names is a test function
    in that file."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent
    named = re.findall(r"`(test_\w+)::(test_\w+)`", (root.parent / "docs" / "semantics.md").read_text())
    assert len(named) > 30
    missing = [f"{f}::{t}" for f, t in named if not re.search(rf"^def {t}\(", (root / f"{f}.py").read_text(), re.M)]
    assert not missing


def test_curricula_are_equal_when_their_fingerprints_are():
    """Curricula built apart from the same declarations are equal and hash alike; another guard makes them differ."""
    from policies import MinEpoch

    def build(n: int) -> Curriculum:
        return Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [MinEpoch(n)])])

    assert build(1) == build(1) and hash(build(1)) == hash(build(1))
    assert build(1) != build(2) and build(1) != "a curriculum"
