"""A curriculum as data: to and from dicts, TOML and JSON files, registration, one-line errors (engine.datafile)."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import attrs
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
    curriculum_from_dict,
    curriculum_to_dict,
    load_curriculum,
    save_curriculum,
    to_toml,
)
from engine.datafile import default_registry
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
    anneal_curriculum,
    any_of,
    not_,
    spectral_curriculum,
)
from tests.utils import FakeModel

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the backport the engine depends on there
    import tomli as tomllib

SHIPPED = Path(policies.__file__).parent / "curricula" / "spectral.toml"


# What the stored fingerprints of the shipped curricula are: a change of a built-in's repr changes them.
SPECTRAL = "0bd570a628708e2996b094e5dc79fbc52417e087bdd1dedf5146c84108af1ddb"
# adaptive_cooldown's holds its step-end CooldownDue transition (the automatic cooldown, recorded)
WSD_ADAPTIVE = "40a232fd3517bbf10d3e10c0f637583cff26051878c6599e99e9c36c9a639b7e"


@attrs.define(eq=False)
class CountBelow:
    """A user's stateful guard: counts observed losses below ``value``; holds at ``need``."""

    value: float
    need: int
    count: int = attrs.field(default=0, init=False, repr=False)  # state: not in the repr (the fingerprint)

    def observe(self, ctx) -> None:
        self.count += ctx.metric("loss") < self.value

    def reset(self) -> None:
        self.count = 0

    def __call__(self, ctx) -> bool:
        return self.count >= self.need

    def state_dict(self) -> dict:
        return {"count": self.count}

    def load_state_dict(self, d: dict) -> None:
        self.count = d["count"]


@attrs.define(eq=False)
class Note:
    """A user's action: records a text."""

    text: str
    tags: tuple = ()

    def __call__(self, ctx) -> dict:
        return {"note": self.text}


def registry() -> Registry:
    """The built-ins plus the test's own classes, without touching the default registry."""
    reg = default_registry.copy()
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
    "name, make",
    [
        ("spectral.toml", spectral_curriculum),
        ("wsd_adaptive.toml", lambda: adaptive_cooldown(15)),
        (
            "wsd_anneal.toml",
            lambda: anneal_curriculum(15, {"general": 9, "target": 1}, {"general": 3, "target": 7}),
        ),
    ],
)
def test_the_shipped_files_are_the_curricula_in_code(name, make):
    """policies/curricula/spectral.toml (wsd_adaptive.toml) has the fingerprint of spectral_curriculum()
    (adaptive_cooldown(15)), and the curriculum round-trips through the writer and a dict."""
    shipped = SHIPPED.parent / name
    loaded, code = load_curriculum(shipped), make()
    assert loaded.fingerprint() == code.fingerprint()
    assert loaded.spec() == code.spec()
    assert curriculum_from_dict(tomllib.loads(to_toml(code))) == code
    assert curriculum_from_dict(curriculum_to_dict(code)).fingerprint() == code.fingerprint()


def test_the_stored_fingerprints_of_the_shipped_curricula_are_unchanged():
    """The fingerprints that saved runs hold (they read the built-ins' reprs) are those of this release."""
    assert spectral_curriculum().fingerprint() == load_curriculum(SHIPPED).fingerprint() == SPECTRAL
    assert adaptive_cooldown(15).fingerprint() == load_curriculum(SHIPPED.parent / "wsd_adaptive.toml").fingerprint()
    assert adaptive_cooldown(15).fingerprint() == WSD_ADAPTIVE


def test_a_saved_curriculum_loads_equal(tmp_path):
    """save then load gives an equal curriculum (equality and hash follow the fingerprint); another one differs."""
    code = spectral_curriculum()
    loaded = load_curriculum(save_curriculum(code, tmp_path / "c.toml"))
    assert loaded == code and hash(loaded) == hash(code) and len({loaded, code}) == 1
    assert loaded != spectral_curriculum(window=10) and code != "spectral"


