"""A declarative state-machine curriculum engine for PyTorch training loops.

Declare phases and guarded transitions as a :class:`Curriculum`, drive it from your loop with a
:class:`CurriculumEngine` (``bind``, ``start``, ``step_end``, ``epoch_end``), read the clock as
``engine.clock`` and see why and when each transition fired in ``engine.history``. See
:mod:`engine.core` for the guard and action protocols and docs/semantics.md for the contract.
"""

from engine.core import Clock, ClockView, Context, Curriculum, CurriculumError, Params, Phase, Point, Transition, describe
from engine.history import ActionEffect, GuardEvidence, History, HistoryView, Record
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
    "History",
    "HistoryView",
    "describe",
]
