"""LR schedules that ``RestartLR`` can restart: the stage-aligned cosine, and any torch scheduler wrapped.

Both are ``torch.optim.lr_scheduler.LRScheduler`` subclasses, so the frameworks that insist on
torch's scheduler API (Lightning, the Hugging Face Trainer) take them as they are.
"""

from __future__ import annotations

import bisect
import copy
import enum
import functools
import logging
import math
from typing import Any, NamedTuple, Sequence

import torch
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from engine import CurriculumError
from policies._checks import check_int, check_real, fail

__all__ = ["StagedCosine", "StageUnit", "Restartable", "Over", "SEED_STAGES"]

logger = logging.getLogger(__name__)

#: The seed's stages: (start epoch, peak multiplier, min multiplier) of the base LR.
SEED_STAGES = ((0, 1.0, 0.1), (2, 1.0, 0.1), (5, 1.0, 0.05))


class StageUnit(str, enum.Enum):
    """What a stage's start counts: epochs (the seed's) or optimizer steps."""

    EPOCHS = "epochs"
    STEPS = "steps"


class _Cycle(NamedTuple):
    warm: int  # first step of the cycle's linear warmup (== start: no warmup)
    start: int  # the step that runs at peak
    end: int  # first step after the cosine (a stage's: the next stage's start or the end of training)
    peak: float
    min: float


def _member(kind: type[enum.Enum], value: Any, where: str, field: str, fix: str) -> Any:
    """``value`` as a member of the enum ``kind``, or the error naming its values."""
    try:
        return kind(value)
    except ValueError:
        raise fail(where, field, " or ".join(repr(m.value) for m in kind), value, fix) from None


class _Formula(LRScheduler):
    """A torch ``LRScheduler`` whose LR is a formula of the step, ``_compute(step)``: construction sets
    step 0's LR, ``step()`` after each ``optimizer.step()`` sets the next, every param group gets the
    same LR and ``last_epoch`` counts the optimizer steps completed."""

    def __init__(self, optimizer: Any) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            fix = "pass the optimizer the loop steps"
            raise fail(type(self).__name__, "optimizer", "a torch.optim.Optimizer", optimizer, fix)
        super().__init__(optimizer)  # sets the LR of step 0 through step()

    def _compute(self, s: int) -> float:
        raise NotImplementedError

    def _advance(self, nxt: int) -> None:
        """Before step ``nxt`` gets its LR: the schedule's own bookkeeping."""

    def step(self, epoch: None = None) -> None:
        """After ``optimizer.step()``: set the LR of the next step."""
        if epoch is not None:
            raise CurriculumError(
                f"{type(self).__name__}.step(epoch={epoch!r}): the schedule counts optimizer steps itself; call step() "
                "with no argument after each optimizer.step() (restore a position with load_state_dict)"
            )
        self._advance(self.last_epoch + 1)
        super().step()

    def get_lr(self) -> list[float]:
        """The LR of step ``last_epoch`` for every param group (torch calls it inside ``step()``)."""
        return [self._compute(self.last_epoch)] * len(self.optimizer.param_groups)

    def get_last_lr(self) -> list[float]:
        """The LR of the step about to run, per param group (torch's scheduler convention)."""
        return [self.lr] * len(self.optimizer.param_groups)

    @property
    def lr(self) -> float:
        """The LR of the step about to run."""
        return self._compute(self.last_epoch)

    def fast_forward(self, steps: int) -> None:
        """Advance ``steps`` optimizer steps at once, as ``steps`` calls of ``step()`` would (e.g. to resume a
        checkpoint that holds weights but no schedule state)."""
        steps = check_int(f"{type(self).__name__}.fast_forward", "steps", steps, 0, "the optimizer steps already run")
        for nxt in range(self.last_epoch + 1, self.last_epoch + steps + 1):
            self._advance(nxt)
        self.last_epoch += steps
        self._step_count += steps
        self._set_now()

    def _set_now(self) -> None:
        lr = self.lr
        for group in self.optimizer.param_groups:
            if isinstance(group["lr"], torch.Tensor):  # a tensor LR (capturable optimizers)
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr
        self._last_lr = [lr] * len(self.optimizer.param_groups)

    def _load_step(self, state: Any, key: str = "step") -> int:
        """``state[key]`` of a ``state_dict()``, an int >= 0, or the error naming it."""
        name = type(self).__name__
        where, fix = f"{name}.load_state_dict", f"pass the dict that {name}.state_dict() returned"
        if not isinstance(state, dict):
            raise fail(where, "state", "the dict from state_dict()", type(state).__name__, fix)
        return check_int(where, key, state.get(key), 0, fix)

    def _moved(self, state: dict, saved: dict, mine: dict) -> None:
        """After a restore: warn when other settings make the LR continue from another value."""
        if saved != mine and state.get("lr") != self.lr:
            logging.getLogger(type(self).__module__).warning(
                f"{type(self).__name__} restored at step {self.last_epoch} with {mine} (saved with {saved}): "
                f"the LR continues from {self.lr:.3e} instead of {state.get('lr')}"
            )


