"""Files replaced atomically: a crash at any moment leaves the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Callable

from engine.core import CurriculumError

__all__ = ["atomic_write", "write_error"]

_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


def _umask() -> int:
    """The process's umask, read without setting it where Linux allows (setting it, even briefly,
    would affect files other threads create meanwhile)."""
    with contextlib.suppress(OSError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(
    path: str | os.PathLike, write: Callable[[IO[bytes]], None], error: type[Exception] = CurriculumError
) -> None:
    """Write ``path`` through ``write(file)``: a temp file ``.NAME.XXXXXXXX.tmp`` in the same folder (mode
    0666 less the umask, as ``open`` gives, not ``mkstemp``'s 0600), fsync, ``os.replace``, fsync of the
    folder. A failure to write (a full disk, permissions) is an ``error`` (:func:`write_error`); the old
    file is kept."""
    path = Path(path)
    existed = path.is_file()
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_error(path, exc, error, existed) from exc
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # gone once replaced
        if isinstance(exc, (OSError, RuntimeError)):  # torch.save reports a full disk as a RuntimeError
            raise write_error(path, exc, error, existed) from exc
        raise


def write_error(
    path: Path, exc: BaseException, error: type[Exception] = CurriculumError, existed: bool | None = None
) -> Exception:
    """An ``error`` saying what went wrong writing ``path``, and what to do: free space only when the
    disk is full; the previous version kept only when there was one."""
    if existed is None:
        existed = path.is_file()
    kept = "the previous version of the file is kept" if existed else "nothing was written there"
    if not path.parent.is_dir():
        return error(
            f"could not write {path}: its folder {path.parent} does not exist (moved or deleted?); {kept}. "
            "Put the folder back, or pick another path"
        )
    text = str(exc)
    if (isinstance(exc, OSError) and exc.errno in _FULL) or "unexpected pos" in text or "failed writing" in text:
        free = shutil.disk_usage(path.parent).free
        return error(
            f"could not write {path}: the disk is full or the file is too large ({free / 1e6:.1f} MB free in "
            f"{path.parent}); {kept}. Free space"
        )
    why = (
        f"{exc.strerror} ({type(exc).__name__})"
        if isinstance(exc, OSError) and exc.strerror
        else f"{type(exc).__name__}: {exc}"
    )
    return error(f"could not write {path}: {why}; {kept}. Fix the path or its permissions")
