"""A curriculum as data: a plain dict (JSON, YAML, a Hydra or LightningCLI config) or a TOML file.

The layout (``version = 1``)::

    version = 1                      # optional; the layout of this file
    initial = "warm"                 # optional; default: the first phase

    [[phases]]
    name = "warm"
    params = { seq_len = 256 }       # optional: free-form data for the loop
    on_enter = [{ type = "SetCutoff", n = 128, preserve = false }]   # optional: actions

    [[transitions]]
    source = "warm"
    dest = "main"
    when = "epoch_end"               # optional: "epoch_end" (default) or "step_end"
    guards = [{ type = "all_of", guards = [{ type = "MinEpoch", n = 2 }, { type = "Plateau", window = 50 }] }]
    actions = [{ type = "RestartLR" }]                               # optional

A guard or action is a table whose ``type`` names a built-in one (the public guards and actions
of :mod:`policies`) or one registered with :func:`register_guard` / :func:`register_action`; its
other keys are the constructor's keyword arguments (arrays arrive as tuples). A bare string
(``"RestartLR"``) is a type without arguments. TOML has no null: ``SetCutoff``'s full band is
``n = "full"``. A data file names things; it never imports or executes anything by itself.

The curriculum built from data has the same :meth:`~engine.Curriculum.fingerprint` as the same
curriculum built in code (each guard and action is built by its own class, with the same
arguments), so an engine state saved by one restores into the other. Every error names the
source, the key path (and the line, for a TOML file), what was expected and the fix, on one line.

TOML is read with the standard library's ``tomllib`` (Python 3.11+; ``tomli`` on 3.10) and
written by :func:`to_toml`, which emits the small subset this layout needs.
"""

from __future__ import annotations

import difflib
import inspect
import json
import math
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import attrs

from engine.core import Curriculum, CurriculumError, Params, Phase, Point, Transition, describe

try:  # Python 3.11+
    import tomllib as _toml
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    try:
        import tomli as _toml  # type: ignore[no-redef]
    except ModuleNotFoundError:
        _toml = None  # type: ignore[assignment]

__all__ = [
    "VERSION",
    "CurriculumFileError",
    "Registry",
    "default_registry",
    "register_guard",
    "register_action",
    "curriculum_from_dict",
    "curriculum_to_dict",
    "load_curriculum",
    "to_toml",
    "save_curriculum",
]

VERSION = 1
_SUFFIXES = (".toml", ".json")


class CurriculumFileError(CurriculumError):
    """A curriculum's data is wrong: the message says where (source, line, key), what and the fix."""

    def __init__(self, message: str, *, source: str | None = None, key: str = "", line: int | None = None) -> None:
        self.source, self.key, self.line, self.detail = source, key, line, message
        where = source or "curriculum data"
        if line is not None:
            where += f":{line}"
        super().__init__(f"{where}: {key + ': ' if key else ''}{message}")


# -- the registry: names a data file may use --------------------------------------------------------

_GUARD, _ACTION = "guard", "action"


@attrs.frozen
class _Entry:
    """One name a data file may use: what builds it and how to read its arguments back."""

    name: str
    kind: str  # _GUARD or _ACTION
    target: Any  # a class (its instances are this entry) or a plain function (used as it is)
    factory: Callable | None  # what the file's arguments are passed to; None: ``target`` is used as is
    nested: tuple[str, ...] = ()  # arguments that hold guards (all_of's ``guards``)
    symbols: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)  # argument -> file text -> value
    read: Callable[[Any], dict] | None = None  # object -> arguments, where attributes do not say them

    @property
    def signature(self) -> inspect.Signature:
        return inspect.signature(self.factory) if self.factory is not None else inspect.Signature()

    def usage(self) -> str:
        """``Plateau(window=50, ...)``-like text for messages."""
        return f"{self.name}{self.signature.replace(return_annotation=inspect.Signature.empty)}"


