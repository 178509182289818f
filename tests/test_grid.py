"""engine.replay_grid (engine.grid), finding the engine state in saved files (engine.saved) and
``python -m engine replay`` (engine.__main__) on an own loop's state files."""

from __future__ import annotations

import json
import math
import os
import random
import sys

import pytest
import torch

from engine import Curriculum, CurriculumEngine, CurriculumError, Phase, Transition, replay_grid
from engine.__main__ import main
from engine.saved import load_saved
from policies import MetricBelow, MinEpoch, Plateau, all_of


def make(threshold: float = 0.01, window: int = 20) -> Curriculum:
    """The factory the tests replay with: its defaults are the recorded run's settings."""
    return Curriculum(
        [Phase("a", params={"seq_len": 64}), Phase("b", params={"seq_len": 128}), Phase("c", params={"seq_len": 256})],
        [
            Transition("a", "b", [all_of(MinEpoch(1), Plateau(window=window, threshold=threshold))]),
            Transition("b", "c", [all_of(MinEpoch(3), Plateau(window=window, threshold=threshold))]),
        ],
    )


def needs_val(threshold: float = 0.01) -> Curriculum:
    return Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [MetricBelow("val_bpb", threshold)])])


@pytest.fixture(scope="module")
def recorded() -> CurriculumEngine:
    """Six epochs of 50 steps: the loss falls and plateaus in each phase; switches at steps 150 and 250."""
    engine = CurriculumEngine(make(), record_metrics=True)
    engine.start()
    rng = random.Random(0)
    for _ in range(6):
        for _ in range(50):
            engine.step_end(loss=1 + 2 * math.exp(-0.05 * engine.clock.steps_in_phase) + 0.05 * rng.random())
        engine.epoch_end(val=rng.random())
    assert [(r.source, r.global_step) for r in engine.history][1:] == [("a", 150), ("b", 250)]
    return engine


def test_replay_grid_rows_say_where_each_setting_switches_and_departs(recorded):
    """Each row: its switches with their deciding guards up to the first departure from the recorded run."""
    table = replay_grid(make, recorded, grid={"threshold": [0.01, 0.05], "window": [10, 40]})
    assert table.own.departure is None and table.note() is None
    rows = {row.label: row for row in table.rows}
    assert list(rows) == [
        "threshold=0.01 window=10",
        "threshold=0.01 window=40",
        "threshold=0.05 window=10",
        "threshold=0.05 window=40",
    ]
    assert [r.global_step for r in rows["threshold=0.01 window=10"].switches] == [150, 250]
    assert rows["threshold=0.01 window=10"].departure is None
    assert rows["threshold=0.01 window=40"].departure.global_step == 250  # the recorded run moved, this one not yet
    late = rows["threshold=0.05 window=40"]
    assert (late.departure.global_step, late.departure.recorded) == (100, None)  # it moves where the run stayed
    assert late.switches[-1].decision.decided_by == ["Plateau(window=40, threshold=0.05)"]
    text = str(table).splitlines()
    assert text[0].split() == ["setting", "switch", "1", "switch", "2", "departs"]
    assert text[1].split() == ["recorded", "150", "Plateau", "250", "Plateau"]
    assert text[3].split() == ["threshold=0.01", "window=40", "150", "Plateau", ">", "250", "step", "250"]
    assert table.to_markdown().splitlines()[1] == "|---|---|---|---|"


def test_replay_grid_takes_a_saved_state_as_well(recorded):
    """The engine's JSON state gives the same table as the live engine."""
    grid = {"threshold": [0.001, 0.05]}
    assert str(replay_grid(make, json.loads(json.dumps(recorded.state_dict())), grid)) == str(
        replay_grid(make, recorded, grid)
    )


