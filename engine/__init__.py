"""A declarative state-machine curriculum engine for PyTorch training loops.

Declare phases and guarded transitions as a :class:`Curriculum`, drive it from your loop with a
:class:`CurriculumEngine` (``start``, ``step_end``, ``epoch_end``), and read ``engine.history``
to see why and when each transition fired. See :mod:`engine.core` for the guard and action
protocols.
"""

from engine.core import Clock, ClockView, Context, Curriculum, CurriculumError, Phase, Point, Transition, describe
from engine.history import ActionEffect, GuardEvidence, History, Record
from engine.runtime import CurriculumEngine

__all__ = [
    "CurriculumError",
    "Point",
    "Clock",
    "ClockView",
    "Context",
    "Phase",
    "Transition",
    "Curriculum",
    "CurriculumEngine",
    "Record",
    "GuardEvidence",
    "ActionEffect",
    "History",
    "describe",
]
