"""A curriculum as data: to_dict/from_dict, TOML files, registration, and one-line errors (engine.datafile)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import policies
from engine import (
    Curriculum,
    CurriculumEngine,
    CurriculumError,
    CurriculumFileError,
    Phase,
    Point,
    Registry,
    Transition,
    load_curriculum,
    save_curriculum,
    to_toml,
)
from policies import (
    Cooldown,
    MaxVisits,
    MetricAbove,
    MetricBelow,
    MinEpoch,
    MinSteps,
    Plateau,
    ResetWindow,
    RestartLR,
    SetCutoff,
    WorseThanBest,
    adaptive_cooldown,
    all_of,
    any_of,
    not_,
    spectral_curriculum,
)
from tests.utils import CountBelow, FakeModel

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the backport the engine depends on there
    import tomli as tomllib

SHIPPED = Path(policies.__file__).parent / "curricula" / "spectral.toml"


class Note:
    """A user's action: records a text."""

    def __init__(self, text: str, tags: tuple = ()) -> None:
        self.text, self.tags = text, tags

    def __call__(self, ctx) -> dict:
        return {"note": self.text}

    def __repr__(self) -> str:
        return f"Note({self.text!r}, tags={self.tags!r})"


def registry() -> Registry:
    """The built-ins plus the test's own classes, without touching the default registry."""
    reg = Registry()
    reg.register_guard(CountBelow)
    reg.register_action(Note)
    return reg


def custom() -> Curriculum:
    """Every built-in guard and action kind, params, step_end, on_enter, a loop-back and user classes."""
    return Curriculum(
        [
            Phase(
                "warm",
                params={"seq_len": 64, "mix": {"code": 0.5, "prose": [1, 2.5]}, "name": 'é"\\\x7f'},
                on_enter=[SetCutoff(4, preserve=True), Note("in", tags=("a", "b"))],
            ),
            Phase("main", params={"seq_len": 128}, on_enter=[SetCutoff(None)]),
            Phase("late"),
        ],
        [
            Transition(
                "warm",
                "main",
                [all_of(MinSteps(3), any_of(CountBelow(0.5, 2), MetricBelow("loss", 0.1)))],
                [RestartLR(), Note("up")],
                when=Point.STEP_END,
            ),
            Transition(
                "main",
                "warm",
                [WorseThanBest("val", patience=2), MaxVisits(3), Cooldown(2, unit="steps")],
                when="epoch_end",
            ),
            Transition(
                "main",
                "late",
                [
                    not_(MetricAbove("val", 1.5)),
                    MinEpoch(1, in_phase=True),
                    Plateau(window=4, threshold=0.0, metric="val", mode="max", test="welch", alpha=0.1),
                ],
            ),
        ],
        initial="warm",
    )


@pytest.mark.parametrize(
    "name, make", [("spectral.toml", spectral_curriculum), ("wsd_adaptive.toml", lambda: adaptive_cooldown(15))]
)
def test_the_shipped_files_are_the_curricula_in_code(name, make):
    """policies/curricula/spectral.toml (wsd_adaptive.toml) has the fingerprint of spectral_curriculum()
    (adaptive_cooldown(15)), is what the writer emits, and round-trips through to_dict/from_dict."""
    shipped = SHIPPED.parent / name
    loaded, code = load_curriculum(shipped), make()
    assert loaded.fingerprint() == code.fingerprint()
    assert loaded.spec() == code.spec()
    body = [line for line in shipped.read_text().splitlines() if not line.startswith("#")]
    assert "\n".join(body) + "\n" == to_toml(code)
    assert Curriculum.from_dict(code.to_dict()).fingerprint() == code.fingerprint()


def test_a_custom_curriculum_round_trips_through_dict_json_and_toml(tmp_path):
    """Params, all_of/any_of/not_, step_end, on_enter and user classes: the same fingerprint every way."""
    reg, code = registry(), custom()
    data = code.to_dict(registry=reg)
    assert json.loads(json.dumps(data)) == data  # plain data
    assert Curriculum.from_dict(data, registry=reg).fingerprint() == code.fingerprint()
    path = save_curriculum(code, tmp_path / "c.toml", registry=reg)
    assert tomllib.loads(path.read_text()) == data
    from_file = load_curriculum(path, registry=reg)
    assert from_file.fingerprint() == code.fingerprint()
    assert from_file.phase("warm").params == code.phase("warm").params
    assert from_file.transitions[0].when is Point.STEP_END
    as_json = save_curriculum(code, tmp_path / "c.json", registry=reg)
    assert load_curriculum(as_json, registry=reg).fingerprint() == code.fingerprint()


