"""Replay a recorded run under every setting of a grid: where would each rule have switched?

    table = replay_grid(make_curriculum, engine, grid={"threshold": [0.001, 0.01], "window": [50, 100]})
    print(table)                 # one row per setting: the step of each switch and its deciding guard
    table.rows[0].departure      # the first decision that differs from the recorded run, or None

``make_curriculum`` builds the curriculum from keyword arguments (its defaults: the recorded run's
settings); the recorded run is an engine built with ``record_metrics=True``, its state, or a
:class:`~engine.recording.MetricLog` (see :func:`replay_grid`). No action runs.
"""

from __future__ import annotations

import inspect
import itertools
from typing import Any, Callable, Iterable, Mapping, Sequence

import attrs

from engine.core import Curriculum, CurriculumError, Point
from engine.history import Record
from engine.plan import Plan
from engine.recording import MetricLog
from engine.replay import Replay, replay
from engine.runtime import CurriculumEngine
from engine.state import from_primitives

__all__ = ["GridRow", "GridTable", "replay_grid", "recorded_run", "format_table", "legend", "LEGEND"]


def legend(word: str = "switch") -> str:
    """The key to :func:`format_table`'s cells, for a table whose transitions are called ``word``."""
    does, did = word + ("es" if word.endswith("h") else "s"), word + ("d" if word.endswith("e") else "ed")
    return (
        f"step Decider: the {word} and the guard that became true last; "
        f"*: the replay {does} where the recorded run did not;\n"
        f"> S: the recorded run {did} at step S, this setting not yet; ?: after the departure "
        "(the recorded metrics no\nlonger follow from this setting); departs: the first differing decision "
        "(-: none within the recorded steps)"
    )


LEGEND = legend()


@attrs.frozen
class GridRow:
    """One setting of the grid: its keyword arguments, a label, and the replay under it."""

    settings: dict[str, Any]
    label: str
    replay: Replay

    @property
    def switches(self) -> list[Record]:
        """The transitions this setting makes, up to and including the departure (the evidence)."""
        return _moves(self.replay.faithful())

    @property
    def departure(self):
        return self.replay.departure


@attrs.frozen
class GridTable:
    """The result of :func:`replay_grid`: the recorded transitions, one :class:`GridRow` per setting,
    and ``own``, the replay with the factory's defaults; ``str(table)`` is the text table."""

    recorded: list[Record]
    rows: list[GridRow]
    own: Replay
    steps: int
    epochs: int

    def __str__(self) -> str:
        return format_table(self.recorded, [(r.label, r.replay) for r in self.rows], self.own)

    def to_markdown(self) -> str:
        return format_table(self.recorded, [(r.label, r.replay) for r in self.rows], self.own, markdown=True)

    def note(self) -> str | None:
        """A line when the factory's defaults do not reproduce the recorded run, else None."""
        if self.own.departure is None:
            return None
        return (
            "replayed with the factory's defaults, the run departs from its record: "
            + self.own.departure.text()
            + "; build the factory's defaults as the run's curriculum for rows you can compare"
        )


# -- the recorded run ------------------------------------------------------------------------------


def recorded_run(source: Any, who: str = "replay_grid") -> tuple[MetricLog, list[Record], dict | None]:
    """``(recorded metrics, history, curriculum spec)`` of an engine built with ``record_metrics=True``
    or of its ``state_dict()``; ``who`` names the caller in errors."""
    if isinstance(source, CurriculumEngine):
        log, history, spec = source.recorded, list(source.history), source.curriculum.spec()
    elif isinstance(source, Mapping):
        snap = from_primitives(dict(source))
        log = MetricLog.from_state_dict(snap.recorded) if snap.recorded is not None else None
        history, spec = snap.history, snap.spec
    else:
        raise CurriculumError(
            f"{who}: expected a CurriculumEngine built with record_metrics=True or its state_dict(), "
            f"got {type(source).__name__}"
        )
    if log is None:
        raise CurriculumError(
            f"{who}: this engine{'' if isinstance(source, CurriculumEngine) else ' state'} records no metrics; "
            "build the run's engine with CurriculumEngine(curriculum, record_metrics=True)"
        )
    return log, history, spec