def _builtins() -> list[_Entry]:
    import policies
    from policies import guards as g

    def not_args(obj: Any) -> dict:
        return {"guard": obj.guards[0]}

    full = {"n": {"full": None}}
    entries = [
        _Entry(name, _GUARD, getattr(policies, name), getattr(policies, name))
        for name in (
            "Plateau",
            "MinEpoch",
            "MinSteps",
            "MetricBelow",
            "MetricAbove",
            "Cooldown",
            "MaxVisits",
            "WorseThanBest",
            "CooldownDue",
        )
    ]
    entries += [
        _Entry("all_of", _GUARD, g._AllOf, policies.all_of, nested=("guards",)),
        _Entry("any_of", _GUARD, g._AnyOf, policies.any_of, nested=("guards",)),
        _Entry("not_", _GUARD, g._Not, policies.not_, nested=("guard",), read=not_args),
        _Entry("RestartLR", _ACTION, policies.RestartLR, policies.RestartLR),
        _Entry("SetCutoff", _ACTION, policies.SetCutoff, policies.SetCutoff, symbols=full),
        _Entry("StartCooldown", _ACTION, policies.StartCooldown, policies.StartCooldown),
    ]
    return entries


# Built-ins a data file cannot name, and why.
_NOT_IN_FILES = {
    "ResetWindow": "it holds the very guard objects of a transition, which a data file cannot point at; "
    "build a curriculum that uses it in code",
}


class Registry:
    """The guard and action names a data file may use: the built-ins plus those registered.

    :func:`register_guard` and :func:`register_action` add to the default registry, which
    :meth:`Curriculum.from_dict` and :func:`load_curriculum` use unless given another. A name is
    registered once: a second, different object under a name in use is an error.
    """

    def __init__(self, builtins: bool = True) -> None:
        self._names: dict[str, _Entry] = {}
        self._by_target: dict[int, _Entry] = {}
        self._builtins_pending = builtins

    def _loaded(self) -> "Registry":
        if self._builtins_pending:  # lazily: policies imports engine
            self._builtins_pending = False
            for entry in _builtins():
                self._add(entry)
        return self

    def _add(self, entry: _Entry) -> None:
        self._names[entry.name] = entry
        self._by_target[id(entry.target)] = entry

    def copy(self) -> "Registry":
        """A registry with the same names, to register more without changing this one."""
        other = Registry(builtins=False)
        for entry in self._loaded()._names.values():
            other._add(entry)
        return other

    def register_guard(self, obj: Any, name: str | None = None) -> Any:
        """Let data files name the guard class (or plain guard function) ``obj``, as ``name``
        (default: its ``__name__``). Returns ``obj``, so it works as a class decorator."""
        return self._register(obj, name, _GUARD)

    def register_action(self, obj: Any, name: str | None = None) -> Any:
        """Let data files name the action class (or plain action function) ``obj``, as ``name``."""
        return self._register(obj, name, _ACTION)

    def _register(self, obj: Any, name: str | None, kind: str) -> Any:
        call = f"register_{kind}"
        if isinstance(obj, str) or not callable(obj):
            raise CurriculumError(
                f"{call}: expected a {kind} class or a named function, got {type(obj).__name__}: {obj!r}; "
                f"pass the class itself, e.g. {call}(My{kind.title()})"
            )
        if not isinstance(obj, type) and not inspect.isfunction(obj):
            raise CurriculumError(
                f"{call}: expected a {kind} class or a named function, got the object {describe(obj)}; "
                f"register its class, {call}({type(obj).__name__}), and name its arguments in the file"
            )
        if getattr(obj, "__name__", None) == "<lambda>":
            raise CurriculumError(
                f"{call}: a lambda cannot be named by a data file (nor fingerprinted); define a function with def"
            )
        name = obj.__name__ if name is None else name
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", name):
            raise CurriculumError(
                f"{call}: name must be an identifier (dots allowed), got {name!r}; e.g. name={obj.__name__!r}"
            )
        existing = self._loaded()._names.get(name)
        if existing is not None:
            if existing.target is obj and existing.kind == kind:
                return obj  # the same object again (a module imported twice): nothing changes
            raise CurriculumError(
                f"{call}: the name {name!r} is already used by the {existing.kind} {describe(existing.target)}; "
                "a name means one thing in every file: "
                f"register under another, e.g. {call}({obj.__name__}, name='my.{name}')"
            )
        if id(obj) in self._by_target:
            other = self._by_target[id(obj)]
            raise CurriculumError(
                f"{call}: {describe(obj)} is already registered as the {other.kind} {other.name!r}; "
                "register it once and use that name"
            )
        self._add(_Entry(name, kind, obj, obj if isinstance(obj, type) else None))
        return obj

    def lookup(self, name: str) -> _Entry | None:
        return self._loaded()._names.get(name)

    def entry_for(self, obj: Any) -> _Entry | None:
        """The entry that writes ``obj``: its class's, or (a plain function) its own."""
        self._loaded()
        entry = self._by_target.get(id(type(obj))) or self._by_target.get(id(obj))
        return entry if entry is not None and (entry.target is type(obj) or entry.target is obj) else None

    def names(self, kind: str) -> list[str]:
        return sorted(n for n, e in self._loaded()._names.items() if e.kind == kind)


