"""A run's files beside its checkpoint: per-step metrics, per-epoch metrics, transition history, lock.

For a checkpoint ``out/demo/chunklm_ckpt.pt`` they are ``chunklm_ckpt.steps.csv``,
``chunklm_ckpt.epochs.csv``, ``chunklm_ckpt.history.json`` and ``chunklm_ckpt.png`` in the same
directory, plus the hidden lock ``.chunklm_ckpt.pt.lock``. ``RUN`` arguments of the subcommands may
name the checkpoint or its directory. Every file is replaced atomically through a temp file with a
unique name (``.NAME.XXXXXXXX.tmp``), which a run removes when it starts if a killed run left one.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import hashlib
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import IO, Callable

from engine import History
from runs.errors import RunError, UsageError

__all__ = [
    "RunFiles", "resolve_run", "MetricsWriter", "STEP_FIELDS", "EPOCH_FIELDS", "read_csv", "atomic_write",
    "RunLock", "WriteError", "kept_rows", "metrics_match",
]

STEP_FIELDS = ["step", "epoch", "step_in_epoch", "loss", "lr", "cutoff", "phase"]
EPOCH_FIELDS = ["epoch", "step", "avg_loss", "cutoff", "val_bpb", "val_bpb_mean"]
_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


class WriteError(RunError):
    """A run's file could not be written (disk full, quota, permissions): exit status 1."""


