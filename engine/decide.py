"""Deciding: which transition out of the current phase fires at this point, and which guard decided it
(the one that became true last: every guard is evaluated, none skipped; docs/semantics.md)."""

from __future__ import annotations

from typing import Any

import attrs

from engine.core import Clock, Context, Curriculum, CurriculumError, describe, truth_value
from engine.errors import call_at, failed
from engine.history import Decision, HeldSince
from engine.plan import Plan

__all__ = ["Since", "Decider"]


@attrs.define(order=True)
class Since:
    """The evaluation point since which a guard has held."""

    global_step: int
    epoch: int


@attrs.define(eq=False)
class Decider:
    """The guards' ``held_since`` for the transitions out of the current phase, and the decision."""

    curriculum: Curriculum
    plan: Plan
    ctx: Context
    clock: Clock
    # Per transition index: per guard (all_of opened up), the point since which it has held, or None.
    held_since: dict[int, list[Since | None]] = attrs.field(factory=dict)

    def first(self, indexes: tuple[int, ...]) -> int | None:
        """The first of the transitions ``indexes`` whose guards all hold, or None."""
        for index in indexes:
            if self._all_hold(index):
                return index
        return None

    def _all_hold(self, index: int) -> bool:
        leaves = self.plan.transitions[index].leaves
        self.ctx.transition = self.curriculum.transitions[index]
        values = [self._holds(g, index) for g in leaves]
        before = self.held_since.get(index) or [None] * len(leaves)
        if any(holds and since is None for holds, since in zip(values, before)):  # a guard began to hold now
            now = Since(self.clock.global_step, self.clock.epoch)
            before = [since or now for since in before]
        # A new list, never a mutation: the caller puts the old dict back when the call fails.
        self.held_since[index] = [since if holds else None for holds, since in zip(values, before)]
        return all(values)

    def _holds(self, guard: Any, index: int) -> bool:
        try:
            result = guard(self.ctx)
        except Exception as exc:
            where = self.curriculum.transitions[index].label
            raise self._failed(f"guard {describe(guard)} of transition {where} raised", exc) from exc
        if result is True or result is False:
            return result
        try:
            return truth_value(guard, result, f" of transition {self.curriculum.transitions[index].label}")
        except CurriculumError as exc:
            raise self._failed(str(exc), None) from None

    def _failed(self, text: str, exc: BaseException | None) -> CurriculumError:
        return failed(text, exc, call_at(self.ctx.point), self.clock.global_step)

    def decision(self, index: int) -> Decision:
        """The guard that became true last, and since when each guard held (all hold now)."""
        leaves, since = self.plan.transitions[index].leaves, self.held_since[index]
        latest = max(s for s in since if s is not None)
        return Decision(
            decided_by=[describe(g) for g, s in zip(leaves, since) if s == latest],
            held_since=[HeldSince(describe(g), s.global_step, s.epoch) for g, s in zip(leaves, since) if s],
        )

    def saved(self) -> dict[str, list[list[int] | None]]:
        """``held_since`` as the engine state stores it."""
        return {str(i): [[s.global_step, s.epoch] if s else None for s in v] for i, v in self.held_since.items()}
