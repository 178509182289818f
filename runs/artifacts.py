"""A run's files beside its checkpoint: per-step and per-epoch metrics, transition history, plot, lock.

They are named after the checkpoint's name less a ``.pt`` suffix (:func:`run_name`; docs/checkpoint.md),
and every file is replaced atomically (:func:`engine.files.atomic_write`).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import functools
import hashlib
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import IO, Sequence

import filelock

from engine import History, files
from runs.errors import RunError, UsageError

__all__ = ["RunFiles", "resolve_run", "MetricsWriter", "read_csv", "atomic_write", "RunLock", "WriteError", "run_name"]

STEP_FIELDS = ["step", "epoch", "step_in_epoch", "loss", "lr", "cutoff", "phase"]
EPOCH_FIELDS = ["epoch", "step", "avg_loss", "cutoff", "val_bpb", "val_bpb_mean"]  # + val_bpb/NAME per source


class WriteError(RunError):
    """A run's file could not be written (disk full, quota, permissions): exit status 1."""


atomic_write = functools.partial(files.atomic_write, error=WriteError)
_write_error = functools.partial(files.write_error, error=WriteError)


def remove_stale_temps(paths: list[Path]) -> None:
    """Remove the temp files that killed runs left beside ``paths`` (call while holding the run's lock)."""
    for path in paths:
        mine = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp")  # atomic_write's temp names only
        for tmp in path.parent.glob(f".{path.name}.*.tmp"):
            if mine.fullmatch(tmp.name):  # not e.g. .run.pt.bak.XXXXXXXX.tmp, of the run of run.pt.bak
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()


