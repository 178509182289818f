"""A transition in progress: the machine callbacks that make it, and how to put the engine back if it fails."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from functools import partial
from typing import Any, Callable, Iterator

import attrs
from transitions import Machine, State

from engine import errors, health
from engine.core import Clock, describe
from engine.decide import Decider
from engine.history import ActionEffect, GuardEvidence, History, Record, jsonable
from engine.plan import PhasePlan, Taken, put_back, take_all
from engine.state import PendingCheck

__all__ = ["Before", "Transaction", "Firing"]

logger = logging.getLogger("engine.runtime")
_TRANSITIONS_LOG = logging.getLogger("transitions")


@contextmanager
def _quiet_transitions() -> Iterator[None]:
    """transitions logs each callback it runs at INFO (~50 us each): quiet while the engine fires, when
    INFO is on and the user did not set that logger's level, then put back. (Setting a level clears every
    logger's cache, which costs more than the firing itself where INFO is off, as by default.)"""
    if _TRANSITIONS_LOG.level != logging.NOTSET or not _TRANSITIONS_LOG.isEnabledFor(logging.INFO):
        yield
        return
    _TRANSITIONS_LOG.setLevel(logging.WARNING)
    try:
        yield
    finally:
        _TRANSITIONS_LOG.setLevel(logging.NOTSET)


@attrs.frozen
class Before:
    """What a transition may change, as it was before."""

    phase: str
    clock: Clock
    n_history: int
    n_pending: int
    held_since: dict  # the decider's (replaced when a phase is entered, never mutated after)


@attrs.define
class Transaction:
    """One transition's changes. ``index`` is its transition (-1: a manual one, by ``force``)."""

    index: int = -1
    reason: str | None = None  # a manual transition's
    record: Record | None = None
    before: Before | None = None  # set when the machine begins it (Firing._begin)
    guard_states: list[Taken] = attrs.field(factory=list)


class _MachineModel:
    """The object whose ``state`` (the current phase's name) the machine drives (slotted attrs cannot be)."""

    state: str