default_registry = Registry()


def register_guard(obj: Any, name: str | None = None) -> Any:
    """Let data files name the guard class (or plain guard function) ``obj`` (default: its
    ``__name__``); usable as a class decorator. A name is registered once."""
    return default_registry.register_guard(obj, name)


def register_action(obj: Any, name: str | None = None) -> Any:
    """Let data files name the action class (or plain action function) ``obj``; see :func:`register_guard`."""
    return default_registry.register_action(obj, name)


# -- reading --------------------------------------------------------------------------------------


def _path_text(path: tuple) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


@attrs.define
class _Reader:
    """Builds a Curriculum from data, keeping where it is, for the messages."""

    registry: Registry
    source: str | None
    text: str | None = None  # the TOML text, to find lines

    def fail(self, path: tuple, message: str, hint: str | None = None) -> CurriculumFileError:
        line = _locate(self.text, path, hint) if self.text is not None else None
        return CurriculumFileError(message, source=self.source, key=_path_text(path), line=line)

    def table(self, value: Any, path: tuple, keys: dict[str, bool], example: str) -> dict:
        """``value`` as a table with only ``keys`` (name -> required)."""
        if not isinstance(value, Mapping):
            raise self.fail(
                path, f"expected a table ({example}), got {_kind(value)} {_short(value)}; write it as a table"
            )
        unknown = [k for k in value if k not in keys]
        if unknown:
            near = difflib.get_close_matches(str(unknown[0]), list(keys), n=1)
            raise self.fail(
                path + (unknown[0],),
                f"unknown key; expected one of {', '.join(keys)}"
                + (f"; did you mean {near[0]!r}?" if near else "; remove it"),
                hint=str(unknown[0]),
            )
        for key, required in keys.items():
            if required and key not in value:
                raise self.fail(path, f"missing key {key!r}; add it, e.g. {example}")
        return dict(value)

    def string(self, value: Any, path: tuple, what: str) -> str:
        if not isinstance(value, str):
            raise self.fail(
                path, f"expected {what} (a string), got {_kind(value)} {_short(value)}; quote it", hint=_short(value)
            )
        return value

    def array(self, value: Any, path: tuple, what: str) -> list:
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple)):
            raise self.fail(
                path, f"expected an array of {what}, got {_kind(value)} {_short(value)}; wrap it in [ ... ]"
            )
        return list(value)

    def curriculum(self, data: Any) -> Curriculum:
        top = self.table(
            data,
            (),
            {"version": False, "initial": False, "phases": True, "transitions": False},
            'version = 1, [[phases]] name = "warm"',
        )
        version = top.get("version", VERSION)
        if type(version) is not int or version != VERSION:
            raise self.fail(
                ("version",),
                f"expected {VERSION} (the layout this release reads), got {_short(version)}; "
                "upgrade the engine, or write the file for this version",
            )
        initial = None if "initial" not in top else self.string(top["initial"], ("initial",), "a phase name")
        phases = [
            self.phase(p, ("phases", i)) for i, p in enumerate(self.array(top["phases"], ("phases",), "phase tables"))
        ]
        if not phases:
            raise self.fail(("phases",), "expected at least one phase; add [[phases]] with a name")
        names = [p.name for p in phases]
        seen: dict[str, int] = {}
        for i, name in enumerate(names):
            if name in seen:
                raise self.fail(
                    ("phases", i, "name"),
                    f"the phase name {name!r} is used twice (phases[{seen[name]}] too); "
                    "phase names must be unique: rename one",
                    hint=name,
                )
            seen[name] = i
        if initial is not None and initial not in seen:
            raise self.fail(("initial",), _unknown_phase(initial, names), hint=initial)
        raw = self.array(top.get("transitions", []), ("transitions",), "transition tables")
        transitions = [self.transition(t, ("transitions", i), names) for i, t in enumerate(raw)]
        try:
            return Curriculum(phases, transitions, initial=initial)
        except CurriculumError as exc:  # its own structural checks (unreachable phases, ...)
            key = ("phases",) if "cannot be reached" in str(exc) else ()
            raise self.fail(key, str(exc)) from None

    def phase(self, value: Any, path: tuple) -> Phase:
        table = self.table(value, path, {"name": True, "params": False, "on_enter": False}, 'name = "warm"')
        name = self.string(table["name"], path + ("name",), "a phase name")
        params = table.get("params", {})
        if not isinstance(params, Mapping):
            raise self.fail(
                path + ("params",),
                f"expected a table of values, got {_kind(params)} {_short(params)}; write params = {{ key = value }}",
            )
        self.plain(params, path + ("params",))
        actions = [
            self.call(a, path + ("on_enter", i), _ACTION)
            for i, a in enumerate(self.array(table.get("on_enter", []), path + ("on_enter",), "actions"))
        ]
        try:
            return Phase(name, params=params, on_enter=actions)
        except CurriculumError as exc:
            raise self.fail(path + ("name",), str(exc), hint=name) from None

    def plain(self, value: Any, path: tuple) -> None:
        """Params hold strings, numbers, booleans, arrays and tables only (what the fingerprint reads)."""
        if isinstance(value, Mapping):
            for k, v in value.items():
                self.plain(v, path + (str(k),))
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                self.plain(v, path + (i,))
        elif value is not None and not isinstance(value, (str, int, float, bool)):
            raise self.fail(
                path,
                f"expected a string, number, boolean, array or table, got {_kind(value)} {_short(value)}; "
                "write the value as one of those",
            )

    def transition(self, value: Any, path: tuple, names: list[str]) -> Transition:
        table = self.table(
            value,
            path,
            {"source": True, "dest": True, "when": False, "guards": True, "actions": False},
            'source = "warm", dest = "main", guards = [{ type = "MinEpoch", n = 2 }]',
        )
        ends = {}
        for end in ("source", "dest"):
            ends[end] = self.string(table[end], path + (end,), "a phase name")
            if ends[end] not in names:
                raise self.fail(path + (end,), _unknown_phase(ends[end], names), hint=ends[end])
        when = table.get("when", Point.EPOCH_END.value)
        if when not in [p.value for p in Point]:
            raise self.fail(
                path + ("when",),
                f"expected one of {[p.value for p in Point]}, got {_short(when)}; "
                'use "epoch_end" (the default) or "step_end"',
                hint=_short(when),
            )
        guards = [
            self.call(g, path + ("guards", i), _GUARD)
            for i, g in enumerate(self.array(table["guards"], path + ("guards",), "guards"))
        ]
        if not guards:
            raise self.fail(
                path + ("guards",),
                "expected at least one guard (with none the transition fires at once); "
                'add one, e.g. { type = "MinEpoch", n = 1 }',
            )
        actions = [
            self.call(a, path + ("actions", i), _ACTION)
            for i, a in enumerate(self.array(table.get("actions", []), path + ("actions",), "actions"))
        ]
        return Transition(ends["source"], ends["dest"], guards=guards, actions=actions, when=when)

    def call(self, value: Any, path: tuple, kind: str) -> Any:
        """A guard or action from ``{ type = "Name", arg = value, ... }`` (or the bare string "Name")."""
        if isinstance(value, str):
            value = {"type": value}
        if not isinstance(value, Mapping):
            raise self.fail(
                path,
                f'expected a {kind} table {{ type = "...", ... }}, got {_kind(value)} {_short(value)}; '
                f'write it as {{ type = "{"MinEpoch" if kind == _GUARD else "RestartLR"}", ... }}',
            )
        if "type" not in value:
            raise self.fail(
                path,
                f"missing key 'type' (the {kind}'s name); add it, e.g. "
                f'{{ type = "{"MinEpoch" if kind == _GUARD else "RestartLR"}", ... }}',
            )
        name = self.string(value["type"], path + ("type",), f"a {kind} name")
        entry = self.registry.lookup(name)
        if entry is None or entry.kind != kind:
            raise self.fail(path + ("type",), self.unknown(name, kind, entry), hint=name)
        args = {k: v for k, v in value.items() if k != "type"}
        if entry.factory is None:
            if args:
                raise self.fail(
                    path + (next(iter(args)),),
                    f"{name} is a function and takes no arguments in a file; remove the key",
                    hint=next(iter(args)),
                )
            return entry.target
        return self.build(entry, args, path)

    def unknown(self, name: str, kind: str, entry: _Entry | None) -> str:
        if name in _NOT_IN_FILES and entry is None:
            return f"{name} cannot be named in a data file: {_NOT_IN_FILES[name]}"
        if entry is not None:
            where = "guards" if entry.kind == _GUARD else "actions or on_enter"
            return (
                f"{name!r} is {'a' if entry.kind == _GUARD else 'an'} {entry.kind}, "
                f"not {'a' if kind == _GUARD else 'an'} {kind}; move it to {where}"
            )
        known = self.registry.names(kind)
        near = difflib.get_close_matches(name, known, n=1)
        return (
            f"unknown {kind} {name!r}; expected one of {', '.join(known)}"
            + (f" (did you mean {near[0]!r}?)" if near else "")
            + f", or register your own first: engine.register_{kind}(YourClass)"
        )

    def build(self, entry: _Entry, args: dict, path: tuple) -> Any:
        params = entry.signature.parameters
        extra = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())  # **kwargs takes any other key
        for key in args:
            if key not in params and not extra:
                near = difflib.get_close_matches(key, list(params), n=1)
                raise self.fail(
                    path + (key,),
                    f"{entry.name} has no argument {key!r}; expected {entry.usage()}"
                    + (f"; did you mean {near[0]!r}?" if near else ""),
                    hint=key,
                )
        positional: list = []
        keywords: dict = {}
        for pname, param in params.items():
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                keywords.update(
                    {k: self.argument(entry, k, v, path + (k,)) for k, v in args.items() if k not in params}
                )
                continue
            if pname not in args:
                if param.default is inspect.Parameter.empty and param.kind is not inspect.Parameter.VAR_POSITIONAL:
                    raise self.fail(
                        path, f"missing key {pname!r} for {entry.usage()}; add it, e.g. {pname} = ...", hint=entry.name
                    )
                continue
            value = self.argument(entry, pname, args[pname], path + (pname,))
            if param.kind is inspect.Parameter.VAR_POSITIONAL:
                if not isinstance(value, tuple):
                    raise self.fail(
                        path + (pname,), f"expected an array, got {_kind(value)} {_short(value)}; wrap it in [ ... ]"
                    )
                positional.extend(value)
            elif param.kind is inspect.Parameter.POSITIONAL_ONLY:
                positional.append(value)
            else:
                keywords[pname] = value
        try:
            return entry.factory(*positional, **keywords)
        except CurriculumError as exc:  # the class's own check: field, expected, received and fix
            raise self.fail(path, str(exc), hint=entry.name) from None

    def argument(self, entry: _Entry, name: str, value: Any, path: tuple) -> Any:
        if name in entry.nested:
            if isinstance(value, (list, tuple)):
                return tuple(self.call(v, path + (i,), _GUARD) for i, v in enumerate(value))
            return self.call(value, path, _GUARD)
        symbols = entry.symbols.get(name, {})
        if isinstance(value, str) and value in symbols:
            return symbols[value]
        return _frozen(value)


