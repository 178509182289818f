"""How a failure inside a guard or an action is reported: who failed, the exception, the call and step,
and what state the engine is left in."""

from __future__ import annotations

import difflib
from typing import Any, Sequence

from engine.core import CurriculumError, Point, describe
from engine.history import ActionEffect

__all__ = ["AS_BEFORE", "call_at", "failed", "start_action_failed", "check_refused", "missing_loss", "hook_failed"]

AS_BEFORE = "the engine is left as it was before this call (same phase, clock, history and guard state)"


def ran(done: Sequence[ActionEffect]) -> str:
    """The actions that had already run, whose effects on the user's objects are not undone."""
    listed = ", ".join(f"{a.action} -> {a.effect}" for a in done) or "none"
    return f"actions that had already run, whose effects on your objects are not undone: {listed}"


def call_at(point: Point | None) -> str:
    """The call a failure happened in: the evaluation point's, or force() (no point)."""
    return point.value if point is not None else "force()"


def failed(text: str, exc: BaseException | None, call: str, step: int, done: Sequence | None = None) -> CurriculumError:
    """``text`` (who of which transition did what), the exception, the call and step, and that the
    engine is as it was (with the actions already run, when ``done`` is given)."""
    if exc is not None:
        text += f" {type(exc).__name__}: {exc}"
    text += f" (at {call}, global step {step})"
    if done is not None:
        text += f"; {ran(done)}"
    return CurriculumError(f"{text}; {AS_BEFORE}")


def start_action_failed(action: Any, phase: str, exc: BaseException, done: Sequence) -> CurriculumError:
    return CurriculumError(
        f"action {describe(action)} (on_enter of {phase!r}) raised at start() {type(exc).__name__}: {exc}; "
        f"{ran(done)}; the engine is left unstarted: fix the cause and call start() again"
    )


def check_refused(what: str, obj: Any, where: str, call: str, exc: BaseException) -> CurriculumError:
    return CurriculumError(
        f"{what} {describe(obj)} (in {where}) refused this run in check() at {call}: "
        f"{type(exc).__name__}: {exc}; nothing was changed: "
        f"fix the objects it works on (or the curriculum) and call {call} again"
    )


def missing_loss(metrics: dict) -> CurriculumError:
    """``step_end()`` without ``loss=``: name a close keyword (a typo) when one was passed."""
    close = difflib.get_close_matches("loss", list(metrics), n=1)
    typo = f"; did you mean loss= (you passed {close[0]}=)?" if close else ""
    return CurriculumError(
        f"step_end() needs the step's training loss as loss=...{typo} (passed: {sorted(metrics)}); "
        "call engine.step_end(loss=..., **other_metrics). Nothing was counted: call again with it"
    )


def hook_failed(method: Any, hook: str, exc: BaseException, where: Any, call: str, step: int) -> CurriculumError:
    """A guard's ``observe`` or ``reset`` raised: name the guard and the transitions that use it."""
    guard = getattr(method, "__self__", method)
    text = f"guard {describe(guard)} (in {where.get(id(guard), '?')}) raised in {hook}()"
    return failed(text, exc, call, step)