def test_replay_grid_bad_input_is_one_error(recorded):
    """A key the factory lacks, an empty axis, a stream without a metric the rule reads, no recording."""
    for kwargs, words in (
        (
            {"grid": {"thresh": [0.1]}},
            "grid key 'thresh' is not a parameter of make .its parameters: threshold, window",
        ),
        ({"grid": {"window": []}}, "non-empty list"),
    ):
        with pytest.raises(CurriculumError, match=words):
            replay_grid(make, recorded, **kwargs)
    with pytest.raises(CurriculumError, match="does not fit needs_val.*'val_bpb'"):
        replay_grid(needs_val, recorded)
    plain = CurriculumEngine(make())
    plain.start()
    plain.step_end(loss=1.0)
    with pytest.raises(CurriculumError, match="record_metrics=True"):
        replay_grid(make, plain)
    late = CurriculumEngine(make(), record_metrics=True)  # recording turned on at a resume
    late.load_state_dict(plain.state_dict())
    late.step_end(loss=1.0)
    with pytest.raises(CurriculumError, match="the recording began at step 1"):
        replay_grid(make, late)


# -- saved files and python -m engine -------------------------------------------------------------------


def test_load_saved_finds_the_engine_state_in_json_and_torch_files(recorded, tmp_path):
    state = recorded.state_dict()
    (tmp_path / "state.json").write_text(json.dumps(state))
    torch.save({"model": {"w": torch.zeros(2)}, "engine": state}, tmp_path / "ckpt.pt")
    assert load_saved(tmp_path / "state.json") == (state, str(tmp_path / "state.json"))
    found, where = load_saved(tmp_path / "ckpt.pt")
    assert found == state and where == f"{tmp_path / 'ckpt.pt'} ['engine']"


