"""The curriculum vocabulary, in the order the nouns build on each other (docs/semantics.md).

Guards and actions are callables (their optional members: :mod:`engine.protocols`), never names
resolved at run time, and never lambdas: their repr goes into the fingerprint, the history and the
diagrams.
"""

from __future__ import annotations

import difflib
import enum
import hashlib
import json
import re
from operator import attrgetter
from typing import Any, Callable, Iterator, Mapping, Sequence

import attrs
import numpy as np

__all__ = [
    "CurriculumError",
    "Point",
    "Clock",
    "ClockView",
    "Context",
    "Phase",
    "Transition",
    "Curriculum",
    "describe",
    "Params",
    "Guard",
    "Action",
]


class CurriculumError(ValueError):
    """A curriculum, an engine or its input is wrong; the message names the fix."""


class Point(str, enum.Enum):
    """Where a transition is evaluated: after an optimizer step, or after an epoch."""

    EPOCH_END = "epoch_end"
    STEP_END = "step_end"

    def __str__(self) -> str:
        return self.value


@attrs.define
class Clock:
    """Steps and epochs completed, in the run and since the phase was entered; ``epoch`` is also the
    0-based index of the epoch in progress, ``step_in_epoch`` counts the steps done in it."""

    global_step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    steps_in_phase: int = 0
    epochs_in_phase: int = 0


class _ReadOnlyError(CurriculumError, AttributeError):
    """Assignment to a read-only attribute (an AttributeError too, as Python's own are)."""


class ClockView:
    """A read-only, live view of the engine's :class:`Clock`: ``engine.clock`` and ``ctx.clock``
    (assigning to it is a :class:`CurriculumError`; only the engine moves the clock)."""

    __slots__ = ("_clock",)

    def __init__(self, clock: Clock) -> None:
        object.__setattr__(self, "_clock", clock)

    global_step = property(attrgetter("_clock.global_step"), doc="Optimizer steps completed in the run.")
    epoch = property(attrgetter("_clock.epoch"), doc="Epochs completed: the 0-based index of the epoch in progress.")
    step_in_epoch = property(attrgetter("_clock.step_in_epoch"), doc="Steps completed in the epoch in progress.")
    steps_in_phase = property(attrgetter("_clock.steps_in_phase"), doc="Steps since the current phase was entered.")
    epochs_in_phase = property(attrgetter("_clock.epochs_in_phase"), doc="Epochs since the phase was entered.")

    def __setattr__(self, name: str, value: Any) -> None:
        raise _ReadOnlyError(
            f"engine.clock is read-only: cannot set {name!r} to {value!r}; the engine counts steps in "
            "step_end() and epochs in epoch_end(). To start elsewhere use engine.start(global_step=..., "
            "epoch=...); to resume use engine.load_state_dict(...)"
        )

    __delattr__ = __setattr__  # type: ignore[assignment]

    def as_clock(self) -> Clock:
        """A detached, mutable copy of the counters."""
        return attrs.evolve(self._clock)

    def __reduce__(self) -> tuple:  # copy and pickle without going through __setattr__
        return (ClockView, (self._clock,))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ClockView):
            other = other._clock
        return self._clock == other if isinstance(other, Clock) else NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self._clock).replace("Clock(", "ClockView(", 1)


@attrs.define(slots=False)
class Context:
    """What a guard or action sees: the clock, this point's metrics, the registered objects as attributes
    (``ctx.model``), the run's records (read-only, oldest first) and the :class:`Transition` whose guards
    or actions are running (None at the start, in ``observe`` and for a manual transition)."""

    clock: ClockView | Clock
    objects: Mapping[str, Any] = attrs.field(factory=dict, repr=False)
    metrics: Mapping[str, float] = attrs.field(factory=dict)
    point: Point | None = None
    history: Sequence[Any] = attrs.field(factory=tuple, repr=False)
    transition: Any = attrs.field(default=None, repr=False)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails: the registered objects.
        objects = self.__dict__.get("objects", {})
        if name in objects:
            return objects[name]
        raise AttributeError(
            f"Context has no registered object {name!r} (registered: {sorted(objects)}); "
            f"register it: CurriculumEngine(curriculum, {name}=...) or engine.bind({name}=...)"
        )

    def metric(self, name: str) -> float:
        """The metric ``name`` passed at this evaluation point, or a clear error naming it."""
        try:
            return self.metrics[name]
        except KeyError:
            point = self.point.value if self.point else "this point"
            call = "step_end(loss=..., ...)" if self.point is Point.STEP_END else "epoch_end(...)"
            raise CurriculumError(
                f"metric {name!r} is needed at {point} but the loop did not pass it{did_you_mean(name, self.metrics)} "
                f"(passed: {sorted(self.metrics)}); pass it as engine.{call.replace('...)', f'{name}=...)')}, "
                "or fix a misspelt name in the guard that reads it"
            ) from None


