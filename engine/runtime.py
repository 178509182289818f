"""The runtime: a ``transitions.Machine`` driven by the training loop's clock.

The loop's contract, per optimizer step: ``optimizer.step()``, ``schedule.step()``,
``engine.step_end(loss=..., **metrics)``; after the last step of an epoch,
``engine.epoch_end(**metrics)``. A fresh run calls ``engine.start()`` once before the first step;
a resumed run calls ``engine.load_state_dict(...)`` instead.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import time
from functools import partial
from typing import Any

import attrs
from transitions import Machine, State

from engine.core import (
    Clock,
    ClockView,
    Context,
    Curriculum,
    CurriculumError,
    Phase,
    Point,
    as_bool,
    describe,
    guard_leaves,
    spec_differences,
    metrics_read,
    observe_points,
)
from engine.diagram import to_dot, to_mermaid
from engine.history import ActionEffect, Decision, GuardEvidence, HeldSince, History, Record, jsonable
from engine.recording import MetricLog, restore_log
from engine.state import SCHEMA_VERSION, EngineState, PendingCheck, from_primitives, to_primitives

__all__ = ["CurriculumEngine"]

logger = logging.getLogger(__name__)

_MANUAL = "manual"
_START = "start"
# Context attributes that a registered object would shadow.
_RESERVED = frozenset(attrs.fields_dict(Context)) | {"metric"}


class _MachineModel:
    """The object whose ``state`` the machine drives (a plain class: slotted attrs cannot be).

    ``state`` is the current phase's name: the one place the engine reads it from.
    """

    state: str


def _conjuncts(guard: Any) -> list:
    """The guards whose AND ``guard`` is, opened up recursively (``all_of`` exposes ``conjuncts``)."""
    inner = getattr(guard, "conjuncts", None)
    if inner is None:
        return [guard]
    return [leaf for g in inner for leaf in _conjuncts(g)]


def _undo_plan(uses: list[tuple[Any, list]]) -> list[tuple[Any, Any]]:
    """How to undo what a call does to guards: ``(take, restore)`` pairs, ``restore(take())``.

    ``uses`` holds, per top-level guard, its leaves that the call may change (by ``observe`` or
    ``reset``). When each of those leaves offers ``mark``/``undo`` (O(1), as ``Plateau``) they are
    used; otherwise the top-level guard's ``state_dict``/``load_state_dict`` (a copy of all its
    state), when it has them (when it has not, the leaves that offer ``mark`` still use it).
    Snapshots come first: the engine undoes in reverse order, so a snapshot, which sets the state
    outright, is applied last.
    """
    snapshots: list = []
    marks: list = []
    seen: set[int] = set()
    for top, leaves in uses:
        markable = [leaf for leaf in leaves if hasattr(leaf, "mark") and hasattr(leaf, "undo")]
        if len(markable) < len(leaves) and hasattr(top, "state_dict") and hasattr(top, "load_state_dict"):
            if id(top) not in seen:
                seen.add(id(top))
                snapshots.append((top.state_dict, top.load_state_dict))
            continue
        for leaf in markable:
            if id(leaf) not in seen:
                seen.add(id(leaf))
                marks.append((leaf.mark, leaf.undo))
    return snapshots + marks


def _check_names(objects: dict[str, Any], where: str) -> None:
    for name in objects:
        if name in _RESERVED or not name.isidentifier() or name.startswith("_"):
            raise CurriculumError(
                f"{where}: cannot register an object named {name!r}: "
                f"{'it would hide Context.' + name if name in _RESERVED else 'expected a public identifier'}; "
                "choose another name, e.g. model=, optimizer=, schedule="
            )


_SAVED = "pass the dict that engine.state_dict() returned for this curriculum"
_REAL = "a real number (int, float, numpy scalar or 1-element tensor)"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _bad_metric(name: str, value: Any, call: str, why: str = "") -> CurriculumError:
    return CurriculumError(
        f"{call}: metric {name!r} must be {_REAL}, got {type(value).__name__} {_short(value)}{why}; "
        f"pass a number, e.g. {name}=float(...) or {name}=tensor.item(). Nothing was counted: call again with a number"
    )


def to_metric(name: str, value: Any, call: str = "step_end()") -> float:
    """``value`` as a float metric, or a :class:`CurriculumError` naming the metric, type and value.

    Accepted: int, float (NaN and infinities included), numpy integer and floating scalars, and
    one-element tensors or arrays of those. Refused: bool (a flag is not a measurement), str,
    None, complex, sequences, multi-element tensors, ints too large for a float.
    """
    if type(value) is float:
        return value
    if isinstance(value, bool):
        raise _bad_metric(name, value, call, " (a bool is not a measurement)")
    if isinstance(value, numbers.Integral) or (isinstance(value, numbers.Real) and not hasattr(value, "item")):
        try:
            return float(value)
        except OverflowError:
            raise _bad_metric(name, value, call, " (too large for a float)") from None
    item = getattr(value, "item", None)
    size = getattr(value, "size", None)  # numpy: an int attribute; torch: a method
    count = value.numel() if hasattr(value, "numel") else size if isinstance(size, int) else None
    if callable(item) and count == 1 and getattr(getattr(value, "dtype", None), "kind", "f") != "b":
        inner = item()
        if not isinstance(inner, bool) and isinstance(inner, (int, float)):
            return float(inner)
    if count is not None and count != 1:
        raise _bad_metric(name, value, call, f" ({count} elements; a metric is one number)")
    raise _bad_metric(name, value, call)


class CurriculumEngine:
    """Runs a :class:`Curriculum` against a training loop.

    ``objects`` are what guards and actions use, reachable on the context as ``ctx.<name>``
    (``optimizer=...``, ``model=...``, ``schedule=...``). They may also be registered later with
    :meth:`bind` (frameworks build the optimizer after their callbacks); every object a guard or
    action ``requires`` must be registered by :meth:`start` or :meth:`load_state_dict`.

    Every call is atomic: ``step_end``, ``epoch_end``, ``start`` and ``force`` validate their
    input first, and a call that raises leaves ``state_dict()`` as it was before the call
    (docs/semantics.md, "Atomicity" and "Errors").
    """

    def __init__(self, curriculum: Curriculum, *, record_metrics: bool = False, **objects: Any) -> None:
        if not isinstance(curriculum, Curriculum):
            raise CurriculumError(f"CurriculumEngine needs a Curriculum, got {type(curriculum).__name__}: {curriculum!r}")
        _check_names(objects, "CurriculumEngine")
        # recording (engine/recording.py): the metric stream each successful call was fed, or None
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
        self._plan(curriculum)
        # Each transition's guards with all_of opened up, and per transition out of the current
        # phase the (global_step, epoch) since which each has held at every evaluation point.
        self._leaves = [[leaf for g in tr.guards for leaf in _conjuncts(g)] for tr in curriculum.transitions]
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
                trigger=tr.when.value,
                source=tr.source,
                dest=tr.dest,
                conditions=[partial(self._decide, i)],
                before=[partial(self._begin, i)] + [partial(self._act, a) for a in tr.actions] + [self._enter_clock],
                after=[partial(self._finish, i)],
            )
        for p in curriculum.phases:
            self._machine.add_transition(
                trigger=f"_force_{p.name}", source="*", dest=p.name,
                before=[partial(self._begin, -1), self._enter_clock], after=[partial(self._finish, -1)],
            )

    def _plan(self, curriculum: Curriculum) -> None:
        """Per phase and point: who observes, who resets, which metrics are read, how to undo."""
        names = [p.name for p in curriculum.phases]
        self._phases = {p.name: p for p in curriculum.phases}
        self._where: dict[int, str] = {}  # id(guard) -> the transitions that use it, for messages
        self._has_point = {point: dict.fromkeys(names, False) for point in Point}
        self._observers: dict[Point, dict[str, list]] = {point: {n: [] for n in names} for point in Point}
        self._resetters: dict[str, list] = {n: [] for n in names}
        self._needs: dict[Point, dict[str, dict[str, list[str]]]] = {point: {n: {} for n in names} for point in Point}
        self._all_needs: dict[Point, dict[str, list[str]]] = {point: {} for point in Point}
        observed: dict[Point, dict[str, list]] = {point: {n: [] for n in names} for point in Point}
        reset: dict[str, list] = {n: [] for n in names}
        for i, tr in enumerate(curriculum.transitions):
            self._has_point[tr.when][tr.source] = True
            for top in tr.guards:
                reset[tr.source].append((top, [leaf for leaf in guard_leaves(top) if hasattr(leaf, "reset")]))
                for point in Point:
                    leaves = [leaf for leaf in guard_leaves(top) if hasattr(leaf, "observe") and point in observe_points(leaf, tr.when)]
                    observed[point][tr.source].append((top, leaves))
                for leaf in guard_leaves(top):
                    where = self._where.setdefault(id(leaf), "")
                    self._where[id(leaf)] = f"{where}, {tr.label}" if where else tr.label
                    if hasattr(leaf, "reset") and leaf.reset not in self._resetters[tr.source]:
                        self._resetters[tr.source].append(leaf.reset)
                    for point in Point:
                        for metric in metrics_read(leaf, tr.when, point):
                            who = f"{describe(leaf)} in {tr.label}"
                            self._all_needs[point].setdefault(metric, []).append(who)
                            if not (point is Point.STEP_END and metric == "loss"):
                                self._needs[point][tr.source].setdefault(metric, []).append(who)
                        if hasattr(leaf, "observe") and point in observe_points(leaf, tr.when):
                            self._observers[point][tr.source].append(leaf.observe)
        # How to undo observations, per point and phase: only where something can fail after one
        # was made (a second observer, or guards and actions evaluated at this point).
        undo_observe = {
            point: {n: _undo_plan(observed[point][n]) if len(self._observers[point][n]) > 1 or self._has_point[point][n] else []
                    for n in names}
            for point in Point
        }
        # How to undo the resets of the guards on the transitions out of a phase that is entered.
        self._undo_reset = {n: _undo_plan(reset[n]) for n in names}
        # What step_end and epoch_end look up, one tuple per phase:
        # (metrics to check, how to undo observations, observe methods, has transitions at this point).
        self._at_step, self._at_epoch = (
            {n: (self._needs[p][n], undo_observe[p][n], self._observers[p][n], self._has_point[p][n]) for n in names}
            for p in (Point.STEP_END, Point.EPOCH_END)
        )

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
            raise CurriculumError("engine.start() was already called, or the engine was restored; call it once, on a fresh run only")
        if phase is not None and phase not in self._phases:
            raise CurriculumError(f"start(phase={phase!r}): not a phase; expected one of {list(self._phases)}")
        for field, value in (("global_step", global_step), ("epoch", epoch)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise CurriculumError(f"start({field}=...) must be an int >= 0, got {value!r}")
        self._check_requirements("start()")
        name = phase if phase is not None else self.curriculum.initial_name
        states = [(restore, take()) for take, restore in self._undo_reset[name]]
        ctx = self.ctx
        ctx.metrics, ctx.point, ctx.transition = {}, None, None
        self._clock.global_step, self._clock.epoch = int(global_step), int(epoch)
        record = Record(
            source=None, dest=name, global_step=int(global_step), epoch=int(epoch), step_in_epoch=0,
            point=_START, wall_time=time.time(),
        )
        try:
            for action in self._phases[name].on_enter:
                effect = self._call_action(action, None, record.actions, name)
                record.actions.append(ActionEffect(describe(action), effect))
            for reset in self._resetters[name]:
                self._call_hook(reset, "reset")
        except BaseException:
            self._clock.global_step = self._clock.epoch = 0
            self._restore(states)
            raise
        self._machine.set_state(name, model=self._model)
        self._history.append(record)
        self._add_checks(-1, record)
        self._started = True
        self._held_since = {}
        self._unchecked_step = self._unchecked_epoch = True
        if self.recorded is not None:  # recording
            self.recorded = MetricLog(start_step=int(global_step), start_epoch=int(epoch))
        logger.info("start in %s at step %d (epoch %d): %s", name, record.global_step, record.epoch, record.actions)
        return record

    def step_end(self, loss: float, **metrics: float) -> Record | None:
        """After ``optimizer.step()`` and ``schedule.step()``: count the step, evaluate step-end transitions.

        Returns the record of the transition that fired, or None.
        """
        if not self._started:
            raise CurriculumError("call engine.start() (fresh run) or engine.load_state_dict(...) (resume) before step_end")
        # Validate first: nothing below changes before every input is known to be good.
        if type(loss) is not float:
            loss = to_metric("loss", loss, "step_end()")
        for name, value in metrics.items():
            if type(value) is not float:
                metrics[name] = to_metric(name, value, "step_end()")
        metrics["loss"] = loss
        needs, undo, observers, evaluate = self._at_step[self._model.state]
        if self._unchecked_step:
            self._check_run_metrics(Point.STEP_END, metrics)
        if needs:
            self._check_metrics(needs, metrics, Point.STEP_END)
        ctx = self.ctx
        ctx.metrics = metrics
        ctx.point = Point.STEP_END
        before = [(restore, take()) for take, restore in undo] if undo else None
        pending = self._pending
        clock = self._clock
        clock.global_step += 1
        clock.step_in_epoch += 1
        clock.steps_in_phase += 1
        try:
            warnings = self._run_checks(pending) if pending else None
            for observe in observers:
                try:
                    observe(ctx)
                except Exception as exc:
                    raise self._hook_error(observe, "observe", exc) from exc
            record = self._trigger("step_end") if evaluate else None
        except BaseException:
            clock.global_step -= 1
            clock.step_in_epoch -= 1
            clock.steps_in_phase -= 1
            if before:
                self._restore(before)
            raise
        if warnings is not None:
            self._commit_checks(pending, warnings)
        if self.recorded is not None:  # recording: the call succeeded
            self.recorded.append("step_end", metrics)
        return record

    def epoch_end(self, **metrics: float) -> Record | None:
        """After the last step of an epoch: count the epoch, evaluate epoch-end transitions.

        Returns the record of the transition that fired, or None.
        """
        if not self._started:
            raise CurriculumError("call engine.start() (fresh run) or engine.load_state_dict(...) (resume) before epoch_end")
        for name, value in metrics.items():
            if type(value) is not float:
                metrics[name] = to_metric(name, value, "epoch_end()")
        needs, undo, observers, evaluate = self._at_epoch[self._model.state]
        if self._unchecked_epoch:
            self._check_run_metrics(Point.EPOCH_END, metrics)
        if needs:
            self._check_metrics(needs, metrics, Point.EPOCH_END)
        ctx = self.ctx
        ctx.metrics = metrics
        ctx.point = Point.EPOCH_END
        before = [(restore, take()) for take, restore in undo] if undo else None
        clock = self._clock
        step_in_epoch = clock.step_in_epoch
        clock.epoch += 1
        clock.epochs_in_phase += 1
        clock.step_in_epoch = 0
        try:
            for observe in observers:
                try:
                    observe(ctx)
                except Exception as exc:
                    raise self._hook_error(observe, "observe", exc) from exc
            record = self._trigger("epoch_end") if evaluate else None
        except BaseException:
            clock.epoch -= 1
            clock.epochs_in_phase -= 1
            clock.step_in_epoch = step_in_epoch
            if before:
                self._restore(before)
            raise
        if self.recorded is not None:  # recording: the call succeeded
            self.recorded.append("epoch_end", metrics)
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
        return self._trigger(f"_force_{dest}", reason=str(reason))

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
        """JSON-safe primitives: schema, fingerprint, phase, clock, guard accumulators, history."""
        guards = {}
        for key, guard in self.curriculum.guards:
            if hasattr(guard, "state_dict"):
                guards[key] = guard.state_dict()
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
            recorded=self.recorded.state_dict() if self.recorded is not None else None,  # recording
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

        All or nothing: the whole state is checked first (schema, fingerprint, phase, clock,
        history, pending health checks, ``held_since``, which guards it has accumulators for),
        then the guards load their accumulators, and if one refuses them the guards loaded
        before it are put back. A load that raises leaves the engine as it was: a fresh one can
        still ``start()`` or load another state. With ``allow_fingerprint_mismatch=True`` the
        parts that do not match this curriculum are left out instead of refused.
        """
        snap: EngineState = from_primitives(state)
        lenient = allow_fingerprint_mismatch
        self._check_requirements("load_state_dict()")
        self._check_fingerprint(snap, lenient)
        if snap.phase not in self._phases:
            raise CurriculumError(f"engine state's phase {snap.phase!r} is not a phase of this curriculum ({list(self._phases)})")
        self._check_clock(snap.clock)
        if not lenient:
            self._check_history(snap.history)
        pending = self._restored_pending(snap, lenient)
        held_since = self._restored_held_since(snap, lenient)
        recorded = restore_log(snap.recorded, snap.clock, self.recorded is not None, lenient)  # recording
        self._load_guards(snap.guards, lenient)
        # Everything was checked and the guards are loaded: nothing below can fail.
        self._machine.set_state(snap.phase, model=self._model)
        for field in attrs.fields(Clock):
            setattr(self._clock, field.name, getattr(snap.clock, field.name))
        self._history = History(snap.history)
        self.ctx.history = self._history.view()
        self._pending = pending
        self._started = snap.started
        self._held_since = held_since
        self._unchecked_step = self._unchecked_epoch = True
        self.recorded = recorded  # recording

    # -- checks before load_state_dict changes anything -------------------------------------------

    def _check_fingerprint(self, snap: EngineState, lenient: bool) -> None:
        mine = self._fingerprint if snap.fingerprint_version == 2 else self.curriculum.fingerprint(snap.fingerprint_version)
        if snap.fingerprint == mine or lenient:
            return
        if snap.spec is not None:
            changes = spec_differences(snap.spec, self._spec) or ["(the specs agree: a guard or action repr is not stable)"]
            what = "what differs (saved -> this one):\n  " + "\n  ".join(changes) + "\n"
        else:
            what = "its phases, transitions, guards, actions or params differ (a schema-1 state stores no spec to compare). "
        raise CurriculumError(
            f"engine state was saved from a different curriculum (fingerprint {snap.fingerprint[:12]}..., "
            f"this one {mine[:12]}...); {what}"
            "Build the curriculum the state was saved with, or pass allow_fingerprint_mismatch=True "
            "to restore what still matches"
        )

    @staticmethod
    def _check_clock(clock: Clock) -> None:
        for field in attrs.fields(Clock):
            value = getattr(clock, field.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise CurriculumError(f"engine state's clock.{field.name} must be an int >= 0, got {value!r}; {_SAVED}")
        for part, whole in (("step_in_epoch", "global_step"), ("steps_in_phase", "global_step"), ("epochs_in_phase", "epoch")):
            if getattr(clock, part) > getattr(clock, whole):
                raise CurriculumError(
                    f"engine state's clock.{part} ({getattr(clock, part)}) is larger than clock.{whole} "
                    f"({getattr(clock, whole)}); {_SAVED}"
                )

    def _check_history(self, history: list[Record]) -> None:
        for k, record in enumerate(history):
            for end, name in (("source", record.source), ("dest", record.dest)):
                if name is not None and name not in self._phases or end == "dest" and name is None:
                    raise CurriculumError(
                        f"engine state's history[{k}].{end} is {name!r}, not a phase of this curriculum "
                        f"({list(self._phases)}); {_SAVED}"
                    )

    def _restored_pending(self, snap: EngineState, lenient: bool) -> list[PendingCheck]:
        """The pending health checks that this curriculum can run; one it cannot is refused
        (left out when ``lenient``: it names actions of another curriculum)."""
        kept = []
        for k, check in enumerate(snap.pending_checks):
            problem = self._pending_problem(check, snap.history)
            if problem is None:
                kept.append(check)
            elif not lenient:
                raise CurriculumError(f"engine state's pending_checks[{k}] {problem}; {_SAVED}")
            else:
                logger.warning("load_state_dict: left out pending health check %d: it %s", k, problem)
        return kept

    def _pending_problem(self, check: PendingCheck, history: list[Record]) -> str | None:
        if not 0 <= check.record < len(history):
            return f"points at history record {check.record}, but the history has {len(history)} records"
        if not -1 <= check.transition < len(self.curriculum.transitions):
            return f"names transition {check.transition}, but the curriculum has {len(self.curriculum.transitions)}"
        record = history[check.record]
        if record.dest not in self._phases or (check.transition >= 0 and self.curriculum.transitions[check.transition].dest != record.dest):
            return f"names transition {check.transition}, which does not lead to its record's destination {record.dest!r}"
        actions = self._actions_of(check.transition, record.dest)
        if not 0 <= check.action < min(len(actions), len(record.actions)):
            return f"names action {check.action} of history record {check.record}, which has {len(record.actions)}"
        if not hasattr(actions[check.action], "verify"):
            return f"names action {describe(actions[check.action])}, which has no verify()"
        return None

    def _restored_held_since(self, snap: EngineState, lenient: bool) -> dict[int, list[tuple[int, int] | None]]:
        """``held_since`` for the transitions out of the restored phase; an entry that does not fit
        one is refused (left out when ``lenient``)."""
        held_since = {}
        for key, since in snap.held_since.items():
            index = int(key) if key.isdigit() else -1
            fits = (
                0 <= index < len(self._leaves)
                and self.curriculum.transitions[index].source == snap.phase
                and len(since) == len(self._leaves[index])
                and all(s is None or len(s) == 2 for s in since)
            )
            if fits:
                held_since[index] = [(s[0], s[1]) if s else None for s in since]
            elif not lenient:
                what = (
                    f"transition {key} ({self.curriculum.transitions[index].label}, {len(self._leaves[index])} guards)"
                    if 0 <= index < len(self._leaves) else f"a transition (this curriculum has {len(self._leaves)})"
                )
                raise CurriculumError(
                    f"engine state's held_since[{key!r}] = {since!r} does not fit {what} out of phase {snap.phase!r}: "
                    "expected one [global_step, epoch] or None per guard; "
                    "restore it into the curriculum it was saved from, or pass allow_fingerprint_mismatch=True"
                )
        return held_since

    def _load_guards(self, saved: dict[str, Any], lenient: bool) -> None:
        """Load every stateful guard's accumulators, or none: if a guard's ``load_state_dict``
        raises, the guards loaded before it (and it) get back the state they had."""
        stateful = [(key, g) for key, g in self.curriculum.guards if hasattr(g, "load_state_dict")]
        if not lenient:
            for key, guard in stateful:
                if key not in saved:
                    raise CurriculumError(f"engine state has no accumulators for guard {key} ({describe(guard)}); {_SAVED}")
            known = {key for key, g in self.curriculum.guards if hasattr(g, "state_dict") or hasattr(g, "load_state_dict")}
            unknown = sorted(set(saved) - known)
            if unknown:
                raise CurriculumError(
                    f"engine state has accumulators for {', '.join(unknown)}, which this curriculum has no stateful guard at "
                    f"(its stateful guards: {', '.join(sorted(known)) or 'none'}); {_SAVED}, "
                    "or pass allow_fingerprint_mismatch=True to leave them out"
                )
        loads = [(key, g, saved[key]) for key, g in stateful if key in saved]
        before, seen = [], set()
        for _key, guard, _value in loads:
            if id(guard) not in seen and hasattr(guard, "state_dict"):
                seen.add(id(guard))
                before.append((guard, guard.state_dict()))
        for key, guard, value in loads:
            try:
                guard.load_state_dict(value)
            except Exception as exc:
                for g, was in reversed(before):
                    g.load_state_dict(was)
                raise CurriculumError(
                    f"engine state's accumulators for guard {key} ({describe(guard)}) were refused by its load_state_dict(): "
                    f"{type(exc).__name__}: {exc}; nothing was restored (the engine and its guards are as they were); {_SAVED}"
                ) from exc

    # -- checks before a call changes anything ---------------------------------------------------

    def _check_run_metrics(self, point: Point, metrics: dict) -> None:
        """At a run's first call at ``point``: every metric any transition reads there was passed."""
        self._check_metrics(self._all_needs[point], metrics, point, everywhere=True)
        if point is Point.STEP_END:
            self._unchecked_step = False
        else:
            self._unchecked_epoch = False

    def _check_metrics(self, needs: dict[str, list[str]], metrics: dict, point: Point, everywhere: bool = False) -> None:
        missing = [name for name in needs if name not in metrics]
        if not missing:
            return
        readers = "; ".join(f"{name!r} (read by {', '.join(needs[name])})" for name in missing)
        call = f"engine.{point.value}(" + ", ".join(f"{name}=..." for name in missing) + ")"
        scope = "transitions of this curriculum read" if everywhere else "the current phase reads"
        raise CurriculumError(
            f"{point.value}(): the {scope} metrics the loop did not pass: {readers}; passed: {sorted(metrics)}. "
            f"Pass them as {call}. Nothing was counted: call again with them"
        )

    # -- machine callbacks (called by transitions) --------------------------------------------
    # Everything a transition in progress needs travels in its event: event.kwargs["record"] is
    # the record being built (set by _begin, filled by _act, appended by _finish), a manual
    # transition's reason is event.kwargs["reason"], its transition's index event.kwargs["index"]
    # (-1: manual), and event.kwargs["undo"] is the caller's
    # list that _begin fills with what rolls the engine back if a later callback raises. The
    # phase is the machine model's state; trigger() returns whether a transition fired.

    def _trigger(self, trigger: str, **kwargs: Any) -> Record | None:
        undo: list = []
        held_since = dict(self._held_since)  # _decide and _finish replace entries, never mutate them
        try:
            fired = getattr(self._model, trigger)(undo=undo, **kwargs)
        except BaseException:
            if undo:
                self._undo(*undo)
            self._held_since = held_since
            raise
        finally:
            self.ctx.transition = None
        return self._history[-1] if fired else None

    def _holds(self, guard: Any, index: int, event: Any) -> bool:
        ctx = self.ctx
        ctx.transition = self.curriculum.transitions[index]
        try:
            result = guard(ctx)
        except Exception as exc:
            raise self._error(f"guard {describe(guard)}", index, "raised", exc) from exc
        truth = as_bool(result)
        if truth is None:
            raise self._error(
                f"guard {describe(guard)}", index,
                f"returned {type(result).__name__} {_short(result)}, which is not a truth value "
                "(return a bool, e.g. bool(x), or a one-element boolean tensor)", None,
            )
        return truth

    def _decide(self, index: int, event: Any) -> bool:
        """Transition ``index``'s condition: every guard (all_of opened up) evaluated, none skipped,
        and the point since which each has held brought up to date (for the deciding guard)."""
        leaves = self._leaves[index]
        values = [self._holds(g, index, event) for g in leaves]
        before = self._held_since.get(index) or [None] * len(leaves)
        now = (self._clock.global_step, self._clock.epoch)
        self._held_since[index] = [(since or now) if holds else None for holds, since in zip(values, before)]
        return all(values)

    def _decision(self, index: int) -> Decision:
        """The guard that became true last, and since when each guard held (all hold now)."""
        leaves, since = self._leaves[index], self._held_since[index]
        latest = max(since)
        return Decision(
            decided_by=[describe(g) for g, s in zip(leaves, since) if s == latest],
            held_since=[HeldSince(describe(g), s[0], s[1]) for g, s in zip(leaves, since)],
        )

    def _error(self, who: str, index: int | str, what: str, exc: BaseException | None, done: list | None = None) -> CurriculumError:
        ctx, clock = self.ctx, self._clock
        if isinstance(index, str):
            text = f"{who} of the manual transition {index} {what}"
        else:
            text = f"{who} of transition {self.curriculum.transitions[index].label} {what}"
        point = ctx.point.value if ctx.point is not None else "force()"
        if exc is not None:
            text += f" {type(exc).__name__}: {exc}"
        text += f" (at {point}, global step {clock.global_step})"
        if done is not None:
            ran = ", ".join(f"{a.action} -> {a.effect}" for a in done) or "none"
            text += f"; actions that had already run, whose effects on your objects are not undone: {ran}"
        return CurriculumError(text + "; the engine is left as it was before this call (same phase, clock, history and guard state)")

    def _hook_error(self, method: Any, hook: str, exc: BaseException) -> CurriculumError:
        guard = getattr(method, "__self__", method)
        ctx = self.ctx
        point = ctx.point.value if ctx.point is not None else "force()" if self._started else "start()"
        return CurriculumError(
            f"guard {describe(guard)} (in {self._where.get(id(guard), '?')}) raised in {hook}() "
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
            raise self._error(f"action {describe(action)}", index, "raised", exc, done) from exc

    def _begin(self, index: int, event: Any) -> None:
        clock = self._clock
        # What a rollback restores if an action, on_enter or reset of this transition raises.
        event.kwargs["index"] = index
        event.kwargs["undo"][:] = [
            self._model.state, attrs.evolve(clock), len(self._history), len(self._pending),
            [],  # filled by _finish before the resets, the only change to guards a transition makes
        ]
        self.ctx.transition = self.curriculum.transitions[index] if index >= 0 else None
        if index >= 0:
            tr = self.curriculum.transitions[index]
            guards = [GuardEvidence(describe(g), self._evidence(g, index)) for g in tr.guards]
            point, reason, decision = tr.when.value, None, self._decision(index)
        else:
            guards, point, decision = [], _MANUAL, None
            reason = event.kwargs.get("reason")
        event.kwargs["record"] = Record(
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

    def _evidence(self, guard: Any, index: int) -> dict:
        if not hasattr(guard, "evidence"):
            return {"holds": True}
        try:
            return jsonable(guard.evidence(self.ctx) or {})
        except Exception as exc:
            raise self._error(f"guard {describe(guard)}", index, "raised in evidence()", exc) from exc

    def _act(self, action: Any, event: Any) -> None:
        record = event.kwargs["record"]
        index = event.kwargs["index"]
        if index < 0:
            index = f"{record.source} -> {record.dest}"
        effect = self._call_action(action, index, record.actions, record.dest)
        record.actions.append(ActionEffect(describe(action), effect))

    def _enter_clock(self, _event: Any) -> None:
        self._clock.steps_in_phase = 0
        self._clock.epochs_in_phase = 0

    def _finish(self, index: int, event: Any) -> None:
        record = event.kwargs["record"]
        self._held_since = {}  # a phase was entered: its transitions' guards start afresh
        states = event.kwargs["undo"][4]
        states.extend((restore, take()) for take, restore in self._undo_reset[record.dest])
        for reset in self._resetters[record.dest]:
            self._call_hook(reset, "reset")
        self._history.append(record)
        self._add_checks(index, record)
        logger.info("transition %s -> %s at step %d (epoch %d)", record.source, record.dest, record.global_step, record.epoch)

    def _add_checks(self, index: int, record: Record) -> None:
        """Owe a health check at the next step_end for each action of ``record`` with ``verify``."""
        for k, action in enumerate(self._actions_of(index, record.dest)):
            if hasattr(action, "verify"):
                self._pending.append(PendingCheck(record=len(self._history) - 1, transition=index, action=k))

    def _undo(self, phase: str, clock: Clock, n_history: int, n_pending: int, states: list) -> None:
        """Put the engine back as _begin found it (the caller then undoes the count of its call)."""
        self._machine.set_state(phase, model=self._model)
        for field in attrs.fields(Clock):
            setattr(self._clock, field.name, getattr(clock, field.name))
        self._history.truncate(n_history)
        del self._pending[n_pending:]
        self._restore(states)

    @staticmethod
    def _restore(states: list) -> None:
        """Undo what the call did to guards: ``states`` holds ``(restore, token)`` pairs, in the
        order they were taken (see ``_undo_plan``); they are applied in reverse."""
        for restore, token in reversed(states):
            restore(token)

    def _actions_of(self, index: int, dest: str) -> list:
        """The actions a transition ran, in record order: its own, then the destination's on_enter."""
        own = list(self.curriculum.transitions[index].actions) if index >= 0 else []
        return own + list(self._phases[dest].on_enter)

    def _run_checks(self, pending: list[PendingCheck]) -> tuple[int, list[tuple[Record, str]]]:
        """Run the health checks owed from earlier transitions; returns them and their warnings
        without storing anything (``_commit_checks`` does, once the call cannot fail)."""
        out = []
        for check in pending:
            record = self._history[check.record]
            action = self._actions_of(check.transition, record.dest)[check.action]
            try:
                warning = action.verify(self.ctx, record.actions[check.action].effect)
            except Exception as exc:
                raise CurriculumError(
                    f"action {describe(action)}'s verify() (health check after {record.source} -> {record.dest} at step "
                    f"{record.global_step}) raised {type(exc).__name__}: {exc} (at step_end, global step {self._clock.global_step}); "
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
