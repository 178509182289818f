"""A saved engine state checked against a curriculum before anything is restored: :func:`check_state`
refuses what this curriculum cannot continue, changing nothing; :func:`load_guards` then loads the
guards' accumulators all or nothing.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs

from engine.core import Clock, Curriculum, CurriculumError, describe, spec_differences
from engine.decide import Since
from engine.health import owe
from engine.plan import Plan, put_back, take_all
from engine.recording import FIX, MetricLog
from engine.state import EngineState, PendingCheck, from_primitives

__all__ = ["Restored", "check_state", "restore_log", "load_guards", "SAVED"]

logger = logging.getLogger("engine.runtime")

SAVED = "pass the dict that engine.state_dict() returned for this curriculum"
_HF_KEY = 'state["stateful_callbacks"]["curriculum_engine"]'  # engine.integrations.hf.STATE_KEY
_CLOCK_FIELDS = [f.name for f in attrs.fields(Clock)]
_WHOLE = {"step_in_epoch": "global_step", "steps_in_phase": "global_step", "epochs_in_phase": "epoch"}
_NO_CONVERSION = " (no conversion is made: a clock of floats, text or bools is not one the engine wrote)"


@attrs.frozen
class Restored:
    """A state that passed every check, with the parts this curriculum keeps."""

    state: EngineState
    pending: list[PendingCheck]
    held_since: dict[int, list[Since | None]]
    recorded: MetricLog | None = None  # the metric log the engine keeps (restore_log); None: it does not record


def check_state(
    data: Any, curriculum: Curriculum, plan: Plan, fingerprint: str, spec: dict, lenient: bool, *, record: bool = False
) -> Restored:
    """``data`` (from ``engine.state_dict()``) checked against ``curriculum``; changes nothing. With
    ``lenient`` (``allow_fingerprint_mismatch=True``) what names another curriculum's phases,
    transitions or guards is left out instead of refused; ``record``: see :func:`restore_log`."""
    _check_raw(data)
    snap = from_primitives(data)
    _check_fingerprint(snap, curriculum, fingerprint, spec, lenient)
    phases = [p.name for p in curriculum.phases]
    if snap.phase not in phases:
        raise CurriculumError(f"engine state's phase {snap.phase!r} is not a phase of this curriculum ({phases})")
    _check_run(snap, curriculum, phases, lenient)
    pending = _restored_pending(snap, curriculum, plan, lenient)
    held_since = _restored_held_since(snap, curriculum, plan, lenient)
    return Restored(snap, pending, held_since, restore_log(snap.recorded, snap.clock, record, lenient))


def _check_raw(data: Any) -> None:
    """What structuring would hide or say less well: a whole HF ``trainer_state.json`` (not the
    engine's part of it), a clock of floats or text (cattrs would make 10.7 and "10" the int 10), or
    whose parts exceed their wholes."""
    if not isinstance(data, dict):
        return  # from_primitives says so
    if "schema_version" not in data and ("stateful_callbacks" in data or "log_history" in data):
        found = "stateful_callbacks" if "stateful_callbacks" in data else "log_history"
        raise CurriculumError(
            f"engine state looks like a whole Hugging Face trainer_state.json (it has {found!r}, no 'schema_version'); "
            f"pass the engine's part of it: engine.load_state_dict({_HF_KEY})"
        )
    clock = data.get("clock")
    if not isinstance(clock, dict):
        return  # from_primitives says so
    for name in _CLOCK_FIELDS:
        value = clock.get(name, 0)
        if type(value) is not int or value < 0:
            raise CurriculumError(
                f"engine state is malformed: clock.{name} must be an int >= 0, got {type(value).__name__} {value!r}"
                f"{'' if type(value) is int else _NO_CONVERSION}; {SAVED}"
            )
    for part, whole in _WHOLE.items():
        if clock.get(part, 0) > clock.get(whole, 0):
            raise CurriculumError(
                f"engine state's clock.{part} ({clock[part]}) is larger than clock.{whole} "
                f"({clock.get(whole, 0)}); {SAVED}"
            )


def restore_log(saved: Any, clock: Clock, record: bool, lenient: bool) -> MetricLog | None:
    """The log a restored engine keeps: the saved one, which must end at the restored ``clock`` (else
    refused, or left out with a warning when ``lenient``); a new one starting at the clock when the
    state has none; None when the engine does not record."""
    if not record:
        if saved is not None:
            logger.warning(
                "the restored engine state has recorded metrics, but this engine was built without "
                "record_metrics=True: its state_dict() will not keep them"
            )
        return None
    fresh = MetricLog(start_step=clock.global_step, start_epoch=clock.epoch)
    log = MetricLog.from_state_dict(saved) if saved is not None else fresh
    end = (log.start_step + log.steps, log.start_epoch + log.epochs)
    if end == (clock.global_step, clock.epoch):
        return log
    problem = (
        f"recorded metrics end at step {end[0]}, epoch {end[1]}, "
        f"but the engine state's clock is at step {clock.global_step}, epoch {clock.epoch}"
    )
    if not lenient:
        raise CurriculumError(f"{problem}; {FIX}, or pass allow_fingerprint_mismatch=True to record afresh from here")
    logger.warning("load_state_dict: left out the recorded metrics: %s; recording afresh from here", problem)
    return fresh


def _check_fingerprint(snap: EngineState, curriculum: Curriculum, fingerprint: str, spec: dict, lenient: bool) -> None:
    mine = fingerprint if snap.fingerprint_version == 2 else curriculum.fingerprint(snap.fingerprint_version)
    if snap.fingerprint == mine or lenient:
        return
    if snap.spec is not None:
        changes = spec_differences(snap.spec, spec) or ["(the specs agree: a guard or action repr is not stable)"]
        what = "what differs (saved -> this one):\n  " + "\n  ".join(changes) + "\n"
    else:
        what = (
            "its phases, transitions, guards, actions or params differ (a schema-1 state stores no spec to compare). "
        )
    raise CurriculumError(
        f"engine state was saved from a different curriculum (fingerprint {snap.fingerprint[:12]}..., "
        f"this one {mine[:12]}...); {what}"
        "Build the curriculum the state was saved with, or pass allow_fingerprint_mismatch=True "
        "to restore what still matches"
    )


def _check_run(snap: EngineState, curriculum: Curriculum, phases: list[str], lenient: bool) -> None:
    """The run the state describes hangs together: started when it has a past, no record later
    than its clock; unless ``lenient``, its records name its phases and end in its phase (an empty
    history in the phase start() enters)."""
    clock, history = snap.clock, snap.history
    if not snap.started:
        ran = [f"{len(history)} history record{'s' if len(history) > 1 else ''}"] if history else []
        ran += [f"clock.{name} = {getattr(clock, name)}" for name in _CLOCK_FIELDS if getattr(clock, name)]
        ran += ["pending health checks"] if snap.pending_checks else []
        if ran:
            raise CurriculumError(
                f"engine state's started is False, but it has {', '.join(ran)}: it claims a run in progress that never "
                f"started; {SAVED} (an engine that ran saves started=True)"
            )
    for k, record in enumerate(history):
        if record.global_step > clock.global_step or record.epoch > clock.epoch:
            raise CurriculumError(
                f"engine state's history[{k}] is at global step {record.global_step} (epoch {record.epoch}), "
                f"later than its clock (global step {clock.global_step}, epoch {clock.epoch}); {SAVED}"
            )
        for end, name in (("source", record.source), ("dest", record.dest)):
            if not lenient and (name is not None and name not in phases or end == "dest" and name is None):
                raise CurriculumError(
                    f"engine state's history[{k}].{end} is {name!r}, not a phase of this curriculum ({phases}); {SAVED}"
                )
    if lenient:
        return  # another curriculum's phases: what the history says of them is not checked
    if not history and snap.phase != curriculum.initial_name:
        raise CurriculumError(
            f"engine state's history is empty but its phase is {snap.phase!r}; a run without records is in the phase "
            f"start() enters ({curriculum.initial_name!r}); {SAVED}"
        )
    if history and history[-1].dest != snap.phase:
        raise CurriculumError(
            f"engine state's last history record (#{len(history) - 1}, {history[-1].source} -> {history[-1].dest}) "
            f"does not end in its phase {snap.phase!r}; {SAVED}"
        )


def _restored_pending(snap: EngineState, curriculum: Curriculum, plan: Plan, lenient: bool) -> list[PendingCheck]:
    """The pending health checks this curriculum owes (those :func:`engine.health.owe` would owe for
    their record); another is refused (left out when ``lenient``: it names another curriculum's actions)."""
    kept, history, transitions = [], snap.history, curriculum.transitions
    for k, check in enumerate(snap.pending_checks):
        record, index, owed = None, check.transition, []
        if 0 <= check.record < len(history):
            record = history[check.record]
            if record.dest in plan.phases and (
                index == -1 or 0 <= index < len(transitions) and transitions[index].dest == record.dest
            ):
                owe(owed, plan.verifies, curriculum, check.record, index, record)
        if check in owed and check.action < len(record.actions):
            kept.append(check)
            continue
        problem = (
            f"points at history record {check.record}, but the history has {len(history)} records"
            if record is None
            else f"names action {check.action} of history record {check.record}, which has {len(record.actions)}; "
            f"this curriculum owes no health check there by transition {index}"
        )
        if not lenient:
            raise CurriculumError(f"engine state's pending_checks[{k}] {problem}; {SAVED}")
        logger.warning("load_state_dict: left out pending health check %d: it %s", k, problem)
    return kept


def _restored_held_since(
    snap: EngineState, curriculum: Curriculum, plan: Plan, lenient: bool
) -> dict[int, list[Since | None]]:
    """``held_since`` for the transitions out of the restored phase; an entry that does not fit
    one is refused (left out when ``lenient``)."""
    held_since, count = {}, len(plan.transitions)
    for key, since in snap.held_since.items():
        index = int(key) if key.isdigit() and int(key) < count else None
        guards = len(plan.transitions[index].leaves) if index is not None else 0
        if (
            index is not None
            and curriculum.transitions[index].source == snap.phase
            and len(since) == guards
            and all(s is None or len(s) == 2 for s in since)
        ):
            held_since[index] = [Since(*s) if s else None for s in since]
        elif not lenient:
            what = (
                f"transition {key} ({curriculum.transitions[index].label}, {guards} guards)"
                if index is not None
                else f"a transition (this curriculum has {count})"
            )
            raise CurriculumError(
                f"engine state's held_since[{key!r}] = {since!r} does not fit {what} out of phase {snap.phase!r}: "
                "expected one [global_step, epoch] or None per guard; "
                "restore it into the curriculum it was saved from, or pass allow_fingerprint_mismatch=True"
            )
    return held_since


def load_guards(plan: Plan, saved: dict[str, Any], lenient: bool) -> None:
    """Load every stateful guard's accumulators, or none: if a guard's ``load_state_dict``
    raises, or what it loaded does not fit it, the guards loaded before it (and it) get back the
    state they had."""
    loading = [s for s in plan.stateful if s.caps.load_state_dict]
    if not lenient:
        for s in loading:
            if s.key not in saved:
                raise CurriculumError(
                    f"engine state has no accumulators for guard {s.key} ({describe(s.guard)}); {SAVED}"
                )
        known = {s.key for s in plan.stateful if s.caps.state_dict or s.caps.load_state_dict}
        unknown = sorted(set(saved) - known)
        if unknown:
            raise CurriculumError(
                f"engine state has accumulators for {', '.join(unknown)}, "
                "which this curriculum has no stateful guard at "
                f"(its stateful guards: {', '.join(sorted(known)) or 'none'}); {SAVED}, "
                "or pass allow_fingerprint_mismatch=True to leave them out"
            )
    loads = [s for s in loading if s.key in saved]
    before = take_all(tuple({id(s.guard): s.caps for s in loads if s.caps.snapshots}.values()))
    for s in loads:
        value, cause = saved[s.key], None
        try:
            s.caps.load_state_dict(value)
        except Exception as exc:
            cause, problem = exc, f"were refused by its load_state_dict(): {type(exc).__name__}: {exc}"
        else:
            # A state that fits the guard reads back as it was saved; one that does not (more values than
            # the window holds, keys the guard does not keep) would be cut or ignored without a word.
            misfit = None if lenient or not s.caps.state_dict else _misfit(value, s.caps.state_dict())
            problem = misfit and f"do not fit it: {misfit}"
        if problem:
            put_back(before)
            raise CurriculumError(
                f"engine state's accumulators for guard {s.key} ({describe(s.guard)}) {problem}; "
                f"nothing was restored (the engine and its guards are as they were); {SAVED}"
            ) from cause


def _misfit(saved: Any, kept: Any, where: str = "") -> str | None:
    """The first place where what a guard kept of ``saved`` (its ``state_dict()`` after loading it)
    differs from ``saved``, as "expected ..., got ..."; None when it kept everything."""
    if isinstance(saved, dict) and isinstance(kept, dict):
        if set(saved) != set(kept):
            return f"expected the keys {sorted(kept)}{where and ' at ' + where}, got {sorted(saved)}"
        return next((m for k in kept if (m := _misfit(saved[k], kept[k], f"{where}[{k!r}]")) is not None), None)
    if isinstance(saved, list) and isinstance(kept, list):
        if len(saved) != len(kept):
            return f"expected at most {len(kept)} values at {where or 'the top'} (what it keeps), got {len(saved)}"
        return next((m for i, (s, k) in enumerate(zip(saved, kept)) if (m := _misfit(s, k, f"{where}[{i}]"))), None)
    if saved != kept:
        return f"expected {kept!r} at {where or 'the top'} (what it keeps of it), got {saved!r}"
    return None