def test_an_engine_state_saved_under_the_code_resumes_under_the_file(tmp_path):
    """A state saved by an engine on the code curriculum loads into one on the file's and continues identically."""
    reg = registry()
    path = save_curriculum(custom(), tmp_path / "c.toml", registry=reg)
    losses = [0.9, 0.4, 0.3, 0.8, 0.2, 0.1, 0.6]

    class Schedule:  # RestartLR needs a schedule with restart() and an optimizer's LR
        def restart(self):
            pass

    class Optimizer:
        param_groups = [{"lr": 1.0}]

    def run_bound(curriculum, stream, state=None):
        model = FakeModel(cutoff=4 if state else 513)  # a resumed model has its weights back: cutoff 4
        engine = CurriculumEngine(curriculum, model=model, optimizer=Optimizer(), schedule=Schedule())
        engine.load_state_dict(state) if state else engine.start()
        for loss in stream:
            engine.step_end(loss=loss, val=loss + 1)
        return engine

    whole = run_bound(custom(), losses)
    first = run_bound(custom(), losses[:2])
    state = json.loads(json.dumps(first.state_dict()))
    resumed = run_bound(load_curriculum(path, registry=reg), losses[2:], state)
    assert [r.comparable() for r in resumed.history] == [r.comparable() for r in whole.history]
    assert resumed.phase.name == whole.phase.name == "main" and len(whole.history) == 2
    assert resumed.state_dict()["guards"] == whole.state_dict()["guards"]


def test_a_users_class_is_named_only_once_registered():
    """Without registration a user's guard is unknown to a file and cannot be written; a name is registered once."""
    data = {
        "phases": [{"name": "a"}, {"name": "b"}],
        "transitions": [{"source": "a", "dest": "b", "guards": [{"type": "CountBelow", "value": 0.5, "need": 2}]}],
    }
    with pytest.raises(
        CurriculumFileError, match=r"transitions\[0\]\.guards\[0\]\.type: unknown guard 'CountBelow'.*register_guard"
    ):
        Curriculum.from_dict(data, registry=Registry())
    with pytest.raises(
        CurriculumError,
        match=r"not a built-in or registered guard; register it first: engine.register_guard\(CountBelow\)",
    ):
        Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [CountBelow(0.5, 2)])]).to_dict(registry=Registry())
    reg = Registry()
    assert reg.register_guard(CountBelow) is CountBelow
    reg.register_guard(CountBelow)  # the same class again changes nothing
    assert repr(Curriculum.from_dict(data, registry=reg).transitions[0].guards[0]) == repr(CountBelow(0.5, 2))

    class CountBelow2(CountBelow):
        pass

    with pytest.raises(
        CurriculumError,
        match=r"register_guard: the name 'CountBelow' is already used by the guard tests.utils.CountBelow",
    ):
        reg.register_guard(CountBelow2, name="CountBelow")
    with pytest.raises(CurriculumError, match=r"the name 'Plateau' is already used"):
        reg.register_guard(CountBelow2, name="Plateau")
    with pytest.raises(CurriculumError, match=r"already registered as the guard 'CountBelow'"):
        reg.register_action(CountBelow, name="other")


def test_reset_window_is_refused_both_ways_with_the_reason():
    """ResetWindow points at guard objects, which data cannot: reading and writing it say so."""
    plateau = Plateau(window=4)
    code = Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [plateau], [ResetWindow(plateau)])])
    with pytest.raises(
        CurriculumError,
        match=r"transitions\[0\]\.actions\[0\]: ResetWindow\(Plateau\(window=4, threshold=0.005\)\) cannot "
        "be written to a data file: it holds the very guard objects",
    ):
        code.to_dict()
    data = {
        "phases": [{"name": "a"}, {"name": "b"}],
        "transitions": [
            {"source": "a", "dest": "b", "guards": [{"type": "MaxVisits", "n": 2}], "actions": ["ResetWindow"]}
        ],
    }
    with pytest.raises(CurriculumFileError, match=r"actions\[0\]\.type: ResetWindow cannot be named in a data file"):
        Curriculum.from_dict(data)


def test_a_plain_function_guard_is_used_as_it_is():
    """A registered function is the guard itself (no arguments), with the fingerprint of the code that names it."""
    reg = Registry()
    reg.register_guard(ready)
    code = Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [ready])])
    data = code.to_dict(registry=reg)
    assert data["transitions"][0]["guards"] == [{"type": "ready"}]
    assert Curriculum.from_dict(data, registry=reg).fingerprint() == code.fingerprint()
    data["transitions"][0]["guards"] = ["ready"]  # a bare name is a type without arguments
    assert Curriculum.from_dict(data, registry=reg).transitions[0].guards == (ready,)