def test_a_custom_curriculum_round_trips_through_dict_json_and_toml(tmp_path):
    """Params, all_of/any_of/not_, step_end, on_enter and user classes: the same fingerprint every way."""
    reg, code = registry(), custom()
    data = curriculum_to_dict(code, registry=reg)
    assert json.loads(json.dumps(data)) == data  # plain data
    assert curriculum_from_dict(data, registry=reg).fingerprint() == code.fingerprint()
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
        CurriculumFileError, match=r"transitions\[0\]\.guards\[0\]: type: unknown guard 'CountBelow'.*register_guard"
    ):
        curriculum_from_dict(data, registry=default_registry.copy())
    with pytest.raises(
        CurriculumError,
        match=r"not a built-in or registered guard; register it first: engine.register_guard\(CountBelow\)",
    ):
        curriculum_to_dict(Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [CountBelow(0.5, 2)])]))
    reg = default_registry.copy()
    assert reg.register_guard(CountBelow) is CountBelow
    reg.register_guard(CountBelow)  # the same class again changes nothing
    assert repr(curriculum_from_dict(data, registry=reg).transitions[0].guards[0]) == repr(CountBelow(0.5, 2))

    class CountBelow2(CountBelow):
        pass

    with pytest.raises(
        CurriculumError,
        match=r"register_guard: the name 'CountBelow' is already used by the guard tests.test_datafile.CountBelow",
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
        curriculum_to_dict(code)
    data = {
        "phases": [{"name": "a"}, {"name": "b"}],
        "transitions": [
            {"source": "a", "dest": "b", "guards": [{"type": "MaxVisits", "n": 2}], "actions": ["ResetWindow"]}
        ],
    }
    with pytest.raises(CurriculumFileError, match=r"actions\[0\]: type: ResetWindow cannot be named in a data file"):
        curriculum_from_dict(data)


def test_a_plain_function_guard_is_used_as_it_is():
    """A registered function is the guard itself (no arguments), with the fingerprint of the code that names it."""
    reg = Registry()
    reg.register_guard(ready)
    code = Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [ready])])
    data = curriculum_to_dict(code, registry=reg)
    assert data["transitions"][0]["guards"] == [{"type": "ready"}]
    assert curriculum_from_dict(data, registry=reg).fingerprint() == code.fingerprint()
    data["transitions"][0]["guards"] = ["ready"]  # a bare name is a type without arguments
    assert curriculum_from_dict(data, registry=reg).transitions[0].guards == (ready,)


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
    assert curriculum_from_dict(data).fingerprint() == code.fingerprint()


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
            "c.toml: transitions[0].guards[0].guards[1]",
            "type: unknown guard 'Plateu'; expected one of Cooldown, CooldownDue, MaxVisits, MetricAbove, MetricBelow, "
            "MinEpoch, MinSteps, Plateau, WorseThanBest, all_of, "
            "any_of, not_ (did you mean 'Plateau'?), or register your own first: engine.register_guard(YourClass)",
        ),
        (
            "n = 2",
            'n = "2"',
            "c.toml: transitions[0].guards[0].guards[0]",
            "MinEpoch: 'n' must be an int >= 0, got '2'; e.g. MinEpoch(2)",
        ),
        ('dest = "main"\n', "", "c.toml: transitions[0].dest", "required key missing; add it"),
        (
            "params = {",
            "parms = {",
            "c.toml: phases[0]",
            "unknown key 'parms'; expected one of name, params, on_enter; did you mean 'params'?",
        ),
        (
            'dest = "main"',
            'dest = "mian"',
            "c.toml",
            "Curriculum.transitions[0].dest is 'mian', which is not a phase; expected one of ['warm', 'main']",
        ),
        (
            'dest = "main"',
            'dest = "warm"',
            "c.toml",
            "Curriculum.phases ['main'] cannot be reached from the initial phase 'warm'; add a Transition into them "
            "or remove them",
        ),
        (
            'type = "RestartLR"',
            'type = "MinEpoch", n = 1',
            "c.toml: transitions[0].actions[0]",
            "type: 'MinEpoch' is a guard, not an action; move it to guards",
        ),
        (
            "window = 4",
            "window = 4, windw = 2",
            "c.toml: transitions[0].guards[0].guards[1]",
            "unknown key 'windw'; expected one of window, threshold, metric, mode, test, alpha; did you mean 'window'?",
        ),
        (
            '{ type = "MinEpoch", n = 2 }',
            '{ type = "MinEpoch" }',
            "c.toml: transitions[0].guards[0].guards[0].n",
            "required key missing; add it",
        ),
        ("version = 1", "version = 2", "c.toml: version", "expected 1 (the layout this release reads), got 2"),
        (
            'actions = [{ type = "RestartLR" }]',
            'actions = "RestartLR"',
            "c.toml: transitions[0].actions",
            "expected an array of actions, got a string 'RestartLR'; wrap it in [ ]",
        ),
        (
            'name = "main"',
            'name = "warm"',
            "c.toml",
            "Curriculum.phases: the name 'warm' is used twice; phase names must be unique",
        ),
        ("n = 8 }", "n = 8 ", "c.toml:9", "not valid TOML: Unclosed inline table (column 41); fix the syntax"),
    ],
)
def test_each_mistake_is_one_line_naming_file_key_and_fix(tmp_path, old, new, where, message):
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
    assert curriculum_from_dict(json.loads(json.dumps(curriculum_to_dict(holey)))).fingerprint() == holey.fingerprint()


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
    loaded = curriculum_from_dict(tomllib.loads(to_toml(curriculum)))
    assert loaded.fingerprint() == curriculum.fingerprint()
    for key, value in params.items():
        got = loaded.phase("a").params[key]
        assert got == (tuple(value) if isinstance(value, list) else value)
        if isinstance(value, float):
            assert math.copysign(1, got) == math.copysign(1, value)


