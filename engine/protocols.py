"""The guard and action protocols: every member the engine asks of them, listed here and nowhere else.

A guard is a callable ``guard(ctx) -> bool`` that decides without side effects; an action is a
callable ``action(ctx) -> dict | None`` that acts (the dict is its recorded effect). Both read like
the call that made them (their repr is in the fingerprint, the history and the diagrams). Every
other member is optional:

===================  ======  =====================================================================
member               of      what the engine does with it
===================  ======  =====================================================================
``requires``         both    registered objects it needs (``ctx.<name>``), checked at ``start()``
                             and ``load_state_dict()``
``check(ctx)``       both    called once there, objects registered: raise to refuse the run
``metrics``          guard   the metrics it reads, checked at a run's first call: at its observe
                             points when it has ``observe``, else at its transition's point
``observe(ctx)``     guard   accumulate, at ``observe_at`` while its phase is current
``observe_at``       guard   where ``observe`` is called: ``(Point.STEP_END,)`` by default; None:
                             at its transition's own point
``reset()``          guard   clear the accumulators, when its phase is entered
``evidence(ctx)``    guard   what made it decide, recorded when its transition fires
``state_dict()``,    guard   its accumulators as new JSON-safe primitives, saved with the engine;
``load_state_dict``          a call that raises is undone by loading the copy taken before it
``guards``           guard   a combinator's children: the engine opens it (depth first) to
                             observe, reset, check and read the declarations of the guards inside;
                             an :class:`AllOf`'s are weighed one by one for the deciding guard
``verify(ctx, e)``   action  a health check at the next ``step_end`` (:mod:`engine.health`)
``adapt_schedule``   action  for the framework callbacks: the framework's own LR scheduler in, the
                             schedule to register out (``RestartLR``: made restartable)
===================  ======  =====================================================================

:func:`capabilities` looks the methods up once, when the engine's plan is built
(:mod:`engine.plan`), so the per-step path calls bound methods it already holds.
"""

from __future__ import annotations

from typing import Any, Callable

import attrs

from engine.core import Context

__all__ = ["AllOf", "Capabilities", "capabilities"]


class AllOf:
    """The base of a guard that holds when all of its ``guards`` do (``policies.all_of``): the
    engine weighs them one by one, as a transition's own guards, for the deciding guard."""

    guards: tuple


@attrs.frozen
class Capabilities:
    """The optional methods one guard or action has, bound (None: it has not)."""

    observe: Callable[[Context], None] | None = None
    reset: Callable[[], None] | None = None
    evidence: Callable[[Context], dict] | None = None
    state_dict: Callable[[], dict] | None = None
    load_state_dict: Callable[[dict], None] | None = None
    check: Callable[[Context], None] | None = None

    @property
    def snapshots(self) -> bool:
        """It can be copied and put back (``state_dict`` and ``load_state_dict``)."""
        return self.state_dict is not None and self.load_state_dict is not None


def capabilities(obj: Any) -> Capabilities:
    """``obj``'s optional methods, looked up once."""
    methods = {f.name: getattr(obj, f.name, None) for f in attrs.fields(Capabilities)}
    return Capabilities(**{name: m if callable(m) else None for name, m in methods.items()})