def ready(ctx) -> bool:
    return True


def test_yaml_style_data_reads_null_and_names():
    """Data from YAML or Hydra (null, bare names) builds the same curriculum as TOML's "full"."""
    data = {
        "phases": [{"name": "a", "on_enter": [{"type": "SetCutoff", "n": None}]}, {"name": "b"}],
        "transitions": [
            {"source": "a", "dest": "b", "guards": [{"type": "MinEpoch", "n": 1}], "actions": ["RestartLR"]}
        ],
    }
    code = Curriculum(
        [Phase("a", on_enter=[SetCutoff(None)]), Phase("b")], [Transition("a", "b", [MinEpoch(1)], [RestartLR()])]
    )
    assert Curriculum.from_dict(data).fingerprint() == code.fingerprint()


BASE = """\
version = 1

[[phases]]
name = "warm"
params = { seq_len = 64 }

[[phases]]
name = "main"
on_enter = [{ type = "SetCutoff", n = 8 }]

[[transitions]]
source = "warm"
dest = "main"
guards = [
    { type = "all_of", guards = [
        { type = "MinEpoch", n = 2 },
        { type = "Plateau", window = 4 },
    ] },
]
actions = [{ type = "RestartLR" }]
"""


@pytest.mark.parametrize(
    "old, new, where, message",
    [
        (
            '"Plateau"',
            '"Plateu"',
            "c.toml:17: transitions[0].guards[0].guards[1].type",
            "unknown guard 'Plateu'; expected one of Cooldown, CooldownDue, MaxVisits, MetricAbove, MetricBelow, "
            "MinEpoch, MinSteps, Plateau, WorseThanBest, all_of, "
            "any_of, not_ (did you mean 'Plateau'?), or register your own first: engine.register_guard(YourClass)",
        ),
        (
            "n = 2",
            'n = "2"',
            "c.toml:16: transitions[0].guards[0].guards[0]",
            "MinEpoch: 'n' must be an int >= 0, got '2'; e.g. MinEpoch(2)",
        ),
        ('dest = "main"\n', "", "c.toml:11: transitions[0]", "missing key 'dest'; add it, e.g. source = "),
        (
            "params = {",
            "parms = {",
            "c.toml:5: phases[0].parms",
            "unknown key; expected one of name, params, on_enter; did you mean 'params'?",
        ),
        (
            'dest = "main"',
            'dest = "mian"',
            "c.toml:13: transitions[0].dest",
            "'mian' is not a phase; expected one of ['warm', 'main'] (did you mean 'main'?)",
        ),
        (
            'dest = "main"',
            'dest = "warm"',
            "c.toml: phases",
            "Curriculum.phases ['main'] cannot be reached from the initial phase 'warm'; add a Transition into them "
            "or remove them",
        ),
        (
            'type = "RestartLR"',
            'type = "MinEpoch", n = 1',
            "c.toml:20: transitions[0].actions[0].type",
            "'MinEpoch' is a guard, not an action; move it to guards",
        ),
        (
            "window = 4",
            "window = 4, windw = 2",
            "c.toml:17: transitions[0].guards[0].guards[1].windw",
            "Plateau has no argument 'windw'; expected Plateau(window: 'int' = 50",
        ),
        (
            '{ type = "MinEpoch", n = 2 }',
            '{ type = "MinEpoch" }',
            "c.toml:16: transitions[0].guards[0].guards[0]",
            "missing key 'n' for MinEpoch(n: 'int', in_phase: 'bool' = False); add it",
        ),
        ("version = 1", "version = 2", "c.toml:1: version", "expected 1 (the layout this release reads), got 2"),
        (
            'actions = [{ type = "RestartLR" }]',
            'actions = "RestartLR"',
            "c.toml:20: transitions[0].actions",
            "expected an array of actions, got a string 'RestartLR'; wrap it in [ ... ]",
        ),
        (
            'name = "main"',
            'name = "warm"',
            "c.toml:8: phases[1].name",
            "the phase name 'warm' is used twice (phases[0] too)",
        ),
        ("n = 8 }", "n = 8 ", "c.toml:9", "not valid TOML: Unclosed inline table (column 41); fix the syntax"),
    ],
)
def test_each_mistake_is_one_line_naming_file_line_key_and_fix(tmp_path, old, new, where, message):
    """Unknown guard, wrong type, missing or unknown key, unknown or unreachable phase, misplaced action, bad syntax."""
    assert old in BASE
    path = tmp_path / "c.toml"
    path.write_text(BASE.replace(old, new, 1))
    with pytest.raises(CurriculumFileError) as info:
        load_curriculum(path)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"{path.parent}/{where}: ".replace(f"{path.parent}/c.toml", str(path))), text
    assert message in text, text


