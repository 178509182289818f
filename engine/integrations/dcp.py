"""The engine's state in a ``torch.distributed.checkpoint`` (DCP) checkpoint, beside an FSDP2 model
(docs/integrations.md, "FSDP2 and distributed checkpoints").

DCP loads into the structure of the state it is given, and a fresh engine's history is shorter than the
saved one, so :class:`EngineState` holds the engine state as one JSON string, which DCP saves and loads
whole. :func:`read_folder` reads a DCP folder on one process, without running code from it, for
``python -m engine diff``.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from pathlib import Path
from typing import Any

from engine.core import CurriculumError
from engine.integrations import check_engine, check_flag
from engine.runtime import CurriculumEngine

__all__ = ["EngineState", "STATE_KEY", "read_folder"]

#: The key of the engine state's JSON text in :meth:`EngineState.state_dict`.
STATE_KEY = "curriculum_engine_json"


class EngineState:
    """``engine`` as a DCP ``Stateful``: ``state_dict()`` is ``{STATE_KEY: json text}``. Saving checks
    that every rank holds the same engine state (wall times aside): DCP writes one copy of a replicated
    value, so ranks that disagree would lose all but one of theirs; they are a CurriculumError instead."""

    def __init__(self, engine: CurriculumEngine, *, allow_fingerprint_mismatch: bool = False) -> None:
        self.engine = check_engine(engine, "EngineState")
        self.allow_fingerprint_mismatch = check_flag(allow_fingerprint_mismatch, "EngineState")

    def state_dict(self) -> dict[str, str]:
        state = self.engine.state_dict()
        _check_ranks_agree(state)
        return {STATE_KEY: json.dumps(state, allow_nan=False)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        text = state_dict.get(STATE_KEY) if isinstance(state_dict, dict) else None
        if not isinstance(text, str):
            raise CurriculumError(
                f"EngineState: the checkpoint holds no engine state under {STATE_KEY!r} (got "
                f"{sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict).__name__}); "
                "load a checkpoint saved with EngineState(engine) under the same key"
            )
        self.engine.load_state_dict(json.loads(text), allow_fingerprint_mismatch=self.allow_fingerprint_mismatch)

    def __repr__(self) -> str:
        return f"EngineState({self.engine.phase.name!r} at step {self.engine.clock.global_step})"


def _check_ranks_agree(state: dict) -> None:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    from engine.diff import comparable_state

    digest = hashlib.sha256(json.dumps(comparable_state(state), sort_keys=True).encode()).hexdigest()
    digests: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(digests, digest)
    if len(set(digests)) > 1:
        groups = [[r for r, d in enumerate(digests) if d == value] for value in dict.fromkeys(digests)]
        raise CurriculumError(
            f"EngineState: the ranks hold different engine states ({len(groups)} groups of ranks that agree: "
            f"{', '.join(map(str, groups))}), so no one copy of it is the run's; feed every rank's engine the same "
            "metrics (e.g. the loss averaged with dist.all_reduce)"
        )


# -- reading a folder on one process ------------------------------------------------------------------

# What a DCP .metadata file may name: DCP's own records and the types they hold (nothing that runs code).
_METADATA_GLOBALS = {
    "torch.distributed.checkpoint.metadata": set(
        "Metadata MetadataIndex StorageMeta TensorProperties TensorStorageMetadata ChunkStorageMetadata "
        "BytesStorageMetadata _MEM_FORMAT_ENCODING".split()
    ),
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch": {"Size"},
    "torch.serialization": {"_get_layout"},
    "pathlib": {"PosixPath", "WindowsPath", "Path"},
}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        import torch

        if name in _METADATA_GLOBALS.get(module, ()) or (
            module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)
        ):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a checkpoint's metadata")


def read_folder(folder: str | Path) -> dict:
    """The whole DCP checkpoint in ``folder`` as one nested dict of tensors and values, with each
    :class:`EngineState` decoded to its engine state. Reads only data: its metadata with an unpickler
    that knows DCP's own records alone, its values with ``torch.load(weights_only=True)``."""
    import torch
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint._traverse import set_element
    from torch.distributed.checkpoint.format_utils import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.metadata import StorageMeta
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    with open(Path(folder) / ".metadata", "rb") as f:
        try:
            metadata = _MetadataUnpickler(f).load()
        except (pickle.UnpicklingError, EOFError) as exc:
            raise CurriculumError(f"{folder}/.metadata is not a distributed checkpoint's metadata: {exc}") from None
    if getattr(metadata, "storage_meta", None) is None:
        metadata.storage_meta = StorageMeta()

    class Reader(FileSystemReader):
        def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
            metadata.storage_meta.load_id = self.load_id
            return metadata

    class Planner(_EmptyStateDictLoadPlanner):
        def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
            set_element(
                self.original_state_dict, self.mappings[read_item.dest_index.fqn], torch.load(value, weights_only=True)
            )

    state: dict = {}
    _load_state_dict(state, storage_reader=Reader(folder), planner=Planner(), no_dist=True)
    return _decoded(state)


def _decoded(value: Any) -> Any:
    if isinstance(value, dict):
        if value.keys() == {STATE_KEY} and isinstance(value[STATE_KEY], str):
            return json.loads(value[STATE_KEY])
        return {k: _decoded(v) for k, v in value.items()}
    return value
