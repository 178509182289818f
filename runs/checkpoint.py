"""The checkpoint file as a type: :class:`Checkpoint` writes and reads its layout (docs/checkpoint.md).

It holds tensors and plain values only and is read with ``torch.load(weights_only=True)``: loading it
never runs code. It is written atomically. Version 1 (the first release) is migrated on reading.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any, NewType

import attrs
import cattrs

from runs.artifacts import atomic_write, starts_like_torch
from runs.errors import UsageError
from runs.settings import Settings, SettingsError

__all__ = ["CKPT_SCHEMA_VERSION", "Checkpoint", "CheckpointError", "load_checkpoint"]

CKPT_SCHEMA_VERSION = 2

# Version 1's defaults: the values its runs used for a setting its file left out.
_V1_DEFAULTS = {"kernel_init": "smooth", "preserve": True, "eval_windows": 64, "data": [], "ema": None, "dropout": 0.0}


class CheckpointError(UsageError):
    """A checkpoint is missing, unreadable, unsafe, or not one of ours (exit status 2)."""


def _migrate_v1(data: dict) -> dict:
    """Version 1 stored ``config`` beside ``settings``; ``settings`` alone made it."""
    data = {k: v for k, v in data.items() if k != "config"}
    if isinstance(data.get("settings"), dict):
        data["settings"] = {**_V1_DEFAULTS, **data["settings"]}
    data["schema_version"] = 2
    return data


_MIGRATIONS = {1: _migrate_v1}  # version -> a function making the next version's dict


def _is_identity(identity: Any) -> bool:
    """The shape of :func:`chunklm.corpus.corpus_fingerprint`'s result (of one source, or of named ones)."""
    if not isinstance(identity, dict) or not isinstance(identity.get("sha256"), str):
        return False
    if "sources" in identity:
        each = identity["sources"]
        return isinstance(each, dict) and bool(each) and all(_is_identity(f) for f in each.values())
    return isinstance(identity.get("paths"), list) and isinstance(identity.get("files"), list)


_Identity = NewType("_Identity", dict)
_Trainer = NewType("_Trainer", dict)  # Trainer.state_dict()
_SHAPES = {  # the stored parts that are more than a type
    Settings: (lambda v: isinstance(v, dict), "dict"),  # Settings.from_dict reads it once its file fits
    _Identity: (_is_identity, "the identity of a corpus"),
    _Trainer: (lambda v: isinstance(v, dict) and isinstance(v.get("model"), dict), "the model's weights in model"),
}


def _instance(value: Any, kind: Any) -> Any:
    """A stored part as loaded (tensors are never copied), if it has its field's type or shape."""
    test, what = _SHAPES.get(kind, (lambda v: isinstance(v, kind), getattr(kind, "__name__", "")))
    if not test(value):
        raise TypeError(f"expected {what}")
    return value


_converter = cattrs.Converter()  # extra keys (a later version's parts) are ignored
for _kind in (dict, list, int, str, *_SHAPES):
    _converter.register_structure_hook(_kind, _instance)


