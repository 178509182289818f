"""Find the engine state in a saved file (a JSON or torch file holding it at any depth, a Lightning ``.ckpt``,
an HF Trainer checkpoint folder or the highest ``checkpoint-N`` in one) without running code from the file
(``torch.load(weights_only=True)``); :func:`open_state` reads one without building an engine.
"""

from __future__ import annotations

import json
import pickle
import re
import stat
import zipfile
from pathlib import Path
from typing import Any

import attrs

from engine.core import Clock, Curriculum, CurriculumError
from engine.history import History
from engine.plan import Plan
from engine.recording import MetricLog
from engine.restore import check_state, restore_log
from engine.state import PendingCheck, from_primitives

__all__ = ["load_saved", "load_recorded", "find_states", "one_state", "SavedState", "open_state"]

_KEYS = {"schema_version", "fingerprint", "phase", "clock", "history"}
_HF_STATE = "trainer_state.json"


def find_states(value: Any, path: str = "", depth: int = 6) -> list[tuple[str, dict]]:
    """Every engine state inside ``value`` (nested dicts and lists), with where it was found."""
    if isinstance(value, dict) and _KEYS <= value.keys():
        return [(path or "(top level)", value)]
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    return [found for key, inner in items if depth for found in find_states(inner, f"{path}[{key!r}]", depth - 1)]


def one_state(value: Any, where: Any) -> tuple[str, dict] | None:
    """The engine state inside ``value`` and where it was found; None when there is none, refused when several."""
    found = find_states(value)
    if len(found) > 1:
        raise CurriculumError(
            f"{where} holds {len(found)} engine states ({', '.join(w for w, _ in found)}); save one per file"
        )
    return found[0] if found else None


def _hf_folder(folder: Path) -> Path:
    if (folder / _HF_STATE).is_file():
        return folder / _HF_STATE
    numbered = [
        (int(m.group(1)), p)
        for p in folder.glob("checkpoint-*")
        if (m := re.fullmatch(r"checkpoint-(\d+)", p.name)) and (p / _HF_STATE).is_file()
    ]
    if numbered:
        return max(numbered)[1] / _HF_STATE
    raise CurriculumError(
        f"{folder} is a folder without {_HF_STATE} or checkpoint-N/{_HF_STATE}: no engine state; name an HF Trainer "
        "checkpoint folder, a Lightning .ckpt, or a file holding engine.state_dict()"
    )


def _read(path: Path) -> Any:
    if not stat.S_ISREG(path.stat().st_mode):  # a FIFO would block the read, a device never end it
        raise CurriculumError(f"{path} is not a regular file (a FIFO or a device): no engine state; check the path")
    if path.suffix == ".json":
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CurriculumError(f"{path} is not JSON ({type(exc).__name__}: {exc}): no engine state") from None
        except RecursionError:  # the parser's own limit, reached by nesting alone: no state nests that deep
            raise CurriculumError(f"{path} nests its JSON too deeply to be an engine state") from None
    import torch

    if not zipfile.is_zipfile(path):
        raise CurriculumError(
            f"{path} is neither JSON (.json) nor a torch file (torch.save's zip format): no engine state"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        why = str(exc).split("WeightsUnpickler error:", 1)[-1].strip()
        why = why.split(". ")[0].splitlines()[0] if why else type(exc).__name__
        raise CurriculumError(
            f"{path} cannot be read with torch.load(weights_only=True) ({why}): it holds objects that only running "
            "code could rebuild; save the engine state as plain data (engine.state_dict() is)"
        ) from None
    except (RuntimeError, EOFError) as exc:  # torch's zip reader: truncated or not a checkpoint
        raise CurriculumError(
            f"{path} is not a readable torch file ({type(exc).__name__}: {str(exc).splitlines()[0]}): no engine state"
        ) from None


def load_saved(path: str | Path) -> tuple[dict, str]:
    """``(engine state, where)``: the one engine state saved at ``path`` and a text saying where it was."""
    path = Path(path)
    if not path.exists():
        raise CurriculumError(f"{path} does not exist")
    file = _hf_folder(path) if path.is_dir() else path
    found = one_state(_read(file), file)
    if found is None:
        raise CurriculumError(
            f"{file} holds no engine state (no dict with {', '.join(sorted(_KEYS))}); save engine.state_dict() with "
            "your checkpoint, or use the HF/Lightning CurriculumCallback, which does"
        )
    where, state = found
    return state, f"{file} {where}" if where != "(top level)" else str(file)


def load_recorded(path: str | Path) -> tuple[dict, str]:
    """:func:`load_saved`, refusing an engine state without recorded metrics."""
    state, where = load_saved(path)
    if state.get("recorded") is None:
        raise CurriculumError(
            f"{where} holds an engine state without recorded metrics; build the run's engine with "
            "CurriculumEngine(curriculum, record_metrics=True) to record them"
        )
    return state, where


@attrs.frozen
class SavedState:
    """A saved engine state, read only: what :func:`open_state` returns."""

    phase: str  # the phase the run was in
    started: bool
    clock: Clock  # where the run was: global_step, epoch, ...
    history: History  # its records, the start first
    guards: dict[str, Any]  # each stateful guard's state_dict(), keyed "t<transition>.g<guard>"
    pending_checks: list[PendingCheck]  # health checks owed at the next step_end
    fingerprint: str  # the curriculum it was saved from (Curriculum.fingerprint())
    recorded: MetricLog | None  # the metric stream, when the engine was built with record_metrics=True


def open_state(state: dict | str | Path, curriculum: Curriculum | None = None) -> SavedState:
    """A saved engine state (the dict ``engine.state_dict()`` returned, or a path :func:`load_saved`
    reads), opened without building an engine. With ``curriculum`` it is checked as
    ``load_state_dict`` checks it (no guard loads anything); without, only its structure is."""
    if isinstance(state, (str, Path)):
        state = load_saved(state)[0]
    if curriculum is not None:
        plan = Plan.build(curriculum)
        snap = check_state(state, curriculum, plan, curriculum.fingerprint(), curriculum.spec(), lenient=False).state
    else:
        snap = from_primitives(state)
    recorded = restore_log(snap.recorded, snap.clock, True, False) if snap.recorded is not None else None
    parts = {field.name: getattr(snap, field.name) for field in attrs.fields(SavedState)}
    return SavedState(**{**parts, "history": History(snap.history), "recorded": recorded})
