"""A curriculum as data: a plain dict (JSON, YAML, a Hydra or LightningCLI config) or a TOML file.

The layout is in docs/curriculum-files.md. A guard or action is a table whose ``type`` names one in
the registry (``import policies`` registers the built-ins) and whose other keys are its attrs fields
(arrays arrive as tuples); a bare string is a type without arguments. TOML has no null: a field whose
metadata names a word for None uses it (``SetCutoff``'s full band is ``n = "full"``). One cattrs
converter structures the data into the attrs classes the code builds, so a curriculum from data has
the fingerprint of the one in code. A data file never imports or executes anything.
"""

from __future__ import annotations

import difflib
import inspect
import json
import os
import re
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import cattrs
import tomli_w
from cattrs.errors import BaseValidationError, ForbiddenExtraKeysError
from cattrs.gen import make_dict_structure_fn, override

from engine.core import Action, Curriculum, CurriculumError, Guard, Params, Phase, Transition, describe, short_repr
from engine.files import atomic_write

try:  # Python 3.11+
    import tomllib as _toml
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as _toml  # type: ignore[no-redef]

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
MAX_BYTES = 4 << 20  # a curriculum file is a few KB; anything near this is not one
MAX_DEPTH = 64  # tables and arrays nested in each other (a guard in a combinator is two levels)


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
    name: str
    kind: str  # _GUARD or _ACTION
    target: Any  # an attrs class (its fields are the file's keys), another class, or a function


class Registry:
    """The guard and action names a data file may use, each registered once. ``import policies``
    fills :data:`default_registry`, the one the loaders use unless given another; ``Registry()``
    starts empty, ``default_registry.copy()`` with what the default holds."""

    def __init__(self) -> None:
        self._names: dict[str, _Entry] = {}
        self._refused: dict[str, str] = {}  # names a file cannot use -> why
        self.converter = _converter(self)

    def copy(self) -> Registry:
        """A registry with the same names, to register more without changing this one."""
        other = Registry()
        other._names.update(self._names)
        other._refused.update(self._refused)
        return other

    def register_guard(self, obj: Any, name: str | None = None) -> Any:
        """Let data files name the guard class (or plain guard function) ``obj``, as ``name``
        (default: its ``__name__``). Returns ``obj``, so it works as a class decorator."""
        return self._register(obj, name, _GUARD)

    def register_action(self, obj: Any, name: str | None = None) -> Any:
        """Let data files name the action class (or plain action function) ``obj``, as ``name``."""
        return self._register(obj, name, _ACTION)

    def refuse(self, name: str, reason: str) -> None:
        """Name a class a data file cannot hold (reading and writing it say ``reason``)."""
        self._refused[name] = reason

    def _register(self, obj: Any, name: str | None, kind: str) -> Any:
        call = f"register_{kind}"
        if not isinstance(obj, type) and not inspect.isfunction(obj):
            raise CurriculumError(
                f"{call}: expected a {kind} class or a named function, got {type(obj).__name__}: {describe(obj)}; "
                f"register the class itself, e.g. {call}(My{kind.title()})"
            )
        if obj.__name__ == "<lambda>":
            raise CurriculumError(
                f"{call}: a lambda cannot be named by a data file (nor fingerprinted); define a function with def"
            )
        name = obj.__name__ if name is None else name
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", name):
            raise CurriculumError(
                f"{call}: name must be an identifier (dots allowed), got {name!r}; e.g. name={obj.__name__!r}"
            )
        existing = self._names.get(name)
        if existing is not None:
            if existing.target is obj and existing.kind == kind:
                return obj  # the same object again (a module imported twice): nothing changes
            raise CurriculumError(
                f"{call}: the name {name!r} is already used by the {existing.kind} {describe(existing.target)}; "
                f"a name means one thing in every file: register under another, e.g. "
                f"{call}({obj.__name__}, name='my.{name}')"
            )
        other = self._entry_of(obj)
        if other is not None:
            raise CurriculumError(
                f"{call}: {describe(obj)} is already registered as the {other.kind} {other.name!r}; "
                "register it once and use that name"
            )
        self._names[name] = _Entry(name, kind, obj)
        return obj

    def _entry_of(self, target: Any) -> _Entry | None:
        return next((e for e in self._names.values() if e.target is target), None)

    def entry_for(self, obj: Any) -> _Entry | None:
        """The entry that writes ``obj``: its class's, or (a plain function) its own."""
        return self._entry_of(type(obj)) or self._entry_of(obj)

    def build(self, value: Any, kind: str) -> Any:
        """A guard or action from ``{ type = "Name", field = value, ... }`` (or the bare string "Name")."""
        example = "MinEpoch" if kind == _GUARD else "RestartLR"
        if isinstance(value, str):
            value = {"type": value}
        if not isinstance(value, Mapping) or not isinstance(value.get("type"), str):
            got = f"{_kind(value)} {short_repr(value)}" if not isinstance(value, Mapping) else "no 'type' (its name)"
            raise CurriculumError(f'expected a {kind} table {{ type = "{example}", ... }}, got {got}; write it so')
        name, args = value["type"], {k: v for k, v in value.items() if k != "type"}
        entry = self._names.get(name)
        if entry is None or entry.kind != kind:
            raise CurriculumError(f"type: {self._unknown(name, kind, entry)}")
        target = entry.target
        if attrs.has(target):
            return self.converter.structure(args, target)
        if args:
            raise CurriculumError(
                f"{name} takes no arguments in a file (it is not an attrs class); remove {next(iter(args))!r}, "
                "or make it an attrs class whose fields are its arguments"
            )
        return target() if isinstance(target, type) else target

    def _unknown(self, name: str, kind: str, entry: _Entry | None) -> str:
        if name in self._refused:
            return f"{name} cannot be named in a data file: {self._refused[name]}"
        if entry is not None:
            where = "guards" if entry.kind == _GUARD else "actions or on_enter"
            article = {_GUARD: "a guard", _ACTION: "an action"}
            return f"{name!r} is {article[entry.kind]}, not {article[kind]}; move it to {where}"
        known = sorted(n for n, e in self._names.items() if e.kind == kind)
        if not known:
            return f"unknown {kind} {name!r}: none is registered; `import policies` registers the built-ins"
        near = difflib.get_close_matches(name, known, n=1)
        return (
            f"unknown {kind} {name!r}; expected one of {', '.join(known)}"
            + (f" (did you mean {near[0]!r}?)" if near else "")
            + f", or register your own first: engine.register_{kind}(YourClass)"
        )


