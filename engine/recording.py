"""The metric stream an engine was fed, recorded exactly: what :func:`engine.replay` needs.

``CurriculumEngine(curriculum, record_metrics=True)`` keeps a :class:`MetricLog` as
``engine.recorded``, saved in ``engine.state_dict()["recorded"]`` (see docs/observability.md). Saved:
the layouts (a point and its metric names, in the order first seen), each call's layout index (one
byte; four beyond 256 layouts) and each metric's column as base64 of its little-endian float64s.
"""

from __future__ import annotations

import base64
import binascii
from array import array
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping

import attrs
import cattrs
import numpy as np

from engine.core import CurriculumError

__all__ = ["MetricLog"]

_FORMAT = 2
FIX = "pass the 'recorded' entry of a state that engine.state_dict() returned"
_OLD = (
    "recorded metrics of format 1 were written by curriculum-engine 0.1.0, which this version does not read; "
    "set the state's 'recorded' entry to None to load the rest and record afresh from its step"
)
_Point = Literal["step_end", "epoch_end"]


def _width(layouts: int) -> str:
    return "<u1" if layouts <= 256 else "<u4"


def _b64(values: Any, dtype: str) -> str:
    return base64.b64encode(np.asarray(values, dtype=dtype).tobytes()).decode("ascii")


