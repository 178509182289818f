"""The runtime: a ``transitions.Machine`` driven by the training loop's clock.

The loop's contract, per optimizer step: ``optimizer.step()``, ``schedule.step()``,
``engine.step_end(loss=..., **metrics)``; after the last step of an epoch,
``engine.epoch_end(**metrics)``. A fresh run calls ``engine.start()`` once before the first step;
a resumed run calls ``engine.load_state_dict(...)`` instead.

:class:`CurriculumEngine` is the facade over the parts, each in its own module: what each call
does per phase and point (:mod:`engine.plan`, with the members of :mod:`engine.protocols`
resolved once), which transition fires (:mod:`engine.decide`), a transition in progress and its
rollback (:mod:`engine.transaction`), the wording of failures (:mod:`engine.errors`), actions'
health checks (:mod:`engine.health`), a saved state checked before it is loaded
(:mod:`engine.restore`), the snapshot (:mod:`engine.state`) and the records (:mod:`engine.history`).
"""

from __future__ import annotations

import json
import logging
import numbers
import time
from functools import partial
from typing import Any, Callable

import attrs
from transitions import Machine, State

from engine import errors, health
from engine.core import Clock, ClockView, Context, Curriculum, CurriculumError, Phase, Point, describe
from engine.decide import Decider
from engine.diagram import to_dot, to_mermaid
from engine.history import ActionEffect, GuardEvidence, History, Record, jsonable
from engine.metrics import check_metrics, to_metric
from engine.plan import Plan, put_back, take_all
from engine.recording import MetricLog
from engine.restore import check_state, load_guards
from engine.state import SCHEMA_VERSION, EngineState, PendingCheck, to_primitives
from engine.transaction import Transaction

__all__ = ["CurriculumEngine"]

logger = logging.getLogger(__name__)

_STEP_END, _EPOCH_END = Point.STEP_END, Point.EPOCH_END  # module constants: the per-step path reads them
_NO_LOSS: Any = object()  # step_end() called without loss=
_RESERVED = frozenset(attrs.fields_dict(Context)) | {"metric"}  # Context attributes an object would shadow


class _MachineModel:
    """The object whose ``state`` (the current phase's name) the machine drives (slotted attrs cannot be)."""

    state: str


def _check_names(objects: dict[str, Any], where: str) -> None:
    for name in objects:
        if name in _RESERVED or not name.isidentifier() or name.startswith("_"):
            why = f"it would hide Context.{name}" if name in _RESERVED else "expected a public identifier"
            raise CurriculumError(
                f"{where}: cannot register an object named {name!r}: {why}; "
                "choose another name, e.g. model=, optimizer=, schedule="
            )