def _umask() -> int:
    """The process's umask, read without setting it where Linux allows (setting it, even briefly,
    would affect files other threads create meanwhile)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` so that a crash at any moment leaves the old file or the new one.

    A temp file with a unique name in the same directory (mode 0666 less the umask, as ``open``
    gives: ``mkstemp`` alone gives 0600), fsync, ``os.replace``, fsync of the directory. A full disk
    is a :class:`WriteError` saying so; the old file is kept.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, (OSError, RuntimeError)):
            raise _write_error(path, exc) from exc
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _write_error(path: Path, exc: BaseException) -> WriteError:
    import shutil

    free = shutil.disk_usage(path.parent).free
    full = (isinstance(exc, OSError) and exc.errno in _FULL) or "unexpected pos" in str(exc) or "failed writing" in str(exc)
    why = f"the disk is full or the file is too large ({free / 1e6:.1f} MB free in {path.parent})" if full else f"{type(exc).__name__}: {exc}"
    return WriteError(f"could not write {path}: {why}; the previous version of the file is kept. Free space, then resume")


def remove_stale_temps(paths: list[Path]) -> list[Path]:
    """Remove the temp files that killed runs left beside ``paths`` (call while holding the run's lock)."""
    removed = []
    for path in paths:
        mine = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp")  # atomic_write's mkstemp names only
        for tmp in path.parent.glob(f".{path.name}.*.tmp"):
            if not mine.fullmatch(tmp.name):  # e.g. .run.pt.bak.XXXXXXXX.tmp belongs to the run of run.pt.bak
                continue
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


class RunLock:
    """An exclusive lock on one run (``flock`` on a hidden file beside the checkpoint).

    The kernel releases it when the process ends, however it ends (SIGKILL included), so a stale
    lock cannot block the next run. The holder's pid and host are written in the file to name it.
    """

    def __init__(self, ckpt: Path) -> None:
        self.path = ckpt.with_name(f".{ckpt.name}.lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise UsageError(
                f"another run is using {self.path.with_name(self.path.name[1:-5])} ({holder}); "
                "wait for it to end, or use another --ckpt"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None


class RunFiles:
    """The paths of one run's files, derived from its checkpoint path."""

    def __init__(self, ckpt: str | os.PathLike) -> None:
        self.ckpt = Path(ckpt)
        stem = self.ckpt.with_suffix("")
        self.steps = stem.with_name(stem.name + ".steps.csv")
        self.epochs = stem.with_name(stem.name + ".epochs.csv")
        self.history = stem.with_name(stem.name + ".history.json")
        self.plot = stem.with_name(stem.name + ".png")

    @property
    def written(self) -> list[Path]:
        """The files a run writes (the plot only on request)."""
        return [self.ckpt, self.steps, self.epochs, self.history]

    def existing(self) -> list[Path]:
        return [p for p in (*self.written, self.plot) if p.exists()]

    def metrics(self, global_step: int, epoch: int) -> dict[str, tuple[Path, list[str], str, int]]:
        """The metrics files: name -> (path, fields, key, the last key a checkpoint at this clock covers)."""
        return {"steps": (self.steps, STEP_FIELDS, "step", global_step), "epochs": (self.epochs, EPOCH_FIELDS, "epoch", epoch - 1)}

    def stale_metrics(self, digests: dict[str, str] | None, global_step: int, epoch: int) -> list[Path]:
        """The metrics files that do not hold, up to a checkpoint at this clock, the rows whose
        ``digests`` it recorded (none when it recorded none: written before checkpoints did)."""
        if digests is None:
            return []
        return [path for name, (path, fields, key, upto) in self.metrics(global_step, epoch).items()
                if name in digests and not metrics_match(path, fields, key, upto, digests[name])]

    def write_history(self, history: History) -> None:
        text = history.to_json().encode()
        atomic_write(self.history, lambda f: f.write(text))

    def read_history(self) -> History:
        try:
            return History.from_json(self.history.read_text())
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{self.history} is not a transition history this version can read ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); it may be truncated or edited") from None


def resolve_run(run: str | os.PathLike) -> RunFiles:
    """``run`` is a checkpoint, or a directory holding exactly one run (by checkpoint, history or metrics)."""
    path = Path(run)
    if path.is_dir():
        for pattern, suffix in (("*.history.json", ".history.json"), ("*.pt", ".pt"), ("*.steps.csv", ".steps.csv")):
            found = sorted(path.glob(pattern))
            if len(found) == 1:
                return RunFiles(found[0].with_name(found[0].name[: -len(suffix)] + ".pt"))
            if len(found) > 1:
                raise UsageError(f"{path} holds {len(found)} runs ({', '.join(p.name for p in found)}); name the checkpoint itself")
        raise UsageError(f"no run in {path}: no checkpoint, history or metrics file; name the checkpoint of a run")
    files = RunFiles(path)
    if not any(p.exists() for p in (files.ckpt, files.history, files.steps)):
        raise UsageError(f"no run at {path}: neither it nor {files.history.name} nor {files.steps.name} exists")
    return files


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class MetricsWriter:
    """Appends rows to a CSV, flushed per row, and keeps the sha256 of the text the file holds.

    ``keep_upto`` (resume): rows past the checkpoint are cut at once. ``None``: a fresh run, whose
    file starts empty; with ``defer`` (a fresh run replacing another, ``--overwrite``) the file is
    not touched until :meth:`commit` (called after each save), when it is replaced by the rows kept
    in memory so far: a run that fails before its first save leaves the old run's files as they were.
    :meth:`digest` (the file's text, pending rows included) is what a checkpoint records, so that a
    resume continues only metrics that belong to it (:func:`metrics_match`).
    """

    def __init__(self, path: Path, fields: list[str], key: str, keep_upto: int | None, defer: bool = False) -> None:
        self.path, self.fields = path, fields
        self._pending: list[dict] = []
        self._file: IO[str] | None = None
        self._sha = hashlib.sha256(_csv_text(fields, []).encode())
        if keep_upto is not None:
            self._replace(kept_rows(path, key, keep_upto))
        elif not defer:
            self._replace([])

    def _replace(self, rows: list[dict]) -> None:
        text = _csv_text(self.fields, rows).encode()
        atomic_write(self.path, lambda f: f.write(text))
        self._sha = hashlib.sha256(text)
        self._file = open(self.path, "a", newline="")

    def write(self, row: dict) -> None:
        text = _csv_text(self.fields, [row], header=False)
        self._sha.update(text.encode())
        if self._file is None:
            self._pending.append(row)
            return
        try:
            self._file.write(text)
            self._file.flush()
        except OSError as exc:
            raise _write_error(self.path, exc) from exc

    def digest(self) -> str:
        """sha256 of the file's text with every row written so far (pending ones too)."""
        return self._sha.hexdigest()

    def sync(self) -> None:
        """Make the rows written so far durable (before a checkpoint that vouches for them)."""
        if self._file is not None:
            try:
                os.fsync(self._file.fileno())
            except OSError as exc:
                raise _write_error(self.path, exc) from exc

    def commit(self) -> None:
        """The run has saved: from now on its rows go to the file."""
        if self._file is None:
            self._replace(self._pending)
            self._pending = []

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def kept_rows(path: Path, key: str, upto: int) -> list[dict]:
    """The rows of a metrics file whose ``key`` is at most ``upto`` (none when there is no file)."""
    return [r for r in read_csv(path) if int(r[key]) <= upto] if path.exists() else []


def metrics_match(path: Path, fields: list[str], key: str, upto: int, digest: str) -> bool:
    """Whether ``path`` cut back to ``upto`` holds the text whose :meth:`MetricsWriter.digest` is ``digest``.

    No file matches (a resume then starts it afresh); a garbled one does not.
    """
    if not path.exists():
        return True
    try:
        text = _csv_text(fields, kept_rows(path, key, upto))
    except (KeyError, ValueError, TypeError, UnicodeDecodeError, csv.Error):
        return False
    return hashlib.sha256(text.encode()).hexdigest() == digest


def _csv_text(fields: list[str], rows: list[dict], header: bool = True) -> str:
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
