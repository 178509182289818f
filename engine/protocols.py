"""What a guard or action may offer beyond ``__call__``, as ``typing.Protocol`` types.

Only ``__call__`` is required (see :mod:`engine.core` for the whole protocol). Each optional
member is one small protocol below; :func:`capabilities` looks an object up once, when the
engine's plan is built (:mod:`engine.plan`), so the per-step path calls bound methods it already
holds and never asks ``hasattr``.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

import attrs

from engine.core import Context

__all__ = [
    "Observes",
    "Resets",
    "Undoable",
    "Evidences",
    "SavesState",
    "LoadsState",
    "Requires",
    "Checks",
    "Verifies",
    "Capabilities",
    "capabilities",
]


@runtime_checkable
class Observes(Protocol):
    """A guard with accumulators: fed at its observe points while its phase is current."""

    def observe(self, ctx: Context) -> None: ...


@runtime_checkable
class Resets(Protocol):
    """A guard whose accumulators are cleared when its phase is entered."""

    def reset(self) -> None: ...


@runtime_checkable
class Undoable(Protocol):
    """A guard the engine rolls back in O(1): ``undo(mark())`` puts back the state at ``mark()``
    (after at most one ``observe`` or one ``reset``). Without it the engine copies
    ``state_dict()`` instead."""

    def mark(self) -> Any: ...

    def undo(self, token: Any) -> None: ...


@runtime_checkable
class Evidences(Protocol):
    """A guard that says what made it decide; recorded in the history when its transition fires."""

    def evidence(self, ctx: Context) -> dict: ...


@runtime_checkable
class SavesState(Protocol):
    """A guard whose accumulators are saved with the engine (JSON-safe primitives)."""

    def state_dict(self) -> dict: ...


@runtime_checkable
class LoadsState(Protocol):
    """A guard whose accumulators are restored with the engine."""

    def load_state_dict(self, state: dict) -> None: ...


@runtime_checkable
class Requires(Protocol):
    """A guard or action that needs registered objects (``ctx.<name>``), checked at start and restore."""

    requires: tuple[str, ...]


@runtime_checkable
class Checks(Protocol):
    """A guard or action that checks, once the objects are registered, that it can do its job:
    called at ``start()`` and ``load_state_dict()``; raising there refuses the run before it
    trains (e.g. a restart over a schedule that cannot restart)."""

    def check(self, ctx: Context) -> None: ...


@runtime_checkable
class Verifies(Protocol):
    """An action with a health check, run at the next ``step_end`` after it acted."""

    def verify(self, ctx: Context, effect: dict) -> str | None: ...


@attrs.frozen
class Capabilities:
    """The optional members one guard or action has, as bound methods (None: it has not)."""

    observe: Callable[[Context], None] | None = None
    reset: Callable[[], None] | None = None
    mark: Callable[[], Any] | None = None
    undo: Callable[[Any], None] | None = None
    evidence: Callable[[Context], dict] | None = None
    state_dict: Callable[[], dict] | None = None
    load_state_dict: Callable[[dict], None] | None = None
    check: Callable[[Context], None] | None = None
    verify: Callable[[Context, dict], str | None] | None = None

    @property
    def undoable(self) -> bool:
        return self.mark is not None and self.undo is not None


def capabilities(obj: Any) -> Capabilities:
    """``obj``'s optional members, looked up once."""
    undoable = isinstance(obj, Undoable)
    return Capabilities(
        observe=obj.observe if isinstance(obj, Observes) else None,
        reset=obj.reset if isinstance(obj, Resets) else None,
        mark=obj.mark if undoable else None,
        undo=obj.undo if undoable else None,
        evidence=obj.evidence if isinstance(obj, Evidences) else None,
        state_dict=obj.state_dict if isinstance(obj, SavesState) else None,
        load_state_dict=obj.load_state_dict if isinstance(obj, LoadsState) else None,
        check=obj.check if isinstance(obj, Checks) else None,
        verify=obj.verify if isinstance(obj, Verifies) else None,
    )
