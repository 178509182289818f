"""Checkpoint files: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint never runs code when loaded: it holds tensors and plain Python values only (the
config as cattrs primitives, the engine state as JSON-safe primitives, RNG states as tensors and
lists).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import cattrs
import torch
from cattrs.preconf.json import make_converter

from chunklm.train import TrainConfig

__all__ = ["CKPT_SCHEMA_VERSION", "CheckpointError", "atomic_save", "load_checkpoint", "config_to_dict", "config_from_dict"]

CKPT_SCHEMA_VERSION = 1

_converter = make_converter(forbid_extra_keys=True)


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or not one of ours."""


def config_to_dict(config: TrainConfig) -> dict:
    """Plain JSON values only (a str enum would be pickled as its class, which weights_only refuses)."""
    return json.loads(_converter.dumps(config))


def config_from_dict(data: dict) -> TrainConfig:
    try:
        return _converter.structure(data, TrainConfig)
    except cattrs.BaseValidationError as exc:
        raise CheckpointError("checkpoint config is malformed: " + "; ".join(cattrs.transform_error(exc))) from None


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` to ``path`` so that a crash at any moment leaves the old file or the new one.

    Temp file in the same directory, fsync, ``os.replace``, fsync of the directory.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _reason(exc: Exception) -> str:
    lines = [l.strip() for l in str(exc).splitlines() if l.strip()]
    detail = next((l for l in lines if "Unsupported global" in l), lines[0] if lines else "")
    return f"{type(exc).__name__}: {detail[:300]}"


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load and sanity-check a checkpoint; a clear :class:`CheckpointError` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; check --ckpt, or start a fresh run without --resume")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle error, not a torch file...
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt and cannot be loaded ({_reason(exc)}); "
            "it was left untouched. Resume from a copy, or start a fresh run"
        ) from None
    if not isinstance(data, dict) or "schema_version" not in data or "config" not in data:
        raise CheckpointError(f"{path} is not a chunklm checkpoint (no schema_version/config)")
    if data["schema_version"] > CKPT_SCHEMA_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint schema {data['schema_version']}, newer than this version's {CKPT_SCHEMA_VERSION}; upgrade"
        )
    return data
