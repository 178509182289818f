"""The metric stream an engine was fed, recorded exactly: what :func:`engine.replay` needs.

``CurriculumEngine(curriculum, record_metrics=True)`` keeps a :class:`MetricLog` as
``engine.recorded``: every ``step_end`` and ``epoch_end`` that succeeded appends the metrics it
was given (the floats themselves, not printed ones), in order; a call that raised appends nothing.
The log is part of ``engine.state_dict()`` (key ``recorded``), so it travels in every checkpoint
the engine state travels in (an own loop's file, the HF Trainer's ``trainer_state.json``,
Lightning's ``.ckpt``), and :meth:`MetricLog.stream` gives the evaluation points back in the form
:func:`engine.replay` takes::

    engine = CurriculumEngine(curriculum, record_metrics=True)
    ...                                              # train
    replay(other_curriculum, engine.recorded.stream(), recorded=engine.history)

Memory: one float64 per metric per call, plus one int per call. Saved: each column of a metric is
cut into blocks of :data:`BLOCK` values, each stored as base64 of its little-endian float64 bytes,
byte-shuffled and zlib-compressed (exact; a finished block is encoded once and kept, so saving
often costs only the last block); the calls are stored run-length encoded.
"""

from __future__ import annotations

import base64
import binascii
import logging
import sys
import zlib
from array import array
from typing import Any, Iterator, Mapping

import attrs

from engine.core import CurriculumError

__all__ = ["MetricLog", "BLOCK", "restore_log"]

logger = logging.getLogger(__name__)

#: Values per saved block of a column.
BLOCK = 4096
_FLUSH = 1024  # calls kept as rows before they go into the columns
_FORMAT = 1
_ENCODING = "float64-le-shuffle-zlib-base64"
_POINTS = ("step_end", "epoch_end")
_FIX = "pass the 'recorded' entry of a state that engine.state_dict() returned"


def _encode(values: array) -> str:
    """float64 values -> text: little-endian bytes, byte-shuffled (all first bytes, then all
    second bytes, ...: the exponents and high mantissa bytes of similar values line up), zlib."""
    if sys.byteorder != "little":
        values = array("d", values)
        values.byteswap()
    raw = values.tobytes()
    shuffled = b"".join(raw[i::8] for i in range(8))
    return base64.b64encode(zlib.compress(shuffled, 6)).decode("ascii")


def _decode(text: str, where: str) -> array:
    try:
        shuffled = zlib.decompress(base64.b64decode(text.encode("ascii"), validate=True))
    except (binascii.Error, zlib.error, UnicodeEncodeError, AttributeError) as exc:
        raise CurriculumError(
            f"recorded metrics: {where} is not an encoded block ({type(exc).__name__}: {exc}); {_FIX}"
        ) from None
    if len(shuffled) % 8:
        raise CurriculumError(
            f"recorded metrics: {where} holds {len(shuffled)} bytes, not whole float64 values; {_FIX}"
        )
    n = len(shuffled) // 8
    raw = bytearray(len(shuffled))
    for i in range(8):
        raw[i::8] = shuffled[i * n : (i + 1) * n]
    values = array("d")
    values.frombytes(bytes(raw))
    if sys.byteorder != "little":
        values.byteswap()
    return values


@attrs.define(eq=False)
class _Column:
    """One metric at one point: its values, and its finished blocks once encoded."""

    values: array = attrs.field(factory=lambda: array("d"))
    encoded: list[str] = attrs.field(factory=list)

    def blocks(self) -> list[str]:
        done = len(self.values) // BLOCK
        while len(self.encoded) < done:
            k = len(self.encoded)
            self.encoded.append(_encode(self.values[k * BLOCK : (k + 1) * BLOCK]))
        tail = self.values[done * BLOCK :]
        return self.encoded + ([_encode(tail)] if tail else [])