Guard = Callable[[Context], bool]
"""A guard's type: ``guard(ctx) -> bool``; a field of this type holds a guard (a data file writes it as a table)."""
Action = Callable[[Context], Any]
"""An action's type: ``action(ctx) -> dict | None``, the dict being its recorded effect."""


def did_you_mean(name: str, passed: Any) -> str:
    """`` (did you mean 'val_loss', which the loop passed?)`` when a passed metric's name is close
    to ``name`` (a typo in the guard or in the loop); empty otherwise."""
    close = difflib.get_close_matches(name, [str(m) for m in passed], n=1)
    return f" (did you mean {close[0]!r}, which the loop passed?)" if close else ""


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def describe(obj: Any) -> str:
    """A guard's or action's repr, or ``module.qualname``: stable between processes (the fingerprint
    uses it), so a default repr (``<... at 0x7f...>``) is replaced by the class name."""
    if isinstance(obj, type) or callable(obj) and hasattr(obj, "__qualname__") and hasattr(obj, "__code__"):
        return f"{obj.__module__}.{obj.__qualname__}"
    text = repr(obj)
    if " at 0x" in text:
        cls = type(obj)
        return f"{cls.__module__}.{cls.__qualname__}()"
    return text


def short_repr(value: Any) -> str:
    """``repr(value)``, cut to 80 characters for a message."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def truth_value(guard: Any, value: Any, where: str = "") -> bool:
    """``value``, returned by ``guard``, as a bool (a bool, a numpy bool, or a one-element boolean tensor
    or array), or a CurriculumError naming both: a combinator's child that returns None must not read as
    False. ``where`` follows the guard's name in the message (`` of transition a -> b``)."""
    if value is True or value is False or isinstance(value, np.bool_):
        return bool(value)
    count = value.numel() if hasattr(value, "numel") else getattr(value, "size", None)
    if count == 1 and str(getattr(value, "dtype", None)) in ("torch.bool", "bool"):
        return bool(value.item())
    raise CurriculumError(
        f"guard {describe(guard)}{where} returned {type(value).__name__} {short_repr(value)}, "
        "which is not a truth value; return a bool (e.g. bool(x)) or a one-element boolean tensor"
    )


def guard_leaves(guard: Any) -> Iterator[Any]:
    """``guard`` itself, or for a combinator (its ``guards`` a tuple of guards, as ``all_of``'s) the guards
    inside it, depth first: the engine observes, resets and reads the declarations of these leaves."""
    children = getattr(guard, "guards", None)
    if isinstance(children, tuple) and children and all(callable(c) for c in children):
        for child in children:
            yield from guard_leaves(child)
    else:
        yield guard


def observe_points(guard: Any, when: Point) -> tuple[Point, ...]:
    """Where the engine calls ``guard.observe``: its ``observe_at`` (default: every step_end);
    ``observe_at = None`` means at its transition's evaluation point ``when``."""
    points = getattr(guard, "observe_at", (Point.STEP_END,))
    return (when,) if points is None else tuple(Point(p) for p in points)


def metrics_read(guard: Any, when: Point, point: Point) -> tuple[str, ...]:
    """The metrics a leaf guard declares it reads at ``point`` when its transition is evaluated at
    ``when``: its ``metrics``, read by ``observe`` at its observe points when it has one, else
    when deciding, at ``when``."""
    names = tuple(getattr(guard, "metrics", ()) or ())
    if hasattr(guard, "observe"):
        return names if point in observe_points(guard, when) else ()
    return names if point is when else ()


