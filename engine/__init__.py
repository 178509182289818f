"""A declarative state-machine curriculum engine for PyTorch training loops: declare phases and guarded
transitions as a :class:`Curriculum`, drive it from your loop with a :class:`CurriculumEngine`. See
docs/semantics.md for the contract, :mod:`engine.protocols` for the guard and action protocols.
"""

from engine.core import (
    Clock,
    ClockView,
    Context,
    Curriculum,
    CurriculumError,
    Params,
    Phase,
    Point,
    Transition,
    describe,
)
from engine.datafile import (
    CurriculumFileError,
    Registry,
    curriculum_from_dict,
    curriculum_to_dict,
    load_curriculum,
    register_action,
    register_guard,
    save_curriculum,
    to_toml,
)
from engine.grid import GridRow, GridTable, replay_grid
from engine.history import ActionEffect, Decision, GuardEvidence, HeldSince, History, HistoryView, Record
from engine.recording import MetricLog
from engine.replay import Departure, Replay, replay
from engine.runtime import CurriculumEngine

__all__ = [
    "CurriculumError",
    "Point",
    "Clock",
    "ClockView",
    "Context",
    "Phase",
    "Params",
    "Transition",
    "Curriculum",
    "CurriculumEngine",
    "Record",
    "GuardEvidence",
    "ActionEffect",
    "HeldSince",
    "Decision",
    "History",
    "HistoryView",
    "replay",
    "Replay",
    "Departure",
    "MetricLog",
    "replay_grid",
    "GridTable",
    "GridRow",
    "describe",
    "load_curriculum",
    "save_curriculum",
    "to_toml",
    "curriculum_to_dict",
    "curriculum_from_dict",
    "register_guard",
    "register_action",
    "Registry",
    "CurriculumFileError",
]
