"""The runtime: :class:`CurriculumEngine`, the engine a training loop drives (docs/semantics.md), a facade
over :mod:`engine.plan`, :mod:`engine.decide`, :mod:`engine.transaction` and :mod:`engine.restore`."""

from __future__ import annotations

import json
import logging
import numbers
import time
from typing import Any

import attrs

from engine import errors, health
from engine.core import Clock, ClockView, Context, Curriculum, CurriculumError, Phase, Point
from engine.decide import Decider
from engine.diagram import to_dot, to_mermaid
from engine.history import History, Record
from engine.metrics import check_metrics, to_metric
from engine.plan import Plan, put_back, take_all
from engine.recording import MetricLog
from engine.restore import check_state, load_guards
from engine.state import SCHEMA_VERSION, EngineState, PendingCheck, to_primitives
from engine.transaction import Firing

__all__ = ["CurriculumEngine"]

logger = logging.getLogger(__name__)

_STEP_END, _EPOCH_END = Point.STEP_END, Point.EPOCH_END  # module constants: the per-step path reads them
_NO_LOSS: Any = object()  # step_end() called without loss=
_RESERVED = frozenset(attrs.fields_dict(Context)) | {"metric"}  # Context attributes an object would shadow


def _check_names(objects: dict[str, Any], where: str) -> None:
    for name in objects:
        if name in _RESERVED or not name.isidentifier() or name.startswith("_"):
            why = f"it would hide Context.{name}" if name in _RESERVED else "expected a public identifier"
            raise CurriculumError(
                f"{where}: cannot register an object named {name!r}: {why}; "
                "choose another name, e.g. model=, optimizer=, schedule="
            )


