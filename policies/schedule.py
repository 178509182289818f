"""The stage-aligned cosine LR schedule, with restarts that take effect at once."""

from __future__ import annotations

import bisect
import logging
import math
from typing import Any, NamedTuple, Sequence

from engine import CurriculumError

from policies._checks import check_int, check_real, fail

__all__ = ["StagedCosine", "SEED_STAGES"]

logger = logging.getLogger(__name__)

#: The seed's stages: (start epoch, peak multiplier, min multiplier) of the base LR.
SEED_STAGES = ((0, 1.0, 0.1), (2, 1.0, 0.1), (5, 1.0, 0.05))


class _Stage(NamedTuple):
    start: int  # first global step of the stage
    end: int  # first step after it: the next stage's start or the end of training
    peak: float
    min: float


class StagedCosine:
    """Cosine cycles aligned with training stages; ``restart()`` starts a new cycle at once.

    ``stages`` are ``(start_epoch, peak, min)``: from ``start_epoch`` the LR follows a cosine from
    ``base_lr * peak`` down towards ``base_lr * min``. A stage ends at the next stage's start or at
    the end of training (``total_epochs``), whichever is first; stages starting at or after
    ``total_epochs`` are dropped. Within a cycle of N steps the i-th step (i = 0 .. N-1) runs at::

        lr = base_lr * (min + (peak - min) * 0.5 * (1 + cos(pi * i / N)))

    (i = 0 is exactly ``base_lr * peak``). Each stage starts a cycle that runs to its end.

    Torch's convention: construction sets the LR of step 0 on the optimizer, and ``step()``, called
    after each ``optimizer.step()``, sets the LR of the next step. Every param group gets the same
    LR (per-group LRs are not kept). ``lr`` / ``get_last_lr()`` give the LR of the step about to run.

    ``restart()`` starts a new cycle at ``peak`` from the step about to run (the one ``step()``
    already set up) to the end of that step's stage, and writes the peak to the optimizer at once,
    so the very next optimizer step runs at peak.

    ``warmup_steps`` = W > 0: the first W steps of training (0 .. W-1) ramp linearly,
    ``lr = base_lr * peak * (s + 1) / (W + 1)`` at step s, and the first stage's cosine cycle starts
    at step W (at peak) and runs to the end of the first stage. W must be shorter than the first
    stage. A restart during the warmup ends it.

    Past the end of training (``total_epochs * steps_per_epoch`` steps) the LR stays at the last
    cycle's min, i.e. ``base_lr`` times the last stage's min; a restart there runs one step at peak.
    One exception keeps ``--epochs`` extensions exact: when a declared stage starts exactly at the
    end of training, the first step after it runs at that stage's peak, as in a longer run.

    State: ``state_dict()`` holds the position (the step about to run and the start of the cycle in
    progress, plus informational copies of the cycle's length, multipliers and LR), not the
    configuration. Load it after ``optimizer.load_state_dict`` into a schedule built with the same
    arguments and the LRs continue bit-identically. The stage lengths depend on ``total_epochs``:
    a schedule built with other ``total_epochs`` (or stages) continues from the saved step with
    its own stage layout, so the LRs of the stage in progress change from that step on (identical
    only when the change falls on a stage boundary); a restart made in that stage is kept.
    """

    def __init__(
        self,
        optimizer: Any,
        base_lr: float,
        steps_per_epoch: int,
        total_epochs: int,
        stages: Sequence[Sequence[float]] = SEED_STAGES,
        warmup_steps: int = 0,
    ) -> None:
        where = "StagedCosine"
        if not isinstance(getattr(optimizer, "param_groups", None), list) or not optimizer.param_groups:
            raise fail(where, "optimizer", "a torch optimizer (with param_groups)", optimizer, "pass the optimizer the loop steps")
        self.optimizer = optimizer
        self.base_lr = check_real(where, "base_lr", base_lr, "e.g. base_lr=2e-4", positive=True)
        self.steps_per_epoch = check_int(where, "steps_per_epoch", steps_per_epoch, 1, "optimizer steps per epoch, e.g. 1000")
        self.total_epochs = check_int(where, "total_epochs", total_epochs, 1, "the run's --epochs, e.g. 50")
        self.stages = _check_stages(stages)
        self.warmup_steps = check_int(where, "warmup_steps", warmup_steps, 0, "e.g. warmup_steps=0 (none)")
        self._total_steps = self.total_epochs * self.steps_per_epoch
        self._layout = self._build_layout()
        first = self._layout[0]
        if self.warmup_steps >= first.end:
            raise fail(
                where, "warmup_steps", f"shorter than the first stage ({first.end} steps)", warmup_steps,
                "lower warmup_steps or start the second stage later",
            )
        self._starts = [st.start for st in self._layout]
        self._stage_at_start = {st.start: k for k, st in enumerate(self._layout) if k > 0}
        self._step = 0
        self._cycle = self._cycle_from(self._stage_cycle_start(0))
        self._set(self._compute(0))

    # -- layout ----------------------------------------------------------------------------------

    def _build_layout(self) -> list[_Stage]:
        spe, kept = self.steps_per_epoch, [s for s in self.stages if s[0] < self.total_epochs]
        return [
            _Stage(start * spe, (kept[k + 1][0] if k + 1 < len(kept) else self.total_epochs) * spe, peak, low)
            for k, (start, peak, low) in enumerate(kept)
        ]

    def _stage_index(self, step: int) -> int:
        """The stage containing ``step``; the last stage past the end of training."""
        return bisect.bisect_right(self._starts, step) - 1

    def _stage_cycle_start(self, k: int) -> int:
        return self._layout[k].start + (self.warmup_steps if k == 0 else 0)

    def _cycle_from(self, start: int) -> _Stage:
        """The cycle that starts at ``start`` and runs to the end of that step's stage."""
        st = self._layout[self._stage_index(start)]
        return _Stage(start, max(st.end, start + 1), st.peak, st.min)

    def _compute(self, s: int) -> float:
        start, end, peak, low = self._cycle
        if s < start:  # warmup
            return self.base_lr * peak * (s + 1) / (start + 1)
        i, n = s - start, end - start
        if i == 0:
            return self.base_lr * peak
        if i >= n:  # past the end of training
            return self.base_lr * low
        return self.base_lr * (low + (peak - low) * 0.5 * (1.0 + math.cos(math.pi * i / n)))

    def _set(self, lr: float) -> None:
        self._lr = lr
        for group in self.optimizer.param_groups:
            if hasattr(group["lr"], "fill_"):  # a tensor LR (capturable optimizers)
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr

    # -- the loop's calls ------------------------------------------------------------------------

    def step(self) -> None:
        """After ``optimizer.step()``: set the LR of the next step (a new stage starts a new cycle)."""
        self._step += 1
        k = self._stage_at_start.get(self._step)
        if k is not None:
            self._cycle = self._cycle_from(self._stage_cycle_start(k))
        elif self._step == self._total_steps:
            # The first step after the end of training runs only if --epochs grows on resume. When a
            # declared stage starts exactly there, a longer run would start it at peak: do the same,
            # so extending a run at a stage boundary is bit-identical to having planned it longer.
            nxt = [st for st in self.stages if st[0] * self.steps_per_epoch == self._step]
            if nxt:
                self._cycle = _Stage(self._step, self._step + 1, nxt[0][1], nxt[0][2])
        self._set(self._compute(self._step))

    def restart(self) -> tuple[float, float]:
        """Start a new cycle at peak from the step about to run; returns the LR (before, after)."""
        before = self._lr
        self._cycle = self._cycle_from(self._step)
        self._set(self._compute(self._step))
        logger.info("LR restart at step %d: %.3e -> %.3e", self._step, before, self._lr)
        return before, self._lr

    @property
    def lr(self) -> float:
        """The LR of the step about to run."""
        return self._lr

    def get_last_lr(self) -> list[float]:
        """The LR of the step about to run, per param group (torch's scheduler convention)."""
        return [self._lr] * len(self.optimizer.param_groups)

    @property
    def peak_lr(self) -> float:
        """``base_lr`` times the peak of the stage of the step about to run: what a restart sets."""
        return self.base_lr * self._layout[self._stage_index(self._step)].peak

    @property
    def step_count(self) -> int:
        """Optimizer steps completed: the 0-based index of the step about to run."""
        return self._step

    # -- state -----------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        start, end, peak, low = self._cycle
        return {
            "step": self._step,
            "cycle_start": start,
            "cycle_len": end - start,
            "peak": peak,
            "min": low,
            "lr": self._lr,
            "base_lr": self.base_lr,
            "steps_per_epoch": self.steps_per_epoch,
            "total_epochs": self.total_epochs,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from a ``state_dict()``; call it after ``optimizer.load_state_dict``."""
        if not isinstance(state, dict):
            raise CurriculumError(f"StagedCosine.load_state_dict: expected the dict from state_dict(), got {type(state).__name__}")
        for key in ("step", "cycle_start"):
            value = state.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise CurriculumError(
                    f"StagedCosine.load_state_dict: {key!r} must be an int >= 0, got {value!r}; "
                    "pass the dict that StagedCosine.state_dict() returned"
                )
        step, cycle_start = state["step"], state["cycle_start"]
        k = self._stage_index(step)
        if cycle_start < self._layout[k].start or (cycle_start > step and k > 0):
            # With this layout a new stage began after the saved cycle: its own cycle is in progress.
            cycle_start = self._stage_cycle_start(k)
        self._step = step
        self._cycle = self._cycle_from(cycle_start)
        self._set(self._compute(step))
        saved = {key: state.get(key) for key in ("base_lr", "steps_per_epoch", "total_epochs")}
        mine = {"base_lr": self.base_lr, "steps_per_epoch": self.steps_per_epoch, "total_epochs": self.total_epochs}
        if saved != mine and state.get("lr") != self._lr:
            logger.warning(
                "StagedCosine restored at step %d with %s (saved with %s): the LR continues from %.3e instead of %.3e",
                step, mine, saved, self._lr, state.get("lr"),
            )

    def __repr__(self) -> str:
        return (
            f"StagedCosine(base_lr={self.base_lr!r}, steps_per_epoch={self.steps_per_epoch}, "
            f"total_epochs={self.total_epochs}, stages={self.stages!r}, warmup_steps={self.warmup_steps})"
        )


def _check_stages(stages: Any) -> tuple[tuple[int, float, float], ...]:
    where, fix = "StagedCosine", "e.g. stages=((0, 1.0, 0.1), (2, 1.0, 0.1), (5, 1.0, 0.05))"
    if isinstance(stages, (str, bytes)) or not isinstance(stages, Sequence) or not stages:
        raise fail(where, "stages", "a non-empty sequence of (start_epoch, peak, min)", stages, fix)
    out = []
    for i, stage in enumerate(stages):
        if isinstance(stage, (str, bytes)) or not isinstance(stage, Sequence) or len(stage) != 3:
            raise fail(where, f"stages[{i}]", "a (start_epoch, peak, min) triple", stage, fix)
        start = check_int(where, f"stages[{i}][0] (start epoch)", stage[0], 0, fix)
        peak = check_real(where, f"stages[{i}][1] (peak multiplier)", stage[1], fix, positive=True)
        low = check_real(where, f"stages[{i}][2] (min multiplier)", stage[2], fix, nonnegative=True)
        if low > peak:
            raise fail(where, f"stages[{i}]", "min <= peak", tuple(stage), f"swap them: ({start}, {low}, {peak})")
        if i == 0 and start != 0:
            raise fail(where, "stages[0][0]", "0 (the first stage starts training)", start, "start the first stage at epoch 0")
        if i > 0 and start <= out[-1][0]:
            raise fail(where, f"stages[{i}][0]", f"> {out[-1][0]} (start epochs strictly increasing)", start, "sort the stages by start epoch")
        out.append((start, peak, low))
    return tuple(out)
