"""The command line's user-facing errors, one line saying what is wrong and what to do, and its output."""

from __future__ import annotations

import contextlib
import os
from typing import Any, Callable

__all__ = ["UserError", "UsageError", "RunError", "OutputError", "Output", "report", "silence"]


class UserError(Exception):
    """A problem the user can fix; printed as ``chunklm CMD: error: MESSAGE``."""

    exit_code = 2


class UsageError(UserError):
    """Bad input (flags, paths, a checkpoint that is not ours): exit status 2."""


class RunError(UserError):
    """A failure at run time (disk full, non-finite loss, another rank failed): exit status 1."""

    exit_code = 1


def report(command: str, exc: BaseException, prefix: str = "") -> int:
    """Print ``exc`` to stderr as the command line does (a :class:`UserError` in one line, anything else, a
    bug, with its traceback) and return the exit status."""
    import sys
    import traceback

    if isinstance(exc, UserError):
        print(f"chunklm {command}: error: {prefix}{exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    print(f"chunklm {command}: {prefix}internal error (a bug; please report it with this traceback):", file=sys.stderr)
    traceback.print_exception(exc, file=sys.stderr)
    sys.stderr.flush()
    return 1


def silence(stream) -> None:
    """Point ``stream``'s file descriptor at /dev/null after a write to it failed, so that the
    interpreter's last flush does not fail (and print) again."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        fd = stream.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)


class OutputError(RunError):
    """Standard output cannot take what a command prints (a closed pipe, a full disk): exit status 1."""


class Output:
    """A standard stream whose write errors are an :class:`OutputError` (``chunklm generate | head``: one
    line, not a traceback); with ``on_lost``, the first one instead silences it for good and is passed
    to ``on_lost`` (a run whose terminal closed saves and stops)."""

    def __init__(self, stream, on_lost: Callable[[OutputError], None] | None = None) -> None:
        self.stream, self._on_lost, self._lost = stream, on_lost, False

    def _call(self, call, *args) -> Any:
        if self._lost:
            return None
        try:
            return call(*args)
        except OSError as exc:
            broken = isinstance(exc, BrokenPipeError)
            error = OutputError(
                "the output was closed before all of it was written (broken pipe)"
                if broken
                else f"cannot write the output: {exc.strerror or exc}"
            )
            if self._on_lost is None:
                raise error from None
            self._lost = True
            silence(self.stream)
            self._on_lost(error)
            return None

    def write(self, text: str) -> int:
        self._call(self.stream.write, text)
        return len(text)

    def flush(self) -> None:
        self._call(self.stream.flush)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)