def test_the_base_file_of_the_mistakes_is_valid(tmp_path):
    """The file the mistakes are made in loads (so each test above fails for its one mistake)."""
    path = tmp_path / "c.toml"
    path.write_text(BASE)
    assert load_curriculum(path).phase("warm").params == {"seq_len": 64}


def test_writing_refuses_what_a_file_cannot_hold(tmp_path):
    """An existing file is not replaced without overwrite=True; None in params is refused by TOML, kept by JSON."""
    path = tmp_path / "c.toml"
    path.write_text("mine")
    with pytest.raises(CurriculumFileError, match="already exists; pass overwrite=True"):
        save_curriculum(spectral_curriculum(), path)
    assert path.read_text() == "mine"
    save_curriculum(spectral_curriculum(), path, overwrite=True)
    assert load_curriculum(path).fingerprint() == spectral_curriculum().fingerprint()
    holey = Curriculum([Phase("a", params={"x": None})], [])
    with pytest.raises(CurriculumError, match=r"phases\[0\]\.params\.x is None, which TOML cannot hold"):
        to_toml(holey)
    assert Curriculum.from_dict(json.loads(json.dumps(holey.to_dict()))).fingerprint() == holey.fingerprint()


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=8),
        st.one_of(
            st.text(max_size=12),
            st.integers(-(2**63), 2**63 - 1),
            st.booleans(),
            st.floats(allow_nan=False),
            st.lists(st.integers(0, 9), max_size=3),
        ),
        max_size=4,
    )
)
@example({"0\n": "", "a-b": 1, "a.b": 2})  # a bare-looking key with a trailing newline must be quoted
def test_the_toml_writer_round_trips_any_params(params):
    """Any strings (quotes, control characters, non-ASCII), ints, floats and lists in params read back equal."""
    curriculum = Curriculum([Phase("a", params=params)], [])
    loaded = Curriculum.from_dict(tomllib.loads(to_toml(curriculum)))
    assert loaded.fingerprint() == curriculum.fingerprint()
    for key, value in params.items():
        got = loaded.phase("a").params[key]
        assert got == (tuple(value) if isinstance(value, list) else value)
        if isinstance(value, float):
            assert math.copysign(1, got) == math.copysign(1, value)


class Tagged:
    """A user's guard taking **options."""

    def __init__(self, n: int, **options) -> None:
        self.n, self.options = n, options

    def __call__(self, ctx) -> bool:
        return True

    def __repr__(self) -> str:
        return f"Tagged({self.n}, {', '.join(f'{k}={v!r}' for k, v in sorted(self.options.items()))})"


def test_config_mappings_and_keyword_arguments_are_read():
    """Mappings and sequences that are not dict/list (as Hydra's DictConfig/ListConfig) read as data; **options take
    other keys."""
    from collections import UserList
    from types import MappingProxyType

    reg = Registry()
    reg.register_guard(Tagged)
    data = MappingProxyType(
        {
            "phases": UserList([MappingProxyType({"name": "a"}), {"name": "b"}]),
            "transitions": [{"source": "a", "dest": "b", "guards": [{"type": "Tagged", "n": 1, "colour": "red"}]}],
        }
    )
    curriculum = Curriculum.from_dict(data, registry=reg)
    assert repr(curriculum.transitions[0].guards[0]) == "Tagged(1, colour='red')"


def test_without_a_toml_reader_the_error_says_what_to_install(tmp_path, monkeypatch):
    """Python 3.10 without tomli: one line naming the package; JSON files still load."""
    import engine.datafile

    monkeypatch.setattr(engine.datafile, "_toml", None)
    path = save_curriculum(spectral_curriculum(), tmp_path / "c.toml")
    with pytest.raises(
        CurriculumFileError, match=r"c.toml: reading TOML on Python 3.10 needs the tomli package: pip install tomli"
    ):
        load_curriculum(path)
    assert (
        load_curriculum(save_curriculum(spectral_curriculum(), tmp_path / "c.json")).fingerprint()
        == spectral_curriculum().fingerprint()
    )


@pytest.mark.parametrize("name", ["a\n", "short\n", "a b"])
def test_a_phase_name_with_a_newline_or_space_is_refused(name):
    """Phase names are identifiers in full: a trailing newline (which a regex's `$` lets through) is refused."""
    with pytest.raises(CurriculumError, match="Phase.name must be an identifier"):
        Phase(name)
