"""A run's files beside its checkpoint: per-step metrics, per-epoch metrics, transition history.

For a checkpoint ``out/demo/chunklm_ckpt.pt`` they are ``chunklm_ckpt.steps.csv``,
``chunklm_ckpt.epochs.csv``, ``chunklm_ckpt.history.json`` and ``chunklm_ckpt.png`` in the same
directory. ``RUN`` arguments of the subcommands may name the checkpoint or its directory.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from engine import History

__all__ = ["RunFiles", "resolve_run", "MetricsWriter", "STEP_FIELDS", "EPOCH_FIELDS", "read_csv"]

STEP_FIELDS = ["step", "epoch", "step_in_epoch", "loss", "lr", "cutoff", "phase"]
EPOCH_FIELDS = ["epoch", "step", "avg_loss", "cutoff", "val_bpb", "val_bpb_mean"]


class RunFiles:
    """The paths of one run's files, derived from its checkpoint path."""

    def __init__(self, ckpt: str | os.PathLike) -> None:
        self.ckpt = Path(ckpt)
        stem = self.ckpt.with_suffix("")
        self.steps = stem.with_name(stem.name + ".steps.csv")
        self.epochs = stem.with_name(stem.name + ".epochs.csv")
        self.history = stem.with_name(stem.name + ".history.json")
        self.plot = stem.with_name(stem.name + ".png")

    def write_history(self, history: History) -> None:
        tmp = self.history.with_name(self.history.name + ".tmp")
        tmp.write_text(history.to_json())
        os.replace(tmp, self.history)

    def read_history(self) -> History:
        return History.from_json(self.history.read_text())


def resolve_run(run: str | os.PathLike) -> RunFiles:
    """``run`` is a checkpoint or a directory holding exactly one (or its history)."""
    path = Path(run)
    if path.is_dir():
        found = sorted(path.glob("*.history.json"))
        if len(found) == 1:
            return RunFiles(found[0].with_name(found[0].name[: -len(".history.json")] + ".pt"))
        ckpts = sorted(path.glob("*.pt"))
        if len(ckpts) == 1:
            return RunFiles(ckpts[0])
        raise FileNotFoundError(
            f"{path} holds {len(ckpts)} checkpoints and {len(found)} histories; name the checkpoint itself"
        )
    files = RunFiles(path)
    if not files.ckpt.exists() and not files.history.exists():
        raise FileNotFoundError(f"no run at {path}: neither the checkpoint nor {files.history.name} exists")
    return files


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class MetricsWriter:
    """Appends rows to a CSV, flushed per row; on resume, first cuts rows past the checkpoint."""

    def __init__(self, path: Path, fields: list[str], key: str, keep_upto: int | None) -> None:
        self.path, self.fields = path, fields
        rows = []
        if keep_upto is not None and path.exists():
            rows = [r for r in read_csv(path) if int(r[key]) <= keep_upto]
        elif keep_upto is None and path.exists():
            path.unlink()  # a fresh run replaces the old files
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)
        self._file = open(path, "a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=fields)

    def write(self, row: dict) -> None:
        self._writer.writerow(row)
        self._file.flush()

    def close(self) -> None:
        self._file.close()
