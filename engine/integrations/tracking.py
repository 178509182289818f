"""What the framework callbacks log about the curriculum, for TensorBoard, W&B, MLflow, CSV loggers.

The values (``curriculum/phase``, ``curriculum/in/<phase>``, each numeric param, ``curriculum/transitions``,
``curriculum/last_transition_step``, ``curriculum/next/<dest>/<Guard>/<key>``; the text
``curriculum/phase_name`` and ``curriculum/transition`` when they change) and when each framework logs
them are in docs/observability.md, "The curriculum in the frameworks' loggers".
"""

from __future__ import annotations

import logging
import numbers
import sys
from typing import Any, Sequence

from engine.history import Record
from engine.progress import UNSAFE, guard_progress
from engine.runtime import CurriculumEngine

__all__ = ["PREFIX", "phase_metrics", "transition_text", "curriculum_logs"]

logger = logging.getLogger(__name__)

PREFIX = "curriculum/"


def _moves(history: Sequence[Record]) -> list[Record]:
    return [r for r in history if r.source is not None]


def phase_metrics(engine: CurriculumEngine) -> dict[str, float]:
    """The numbers to log at any step: phase index, numeric params, transitions so far, last one's step."""
    phase = engine.phase
    names = [p.name for p in engine.curriculum.phases]
    moves = _moves(engine.history)
    out = {f"{PREFIX}phase": float(names.index(phase.name))}
    for name in names:
        out[f"{PREFIX}in/{UNSAFE.sub('_', name)}"] = float(name == phase.name)
    for key, value in phase.params.items():
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            out[PREFIX + UNSAFE.sub("_", str(key))] = float(value)
    out[f"{PREFIX}transitions"] = float(len(moves))
    out[f"{PREFIX}last_transition_step"] = float(moves[-1].global_step if moves else 0)
    out.update({PREFIX + tag: value for tag, value in guard_progress(engine).items()})
    return out


def transition_text(record: Record) -> str:
    """``a -> b at step 150 (epoch 3, epoch_end), decided by Plateau(...)`` (a manual one: its reason)."""
    text = f"{record.source} -> {record.dest} at step {record.global_step} (epoch {record.epoch}, {record.point})"
    if record.decision is not None:
        return f"{text}, decided by {' and '.join(record.decision.decided_by)}"
    if record.reason:
        return f"{text}, by hand: {record.reason}"
    return text


def curriculum_logs(engine: CurriculumEngine, since: int | None) -> tuple[dict[str, Any], int]:
    """``(values to log, cursor)``: :func:`phase_metrics`, and the text of what changed after
    history record ``since``: the cursor the previous call returned, or None at a run's (or a
    resumed run's) first log, which logs the phase name and no transition. Pass the returned
    cursor to the next call."""
    history = engine.history
    out: dict[str, Any] = dict(phase_metrics(engine))
    new = _moves(history[since:]) if since is not None else []
    if since is None or new:
        out[f"{PREFIX}phase_name"] = engine.phase.name
    if new:
        out[f"{PREFIX}transition"] = "; ".join(transition_text(r) for r in new)
    return out, len(history)


def calling_handler() -> Any:
    """``self`` of the frame two up: the HF Trainer's ``CallbackHandler`` when its ``call_event`` called
    the hook that calls this (the Trainer hands its callbacks no handle to it). None where that frame
    is missing, or the interpreter has no ``sys._getframe``."""
    try:
        return sys._getframe(2).f_locals.get("self")
    except (AttributeError, ValueError):
        return None


def report_before_loggers(callback: Any, handler: Any) -> None:
    """HF: move ``callback`` in the Trainer's ``handler`` to just before the first ``report_to`` callback,
    so that the values it adds to ``logs`` in ``on_log`` reach them (the Trainer calls its callbacks in
    order, reporters before the user's). Anything else than a handler holding it: a warning."""
    from transformers.integrations import INTEGRATION_TO_CALLBACK
    from transformers.trainer_callback import CallbackHandler

    if not isinstance(handler, CallbackHandler) or not any(c is callback for c in handler.callbacks):
        logger.warning(
            "CurriculumCallback: could not find the Trainer's callbacks; the report_to loggers called before "
            "it will not log the curriculum (pass report_to='none' and their callbacks after this one)"
        )
        return
    reporters = tuple(c for c in INTEGRATION_TO_CALLBACK.values() if isinstance(c, type))
    callbacks = handler.callbacks
    mine = next(i for i, c in enumerate(callbacks) if c is callback)
    first = next((i for i, c in enumerate(callbacks) if isinstance(c, reporters)), None)
    if first is not None and first < mine:
        callbacks.insert(first, callbacks.pop(mine))


def log_to_lightning(trainer: Any, engine: CurriculumEngine, record: Record | None, step: int) -> None:
    """Lightning: :func:`phase_metrics` to ``trainer.loggers`` at ``step`` every ``log_every_n_steps`` steps and
    with ``record`` (a transition just taken), whose text goes to the loggers that take text. Not through
    ``pl_module.log``: the values would land in ``callback_metrics``, which the callback feeds to ``epoch_end``."""
    every = max(int(getattr(trainer, "log_every_n_steps", 1) or 1), 1)
    if record is None and (step + 1) % every:
        return
    values = phase_metrics(engine)
    for target in trainer.loggers:
        target.log_metrics(values, step=step)
    if record is None:
        return
    text = transition_text(record)
    for target in trainer.loggers:
        writer = getattr(target, "experiment", None)
        if callable(getattr(writer, "add_text", None)):
            writer.add_text(f"{PREFIX}transition", text, step)
            writer.add_text(f"{PREFIX}phase_name", engine.phase.name, step)
    logger.info("curriculum: %s", text)