class RunLock:
    """An exclusive ``flock`` on the run's hidden lock file (:attr:`RunFiles.lock`), released by the kernel
    however the process ends. A lock path that is not a regular file of one name is refused unopened."""

    def __init__(self, ckpt: str | os.PathLike) -> None:
        self.ckpt = Path(ckpt)
        self.path = RunFiles(ckpt).lock
        self._lock = filelock.FileLock(self.path, timeout=0)

    def acquire(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            mode, links = (info := os.lstat(self.path)).st_mode, info.st_nlink
            if not stat.S_ISREG(mode) or links != 1:
                what = (
                    "is a symbolic link"
                    if stat.S_ISLNK(mode)
                    else "has other names (hard links)"
                    if stat.S_ISREG(mode)
                    else "is not a regular file"
                )
                raise UsageError(
                    f"the run's lock file {self.path} {what}; remove it (it holds nothing of the run) and start again"
                )
        try:
            self._lock.acquire()
        except filelock.Timeout:
            raise UsageError(
                f"another run is using {self.ckpt} (it holds {self.path.name}); wait for it to end, or use another "
                "--ckpt"
            ) from None
        except OSError as exc:
            raise UsageError(
                f"the run's lock file {self.path} cannot be opened ({exc.strerror}); remove it (it holds nothing of "
                "the run) and start again"
            ) from None

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release()


def run_name(ckpt: Path) -> str:
    """What a run's other files are named after: the checkpoint's file name less a ``.pt`` suffix."""
    name = ckpt.name
    return name[: -len(".pt")] if name.endswith(".pt") and len(name) > len(".pt") else name


def is_torch_file(path: Path) -> bool:
    """Whether ``path`` is a regular file starting as ``torch.save`` files do (a zip, or its legacy pickle)."""
    if not path.is_file():  # before opening: a FIFO would block
        return False
    try:
        with open(path, "rb") as f:
            return starts_like_torch(f.read(4))
    except OSError:
        return False


def starts_like_torch(head: bytes) -> bool:
    """Whether a file's first bytes are those of torch's zip format, or of its legacy pickle."""
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


class RunFiles:
    """The paths of one run's files, derived from its checkpoint path (see :func:`run_name`)."""

    def __init__(self, ckpt: str | os.PathLike) -> None:
        self.ckpt = Path(ckpt)
        name = run_name(self.ckpt)
        self.steps = self.ckpt.with_name(name + ".steps.csv")
        self.epochs = self.ckpt.with_name(name + ".epochs.csv")
        self.history = self.ckpt.with_name(name + ".history.json")
        self.plot = self.ckpt.with_name(name + ".png")
        self.lock = self.ckpt.with_name(f".{name}.lock")

    @property
    def sibling(self) -> Path | None:
        """The other checkpoint path whose files would be these (``run`` for ``run.pt``, and back), if any."""
        name = run_name(self.ckpt)
        other = next((n for n in (name + ".pt", name) if n != self.ckpt.name and run_name(Path(n)) == name), None)
        return self.ckpt.with_name(other) if other is not None else None

    @property
    def written(self) -> list[Path]:
        """The files a run writes (the plot only on request)."""
        return [self.ckpt, self.steps, self.epochs, self.history]

    def existing(self) -> list[Path]:
        return [p for p in (*self.written, self.plot) if os.path.lexists(p)]

    def not_regular(self) -> list[Path]:
        """The run's paths that exist but are not regular files (a folder, a device, a FIFO, a
        symbolic link): a run never replaces them, whatever the flags."""
        return [p for p in self.existing() if not stat.S_ISREG(os.lstat(p).st_mode)]

    def renamed(self) -> list[tuple[Path, Path]]:
        """(old name, today's) of each file of this run an earlier version left under the checkpoint's
        stem (``run.steps.csv`` for ``run.ckpt``; the names of a ``.pt`` checkpoint did not change):
        none when the checkpoint is not there, today's names are, or a checkpoint of today owns them."""
        old = RunFiles(self.ckpt.with_suffix(".pt"))  # the stem's files are today's files of run.pt
        if old.steps == self.steps or any(os.path.lexists(p) for p in self.written[1:]):
            return []
        if not is_torch_file(self.ckpt) or any(p is not None and is_torch_file(p) for p in (old.ckpt, old.sibling)):
            return []
        pairs = zip((*old.written[1:], old.plot), (*self.written[1:], self.plot))
        return [(a, b) for a, b in pairs if os.path.lexists(a)]

    def check_names(self) -> None:
        """Each file of the run, and its temp file, can be made in the checkpoint's folder: made and
        removed at once, longest name first, so that a name too long for the file system is refused
        before training, not at the first save."""
        for path in sorted((*self.written, self.plot), key=lambda p: -len(os.fsencode(p.name))):
            try:
                fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            except OSError as exc:
                if exc.errno == errno.ENAMETOOLONG:
                    temp = f".{path.name}.XXXXXXXX.tmp"
                    shown = temp.replace(run_name(self.ckpt), "NAME", 1)
                    raise UsageError(
                        f"--ckpt: the checkpoint's name is too long ({len(os.fsencode(self.ckpt.name))} bytes): its "
                        f"run writes {shown}, {len(os.fsencode(temp))} bytes, more than the "
                        f"{os.pathconf(path.parent, 'PC_NAME_MAX')} a file name may have there; pick a shorter name"
                    ) from None
                raise UsageError(
                    f"--ckpt {self.ckpt}: cannot write in {path.parent} ({exc.strerror}); pick a writable folder"
                ) from None
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):  # a run holding the lock may have removed it as stale
                os.unlink(tmp)

    def metrics(
        self, global_step: int, epoch: int, sources: Sequence[str] = ()
    ) -> dict[str, tuple[Path, list[str], str, int]]:
        """The metrics files: name -> (path, fields, key, the last key a checkpoint at this clock covers);
        ``sources``: the run's named data sources (a column each in epochs.csv)."""
        return {
            "steps": (self.steps, STEP_FIELDS, "step", global_step),
            "epochs": (self.epochs, EPOCH_FIELDS + [f"val_bpb/{name}" for name in sources], "epoch", epoch - 1),
        }

    def _recorded(self, saved):
        """(path, fields, key, upto, digest) of each metrics file checkpoint ``saved`` recorded a digest of."""
        digests = saved.metrics or {}  # none in checkpoints written before they recorded them
        for name, (path, fields, key, upto) in self.metrics(saved.global_step, saved.epoch, saved.sources).items():
            if name in digests:
                yield path, fields, key, upto, digests[name]

    def stale_metrics(self, saved) -> list[Path]:
        """The metrics files that do not hold, up to checkpoint ``saved``, the rows whose digests it recorded."""
        return [path for path, *rest in self._recorded(saved) if not metrics_match(path, *rest)]

    def lost_metrics(self, saved) -> list[Path]:
        """The metrics files that are absent although checkpoint ``saved`` recorded rows in them (moved
        aside, or a kill between a fresh run's first checkpoint and its metrics' first write)."""
        return [
            path
            for path, fields, *_, digest in self._recorded(saved)
            if not path.exists() and digest != hashlib.sha256(_csv_text(fields, []).encode()).hexdigest()
        ]

    def write_history(self, history: History) -> None:
        text = history.to_json().encode()
        atomic_write(self.history, lambda f: f.write(text))

    def read_history(self) -> History:
        from cattrs.errors import BaseValidationError

        try:
            text = self.history.read_text()
        except OSError as exc:
            raise UsageError(f"cannot read the transition history {self.history}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise UsageError(
                f"{self.history} is not a transition history (not UTF-8 text); it may be damaged or edited"
            ) from None
        try:
            return History.from_json(text)
        except (ValueError, KeyError, TypeError, AttributeError, BaseValidationError, RecursionError) as exc:
            detail = str(exc).splitlines()[0][:200] if str(exc) else ""
            raise UsageError(
                f"{self.history} is not a transition history this version can read ({type(exc).__name__}"
                f"{': ' + detail if detail else ''}); it may be truncated or edited"
            ) from None