class Plain:
    """A user's guard that is not an attrs class."""

    def __init__(self, n: int = 1) -> None:
        self.n = n

    def __call__(self, ctx) -> bool:
        return True


def test_config_mappings_are_read_and_a_plain_class_takes_no_arguments():
    """Mappings and sequences that are not dict/list (as Hydra's DictConfig/ListConfig) read as data; a registered
    class that is not an attrs class is built without arguments, and one holding state is not written."""
    from collections import UserList
    from types import MappingProxyType

    reg = Registry()
    reg.register_guard(Plain)
    data = MappingProxyType(
        {
            "phases": UserList([MappingProxyType({"name": "a"}), {"name": "b"}]),
            "transitions": [{"source": "a", "dest": "b", "guards": [{"type": "Plain"}]}],
        }
    )
    assert type(curriculum_from_dict(data, registry=reg).transitions[0].guards[0]) is Plain
    data["transitions"][0]["guards"][0]["n"] = 2
    with pytest.raises(CurriculumFileError, match=r"guards\[0\]: Plain takes no arguments in a file .* attrs class"):
        curriculum_from_dict(data, registry=reg)
    with pytest.raises(CurriculumError, match=r"its arguments cannot be read; make Plain an attrs class"):
        curriculum_to_dict(Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [Plain(2)])]), registry=reg)


@pytest.mark.parametrize("name", ["a\n", "short\n", "a b"])
def test_a_phase_name_with_a_newline_or_space_is_refused(name):
    """Phase names are identifiers in full: a trailing newline (which a regex's `$` lets through) is refused."""
    with pytest.raises(CurriculumError, match="Phase.name must be an identifier"):
        Phase(name)


def test_a_json_key_given_twice_is_refused(tmp_path):
    """JSON lets the last of two equal keys win silently; a curriculum file refuses it in one line."""
    path = tmp_path / "c.json"
    path.write_text('{"phases": [{"name": "a", "name": "b"}]}')
    with pytest.raises(CurriculumFileError, match=r"c.json: the key 'name' appears twice in one table; keep one"):
        load_curriculum(path)


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_an_integer_beyond_pythons_digit_limit_is_one_line(tmp_path, suffix):
    """An integer of 5,000 digits: one line naming the limit, not a ValueError traceback."""
    digits = "9" * 5000
    path = tmp_path / f"c{suffix}"
    if suffix == ".json":
        path.write_text(f'{{"phases": [{{"name": "a", "params": {{"x": {digits}}}}}]}}')
    else:
        path.write_text(f'[[phases]]\nname = "a"\nparams = {{ x = {digits} }}\n')
    with pytest.raises(CurriculumFileError, match=r"a value cannot be read: Exceeds the limit \(4300 digits\)") as info:
        load_curriculum(path)
    assert "\n" not in str(info.value)


def nested_not(depth: int) -> dict:
    guard: dict = {"type": "MinEpoch", "n": 1}
    for _ in range(depth):
        guard = {"type": "not_", "guard": guard}
    return {"phases": [{"name": "a"}, {"name": "b"}], "transitions": [{"source": "a", "dest": "b", "guards": [guard]}]}


