"""Ready actions: restart the LR at peak, set the model's frequency cutoff, reset plateau windows.

Each returns its effect as ``{name: [before, after]}`` and declares the registered objects it needs in
``requires``, so a missing one fails at ``engine.start()``, not at the first transition.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import attrs

from engine import Context, CurriculumError, describe
from engine.core import check_callable
from policies._checks import fail, flag, policy

__all__ = ["RestartLR", "SetCutoff", "ResetWindow"]

logger = logging.getLogger(__name__)


def _optimizer_lr(optimizer: Any) -> float:
    """The LR of the optimizer's first param group, as a float."""
    return float(optimizer.param_groups[0]["lr"])


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):  # a tensor or numpy scalar
        value = value.item()
    return value


@policy
class RestartLR:
    """Restart the LR schedule at its peak: calls ``ctx.schedule.restart()`` (a :class:`~policies.StagedCosine`,
    a :class:`~policies.Restartable`, or anything with ``restart()``). Effect and health check: docs/reference.md.
    """

    requires = ("schedule", "optimizer")

    def check(self, ctx: Context) -> None:
        """At ``start()``/``load_state_dict()``: refuse a schedule that cannot restart, hours before the transition."""
        schedule = ctx.schedule
        if not callable(getattr(schedule, "restart", None)):
            raise CurriculumError(
                f"RestartLR() needs a schedule with restart(), got {type(schedule).__name__}; "
                "wrap it when you build it and register the wrapper: "
                f"schedule=Restartable({type(schedule).__name__}(...)) "
                "(from policies), or register a StagedCosine"
            )

    def adapt_schedule(self, scheduler: Any, *, saved: dict | None, fresh: bool, over: str) -> Any:
        """For a framework callback: the framework's own scheduler, made restartable when it cannot
        restart, wrapped with :meth:`Restartable.around` (the framework keeps stepping it); re-planned
        over the steps left at each restart with ``over="remaining"`` when the schedule has a length
        (else replayed whole). ``saved``: the wrapper's state from the checkpoint."""
        from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

        from policies.schedule import Over, Restartable

        if callable(getattr(scheduler, "restart", None)):
            return scheduler
        if not isinstance(scheduler, LRScheduler) or isinstance(scheduler, ReduceLROnPlateau):
            return scheduler  # nothing to restart: check() says what to pass
        over = Over(over)
        if not Restartable.replannable(scheduler):
            over = Over.WHOLE  # a schedule without a length (ExponentialLR, a LambdaLR of a plain function) runs on
        elif over is Over.WHOLE:
            logger.warning(
                "the curriculum restarts the LR and restart_over='whole' replays the whole %s from each restart, "
                "so a restart after its step 0 does not reach the schedule's end (a decay to 0 ends above it); "
                "restart_over='remaining' re-plans it over the steps left",
                type(scheduler).__name__,
            )
        if fresh or saved is not None:
            return Restartable.around(scheduler, None if fresh else saved, over=over)
        return scheduler  # a checkpoint from before the wrapper: check() names the fix

    def __call__(self, ctx: Context) -> dict:
        schedule, optimizer = ctx.schedule, ctx.optimizer
        self.check(ctx)
        before = _optimizer_lr(optimizer)
        schedule.restart()
        after = _optimizer_lr(optimizer)
        first = float(schedule.restart_lr) if hasattr(schedule, "restart_lr") else None
        peak = float(schedule.peak_lr) if hasattr(schedule, "peak_lr") else first if first is not None else after
        effect = {"lr": [before, after], "peak": peak}
        if first is not None and first != peak:
            effect["first_lr"] = first
        return effect

    def verify(self, ctx: Context, effect: dict) -> str | None:
        """A warning when the first step after the restart ran below half the restart's peak."""
        try:
            peak = float(effect.get("first_lr", effect.get("peak", effect["lr"][1])))
        except (KeyError, IndexError, TypeError, ValueError):
            return f"RestartLR could not check the LR: its recorded effect {effect!r} has no peak"
        what = "first LR" if "first_lr" in effect else "peak"
        lr = float(ctx.metrics["lr"]) if "lr" in ctx.metrics else _optimizer_lr(ctx.optimizer)
        if math.isfinite(peak) and lr < 0.5 * peak:
            return (
                f"LR {lr:.1e} on the first step after the restart is below half the restart's {what} {peak:.1e}: "
                "LR TOO LOW. Likely cause: stage alignment broken, or a schedule that overwrote the restart "
                "(check the schedule's stages, that restart() sets the optimizer's LR at once, and that "
                "schedule.step() runs after optimizer.step())"
            )
        return None