def spec_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What differs between two :meth:`Curriculum.spec` values, one readable line per change."""
    lines = []
    if old.get("initial") != new.get("initial"):
        lines.append(f"initial phase: {old.get('initial')!r} -> {new.get('initial')!r}")
    before = {p[0]: p for p in old.get("phases", [])}
    after = {p[0]: p for p in new.get("phases", [])}
    lines += [f"phase {name!r} removed" for name in before if name not in after]
    for name, phase in after.items():
        if name not in before:
            lines.append(f"phase {name!r} added")
            continue
        was = before[name]
        if was[1] != phase[1]:
            lines.append(f"phase {name!r} on_enter: {was[1]} -> {phase[1]}")
        if len(was) > 2 and len(phase) > 2 and was[2] != phase[2]:
            lines.append(f"phase {name!r} params: {was[2]} -> {phase[2]}")

    def keyed(transitions: list) -> dict:  # (source, dest, k): the k-th transition between the two
        return {(*tr[:2], sum(t[:2] == tr[:2] for t in transitions[:i])): tr for i, tr in enumerate(transitions)}

    told, tnew = keyed(old.get("transitions", [])), keyed(new.get("transitions", []))
    lines += [f"transition {tr[0]} -> {tr[1]} removed" for key, tr in told.items() if key not in tnew]
    for key, tr in tnew.items():
        if key not in told:
            lines.append(f"transition {tr[0]} -> {tr[1]} added")
            continue
        was, label = told[key], f"transition {tr[0]} -> {tr[1]}"
        for i, field in ((2, "when"), (3, "guards"), (4, "actions")):
            if was[i] != tr[i]:
                if isinstance(tr[i], list) and len(was[i]) == len(tr[i]):
                    lines.extend(f"{label} {field[:-1]} {a} -> {b}" for a, b in zip(was[i], tr[i]) if a != b)
                else:
                    lines.append(f"{label} {field}: {was[i]} -> {tr[i]}")
    if not lines and list(told) != list(tnew):
        lines.append("the transitions are declared in another order (the first declared wins)")
    return lines


def check_callable(item: Any, field: str) -> Any:
    """``item`` as a guard or action: a callable object or named function, not a name, a class or a lambda."""
    if isinstance(item, str):
        fix = "pass the guard or action object itself, not its name"
        raise CurriculumError(f"{field} must be a callable, got the string {item!r}; {fix}")
    if isinstance(item, type):
        raise CurriculumError(
            f"{field} is the class {item.__qualname__}, not a guard or action object; "
            f"instantiate it, e.g. {item.__qualname__}(...)"
        )
    if not callable(item):
        raise CurriculumError(
            f"{field} must be callable (a guard or action), got {type(item).__name__}: "
            f"{item!r}; pass an object with __call__(ctx) or a named function"
        )
    if getattr(item, "__name__", None) == "<lambda>":
        raise CurriculumError(
            f"{field} is a lambda, which cannot be fingerprinted or shown in a diagram; "
            "define a named function (def ...) or a small class with a readable __repr__"
        )
    return item


def _check_callables(items: Any, field: str) -> tuple:
    if callable(items) or isinstance(items, (str, bytes)):
        raise CurriculumError(
            f"{field} must be a sequence of callables, got a single {type(items).__name__}: "
            f"{items!r}; wrap it in a list: [{describe(items) if callable(items) else repr(items)}]"
        )
    return tuple(check_callable(item, f"{field}[{i}]") for i, item in enumerate(items))


class Params(Mapping):
    """A phase's ``params``: a mapping that reads like a dict, immutable (nested dicts and lists too), as
    it is part of the fingerprint; to change params build a new phase with ``attrs.evolve``."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any] = ()) -> None:
        object.__setattr__(self, "_data", {str(k): _freeze(v) for k, v in dict(data).items()})

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __setitem__(self, key: str, value: Any) -> None:
        raise TypeError(
            f"Phase params are immutable (they are part of the curriculum's fingerprint): cannot set {key!r}; "
            "build a new phase instead, e.g. attrs.evolve(phase, params={**phase.params, ...})"
        )

    __delitem__ = __setitem__  # type: ignore[assignment]

    def __setattr__(self, name: str, value: Any) -> None:
        raise TypeError("Phase params are immutable")

    def __eq__(self, other: object) -> bool:
        return dict(self._data) == (dict(other) if isinstance(other, Mapping) else other)

    def __hash__(self) -> int:
        return hash(json.dumps(_spec_value(self), sort_keys=True))

    def __repr__(self) -> str:
        return repr(self._data)

    def __reduce__(self) -> tuple:
        return (Params, (dict(self._data),))


