"""The engine's snapshot: an attrs class serialized with cattrs to JSON-safe primitives."""

from __future__ import annotations

from typing import Any

import attrs
import cattrs

from engine.core import Clock, CurriculumError
from engine.history import Record, converter

__all__ = ["SCHEMA_VERSION", "PendingCheck", "EngineState", "converter", "to_primitives", "from_primitives"]

SCHEMA_VERSION = 2


@attrs.define
class PendingCheck:
    """A health check owed by an action of ``history[record]``, run at the next step_end."""

    record: int
    transition: int  # index in curriculum.transitions; -1 for a manual transition
    action: int  # index in the record's actions


@attrs.define
class EngineState:
    schema_version: int
    fingerprint: str
    phase: str
    started: bool
    clock: Clock
    guards: dict[str, Any]
    history: list[Record]
    pending_checks: list[PendingCheck] = attrs.field(factory=list)
    # Per transition out of the phase (its index as text), per guard (all_of opened up): [global_step,
    # epoch] since which it has held, or None; {} in states saved before it existed (a past unknown).
    held_since: dict[str, list[list[int] | None]] = attrs.field(factory=dict)
    spec: dict | None = None  # Curriculum.spec(), to say what differs; None in states from schema 1
    fingerprint_version: int = 2  # the rule the fingerprint was taken with: 1 left params out
    recorded: dict | None = None  # MetricLog.state_dict() when built with record_metrics=True


def to_primitives(state: EngineState) -> dict:
    return converter.unstructure(state)


def from_primitives(data: Any) -> EngineState:
    if not isinstance(data, dict):
        raise CurriculumError(f"engine state must be a dict (from engine.state_dict()), got {type(data).__name__}")
    version = data.get("schema_version")
    if not isinstance(version, int):
        raise CurriculumError(
            f"engine state has no integer 'schema_version' (got {version!r}); it is not an engine state_dict()"
        )
    if version > SCHEMA_VERSION:
        raise CurriculumError(
            f"engine state has schema_version {version}, newer than this library's {SCHEMA_VERSION}; "
            "upgrade the library"
        )
    if version == 1:  # the first release: no spec, a fingerprint without params, no start record
        data = {**data, "schema_version": 2, "spec": None, "fingerprint_version": 1}
    elif version < SCHEMA_VERSION:
        raise CurriculumError(f"no migration from engine state schema_version {version}")
    try:
        return converter.structure(data, EngineState)
    except Exception as exc:  # cattrs raises ClassValidationError groups
        detail = "; ".join(cattrs.transform_error(exc)) if isinstance(exc, cattrs.BaseValidationError) else str(exc)
        raise CurriculumError(f"engine state is malformed: {detail}") from None
