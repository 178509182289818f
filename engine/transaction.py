"""A transition in progress: what it has changed, and how to put the engine back if it fails.

One :class:`Transaction` travels through the ``transitions`` event as ``event.kwargs["txn"]``:
the engine's ``_begin`` callback opens it (the phase, clock, history and pending-check lengths
before the transition) and starts the :class:`~engine.history.Record`, the action callbacks add
their effects to the record, ``_finish`` notes the guard states it is about to reset. If any of
them raises, the caller rolls the transaction back.
"""

from __future__ import annotations

from typing import Any, Callable

import attrs

from engine.core import Clock
from engine.history import History, Record
from engine.plan import undo_all
from engine.state import PendingCheck

__all__ = ["Transaction"]


@attrs.define
class Transaction:
    """One transition's changes. ``index`` is its transition (-1: a manual one, by ``force``)."""

    index: int = -1
    record: Record | None = None
    phase: str | None = None  # the phase before; None until opened
    clock: Clock | None = None
    n_history: int = 0
    n_pending: int = 0
    guard_states: list[tuple[Callable[[Any], None], Any]] = attrs.field(factory=list)  # (restore, token)

    @property
    def opened(self) -> bool:
        return self.phase is not None

    def open(self, phase: str, clock: Clock, history: History, pending: list[PendingCheck]) -> None:
        """Note what the transition may change: the phase, clock, history and pending checks now."""
        self.phase = phase
        self.clock = attrs.evolve(clock)
        self.n_history = len(history)
        self.n_pending = len(pending)

    def roll_back(
        self, set_phase: Callable[[str], None], clock: Clock, history: History, pending: list[PendingCheck]
    ) -> None:
        """Put the phase, clock, history, pending checks and guards back as :meth:`open` found them."""
        assert self.phase is not None and self.clock is not None
        set_phase(self.phase)
        for field in attrs.fields(Clock):
            setattr(clock, field.name, getattr(self.clock, field.name))
        history.truncate(self.n_history)
        del pending[self.n_pending :]
        undo_all(self.guard_states)
