"""The engine's plan: what each call does, per phase and evaluation point, worked out once when the
engine is made, so the per-step path looks up one :class:`PointPlan` and never asks what a guard has."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import attrs

from engine.core import Curriculum, Point, describe, guard_leaves, metrics_read, observe_points
from engine.health import verifies_of
from engine.protocols import AllOf, Capabilities, capabilities

__all__ = [
    "Taken",
    "Stateful",
    "PointPlan",
    "PhasePlan",
    "TransitionPlan",
    "Checked",
    "Plan",
    "conjuncts",
    "take_all",
    "put_back",
]


@attrs.define
class Taken:
    """One guard's state before a call, and how to put it back."""

    put: Callable[[Any], None]
    state: Any


def take_all(guards: tuple[Capabilities, ...]) -> list[Taken]:
    """Copies of the guards' states (``state_dict()``), to put back with ``load_state_dict()``."""
    return [Taken(c.load_state_dict, c.state_dict()) for c in guards]


def put_back(taken: list[Taken]) -> None:
    """Put the states back, the last taken first."""
    for t in reversed(taken):
        t.put(t.state)


def conjuncts(guard: Any) -> list:
    """The guards whose AND ``guard`` is, opened up recursively (an :class:`AllOf`'s ``guards``)."""
    return [leaf for g in guard.guards for leaf in conjuncts(g)] if isinstance(guard, AllOf) else [guard]


def snapshot_plan(leaves: list, caps: Mapping[int, Capabilities]) -> tuple[Capabilities, ...]:
    """The guards to copy before a call that may change ``leaves`` (by ``observe`` or ``reset``), to undo
    it: those with ``state_dict`` and ``load_state_dict`` (without, no saved state can change)."""
    return tuple(c for c in {id(leaf): caps[id(leaf)] for leaf in leaves}.values() if c.snapshots)


@attrs.frozen
class Stateful:
    """A transition's guard whose accumulators are saved with the engine, under ``key``."""

    key: str  # "t<transition>.g<guard>"
    guard: Any
    caps: Capabilities


@attrs.frozen
class PointPlan:
    """What ``step_end`` or ``epoch_end`` does in one phase."""

    needs: Mapping[str, list[str]]  # metrics read here -> who reads them (step_end's loss left out: always passed)
    observers: tuple[Callable, ...]  # observe methods, in declaration order
    undo: tuple[Capabilities, ...]  # the guards to copy to undo the observations, when something can fail after one
    transitions: tuple[int, ...]  # the transitions out of the phase evaluated here, in declaration order


@attrs.frozen
class PhasePlan:
    """Per phase: the two points' plans, and what entering the phase does to guards."""

    step_end: PointPlan
    epoch_end: PointPlan
    resetters: tuple[Callable[[], None], ...]  # reset methods of the guards on transitions out of it
    undo_reset: tuple[Capabilities, ...]  # the guards to copy to undo those resets


@attrs.frozen
class TransitionPlan:
    """Per transition: its guards with all_of opened up (each evaluated, for the deciding guard),
    and its top-level guards with their ``evidence`` methods (None: ``{"holds": True}``)."""

    leaves: tuple[Any, ...]
    evidence: tuple[tuple[Any, Callable | None], ...]


@attrs.frozen
class Checked:
    """A guard's or action's ``check(ctx)``, with where it is used (for the message)."""

    obj: Any
    check: Callable
    what: str  # "guard" or "action"
    where: str  # "transition a -> b" or "on_enter of 'b'"
    index: int | None  # its transition, None for on_enter


