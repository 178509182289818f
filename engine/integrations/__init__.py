"""The engine in the training loops people already run.

- :mod:`engine.integrations.hf`: ``CurriculumCallback`` for the Hugging Face ``Trainer``
  (``pip install "curriculum-engine[hf]"``).
- :mod:`engine.integrations.lightning`: ``CurriculumCallback`` for Lightning
  (``pip install "curriculum-engine[lightning]"``).
- :mod:`engine.integrations.dcp`: ``EngineState``, the engine as a ``Stateful`` for
  ``torch.distributed.checkpoint`` (FSDP2 runs).

Each framework is imported only by its own module, so ``import engine.integrations`` needs
neither. What both share lives here: the live view of the current phase's ``params`` and the
binding of the framework's objects.
"""

from __future__ import annotations

import numbers
import random
from typing import Any, Iterator, Mapping

from engine.core import CurriculumError
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


def check_flag(value: Any, name: str = "allow_fingerprint_mismatch") -> bool:
    if not isinstance(value, bool):
        raise CurriculumError(f"CurriculumCallback: {name!r} must be a bool, got {value!r}; e.g. {name}=True")
    return value


#: ``restart_over``'s values: replay the framework's schedule whole from each restart, or re-plan it
#: over the steps left (see ``policies.Restartable``).
RESTART_OVER = ("whole", "remaining")


def check_restart_over(value: Any) -> str:
    if value not in RESTART_OVER:
        raise CurriculumError(
            f"CurriculumCallback: 'restart_over' must be 'whole' or 'remaining', got {value!r}; "
            "restart_over='remaining' re-plans the framework's schedule over the steps left at each restart"
        )
    return str(value)


def framework_schedule(engine: CurriculumEngine, scheduler: Any, saved: dict | None, fresh: bool, over: str) -> Any:
    """What to register as ``schedule``: the framework's own scheduler as the curriculum's actions need
    it. An action that needs more of it than the framework gives (``RestartLR``: a schedule that can
    restart) says so with ``adapt_schedule(scheduler, saved=, fresh=, over=)``, which returns the
    schedule to register; ``saved`` is the state of what it returned before (None in a fresh run or
    a checkpoint without it). Without such an action, the scheduler as it is."""
    if scheduler is None:
        return scheduler
    actions = [a for p in engine.curriculum.phases for a in p.on_enter]
    actions += [a for t in engine.curriculum.transitions for a in t.actions]
    adapt = next((a.adapt_schedule for a in actions if callable(getattr(a, "adapt_schedule", None))), None)
    return scheduler if adapt is None else adapt(scheduler, saved=saved, fresh=fresh, over=over)


def bind(engine: CurriculumEngine, **objects: Any) -> None:
    """Register the framework's objects (the one place an integration registers anything)."""
    engine.bind(**{name: obj for name, obj in objects.items() if obj is not None})


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