# -- the grid ---------------------------------------------------------------------------------------


def _name(factory: Any) -> str:
    return getattr(factory, "__qualname__", None) or repr(factory)


def _combinations(factory: Callable, grid: Mapping[str, Iterable[Any]]) -> list[dict[str, Any]]:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = None  # a builtin or C callable: its parameters cannot be read, the call will say
    open_ended = params is None or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    axes = []
    for key, values in grid.items():
        if not open_ended and (key not in params or params[key].kind is inspect.Parameter.POSITIONAL_ONLY):
            raise CurriculumError(
                f"replay_grid: grid key {key!r} is not a parameter of {_name(factory)} (its parameters: "
                f"{', '.join(params) or 'none'}); grid over the keyword arguments the curriculum factory takes"
            )
        values = list(values) if isinstance(values, (list, tuple, range)) else None
        if not values:
            raise CurriculumError(
                f"replay_grid: grid[{key!r}] must be a non-empty list of values, e.g. grid={{{key!r}: [v1, v2]}}"
            )
        axes.append([(key, v) for v in values])
    return [dict(combo) for combo in itertools.product(*axes)]


def _check_metrics(curriculum: Curriculum, log: MetricLog, where: str) -> None:
    """Every metric a guard of ``curriculum`` reads at a point was recorded there (where the run made calls)."""
    needs = Plan.build(curriculum).all_needs
    for point, calls in ((Point.STEP_END, log.steps), (Point.EPOCH_END, log.epochs)):
        recorded = set(log.names(point.value))
        missing = [f"{', '.join(who)} reads {m!r}" for m, who in needs[point].items() if m not in recorded]
        if missing and calls:
            passed = ", ".join(sorted(recorded)) or "nothing"
            raise CurriculumError(
                f"replay_grid: the recorded stream does not fit {where}: {'; '.join(missing)} at {point.value}, "
                f"which the recorded run did not pass there (recorded there: {passed}); "
                "replay a curriculum that reads the metrics the run recorded"
            )


def _replay(factory: Callable, settings: dict[str, Any], log: MetricLog, stream: list, history: list[Record]) -> Replay:
    """The recorded stream replayed on ``factory(**settings)``."""
    where = f"{_name(factory)}({', '.join(f'{k}={v!r}' for k, v in settings.items())})"
    curriculum = factory(**settings)
    if not isinstance(curriculum, Curriculum):
        raise CurriculumError(
            f"replay_grid: {where} returned {type(curriculum).__name__}, not a Curriculum; "
            "the factory must build and return the curriculum"
        )
    _check_metrics(curriculum, log, where)
    try:
        return replay(curriculum, stream, recorded=history)
    except CurriculumError as exc:
        raise CurriculumError(f"replay_grid: replaying the recorded stream on {where} failed: {exc}") from exc


def _label(settings: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in settings.items()) or "defaults"