def _frozen(value: Any) -> Any:
    """Arrays as tuples (nested too): what a curriculum in code would most likely hold."""
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, Mapping):
        return {k: _frozen(v) for k, v in value.items()}
    return value


def _kind(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        tuple: "an array",
        dict: "a table",
        type(None): "null",
    }.get(type(value), f"a {type(value).__name__}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _unknown_phase(name: str, names: list[str]) -> str:
    near = difflib.get_close_matches(name, names, n=1)
    return f"{name!r} is not a phase; expected one of {names}" + (
        f" (did you mean {near[0]!r}?)"
        if near
        else f"; add a [[phases]] table with name = {json.dumps(name)} or fix the name"
    )


_HEADER = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\-]+)\s*\]\]?\s*(#.*)?$")


def _locate(text: str, path: tuple, hint: str | None) -> int | None:
    """Best effort: the 1-based line of ``path`` in a TOML text laid out as :func:`to_toml` writes
    (or by hand with [[phases]]/[[transitions]] tables); None when it cannot tell."""
    lines = text.splitlines()
    start, end = 0, len(lines)
    first_header = next((i for i, line in enumerate(lines) if _HEADER.match(line)), len(lines))
    rest = list(path)
    if len(rest) >= 2 and isinstance(rest[0], str) and isinstance(rest[1], int):
        heads = [
            i
            for i, line in enumerate(lines)
            if (m := _HEADER.match(line)) and line.strip().startswith("[[") and m.group(1) == rest[0]
        ]
        if rest[1] >= len(heads):
            return None
        start = heads[rest[1]]
        end = next(
            (i for i in range(start + 1, len(lines)) if _HEADER.match(lines[i]) and lines[i].strip().startswith("[[")),
            len(lines),
        )
        rest = rest[2:]
        found = start
    else:
        end = first_header
        found = None
    if rest and isinstance(rest[0], str):
        pattern = re.compile(rf"^\s*{re.escape(rest[0])}\s*=")
        at = next((i for i in range(start, end) if pattern.match(lines[i])), None)
        if at is not None:
            found = at
    if found is not None and hint:
        quoted = re.compile(rf"(?<![A-Za-z0-9_]){re.escape(hint)}(?![A-Za-z0-9_])")
        at = next((i for i in range(found, end) if quoted.search(lines[i])), None)
        found = at if at is not None else found
    return None if found is None else found + 1


def curriculum_from_dict(
    data: Mapping[str, Any], *, registry: Registry | None = None, source: str | None = None
) -> Curriculum:
    """The :class:`Curriculum` that ``data`` (the layout in this module's docstring) describes.

    ``registry``: the names it may use (default: the built-ins and those registered with
    :func:`register_guard` / :func:`register_action`). ``source`` names the data in messages
    (e.g. ``"train.yaml: model.curriculum"``). Raises :class:`CurriculumFileError` (a
    :class:`CurriculumError`) naming the key, what was expected and the fix.
    """
    return _Reader(registry or default_registry, source).curriculum(_as_data(data))


def _as_data(value: Any) -> Any:
    """Mappings as dicts and sequences as lists, nested: a Hydra/OmegaConf ``DictConfig`` or
    ``ListConfig`` reads like the dicts and lists of JSON, without importing OmegaConf."""
    if isinstance(value, Mapping):
        return {k: _as_data(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray)):
        return [_as_data(v) for v in value]
    return value


def load_curriculum(
    source: str | Path | Mapping[str, Any], *, registry: Registry | None = None, name: str | None = None
) -> Curriculum:
    """The curriculum in a ``.toml`` (or ``.json``) file, or, for a config value that may be either a
    path or the curriculum itself (LightningCLI, Hydra), in ``source`` when it is a mapping (``name``
    then names it in messages, e.g. ``"config.yaml: model.curriculum"``). Errors name the file, the
    line and the key."""
    if isinstance(source, Mapping):
        return curriculum_from_dict(source, registry=registry, source=name)
    if not isinstance(source, (str, Path)):
        raise CurriculumFileError(
            f"expected a path to a .toml/.json file or a table (mapping), got {_kind(source)} "
            f"{_short(source)}; pass the file's path or the curriculum's data",
            source=name,
        )
    path = Path(source)
    if path.suffix not in _SUFFIXES:
        raise CurriculumFileError(
            f"expected a {' or '.join(_SUFFIXES)} file; for YAML, load it yourself (yaml.safe_load) "
            "and pass the dict to Curriculum.from_dict",
            source=str(path),
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CurriculumFileError(f"cannot read it ({exc.strerror or exc}); check the path", source=str(path)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CurriculumFileError(f"not UTF-8 text (byte {exc.start}); save it as UTF-8", source=str(path)) from None
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CurriculumFileError(
                f"not valid JSON: {exc.msg} (column {exc.colno}); fix the syntax", source=str(path), line=exc.lineno
            ) from None
        return _Reader(registry or default_registry, str(path)).curriculum(data)
    if _toml is None:  # Python 3.10 without tomli
        raise CurriculumFileError(
            "reading TOML on Python 3.10 needs the tomli package: pip install tomli "
            "(Python 3.11+ has tomllib built in)",
            source=str(path),
        )
    try:
        data = _toml.loads(text)
    except _toml.TOMLDecodeError as exc:
        message = str(exc)
        match = re.search(r"\(at line (\d+), column (\d+)\)", message)
        line = int(match.group(1)) if match else None
        message = re.sub(r"\s*\(at line \d+, column \d+\)", f" (column {match.group(2)})" if match else "", message)
        raise CurriculumFileError(
            f"not valid TOML: {message}; fix the syntax (https://toml.io)", source=str(path), line=line
        ) from None
    return _Reader(registry or default_registry, str(path), text).curriculum(data)


# -- writing --------------------------------------------------------------------------------------


def curriculum_to_dict(curriculum: Curriculum, *, registry: Registry | None = None) -> dict:
    """``curriculum`` as data (the layout in this module's docstring): plain dicts, lists, strings,
    numbers and booleans, which :func:`curriculum_from_dict` turns back into a curriculum with the
    same fingerprint. Every argument is written, defaults included (so a file keeps its meaning if
    a default changes), except None where None is the default.

    Raises :class:`CurriculumError` for a guard or action that is neither built in nor registered,
    or whose attributes do not rebuild it (a class must keep each ``__init__`` argument as an
    attribute of the same name).
    """
    registry = registry or default_registry
    out: dict[str, Any] = {"version": VERSION}
    if curriculum.initial is not None:
        out["initial"] = curriculum.initial
    phases = []
    for i, phase in enumerate(curriculum.phases):
        entry: dict[str, Any] = {"name": phase.name}
        if phase.params:
            entry["params"] = _plain(phase.params, f"phases[{i}].params")
        if phase.on_enter:
            entry["on_enter"] = [
                _call_to_dict(a, registry, f"phases[{i}].on_enter[{j}]", _ACTION) for j, a in enumerate(phase.on_enter)
            ]
        phases.append(entry)
    out["phases"] = phases
    transitions = []
    for i, tr in enumerate(curriculum.transitions):
        entry = {
            "source": tr.source,
            "dest": tr.dest,
            "when": tr.when.value,
            "guards": [
                _call_to_dict(g, registry, f"transitions[{i}].guards[{j}]", _GUARD) for j, g in enumerate(tr.guards)
            ],
        }
        if tr.actions:
            entry["actions"] = [
                _call_to_dict(a, registry, f"transitions[{i}].actions[{j}]", _ACTION) for j, a in enumerate(tr.actions)
            ]
        transitions.append(entry)
    if transitions:
        out["transitions"] = transitions
    return out


def _plain(value: Any, key: str) -> Any:
    if isinstance(value, (Params, Mapping)):
        return {str(k): _plain(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise CurriculumError(
        f"{key}: {type(value).__name__} {_short(value)} cannot be written to a data file; "
        "use strings, numbers, booleans, lists and dicts in params"
    )


def _call_to_dict(obj: Any, registry: Registry, key: str, kind: str) -> dict:
    entry = registry.entry_for(obj)
    if entry is None or entry.kind != kind:
        cls = obj.__name__ if inspect.isfunction(obj) else type(obj).__name__
        if cls in _NOT_IN_FILES and type(obj).__module__.startswith("policies"):
            raise CurriculumError(f"{key}: {describe(obj)} cannot be written to a data file: {_NOT_IN_FILES[cls]}")
        raise CurriculumError(
            f"{key}: {describe(obj)} cannot be written to a data file: it is not a built-in or registered {kind}; "
            f"register it first: engine.register_{kind}({cls})"
        )
    out: dict[str, Any] = {"type": entry.name}
    if entry.factory is None:
        return out
    given = entry.read(obj) if entry.read is not None else None
    for pname, param in entry.signature.parameters.items():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            continue  # not readable back: the round-trip check below says so if it mattered
        if given is not None:
            if pname not in given:
                continue
            value = given[pname]
        elif hasattr(obj, pname):
            value = getattr(obj, pname)
        else:
            raise CurriculumError(
                f"{key}: {describe(obj)} cannot be written to a data file: its argument {pname!r} is not an "
                f"attribute of the object; keep it as self.{pname} in {type(obj).__name__}.__init__"
            )
        if pname in entry.nested:
            many = param.kind is inspect.Parameter.VAR_POSITIONAL
            items = value if many else (value,)
            written = [
                _call_to_dict(g, registry, f"{key}.{pname}[{i}]" if many else f"{key}.{pname}", _GUARD)
                for i, g in enumerate(items)
            ]
            out[pname] = written if many else written[0]
            continue
        if value is None and param.default is None:
            continue
        symbol = next((text for text, v in entry.symbols.get(pname, {}).items() if v is value), None)
        out[pname] = symbol if symbol is not None else _plain(value, f"{key}.{pname}")
    rebuilt = _Reader(registry, None).call(out, (), kind)
    if describe(rebuilt) != describe(obj):
        raise CurriculumError(
            f"{key}: {describe(obj)} does not round-trip through data: its attributes rebuild "
            f"{describe(rebuilt)}; keep each __init__ argument as an attribute of the same name"
        )
    return out


_BARE = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(key: str) -> str:
    return key if _BARE.fullmatch(key) else _toml_string(key)


def _toml_string(text: str) -> str:
    # JSON's escapes are TOML's, once non-ASCII stays as it is (TOML has no surrogate escapes)
    # and DEL, which TOML requires escaped, is escaped.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_value(value: Any, key: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if value != value else ("inf" if value > 0 else "-inf"))
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v, f"{key}[{i}]") for i, v in enumerate(value)) + "]"
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        return (
            "{ " + ", ".join(f"{_toml_key(str(k))} = {_toml_value(v, f'{key}.{k}')}" for k, v in value.items()) + " }"
        )
    if value is None:
        raise CurriculumError(
            f"{key} is None, which TOML cannot hold; drop it, or write JSON instead: json.dumps(curriculum.to_dict())"
        )
    raise CurriculumError(f"{key}: {type(value).__name__} {_short(value)} cannot be written to TOML")


def _nested(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _toml_call(value: Any, key: str, indent: int) -> str:
    """A guard or action table; one that holds guards (all_of) puts each on its own line."""
    if not (isinstance(value, Mapping) and any(_nested(v) for v in value.values())):
        return _toml_value(value, key)
    parts = []
    for k, v in value.items():
        if _nested(v):
            pad = " " * (indent + 4)
            inner = "".join(f"{pad}{_toml_call(x, f'{key}.{k}[{i}]', indent + 4)},\n" for i, x in enumerate(v))
            parts.append(f"{_toml_key(str(k))} = [\n{inner}{' ' * indent}]")
        else:
            parts.append(f"{_toml_key(str(k))} = {_toml_value(v, f'{key}.{k}')}")
    return "{ " + ", ".join(parts) + " }"


def _toml_list(items: list, key: str) -> str:
    if len(items) <= 1 and not any(_nested(v) for x in items if isinstance(x, Mapping) for v in x.values()):
        return _toml_value(items, key)
    return "[\n" + "".join(f"    {_toml_call(v, f'{key}[{i}]', 4)},\n" for i, v in enumerate(items)) + "]"


def to_toml(curriculum: Curriculum | Mapping[str, Any], *, comment: str = "", registry: Registry | None = None) -> str:
    """TOML text of a curriculum (or of its :meth:`~engine.Curriculum.to_dict`), one
    ``[[phases]]`` and ``[[transitions]]`` table each; ``comment`` lines go on top."""
    data = curriculum_to_dict(curriculum, registry=registry) if isinstance(curriculum, Curriculum) else curriculum
    lines = [f"# {line}".rstrip() for line in comment.splitlines()]
    lines += [f"version = {_toml_value(data.get('version', VERSION), 'version')}"]
    if "initial" in data:
        lines.append(f"initial = {_toml_value(data['initial'], 'initial')}")
    for group in ("phases", "transitions"):
        for i, table in enumerate(data.get(group, [])):
            lines += ["", f"[[{group}]]"]
            for k, v in table.items():
                key = f"{group}[{i}].{k}"
                lines.append(
                    f"{_toml_key(k)} = "
                    f"{_toml_list(v, key) if isinstance(v, list) and k != 'params' else _toml_value(v, key)}"
                )
    return "\n".join(lines) + "\n"


def save_curriculum(
    curriculum: Curriculum,
    path: str | Path,
    *,
    overwrite: bool = False,
    comment: str = "",
    registry: Registry | None = None,
) -> Path:
    """Write ``curriculum`` to ``path`` (``.toml``, or ``.json``);
    an existing file is replaced only with ``overwrite=True``."""
    path = Path(path)
    if path.suffix not in _SUFFIXES:
        raise CurriculumFileError(
            f"expected a {' or '.join(_SUFFIXES)} path; name the file e.g. curriculum.toml", source=str(path)
        )
    if path.exists() and not overwrite:
        raise CurriculumFileError(
            "already exists; pass overwrite=True to replace it, or pick another path", source=str(path)
        )
    if path.suffix == ".json":
        text = json.dumps(curriculum_to_dict(curriculum, registry=registry), indent=2) + "\n"
    else:
        text = to_toml(curriculum, comment=comment, registry=registry)
    path.write_text(text, encoding="utf-8")
    return path
