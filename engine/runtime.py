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

from engine.core import Clock, Context, Curriculum, CurriculumError, Phase, Point, describe
from engine.diagram import to_dot, to_mermaid
from engine.history import ActionEffect, GuardEvidence, History, Record, jsonable
from engine.state import SCHEMA_VERSION, EngineState, PendingCheck, from_primitives, to_primitives

__all__ = ["CurriculumEngine"]

logger = logging.getLogger(__name__)

# At INFO, transitions logs every callback (~50 us each); decisions are in our history instead.
_transitions_logger = logging.getLogger("transitions")
if _transitions_logger.level == logging.NOTSET:
    _transitions_logger.setLevel(logging.WARNING)

_MANUAL = "manual"


class _MachineModel:
    """The object whose ``state`` the machine drives (a plain class: slotted attrs cannot be)."""

    state: str


class CurriculumEngine:
    """Runs a :class:`Curriculum` against a training loop.

    ``objects`` are what guards and actions use, reachable on the context as ``ctx.<name>``
    (``optimizer=...``, ``model=...``, ``schedule=...``).
    """

    def __init__(self, curriculum: Curriculum, **objects: Any) -> None:
        if not isinstance(curriculum, Curriculum):
            raise CurriculumError(f"CurriculumEngine needs a Curriculum, got {type(curriculum).__name__}: {curriculum!r}")
        for name, users in curriculum.requirements().items():
            if name not in objects:
                raise CurriculumError(
                    f"{', '.join(users)} requires a registered object {name!r}, which was not passed "
                    f"(registered: {sorted(objects)}); build the engine as CurriculumEngine(curriculum, {name}=...)"
                )
        self.curriculum = curriculum
        self.objects = dict(objects)
        self.clock = Clock()
        self.ctx = Context(clock=self.clock, objects=self.objects)
        self._history = History()
        self._pending: list[PendingCheck] = []
        self._started = False
        self._fingerprint = curriculum.fingerprint()
        self._building: Record | None = None  # the record of the transition in progress
        self._building_index = -1  # its index in curriculum.transitions (-1: manual)
        self._firing: tuple[int, str] | None = None  # (transition index or -1, manual reason)

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
                conditions=[partial(self._holds, g) for g in tr.guards],
                before=[partial(self._begin, i)] + [partial(self._act, a) for a in tr.actions] + [self._enter_clock],
                after=[self._finish],
            )
        for p in phases:
            self._machine.add_transition(
                trigger=f"_force_{p.name}", source="*", dest=p.name,
                before=[partial(self._begin, -1), self._enter_clock], after=[self._finish],
            )
        self._phase = curriculum.initial_name

    # -- the loop's calls ---------------------------------------------------------------------

    def start(self, phase: str | None = None, *, global_step: int = 0, epoch: int = 0) -> None:
        """Begin a run: run the ``on_enter`` actions of the initial phase.

        ``phase``, ``global_step`` and ``epoch`` start elsewhere instead: for a checkpoint that has
        weights but no engine state (the phase then comes from the epochs it completed).
        """
        if self._started:
            raise CurriculumError("engine.start() was already called, or the engine was restored; call it once, on a fresh run only")
        if phase is not None:
            if phase not in self._phases:
                raise CurriculumError(f"start(phase={phase!r}): not a phase; expected one of {list(self._phases)}")
            self._machine.set_state(phase, model=self._model)
            self._phase = phase
        self.clock.global_step, self.clock.epoch = global_step, epoch
        self._started = True
        self.ctx.metrics, self.ctx.point = {}, None
        for action in self._phases[self._phase].on_enter:
            effect = action(self.ctx)
            logger.info("start in %s: %s -> %s", self._phase, describe(action), effect)
        for reset in self._resetters[self._phase]:
            reset()

    def step_end(self, loss: float, **metrics: float) -> Record | None:
        """After ``optimizer.step()`` and ``schedule.step()``: count the step, evaluate step-end transitions."""
        if not self._started:
            raise CurriculumError("call engine.start() (fresh run) or engine.load_state_dict(...) (resume) before step_end")
        clock = self.clock
        clock.global_step += 1
        clock.step_in_epoch += 1
        clock.steps_in_phase += 1
        metrics["loss"] = float(loss)
        ctx = self.ctx
        ctx.metrics = metrics
        ctx.point = Point.STEP_END
        if self._pending:
            self._run_checks()
        for observe in self._observers[self._phase]:
            observe(ctx)
        if self._has_point[Point.STEP_END][self._phase]:
            return self._trigger(Point.STEP_END)
        return None

    def epoch_end(self, **metrics: float) -> Record | None:
        """After the last step of an epoch: count the epoch, evaluate epoch-end transitions."""
        if not self._started:
            raise CurriculumError("call engine.start() (fresh run) or engine.load_state_dict(...) (resume) before epoch_end")
        clock = self.clock
        clock.epoch += 1
        clock.epochs_in_phase += 1
        clock.step_in_epoch = 0
        self.ctx.metrics = metrics
        self.ctx.point = Point.EPOCH_END
        if self._has_point[Point.EPOCH_END][self._phase]:
            return self._trigger(Point.EPOCH_END)
        return None

    def force(self, dest: str, reason: str) -> Record:
        """Move to ``dest`` by hand; recorded as a manual transition with ``reason``."""
        if dest not in self._phases:
            raise CurriculumError(f"force(): {dest!r} is not a phase; expected one of {list(self._phases)}")
        if not self._started:
            raise CurriculumError("call engine.start() or engine.load_state_dict(...) before force()")
        self._firing = (-1, str(reason))
        try:
            getattr(self._model, f"_force_{dest}")()
        finally:
            self._firing = None
        return self._history[-1]

    # -- what the loop and the user read ------------------------------------------------------

    @property
    def phase(self) -> Phase:
        return self._phases[self._phase]

    @property
    def history(self) -> History:
        return self._history

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def to_mermaid(self) -> str:
        return to_mermaid(self.curriculum, current=self._phase)

    def to_dot(self) -> str:
        return to_dot(self.curriculum, current=self._phase)

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
            phase=self._phase,
            started=self._started,
            clock=attrs.evolve(self.clock),
            guards=guards,
            history=list(self._history),
            pending_checks=list(self._pending),
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
        self._phase = snap.phase
        for field in attrs.fields(Clock):
            setattr(self.clock, field.name, getattr(snap.clock, field.name))
        self._history = History(snap.history)
        self._pending = list(snap.pending_checks)
        self._started = snap.started

    # -- machine callbacks (called by transitions) --------------------------------------------

    def _trigger(self, point: Point) -> Record | None:
        before = len(self._history)
        getattr(self._model, point.value)()
        return self._history[-1] if len(self._history) > before else None

    def _holds(self, guard: Any, _event: Any) -> bool:
        return bool(guard(self.ctx))

    def _begin(self, index: int, event: Any) -> None:
        clock = self.clock
        if index >= 0:
            tr = self.curriculum.transitions[index]
            guards = [GuardEvidence(describe(g), self._evidence(g)) for g in tr.guards]
            point, reason = tr.when.value, None
        else:
            guards, point = [], _MANUAL
            reason = self._firing[1] if self._firing else None
        self._building = Record(
            source=event.transition.source,
            dest=event.transition.dest,
            global_step=clock.global_step,
            epoch=clock.epoch,
            step_in_epoch=clock.step_in_epoch,
            point=point,
            wall_time=time.time(),
            guards=guards,
            reason=reason,
        )
        self._building_index = index

    def _evidence(self, guard: Any) -> dict:
        if hasattr(guard, "evidence"):
            return jsonable(guard.evidence(self.ctx) or {})
        return {"holds": True}

    def _act(self, action: Any, _event: Any) -> None:
        effect = action(self.ctx)
        if self._building is not None:
            self._building.actions.append(ActionEffect(describe(action), jsonable(effect or {})))

    def _enter_clock(self, _event: Any) -> None:
        self.clock.steps_in_phase = 0
        self.clock.epochs_in_phase = 0

    def _finish(self, event: Any) -> None:
        record, index = self._building, self._building_index
        self._building = None
        self._phase = event.transition.dest
        for reset in self._resetters[self._phase]:
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