def test_deep_nesting_is_one_line(tmp_path):
    """400 nested not_ (as data and as a JSON file), params nested 5,000 deep: one line each, no RecursionError."""
    with pytest.raises(CurriculumFileError, match=r"nested more than 64 deep; .*flatten it"):
        curriculum_from_dict(nested_not(400))
    path = tmp_path / "c.json"
    path.write_text(json.dumps(nested_not(400)))
    with pytest.raises(
        CurriculumFileError, match=r"c.json: transitions\[0\]\.guards\[0\](\.guard)+\.type: tables and arrays"
    ):
        load_curriculum(path)
    path.write_text('{"phases": [{"name": "a", "params": {"x": ' + "[" * 5000 + "]" * 5000 + "}}]}")
    with pytest.raises(CurriculumFileError, match=r"c.json: tables and arrays nested too deeply to read"):
        load_curriculum(path)
    assert curriculum_from_dict(nested_not(20)).transitions[0].guards[0].guards[0] is not None  # 20 deep is fine


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_fifo_a_device_and_a_huge_file_are_refused_before_reading(tmp_path):
    """A FIFO (which would block), /dev/zero (endless) and a 5 MB file are refused at once, unread."""
    fifo = tmp_path / "f.toml"
    os.mkfifo(fifo)
    with pytest.raises(CurriculumFileError, match=r"f.toml: not a regular file \(a FIFO, a device or a folder\)"):
        load_curriculum(fifo)
    zero = tmp_path / "zero.toml"
    zero.symlink_to("/dev/zero")
    with pytest.raises(CurriculumFileError, match="zero.toml: not a regular file"):
        load_curriculum(zero)
    huge = tmp_path / "huge.toml"
    with open(huge, "wb") as file:
        file.truncate(5 << 20)
    with pytest.raises(CurriculumFileError, match=r"huge.toml: 5242880 bytes, more than a curriculum file holds"):
        load_curriculum(huge)


def chain(n: int) -> dict:
    return {
        "phases": [{"name": f"p{i}"} for i in range(n)],
        "transitions": [
            {"source": f"p{i}", "dest": f"p{i + 1}", "guards": [{"type": "MinEpoch", "n": i}]} for i in range(n - 1)
        ],
    }


def lines_run(function, *args) -> int:
    """How many lines of the engine's own modules ``function(*args)`` executes (a count, not a time)."""
    root, count = str(Path(curriculum_from_dict.__code__.co_filename).parent), 0

    def trace(frame, event, arg):
        nonlocal count
        if not frame.f_code.co_filename.startswith(root):
            return None
        count += event == "line"
        return trace

    sys.settrace(trace)
    try:
        function(*args)
    finally:
        sys.settrace(None)
    return count


def test_loading_takes_work_linear_in_the_phase_count():
    """Twice the phases (a chain of 200, then 400) cost about twice the engine's work, not four times."""
    small, large = lines_run(curriculum_from_dict, chain(200)), lines_run(curriculum_from_dict, chain(400))
    assert large < 2.2 * small, (small, large)


def test_overwriting_a_symlink_replaces_the_link_not_its_target(tmp_path):
    """save_curriculum(..., overwrite=True) on a symlink puts the file where the link was; the target is untouched."""
    target = tmp_path / "mine.txt"
    target.write_text("keep me")
    link = tmp_path / "c.toml"
    link.symlink_to(target)
    with pytest.raises(CurriculumFileError, match="already exists"):
        save_curriculum(spectral_curriculum(), link)
    save_curriculum(spectral_curriculum(), link, overwrite=True)
    assert target.read_text() == "keep me"
    assert not link.is_symlink() and load_curriculum(link) == spectral_curriculum()
    umask = os.umask(0)
    os.umask(umask)
    assert link.stat().st_mode & 0o777 == 0o666 & ~umask  # the mode a plain open() gives
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml", "mine.txt"]  # no temporary file left


def test_a_save_that_cannot_be_written_is_one_curriculum_error_naming_the_fix(tmp_path):
    """save_curriculum onto a path it cannot replace (a folder) raises a CurriculumError saying why; nothing is left."""
    (tmp_path / "c.toml").mkdir()
    with pytest.raises(CurriculumError, match=r"could not write .*c\.toml: Is a directory .*Fix the path"):
        save_curriculum(spectral_curriculum(), tmp_path / "c.toml", overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["c.toml"]  # no temporary file left
