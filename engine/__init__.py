"""A declarative state-machine curriculum engine for PyTorch training loops.

Declare phases and guarded transitions as a :class:`Curriculum`, drive it from your loop with a
:class:`CurriculumEngine` (``start``, ``step_end``, ``epoch_end``), and read ``engine.history``
to see why and when each transition fired and which guard decided it. :func:`replay` feeds a run's
recorded metrics to another rule without training again. See :mod:`engine.core` for the guard and
action protocols.
"""

from engine.core import Clock, ClockView, Context, Curriculum, CurriculumError, Phase, Point, Transition, describe
from engine.history import ActionEffect, Decision, GuardEvidence, HeldSince, History, Record
from engine.runtime import CurriculumEngine
from engine.replay import Departure, Replay, replay

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
    "HeldSince",
    "Decision",
    "History",
    "replay",
    "Replay",
    "Departure",
    "describe",
]