class StagedCosine(_Formula):
    """Cosine cycles aligned with training stages; ``restart()`` starts a new cycle at once.

    ``stages`` are ``(start, peak, min)`` multipliers of ``base_lr``, each starting a cycle to the next
    stage's start or the end of training. The formulas, warmups, restarts, the state: docs/reference.md.
    """

    def __init__(
        self,
        optimizer: Any,
        base_lr: float,
        steps_per_epoch: int | None = None,
        total_epochs: int | None = None,
        stages: Sequence[Sequence[float]] | None = None,
        warmup_steps: int = 0,
        *,
        total_steps: int | None = None,
        stages_in: StageUnit | str = StageUnit.EPOCHS,
        restart_warmup_steps: int = 0,
    ) -> None:
        where = "StagedCosine"
        self.base_lr = check_real(where, "base_lr", base_lr, "e.g. base_lr=2e-4", positive=True)
        self.stages_in = _member(StageUnit, stages_in, where, "stages_in", "count stage starts in epochs or steps")
        if (total_epochs is None) == (total_steps is None):
            expected = "given, or else total_steps (exactly one: the length of training)"
            fix = "e.g. total_epochs=50 with steps_per_epoch=1000, or total_steps=50000"
            raise fail(where, "total_epochs", expected, (total_epochs, total_steps), fix)
        if steps_per_epoch is None and (total_epochs is not None or self.stages_in is StageUnit.EPOCHS):
            why = "total_epochs" if total_epochs is not None else "stages in epochs"
            fix = "pass steps_per_epoch, or stages_in='steps' with total_steps"
            raise fail(where, "steps_per_epoch", f"an int >= 1 (needed to count {why} in steps)", None, fix)
        if steps_per_epoch is not None:
            steps_per_epoch = check_int(where, "steps_per_epoch", steps_per_epoch, 1, "e.g. steps_per_epoch=1000")
        self.steps_per_epoch, self.total_epochs = steps_per_epoch, total_epochs
        if total_epochs is not None:
            self.total_epochs = check_int(where, "total_epochs", total_epochs, 1, "the run's --epochs, e.g. 50")
            total_steps = self.total_epochs * steps_per_epoch
        self.total_steps = check_int(where, "total_steps", total_steps, 1, "optimizer steps of the run, e.g. 5000")
        if stages is None and self.stages_in is StageUnit.STEPS:
            fix = "e.g. stages=((0, 1.0, 0.1), (500, 1.0, 0.05)) with stages_in='steps'"
            raise fail(where, "stages", "stages in steps (the default stages count epochs)", None, fix)
        self.stages = _check_stages(SEED_STAGES if stages is None else stages, self.stages_in)
        self.warmup_steps = check_int(where, "warmup_steps", warmup_steps, 0, "e.g. warmup_steps=0 (none)")
        fix = "e.g. restart_warmup_steps=0 (restart at peak)"
        self.restart_warmup_steps = check_int(where, "restart_warmup_steps", restart_warmup_steps, 0, fix)
        self._unit = 1 if self.stages_in is StageUnit.STEPS else self.steps_per_epoch
        u, kept = self._unit, [s for s in self.stages if s[0] * self._unit < self.total_steps]
        self._layout = [  # each stage as the cycle it starts (at peak, no warmup)
            _Cycle(start * u, start * u, kept[k + 1][0] * u if k + 1 < len(kept) else self.total_steps, peak, low)
            for k, (start, peak, low) in enumerate(kept)
        ]
        if self.warmup_steps >= self._layout[0].end:
            expected = f"shorter than the first stage ({self._layout[0].end} steps)"
            raise fail(where, "warmup_steps", expected, warmup_steps, "lower it or start the second stage later")
        self._starts = [st.start for st in self._layout]
        self._stage_at_start = {st.start: k for k, st in enumerate(self._layout) if k > 0}
        self._cycle = self._stage_cycle(0)
        super().__init__(optimizer)

    # -- layout ----------------------------------------------------------------------------------

    def _stage_index(self, step: int) -> int:
        """The stage containing ``step``; the last stage past the end of training."""
        return bisect.bisect_right(self._starts, step) - 1

    def _stage_cycle(self, k: int) -> _Cycle:
        """The cycle stage ``k`` starts (the first stage's after the warmup)."""
        start = self._layout[k].start
        return self._cycle_at(start, start + (self.warmup_steps if k == 0 else 0))

    def _cycle_at(self, warm: int, start: int) -> _Cycle:
        """A cycle ramping from ``warm``, at peak on ``start``, to the end of ``warm``'s stage."""
        st = self._layout[self._stage_index(warm)]
        return _Cycle(warm, start, max(st.end, start + 1), st.peak, st.min)

    def _compute(self, s: int) -> float:
        warm, start, end, peak, low = self._cycle
        if s < start:  # warmup
            return self.base_lr * peak * (s - warm + 1) / (start - warm + 1)
        i, n = s - start, end - start
        if i == 0:
            return self.base_lr * peak
        if i >= n:  # past the end of training
            return self.base_lr * low
        return self.base_lr * (low + (peak - low) * 0.5 * (1.0 + math.cos(math.pi * i / n)))

    # -- the loop's calls --------------------------------------------------------------------------

    def _advance(self, nxt: int) -> None:
        k = self._stage_at_start.get(nxt)
        if k is not None:  # a new stage starts a new cycle
            self._cycle = self._stage_cycle(k)
        elif nxt == self.total_steps:
            # The first step after the end of training runs only if the run grows on resume. When a
            # declared stage starts exactly there, a longer run would start it at peak: do the same,
            # so extending a run at a stage boundary is bit-identical to having planned it longer.
            declared = [st for st in self.stages if st[0] * self._unit == nxt]
            if declared:
                self._cycle = _Cycle(nxt, nxt, nxt + 1, declared[0][1], declared[0][2])

    def restart(self) -> tuple[float, float]:
        """Start a new cycle from the step about to run (at peak, or ramping with ``restart_warmup_steps``);
        returns the LR (before, after)."""
        before, s = self.lr, self.last_epoch
        self._cycle = self._cycle_at(s, s + self.restart_warmup_steps)
        self._set_now()
        logger.info("LR restart at step %d: %.3e -> %.3e", s, before, self.lr)
        return before, self.lr

    @property
    def peak_lr(self) -> float:
        """``base_lr`` times the peak of the stage of the step about to run: where a restart's cycle peaks."""
        return self.base_lr * self._layout[self._stage_index(self.last_epoch)].peak

    @property
    def restart_lr(self) -> float:
        """The LR a restart now sets for the step about to run: ``peak_lr``, or its first ramp step."""
        return self.peak_lr / (self.restart_warmup_steps + 1)

    # -- state -----------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        warm, start, end, peak, low = self._cycle
        state = {
            "step": self.last_epoch,
            "cycle_start": start,
            "cycle_len": end - start,
            "peak": peak,
            "min": low,
            "lr": self.lr,
            "base_lr": self.base_lr,
            "steps_per_epoch": self.steps_per_epoch,
            "total_epochs": self.total_epochs,
        }
        # Only what the first release's layout cannot say, so an unchanged run's state stays the same dict.
        if self.last_epoch < start and warm != 0:  # inside a re-warmup
            state["warmup_start"] = warm
        if self.total_epochs is None:
            state["total_steps"] = self.total_steps
        return state

    def load_state_dict(self, state: dict) -> None:
        """Continue from a ``state_dict()``; call it after ``optimizer.load_state_dict``."""
        step, start = self._load_step(state), self._load_step(state, "cycle_start")
        # Without "warmup_start" a cycle ahead of the step is the first stage's warmup, ramping from
        # step 0; a cycle under way ramps no more, so where its ramp began does not matter.
        warm = self._load_step(state, "warmup_start") if "warmup_start" in state else 0 if step < start else start
        k = self._stage_index(step)
        if not self._layout[k].start <= warm <= step:
            # With this layout a new stage began after the saved cycle: its own cycle is in progress.
            self._cycle = self._stage_cycle(k)
        else:
            self._cycle = self._cycle_at(warm, start)
        self.last_epoch = step
        self._step_count = step + 1
        self._set_now()
        saved_total = state.get("total_steps") or (state.get("steps_per_epoch") or 0) * (state.get("total_epochs") or 0)
        saved = {"base_lr": state.get("base_lr"), "total_steps": saved_total or None}
        self._moved(state, saved, {"base_lr": self.base_lr, "total_steps": self.total_steps})

    def __repr__(self) -> str:
        parts = [
            f"base_lr={self.base_lr!r}",
            self.steps_per_epoch is not None and f"steps_per_epoch={self.steps_per_epoch}",
            f"total_epochs={self.total_epochs}" if self.total_epochs is not None else f"total_steps={self.total_steps}",
            f"stages={self.stages!r}",
            self.stages_in is StageUnit.STEPS and "stages_in='steps'",
            f"warmup_steps={self.warmup_steps}",
            self.restart_warmup_steps and f"restart_warmup_steps={self.restart_warmup_steps}",
        ]
        return f"StagedCosine({', '.join(p for p in parts if p)})"


