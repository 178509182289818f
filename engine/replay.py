"""Replay: would another rule have changed phase, and when? Recorded metrics through a fresh engine that
runs no action; faithful only up to its :class:`Departure`, the first decision that differs from the
recorded run (after it, the recorded metrics no longer follow from the rule). See docs/observability.md.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any, Iterable, Mapping, Sequence

import attrs

from engine.core import Curriculum, CurriculumError, Phase, Point, Transition, describe
from engine.history import History, Record
from engine.runtime import CurriculumEngine

__all__ = ["Departure", "Replay", "replay"]

_POINTS = (Point.STEP_END.value, Point.EPOCH_END.value)
_ORDER = {Point.STEP_END.value: 0, Point.EPOCH_END.value: 1}  # at one step: step_end, then epoch_end, then by hand


@attrs.frozen(repr=False, eq=False)
class _NotRun:
    """An action that a replay does not run: only its text, for the history and the fingerprint."""

    text: str

    def __call__(self, ctx: Any) -> None:
        return None

    def __repr__(self) -> str:
        return self.text


def _key(record: Record) -> tuple:
    return record.source, record.dest, record.global_step, record.point


def _when(record: Record) -> tuple[int, int]:
    return record.global_step, _ORDER.get(record.point, 2)


@attrs.frozen
class Departure:
    """The first point where the replay decides otherwise than the recorded run: ``replayed`` and
    ``recorded`` are each one's transition there (None: it stayed), ``recorded_next`` the recorded
    run's next one when the replay moved first. After it the replayed history is not evidence."""

    global_step: int
    epoch: int
    replayed: Record | None
    recorded: Record | None
    recorded_next: Record | None = None

    def text(self) -> str:
        where = f"at step {self.global_step} (epoch {self.epoch})"
        rep, rec = self.replayed, self.recorded
        if rec is not None and rec.point not in _POINTS:
            what = (
                f"{where} the recorded run was moved {rec.source} -> {rec.dest} by hand"
                f"{f' ({rec.reason})' if rec.reason else ''}, which a replay does not repeat"
            )
        elif rep is not None and rec is not None:
            what = (
                f"{where} the replay moves {rep.source} -> {rep.dest} "
                f"where the recorded run moved {rec.source} -> {rec.dest}"
            )
        elif rep is not None:
            later = f" until step {self.recorded_next.global_step}" if self.recorded_next is not None else ""
            what = (
                f"{where} the replay moves {rep.source} -> {rep.dest}; the recorded run stayed in {rep.source}{later}"
            )
        else:
            assert rec is not None
            what = f"{where} the recorded run moved {rec.source} -> {rec.dest}; the replay stays in {rec.source}"
        return what + "; from here the recorded metrics no longer follow from this curriculum"


@attrs.frozen
class Replay:
    """The result of :func:`replay`: the replayed history, how much was fed, and the departure."""

    history: History
    steps: int
    epochs: int
    departure: Departure | None = None

    def faithful(self) -> list[Record]:
        """The replayed records up to and including the departure (all of them when there is none)."""
        if self.departure is None:
            return list(self.history)
        limit = (self.departure.global_step, 1)
        return [r for r in self.history if _when(r) <= limit]


def _dry(curriculum: Curriculum, copy_guards: bool) -> Curriculum:
    """The same curriculum with every action replaced by a stand-in with its text; fresh guards."""
    guards = [tr.guards for tr in curriculum.transitions]
    if copy_guards:
        try:
            guards = copy.deepcopy(guards)  # one call: guards shared between transitions stay shared
        except Exception as exc:
            raise CurriculumError(
                f"replay copies the curriculum's guards so that their accumulators start empty, and one "
                f"cannot be copied ({type(exc).__name__}: {exc}); "
                "pass a freshly built curriculum with copy_guards=False"
            ) from None
    phases = [
        Phase(p.name, params=p.params, on_enter=[_NotRun(describe(a)) for a in p.on_enter]) for p in curriculum.phases
    ]
    transitions = [
        Transition(tr.source, tr.dest, guards=g, actions=[_NotRun(describe(a)) for a in tr.actions], when=tr.when)
        for tr, g in zip(curriculum.transitions, guards)
    ]
    return Curriculum(phases, transitions, initial=curriculum.initial)


def _point(index: int, item: Any) -> tuple[str, dict]:
    try:
        point, values = item
    except (TypeError, ValueError):
        point, values = None, None
    point = getattr(point, "value", point)
    if point not in _POINTS or not isinstance(values, Mapping):
        raise CurriculumError(
            f"replay: metrics[{index}] must be a pair ('step_end' or 'epoch_end', {{name: value}}), got {item!r}; "
            "pass one ('step_end', {'loss': ...}) per optimizer step "
            "and ('epoch_end', {...}) after each epoch's last step"
        )
    if point == Point.STEP_END.value and "loss" not in values:
        raise CurriculumError(
            f"replay: metrics[{index}] is a step_end without 'loss' ({sorted(values)}); every step needs its loss"
        )
    return point, dict(values)


def _departure(replayed: Sequence[Record], recorded: Sequence[Record], steps: int) -> Departure | None:
    """Walk both decision sequences in order; the first difference within the replayed steps."""
    rep = [r for r in replayed if r.point in _POINTS]
    rec = [r for r in recorded if r.source is not None and r.point != "start"]
    for a, b in itertools.zip_longest(rep, rec):
        if b is not None and b.global_step > steps:
            b = None  # the recorded run moved after the metrics we have: nothing to compare
        if a is not None and b is not None and _key(a) == _key(b):
            continue
        if a is None and b is None:
            return None
        if a is not None and b is not None and _when(a) != _when(b):
            if _when(a) < _when(b):
                return Departure(a.global_step, a.epoch, a, None, recorded_next=b)
            return Departure(b.global_step, b.epoch, None, b)
        if b is None:
            return Departure(a.global_step, a.epoch, a, None)
        return Departure(b.global_step, b.epoch, a, b)
    return None


def replay(
    curriculum: Curriculum,
    metrics: Iterable[tuple[str | Point, Mapping[str, float]]],
    *,
    recorded: Sequence[Record] | None = None,
    copy_guards: bool = True,
    **objects: Any,
) -> Replay:
    """Feed ``metrics``, the run's ``("step_end", {"loss": ..., ...})`` and ``("epoch_end", {...})``
    calls in order, to a fresh engine on ``curriculum`` (its guards deep-copied unless
    ``copy_guards=False``; ``objects`` registered with it); run no action. With ``recorded`` (the
    run's history) the result's ``departure`` is the first decision that differs; a manual
    transition is one, since a replay does not repeat it."""
    if not isinstance(curriculum, Curriculum):
        raise CurriculumError(f"replay needs a Curriculum, got {type(curriculum).__name__}: {curriculum!r}")
    engine = CurriculumEngine(_dry(curriculum, copy_guards), **objects)
    engine.start()
    steps = epochs = 0
    for index, item in enumerate(metrics):
        point, values = _point(index, item)
        if point == Point.STEP_END.value:
            engine.step_end(values.pop("loss"), **values)
            steps += 1
        else:
            engine.epoch_end(**values)
            epochs += 1
    history = History(list(engine.history))
    departure = _departure(history, recorded, steps) if recorded is not None else None
    return Replay(history=history, steps=steps, epochs=epochs, departure=departure)
