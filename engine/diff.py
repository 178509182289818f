"""Two checkpoints of a run (any format :func:`read_checkpoint` reads, without running code from it),
compared: are they the same instant of the same run, bit for bit? (docs/integrations.md, "Check your own setup")
"""

from __future__ import annotations

import itertools
import math
import zipfile
from pathlib import Path
from typing import Any, Iterator

import attrs

from engine.core import CurriculumError, short_repr
from engine.saved import _hf_folder, _read, one_state

__all__ = ["Saved", "Difference", "read_checkpoint", "compare", "comparable_state"]


def comparable_state(state: dict) -> dict:
    """An engine state (``engine.state_dict()``) without its records' wall times: two runs that took
    the same decisions at the same steps have equal comparable states."""
    history = [{k: v for k, v in record.items() if k != "wall_time"} for record in state.get("history", [])]
    return {**state, "history": history}


@attrs.frozen
class Saved:
    """One checkpoint as :func:`compare` sees it."""

    where: str  # the path and the format, for messages
    values: dict[str, Any]  # "model.lin.weight" -> tensor, "optimizer.param_groups.0.lr" -> 0.01, ...
    engine: dict | None  # the engine state (engine.state_dict()), if it holds one

    @property
    def step(self) -> int | None:
        return self.engine["clock"]["global_step"] if self.engine is not None else None


@attrs.frozen
class Difference:
    """The first place two checkpoints differ: ``what`` (a tensor, a value, a history record), ``detail``
    (max |d|, or the two values), ``step`` (the record's step, else the checkpoint's)."""

    what: str
    detail: str
    step: int | None

    def __str__(self) -> str:
        return f"{self.what}: {self.detail}" + (f" (at step {self.step})" if self.step is not None else "")


# -- reading ----------------------------------------------------------------------------------------


def _leaves(value: Any, name: str = "") -> Iterator[tuple[str, Any]]:
    """Nested dicts, lists and tuples opened up into ``(dotted name, leaf)``."""
    if isinstance(value, (dict, list, tuple)) and value:
        for key, inner in value.items() if isinstance(value, dict) else enumerate(value):
            yield from _leaves(inner, f"{name}.{key}" if name else str(key))
    else:
        yield name, value


def _engine_in(tree: Any, where: str) -> tuple[dict | None, Any]:
    """The one engine state in ``tree`` (or None) and ``tree`` without it."""
    found = one_state(tree, where)
    if found is None:
        return None, tree
    state = found[1]

    def without(value: Any) -> Any:
        if value is state:
            return None
        if isinstance(value, dict):
            return {k: without(v) for k, v in value.items() if v is not state}
        if isinstance(value, (list, tuple)):
            return [without(v) for v in value]
        return value

    return state, without(tree)


def _hf(folder: Path) -> Saved:
    state_file = _hf_folder(folder)
    checkpoint = state_file.parent
    weights: dict[str, Any] = {}
    shards = sorted(checkpoint.glob("*.safetensors"))
    if shards:
        from safetensors.torch import load_file

        for shard in shards:
            weights.update(load_file(shard))
    elif (checkpoint / "pytorch_model.bin").is_file():
        weights = _read(checkpoint / "pytorch_model.bin")
    tree: dict[str, Any] = {"model": weights}
    for name, file in (("optimizer", "optimizer.pt"), ("scheduler", "scheduler.pt")):
        if (checkpoint / file).is_file():
            tree[name] = _read(checkpoint / file)
    engine, trainer_state = _engine_in(_read(state_file), str(state_file))
    tree["stateful_callbacks"] = trainer_state.get("stateful_callbacks") or {}  # e.g. a wrapped schedule's state
    return Saved(f"{checkpoint} (Hugging Face Trainer checkpoint)", dict(_leaves(tree)), engine)


def _dcp(folder: Path) -> Saved:
    from engine.integrations.dcp import read_folder

    engine, rest = _engine_in(read_folder(folder), str(folder))
    return Saved(f"{folder} (distributed checkpoint)", dict(_leaves(rest)), engine)


_CHUNKLM_PARTS = ("model", "ema", "optimizer", "schedule", "epoch_accumulator")
_LIGHTNING_PARTS = ("state_dict", "optimizer_states", "lr_schedulers")


def _file(path: Path) -> Saved:
    if path.suffix == ".json":
        engine, _ = _engine_in(_read(path), str(path))
        if engine is None:
            raise CurriculumError(f"{path} holds no engine state; name a JSON file holding engine.state_dict()")
        return Saved(f"{path} (engine state)", {}, engine)
    if not zipfile.is_zipfile(path):
        raise CurriculumError(
            f"{path} is not a checkpoint this command reads: neither JSON (.json), nor a torch file, nor a folder "
            "(an HF checkpoint-N/ or a distributed checkpoint)"
        )
    data = _read(path)
    if isinstance(data, dict) and isinstance(data.get("trainer"), dict) and "settings" in data:
        trainer = data["trainer"]
        parts, kind = {k: trainer[k] for k in _CHUNKLM_PARTS if k in trainer}, "chunklm checkpoint"
        engine, _ = _engine_in(trainer.get("engine"), str(path))
    elif isinstance(data, dict) and "pytorch-lightning_version" in data:
        parts, kind = {k: data[k] for k in _LIGHTNING_PARTS if k in data}, "Lightning checkpoint"
        callbacks = data.get("callbacks") or {}
        engine, _ = _engine_in(callbacks, str(path))
        # the engine's callback keeps more beside it (a schedule it made restartable); its RNG states aside
        parts["callbacks"] = {
            name: {k: v for k, v in entry.items() if k not in ("engine", "rng")}
            for name, entry in callbacks.items()
            if isinstance(entry, dict) and entry.get("engine") is engine and engine is not None
        }
    else:
        engine, parts = _engine_in(data, str(path))
        kind = "torch file"
    return Saved(f"{path} ({kind})", dict(_leaves(parts)), engine)


