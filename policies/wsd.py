"""Warmup-stable-decay (WSD; Hägele et al. 2024, MiniCPM): hold the peak LR, then cool down, best in the
(1-sqrt) shape. The cooldown can start at any time, which makes its start an engine transition:
:class:`StartCooldown` starts it, e.g. when the stable phase plateaus (:func:`adaptive_cooldown`).
"""

from __future__ import annotations

import enum
import logging
import math
from typing import Any

from engine import Context, Curriculum, CurriculumError, Phase, Point, Transition
from policies._checks import check_int, check_real, fail, policy
from policies.guards import MinEpoch, Plateau, all_of
from policies.schedule import _Formula, _member

__all__ = ["WSD", "CooldownShape", "StartCooldown", "CooldownDue", "adaptive_cooldown"]

logger = logging.getLogger(__name__)


class CooldownShape(str, enum.Enum):
    """How the cooldown falls from the peak to the final LR, as a function of its progress p in [0, 1)."""

    ONE_MINUS_SQRT = "1-sqrt"  # 1 - sqrt(p): Hägele et al.'s best
    LINEAR = "linear"  # 1 - p
    COSINE = "cosine"  # (1 + cos(pi p)) / 2

    def __str__(self) -> str:
        return self.value

    def factor(self, p: float) -> float:
        if self is CooldownShape.ONE_MINUS_SQRT:
            return 1.0 - math.sqrt(p)
        if self is CooldownShape.LINEAR:
            return 1.0 - p
        return 0.5 * (1.0 + math.cos(math.pi * p))


