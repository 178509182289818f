"""Transition records and their exports (engine.history)."""

import csv
import io
import json
import math

import numpy as np

from engine import Curriculum, CurriculumEngine, History, Phase, Transition
from engine.history import jsonable
from tests.utils import CountBelow, Log


def fired_engine():
    calls = []
    cur = Curriculum(
        [Phase("a"), Phase("b")],
        [Transition("a", "b", [CountBelow(0.5, need=2)], [Log("restart", calls)])],
    )
    eng = CurriculumEngine(cur)
    eng.start()
    for loss in (0.9, 0.4, 0.3):
        eng.step_end(loss=loss)
    eng.epoch_end(val_bpb=2.5)
    return eng


def test_record_holds_when_why_and_what():
    """A record holds source, dest, step, epoch, wall time, each guard's evidence and each action's effect."""
    eng = fired_engine()
    start, r = eng.history
    assert (start.source, start.dest, start.point) == (None, "a", "start")
    assert (r.source, r.dest, r.global_step, r.epoch, r.point) == ("a", "b", 3, 1, "epoch_end")
    assert r.wall_time > 1e9
    assert r.guards[0].guard == "CountBelow(0.5, need=2)" and r.guards[0].evidence == {"count": 2, "need": 2}
    assert r.actions[0].action == "Log('restart')" and r.actions[0].effect == {"name": "restart", "step": 3}
    assert r.warnings == []


def test_json_export_round_trips():
    """History exports to strict JSON and reads back equal."""
    eng = fired_engine()
    text = eng.history.to_json()
    assert list(History.from_json(text)) == list(eng.history)
    assert json.loads(text)[1]["dest"] == "b" and json.loads(text)[0]["source"] is None


def test_csv_export_has_one_row_per_transition():
    """CSV export: a header and one row per transition, evidence as JSON in its cell."""
    eng = fired_engine()
    rows = list(csv.DictReader(io.StringIO(eng.history.to_csv())))
    assert len(rows) == 2 and rows[0]["point"] == "start" and rows[1]["source"] == "a" and rows[1]["global_step"] == "3"
    assert json.loads(rows[1]["guards"])[0]["evidence"]["count"] == 2


def test_table_is_readable():
    """The table names the move, the step, the evidence and the effects."""
    text = fired_engine().history.table()
    assert "a -> b  at step 3 (epoch 1, epoch_end)" in text
    assert "guard  CountBelow(0.5, need=2): count=2, need=2" in text
    assert "action Log('restart'): name=restart, step=3" in text
    assert History().table() == "no transitions"


def test_jsonable_handles_numpy_and_non_finite():
    """Evidence from numpy scalars and infinities becomes strict JSON."""
    out = jsonable({"a": np.float32(1.5), "b": math.inf, "c": [np.int64(2)], "d": (1, None)})
    assert out == {"a": 1.5, "b": "inf", "c": [2], "d": [1, None]}
    json.dumps(out, allow_nan=False)
