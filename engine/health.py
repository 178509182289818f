"""Health checks: an action's ``verify(ctx, effect)``, owed when it acts, saved with the engine, and run
at the next ``step_end`` (docs/semantics.md); a warning is kept only once the call cannot fail."""

from __future__ import annotations

import logging
from typing import Any, Callable

import attrs

from engine.core import Context, Curriculum, describe
from engine.errors import failed
from engine.history import Record
from engine.state import PendingCheck

__all__ = ["actions_of", "verifies_of", "owe", "run", "commit", "Warned"]

logger = logging.getLogger("engine.runtime")


def actions_of(curriculum: Curriculum, index: int, dest: str) -> list:
    """The actions a transition ran, in record order: its own (none for a manual one, ``index``
    -1), then the destination's on_enter."""
    own = list(curriculum.transitions[index].actions) if index >= 0 else []
    return own + list(curriculum.phase(dest).on_enter)


def verifies_of(curriculum: Curriculum) -> dict[int, Callable]:
    """id(action) -> its ``verify`` method, for every action of ``curriculum`` that has one."""
    actions = [a for p in curriculum.phases for a in p.on_enter] + [
        a for t in curriculum.transitions for a in t.actions
    ]
    return {id(a): a.verify for a in actions if callable(getattr(a, "verify", None))}


def owe(
    pending: list[PendingCheck], verifies: dict, curriculum: Curriculum, at: int, index: int, record: Record
) -> None:
    """Owe a check for each action of ``record`` (``history[at]``, by transition ``index``) with ``verify``."""
    for k, action in enumerate(actions_of(curriculum, index, record.dest)):
        if id(action) in verifies:
            pending.append(PendingCheck(record=at, transition=index, action=k))


@attrs.frozen
class Warned:
    """What one check said: the record that owed it and its warning."""

    record: Record
    text: str


def run(
    pending: list[PendingCheck], verifies: dict, curriculum: Curriculum, history: Any, ctx: Context
) -> list[Warned]:
    """Run the checks owed; returns their warnings and stores nothing (:func:`commit` does)."""
    out = []
    for check in pending:
        record = history[check.record]
        action = actions_of(curriculum, check.transition, record.dest)[check.action]
        try:
            warning = verifies[id(action)](ctx, record.actions[check.action].effect)
        except Exception as exc:
            after = f"{record.source} -> {record.dest} at step {record.global_step}"
            who = f"action {describe(action)}'s verify() (health check after {after}) raised"
            raise failed(who, exc, "step_end", ctx.clock.global_step) from exc
        if warning:
            out.append(Warned(record, str(warning)))
    return out


def commit(pending: list[PendingCheck], count: int, warned: list[Warned]) -> None:
    """The call succeeded: log the warnings, keep them on their records, drop the ``count`` checks run."""
    for w in warned:
        logger.warning("after %s -> %s at step %d: %s", w.record.source, w.record.dest, w.record.global_step, w.text)
        w.record.warnings.append(w.text)
    del pending[:count]