class WSD(_Formula):
    """Warmup, stable at ``base_lr``, then a cooldown of ``cooldown_steps`` to ``base_lr * final_ratio``.

    Step s (0-based, the s-th optimizer step) runs at::

        s < W:                 base_lr * (s + 1) / (W + 1)                 (warmup, W = warmup_steps)
        W <= s < c:            base_lr                                     (stable)
        c <= s < c + n:        final + (base_lr - final) * f((s - c) / n)  (cooldown, f: ``shape``)
        s >= c + n:            final = base_lr * final_ratio

    with n = ``cooldown_steps`` (default ``round(cooldown_fraction * total_steps)``, at least 1) and
    c the cooldown's start: the step about to run when :meth:`start_cooldown` was called, or, at the
    latest (unless ``auto=False``), ``auto_start = total_steps - n``, so a cooldown always ends with
    training. StagedCosine's torch conventions; the state and the properties: docs/reference.md.
    """

    def __init__(
        self,
        optimizer: Any,
        base_lr: float,
        total_steps: int,
        *,
        warmup_steps: int = 0,
        cooldown_fraction: float = 0.2,
        cooldown_steps: int | None = None,
        shape: CooldownShape | str = CooldownShape.ONE_MINUS_SQRT,
        final_ratio: float = 0.0,
        auto: bool = True,
    ) -> None:
        where = "WSD"
        self.base_lr = check_real(where, "base_lr", base_lr, "e.g. base_lr=2e-4", positive=True)
        self.total_steps = check_int(where, "total_steps", total_steps, 1, "optimizer steps of the run, e.g. 5000")
        self.warmup_steps = check_int(where, "warmup_steps", warmup_steps, 0, "e.g. warmup_steps=0 (none)")
        fix = "e.g. cooldown_fraction=0.2 (Hägele et al.)"
        self.cooldown_fraction = check_real(where, "cooldown_fraction", cooldown_fraction, fix)
        if not 0.0 < self.cooldown_fraction <= 1.0:
            raise fail(where, "cooldown_fraction", "in (0, 1]", cooldown_fraction, fix)
        if cooldown_steps is None:
            cooldown_steps = max(1, round(self.cooldown_fraction * self.total_steps))
        self.cooldown_steps = check_int(where, "cooldown_steps", cooldown_steps, 1, "e.g. a fifth of total_steps")
        self.shape = _member(CooldownShape, shape, where, "shape", "shape='1-sqrt' is Hägele et al.'s best")
        fix = "the final LR as a fraction of base_lr, e.g. 0.0"
        self.final_ratio = check_real(where, "final_ratio", final_ratio, fix, nonnegative=True)
        if self.final_ratio > 1.0:
            raise fail(where, "final_ratio", "in [0, 1]", final_ratio, fix)
        if not isinstance(auto, bool):
            raise fail(where, "auto", "a bool", auto, "auto=False leaves the cooldown to start_cooldown()")
        self.auto, self.started_at = auto, None  # started_at: a cooldown started by start_cooldown()
        self.auto_start = max(0, self.total_steps - self.cooldown_steps) if auto else None
        if auto and self.warmup_steps > self.auto_start:
            expected = f"at most total_steps - cooldown_steps = {self.auto_start}"
            raise fail(where, "warmup_steps", expected, warmup_steps, "shorten the warmup or the cooldown")
        super().__init__(optimizer)

    @property
    def cooldown_start(self) -> int | None:
        """The first step of the cooldown: started by hand, else the automatic one (None: not planned)."""
        starts = [s for s in (self.started_at, self.auto_start) if s is not None]
        return min(starts) if starts else None

    @property
    def cooldown_end(self) -> int | None:
        """The first step after the cooldown (None: no cooldown planned)."""
        start = self.cooldown_start
        return None if start is None else start + self.cooldown_steps

    def _compute(self, s: int) -> float:
        final = self.base_lr * self.final_ratio
        c = self.cooldown_start
        if c is not None and s >= c:
            i = s - c
            if i >= self.cooldown_steps:
                return final
            return final + (self.base_lr - final) * self.shape.factor(i / self.cooldown_steps)
        if s < self.warmup_steps:
            return self.base_lr * (s + 1) / (self.warmup_steps + 1)
        return self.base_lr

    def _advance(self, nxt: int) -> None:
        end = self.cooldown_end
        if nxt == end and end < self.total_steps:
            logger.warning(
                "WSD cooldown ended at step %d with %d of total_steps=%d left: they run at the final LR %.3g; "
                "stop the run there, or start the cooldown later",
                end,
                self.total_steps - end,
                self.total_steps,
                self.base_lr * self.final_ratio,
            )

    @property
    def peak_lr(self) -> float:
        return self.base_lr

    @property
    def cooling(self) -> bool:
        """The step about to run is in the cooldown (or after it)."""
        c = self.cooldown_start
        return c is not None and self.last_epoch >= c

    @property
    def finished(self) -> bool:
        """The cooldown is over: every later step runs at the final LR."""
        end = self.cooldown_end
        return end is not None and self.last_epoch >= end

    def start_cooldown(self) -> tuple[float, float]:
        """Start the cooldown at the step about to run (the one ``step()`` already set up), at once; a
        cooldown already under way goes on unchanged. Returns the LR of that step (before, after)."""
        before, s = self.lr, self.last_epoch
        if not self.cooling:
            self.started_at = s
            self._set_now()
            final = self.base_lr * self.final_ratio
            logger.info("WSD cooldown starts at step %d: %d steps to %.3e", s, self.cooldown_steps, final)
        return before, self.lr

    # -- state -------------------------------------------------------------------------------------

    def _settings(self) -> dict:
        """The settings a state carries, to tell a restore under other ones."""
        keys = ("base_lr", "total_steps", "cooldown_steps")
        return {**{k: getattr(self, k) for k in keys}, "shape": self.shape.value}

    def state_dict(self) -> dict:
        return {"step": self.last_epoch, "started_at": self.started_at, "lr": self.lr, **self._settings()}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a ``state_dict()``; call it after ``optimizer.load_state_dict``."""
        step = self._load_step(state)
        started = None if state.get("started_at") is None else self._load_step(state, "started_at")
        self.last_epoch, self._step_count, self.started_at = step, step + 1, started
        self._set_now()
        self._moved(state, {k: state.get(k) for k in self._settings()}, self._settings())

    def __repr__(self) -> str:
        return (
            f"WSD(base_lr={self.base_lr!r}, total_steps={self.total_steps}, warmup_steps={self.warmup_steps}, "
            f"cooldown_steps={self.cooldown_steps}, shape={self.shape.value!r}, "
            f"final_ratio={self.final_ratio!r}, auto={self.auto})"
        )


@policy
class StartCooldown:
    """Start the registered schedule's cooldown now: calls ``ctx.schedule.start_cooldown()`` (a :class:`WSD`).
    Effect: ``{"lr": [before, after], "cooldown": [first step, first step after]}``."""

    requires = ("schedule",)

    def check(self, ctx: Context) -> None:
        """At ``start()``/``load_state_dict()``: refuse a schedule that has no cooldown to start."""
        schedule = ctx.schedule
        if not callable(getattr(schedule, "start_cooldown", None)):
            raise CurriculumError(
                f"StartCooldown() needs a schedule with start_cooldown(), got {type(schedule).__name__}; "
                "register a WSD (from policies) as schedule=..."
            )

    def __call__(self, ctx: Context) -> dict:
        schedule = ctx.schedule
        self.check(ctx)
        automatic = _started_by_itself(schedule)
        before, after = schedule.start_cooldown()
        effect = {"lr": [before, after], "cooldown": [schedule.cooldown_start, schedule.cooldown_end]}
        if automatic:  # it had begun at its automatic start: this transition did not start it
            effect["auto_start"] = schedule.auto_start
        return effect


def _started_by_itself(schedule: Any) -> bool:
    """A WSD whose step about to run is in the cooldown that began at its automatic start."""
    return bool(getattr(schedule, "cooling", False)) and getattr(schedule, "started_at", 0) is None


@policy
class CooldownDue:
    """Holds once the registered schedule's cooldown has begun by itself: a :class:`WSD` built with
    ``auto=True`` reached ``auto_start`` with no cooldown started before; never without a schedule (a
    replay). On a step-end transition, it makes the automatic cooldown move the phase and be recorded."""

    def __call__(self, ctx: Context) -> bool:
        return _started_by_itself(ctx.objects.get("schedule"))

    def evidence(self, ctx: Context) -> dict:
        schedule = ctx.objects.get("schedule")
        return {"auto_start": getattr(schedule, "auto_start", None), "step": getattr(schedule, "last_epoch", None)}


def adaptive_cooldown(
    min_epoch: int, window: int = 50, threshold: float = 0.005, test: str = "relative", alpha: float | None = None
) -> Curriculum:
    """``stable -> cooldown``: at an epoch end, once ``MinEpoch(min_epoch)`` holds and the training loss
    has plateaued (``Plateau(window, threshold, test=test, alpha=alpha)``), fire :class:`StartCooldown`;
    a second, step-end transition on :class:`CooldownDue` records a :class:`WSD`'s automatic start."""
    guard = all_of(MinEpoch(min_epoch), Plateau(window=window, threshold=threshold, test=test, alpha=alpha))
    return Curriculum(
        [Phase("stable"), Phase("cooldown")],
        [
            Transition("stable", "cooldown", guards=[guard], actions=[StartCooldown()], when=Point.EPOCH_END),
            Transition("stable", "cooldown", guards=[CooldownDue()], actions=[StartCooldown()], when=Point.STEP_END),
        ],
    )