def replay_grid(
    curriculum_factory: Callable[..., Curriculum],
    recorded: Any,
    grid: Mapping[str, Iterable[Any]] | None = None,
    *,
    history: Sequence[Record] | None = None,
    label: Callable[[dict[str, Any]], str] = _label,
) -> GridTable:
    """Replay the recorded run under ``curriculum_factory(**setting)`` for every combination in ``grid``
    (each key a keyword parameter of the factory); ``own`` is the replay with its defaults.

    ``recorded``: a :class:`CurriculumEngine` built with ``record_metrics=True``, its
    ``state_dict()``, or a :class:`MetricLog` (then pass ``history=``). ``label`` names a row from
    its setting. Bad input is a :class:`CurriculumError`; nothing is changed.
    """
    if not callable(curriculum_factory):
        raise CurriculumError(
            "replay_grid: 'curriculum_factory' must be a function that returns a Curriculum, "
            f"got {curriculum_factory!r}"
        )
    combos = _combinations(curriculum_factory, dict(grid or {}))
    log, records = (recorded, None) if isinstance(recorded, MetricLog) else recorded_run(recorded)[:2]
    records = list(history) if history is not None else records
    if records is None:
        raise CurriculumError(
            "replay_grid: a MetricLog alone has no history to compare with; pass history=engine.history"
        )
    if (log.start_step, log.start_epoch) != (0, 0):
        raise CurriculumError(
            f"replay_grid: the recording began at step {log.start_step} (epoch {log.start_epoch}), not at the "
            "run's start (record_metrics was turned on at a resume); a replay needs every metric since the start"
        )
    stream = log.stream()
    own = _replay(curriculum_factory, {}, log, stream, records)
    rows = [GridRow(s, label(s), _replay(curriculum_factory, s, log, stream, records)) for s in combos]
    return GridTable(recorded=_moves(records), rows=rows, own=own, steps=log.steps, epochs=log.epochs)


# -- the table ----------------------------------------------------------------------------------------


def _moves(history: Iterable[Record]) -> list[Record]:
    return [r for r in history if r.point in ("step_end", "epoch_end")]


def _decider(record: Record) -> str:
    """The deciding guards' class names: ``Plateau+MinEpoch``."""
    return "+".join(g.split("(", 1)[0] for g in record.decision.decided_by) if record.decision else ""


def _cells(result: Replay, n: int) -> list[str]:
    """Per switch: 'step Decider', 'step Decider *' (departs there), '> step' (the recorded run
    switched there, the replay not yet), '?' (after the departure), '-' (no switch in the data)."""
    moves = _moves(result.history)
    dep = result.departure
    cells = []
    for k in range(n):
        r = moves[k] if k < len(moves) else None
        if dep is None:
            cells.append(f"{r.global_step} {_decider(r)}" if r else "-")
        elif r is not None and r.global_step < dep.global_step:
            cells.append(f"{r.global_step} {_decider(r)}")
        elif r is not None and r.global_step == dep.global_step and dep.replayed is r:
            cells.append(f"{r.global_step} {_decider(r)} *")
        elif k == len([m for m in moves if m.global_step < dep.global_step]) and dep.replayed is None:
            cells.append(f"> {dep.global_step}")
        else:
            cells.append("?")
    return cells


def format_table(
    recorded: Iterable[Record],
    rows: list[tuple[str, Replay]],
    own: Replay | None = None,
    *,
    word: str = "switch",
    markdown: bool = False,
) -> str:
    """The grid table: the recorded run's transitions (their deciders, else those of ``own``, the
    replay with the run's own settings, where it agrees), then one row per (label, replay)."""
    recorded_moves = _moves(recorded)
    n = max([len(recorded_moves), 1] + [len(_moves(res.history)) for _, res in rows])
    own_moves = {r.global_step: r for r in _moves(own.faithful())} if own is not None else {}
    rec_cells = []
    for r in recorded_moves[:n]:
        decider = _decider(r) or (_decider(own_moves[r.global_step]) if r.global_step in own_moves else "")
        rec_cells.append(f"{r.global_step} {decider}".rstrip())
    rec_cells += ["-"] * (n - len(rec_cells))
    table = [["setting"] + [f"{word} {k + 1}" for k in range(n)] + ["departs"], ["recorded"] + rec_cells + [""]]
    for name, res in rows:
        dep = res.departure
        table.append([name] + _cells(res, n) + [f"step {dep.global_step}" if dep else "-"])
    return _markdown(table) if markdown else _text(table)


def _text(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def _markdown(rows: list[list[str]]) -> str:
    def line(row: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"

    return "\n".join([line(rows[0]), "|" + "---|" * len(rows[0])] + [line(row) for row in rows[1:]])
