"""The runtime: a ``transitions.Machine`` driven by the training loop's clock.

The loop's contract, per optimizer step: ``optimizer.step()``, ``schedule.step()``,
``engine.step_end(loss=..., **metrics)``; after the last step of an epoch,
``engine.epoch_end(**metrics)``. A fresh run calls ``engine.start()`` once before the first step;
a resumed run calls ``engine.load_state_dict(...)`` instead.
"""

from __future__ import annotations

import json
import logging
import time
from functools import partial
from typing import Any

import attrs
from transitions import Machine, State

from engine.core import Clock, ClockView, Context, Curriculum, CurriculumError, Phase, Point, describe
from engine.diagram import to_dot, to_mermaid
from engine.history import ActionEffect, Decision, GuardEvidence, HeldSince, History, Record, jsonable
from engine.state import SCHEMA_VERSION, EngineState, PendingCheck, from_primitives, to_primitives

__all__ = ["CurriculumEngine"]

logger = logging.getLogger(__name__)

_MANUAL = "manual"
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
    action ``requires`` must be registered by :meth:`start` or :meth:`load_state_dict`.
    """

    def __init__(self, curriculum: Curriculum, **objects: Any) -> None:
        if not isinstance(curriculum, Curriculum):
            raise CurriculumError(f"CurriculumEngine needs a Curriculum, got {type(curriculum).__name__}: {curriculum!r}")
        _check_names(objects, "CurriculumEngine")
        self.curriculum = curriculum
        self.objects = dict(objects)
        self._clock = Clock()
        self._clock_view = ClockView(self._clock)
        self._history = History()
        self.ctx = Context(clock=self._clock_view, objects=self.objects, history=self._history.view())
        self._pending: list[PendingCheck] = []
        self._started = False
        self._fingerprint = curriculum.fingerprint()

        phases = curriculum.phases
        self._phases = {p.name: p for p in phases}
        out = {p.name: curriculum.outgoing(p.name) for p in phases}
        self._has_point = {
            point: {name: any(tr.when is point for tr in trs) for name, trs in out.items()} for point in Point
        }
        self._observers = {
            name: [g.observe for tr in trs for g in tr.guards if hasattr(g, "observe")] for name, trs in out.items()
        }
        self._resetters = {
            name: [g.reset for tr in trs for g in tr.guards if hasattr(g, "reset")] for name, trs in out.items()
        }
        # Each transition's guards with all_of opened up, and per transition out of the current
        # phase the (global_step, epoch) since which each has held at every evaluation point.
        self._leaves = [[leaf for g in tr.guards for leaf in _conjuncts(g)] for tr in curriculum.transitions]
        self._held_since: dict[int, list[tuple[int, int] | None]] = {}

        states = [State(p.name, on_enter=[partial(self._act, a) for a in p.on_enter]) for p in phases]
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
        for p in phases:
            self._machine.add_transition(
                trigger=f"_force_{p.name}", source="*", dest=p.name,
                before=[partial(self._begin, -1), self._enter_clock], after=[partial(self._finish, -1)],
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

    def start(self, phase: str | None = None, *, global_step: int = 0, epoch: int = 0) -> None:
        """Begin a run: run the ``on_enter`` actions of the initial phase.

        ``phase``, ``global_step`` and ``epoch`` start elsewhere instead: for a checkpoint that has
        weights but no engine state (the phase then comes from the epochs it completed).
        """
        if self._started:
            raise CurriculumError("engine.start() was already called, or the engine was restored; call it once, on a fresh run only")
        if phase is not None and phase not in self._phases:
            raise CurriculumError(f"start(phase={phase!r}): not a phase; expected one of {list(self._phases)}")
        self._check_requirements("start()")
        if phase is not None:
            self._machine.set_state(phase, model=self._model)
        self._clock.global_step, self._clock.epoch = global_step, epoch
        self._started = True
        self._held_since = {}
        name = self._model.state
        self.ctx.metrics, self.ctx.point = {}, None
        for action in self._phases[name].on_enter:
            effect = action(self.ctx)
            logger.info("start in %s: %s -> %s", name, describe(action), effect)
        for reset in self._resetters[name]:
            reset()

    def step_end(self, loss: float, **metrics: float) -> Record | None:
        """After ``optimizer.step()`` and ``schedule.step()``: count the step, evaluate step-end transitions."""
        if not self._started:
            raise CurriculumError("call engine.start() (fresh run) or engine.load_state_dict(...) (resume) before step_end")
        clock = self._clock
        clock.global_step += 1
        clock.step_in_epoch += 1
        clock.steps_in_phase += 1
        metrics["loss"] = float(loss)
        ctx = self.ctx
        ctx.metrics = metrics
        ctx.point = Point.STEP_END
        if self._pending:
            self._run_checks()
        phase = self._model.state
        for observe in self._observers[phase]:
            observe(ctx)
        if self._has_point[Point.STEP_END][phase]:
            return self._trigger(Point.STEP_END)
        return None

    def epoch_end(self, **metrics: float) -> Record | None:
        """After the last step of an epoch: count the epoch, evaluate epoch-end transitions."""
        if not self._started:
            raise CurriculumError("call engine.start() (fresh run) or engine.load_state_dict(...) (resume) before epoch_end")
        clock = self._clock
        clock.epoch += 1
        clock.epochs_in_phase += 1
        clock.step_in_epoch = 0
        self.ctx.metrics = metrics
        self.ctx.point = Point.EPOCH_END
        if self._has_point[Point.EPOCH_END][self._model.state]:
            return self._trigger(Point.EPOCH_END)
        return None

    def force(self, dest: str, reason: str) -> Record:
        """Move to ``dest`` by hand; recorded as a manual transition with ``reason``."""
        if dest not in self._phases:
            raise CurriculumError(f"force(): {dest!r} is not a phase; expected one of {list(self._phases)}")
        if not self._started:
            raise CurriculumError("call engine.start() or engine.load_state_dict(...) before force()")
        getattr(self._model, f"_force_{dest}")(reason=str(reason))
        return self._history[-1]

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
        )
        try:  # a round trip proves it JSON-safe and shares nothing with the live objects
            return json.loads(json.dumps(to_primitives(state), allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise CurriculumError(
                f"engine state is not JSON-safe ({exc}); every guard's state_dict() must return "
                "plain dicts, lists, str, int, finite float, bool or None"
            ) from None

    def load_state_dict(self, state: dict, *, allow_fingerprint_mismatch: bool = False) -> None:
        """Restore a snapshot into this (freshly built) engine; fires no callback."""
        snap: EngineState = from_primitives(state)
        self._check_requirements("load_state_dict()")
        if snap.fingerprint != self._fingerprint and not allow_fingerprint_mismatch:
            raise CurriculumError(
                f"engine state was saved from a different curriculum (fingerprint {snap.fingerprint[:12]}..., "
                f"this one {self._fingerprint[:12]}...): its phases, transitions, guards or actions differ. "
                "Build the curriculum the state was saved with, or pass allow_fingerprint_mismatch=True "
                "to restore what still matches"
            )
        if snap.phase not in self._phases:
            raise CurriculumError(f"engine state's phase {snap.phase!r} is not a phase of this curriculum ({list(self._phases)})")
        for key, guard in self.curriculum.guards:
            if not hasattr(guard, "load_state_dict"):
                continue
            if key in snap.guards:
                guard.load_state_dict(snap.guards[key])
            elif not allow_fingerprint_mismatch:
                raise CurriculumError(f"engine state has no accumulators for guard {key} ({describe(guard)})")
        self._machine.set_state(snap.phase, model=self._model)
        for field in attrs.fields(Clock):
            setattr(self._clock, field.name, getattr(snap.clock, field.name))
        self._history = History(snap.history)
        self.ctx.history = self._history.view()
        self._pending = list(snap.pending_checks)
        self._started = snap.started
        self._held_since = {}
        for key, since in snap.held_since.items():
            index = int(key) if key.isdigit() else -1
            if 0 <= index < len(self._leaves) and len(since) == len(self._leaves[index]):
                self._held_since[index] = [(s[0], s[1]) if s else None for s in since]
            elif not allow_fingerprint_mismatch:
                raise CurriculumError(f"engine state's held_since[{key!r}] does not match transition {key}'s guards")

    # -- machine callbacks (called by transitions) --------------------------------------------
    # Everything a transition in progress needs travels in its event: ``event.kwargs["record"]``
    # is the record being built (set by _begin, filled by _act, appended by _finish), and a manual
    # transition's reason is ``event.kwargs["reason"]``. The phase is the machine model's state.

    def _trigger(self, point: Point) -> Record | None:
        fired = getattr(self._model, point.value)()
        return self._history[-1] if fired else None

    def _holds(self, guard: Any, _event: Any) -> bool:
        return bool(guard(self.ctx))

    def _decide(self, index: int, event: Any) -> bool:
        """Transition ``index``'s condition: every guard (all_of opened up) evaluated, none skipped,
        and the point since which each has held brought up to date (for the deciding guard)."""
        leaves = self._leaves[index]
        values = [self._holds(g, event) for g in leaves]
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

    def _begin(self, index: int, event: Any) -> None:
        clock = self._clock
        if index >= 0:
            tr = self.curriculum.transitions[index]
            guards = [GuardEvidence(describe(g), self._evidence(g)) for g in tr.guards]
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

    def _evidence(self, guard: Any) -> dict:
        if hasattr(guard, "evidence"):
            return jsonable(guard.evidence(self.ctx) or {})
        return {"holds": True}

    def _act(self, action: Any, event: Any) -> None:
        effect = action(self.ctx)
        event.kwargs["record"].actions.append(ActionEffect(describe(action), jsonable(effect or {})))

    def _enter_clock(self, _event: Any) -> None:
        self._clock.steps_in_phase = 0
        self._clock.epochs_in_phase = 0

    def _finish(self, index: int, event: Any) -> None:
        record = event.kwargs["record"]
        self._held_since = {}  # a phase was entered: its transitions' guards start afresh
        for reset in self._resetters[record.dest]:
            reset()
        self._history.append(record)
        for k, action in enumerate(self._actions_of(index, record.dest)):
            if hasattr(action, "verify"):
                self._pending.append(PendingCheck(record=len(self._history) - 1, transition=index, action=k))
        logger.info("transition %s -> %s at step %d (epoch %d)", record.source, record.dest, record.global_step, record.epoch)

    def _actions_of(self, index: int, dest: str) -> list:
        """The actions a transition ran, in record order: its own, then the destination's on_enter."""
        own = list(self.curriculum.transitions[index].actions) if index >= 0 else []
        return own + list(self._phases[dest].on_enter)

    def _run_checks(self) -> None:
        pending, self._pending = self._pending, []
        for check in pending:
            record = self._history[check.record]
            action = self._actions_of(check.transition, record.dest)[check.action]
            warning = action.verify(self.ctx, record.actions[check.action].effect)
            if warning:
                logger.warning("after %s -> %s at step %d: %s", record.source, record.dest, record.global_step, warning)
                record.warnings.append(str(warning))