def _freeze(value: Any) -> Any:
    if isinstance(value, Params):
        return value
    if isinstance(value, Mapping):
        return Params(value)
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return frozenset(_freeze(v) for v in value)
    return value


def _spec_value(value: Any) -> Any:
    """``value`` as JSON text material for the fingerprint: stable across processes."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else repr(value)
    if isinstance(value, Mapping):
        return {str(k): _spec_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_spec_value(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_spec_value(v) for v in value), key=repr)
    return describe(value)


def _freeze_params(params: Mapping[str, Any]) -> Params:
    if not isinstance(params, Mapping):
        raise CurriculumError(
            f"Phase.params must be a mapping, got {type(params).__name__}: {params!r}; "
            "pass a dict, e.g. params={'seq_len': 256}"
        )
    return params if isinstance(params, Params) else Params(params)


@attrs.frozen
class Phase:
    """A training phase: ``params`` is data for the loop (``engine.phase.params``); the ``on_enter``
    actions run when a transition enters it, and for the phase the run starts in at ``engine.start()``."""

    name: str = attrs.field()
    params: Params = attrs.field(factory=Params, converter=_freeze_params)
    on_enter: tuple = attrs.field(default=(), converter=lambda v: _check_callables(v, "Phase.on_enter"))

    @name.validator
    def _check_name(self, _attribute: Any, value: Any) -> None:
        if not isinstance(value, str) or not _NAME.fullmatch(value):
            raise CurriculumError(
                f"Phase.name must be an identifier (letters, digits, '_', not starting with a digit), "
                f"got {value!r}; rename it, e.g. {_suggest_name(value)!r}"
            )


def _suggest_name(value: Any) -> str:
    text = re.sub(r"[^A-Za-z0-9_]", "_", str(value)) or "phase"
    return text if not text[0].isdigit() else f"phase_{text}"


def _to_point(value: Point | str) -> Point:
    try:
        return Point(value)
    except ValueError:
        raise CurriculumError(
            f"Transition.when must be one of {[p.value for p in Point]}, got {value!r}; "
            "use Point.EPOCH_END or Point.STEP_END"
        ) from None


@attrs.frozen
class Transition:
    """Move from ``source`` to ``dest`` at the point ``when`` once every guard holds; then act."""

    source: str
    dest: str
    guards: tuple = attrs.field(converter=lambda v: _check_callables(v, "Transition.guards"))
    actions: tuple = attrs.field(default=(), converter=lambda v: _check_callables(v, "Transition.actions"))
    when: Point = attrs.field(default=Point.EPOCH_END, converter=_to_point)

    @guards.validator
    def _check_guards(self, _attribute: Any, value: tuple) -> None:
        if not value:
            raise CurriculumError(
                f"Transition {self.source} -> {self.dest} has no guard (guards=()), so it would fire "
                "at the first evaluation point; give it at least one guard, e.g. MinEpoch(1)"
            )

    @property
    def label(self) -> str:
        return f"{self.source} -> {self.dest}"


@attrs.frozen(eq=False)
class Curriculum:
    """Phases and the transitions between them; validated when built. Of the transitions that hold at
    one point the first declared fires, and at most one fires per point. Two curricula are equal when
    their :meth:`fingerprint` is, however they were built (in code, or from a file)."""

    phases: tuple[Phase, ...] = attrs.field(converter=tuple)
    transitions: tuple[Transition, ...] = attrs.field(default=(), converter=tuple)
    initial: str | None = None

    def __eq__(self, other: object) -> bool:
        return self.fingerprint() == other.fingerprint() if isinstance(other, Curriculum) else NotImplemented

    def __hash__(self) -> int:
        return hash(self.fingerprint())

    def __attrs_post_init__(self) -> None:
        if not self.phases:
            raise CurriculumError("Curriculum.phases is empty; give at least one Phase")
        for field, cls in (("phases", Phase), ("transitions", Transition)):
            for i, item in enumerate(getattr(self, field)):
                if not isinstance(item, cls):
                    got = f"{type(item).__name__}: {item!r}"
                    raise CurriculumError(f"Curriculum.{field}[{i}] must be a {cls.__name__}, got {got}")
        names = [p.name for p in self.phases]
        if len(set(names)) < len(names):
            twice = next(n for i, n in enumerate(names) if n in names[:i])
            raise CurriculumError(f"Curriculum.phases: the name {twice!r} is used twice; phase names must be unique")
        phases = set(names)
        if self.initial is not None and self.initial not in phases:
            raise CurriculumError(
                f"Curriculum.initial is {self.initial!r}, which is not a phase; expected one of {names}"
            )
        for i, tr in enumerate(self.transitions):
            for end, value in (("source", tr.source), ("dest", tr.dest)):
                if value not in phases:
                    raise CurriculumError(
                        f"Curriculum.transitions[{i}].{end} is {value!r}, which is not a phase; "
                        f"expected one of {names}; add Phase({value!r}) or fix the name"
                    )
        self._check_shared_observers()
        out: dict[str, set[str]] = {}
        for tr in self.transitions:
            out.setdefault(tr.source, set()).add(tr.dest)
        reachable, frontier = {self.initial_name}, [self.initial_name]
        while frontier:
            new = out.get(frontier.pop(), set()) - reachable
            reachable |= new
            frontier.extend(new)
        unreachable = [n for n in names if n not in reachable]
        if unreachable:
            raise CurriculumError(
                f"Curriculum.phases {unreachable} cannot be reached from the initial phase "
                f"{self.initial_name!r}; add a Transition into them or remove them"
            )

    def _check_shared_observers(self) -> None:
        """One guard object that observes must not be used twice out of one phase: it would
        observe each value twice (a window of 4 full after 2 steps)."""
        seen: dict[tuple[str, int], int] = {}  # (phase, observing guard) -> the transition using it
        for i, tr in enumerate(self.transitions):
            for leaf in (leaf for g in tr.guards for leaf in guard_leaves(g) if hasattr(leaf, "observe")):
                if (j := seen.get((tr.source, id(leaf)))) is None:
                    seen[tr.source, id(leaf)] = i
                    continue
                where = (
                    f"transition[{i}] ({tr.label}) uses it twice"
                    if j == i
                    else f"transitions[{j}] ({self.transitions[j].label}) and [{i}] ({tr.label}) share it"
                )
                raise CurriculumError(
                    f"Curriculum.transitions: one guard object {describe(leaf)} observes out of phase "
                    f"{tr.source!r} twice ({where}), so it would see each value twice; give each use "
                    f"its own instance, e.g. {describe(leaf)} written out again"
                )

    @property
    def initial_name(self) -> str:
        return self.initial if self.initial is not None else self.phases[0].name

    def phase(self, name: str) -> Phase:
        for phase in self.phases:
            if phase.name == name:
                return phase
        raise CurriculumError(f"no phase named {name!r}; expected one of {[p.name for p in self.phases]}")

    def outgoing(self, name: str) -> list[Transition]:
        """Transitions out of phase ``name``, in declaration order."""
        return [tr for tr in self.transitions if tr.source == name]

    @property
    def guards(self) -> list[tuple[str, Any]]:
        """Every guard with a stable key ``"t<transition>.g<guard>"``."""
        return [(f"t{i}.g{j}", g) for i, tr in enumerate(self.transitions) for j, g in enumerate(tr.guards)]

    def spec(self) -> dict:
        """The declared structure the fingerprint is taken over, as JSON-safe data (guards and actions by
        their repr); stored in the engine's state, so a mismatch can say what differs."""
        return {
            "initial": self.initial_name,
            "phases": [[p.name, [describe(a) for a in p.on_enter], _spec_value(p.params)] for p in self.phases],
            "transitions": [
                [tr.source, tr.dest, tr.when.value, [describe(g) for g in tr.guards], [describe(a) for a in tr.actions]]
                for tr in self.transitions
            ],
        }

    def fingerprint(self, version: int = 2) -> str:
        """sha256 of :meth:`spec`. ``version=1`` is the first release's rule, which left params
        out: it checks engine states saved by that release (schema_version 1)."""
        spec = self.spec()
        if version == 1:
            spec["phases"] = [entry[:2] for entry in spec["phases"]]
        text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def requirements(self) -> dict[str, list[str]]:
        """Registered-object name -> the guards (those inside combinators one by one) and actions that need it."""
        needs: dict[str, list[str]] = {}
        items: list[Any] = [a for p in self.phases for a in p.on_enter]
        for tr in self.transitions:
            items.extend(leaf for g in tr.guards for leaf in guard_leaves(g))
            items.extend(tr.actions)
        for item in items:
            for name in getattr(item, "requires", ()) or ():
                needs.setdefault(name, []).append(describe(item))
        return needs