class CurriculumEngine:
    """Runs a :class:`Curriculum` against a training loop.

    ``objects`` are what guards and actions use, reachable on the context as ``ctx.<name>``
    (``optimizer=...``, ``model=...``, ``schedule=...``); they may also be registered later with
    :meth:`bind`. Every object a guard or action ``requires`` must be registered by :meth:`start`
    or :meth:`load_state_dict`, which then call each guard's and action's ``check(ctx)``.

    Every call is atomic: a call that raises leaves ``state_dict()`` as it was before the call
    (docs/semantics.md, "Atomicity" and "Errors"). A ``transitions.Machine`` holds the phase and
    runs a firing transition's callbacks in order: ``_begin`` (opens the
    :class:`~engine.transaction.Transaction`, starts the record), the transition's actions,
    ``_enter_clock``, the destination's ``on_enter`` actions, ``_finish`` (resets the destination's
    guards, appends the record, owes the health checks). The engine decides first
    (:class:`~engine.decide.Decider`) and enters the machine only when a transition fires.
    """

    def __init__(self, curriculum: Curriculum, *, record_metrics: bool = False, **objects: Any) -> None:
        if not isinstance(curriculum, Curriculum):
            raise CurriculumError(
                f"CurriculumEngine needs a Curriculum, got {type(curriculum).__name__}: {curriculum!r}"
            )
        _check_names(objects, "CurriculumEngine")
        if not isinstance(record_metrics, bool):
            raise CurriculumError(f"CurriculumEngine(record_metrics=...) must be True or False, got {record_metrics!r}")
        self.recorded: MetricLog | None = MetricLog() if record_metrics else None  # engine/recording.py
        self.curriculum = curriculum
        self.objects = dict(objects)
        self._clock = Clock()
        self._clock_view = ClockView(self._clock)
        self._history = History()
        self.ctx = Context(clock=self._clock_view, objects=self.objects, history=self._history.view())
        self._pending: list[PendingCheck] = []
        self._started = False
        self._unchecked = {_STEP_END: True, _EPOCH_END: True}  # has this run checked the metrics there yet?
        self._fingerprint, self._spec = curriculum.fingerprint(), curriculum.spec()
        self._plan = Plan.build(curriculum)
        self._decider = Decider(curriculum, self._plan, self.ctx, self._clock)
        self._here = self._plan.phases[curriculum.initial_name]  # the current phase's plan (set with the phase)
        self._phases = {p.name: p for p in curriculum.phases}
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
            actions = [partial(self._act, a) for a in tr.actions]
            self._machine.add_transition(
                f"_fire_{i}", tr.source, tr.dest, before=[self._begin, *actions, self._enter_clock], after=self._finish
            )
        for p in curriculum.phases:
            self._machine.add_transition(
                f"_force_{p.name}", "*", p.name, before=[self._begin, self._enter_clock], after=self._finish
            )
        # The machine's triggers on the model, looked up once: transition i's, and each phase's manual move.
        count = len(curriculum.transitions)
        self._fires: list[Callable[..., bool]] = [getattr(self._model, f"_fire_{i}") for i in range(count)]
        self._forces = {p.name: getattr(self._model, f"_force_{p.name}") for p in curriculum.phases}

    # -- registration ----------------------------------------------------------------------------

    def bind(self, **objects: Any) -> "CurriculumEngine":
        """Register (or replace) objects that guards and actions reach as ``ctx.<name>``; returns the engine.

        Call it before :meth:`start` or :meth:`load_state_dict`; binding later replaces the object
        for the calls that follow (e.g. an optimizer rebuilt by a framework), not part of ``state_dict()``.
        """
        _check_names(objects, "engine.bind")
        self.objects.update(objects)
        return self

    def _check_requirements(self, call: str) -> None:
        """Every object a guard or action ``requires`` is registered."""
        for name, users in self.curriculum.requirements().items():
            if name not in self.objects:
                raise CurriculumError(
                    f"{', '.join(users)} requires a registered object {name!r}, which was not registered "
                    f"before {call} (registered: {sorted(self.objects)}); pass it as "
                    f"CurriculumEngine(curriculum, {name}=...) or call engine.bind({name}=...) before {call}"
                )

    def _check_objects(self, call: str) -> None:
        """Every guard's and action's ``check(ctx)``, objects registered (nothing was changed yet)."""
        ctx = self.ctx
        ctx.metrics, ctx.point = {}, None
        try:
            for item in self._plan.checks:
                ctx.transition = self.curriculum.transitions[item.index] if item.index is not None else None
                try:
                    item.check(ctx)
                except Exception as exc:
                    raise errors.check_refused(item.what, item.obj, item.where, call, exc) from exc
        finally:
            ctx.transition = None

    # -- the loop's calls ---------------------------------------------------------------------

    def start(self, phase: str | None = None, *, global_step: int = 0, epoch: int = 0) -> Record:
        """Begin a run: run the initial phase's ``on_enter`` actions and record the start; returns its record.

        The start is the history's first record (``source`` None, ``point`` ``"start"``).
        ``phase``, ``global_step`` and ``epoch`` start elsewhere instead (a checkpoint with weights
        but no engine state). If an ``on_enter`` action raises, the engine stays unstarted.
        """
        if self._started:
            raise CurriculumError(
                "engine.start() was already called, or the engine was restored; call it once, on a fresh run only"
            )
        if phase is not None and phase not in self._phases:
            raise CurriculumError(f"start(phase={phase!r}): not a phase; expected one of {list(self._phases)}")
        for field, value in (("global_step", global_step), ("epoch", epoch)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise CurriculumError(f"start({field}=...) must be an int >= 0, got {value!r}")
        self._check_requirements("start()")
        self._check_objects("start()")
        name = phase if phase is not None else self.curriculum.initial_name
        entered = self._plan.phases[name]
        taken = take_all(entered.undo_reset)
        self.ctx.metrics, self.ctx.point, self.ctx.transition = {}, None, None
        self._clock.global_step, self._clock.epoch = int(global_step), int(epoch)
        record = Record(
            source=None,
            dest=name,
            global_step=int(global_step),
            epoch=int(epoch),
            step_in_epoch=0,
            point="start",
            wall_time=time.time(),
        )
        try:
            for action in self._phases[name].on_enter:
                try:
                    effect = jsonable(action(self.ctx) or {})
                except Exception as exc:
                    raise errors.start_action_failed(action, name, exc, record.actions) from exc
                record.actions.append(ActionEffect(describe(action), effect))
            for reset in entered.resetters:
                self._reset(reset)
        except BaseException:
            self._clock.global_step = self._clock.epoch = 0
            put_back(taken)
            raise
        self._set_phase(name)
        self._history.append(record)
        health.owe(self._pending, self._plan.verifies, self.curriculum, len(self._history) - 1, -1, record)
        self._started = True
        self._decider.held_since = {}
        self._unchecked = {_STEP_END: True, _EPOCH_END: True}
        if self.recorded is not None:  # a fresh stream from the start step
            self.recorded = MetricLog(start_step=int(global_step), start_epoch=int(epoch))
        logger.info("start in %s at step %d (epoch %d): %s", name, record.global_step, record.epoch, record.actions)
        return record

    def step_end(self, loss: float = _NO_LOSS, **metrics: float) -> Record | None:
        """After ``optimizer.step()`` and ``schedule.step()``: count the step, evaluate step-end transitions.

        Returns the record of the transition that fired, or None.
        """
        if not self._started:
            raise CurriculumError(
                "call engine.start() (fresh run) or engine.load_state_dict(...) (resume) before step_end"
            )
        # Validate first: nothing below changes before every input is known to be good.
        if type(loss) is not float:
            if loss is _NO_LOSS:
                raise errors.missing_loss(metrics)
            loss = to_metric("loss", loss, "step_end()")
        for name, value in metrics.items():
            if type(value) is not float:
                metrics[name] = to_metric(name, value, "step_end()")
        metrics["loss"] = loss
        return self._advance(_STEP_END, metrics)

    def epoch_end(self, **metrics: float) -> Record | None:
        """After the last step of an epoch: count the epoch, evaluate epoch-end transitions.

        Returns the record of the transition that fired, or None.
        """
        if not self._started:
            raise CurriculumError(
                "call engine.start() (fresh run) or engine.load_state_dict(...) (resume) before epoch_end"
            )
        for name, value in metrics.items():
            if type(value) is not float:
                metrics[name] = to_metric(name, value, "epoch_end()")
        return self._advance(_EPOCH_END, metrics)

    def _advance(self, point: Point, metrics: dict[str, float]) -> Record | None:
        """One evaluation point, all or nothing: check the metrics read here, count the point, run
        the health checks owed (step_end), feed the observers, evaluate the transitions."""
        at_step = point is _STEP_END
        plan = self._here.step_end if at_step else self._here.epoch_end
        if self._unchecked[point]:  # a run's first call here: every metric any transition reads here
            check_metrics(self._plan.all_needs[point], metrics, point, everywhere=True)
            self._unchecked[point] = False
        if plan.needs:
            check_metrics(plan.needs, metrics, point)
        ctx, clock = self.ctx, self._clock
        ctx.metrics, ctx.point = metrics, point
        taken = take_all(plan.undo) if plan.undo else None
        was = attrs.evolve(clock)
        if at_step:
            clock.global_step += 1
            clock.step_in_epoch += 1
            clock.steps_in_phase += 1
        else:
            clock.epoch += 1
            clock.epochs_in_phase += 1
            clock.step_in_epoch = 0
        owed = len(self._pending) if at_step else 0
        try:
            warned = (
                health.run(self._pending, self._plan.verifies, self.curriculum, self._history, ctx) if owed else None
            )
            for observe in plan.observers:
                try:
                    observe(ctx)
                except Exception as exc:
                    raise self._hook_failed(observe, "observe", exc) from exc
            record = self._evaluate(plan.transitions) if plan.transitions else None
        except BaseException:
            self._set_clock(was)
            if taken:
                put_back(taken)
            raise
        if warned is not None:
            health.commit(self._pending, owed, warned)
        if self.recorded is not None:  # the call succeeded and is committed
            self.recorded.append(point.value, metrics)
        return record

    def force(self, dest: str, reason: str) -> Record:
        """Move to ``dest`` by hand; recorded as a manual transition with ``reason``.

        The destination's ``on_enter`` actions run; if one raises, the engine stays where it was.
        """
        if dest not in self._phases:
            raise CurriculumError(f"force(): {dest!r} is not a phase; expected one of {list(self._phases)}")
        if not self._started:
            raise CurriculumError("call engine.start() or engine.load_state_dict(...) before force()")
        self.ctx.metrics, self.ctx.point = {}, None
        held_since = self._decider.held_since
        try:
            return self._fire(self._forces[dest], Transaction(-1, str(reason)))
        except BaseException:
            self._decider.held_since = held_since
            raise

    # -- what the loop and the user read ------------------------------------------------------

    @property
    def phase(self) -> Phase:
        """The current phase (its ``params`` are for the loop)."""
        return self._phases[self._model.state]

    @property
    def clock(self) -> ClockView:
        """A read-only view of the clock (see :class:`engine.ClockView`)."""
        return self._clock_view

    @property
    def history(self) -> History:
        return self._history

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def to_mermaid(self) -> str:
        return to_mermaid(self.curriculum, current=self._model.state)

    def to_dot(self) -> str:
        return to_dot(self.curriculum, current=self._model.state)

    # -- state ---------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """JSON-safe primitives: schema, fingerprint, phase, clock, guard accumulators, history, and the
        recorded metric stream (``recorded``, with ``record_metrics=True``; else None)."""
        state = EngineState(
            schema_version=SCHEMA_VERSION,
            fingerprint=self._fingerprint,
            phase=self._model.state,
            started=self._started,
            clock=attrs.evolve(self._clock),
            guards={key: caps.state_dict() for key, _guard, caps in self._plan.stateful if caps.state_dict},
            history=list(self._history),
            pending_checks=list(self._pending),
            held_since=self._decider.saved(),
            spec=self._spec,
            recorded=self.recorded.state_dict() if self.recorded is not None else None,
        )
        try:  # a round trip proves it JSON-safe and shares nothing with the live objects
            return json.loads(json.dumps(to_primitives(state), allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise CurriculumError(
                f"engine state is not JSON-safe ({exc}); every guard's state_dict() must return "
                "plain dicts, lists, str, int, finite float, bool or None"
            ) from None

    def load_state_dict(self, state: dict, *, allow_fingerprint_mismatch: bool = False) -> None:
        """Restore a snapshot into this (freshly built) engine, all or nothing; fires no callback.

        The registered objects, then the whole state (:func:`engine.restore.check_state`), then each
        ``check(ctx)``, then the guards' accumulators (:func:`engine.restore.load_guards`). A load
        that raises leaves the engine as it was. ``allow_fingerprint_mismatch=True`` leaves out the
        parts that do not match this curriculum instead of refusing them. To read a state without
        binding objects, see :func:`engine.saved.open_state`.
        """
        self._check_requirements("load_state_dict()")
        lenient = allow_fingerprint_mismatch
        restored = check_state(
            state, self.curriculum, self._plan, self._fingerprint, self._spec, lenient, record=self.recorded is not None
        )
        self._check_objects("load_state_dict()")
        snap = restored.state
        load_guards(self._plan, snap.guards, lenient)
        # Everything was checked and the guards are loaded: nothing below can fail.
        self._set_phase(snap.phase)
        self._set_clock(snap.clock)
        self._history = History(snap.history)
        self.ctx.history = self._history.view()
        self._pending = restored.pending
        self._started = snap.started
        self._decider.held_since = restored.held_since
        self._unchecked = {_STEP_END: True, _EPOCH_END: True}
        self.recorded = restored.recorded

    def _set_clock(self, clock: Clock) -> None:
        for field in attrs.fields(Clock):
            setattr(self._clock, field.name, getattr(clock, field.name))

    def _set_phase(self, name: str) -> None:
        """Set the phase outside a transition (start, restore, rollback), and its plan with it."""
        self._machine.set_state(name, model=self._model)
        self._here = self._plan.phases[name]

    # -- firing: deciding, then the machine's callbacks ------------------------------------------
    # A transition in progress travels in its event: event.kwargs["txn"] is the Transaction that
    # _begin opens (with the record being built, filled by _act, appended by _finish).

    def _evaluate(self, indexes: tuple[int, ...]) -> Record | None:
        """Fire the first of the transitions ``indexes`` whose guards all hold; None when none does."""
        decider = self._decider
        held_since = dict(decider.held_since)  # the decider replaces entries, never mutates them
        try:
            index = decider.first(indexes)
            return None if index is None else self._fire(self._fires[index], Transaction(index))
        except BaseException:
            decider.held_since = held_since
            raise
        finally:
            self.ctx.transition = None

    def _fire(self, trigger: Callable[..., bool], txn: Transaction) -> Record:
        """Call the machine's ``trigger``: it runs the callbacks; if one raises, roll ``txn`` back."""
        try:
            trigger(txn=txn)
        except BaseException:
            txn.roll_back(self._set_phase, self._clock, self._history, self._pending)
            raise
        finally:
            self.ctx.transition = None
            self._here = self._plan.phases[self._model.state]  # the machine moved it, or the rollback
        return self._history[-1]

    def _begin(self, event: Any) -> None:
        clock, txn = self._clock, event.kwargs["txn"]
        txn.open(self._model.state, clock, self._history, self._pending)
        guards, point, decision = [], "manual", None
        if txn.index >= 0:
            self.ctx.transition = tr = self.curriculum.transitions[txn.index]
            for g, evidence in self._plan.transitions[txn.index].evidence:
                try:
                    found = jsonable(evidence(self.ctx) or {}) if evidence is not None else {"holds": True}
                except Exception as exc:
                    who = f"guard {describe(g)} of transition {tr.label} raised in evidence()"
                    raise errors.failed(who, exc, tr.when.value, clock.global_step) from exc
                guards.append(GuardEvidence(describe(g), found))
            point, decision = tr.when.value, self._decider.decision(txn.index)
        else:
            self.ctx.transition = None
        txn.record = Record(
            source=event.transition.source,
            dest=event.transition.dest,
            global_step=clock.global_step,
            epoch=clock.epoch,
            step_in_epoch=clock.step_in_epoch,
            point=point,
            wall_time=time.time(),
            guards=guards,
            reason=txn.reason,
            decision=decision,
        )

    def _act(self, action: Any, event: Any) -> None:
        txn = event.kwargs["txn"]
        record = txn.record
        try:
            effect = jsonable(action(self.ctx) or {})
        except Exception as exc:
            where = self.curriculum.transitions[txn.index].label if txn.index >= 0 else None
            where = f"transition {where}" if where else f"the manual transition {record.source} -> {record.dest}"
            call = self.ctx.point.value if self.ctx.point is not None else "force()"
            text = f"action {describe(action)} of {where} raised"
            raise errors.failed(text, exc, call, self._clock.global_step, record.actions) from exc
        record.actions.append(ActionEffect(describe(action), effect))

    def _enter_clock(self, _event: Any) -> None:
        self._clock.steps_in_phase = 0
        self._clock.epochs_in_phase = 0

    def _finish(self, event: Any) -> None:
        txn = event.kwargs["txn"]
        record = txn.record
        self._decider.held_since = {}  # a phase was entered: its transitions' guards start afresh
        entered = self._plan.phases[record.dest]
        # Resets are the only change to guards a transition makes: noted first, undone on a rollback.
        txn.guard_states.extend(take_all(entered.undo_reset))
        for reset in entered.resetters:
            self._reset(reset)
        self._history.append(record)
        health.owe(self._pending, self._plan.verifies, self.curriculum, len(self._history) - 1, txn.index, record)
        logger.info(
            "transition %s -> %s at step %d (epoch %d)", record.source, record.dest, record.global_step, record.epoch
        )

    def _reset(self, reset: Callable[[], None]) -> None:
        try:
            reset()
        except Exception as exc:
            raise self._hook_failed(reset, "reset", exc) from exc

    def _hook_failed(self, method: Any, hook: str, exc: BaseException) -> CurriculumError:
        """A guard's ``observe`` or ``reset`` raised: name the guard and where it is used."""
        guard = getattr(method, "__self__", method)
        point = self.ctx.point
        call = point.value if point is not None else "force()" if self._started else "start()"
        text = f"guard {describe(guard)} (in {self._plan.where.get(id(guard), '?')}) raised in {hook}()"
        return errors.failed(text, exc, call, self._clock.global_step)