class Firing:
    """The ``transitions.Machine`` that holds the phase, entered only when a transition fires (the
    :class:`~engine.decide.Decider` decides first): one trigger ``_fire_<i>`` per transition, one
    ``_force_<phase>`` per manual move. It runs :meth:`_begin`, the transition's actions, :meth:`_enter_clock`,
    the destination's ``on_enter`` actions and :meth:`_finish`, with the :class:`Transaction` in
    ``event.kwargs["txn"]``; if one raises, :meth:`_trigger` rolls the transaction back."""

    def __init__(self, decider: Decider, history: History, pending: list[PendingCheck]) -> None:
        self.decider, self.history, self.pending = decider, history, pending
        self.curriculum, self.plan, self.ctx, self.clock = decider.curriculum, decider.plan, decider.ctx, decider.clock
        curriculum = self.curriculum
        self.here: PhasePlan = self.plan.phases[curriculum.initial_name]  # the current phase's plan
        self._model = _MachineModel()
        self._machine = Machine(
            model=self._model,
            states=[State(p.name, on_enter=[partial(self._act, a) for a in p.on_enter]) for p in curriculum.phases],
            initial=curriculum.initial_name,
            send_event=True,
            auto_transitions=False,
            ignore_invalid_triggers=True,
        )
        for i, tr in enumerate(curriculum.transitions):
            before = [self._begin, *(partial(self._act, a) for a in tr.actions), self._enter_clock]
            self._machine.add_transition(f"_fire_{i}", tr.source, tr.dest, before=before, after=self._finish)
        for p in curriculum.phases:
            before = [self._begin, self._enter_clock]
            self._machine.add_transition(f"_force_{p.name}", "*", p.name, before=before, after=self._finish)
        # The triggers on the model, looked up once: transition i's, and each phase's manual move.
        count = len(curriculum.transitions)
        self._fires: list[Callable[..., bool]] = [getattr(self._model, f"_fire_{i}") for i in range(count)]
        self._forces = {p.name: getattr(self._model, f"_force_{p.name}") for p in curriculum.phases}

    @property
    def phase(self) -> str:
        return self._model.state

    def set_phase(self, name: str, clock: Clock | None = None) -> None:
        """Set the phase (and its plan), and the clock if given, outside a transition (start, restore, rollback)."""
        self._machine.set_state(name, model=self._model)
        self.here = self.plan.phases[name]
        for field in attrs.fields(Clock) if clock is not None else ():
            setattr(self.clock, field.name, getattr(clock, field.name))

    def start(self, record: Record) -> None:
        """The start into ``record.dest``: its ``on_enter`` actions (effects into ``record``) and the
        resets of its guards, then the record; if one raises, the resets are undone."""
        name = record.dest
        entered = self.plan.phases[name]
        taken = take_all(entered.undo_reset)
        try:
            for action in self.curriculum.phase(name).on_enter:
                try:
                    effect = jsonable(action(self.ctx) or {})
                except Exception as exc:
                    raise errors.start_action_failed(action, name, exc, record.actions) from exc
                record.actions.append(ActionEffect(describe(action), effect))
            for reset in entered.resetters:
                self.reset(reset, "start()")
        except BaseException:
            put_back(taken)
            raise
        self.set_phase(name)
        self.history.append(record)
        health.owe(self.pending, self.plan.verifies, self.curriculum, len(self.history) - 1, -1, record)

    def evaluate(self, indexes: tuple[int, ...]) -> Record | None:
        """Fire the first of the transitions ``indexes`` whose guards all hold; None when none does."""
        decider = self.decider
        held_since = dict(decider.held_since)  # the decider replaces entries, never mutates them
        try:
            index = decider.first(indexes)
            return None if index is None else self._trigger(self._fires[index], Transaction(index))
        except BaseException:
            decider.held_since = held_since
            raise
        finally:
            self.ctx.transition = None

    def force(self, dest: str, reason: str) -> Record:
        return self._trigger(self._forces[dest], Transaction(-1, reason))

    def _trigger(self, trigger: Callable[..., bool], txn: Transaction) -> Record:
        try:
            with _quiet_transitions():
                trigger(txn=txn)
        except BaseException:
            self._roll_back(txn)
            raise
        finally:
            self.ctx.transition = None
            self.here = self.plan.phases[self._model.state]  # the machine moved it, or the rollback
        return self.history[-1]

    def _roll_back(self, txn: Transaction) -> None:
        """Put the phase, clock, history, pending checks, held_since and guards back as they were before ``txn``."""
        before = txn.before
        if before is None:  # it failed before it opened
            return
        self.set_phase(before.phase, before.clock)
        self.history.truncate(before.n_history)
        del self.pending[before.n_pending :]
        self.decider.held_since = before.held_since
        put_back(txn.guard_states)

    def reset(self, reset: Callable[[], None], call: str | None = None) -> None:
        """A guard's ``reset()``; a failure names the guard and ``call`` (default: the point, or force())."""
        try:
            reset()
        except Exception as exc:
            call = call or errors.call_at(self.ctx.point)
            raise errors.hook_failed(reset, "reset", exc, self.plan.where, call, self.clock.global_step) from exc

    # -- the machine's callbacks: the Transaction travels in the event as event.kwargs["txn"] --------

    def _begin(self, event: Any) -> None:
        clock, txn = self.clock, event.kwargs["txn"]
        state, held_since = self._model.state, self.decider.held_since
        txn.before = Before(state, attrs.evolve(clock), len(self.history), len(self.pending), held_since)
        guards, point, decision = [], "manual", None
        self.ctx.transition = None
        if txn.index >= 0:
            self.ctx.transition = tr = self.curriculum.transitions[txn.index]
            for g, evidence in self.plan.transitions[txn.index].evidence:
                try:
                    found = jsonable(evidence(self.ctx) or {}) if evidence is not None else {"holds": True}
                except Exception as exc:
                    who = f"guard {describe(g)} of transition {tr.label} raised in evidence()"
                    raise errors.failed(who, exc, tr.when.value, clock.global_step) from exc
                guards.append(GuardEvidence(describe(g), found))
            point, decision = tr.when.value, self.decider.decision(txn.index)
        source, dest, wall_time = event.transition.source, event.transition.dest, time.time()
        txn.record = Record(source, dest, clock.global_step, clock.epoch, clock.step_in_epoch, point, wall_time, guards)
        txn.record.reason, txn.record.decision = txn.reason, decision

    def _act(self, action: Any, event: Any) -> None:
        txn = event.kwargs["txn"]
        record = txn.record
        try:
            effect = jsonable(action(self.ctx) or {})
        except Exception as exc:
            if txn.index >= 0:
                where = f"transition {self.curriculum.transitions[txn.index].label}"
            else:
                where = f"the manual transition {record.source} -> {record.dest}"
            text, call = f"action {describe(action)} of {where} raised", errors.call_at(self.ctx.point)
            raise errors.failed(text, exc, call, self.clock.global_step, record.actions) from exc
        record.actions.append(ActionEffect(describe(action), effect))

    def _enter_clock(self, _event: Any) -> None:
        self.clock.steps_in_phase = 0
        self.clock.epochs_in_phase = 0

    def _finish(self, event: Any) -> None:
        txn = event.kwargs["txn"]
        record = txn.record
        self.decider.held_since = {}  # a phase was entered: its transitions' guards start afresh
        entered = self.plan.phases[record.dest]
        # Resets are the only change to guards a transition makes: noted first, undone on a rollback.
        txn.guard_states.extend(take_all(entered.undo_reset))
        for reset in entered.resetters:
            self.reset(reset)
        self.history.append(record)
        health.owe(self.pending, self.plan.verifies, self.curriculum, len(self.history) - 1, txn.index, record)
        logger.info(
            "transition %s -> %s at step %d (epoch %d)", record.source, record.dest, record.global_step, record.epoch
        )
