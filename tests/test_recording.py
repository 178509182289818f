"""The metric stream an engine records (engine.recording, CurriculumEngine(record_metrics=True)) and
the plot drawn from it (engine.plot)."""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import random
import re
import struct

import numpy as np
import pytest
import torch

from engine import Curriculum, CurriculumEngine, CurriculumError, MetricLog, Phase, Point, Transition, replay
from engine.plot import plot_run
from policies import MetricBelow, MinEpoch, Plateau, all_of


def curriculum(threshold: float = 0.01, window: int = 20) -> Curriculum:
    return Curriculum(
        [Phase("a", params={"seq_len": 64}), Phase("b", params={"seq_len": 128}), Phase("c", params={"seq_len": 256})],
        [
            Transition("a", "b", [all_of(MinEpoch(1), Plateau(window=window, threshold=threshold))]),
            Transition("b", "c", [Plateau(window=window, threshold=threshold)], when=Point.STEP_END),
        ],
    )


def run(engine: CurriculumEngine, epochs: int, steps: int = 50, seed: int = 0) -> None:
    """A loss that falls, then plateaus, in each phase (noisy floats with all 53 bits)."""
    rng = random.Random(seed)
    for _ in range(epochs):
        for _ in range(steps):
            engine.step_end(
                loss=1 + 2 * math.exp(-0.05 * engine.clock.steps_in_phase) + 0.05 * rng.random(), lr=1e-3 * rng.random()
            )
        engine.epoch_end(val=rng.random())


def bits(stream):
    return [(p, {k: struct.pack("<d", v) for k, v in m.items()}) for p, m in stream]


def test_off_by_default():
    """Without record_metrics nothing is recorded and the state's 'recorded' is None."""
    engine = CurriculumEngine(curriculum())
    engine.start()
    run(engine, 1)
    assert engine.recorded is None and engine.state_dict()["recorded"] is None


def test_records_every_call_with_the_exact_floats_it_was_fed():
    """Each successful call appends its metrics as floats, in order, whatever their set and type."""
    engine = CurriculumEngine(curriculum(), record_metrics=True)
    engine.start()
    engine.step_end(loss=0.1 + 0.2, lr=np.float32(0.5))
    engine.step_end(loss=torch.tensor(float("nan")), grad_norm=3)
    engine.epoch_end(val=float("inf"))
    engine.step_end(loss=-0.0, lr=1e-300)
    expected = [
        ("step_end", {"lr": 0.5, "loss": 0.1 + 0.2}),
        ("step_end", {"grad_norm": 3.0, "loss": math.nan}),
        ("epoch_end", {"val": math.inf}),
        ("step_end", {"lr": 1e-300, "loss": -0.0}),
    ]
    assert bits(engine.recorded.stream()) == bits(expected)
    assert (engine.recorded.steps, engine.recorded.epochs, len(engine.recorded)) == (3, 1, 4)
    assert engine.recorded.series("lr") == ([1, 3], [0.5, 1e-300])


def test_a_call_that_raises_records_nothing():
    """A refused metric, a missing one, a guard that raises: state_dict() (recording included) is unchanged."""

    def boom(ctx):
        raise RuntimeError("no")

    c = Curriculum(
        [Phase("a"), Phase("b")],
        [Transition("a", "b", [boom], when=Point.STEP_END), Transition("a", "b", [MetricBelow("val", 1.0)])],
    )
    engine = CurriculumEngine(c, record_metrics=True)
    engine.start()
    before = engine.state_dict()
    for call in (lambda: engine.step_end(loss="x"), lambda: engine.step_end(loss=1.0), lambda: engine.epoch_end()):
        with pytest.raises(CurriculumError):
            call()
        assert engine.state_dict() == before and len(engine.recorded) == 0


def test_replaying_the_recorded_stream_reproduces_the_run():
    """engine.replay on the recorded stream takes the same transitions at the same steps: no departure."""
    engine = CurriculumEngine(curriculum(), record_metrics=True)
    engine.start()
    run(engine, 5)
    assert [r.global_step for r in engine.history][1:]  # the run moved
    result = replay(curriculum(), engine.recorded.stream(), recorded=engine.history)
    assert result.departure is None
    assert [r.comparable() for r in result.history] == [r.comparable() for r in engine.history]