def _unb64(text: str, dtype: str, where: str, count: int | None = None) -> np.ndarray:
    """The values of ``dtype`` in base64 ``text``; with ``count``, its length is checked before decoding."""
    size = np.dtype(dtype).itemsize
    if count is not None and len(text) != 4 * -(-size * count // 3):
        raise CurriculumError(f"recorded metrics: {where} holds {len(text)} characters, not {count} values; {FIX}")
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise CurriculumError(f"recorded metrics: {where} is not base64 ({exc}); {FIX}") from None
    if len(raw) % size:
        raise CurriculumError(f"recorded metrics: {where} holds {len(raw)} bytes, not whole values; {FIX}")
    return np.frombuffer(raw, dtype=dtype)


@attrs.frozen
class _Saved:
    """The saved form (:meth:`MetricLog.state_dict`): checked by its structure, limits before allocating."""

    format: Literal[2]
    encoding: Literal["float64-le-base64"]
    start_step: int = attrs.field(validator=attrs.validators.ge(0))
    start_epoch: int = attrs.field(validator=attrs.validators.ge(0))
    layouts: list[tuple[_Point, list[str]]]
    calls: str
    columns: list[tuple[_Point, str, str]]


def _exactly(value: Any, kind: type) -> Any:
    """An int is an int (not a bool, a float or a text), and a str a str."""
    if type(value) is not kind:
        raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
    return value


def _why(exc: BaseException, kind: Any) -> str:
    """cattrs' words for a value of the wrong type; a validator's own message (e.g. must be >= 0)."""
    return cattrs.v.format_exception(exc, kind) if kind is not None else str(exc)


_converter = cattrs.Converter()
_converter.register_structure_hook(int, _exactly)
_converter.register_structure_hook(str, _exactly)


@attrs.define(eq=False)
class MetricLog:
    """The evaluation points an engine was fed, in order, each with exactly the floats it got.
    ``start_step``/``start_epoch``: the clock when recording began (not 0 when it was turned on at a
    resume: such a log cannot be replayed from the run's start); ``history``: set by :meth:`load`."""

    start_step: int = 0
    start_epoch: int = 0
    history: list | None = attrs.field(default=None, kw_only=True)
    _calls: array = attrs.field(init=False, factory=lambda: array("I"))  # per call: its layout's index
    # (point, metric names) -> (its index, its columns), in the order first seen
    _layouts: dict[tuple[str, tuple[str, ...]], tuple[int, list[array]]] = attrs.field(init=False, factory=dict)
    _columns: dict[tuple[str, str], array] = attrs.field(init=False, factory=dict)  # (point, name) -> values

    def append(self, point: str, metrics: Mapping[str, float]) -> None:
        """Record one call: ``point`` is ``"step_end"`` or ``"epoch_end"``, ``metrics`` its floats
        (the engine has validated them; ``loss`` is among a step's)."""
        layout = self._layouts.get((point, tuple(metrics))) or self._add_layout(point, tuple(metrics))
        self._calls.append(layout[0])
        for column, value in zip(layout[1], metrics.values()):
            column.append(value)

    def _add_layout(self, point: str, names: tuple[str, ...]) -> tuple[int, list[array]]:
        columns = [self._columns.setdefault((point, name), array("d")) for name in names]
        self._layouts[(point, names)] = layout = (len(self._layouts), columns)
        return layout

    def __len__(self) -> int:
        return len(self._calls)

    @property
    def steps(self) -> int:
        """The ``step_end`` calls recorded."""
        return sum(self._calls.count(k) for k, (point, _) in enumerate(self._layouts) if point == "step_end")

    @property
    def epochs(self) -> int:
        """The ``epoch_end`` calls recorded."""
        return len(self._calls) - self.steps

    def names(self, point: str = "step_end") -> list[str]:
        """The metrics recorded at ``point``, in the order first seen."""
        return [name for p, name in self._columns if p == point]

    def __iter__(self) -> Iterator[tuple[str, dict[str, float]]]:
        layouts, values = list(self._layouts), {key: iter(column) for key, column in self._columns.items()}
        for k in self._calls:
            point, names = layouts[k]
            yield point, {name: next(values[(point, name)]) for name in names}

    def stream(self) -> list[tuple[str, dict[str, float]]]:
        """The recorded calls in order, as :func:`engine.replay` takes them."""
        return list(self)

    def series(self, name: str, point: str = "step_end") -> tuple[list[int], list[float]]:
        """``(global steps, values)`` of metric ``name`` at ``point``: a step_end's global step
        is the step it counted; an epoch_end's is the step it followed."""
        steps, values = [], []
        step = self.start_step
        for p, metrics in self:
            step += p == "step_end"
            if p == point and name in metrics:
                steps.append(step)
                values.append(metrics[name])
        return steps, values

    def state_dict(self) -> dict:
        """JSON-safe: the start clock, the layouts, each call's layout, each column's float64 values."""
        return {
            "format": _FORMAT,
            "encoding": "float64-le-base64",
            "start_step": self.start_step,
            "start_epoch": self.start_epoch,
            "layouts": [[point, list(names)] for point, names in self._layouts],
            "calls": _b64(self._calls, _width(len(self._layouts))),
            "columns": [[p, n, _b64(values, "<f8")] for (p, n), values in self._columns.items()],
        }

    @classmethod
    def from_state_dict(cls, state: Any) -> MetricLog:
        """The log a :meth:`state_dict` describes; anything malformed is a :class:`CurriculumError`."""
        if isinstance(state, dict) and state.get("format") == 1:
            raise CurriculumError(_OLD)
        try:
            saved = _converter.structure(state, _Saved)
        except cattrs.BaseValidationError as exc:  # every field that does not fit, with its path
            lines = "; ".join(cattrs.transform_error(exc, path="recorded", format_exception=_why))
            raise CurriculumError(f"recorded metrics do not fit format {_FORMAT}: {lines}; {FIX}") from None
        log = cls(start_step=saved.start_step, start_epoch=saved.start_epoch)
        for k, (point, names) in enumerate(saved.layouts):
            if (point, tuple(names)) in log._layouts or len(set(names)) != len(names):
                raise CurriculumError(f"recorded metrics: layouts[{k}] repeats a layout or a name; {FIX}")
            log._add_layout(point, tuple(names))
        calls = _unb64(saved.calls, _width(len(saved.layouts)), "calls")
        if calls.size and int(calls.max()) >= len(saved.layouts):
            raise CurriculumError(
                f"recorded metrics: a call names layout {int(calls.max())}, beyond the layouts; {FIX}"
            )
        need = dict.fromkeys(log._columns, 0)
        for (point, names), count in zip(log._layouts, np.bincount(calls, minlength=len(saved.layouts)).tolist()):
            for name in names:
                need[(point, name)] += count
        if {(p, n) for p, n, _ in saved.columns} != need.keys() or len(saved.columns) != len(need):
            raise CurriculumError(f"recorded metrics: the columns are not one per recorded metric; {FIX}")
        for point, name, text in saved.columns:
            values = _unb64(text, "<f8", f"column {point} {name!r}", need[(point, name)])
            log._columns[(point, name)].frombytes(values.astype(np.float64).tobytes())
        log._calls.extend(calls.tolist())
        return log

    @classmethod
    def load(cls, path: str | Path) -> MetricLog:
        """The recording saved at ``path`` (what :func:`engine.saved.load_saved` reads), with the run's
        transitions as ``history``; a path without one is a :class:`CurriculumError`."""
        from engine.saved import load_recorded
        from engine.state import from_primitives

        snap = from_primitives(load_recorded(path)[0])
        log = cls.from_state_dict(snap.recorded)
        log.history = list(snap.history)
        return log