def _converter(registry: Registry) -> cattrs.Converter:
    """One converter for the whole layout: Curriculum, Phase and Transition as attrs classes, guards
    and actions through ``registry``. Values pass through as they are (no coercion: ``"2"`` stays a
    string), and each class's own converters and validators judge them."""
    conv = cattrs.Converter(forbid_extra_keys=True)
    for plain in (int, float, str, bool, Params):
        conv.register_structure_hook(plain, lambda value, _: value)
    conv.register_structure_hook_func(lambda t: t == Guard, lambda value, _: registry.build(value, _GUARD))
    conv.register_structure_hook_func(lambda t: t == Action, lambda value, _: registry.build(value, _ACTION))

    def many(of: Any, what: str) -> Any:
        def structure(value: Any, _: Any) -> tuple:
            if not isinstance(value, (list, tuple)):
                raise CurriculumError(
                    f"expected an array of {what}, got {_kind(value)} {short_repr(value)}; wrap it in [ ]"
                )
            return conv.structure(value, tuple[of, ...])

        return override(struct_hook=structure)

    def table(cls: type, **fields: Any) -> None:
        structure = make_dict_structure_fn(cls, conv, **fields)

        def checked(value: Any, _: Any) -> Any:
            if not isinstance(value, Mapping):
                raise CurriculumError(f"expected a table, got {_kind(value)} {short_repr(value)}; write it as a table")
            return structure(value, cls)

        conv.register_structure_hook(cls, checked)

    table(Phase, on_enter=many(Action, "actions"))
    table(Transition, guards=many(Guard, "guards"), actions=many(Action, "actions"))
    table(Curriculum, phases=many(Phase, "phase tables"), transitions=many(Transition, "transition tables"))
    return conv


default_registry = Registry()