def test_snapshot_json_restore_continue_equals_uninterrupted():
    """Saved mid-run, restored into a fresh engine and continued: the same recording as never interrupted."""
    rng = random.Random(1)
    losses = [rng.random() for _ in range(3000)]

    def fresh():
        return CurriculumEngine(curriculum(window=5000), record_metrics=True)

    whole = fresh()
    whole.start()
    for x in losses:
        whole.step_end(loss=x)
    first = fresh()
    first.start()
    for x in losses[:1234]:
        first.step_end(loss=x)
    saved = json.loads(json.dumps(first.state_dict()))
    resumed = fresh()
    resumed.load_state_dict(saved)
    assert resumed.state_dict() == saved
    for x in losses[1234:]:
        resumed.step_end(loss=x)
    assert resumed.state_dict()["recorded"] == whole.state_dict()["recorded"]
    assert bits(resumed.recorded.stream()) == bits(whole.recorded.stream())


def test_states_without_a_recording_still_load():
    """An older state (no 'recorded') loads; a recording engine records from the restored clock on."""
    engine = CurriculumEngine(curriculum())
    engine.start()
    run(engine, 1)
    old = engine.state_dict()
    del old["recorded"]
    restored = CurriculumEngine(curriculum(), record_metrics=True)
    restored.load_state_dict(old)
    assert (restored.recorded.start_step, restored.recorded.start_epoch, len(restored.recorded)) == (50, 1, 0)
    restored.step_end(loss=1.0)
    assert restored.state_dict()["recorded"]["start_step"] == 50


def test_a_recording_that_does_not_fit_the_clock_or_is_garbled_is_refused_whole():
    """A log ending elsewhere than the clock, or malformed, is a CurriculumError and the engine is untouched."""
    engine = CurriculumEngine(curriculum(), record_metrics=True)
    engine.start()
    run(engine, 1)
    good = engine.state_dict()
    short = json.loads(json.dumps(good))
    short["clock"]["global_step"] += 1
    short["clock"]["step_in_epoch"] += 1
    garbled = json.loads(json.dumps(good))
    garbled["recorded"]["columns"][0][2] = "not base64!"
    for bad, words in ((short, "recorded metrics end at step 50"), (garbled, "holds 11 characters, not 50 values")):
        fresh = CurriculumEngine(curriculum(), record_metrics=True)
        with pytest.raises(CurriculumError, match=words):
            fresh.load_state_dict(bad)
        fresh.start()  # still a fresh engine
        assert len(fresh.recorded) == 0
    lenient = CurriculumEngine(curriculum(), record_metrics=True)
    lenient.load_state_dict(short, allow_fingerprint_mismatch=True)
    assert (lenient.recorded.start_step, len(lenient.recorded)) == (51, 0)


def test_an_engine_that_does_not_record_drops_a_restored_recording_and_says_so(caplog):
    engine = CurriculumEngine(curriculum(), record_metrics=True)
    engine.start()
    run(engine, 1)
    plain = CurriculumEngine(curriculum())
    with caplog.at_level(logging.WARNING, logger="engine.runtime"):
        plain.load_state_dict(engine.state_dict())
    assert plain.recorded is None and "record_metrics=True" in caplog.text


def test_metric_log_round_trips_through_its_state_dict():
    """Calls of several layouts, more than are kept aside before going into the columns: the same stream back."""
    rng = random.Random(3)
    log, fed = MetricLog(), []
    layouts = [("step_end", ("loss",)), ("step_end", ("lr", "loss")), ("epoch_end", ("val", "acc")), ("epoch_end", ())]
    for _ in range(2500):
        point, names = layouts[rng.randrange(4)] if rng.random() < 0.2 else layouts[0]
        call = (point, {name: rng.random() for name in names})
        log.append(*call)
        fed.append(call)
    again = MetricLog.from_state_dict(json.loads(json.dumps(log.state_dict())))
    assert bits(log.stream()) == bits(fed) and bits(again.stream()) == bits(fed)
    assert again.state_dict() == log.state_dict() and len(again) == 2500
    small = MetricLog()
    for k in range(10):
        small.append("step_end", {"loss": k / 3})
        if k % 4 == 3:
            small.append("epoch_end", {"val": -k / 7})
    saved = small.state_dict()
    assert base64.b64decode(saved["calls"]) == bytes([0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0])
    assert base64.b64decode(saved["columns"][0][2]) == np.arange(10, dtype="<f8").__truediv__(3).tobytes()