def _cutoff(n: Any) -> int | None:
    if isinstance(n, str) and n == "full":  # a data file's word for None (TOML has no null)
        return None
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        fix = "e.g. SetCutoff(128) or SetCutoff(None)"
        raise fail("SetCutoff", "n", "an int >= 1 (bins) or None (full band)", n, fix)
    return n


@policy
class SetCutoff:
    """Set the model's frequency cutoff: ``ctx.model.set_cutoff(n, preserve=preserve)``, ``n`` bins (>= 1)
    or None (``"full"``) for the full band. Effect: ``{"cutoff": [before, after]}`` from ``ctx.model.cutoff``.

    The repr is the first release's, kept because it is in the fingerprint of checkpoints already
    written: ``SetCutoff(128)`` for ``preserve=True``, ``SetCutoff(128, preserve=False)`` otherwise.
    """

    requires = ("model",)

    n: int | None = attrs.field(converter=_cutoff, metadata={"null": "full"})  # a file writes None as "full"
    preserve: bool = attrs.field(default=False, validator=flag("preserve=True keeps the model's function exact"))

    def __call__(self, ctx: Context) -> dict:
        model = ctx.model
        if not callable(getattr(model, "set_cutoff", None)):
            raise CurriculumError(
                f"{self!r} needs a model with set_cutoff(n, preserve=...), got {type(model).__name__}; "
                "register the model that has it as model=..."
            )
        before = _plain(getattr(model, "cutoff", None))
        model.set_cutoff(self.n, preserve=self.preserve)
        return {"cutoff": [before, _plain(getattr(model, "cutoff", None))]}

    def __repr__(self) -> str:
        return f"SetCutoff({self.n!r}{'' if self.preserve else ', preserve=False'})"


def _filled(guard: Any) -> int | None:
    """Values held by a plateau window, summed through combinators; None for other guards."""
    if hasattr(guard, "filled"):
        return int(guard.filled)
    counts = [c for c in map(_filled, getattr(guard, "guards", ())) if c is not None]
    return sum(counts) if counts else None


class ResetWindow:
    """Clear the windows of the given guards without a phase change: calls ``reset()`` on each.

    Pass the very guard objects used in the transitions (an action cannot see the engine's guards).
    Effect: ``{"filled": [before, after]}``, the values each guard's window held (None: no window).
    """

    def __init__(self, *guards: Any) -> None:
        if not guards:
            fix = "e.g. ResetWindow(plateau) with the Plateau used in the transition"
            raise fail("ResetWindow", "guards", "at least one guard to reset", guards, fix)
        for i, g in enumerate(guards):
            check_callable(g, f"ResetWindow: guards[{i}]")
            if not callable(getattr(g, "reset", None)):
                fix = "pass a Plateau (or a combinator holding one)"
                raise fail("ResetWindow", f"guards[{i}]", "a guard with reset()", describe(g), fix)
        self.guards = guards

    def __call__(self, ctx: Context) -> dict:
        before = [_filled(g) for g in self.guards]
        for g in self.guards:
            g.reset()
        return {"filled": [before, [_filled(g) for g in self.guards]]}

    def __repr__(self) -> str:
        return f"ResetWindow({', '.join(describe(g) for g in self.guards)})"