def _check_stages(stages: Any, unit: StageUnit) -> tuple[tuple[int, float, float], ...]:
    where, name = "StagedCosine", f"start_{unit.value[:-1]}"
    fix = f"e.g. stages=((0, 1.0, 0.1), ({2 if unit is StageUnit.EPOCHS else 500}, 1.0, 0.05)) in {unit.value}"
    if isinstance(stages, (str, bytes)) or not isinstance(stages, Sequence) or not stages:
        raise fail(where, "stages", f"a non-empty sequence of ({name}, peak, min)", stages, fix)
    out: list[tuple[int, float, float]] = []
    for i, stage in enumerate(stages):
        if isinstance(stage, (str, bytes)) or not isinstance(stage, Sequence) or len(stage) != 3:
            raise fail(where, f"stages[{i}]", f"a ({name}, peak, min) triple", stage, fix)
        start = check_int(where, f"stages[{i}][0] ({name.replace('_', ' ')})", stage[0], 0, fix)
        peak = check_real(where, f"stages[{i}][1] (peak multiplier)", stage[1], fix, positive=True)
        low = check_real(where, f"stages[{i}][2] (min multiplier)", stage[2], fix, nonnegative=True)
        if low > peak:
            raise fail(where, f"stages[{i}]", "min <= peak", tuple(stage), f"swap them: ({start}, {low}, {peak})")
        if (start != 0) if not out else (start <= out[-1][0]):
            expected = f"> {out[-1][0]} (starts strictly increasing)" if out else "0 (the first stage starts training)"
            raise fail(where, f"stages[{i}][0]", expected, start, f"sort the stages by {name}, the first at 0")
        out.append((start, peak, low))
    return tuple(out)