def register_guard(obj: Any, name: str | None = None) -> Any:
    """Let data files name the guard class (or plain guard function) ``obj`` (default: its
    ``__name__``); usable as a class decorator. A name is registered once."""
    return default_registry.register_guard(obj, name)


def register_action(obj: Any, name: str | None = None) -> Any:
    """Let data files name the action class (or plain action function) ``obj``; see :func:`register_guard`."""
    return default_registry.register_action(obj, name)


# -- reading --------------------------------------------------------------------------------------


def curriculum_from_dict(
    data: Mapping[str, Any], *, registry: Registry | None = None, source: str | None = None
) -> Curriculum:
    """The :class:`Curriculum` that ``data`` describes, with the names ``registry`` holds (default:
    :data:`default_registry`). ``source`` names the data in messages (e.g. ``"train.yaml:
    model.curriculum"``); a :class:`CurriculumFileError` names the key, what was wrong and the fix."""
    data = _as_data(data, source)
    if not isinstance(data, dict):
        raise CurriculumFileError(
            f"expected a table with [[phases]], got {_kind(data)} {short_repr(data)}", source=source
        )
    version = data.pop("version", VERSION)
    if type(version) is not int or version != VERSION:
        raise CurriculumFileError(
            f"expected {VERSION} (the layout this release reads), got {short_repr(version)}; "
            "upgrade the engine, or write the file for this version",
            source=source,
            key="version",
        )
    try:
        return (registry or default_registry).converter.structure(data, Curriculum)
    except BaseValidationError as exc:
        key, message = _first_error(exc)
        raise CurriculumFileError(message, source=source, key=key) from None
    except CurriculumError as exc:  # the curriculum's own checks (unreachable phases, ...)
        raise CurriculumFileError(str(exc), source=source) from None


def _first_error(group: BaseValidationError) -> tuple[str, str]:
    """The key path and the message of the first error in a cattrs error group (a user's mistake),
    or the group itself raised again when an error in it is not one (a bug keeps its traceback)."""

    def message(exc: BaseException, _type: Any) -> str:
        if isinstance(exc, ForbiddenExtraKeysError):
            fields = [a.alias for a in attrs.fields(exc.cl) if a.init]
            extra = sorted(exc.extra_fields)[0]
            near = difflib.get_close_matches(extra, fields, n=1)
            return f"unknown key {extra!r}; expected one of {', '.join(fields)}" + (
                f"; did you mean {near[0]!r}?" if near else "; remove it"
            )
        if isinstance(exc, KeyError):
            return "required key missing; add it"
        if isinstance(exc, CurriculumError):
            return str(exc)
        raise group

    text = cattrs.transform_error(group, path="", format_exception=message)[0]
    detail, _, path = text.rpartition(" @ ")
    return path.lstrip("."), detail