def read_checkpoint(path: str | Path) -> Saved:
    """Read the checkpoint at ``path``: a chunklm checkpoint, an HF ``checkpoint-N/``, a Lightning ``.ckpt``, a
    distributed checkpoint folder, another torch file or a JSON engine state; a CurriculumError if none."""
    path = Path(path)
    if not path.exists():
        raise CurriculumError(f"{path} does not exist; name a checkpoint file or folder")
    if path.is_dir():
        return _dcp(path) if (path / ".metadata").is_file() else _hf(path)
    return _file(path)


# -- comparing --------------------------------------------------------------------------------------


def _value_difference(a: Any, b: Any) -> str | None:
    """How two leaves differ (None when bit-identical)."""
    import torch

    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.dtype != b.dtype or a.shape != b.shape:
            return f"A is {a.dtype} {list(a.shape)}, B is {b.dtype} {list(b.shape)}"
        if torch.equal(a, b):
            return None
        nan = a.isnan() if a.is_floating_point() else None
        if nan is not None and torch.equal(nan, b.isnan()) and torch.equal(a[~nan], b[~nan]):
            return None  # NaN at the same places (a diverged run, twice)
        if a.dtype == torch.bool:
            return f"{int((a != b).sum())} of {a.numel()} elements differ"
        d = (a.double() - b.double()).abs().max().item()
        return f"max |d| {d:.3g} ({int((a != b).sum())} of {a.numel()} elements differ)"
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return f"A: {short_repr(a)}, B: {short_repr(b)}"
    if a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)):
        return None
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return f"A: {a!r}, B: {b!r} (|d| {abs(a - b):.3g})"
    return f"A: {short_repr(a)}, B: {short_repr(b)}"


def _leaf_differences(a: dict[str, Any], b: dict[str, Any], label: str, step: int | None) -> Iterator[Difference]:
    for name in {**a, **b}:
        detail = "only in A" if name not in b else "only in B" if name not in a else _value_difference(a[name], b[name])
        if detail is not None:
            yield Difference(f"{label}{name}", detail, step)


def _record_name(index: int, record: dict) -> str:
    return f"history record {index} ({record['source']} -> {record['dest']}, {record['point']})"


def _engine_differences(a: dict, b: dict) -> Iterator[Difference]:
    ca, cb = comparable_state(a), comparable_state(b)
    yield from _leaf_differences(dict(_leaves(ca["clock"])), dict(_leaves(cb["clock"])), "engine clock.", None)
    ha, hb = ca["history"], cb["history"]
    for index, (ra, rb) in enumerate(zip(ha, hb)):  # one difference per record
        differences = _leaf_differences(
            dict(_leaves(ra)), dict(_leaves(rb)), f"{_record_name(index, ra)} ", ra["global_step"]
        )
        yield from itertools.islice(differences, 1)
    if len(ha) != len(hb):
        longer, who = (ha, "A") if len(ha) > len(hb) else (hb, "B")
        first = longer[min(len(ha), len(hb))]
        yield Difference(
            _record_name(min(len(ha), len(hb)), first),
            f"only in {who} (A has {len(ha)} records, B {len(hb)})",
            first["global_step"],
        )
    rest_a = {k: v for k, v in ca.items() if k not in ("clock", "history")}
    rest_b = {k: v for k, v in cb.items() if k not in ("clock", "history")}
    yield from _leaf_differences(dict(_leaves(rest_a)), dict(_leaves(rest_b)), "engine ", a["clock"]["global_step"])


def compare(a: Saved, b: Saved) -> list[Difference]:
    """Every difference between ``a`` and ``b``, the most telling first: the engines' clocks, their
    histories (record by record, one difference per record), the rest of their states, then each
    tensor and value. Empty when they are the same instant of the same run (wall times aside)."""
    found: list[Difference] = []
    if (a.engine is None) != (b.engine is None):
        found.append(Difference("engine state", f"only in {'A' if a.engine is not None else 'B'}", None))
    elif a.engine is not None and b.engine is not None:
        found += _engine_differences(a.engine, b.engine)
    found += _leaf_differences(a.values, b.values, "", a.step)
    return found


def summary(saved: Saved) -> str:
    """``12 tensors, 30 values, an engine state with 4 history records``: what was compared."""
    import torch

    tensors = sum(isinstance(v, torch.Tensor) for v in saved.values.values())
    parts = [f"{tensors} tensors", f"{len(saved.values) - tensors} other values"]
    if saved.engine is not None:
        parts.append(f"an engine state with {len(saved.engine['history'])} history records")
    return ", ".join(parts)