# Param-group entries torch's schedulers write (OneCycleLR and CyclicLR cycle the momentum too).
_SCHEDULED_KEYS = ("lr", "initial_lr", "momentum", "betas")

# The field that holds the length of each torch schedule that Restartable(over="remaining") can re-plan.
_LENGTHS = {
    "CosineAnnealingLR": "T_max",
    "LinearLR": "total_iters",
    "PolynomialLR": "total_iters",
    "OneCycleLR": "total_steps",
}


class Over(str, enum.Enum):
    """What a restart of :class:`Restartable` replays: the wrapped schedule as built,
    or re-planned over the steps left."""

    WHOLE = "whole"
    REMAINING = "remaining"


#: The length of a LambdaLR whose factors are ``functools.partial``s of a schedule function taking it, as the Hugging
#: Face schedules are (``get_linear_schedule_with_warmup``, ..., the Trainer's own).
_LAMBDA_LENGTH = "num_training_steps"


def _length_field(scheduler: Any) -> str | None:
    for cls in type(scheduler).__mro__:
        if cls.__name__ in _LENGTHS and cls.__module__.startswith("torch.optim"):
            return _LENGTHS[cls.__name__]
    factors = getattr(scheduler, "lr_lambdas", None)
    if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR) and all(
        isinstance(f, functools.partial) and _LAMBDA_LENGTH in f.keywords for f in factors
    ):
        return _LAMBDA_LENGTH
    return None