@attrs.frozen
class Checkpoint:
    """One checkpoint: a run's settings and its trainer state at an optimizer-step boundary."""

    settings: Settings
    trainer: _Trainer  # Trainer.state_dict() (of rank 0 under torchrun)
    global_step: int
    epoch: int
    preset: str | None = None
    world_size: int = 1
    num_threads: int | None = None
    rng_per_rank: list | None = None  # under torchrun: each rank's RNG states
    metrics: dict[str, str] | None = None  # {"steps": sha256, "epochs": sha256} of the metrics files' text up to here
    data: _Identity | None = None  # chunklm.corpus.corpus_fingerprint() of the run's data
    # [{"global_step", "epoch", "changes": [...]}]: the resumes on other data it allowed
    data_changes: list[dict] | None = None
    curriculum: dict | None = None  # --curriculum FILE's curriculum as data (Curriculum.to_dict())
    curriculum_file: str | None = None  # the path it was read from, for messages

    @property
    def sources(self) -> tuple[str, ...]:
        """The names of the run's data sources (``--data NAME=PATH ...``; none for one unnamed source)."""
        return tuple((self.data or {}).get("sources", ()))

    def missing_parts(self) -> list[str]:
        """The parts of a full trainer state this checkpoint lacks (none for weights only: ``model``,
        with ``ema`` or not, which resumes at its epoch's start)."""
        if set(self.trainer) <= {"model", "ema"}:
            return []
        missing = [
            f"trainer.{key}"
            for key in ("optimizer", "schedule", "engine", "rng", "epoch_accumulator")
            if not isinstance(self.trainer.get(key), dict)
        ]
        if self.settings.ema is not None and not isinstance(self.trainer.get("ema"), dict):
            missing.append("trainer.ema")
        rng = self.trainer.get("rng")
        if isinstance(rng, dict):
            missing += [f"trainer.rng.{key}" for key in ("python", "numpy", "torch") if key not in rng]
        return missing

    def trainer_state(self, rank: int = 0) -> dict:
        """The trainer state for ``rank``: each rank continues its own random streams."""
        return self.trainer if self.rng_per_rank is None else {**self.trainer, "rng": self.rng_per_rank[rank]}

    @property
    def engine_phase(self) -> str | None:
        engine = self.trainer.get("engine")
        return engine.get("phase") if isinstance(engine, dict) else None

    # -- the file ---------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out = {"schema_version": CKPT_SCHEMA_VERSION, **attrs.asdict(self, recurse=False)}
        out["settings"] = self.settings.to_dict()
        if not self.data_changes:
            del out["data_changes"]
        if self.curriculum is None:
            del out["curriculum_file"]
        # the parts added after the first layout are left out when a run has none
        return {k: v for k, v in out.items() if v is not None or k in ("preset", "num_threads", "curriculum_file")}

    def save(self, path: str | os.PathLike) -> None:
        """Atomically (temp file, fsync, ``os.replace``); a full disk is a clear ``WriteError``."""
        import torch

        data = self.to_dict()
        atomic_write(path, lambda f: torch.save(data, f))

    @classmethod
    def from_dict(cls, data: Any, path: str | os.PathLike = "checkpoint") -> "Checkpoint":
        """Check and migrate a loaded file's dict; a :class:`CheckpointError` names what is wrong."""
        if not isinstance(data, dict) or not isinstance(data.get("schema_version"), int):
            raise CheckpointError(
                f"{path} is not a chunklm checkpoint (no schema_version); pass a checkpoint written by chunklm train"
            )
        version = data["schema_version"]
        if version > CKPT_SCHEMA_VERSION:
            raise CheckpointError(
                f"{path} has checkpoint schema {version}, newer than this version's {CKPT_SCHEMA_VERSION}; "
                "upgrade chunklm"
            )
        while version < CKPT_SCHEMA_VERSION:
            if version not in _MIGRATIONS:
                raise CheckpointError(f"{path} has checkpoint schema {version}, which this version cannot read")
            data = _MIGRATIONS[version](data)
            version = data["schema_version"]
        if data.get("curriculum") is None:
            data = {**data, "curriculum_file": None}
        damaged = f"{path} is damaged or edited: {{}}; resume from another checkpoint"
        try:
            ckpt = _converter.structure(data, cls)
        except cattrs.BaseValidationError as exc:  # every part that does not fit, with its path
            why = cattrs.transform_error(
                exc, "checkpoint", lambda e, _: "missing" if isinstance(e, KeyError) else str(e)
            )
            raise CheckpointError(damaged.format("; ".join(why))) from None
        if ckpt.rng_per_rank is not None and len(ckpt.rng_per_rank) != ckpt.world_size:
            raise CheckpointError(damaged.format(f"rng_per_rank does not hold one state per rank ({ckpt.world_size})"))
        try:  # the structure hook left the settings' dict: Settings.from_dict says why a version cannot use them
            return attrs.evolve(ckpt, settings=Settings.from_dict(ckpt.settings))
        except SettingsError as exc:
            raise CheckpointError(f"{path} has settings this version cannot use: {exc}") from None

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = False) -> "Checkpoint":
        """``mmap``: map the tensors instead of reading them (for a look at the rest: cheap at any size)."""
        return cls.from_dict(read_file(path, mmap), path)


def read_file(path: str | os.PathLike, mmap: bool = False) -> Any:
    """``torch.load(weights_only=True)`` with errors that say what is wrong: never runs code."""
    import torch

    path = Path(path)
    if path.is_dir():
        raise CheckpointError(
            f"{path} is a directory, not a checkpoint; name the checkpoint file in it (e.g. {path}/chunklm_ckpt.pt)"
        )
    if not path.is_file():
        what = "is not a regular file" if path.exists() else "does not exist"
        raise CheckpointError(f"no checkpoint at {path}: it {what}; check the path")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not starts_like_torch(head):
        raise CheckpointError(
            f"{path} is not a checkpoint: "
            f"not a file torch.save wrote ({'empty' if not head else 'it starts with ' + repr(head)}); "
            "pass a checkpoint written by chunklm train"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower():
            raise _corrupt(path, exc) from None
        unsafe = re.search(r"GLOBAL\s+([\w.]+)", str(exc), re.IGNORECASE)  # the global refused: posix.system
        raise CheckpointError(
            f"{path} holds Python objects the safe loader refuses{f' (global {unsafe[1]})' if unsafe else ''}; "
            "nothing in it was executed. It was not written by chunklm train, or it was tampered with: do not use "
            "it; resume from a checkpoint you wrote"
        ) from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # truncated zip, not a torch file...
        raise _corrupt(path, exc) from None


def _corrupt(path: Path, exc: BaseException) -> CheckpointError:
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    first = first.split(". ")[0]  # torch's first sentence; never its hints (weights_only=False)
    return CheckpointError(
        f"checkpoint {path} is truncated or corrupt and cannot be loaded ({type(exc).__name__}: {first[:200]}); "
        "it was left untouched. Resume from a copy, or start a fresh run"
    )


load_checkpoint = Checkpoint.load


def stale_metrics_message(files, saved: Checkpoint, resuming: bool = False) -> str | None:
    """What to say when a run's metrics CSVs are not the ones its checkpoint ``saved`` was saved with
    (see :meth:`~runs.artifacts.RunFiles.stale_metrics`): how to repair them (``resuming``: the resume's
    own fix); None when they are."""
    wrong = files.stale_metrics(saved)
    if not wrong:
        return None
    them = "them" if len(wrong) > 1 else "it"
    fix = (
        f"nothing was changed. Move {them} aside and resume again: the metrics then start after the checkpoint "
        f"(step {saved.global_step})"
        if resuming
        else f"`chunklm train --ckpt {files.ckpt} --resume` says how to repair {them}"
    )
    return (
        f"{' and '.join(p.name for p in wrong)} {'do' if len(wrong) > 1 else 'does'} not hold the metrics "
        f"{files.ckpt.name} was saved with (an interrupted first save of a run started with --overwrite, or an "
        f"edit); {fix}"
    )
