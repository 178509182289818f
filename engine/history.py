"""Transition records: what fired, when, and the evidence that made it fire."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any, Iterator, Sequence

import attrs
from cattrs.preconf.json import make_converter

__all__ = [
    "GuardEvidence",
    "ActionEffect",
    "HeldSince",
    "Decision",
    "Record",
    "History",
    "HistoryView",
    "jsonable",
    "converter",
]

#: The cattrs converter of records and engine states (engine.state uses it too): extra keys refused.
converter = make_converter(forbid_extra_keys=True)


def jsonable(value: Any) -> Any:
    """``value`` as strict-JSON primitives: numpy/torch scalars to numbers, non-finite floats to text."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)  # 'inf', '-inf', 'nan'
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy and torch scalars and arrays
        return jsonable(value.tolist())
    return str(value)


@attrs.define
class GuardEvidence:
    guard: str
    evidence: dict = attrs.field(factory=dict)


@attrs.define
class ActionEffect:
    action: str
    effect: dict = attrs.field(factory=dict)


@attrs.define
class HeldSince:
    """A guard of a fired transition and the evaluation point since which it had held at every
    one of the transition's evaluation points (in the current phase)."""

    guard: str
    global_step: int
    epoch: int


@attrs.define
class Decision:
    """Which guard decided a transition: of its guards (those inside ``all_of`` one by one), the
    one that became true last. ``decided_by`` lists several when they became true together."""

    decided_by: list[str]
    held_since: list[HeldSince] = attrs.field(factory=list)

    def text(self, at_step: int) -> str:
        """``decided by Plateau(...) at step 900; MinEpoch(4) held since step 600 (epoch 4)``."""
        deciders = " and ".join(self.decided_by)
        head = f"decided by {deciders}{' together' if len(self.decided_by) > 1 else ''} at step {at_step}"
        others = [h for h in self.held_since if h.guard not in self.decided_by]
        return "; ".join([head] + [f"{h.guard} held since step {h.global_step} (epoch {h.epoch})" for h in others])


@attrs.define
class Record:
    """One transition: source, destination, when (clock and wall time), why (guards), what (actions).
    A run's first record is its start: ``source`` None, ``point`` ``"start"``, the on_enter effects."""

    source: str | None
    dest: str
    global_step: int
    epoch: int
    step_in_epoch: int
    point: str  # "start", "epoch_end", "step_end" or "manual"
    wall_time: float
    guards: list[GuardEvidence] = attrs.field(factory=list)
    actions: list[ActionEffect] = attrs.field(factory=list)
    warnings: list[str] = attrs.field(factory=list)
    reason: str | None = None
    decision: Decision | None = None  # None for manual transitions and in histories written before it existed

    def comparable(self) -> dict:
        """Every field but wall time: two runs with equal records took the same decisions."""
        d = attrs.asdict(self)
        d.pop("wall_time")
        return d


class HistoryView(Sequence[Record]):
    """A read-only, live sequence of a history's records: ``ctx.history``. Indexing, ``len`` and
    iteration only; it follows the history as records are appended."""

    __slots__ = ("_records",)

    def __init__(self, records: list[Record]) -> None:
        self._records = records

    def __getitem__(self, index):  # type: ignore[override]
        return self._records[index]

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self._records)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} records)"


_CSV_FIELDS = (
    "source dest global_step epoch step_in_epoch point wall_time reason guards actions warnings decision".split()
)


class History(HistoryView):
    """The transition records of a run, oldest first, with JSON/CSV export and a readable table."""

    __slots__ = ()

    def __init__(self, records: Sequence[Record] = ()) -> None:
        super().__init__(list(records))

    def append(self, record: Record) -> None:
        self._records.append(record)

    def truncate(self, length: int) -> None:
        """Keep the first ``length`` records (the engine rolls back a call that raised)."""
        del self._records[length:]

    def replace(self, records: Sequence[Record]) -> None:
        """Hold ``records`` instead (the engine restores a saved state); views follow."""
        self._records[:] = records

    def view(self) -> "HistoryView":
        """A read-only, live view of these records (what guards see as ``ctx.history``)."""
        return HistoryView(self._records)

    def to_dicts(self) -> list[dict]:
        return converter.unstructure(self._records, list[Record])

    @classmethod
    def from_dicts(cls, data: list[dict]) -> "History":
        return cls(converter.structure(data, list[Record]))

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dicts(), indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> "History":
        return cls.from_dicts(json.loads(text))

    def to_csv(self) -> str:
        """One row per transition; guards, actions, warnings and decision as JSON text in their cells."""
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=_CSV_FIELDS)
        writer.writeheader()
        for row in self.to_dicts():
            for key in ("guards", "actions", "warnings", "decision"):
                row[key] = json.dumps(row[key])
            writer.writerow(row)
        return out.getvalue()

    def table(self) -> str:
        """A plain-text table: one block per transition with its evidence and effects."""
        if not self._records:
            return "no transitions"
        lines = []
        for i, r in enumerate(self._records):
            if r.source is None:
                lines.append(f"#{i}  start in {r.dest}  at step {r.global_step} (epoch {r.epoch})")
            else:
                when = f"step {r.global_step} (epoch {r.epoch}, {r.point})"
                lines.append(f"#{i}  {r.source} -> {r.dest}  at {when}" + (f"  reason: {r.reason}" if r.reason else ""))
            if r.decision is not None:
                lines.append(f"     {r.decision.text(r.global_step)}")
            lines += [f"     guard  {g.guard}: {_fmt(g.evidence)}" for g in r.guards]
            lines += [f"     action {a.action}: {_fmt(a.effect)}" for a in r.actions]
            lines += [f"     WARNING {w}" for w in r.warnings]
        return "\n".join(lines)


def _fmt(d: dict) -> str:
    if not d:
        return "-"
    parts = []
    for k, v in d.items():
        if isinstance(v, float):
            v = f"{v:.4g}"
        elif isinstance(v, dict):
            v = "{" + _fmt(v) + "}"
        elif isinstance(v, list):
            v = "[" + ", ".join(f"{x:.4g}" if isinstance(x, float) else str(x) for x in v) + "]"
        parts.append(f"{k}={v}")
    return ", ".join(parts)