@attrs.define(eq=False)
class MetricLog:
    """The evaluation points an engine was fed, in order: ``("step_end", {"loss": ..., ...})`` per
    step and ``("epoch_end", {...})`` per epoch end, each with exactly the floats it got.

    ``start_step`` and ``start_epoch`` are the clock when recording began: 0 for a run recorded
    from its start; a run that turned recording on at a resume starts there (and cannot be
    replayed from its beginning). Append is O(1) amortized: a dict lookup for the call's metric
    names and a tuple of its values kept aside; every :data:`_FLUSH` calls (and before any read)
    the kept rows go into the float64 columns in bulk.
    """

    start_step: int = 0
    start_epoch: int = 0
    _calls: array = attrs.field(init=False, factory=lambda: array("I"))  # per call: its layout
    _layouts: list[tuple[str, tuple[str, ...]]] = attrs.field(init=False, factory=list)  # (point, names)
    _index: tuple[dict, dict] = attrs.field(
        init=False, factory=lambda: ({}, {})
    )  # per point (step, epoch): names -> layout
    _pending: list[tuple[int, tuple]] = attrs.field(init=False, factory=list)  # (layout, values) not yet in the columns
    _targets: list[list[array]] = attrs.field(init=False, factory=list)  # per layout: its columns' arrays
    _columns: dict[tuple[str, str], _Column] = attrs.field(init=False, factory=dict)  # (point, name) -> column
    _counts: list[int] = attrs.field(init=False, factory=lambda: [0, 0])  # step_end, epoch_end calls

    # -- recording -------------------------------------------------------------------------------

    def append(self, point: str, metrics: Mapping[str, float]) -> None:
        """Record one call: ``point`` is ``"step_end"`` or ``"epoch_end"``, ``metrics`` its floats
        (the engine has validated them; ``loss`` is among a step's)."""
        names = tuple(metrics)
        layout = self._index[point == "epoch_end"].get(names)
        if layout is None:
            layout = self._add_layout(point, names)
        pending = self._pending
        pending.append((layout, tuple(metrics.values())))
        if len(pending) >= _FLUSH:
            self._flush()

    def _flush(self) -> None:
        """Move the kept rows into the columns: per run of calls with one layout, each column extended at once."""
        pending, self._pending = self._pending, []
        start, n = 0, len(pending)
        while start < n:
            layout = pending[start][0]
            end = start + 1
            while end < n and pending[end][0] == layout:
                end += 1
            for column, values in zip(self._targets[layout], zip(*[row for _, row in pending[start:end]])):
                column.extend(values)
            self._calls.extend(array("I", [layout]) * (end - start))
            self._counts[self._layouts[layout][0] == "epoch_end"] += end - start
            start = end

    def _add_layout(self, point: str, names: tuple[str, ...]) -> int:
        layout = len(self._layouts)
        self._layouts.append((point, names))
        self._index[point == "epoch_end"][names] = layout
        self._targets.append([self._columns.setdefault((point, name), _Column()).values for name in names])
        return layout

    # -- reading ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        self._flush()
        return len(self._calls)

    @property
    def steps(self) -> int:
        """The ``step_end`` calls recorded."""
        self._flush()
        return self._counts[0]

    @property
    def epochs(self) -> int:
        """The ``epoch_end`` calls recorded."""
        self._flush()
        return self._counts[1]

    def names(self, point: str = "step_end") -> list[str]:
        """The metrics recorded at ``point``, in the order first seen."""
        return [name for p, name in self._columns if p == point]

    def __iter__(self) -> Iterator[tuple[str, dict[str, float]]]:
        self._flush()
        at = {key: 0 for key in self._columns}
        columns = {key: column.values for key, column in self._columns.items()}
        for layout in self._calls:
            point, names = self._layouts[layout]
            values = {}
            for name in names:
                key = (point, name)
                values[name] = columns[key][at[key]]
                at[key] += 1
            yield point, values

    def stream(self) -> list[tuple[str, dict[str, float]]]:
        """The recorded calls in order, as :func:`engine.replay` takes them."""
        return list(self)

    def series(self, name: str, point: str = "step_end") -> tuple[list[int], list[float]]:
        """``(global steps, values)`` of metric ``name`` at ``point``: a step_end's global step
        is the step it counted; an epoch_end's is the step it followed."""
        steps, values = [], []
        step = self.start_step
        for p, metrics in self:
            if p == "step_end":
                step += 1
            if p == point and name in metrics:
                steps.append(step)
                values.append(metrics[name])
        return steps, values

    # -- state -------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """JSON-safe: the start clock, the layouts, the calls run-length encoded, the columns."""
        self._flush()
        runs: list[list[int]] = []
        for layout in self._calls:
            if runs and runs[-1][0] == layout:
                runs[-1][1] += 1
            else:
                runs.append([layout, 1])
        return {
            "format": _FORMAT,
            "encoding": _ENCODING,
            "block": BLOCK,
            "start_step": self.start_step,
            "start_epoch": self.start_epoch,
            "layouts": [[point, list(names)] for point, names in self._layouts],
            "calls": runs,
            "columns": [[point, name, column.blocks()] for (point, name), column in self._columns.items()],
        }

    @classmethod
    def from_state_dict(cls, state: Any) -> "MetricLog":
        """The log a :meth:`state_dict` describes; anything malformed is a :class:`CurriculumError`."""
        if not isinstance(state, dict) or state.get("format") != _FORMAT or state.get("encoding") != _ENCODING:
            got = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise CurriculumError(
                f"recorded metrics must be a dict of format {_FORMAT} ({_ENCODING}), got {got!r}; {_FIX}"
            )
        try:
            start_step, start_epoch = state["start_step"], state["start_epoch"]
            layouts, calls, columns, block = state["layouts"], state["calls"], state["columns"], state["block"]
        except KeyError as exc:
            raise CurriculumError(f"recorded metrics have no {exc.args[0]!r}; {_FIX}") from None
        for field, value in (("start_step", start_step), ("start_epoch", start_epoch), ("block", block)):
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if field == "block" else 0):
                raise CurriculumError(f"recorded metrics' {field} must be an int >= 0, got {value!r}; {_FIX}")
        log = cls(start_step=start_step, start_epoch=start_epoch)
        for k, entry in enumerate(layouts if isinstance(layouts, list) else [None]):
            ok = (
                isinstance(entry, list)
                and len(entry) == 2
                and entry[0] in _POINTS
                and isinstance(entry[1], list)
                and all(isinstance(n, str) for n in entry[1])
                and tuple(entry[1]) not in log._index[entry[0] == "epoch_end"]
            )
            if not ok:
                raise CurriculumError(
                    f"recorded metrics' layouts[{k}] = {entry!r} is not a distinct [point, [names]]; {_FIX}"
                )
            log._add_layout(entry[0], tuple(entry[1]))
        decoded: dict[tuple[str, str], array] = {}
        saved_blocks: dict[tuple[str, str], list[tuple[str, int]]] = {}  # (text, values) per saved block
        for k, entry in enumerate(columns if isinstance(columns, list) else [None]):
            if (
                not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[2], list))
                or (entry[0], entry[1]) not in log._columns
            ):
                raise CurriculumError(
                    f"recorded metrics' columns[{k}] is not [point, name, [blocks]] of a recorded metric; {_FIX}"
                )
            values, blocks = array("d"), []
            for b, text in enumerate(entry[2]):
                part = _decode(text, f"columns[{k}] ({entry[0]} {entry[1]!r}) block {b}")
                values.extend(part)
                blocks.append((text, len(part)))
            decoded[(entry[0], entry[1])] = values
            saved_blocks[(entry[0], entry[1])] = blocks
        expected = dict.fromkeys(log._columns, 0)
        for k, run in enumerate(calls if isinstance(calls, list) else [None]):
            ok = (
                isinstance(run, list)
                and len(run) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in run)
                and 0 <= run[0] < len(log._layouts)
                and run[1] >= 1
            )
            if not ok:
                raise CurriculumError(
                    f"recorded metrics' calls[{k}] = {run!r} is not [layout index, count >= 1]; {_FIX}"
                )
            point, names = log._layouts[run[0]]
            for name in names:
                expected[(point, name)] += run[1]
            log._calls.extend([run[0]] * run[1])
            log._counts[point == "epoch_end"] += run[1]
        for key, count in expected.items():
            got = len(decoded.get(key, ()))
            if got != count:
                raise CurriculumError(
                    f"recorded metrics' column {key[0]} {key[1]!r} holds {got} values, its calls need {count}; {_FIX}"
                )
            column = log._columns[key]
            column.values.extend(decoded.get(key, array("d")))
            full = saved_blocks.get(key, [])[: count // BLOCK]
            if all(n == BLOCK for _, n in full):  # the saved finished blocks are as we cut them: keep their text
                column.encoded = [text for text, _ in full]
        return log


def restore_log(saved: Any, clock: Any, record: bool, lenient: bool) -> MetricLog | None:
    """The log a restored engine keeps: the saved one (checked against the restored ``clock``), a
    new one starting at the clock when the state has none, None when the engine does not record.

    A saved log that does not end at the clock is refused (left out with a warning when ``lenient``).
    """
    if not record:
        if saved is not None:
            logger.warning(
                "the restored engine state has recorded metrics, but this engine was built without "
                "record_metrics=True: its state_dict() will not keep them"
            )
        return None
    fresh = MetricLog(start_step=clock.global_step, start_epoch=clock.epoch)
    if saved is None:
        return fresh
    log = MetricLog.from_state_dict(saved)
    if (log.start_step + log.steps, log.start_epoch + log.epochs) != (clock.global_step, clock.epoch):
        problem = (
            f"recorded metrics end at step {log.start_step + log.steps}, epoch {log.start_epoch + log.epochs}, "
            f"but the engine state's clock is at step {clock.global_step}, epoch {clock.epoch}"
        )
        if not lenient:
            raise CurriculumError(
                f"{problem}; {_FIX}, or pass allow_fingerprint_mismatch=True to record afresh from here"
            )
        logger.warning("load_state_dict: left out the recorded metrics: %s; recording afresh from here", problem)
        return fresh
    return log