def _as_data(value: Any, source: str | None, path: str = "", depth: int = 0) -> Any:
    """Mappings as dicts and sequences as lists, nested (a Hydra ``DictConfig`` reads like JSON's
    dicts), no deeper than :data:`MAX_DEPTH`."""
    if depth > MAX_DEPTH:
        raise CurriculumFileError(
            f"tables and arrays nested more than {MAX_DEPTH} deep; a curriculum needs far fewer: flatten it",
            source=source,
            key=path.lstrip("."),
        )
    if isinstance(value, Mapping):
        return {k: _as_data(v, source, f"{path}.{k}", depth + 1) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray)):
        return [_as_data(v, source, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    return value


def _unique_keys(source: str) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> dict:
        table: dict = {}
        for key, value in items:
            if key in table:
                raise CurriculumFileError(f"the key {key!r} appears twice in one table; keep one", source=source)
            table[key] = value
        return table

    return pairs


def _read(path: Path) -> str:
    """The text of the regular file ``path``, refused before reading when it is not one (a FIFO, a
    device) or larger than :data:`MAX_BYTES`."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block the open
    except OSError as exc:
        raise CurriculumFileError(f"cannot read it ({exc.strerror or exc}); check the path", source=str(path)) from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CurriculumFileError(
                "not a regular file (a FIFO, a device or a folder); pass a .toml/.json file", source=str(path)
            )
        if info.st_size > MAX_BYTES:
            raise CurriculumFileError(
                f"{info.st_size} bytes, more than a curriculum file holds ({MAX_BYTES} at most); check the path",
                source=str(path),
            )
        raw = file.read(MAX_BYTES + 1)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CurriculumFileError(f"not UTF-8 text (byte {exc.start}); save it as UTF-8", source=str(path)) from None


def load_curriculum(
    source: str | Path | Mapping[str, Any], *, registry: Registry | None = None, name: str | None = None
) -> Curriculum:
    """The curriculum in a ``.toml`` (or ``.json``) file, or, for a config value that may be either a
    path or the curriculum itself (LightningCLI, Hydra), in ``source`` when it is a mapping (``name``
    then names it in messages, e.g. ``"config.yaml: model.curriculum"``). Errors name the file, the
    key, and for a syntax error the line."""
    if isinstance(source, Mapping):
        return curriculum_from_dict(source, registry=registry, source=name)
    if not isinstance(source, (str, Path)):
        raise CurriculumFileError(
            f"expected a path to a .toml/.json file or a table (mapping), got {_kind(source)} "
            f"{short_repr(source)}; pass the file's path or the curriculum's data",
            source=name,
        )
    path = Path(source)
    where = str(path)
    if path.suffix not in _SUFFIXES:
        raise CurriculumFileError(
            f"expected a {' or '.join(_SUFFIXES)} file; for YAML, load it yourself (yaml.safe_load) "
            "and pass the dict to curriculum_from_dict",
            source=where,
        )
    text = _read(path)
    try:
        if path.suffix == ".json":
            data = json.loads(text, object_pairs_hook=_unique_keys(where))
        else:
            data = _toml.loads(text)
    except CurriculumFileError:
        raise
    except RecursionError:
        raise CurriculumFileError(
            f"tables and arrays nested too deeply to read; a curriculum needs at most {MAX_DEPTH} levels", source=where
        ) from None
    except json.JSONDecodeError as exc:
        raise CurriculumFileError(
            f"not valid JSON: {exc.msg} (column {exc.colno}); fix the syntax", source=where, line=exc.lineno
        ) from None
    except _toml.TOMLDecodeError as exc:
        message = str(exc)
        match = re.search(r"\(at line (\d+), column (\d+)\)", message)
        line = int(match.group(1)) if match else None
        message = re.sub(r"\s*\(at line \d+, column \d+\)", f" (column {match.group(2)})" if match else "", message)
        raise CurriculumFileError(
            f"not valid TOML: {message}; fix the syntax (https://toml.io)", source=where, line=line
        ) from None
    except ValueError as exc:  # the parsers' other refusal: an integer beyond Python's digit limit
        raise CurriculumFileError(
            f"a value cannot be read: {str(exc).split(';')[0]}; shorten it", source=where
        ) from None
    return curriculum_from_dict(data, registry=registry, source=where)


# -- writing --------------------------------------------------------------------------------------


def curriculum_to_dict(curriculum: Curriculum, *, registry: Registry | None = None) -> dict:
    """``curriculum`` as plain data, which :func:`curriculum_from_dict` turns back into a curriculum
    with the same fingerprint. Every field of a guard or action is written, defaults included (so a
    file keeps its meaning if a default changes), except None where None is the default. A guard or
    action not registered, or whose fields cannot be read (not an attrs class), is a CurriculumError."""
    registry = registry or default_registry

    def calls(objs: Any, key: str, kind: str) -> list:
        return [_call(obj, registry, f"{key}[{j}]", kind) for j, obj in enumerate(objs)]

    out: dict[str, Any] = {"version": VERSION}
    if curriculum.initial is not None:
        out["initial"] = curriculum.initial
    out["phases"] = []
    for i, phase in enumerate(curriculum.phases):
        entry: dict[str, Any] = {"name": phase.name}
        if phase.params:
            entry["params"] = _value(phase.params, registry, f"phases[{i}].params")
        if phase.on_enter:
            entry["on_enter"] = calls(phase.on_enter, f"phases[{i}].on_enter", _ACTION)
        out["phases"].append(entry)
    for i, tr in enumerate(curriculum.transitions):
        entry = {"source": tr.source, "dest": tr.dest, "when": tr.when.value}
        entry["guards"] = calls(tr.guards, f"transitions[{i}].guards", _GUARD)
        if tr.actions:
            entry["actions"] = calls(tr.actions, f"transitions[{i}].actions", _ACTION)
        out.setdefault("transitions", []).append(entry)
    return out


def _call(obj: Any, registry: Registry, key: str, kind: str) -> dict:
    entry = registry.entry_for(obj)
    if entry is None or entry.kind != kind:
        cls = obj.__name__ if inspect.isfunction(obj) else type(obj).__name__
        if cls in registry._refused:
            raise CurriculumError(f"{key}: {describe(obj)} cannot be written to a data file: {registry._refused[cls]}")
        raise CurriculumError(
            f"{key}: {describe(obj)} cannot be written to a data file: it is not a built-in or registered {kind}; "
            f"register it first: engine.register_{kind}({cls})"
        )
    out: dict[str, Any] = {"type": entry.name}
    if not attrs.has(entry.target):
        if getattr(obj, "__dict__", None) and isinstance(entry.target, type):
            raise CurriculumError(
                f"{key}: {describe(obj)} cannot be written to a data file: its arguments cannot be read; "
                f"make {entry.target.__name__} an attrs class (@attrs.define) whose fields are its arguments"
            )
        return out
    for field in attrs.fields(type(obj)):
        if not field.init:
            continue
        value = getattr(obj, field.name)
        if value is None and "null" in field.metadata:
            value = field.metadata["null"]
        elif value is None and field.default is None:
            continue
        out[field.alias] = _value(value, registry, f"{key}.{field.alias}")
    return out


def _value(value: Any, registry: Registry, key: str) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _value(v, registry, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_value(v, registry, f"{key}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    entry = registry.entry_for(value)
    if entry is not None:
        return _call(value, registry, key, entry.kind)
    raise CurriculumError(
        f"{key}: {type(value).__name__} {short_repr(value)} cannot be written to a data file; "
        "use strings, numbers, booleans, lists, tables and registered guards"
    )


def _none_at(value: Any, key: str) -> str | None:
    """The key path of the first None in ``value`` (which TOML cannot hold), or None."""
    if value is None:
        return key
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        found = _none_at(v, f"{key}[{k}]" if isinstance(k, int) else f"{key}.{k}" if key else k)
        if found is not None:
            return found
    return None


def to_toml(curriculum: Curriculum | Mapping[str, Any], *, comment: str = "", registry: Registry | None = None) -> str:
    """TOML text of a curriculum (or of its :func:`curriculum_to_dict`); ``comment`` lines go on top."""
    data = curriculum_to_dict(curriculum, registry=registry) if isinstance(curriculum, Curriculum) else curriculum
    hole = _none_at(data, "")
    if hole is not None:
        raise CurriculumError(
            f"{hole} is None, which TOML cannot hold; drop it, or write JSON instead (a .json path to save_curriculum)"
        )
    lines = [f"# {line}".rstrip() + "\n" for line in comment.splitlines()]
    return "".join(lines) + tomli_w.dumps(data)


def save_curriculum(
    curriculum: Curriculum,
    path: str | Path,
    *,
    overwrite: bool = False,
    comment: str = "",
    registry: Registry | None = None,
) -> Path:
    """Write ``curriculum`` to ``path`` (``.toml``, or ``.json``); an existing file is replaced
    only with ``overwrite=True``, and then atomically: a symlink at ``path`` is replaced by the
    file, its target left as it was."""
    path = Path(path)
    if path.suffix not in _SUFFIXES:
        raise CurriculumFileError(
            f"expected a {' or '.join(_SUFFIXES)} path; name the file e.g. curriculum.toml", source=str(path)
        )
    if os.path.lexists(path) and not overwrite:
        raise CurriculumFileError(
            "already exists; pass overwrite=True to replace it, or pick another path", source=str(path)
        )
    if path.suffix == ".json":
        text = json.dumps(curriculum_to_dict(curriculum, registry=registry), indent=2) + "\n"
    else:
        text = to_toml(curriculum, comment=comment, registry=registry)
    atomic_write(path, lambda f: f.write(text.encode()))
    return path


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", dict: "a table"}
    return names.get(type(value)) or ("an array" if isinstance(value, (list, tuple)) else f"a {type(value).__name__}")
