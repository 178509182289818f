"""The runtime: a ``transitions.Machine`` driven by the training loop's clock.

The loop's contract, per optimizer step: ``optimizer.step()``, ``schedule.step()``,
``engine.step_end(loss=..., **metrics)``; after the last step of an epoch,
``engine.epoch_end(**metrics)``. A fresh run calls ``engine.start()`` once before the first step;
a resumed run calls ``engine.load_state_dict(...)`` instead.

:class:`CurriculumEngine` is the facade over the parts, each in its own module: what each call
does per phase and point (:mod:`engine.plan`, built once, with the guards' and actions' optional
members resolved through :mod:`engine.protocols`), the call's metrics (:mod:`engine.metrics`), a
transition in progress and its rollback (:mod:`engine.transaction`), a saved state checked before
it is loaded (:mod:`engine.restore`), the snapshot format (:mod:`engine.state`) and the records
(:mod:`engine.history`).
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

from engine.core import Clock, ClockView, Context, Curriculum, CurriculumError, Phase, Point, describe, truth_value
from engine.diagram import to_dot, to_mermaid
from engine.history import ActionEffect, Decision, GuardEvidence, HeldSince, History, Record, jsonable
from engine.metrics import check_metrics, to_metric
from engine.plan import Plan, actions_of, undo_all
from engine.recording import MetricLog
from engine.restore import check_state, load_guards
from engine.state import SCHEMA_VERSION, EngineState, PendingCheck, to_primitives
from engine.transaction import Transaction

__all__ = ["CurriculumEngine"]

logger = logging.getLogger(__name__)

_MANUAL = "manual"
_START = "start"
_STEP_END, _EPOCH_END = Point.STEP_END, Point.EPOCH_END  # module constants: the per-step path reads them
# Context attributes that a registered object would shadow.
_RESERVED = frozenset(attrs.fields_dict(Context)) | {"metric"}


class _MachineModel:
    """The object whose ``state`` the machine drives (a plain class: slotted attrs cannot be).

    ``state`` is the current phase's name: the one place the engine reads it from.
    """

    state: str


def _check_names(objects: dict[str, Any], where: str) -> None:
    for name in objects:
        if name in _RESERVED or not name.isidentifier() or name.startswith("_"):
            raise CurriculumError(
                f"{where}: cannot register an object named {name!r}: "
                f"{'it would hide Context.' + name if name in _RESERVED else 'expected a public identifier'}; "
                "choose another name, e.g. model=, optimizer=, schedule="
            )


class CurriculumEngine:
    """Runs a :class:`Curriculum` against a training loop.

    ``objects`` are what guards and actions use, reachable on the context as ``ctx.<name>``
    (``optimizer=...``, ``model=...``, ``schedule=...``). They may also be registered later with
    :meth:`bind` (frameworks build the optimizer after their callbacks); every object a guard or
    action ``requires`` must be registered by :meth:`start` or :meth:`load_state_dict`, which
    then call each guard's and action's ``check(ctx)`` (when it has one).

    Every call is atomic: ``step_end``, ``epoch_end``, ``start`` and ``force`` validate their
    input first, and a call that raises leaves ``state_dict()`` as it was before the call
    (docs/semantics.md, "Atomicity" and "Errors").

    **The machine and what we do around it.** A ``transitions.Machine`` holds the current phase
    (``self._model.state``) and, when a transition fires, runs its callbacks in their order: our
    ``_begin`` (opens the :class:`~engine.transaction.Transaction`, starts the record), the
    transition's actions, ``_enter_clock`` (zeroes the in-phase counters), the destination's
    ``on_enter`` actions, our ``_finish`` (resets the destination's guards, appends the record,
    owes the health checks). Each transition is one trigger ``_fire_<i>`` without conditions, each
    manual move one ``_force_<phase>``. Around it, we: count the clock, feed the observers, decide
    which transition fires (its guards evaluated one by one, the first declared transition that
    holds, the guard that became true last: :meth:`_evaluate`), and roll everything back when a
    callback raises. Deciding before triggering means the machine is not entered at a point where
    nothing fires, which is most points.
    """

    def __init__(self, curriculum: Curriculum, *, record_metrics: bool = False, **objects: Any) -> None:
        if not isinstance(curriculum, Curriculum):
            raise CurriculumError(
                f"CurriculumEngine needs a Curriculum, got {type(curriculum).__name__}: {curriculum!r}"
            )
        _check_names(objects, "CurriculumEngine")
        # engine/recording.py: the metric stream each successful call was fed, or None
        if not isinstance(record_metrics, bool):
            raise CurriculumError(f"CurriculumEngine(record_metrics=...) must be True or False, got {record_metrics!r}")
        self.recorded: MetricLog | None = MetricLog() if record_metrics else None
        self.curriculum = curriculum
        self.objects = dict(objects)
        self._clock = Clock()
        self._clock_view = ClockView(self._clock)
        self._history = History()
        self.ctx = Context(clock=self._clock_view, objects=self.objects, history=self._history.view())
        self._pending: list[PendingCheck] = []
        self._started = False
        self._unchecked_step = self._unchecked_epoch = True  # has this run checked the metrics there yet?
        self._fingerprint = curriculum.fingerprint()
        self._spec = curriculum.spec()
        self._plan = Plan.build(curriculum)
        self._here = self._plan.phases[curriculum.initial_name]  # the current phase's plan (set with the phase)
        self._phases = {p.name: p for p in curriculum.phases}
        # Per transition out of the current phase, the (global_step, epoch) since which each of its
        # guards (all_of opened up) has held at every evaluation point.
        self._held_since: dict[int, list[tuple[int, int] | None]] = {}

        states = [State(p.name, on_enter=[partial(self._act, a) for a in p.on_enter]) for p in curriculum.phases]
        self._model = _MachineModel()
        self._machine = Machine(
            model=self._model,
            states=states,
            initial=curriculum.initial_name,
            send_event=True,
            auto_transitions=False,
            ignore_invalid_triggers=True,
        )
        for i, tr in enumerate(curriculum.transitions):
            self._machine.add_transition(
                trigger=f"_fire_{i}",
                source=tr.source,
                dest=tr.dest,
                before=[self._begin] + [partial(self._act, a) for a in tr.actions] + [self._enter_clock],
                after=[self._finish],
            )
        for p in curriculum.phases:
            self._machine.add_transition(
                trigger=f"_force_{p.name}",
                source="*",
                dest=p.name,
                before=[self._begin, self._enter_clock],
                after=[self._finish],
            )
        # The machine's trigger methods on the model, looked up once: transition i's, and each phase's manual move.
        model = self._model
        self._fires: list[Callable[..., bool]] = [
            getattr(model, f"_fire_{i}") for i in range(len(curriculum.transitions))
        ]
        self._forces: dict[str, Callable[..., bool]] = {
            p.name: getattr(model, f"_force_{p.name}") for p in curriculum.phases
        }

    # -- registration ----------------------------------------------------------------------------

    def bind(self, **objects: Any) -> "CurriculumEngine":
        """Register (or replace) objects that guards and actions reach as ``ctx.<name>``.

        Call it before :meth:`start` or :meth:`load_state_dict`, which check that every object a
        guard or action ``requires`` is registered. Binding after that replaces the object for
        the calls that follow (e.g. an optimizer rebuilt by a framework); it changes no engine
        state and is not part of ``state_dict()``. Returns the engine.
        """
        _check_names(objects, "engine.bind")
        self.objects.update(objects)
        return self

    def _check_requirements(self, call: str) -> None:
        for name, users in self.curriculum.requirements().items():
            if name not in self.objects:
                raise CurriculumError(
                    f"{', '.join(users)} requires a registered object {name!r}, which was not registered "
                    f"before {call} (registered: {sorted(self.objects)}); pass it as "
                    f"CurriculumEngine(curriculum, {name}=...) or call engine.bind({name}=...) before {call}"
                )

    def _check_objects(self, call: str) -> None:
        """Every guard's and action's ``check(ctx)``, with the objects registered; one that raises
        is a CurriculumError naming it and its transition (nothing was changed yet)."""
        ctx = self.ctx
        ctx.metrics, ctx.point = {}, None
        try:
            for item in self._plan.checks:
                ctx.transition = self.curriculum.transitions[item.index] if item.index is not None else None
                try:
                    item.check(ctx)
                except Exception as exc:
                    raise CurriculumError(
                        f"{item.what} {describe(item.obj)} (in {item.where}) refused this run in check() at {call}: "
                        f"{type(exc).__name__}: {exc}; nothing was changed: "
                        f"fix the objects it works on (or the curriculum) and call {call} again"
                    ) from exc
        finally:
            ctx.transition = None

    # -- the loop's calls ---------------------------------------------------------------------

    def start(self, phase: str | None = None, *, global_step: int = 0, epoch: int = 0) -> Record:
        """Begin a run: run the ``on_enter`` actions of the initial phase and record the start.

        The start is the history's first record: ``source`` None, ``dest`` the phase, ``point``
        ``"start"``, the ``on_enter`` effects. ``phase``, ``global_step`` and ``epoch`` start
        elsewhere instead: for a checkpoint that has weights but no engine state (the phase then
        comes from the epochs it completed). If an ``on_enter`` action raises, the engine is left
        unstarted (fix the cause and call ``start()`` again). Returns the start record.
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
        states = [(restore, take()) for take, restore in entered.undo_reset]
        ctx = self.ctx
        ctx.metrics, ctx.point, ctx.transition = {}, None, None
        self._clock.global_step, self._clock.epoch = int(global_step), int(epoch)
        record = Record(
            source=None,
            dest=name,
            global_step=int(global_step),
            epoch=int(epoch),
            step_in_epoch=0,
            point=_START,
            wall_time=time.time(),
        )
        try:
            for action in self._phases[name].on_enter:
                effect = self._call_action(action, None, record.actions, name)
                record.actions.append(ActionEffect(describe(action), effect))
            for reset in entered.resetters:
                self._call_hook(reset, "reset")
        except BaseException:
            self._clock.global_step = self._clock.epoch = 0
            undo_all(states)
            raise
        self._set_phase(name)
        self._history.append(record)
        self._add_checks(-1, record)
        self._started = True
        self._held_since = {}
        self._unchecked_step = self._unchecked_epoch = True
        if self.recorded is not None:  # a fresh stream from the start step
            self.recorded = MetricLog(start_step=int(global_step), start_epoch=int(epoch))
        logger.info("start in %s at step %d (epoch %d): %s", name, record.global_step, record.epoch, record.actions)
        return record

    def step_end(self, loss: float, **metrics: float) -> Record | None:
        """After ``optimizer.step()`` and ``schedule.step()``: count the step, evaluate step-end transitions.

        Returns the record of the transition that fired, or None.
        """
        if not self._started:
            raise CurriculumError(
                "call engine.start() (fresh run) or engine.load_state_dict(...) (resume) before step_end"
            )
        # Validate first: nothing below changes before every input is known to be good.
        if type(loss) is not float:
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
        """One evaluation point with valid metrics, all or nothing: check that the metrics read
        here were passed, count the point, run the health checks owed (step_end), feed the
        observers, evaluate the transitions out of the phase; undo it all if one raises."""
        at_step = point is _STEP_END
        plan = self._here.step_end if at_step else self._here.epoch_end
        if self._unchecked_step if at_step else self._unchecked_epoch:  # a run's first call here
            check_metrics(self._plan.all_needs[point], metrics, point, everywhere=True)
            if at_step:
                self._unchecked_step = False
            else:
                self._unchecked_epoch = False
        if plan.needs:
            check_metrics(plan.needs, metrics, point)
        ctx = self.ctx
        ctx.metrics = metrics
        ctx.point = point
        marks = [(restore, take()) for take, restore in plan.undo] if plan.undo else None
        clock = self._clock
        step_in_epoch = clock.step_in_epoch
        pending = self._pending if at_step else None
        if at_step:
            clock.global_step += 1
            clock.step_in_epoch += 1
            clock.steps_in_phase += 1
        else:
            clock.epoch += 1
            clock.epochs_in_phase += 1
            clock.step_in_epoch = 0
        try:
            checked = self._run_checks(pending) if pending else None
            for observe in plan.observers:
                try:
                    observe(ctx)
                except Exception as exc:
                    raise self._hook_error(observe, "observe", exc) from exc
            record = self._evaluate(plan.transitions) if plan.transitions else None
        except BaseException:
            if at_step:
                clock.global_step -= 1
                clock.steps_in_phase -= 1
            else:
                clock.epoch -= 1
                clock.epochs_in_phase -= 1
            clock.step_in_epoch = step_in_epoch
            if marks:
                undo_all(marks)
            raise
        if checked is not None:
            self._commit_checks(pending, checked)
        if self.recorded is not None:  # the call succeeded and is committed
            self.recorded.append("step_end" if at_step else "epoch_end", metrics)
        return record

    def force(self, dest: str, reason: str) -> Record:
        """Move to ``dest`` by hand; recorded as a manual transition with ``reason``.

        The destination's ``on_enter`` actions run and their effects are recorded; if one raises,
        the engine stays where it was (as for any transition).
        """
        if dest not in self._phases:
            raise CurriculumError(f"force(): {dest!r} is not a phase; expected one of {list(self._phases)}")
        if not self._started:
            raise CurriculumError("call engine.start() or engine.load_state_dict(...) before force()")
        self.ctx.metrics, self.ctx.point = {}, None
        held_since = self._held_since
        try:
            return self._fire(self._forces[dest], -1, reason=str(reason))
        except BaseException:
            self._held_since = held_since
            raise

    # -- what the loop and the user read ------------------------------------------------------

    @property
    def phase(self) -> Phase:
        """The current phase (its ``params`` are for the loop)."""
        return self._phases[self._model.state]

    @property
    def clock(self) -> ClockView:
        """A read-only view of the clock: ``global_step``, ``epoch``, ``step_in_epoch``,
        ``steps_in_phase``, ``epochs_in_phase`` (see :class:`engine.ClockView`)."""
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
        guards = {key: caps.state_dict() for key, _guard, caps in self._plan.stateful if caps.state_dict}
        state = EngineState(
            schema_version=SCHEMA_VERSION,
            fingerprint=self._fingerprint,
            phase=self._model.state,
            started=self._started,
            clock=attrs.evolve(self._clock),
            guards=guards,
            history=list(self._history),
            pending_checks=list(self._pending),
            held_since={str(i): [list(s) if s else None for s in since] for i, since in self._held_since.items()},
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
        """Restore a snapshot into this (freshly built) engine; fires no callback.

        All or nothing: every registered object a guard or action ``requires`` is checked, then
        the whole state (:func:`engine.restore.check_state`: schema, fingerprint, phase, clock,
        history, pending health checks, ``held_since``, recorded metrics), then each guard's and action's
        ``check(ctx)``, then which guards it has accumulators for, and the guards load them; if
        one refuses them the guards loaded before it are put back. A load that raises leaves the
        engine as it was: a fresh one can still ``start()`` or load another state. With
        ``allow_fingerprint_mismatch=True`` the parts that do not match this curriculum are left
        out instead of refused.
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
        for field in attrs.fields(Clock):
            setattr(self._clock, field.name, getattr(snap.clock, field.name))
        self._history = History(snap.history)
        self.ctx.history = self._history.view()
        self._pending = restored.pending
        self._started = snap.started
        self._held_since = restored.held_since
        self._unchecked_step = self._unchecked_epoch = True
        self.recorded = restored.recorded

    # -- deciding ------------------------------------------------------------------------------

    def _evaluate(self, indexes: tuple[int, ...]) -> Record | None:
        """The transitions ``indexes`` (out of the current phase, at this point) in declaration
        order: the first whose guards all hold fires; None when none does."""
        held_since = dict(self._held_since)  # _decide and _finish replace entries, never mutate them
        try:
            for index in indexes:
                if self._decide(index):
                    return self._fire(self._fires[index], index)
            return None
        except BaseException:
            self._held_since = held_since
            raise
        finally:
            self.ctx.transition = None

    def _decide(self, index: int) -> bool:
        """Transition ``index``'s condition: every guard (all_of opened up) evaluated, none skipped,
        and the point since which each has held brought up to date (for the deciding guard)."""
        leaves = self._plan.transitions[index].leaves
        ctx = self.ctx
        ctx.transition = self.curriculum.transitions[index]
        values = [self._holds(g, index) for g in leaves]
        before = self._held_since.get(index) or [None] * len(leaves)
        now = (self._clock.global_step, self._clock.epoch)
        self._held_since[index] = [(since or now) if holds else None for holds, since in zip(values, before)]
        return all(values)

    def _holds(self, guard: Any, index: int) -> bool:
        try:
            result = guard(self.ctx)
        except Exception as exc:
            raise self._error(f"guard {describe(guard)} of transition {self._label(index)} raised", exc) from exc
        if result is True or result is False:
            return result
        try:
            return truth_value(guard, result, f" of transition {self._label(index)}")
        except CurriculumError as exc:
            raise self._error(str(exc), None) from None

    def _decision(self, index: int) -> Decision:
        """The guard that became true last, and since when each guard held (all hold now)."""
        leaves, since = self._plan.transitions[index].leaves, self._held_since[index]
        latest = max(since)
        return Decision(
            decided_by=[describe(g) for g, s in zip(leaves, since) if s == latest],
            held_since=[HeldSince(describe(g), s[0], s[1]) for g, s in zip(leaves, since)],
        )

    # -- firing: the machine's callbacks ------------------------------------------------------
    # A transition in progress travels in its event: event.kwargs["txn"] is the Transaction that
    # _begin opens (with the record being built, filled by _act, appended by _finish), and a
    # manual transition's reason is event.kwargs["reason"].

    def _fire(self, trigger: Callable[..., bool], index: int, **kwargs: Any) -> Record:
        """Call the machine's ``trigger`` of transition ``index`` (-1: a manual move): it runs the
        callbacks; if one raises, the transaction is rolled back and the error raised."""
        txn = Transaction(index)
        try:
            trigger(txn=txn, **kwargs)
        except BaseException:
            if txn.opened:
                txn.roll_back(self._set_phase, self._clock, self._history, self._pending)
            raise
        finally:
            self.ctx.transition = None
            self._here = self._plan.phases[self._model.state]  # the machine moved it, or the rollback
        return self._history[-1]

    def _set_phase(self, name: str) -> None:
        """Set the phase outside a transition (start, restore, rollback), and its plan with it."""
        self._machine.set_state(name, model=self._model)
        self._here = self._plan.phases[name]

    def _begin(self, event: Any) -> None:
        clock, txn = self._clock, event.kwargs["txn"]
        index = txn.index
        txn.open(self._model.state, clock, self._history, self._pending)
        if index >= 0:
            tr = self.curriculum.transitions[index]
            self.ctx.transition = tr
            guards = [
                GuardEvidence(describe(g), self._evidence(g, evidence, index))
                for g, evidence in self._plan.transitions[index].evidence
            ]
            point, reason, decision = tr.when.value, None, self._decision(index)
        else:
            self.ctx.transition = None
            guards, point, decision = [], _MANUAL, None
            reason = event.kwargs.get("reason")
        txn.record = Record(
            source=event.transition.source,
            dest=event.transition.dest,
            global_step=clock.global_step,
            epoch=clock.epoch,
            step_in_epoch=clock.step_in_epoch,
            point=point,
            wall_time=time.time(),
            guards=guards,
            reason=reason,
            decision=decision,
        )

    def _evidence(self, guard: Any, evidence: Callable | None, index: int) -> dict:
        if evidence is None:
            return {"holds": True}
        try:
            return jsonable(evidence(self.ctx) or {})
        except Exception as exc:
            who = f"guard {describe(guard)} of transition {self._label(index)}"
            raise self._error(f"{who} raised in evidence()", exc) from exc

    def _act(self, action: Any, event: Any) -> None:
        txn = event.kwargs["txn"]
        record = txn.record
        where = txn.index if txn.index >= 0 else f"{record.source} -> {record.dest}"
        effect = self._call_action(action, where, record.actions, record.dest)
        record.actions.append(ActionEffect(describe(action), effect))

    def _enter_clock(self, _event: Any) -> None:
        self._clock.steps_in_phase = 0
        self._clock.epochs_in_phase = 0

    def _finish(self, event: Any) -> None:
        txn = event.kwargs["txn"]
        record = txn.record
        self._held_since = {}  # a phase was entered: its transitions' guards start afresh
        entered = self._plan.phases[record.dest]
        # Resets are the only change to guards a transition makes: noted first, undone on a rollback.
        txn.guard_states.extend((restore, take()) for take, restore in entered.undo_reset)
        for reset in entered.resetters:
            self._call_hook(reset, "reset")
        self._history.append(record)
        self._add_checks(txn.index, record)
        logger.info(
            "transition %s -> %s at step %d (epoch %d)", record.source, record.dest, record.global_step, record.epoch
        )

    # -- errors ---------------------------------------------------------------------------------

    def _label(self, index: int) -> str:
        return self.curriculum.transitions[index].label

    def _error(self, text: str, exc: BaseException | None, done: list | None = None) -> CurriculumError:
        """``text`` (who of which transition did what), the exception, where, and that the engine
        is as it was."""
        ctx, clock = self.ctx, self._clock
        point = ctx.point.value if ctx.point is not None else "force()"
        if exc is not None:
            text += f" {type(exc).__name__}: {exc}"
        text += f" (at {point}, global step {clock.global_step})"
        if done is not None:
            ran = ", ".join(f"{a.action} -> {a.effect}" for a in done) or "none"
            text += f"; actions that had already run, whose effects on your objects are not undone: {ran}"
        return CurriculumError(
            text + "; the engine is left as it was before this call (same phase, clock, history and guard state)"
        )

    def _hook_error(self, method: Any, hook: str, exc: BaseException) -> CurriculumError:
        guard = getattr(method, "__self__", method)
        ctx = self.ctx
        point = ctx.point.value if ctx.point is not None else "force()" if self._started else "start()"
        return CurriculumError(
            f"guard {describe(guard)} (in {self._plan.where.get(id(guard), '?')}) raised in {hook}() "
            f"{type(exc).__name__}: {exc} (at {point}, global step {self._clock.global_step}); "
            "the engine is left as it was before this call (same phase, clock, history and guard state)"
        )

    def _call_hook(self, method: Any, hook: str) -> None:
        try:
            method()
        except Exception as exc:
            raise self._hook_error(method, hook, exc) from exc

    def _call_action(self, action: Any, index: int | str | None, done: list, phase: str) -> dict:
        """Run an action; ``index``: its transition (an int, or a manual move's label), None at start()."""
        try:
            effect = action(self.ctx)
            return jsonable(effect or {})
        except Exception as exc:
            if index is None:
                ran = ", ".join(f"{a.action} -> {a.effect}" for a in done) or "none"
                raise CurriculumError(
                    f"action {describe(action)} (on_enter of {phase!r}) raised at start() "
                    f"{type(exc).__name__}: {exc}; actions that had already run, whose effects on your objects are "
                    f"not undone: {ran}; the engine is left unstarted: fix the cause and call start() again"
                ) from exc
            where = f"the manual transition {index}" if isinstance(index, str) else f"transition {self._label(index)}"
            raise self._error(f"action {describe(action)} of {where} raised", exc, done) from exc

    # -- health checks owed by actions that ran ---------------------------------------------------

    def _add_checks(self, index: int, record: Record) -> None:
        """Owe a health check at the next step_end for each action of ``record`` with ``verify``."""
        verifies = self._plan.verifies
        for k, action in enumerate(actions_of(self.curriculum, index, record.dest)):
            if id(action) in verifies:
                self._pending.append(PendingCheck(record=len(self._history) - 1, transition=index, action=k))

    def _run_checks(self, pending: list[PendingCheck]) -> tuple[int, list[tuple[Record, str]]]:
        """Run the health checks owed from earlier transitions; returns them and their warnings
        without storing anything (``_commit_checks`` does, once the call cannot fail)."""
        out = []
        for check in pending:
            record = self._history[check.record]
            action = actions_of(self.curriculum, check.transition, record.dest)[check.action]
            try:
                warning = self._plan.verifies[id(action)](self.ctx, record.actions[check.action].effect)
            except Exception as exc:
                raise CurriculumError(
                    f"action {describe(action)}'s verify() (health check after {record.source} -> {record.dest} "
                    f"at step {record.global_step}) raised {type(exc).__name__}: {exc} "
                    f"(at step_end, global step {self._clock.global_step}); "
                    "the engine is left as it was before this call"
                ) from exc
            if warning:
                out.append((record, str(warning)))
        return len(pending), out

    def _commit_checks(self, pending: list[PendingCheck], checked: tuple[int, list]) -> None:
        count, warnings = checked
        for record, warning in warnings:
            logger.warning("after %s -> %s at step %d: %s", record.source, record.dest, record.global_step, warning)
            record.warnings.append(warning)
        del pending[:count]
