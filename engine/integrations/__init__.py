"""The engine in the training loops people already run: :mod:`engine.integrations.hf` (the Hugging Face
``Trainer``), :mod:`engine.integrations.lightning`, and :mod:`engine.integrations.dcp` (the engine as a
``Stateful`` for ``torch.distributed.checkpoint``). Each framework is imported only by its own module,
so ``import engine.integrations`` needs neither. What the callbacks share lives here.
"""

from __future__ import annotations

import numbers
import random
from typing import Any, Iterator, Mapping

from engine.core import CurriculumError
from engine.history import Record
from engine.runtime import CurriculumEngine

__all__ = ["PhaseParams"]


class PhaseParams(Mapping[str, Any]):
    """A read-only, live view of the current phase's ``params``: hand it to a collator or dataset.

    ``params["seq_len"]`` always reads the phase the engine is in at the moment of the call, so an
    object that keeps this view sees each transition without being told.
    """

    __slots__ = ("_engine", "reads")

    def __init__(self, engine: CurriculumEngine) -> None:
        self._engine = engine
        self.reads = 0  # how many times a param was read: the callbacks tell a collator's reads from their own

    def __getitem__(self, key: str) -> Any:
        self.reads += 1
        params = self._engine.phase.params
        if key not in params:
            raise KeyError(
                f"phase {self._engine.phase.name!r} has no param {key!r} (its params: {sorted(params)}); "
                f"declare it in every phase, e.g. Phase(..., params={{{key!r}: ...}}), "
                f"or read it with .get({key!r}, default)"
            )
        return params[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._engine.phase.params)

    def __len__(self) -> int:
        return len(self._engine.phase.params)

    @property
    def phase(self) -> str:
        """The name of the current phase."""
        return self._engine.phase.name

    def __repr__(self) -> str:
        return f"PhaseParams({self.phase!r}: {dict(self._engine.phase.params)!r})"


def check_engine(engine: Any, where: str) -> CurriculumEngine:
    if not isinstance(engine, CurriculumEngine):
        raise CurriculumError(
            f"{where}: 'engine' must be a CurriculumEngine, got {type(engine).__name__}; "
            f"build one from your curriculum: {where}(CurriculumEngine(curriculum))"
        )
    return engine


def check_flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise CurriculumError(
            f"{where}: 'allow_fingerprint_mismatch' must be a bool, got {value!r}; e.g. allow_fingerprint_mismatch=True"
        )
    return value


class FrameworkCallback:
    """What the Hugging Face and Lightning callbacks share: their options, checked once, the binding of the
    framework's objects, and the engine's start or restore when training begins (docs/integrations.md)."""

    def __init__(self, engine: CurriculumEngine, allow_fingerprint_mismatch: bool, restart_over: str) -> None:
        self.engine = check_engine(engine, "CurriculumCallback")
        self.allow_fingerprint_mismatch = check_flag(allow_fingerprint_mismatch, "CurriculumCallback")
        if restart_over not in ("whole", "remaining"):
            raise CurriculumError(
                f"CurriculumCallback: 'restart_over' must be 'whole' or 'remaining', got {restart_over!r}; "
                "restart_over='remaining' re-plans the framework's schedule over the steps left at each restart"
            )
        self.restart_over = restart_over
        self.params = PhaseParams(engine)
        self._wrapped: Any = None  # the framework's own scheduler made restartable, whose state the callback keeps

    def _bind(self, model: Any, optimizer: Any, scheduler: Any, saved: dict | None, fresh: bool) -> None:
        """Register the framework's objects (the one place an integration registers anything), the scheduler
        as the curriculum's actions need it: an action that needs more of it than the framework gives
        (``RestartLR``: a schedule that can restart) says so with ``adapt_schedule(scheduler, saved=, fresh=,
        over=)``, which returns the schedule to register; ``saved`` is the state of what it returned before."""
        actions = [a for p in self.engine.curriculum.phases for a in p.on_enter]
        actions += [a for t in self.engine.curriculum.transitions for a in t.actions]
        adapt = next((a.adapt_schedule for a in actions if callable(getattr(a, "adapt_schedule", None))), None)
        schedule = scheduler
        if scheduler is not None and adapt is not None:
            schedule = adapt(scheduler, saved=saved, fresh=fresh, over=self.restart_over)
        self._wrapped = schedule if schedule is not scheduler else None
        objects = {"model": model, "optimizer": optimizer, "schedule": schedule}
        self.engine.bind(**{name: obj for name, obj in objects.items() if obj is not None})

    def _start_or_restore(self, saved: dict | None, step: int, by: str, missing: str) -> bool:
        """Start the engine (a fresh run), or load ``saved``: its state in the checkpoint ``by`` (the framework)
        resumed at ``step``, which must be the step the state is at. True when it restored."""
        if saved is None:
            if step > 0:
                raise CurriculumError(
                    f"CurriculumCallback: {by} resumed at step {step} from a checkpoint without engine state "
                    f"({missing}); resume from a checkpoint written with this callback, or start the engine yourself "
                    "before training: engine.start(phase=..., global_step=..., epoch=...) and leave the callback out"
                )
            self.engine.start()
            return False
        self.engine.load_state_dict(saved, allow_fingerprint_mismatch=self.allow_fingerprint_mismatch)
        if self.engine.clock.global_step != step:
            raise CurriculumError(
                f"CurriculumCallback: the checkpoint's engine state is at step {self.engine.clock.global_step} but "
                f"{by} resumed at step {step}; resume from the checkpoint this callback wrote that state to"
            )
        return True

    def _missed_epoch_end(self, metrics: Mapping[str, float], where: str, fix: str) -> Record | None:
        """The epoch end a resumed run makes at train begin, which the framework skips: the checkpoint was
        written after the epoch's last step and before its end. A guard reading a metric the checkpoint
        lacks is a CurriculumError saying ``where`` the run resumed from and the ``fix``."""
        try:
            return self.engine.epoch_end(**metrics)
        except CurriculumError as exc:
            raise CurriculumError(f"CurriculumCallback: resumed from {where} ({exc}); {fix}") from exc


def real_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The metrics that are real numbers (one-element tensors included), as floats; the rest dropped."""
    out = {}
    for name, value in metrics.items():
        if hasattr(value, "numel") and value.numel() == 1:
            value = value.item()
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            out[str(name)] = float(value)
    return out


def random_state() -> dict:
    """The process's random state (torch, CUDA, Python's ``random``, numpy's global generator): what a shuffling
    sampler, dropout, an augmentation and the frameworks' loaders draw from."""
    import numpy as np
    import torch

    python = random.getstate()
    state = {"torch": torch.get_rng_state(), "python": list(python[1]), "python_pos": python[2]}
    _, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    state["numpy"] = [keys.tolist(), pos, has_gauss, gauss]  # plain values: a checkpoint loads weights-only
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_random_state(state: dict) -> None:
    """Put back a :func:`random_state`."""
    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(int(x) for x in state["python"]), state["python_pos"]))
    if "numpy" in state:  # a checkpoint of an earlier release has none
        keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state(("MT19937", np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