def _replanned(state: dict, field: str, steps: int) -> dict:
    """A torch scheduler's step-0 ``state`` re-planned to run over ``steps`` steps (``field`` holds its length)."""
    state = copy.deepcopy(state)
    length = state[field]
    state[field] = steps
    if field == "total_steps":  # OneCycleLR: its phases end at fractions of the length (torch's own formulas)
        phases = state["_schedule_phases"]
        pct = (phases[0]["end_step"] + 1) / length
        phases[0]["end_step"] = float(pct * steps) - 1
        if len(phases) == 3:
            phases[1]["end_step"] = float(2 * pct * steps) - 2
        phases[-1]["end_step"] = steps - 1
    return state


class Restartable(LRScheduler):
    """Any torch LR scheduler, made restartable: ``RestartLR`` can then restart it.

    Wrap it right after building it (``Restartable(CosineAnnealingLR(optimizer, T_max=100))``) and
    register and step the wrapper in its place. See docs/reference.md, and docs/integrations.md for ``over``.
    """

    def __init__(self, scheduler: Any, *, over: Over | str = Over.WHOLE) -> None:
        _check_wrappable(scheduler)
        if scheduler.last_epoch != 0:
            got = f"{type(scheduler).__name__} at step {scheduler.last_epoch}"
            fix = "wrap it right after building it; to resume, wrap a fresh one and load_state_dict() the wrapper"
            raise fail("Restartable", "scheduler", "a scheduler at its step 0 (not stepped yet)", got, fix)
        self._adopt(scheduler, over)
        self._origin = self._snapshot()

    def _adopt(self, scheduler: Any, over: Over | str) -> None:
        fix = "over='remaining' re-plans the schedule over the steps left at each restart"
        self.over = _member(Over, over, "Restartable", "over", fix)
        self._length = _length_field(scheduler)
        if self.over is Over.REMAINING and self._length is None:
            fix = f"re-planning needs a length ({', '.join(sorted(_LENGTHS))}); use over='whole' or StagedCosine"
            got = f"'remaining' with {type(scheduler).__name__}"
            raise fail("Restartable", "over", "'whole' for this scheduler", got, fix)
        self.scheduler = scheduler
        self._factors = list(getattr(scheduler, "lr_lambdas", ()))  # a LambdaLR's, as built (its state has none)
        self._cycle_start = 0  # the step at which the wrapped schedule's step 0 ran last
        super().__init__(scheduler.optimizer)  # torch's own set-up: base_lrs, and one step() to step 0 (below)

    @classmethod
    def around(cls, scheduler: Any, state: dict | None = None, *, over: Over | str = Over.WHOLE) -> "Restartable":
        """Wrap a scheduler a framework steps itself (at its step 0, or restored by the framework with ``state``
        from this wrapper's ``state_dict()``): the frameworks' callbacks use it."""
        _check_wrappable(scheduler)
        if state is None and scheduler.last_epoch != 0:
            expected = "the wrapper's state_dict() for a scheduler past its step 0"
            raise fail("Restartable.around", "state", expected, None, "pass the state saved with the checkpoint")
        if state is None:
            return cls(scheduler, over=over)
        self = cls.__new__(cls)
        self._adopt(scheduler, over)
        self._load_own(state)
        return self

    def _snapshot(self) -> dict:
        groups = [{k: g[k] for k in _SCHEDULED_KEYS if k in g} for g in self.optimizer.param_groups]
        return copy.deepcopy({"scheduler": self.scheduler.state_dict(), "groups": groups})

    @property
    def steps_done(self) -> int:
        """Optimizer steps completed, restarts or not: the 0-based index of the step about to run."""
        return self._cycle_start + self.scheduler.last_epoch

    def step(self, epoch: None = None) -> None:
        """After ``optimizer.step()``: step the wrapped scheduler."""
        if epoch is not None:
            raise CurriculumError(
                f"Restartable.step(epoch={epoch!r}): call step() with no argument after each optimizer.step()"
            )
        if self._step_count:  # 0: torch's __init__ makes the first call, the wrapped scheduler is at step 0 already
            self.scheduler.step()
        super().step()  # torch's bookkeeping; get_lr() hands it the LRs the wrapped scheduler just set

    def get_lr(self) -> list[float]:
        return list(self.scheduler.get_last_lr())

    get_last_lr = get_lr

    def restart(self) -> tuple[float, float]:
        """Run the wrapped schedule again from its step 0 (re-planned with ``over="remaining"``),
        at the step about to run; returns the LR (before, after)."""
        before, step = self.lr, self.steps_done
        origin = copy.deepcopy(self._origin)
        state = origin["scheduler"]
        if self.over is Over.REMAINING and self._length != _LAMBDA_LENGTH:
            state = _replanned(state, self._length, max(1, state[self._length] - step))
        self.scheduler.load_state_dict(state)
        self._cycle_start = step
        self._replan_factors()
        for group, saved in zip(self.optimizer.param_groups, origin["groups"]):
            for key, value in saved.items():
                if isinstance(group.get(key), torch.Tensor):
                    group[key].copy_(value)
                else:
                    group[key] = value
        self.last_epoch = step  # torch's public step count
        logger.info("LR restart of %s at step %d: %.3e -> %.3e", type(self.scheduler).__name__, step, before, self.lr)
        return before, self.lr

    @staticmethod
    def replannable(scheduler: Any) -> bool:
        """Whether ``over="remaining"`` can re-plan this scheduler (it has a length)."""
        return _length_field(scheduler) is not None

    @property
    def restart_lr(self) -> float:
        """The LR of the wrapped schedule's step 0 (first param group): what a restart sets."""
        return float(self._origin["groups"][0]["lr"])

    @property
    def peak_lr(self) -> float:
        """The schedule's peak LR (first param group): OneCycleLR's and CyclicLR's max_lr, else ``restart_lr``."""
        group = self.optimizer.param_groups[0]
        if "max_lr" in group and _length_field(self.scheduler) == "total_steps":  # OneCycleLR keeps it in the group
            return float(group["max_lr"])
        max_lrs = getattr(self.scheduler, "max_lrs", None)  # CyclicLR
        if isinstance(max_lrs, (list, tuple)) and max_lrs:
            return float(max_lrs[0])
        return self.restart_lr

    @property
    def lr(self) -> float:
        """The LR of the step about to run (first param group)."""
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict:
        return {
            "scheduler": self.scheduler.state_dict(),
            "origin": copy.deepcopy(self._origin),
            "step": self.steps_done,
            "cycle_start": self._cycle_start,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from a ``state_dict()``; call it after ``optimizer.load_state_dict``."""
        _check_state(state)
        self.scheduler.load_state_dict(state["scheduler"])
        self._load_own(state)

    def _load_own(self, state: dict) -> None:
        _check_state(state)
        self._origin = copy.deepcopy(state["origin"])
        self._cycle_start = int(state["cycle_start"])
        self._replan_factors()
        self.last_epoch = self.steps_done  # torch's public step count

    def _replan_factors(self) -> None:
        """A LambdaLR re-planned over the steps left since the last restart: its factors with that length."""
        if self.over is Over.REMAINING and self._length == _LAMBDA_LENGTH and self._cycle_start > 0:
            self.scheduler.lr_lambdas = [
                functools.partial(
                    f.func,
                    *f.args,
                    **{**f.keywords, _LAMBDA_LENGTH: max(1, f.keywords[_LAMBDA_LENGTH] - self._cycle_start)},
                )
                for f in self._factors
            ]

    def __repr__(self) -> str:
        over = "" if self.over is Over.WHOLE else f", over={self.over.value!r}"
        return f"Restartable({type(self.scheduler).__name__}{over})"


def _check_wrappable(scheduler: Any) -> None:
    where, expected = "Restartable", "a torch.optim.lr_scheduler.LRScheduler"
    if isinstance(scheduler, Restartable):
        raise fail(where, "scheduler", expected, scheduler, "it is already Restartable: register it as it is")
    if isinstance(scheduler, ReduceLROnPlateau):
        fix = "ReduceLROnPlateau follows a metric and has nothing to restart; use a step-indexed torch scheduler"
        raise fail(where, "scheduler", "a scheduler with a schedule over steps", type(scheduler).__name__, fix)
    if not isinstance(scheduler, LRScheduler):
        raise fail(where, "scheduler", expected, scheduler, "e.g. Restartable(CosineAnnealingLR(optimizer, T_max=100))")


def _check_state(state: Any) -> None:
    if not isinstance(state, dict) or not {"scheduler", "origin", "step", "cycle_start"} <= set(state):
        got = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise CurriculumError(
            f"Restartable.load_state_dict: expected the dict from Restartable.state_dict() "
            f"(keys scheduler, origin, step, cycle_start), got {got}; "
            "a bare scheduler's state loads into the scheduler itself"
        )