@attrs.frozen
class Plan:
    """Everything the engine looks up per call, built once from the curriculum."""

    phases: Mapping[str, PhasePlan]
    transitions: tuple[TransitionPlan, ...]
    all_needs: Mapping[Point, Mapping[str, list[str]]]  # per point: every metric any transition reads there
    where: Mapping[int, str]  # id(guard) -> the transitions that use it, for messages
    stateful: tuple[Stateful, ...]  # every transition's top-level guards
    checks: tuple[Checked, ...]
    verifies: Mapping[int, Callable]  # id(action) -> its verify method (engine.health)

    @classmethod
    def build(cls, curriculum: Curriculum) -> "Plan":
        names = [p.name for p in curriculum.phases]
        caps: dict[int, Capabilities] = {}

        def cap(obj: Any) -> Capabilities:
            return caps.get(id(obj)) or caps.setdefault(id(obj), capabilities(obj))

        where: dict[int, str] = {}
        out_of: dict[Point, dict[str, list[int]]] = {point: {n: [] for n in names} for point in Point}
        needs: dict[Point, dict[str, dict[str, list[str]]]] = {point: {n: {} for n in names} for point in Point}
        all_needs: dict[Point, dict[str, list[str]]] = {point: {} for point in Point}
        observed: dict[Point, dict[str, list]] = {point: {n: [] for n in names} for point in Point}
        reset: dict[str, list] = {n: [] for n in names}
        checks: dict[int, Checked] = {}  # id(obj) -> its check, at its first use

        def add_check(obj: Any, what: str, place: str, index: int | None) -> None:
            if cap(obj).check is not None:
                checks.setdefault(id(obj), Checked(obj, cap(obj).check, what, place, index))

        for phase in curriculum.phases:
            for action in phase.on_enter:
                add_check(action, "action", f"on_enter of {phase.name!r}", None)
        for i, tr in enumerate(curriculum.transitions):
            out_of[tr.when][tr.source].append(i)
            for top in tr.guards:
                leaves = list(guard_leaves(top))
                add_check(top, "guard", f"transition {tr.label}", i)
                reset[tr.source] += [leaf for leaf in leaves if cap(leaf).reset]
                for point in Point:
                    observed[point][tr.source] += [
                        leaf for leaf in leaves if cap(leaf).observe and point in observe_points(leaf, tr.when)
                    ]
                for leaf in leaves:
                    add_check(leaf, "guard", f"transition {tr.label}", i)
                    where[id(leaf)] = f"{where[id(leaf)]}, {tr.label}" if id(leaf) in where else tr.label
                    for point in Point:
                        for metric in metrics_read(leaf, tr.when, point):
                            who = f"{describe(leaf)} in {tr.label}"
                            all_needs[point].setdefault(metric, []).append(who)
                            if not (point is Point.STEP_END and metric == "loss"):
                                needs[point][tr.source].setdefault(metric, []).append(who)
            for action in tr.actions:
                add_check(action, "action", f"transition {tr.label}", i)

        def point_plan(point: Point, name: str) -> PointPlan:
            observers = tuple(cap(leaf).observe for leaf in observed[point][name])
            # Undo observations only where something can fail after one was made: a second
            # observer, or guards and actions evaluated at this point.
            can_fail = len(observers) > 1 or bool(out_of[point][name])
            return PointPlan(
                needs=needs[point][name],
                observers=observers,
                undo=snapshot_plan(observed[point][name], caps) if can_fail else (),
                transitions=tuple(out_of[point][name]),
            )

        phases = {
            n: PhasePlan(
                step_end=point_plan(Point.STEP_END, n),
                epoch_end=point_plan(Point.EPOCH_END, n),
                # bound methods compare their object by identity: one reset per guard
                resetters=tuple(dict.fromkeys(cap(leaf).reset for leaf in reset[n])),
                undo_reset=snapshot_plan(reset[n], caps),
            )
            for n in names
        }
        transitions = tuple(
            TransitionPlan(
                leaves=tuple(leaf for g in tr.guards for leaf in conjuncts(g)),
                evidence=tuple((g, cap(g).evidence) for g in tr.guards),
            )
            for tr in curriculum.transitions
        )
        stateful = tuple(Stateful(key, g, cap(g)) for key, g in curriculum.guards)
        return cls(phases, transitions, all_needs, where, stateful, tuple(checks.values()), verifies_of(curriculum))