def test_cli_replays_an_own_loops_state_file_under_a_grid(recorded, tmp_path, capsys):
    path = tmp_path / "run.pt"
    torch.save({"engine": recorded.state_dict()}, path)
    before = path.read_bytes()
    assert (
        main(
            ["replay", str(path), "--curriculum", "tests.test_grid:make", "--grid", "threshold=0.01,0.05", "window=10"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "300 steps, 6 epoch ends recorded; curriculum tests.test_grid:make" in out
    assert "threshold=0.05 window=10" in out and "departs" in out and "note:" not in out
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "case, words",
    [
        ("no-state", "holds no engine state"),
        ("folder", "without trainer_state.json"),
        (
            "not-recorded",
            "without recorded metrics; build the run's engine with CurriculumEngine(curriculum, record_metrics=True)",
        ),
        ("bad-key", "grid key 'thresh' is not a parameter of make"),
        ("bad-module", "no module named 'tests.nowhere'"),
        ("bad-stream", "does not fit needs_val"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(recorded, tmp_path, capsys, case, words):
    """A path without an engine state or without recorded metrics, a grid key or module that is not there,
    a stream the curriculum cannot read: one line on stderr, status 2, the file untouched."""
    state = recorded.state_dict()
    path = tmp_path / "state.json"
    path.write_text(
        json.dumps(
            {"other": 1} if case == "no-state" else {**state, "recorded": None} if case == "not-recorded" else state
        )
    )
    before = path.read_bytes()
    target = str(tmp_path) if case == "folder" else str(path)
    factory = {"bad-module": "tests.nowhere:make", "bad-stream": "tests.test_grid:needs_val"}.get(
        case, "tests.test_grid:make"
    )
    grid = ["--grid", "thresh=0.1"] if case == "bad-key" else []
    assert main(["replay", target, "--curriculum", factory, *grid]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1 and words in captured.err
    assert path.read_bytes() == before


def test_cli_plot_never_overwrites_without_force(recorded, tmp_path, capsys):
    path, png = tmp_path / "state.json", tmp_path / "run.png"
    path.write_text(json.dumps(recorded.state_dict()))
    png.write_bytes(b"mine")
    assert main(["plot", str(path), "--out", str(png)]) == 2
    assert png.read_bytes() == b"mine" and "--force" in capsys.readouterr().err


def test_the_readme_record_and_replay_grid_example_prints_what_it_shows(capsys, tmp_path, monkeypatch):
    """The README's record-and-replay example runs as written, prints the table shown below it and draws a PNG."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    code = re.search(r"<!-- example: record-replay-grid -->\s*```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "__main__"})
    shown = text.split(code)[1].split("first departure from the run:")[1].split("```")[1].strip("\n")
    assert capsys.readouterr().out.strip("\n") == shown
    assert (tmp_path / "run.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _earlier_release_recording(bomb: bool) -> dict:
    """A recording in the layout curriculum-engine 0.1.0 wrote: 1 KB that claims 10**9 calls, or whose
    one block inflates to 100 MB."""
    import base64
    import zlib

    packer, zeros = zlib.compressobj(9), b"\0" * 2**20
    packed = b"".join(packer.compress(zeros) for _ in range(100 if bomb else 0)) + packer.compress(b"\0" * 8)
    block = base64.b64encode(packed + packer.flush()).decode()
    return {
        "format": 1,
        "encoding": "float64-le-shuffle-zlib-base64",
        "block": 4096,
        "start_step": 0,
        "start_epoch": 0,
        "layouts": [["step_end", ["loss"]]],
        "calls": [[0, 1 if bomb else 10**9]],
        "columns": [["step_end", "loss", [block]]],
    }


@pytest.mark.parametrize("command", ["replay", "plot"])
@pytest.mark.parametrize("case", ["claims 10**9 calls", "zlib bomb", "nested json", "fifo"])
def test_cli_hostile_recording_is_one_line_and_exit_2(recorded, tmp_path, capsys, command, case):
    """A recording that claims more than it holds, a compressed block that inflates without end, JSON
    nested past the parser's depth, or a FIFO (which would block the read): one line and status 2,
    nothing allocated for what the file claims."""
    path, out = tmp_path / "state.json", tmp_path / "out.png"
    if case == "nested json":
        path.write_text("[" * 100_000 + "]" * 100_000)
    elif case == "fifo":
        os.mkfifo(path)
    else:
        state = {**recorded.state_dict(), "recorded": _earlier_release_recording(case == "zlib bomb")}
        path.write_text(json.dumps(state))
    argv = ["replay", str(path), "--curriculum", "tests.test_grid:make"] if command == "replay" else ["plot", str(path)]
    assert main([*argv, *(["--out", str(out)] if command == "plot" else [])]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
    words = {"nested json": "too deeply", "fifo": "not a regular file"}.get(case, "written by curriculum-engine 0.1.0")
    assert words in err


@pytest.mark.parametrize(
    "out, words",
    [
        ("g.txt", ".txt is not an image format the plot writes"),
        ("/proc/x.png", "cannot write in /proc"),
        ("nodir/x.png", "the folder {tmp}/nodir does not exist"),
        ("taken", "exists and is not a regular file"),
    ],
)
def test_cli_plot_refuses_an_output_it_cannot_write_before_drawing(recorded, tmp_path, capsys, out, words):
    path = tmp_path / "state.json"
    path.write_text(json.dumps(recorded.state_dict()))
    (tmp_path / "taken.png").mkdir()
    target = out if out.startswith("/") else str(tmp_path / out)
    assert main(["plot", str(path), "--out", target, "--force"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and words.format(tmp=tmp_path) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json", "taken.png"]


def test_cli_plot_into_a_folder_writes_a_file_in_it(recorded, tmp_path, capsys):
    """--out DIR --force draws DIR/<state name>.png and leaves the folder in place."""
    path, folder = tmp_path / "state.json", tmp_path / "plots"
    path.write_text(json.dumps(recorded.state_dict()))
    folder.mkdir()
    assert main(["plot", str(path), "--out", str(folder), "--force"]) == 0
    assert (folder / "state.png").read_bytes()[:4] == b"\x89PNG" and folder.is_dir()
    assert capsys.readouterr().out.startswith(f"wrote {folder / 'state.png'}")


def test_cli_plot_without_matplotlib_names_the_extra(recorded, tmp_path, capsys, monkeypatch):
    path = tmp_path / "state.json"
    path.write_text(json.dumps(recorded.state_dict()))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails as if not installed
    assert main(["plot", str(path), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and 'pip install "curriculum-engine[plot]"' in err
    assert not (tmp_path / "x.png").exists()