def resolve_run(run: str | os.PathLike) -> RunFiles:
    """``run`` is a checkpoint, or a directory holding exactly one run (by checkpoint, history or metrics)."""
    path = Path(run)
    if path.is_dir():
        for pattern, suffix in (("*.history.json", ".history.json"), ("*.pt", ".pt"), ("*.steps.csv", ".steps.csv")):
            found = sorted(path.glob(pattern))
            if len(found) == 1:
                name = found[0].name[: -len(suffix)] if suffix != ".pt" else run_name(found[0])
                ckpt = next(
                    (p for p in (path / (name + ".pt"), path / name) if p.is_file() and run_name(p) == name),
                    path / (name + ".pt"),
                )
                return RunFiles(ckpt)
            if len(found) > 1:
                raise UsageError(
                    f"{path} holds {len(found)} runs ({', '.join(p.name for p in found)}); name the checkpoint itself"
                )
        raise UsageError(f"no run in {path}: no checkpoint, history or metrics file; name the checkpoint of a run")
    files = RunFiles(path)
    if not any(p.exists() for p in (files.ckpt, files.history, files.steps)):
        raise UsageError(f"no run at {path}: neither it nor {files.history.name} nor {files.steps.name} exists")
    return files


def read_csv(path: Path) -> list[dict]:
    """The rows of a metrics CSV; a file that cannot be read (a folder, not text) is a :class:`UsageError`."""
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except OSError as exc:
        raise UsageError(f"cannot read the metrics file {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(
            f"{path} is not a metrics file this version can read ({type(exc).__name__}); it may be truncated or edited"
        ) from None


class MetricsWriter:
    """Appends rows to a CSV, flushed per row, and keeps the sha256 of its text (:meth:`digest`, which
    a checkpoint records). ``keep_upto`` (resume): rows past the checkpoint are cut at once; None: the
    file starts empty, or with ``defer`` is left untouched until the first :meth:`commit` (after a save)."""

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
    except (KeyError, ValueError, TypeError, UsageError):
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
