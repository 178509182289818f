"""The command line's user-facing errors: one line saying what is wrong and what to do.

:class:`UsageError` is bad input (exit status 2); :class:`RunError` is a failure while running
(exit status 1). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["UserError", "UsageError", "RunError", "report"]


class UserError(Exception):
    """A problem the user can fix; printed as ``chunklm CMD: error: MESSAGE``."""

    exit_code = 2


class UsageError(UserError):
    """Bad input (flags, paths, a checkpoint that is not ours): exit status 2."""

    exit_code = 2


class RunError(UserError):
    """A failure at run time (disk full, non-finite loss, another rank failed): exit status 1."""

    exit_code = 1


def report(command: str, exc: BaseException, prefix: str = "") -> int:
    """Print ``exc`` to stderr as the command line does and return the exit status.

    A :class:`UserError` is one line; anything else is a bug and prints its traceback (status 1).
    """
    import sys
    import traceback

    if isinstance(exc, UserError):
        print(f"chunklm {command}: error: {prefix}{exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    print(f"chunklm {command}: {prefix}internal error (a bug; please report it with this traceback):", file=sys.stderr)
    traceback.print_exception(exc, file=sys.stderr)
    sys.stderr.flush()
    return 1