class CurriculumEngine:
    """Runs a :class:`Curriculum` against a training loop; ``objects`` (``model=...``) are what guards
    and actions reach as ``ctx.<name>`` (or :meth:`bind` them later). Every call is atomic: one that
    raises leaves ``state_dict()`` as it was (docs/semantics.md, "Atomicity" and "Errors")."""

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
        self._unchecked_step = self._unchecked_epoch = True  # has this run checked the metrics there yet?
        self._fingerprint, self._spec = curriculum.fingerprint(), curriculum.spec()
        self._plan = Plan.build(curriculum)
        self._decider = Decider(curriculum, self._plan, self.ctx, self._clock)
        self._machine = Firing(self._decider, self._history, self._pending)
        self._phases = {p.name: p for p in curriculum.phases}

    # -- registration ----------------------------------------------------------------------------

    def bind(self, **objects: Any) -> "CurriculumEngine":
        """Register (or replace, e.g. an optimizer a framework rebuilt) objects guards and actions reach as
        ``ctx.<name>``, before :meth:`start` or :meth:`load_state_dict`; returns the engine."""
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
        """Begin a run in the initial phase (or ``phase``, at ``global_step`` and ``epoch``: a checkpoint
        with weights but no engine state): run its ``on_enter`` actions, record the start and return it."""
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
        clock = self._clock
        clock.global_step, clock.epoch = int(global_step), int(epoch)
        record = Record(
            None, name, clock.global_step, clock.epoch, step_in_epoch=0, point="start", wall_time=time.time()
        )
        try:
            self._machine.start(record)
        except BaseException:
            clock.global_step = clock.epoch = 0
            raise
        self._started = True
        self._decider.held_since = {}
        if self.recorded is not None:  # a fresh stream from the start step
            self.recorded = MetricLog(start_step=clock.global_step, start_epoch=clock.epoch)
        logger.info("start in %s at step %d (epoch %d): %s", name, record.global_step, record.epoch, record.actions)
        return record

    def step_end(self, loss: float = _NO_LOSS, **metrics: float) -> Record | None:
        """After ``optimizer.step()`` and ``schedule.step()``: count the step, evaluate step-end transitions;
        returns the record of the transition that fired, or None."""
        if loss is _NO_LOSS and self._started:
            raise errors.missing_loss(metrics)
        metrics["loss"] = loss
        return self._advance(_STEP_END, metrics)

    def epoch_end(self, **metrics: float) -> Record | None:
        """After the last step of an epoch: count the epoch, evaluate epoch-end transitions (as step_end)."""
        return self._advance(_EPOCH_END, metrics)

    def _advance(self, point: Point, metrics: dict[str, float]) -> Record | None:
        """One evaluation point, all or nothing: check the metrics read here, count the point, run
        the health checks owed (step_end), feed the observers, evaluate the transitions."""
        if not self._started:
            raise CurriculumError(
                f"call engine.start() (fresh run) or engine.load_state_dict(...) (resume) before {point.value}"
            )
        # Validate first: nothing below changes before every input is known to be good.
        for name, value in metrics.items():
            if type(value) is not float:
                metrics[name] = to_metric(name, value, f"{point.value}()")
        at_step = point is _STEP_END
        here = self._machine.here
        plan = here.step_end if at_step else here.epoch_end
        if self._unchecked_step if at_step else self._unchecked_epoch:  # a run's first call here
            check_metrics(self._plan.all_needs[point], metrics, point, everywhere=True)
            if at_step:
                self._unchecked_step = False
            else:
                self._unchecked_epoch = False
        if plan.needs:
            check_metrics(plan.needs, metrics, point)
        ctx, clock = self.ctx, self._clock
        ctx.metrics, ctx.point = metrics, point
        taken = take_all(plan.undo) if plan.undo else None
        step_in_epoch = clock.step_in_epoch
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
                    where, step = self._plan.where, clock.global_step
                    raise errors.hook_failed(observe, "observe", exc, where, point.value, step) from exc
            record = self._machine.evaluate(plan.transitions) if plan.transitions else None
        except BaseException:
            if at_step:
                clock.global_step -= 1
                clock.steps_in_phase -= 1
            else:
                clock.epoch -= 1
                clock.epochs_in_phase -= 1
            clock.step_in_epoch = step_in_epoch
            if taken:
                put_back(taken)
            raise
        if warned is not None:
            health.commit(self._pending, owed, warned)
        if self.recorded is not None:  # the call succeeded and is committed
            self.recorded.append(point.value, metrics)
        return record

    def force(self, dest: str, reason: str) -> Record:
        """Move to ``dest`` by hand (its ``on_enter`` actions run); recorded as a manual transition with ``reason``."""
        if dest not in self._phases:
            raise CurriculumError(f"force(): {dest!r} is not a phase; expected one of {list(self._phases)}")
        if not self._started:
            raise CurriculumError("call engine.start() or engine.load_state_dict(...) before force()")
        self.ctx.metrics, self.ctx.point = {}, None
        return self._machine.force(dest, str(reason))

    # -- what the loop and the user read ------------------------------------------------------

    @property
    def phase(self) -> Phase:
        """The current phase (its ``params`` are for the loop)."""
        return self._phases[self._machine.phase]

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
        return to_mermaid(self.curriculum, current=self._machine.phase)

    def to_dot(self) -> str:
        return to_dot(self.curriculum, current=self._machine.phase)

    # -- state ---------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """JSON-safe primitives: schema, fingerprint, phase, clock, guard accumulators, history, and the
        recorded metric stream (``recorded``, with ``record_metrics=True``; else None)."""
        state = EngineState(
            schema_version=SCHEMA_VERSION,
            fingerprint=self._fingerprint,
            phase=self._machine.phase,
            started=self._started,
            clock=attrs.evolve(self._clock),
            guards={s.key: s.caps.state_dict() for s in self._plan.stateful if s.caps.state_dict},
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
        ``allow_fingerprint_mismatch=True`` leaves out the parts that do not match this curriculum
        instead of refusing them. To read a state without an engine: :func:`engine.saved.open_state`."""
        self._check_requirements("load_state_dict()")
        lenient = allow_fingerprint_mismatch
        restored = check_state(
            state, self.curriculum, self._plan, self._fingerprint, self._spec, lenient, record=self.recorded is not None
        )
        self._check_objects("load_state_dict()")
        snap = restored.state
        load_guards(self._plan, snap.guards, lenient)
        # Everything was checked and the guards are loaded: nothing below can fail.
        self._machine.set_phase(snap.phase, snap.clock)
        self._history.replace(snap.history)
        self._pending[:] = restored.pending
        self._started = snap.started
        self._decider.held_since = restored.held_since
        self._unchecked_step = self._unchecked_epoch = True
        self.recorded = restored.recorded
