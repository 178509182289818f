"""A transition in progress: what it has changed, and how to put the engine back if it fails.

One :class:`Transaction` travels through the ``transitions`` event as ``event.kwargs["txn"]``:
the engine's ``begin`` callback opens it (:class:`Before`: the phase, clock, history and
pending-check lengths before the transition) and starts the :class:`~engine.history.Record`, the
action callbacks add their effects to the record, ``finish`` notes the guard states it is about to
reset. If any of them raises, the caller rolls the transaction back.
"""

from __future__ import annotations

from typing import Callable

import attrs

from engine.core import Clock
from engine.history import History, Record
from engine.plan import Taken, put_back
from engine.state import PendingCheck

__all__ = ["Before", "Transaction"]


@attrs.frozen
class Before:
    """What a transition may change, as it was before."""

    phase: str
    clock: Clock
    n_history: int
    n_pending: int


@attrs.define
class Transaction:
    """One transition's changes. ``index`` is its transition (-1: a manual one, by ``force``)."""

    index: int = -1
    reason: str | None = None  # a manual transition's
    record: Record | None = None
    before: Before | None = None  # None until opened
    guard_states: list[Taken] = attrs.field(factory=list)

    def open(self, phase: str, clock: Clock, history: History, pending: list[PendingCheck]) -> None:
        """Note what the transition may change: the phase, clock, history and pending checks now."""
        self.before = Before(phase, attrs.evolve(clock), len(history), len(pending))

    def roll_back(
        self, set_phase: Callable[[str], None], clock: Clock, history: History, pending: list[PendingCheck]
    ) -> None:
        """Put the phase, clock, history, pending checks and guards back as :meth:`open` found them."""
        before = self.before
        if before is None:
            return
        set_phase(before.phase)
        for field in attrs.fields(Clock):
            setattr(clock, field.name, getattr(before.clock, field.name))
        history.truncate(before.n_history)
        del pending[before.n_pending :]
        put_back(self.guard_states)