def test_metric_log_of_more_than_256_layouts_round_trips():
    """Past 256 layouts a call's layout takes four bytes: every call still comes back with its own metrics."""
    log = MetricLog()
    fed = [("step_end", {"loss": k / 7, f"m{k}": -k / 3}) for k in range(300)] + [("step_end", {"loss": 0.5})]
    for call in fed:
        log.append(*call)
    saved = json.loads(json.dumps(log.state_dict()))
    assert len(base64.b64decode(saved["calls"])) == 4 * 301
    assert bits(MetricLog.from_state_dict(saved).stream()) == bits(fed)


def small_state() -> dict:
    log = MetricLog()
    for k in range(6):
        log.append("step_end", {"loss": k / 3})
    return log.state_dict()


@pytest.mark.parametrize(
    "change, words",
    [
        ({"start_step": True}, "expected int @ recorded.start_step"),
        ({"start_epoch": -1}, "'start_epoch' must be >= 0: -1"),
        ({"format": 1, "calls": [[0, 10**9]]}, "format 1 were written by curriculum-engine 0.1.0"),
        ({"layouts": [["step_end", ["loss"]], ["step_end", ["loss"]]]}, "repeats a layout"),
        ({"calls": "BQUF"}, "a call names layout 5"),
        ({"columns": []}, "not one per recorded metric"),
        ({"columns": [["step_end", "loss", "AAAA" * 10**5]]}, "holds 400000 characters, not 6 values"),
        ({"layouts": [[["step_end"] * 30] * 30]}, "recorded.layouts[0]"),
    ],
)
def test_a_malformed_or_earlier_recording_is_one_error_before_anything_is_allocated(change, words):
    with pytest.raises(CurriculumError, match=re.escape(words)):
        MetricLog.from_state_dict({**small_state(), **change})


def test_metric_log_load_opens_a_saved_recording_with_its_history(tmp_path):
    """MetricLog.load reads a state file without the curriculum's objects: its stream and transitions."""
    engine = CurriculumEngine(curriculum(), record_metrics=True)
    engine.start()
    run(engine, 3)
    torch.save({"engine": engine.state_dict(), "model": {}}, tmp_path / "run.pt")
    log = MetricLog.load(tmp_path / "run.pt")
    assert bits(log.stream()) == bits(engine.recorded.stream())
    assert [r.comparable() for r in log.history] == [r.comparable() for r in engine.history]
    plain = CurriculumEngine(curriculum())
    plain.start()
    (tmp_path / "plain.json").write_text(json.dumps(plain.state_dict()))
    with pytest.raises(CurriculumError, match="without recorded metrics"):
        MetricLog.load(tmp_path / "plain.json")


# -- the plot ----------------------------------------------------------------------------------------


def test_plot_run_from_a_saved_state(tmp_path):
    """A PNG from an engine's JSON state; an engine that records nothing is one error, and no file."""
    engine = CurriculumEngine(curriculum(), record_metrics=True)
    engine.start()
    run(engine, 4)
    out = plot_run(json.loads(json.dumps(engine.state_dict())), tmp_path / "saved.png", title="test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(CurriculumError, match="record_metrics=True"):
        plot_run(CurriculumEngine(curriculum()), tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def test_plot_run_gives_the_file_the_mode_a_plain_open_gives(tmp_path):
    """The plot is created 0666 less the umask, readable by others as any file the user writes, not 0600."""
    engine = CurriculumEngine(curriculum(), record_metrics=True)
    engine.start()
    run(engine, 1)
    old = os.umask(0o022)
    try:
        out = plot_run(engine, tmp_path / "run.png")
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o644
