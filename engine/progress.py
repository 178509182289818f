"""How close the next transition is: the guards' numeric evidence, at any moment of a run.

:func:`guard_progress` reads it from an engine now (the framework callbacks log it as
``curriculum/next/...``); :func:`progress_series` replays a recorded run to give it per step (what
:func:`engine.plot.plot_run` draws).
"""

from __future__ import annotations

import math
import numbers
import re

from engine.core import Context, Curriculum, guard_leaves
from engine.recording import MetricLog
from engine.runtime import CurriculumEngine

__all__ = ["guard_progress", "progress_series"]

UNSAFE = re.compile(r"[^A-Za-z0-9_.\- ]")  # MLflow's rule for metric names, "/" aside


def guard_progress(engine: CurriculumEngine) -> dict[str, float]:
    """Each guard's numeric evidence for the transitions out of the current phase, as
    ``next/<dest>/<Guard>/<key>`` (``<Guard>_2`` for a second of one class). Guards that decide on a
    metric passed at their point (``MetricBelow``) are left out: between points it has no value."""
    out: dict[str, float] = {}
    phase = engine.phase.name
    for transition in engine.curriculum.transitions:
        if transition.source != phase:
            continue
        ctx = Context(clock=engine.clock, history=engine.history, transition=transition)
        seen: dict[str, int] = {}
        for guard in (leaf for top in transition.guards for leaf in guard_leaves(top)):
            evidence = getattr(guard, "evidence", None)
            if not callable(evidence) or (getattr(guard, "metrics", ()) and not hasattr(guard, "observe")):
                continue
            name = type(guard).__name__
            seen[name] = seen.get(name, 0) + 1
            tag = f"next/{UNSAFE.sub('_', transition.dest)}/{name}" + (f"_{seen[name]}" if seen[name] > 1 else "")
            for key, value in evidence(ctx).items():
                if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value):
                    out[f"{tag}/{UNSAFE.sub('_', str(key))}"] = float(value)
    return out


def progress_series(curriculum: Curriculum, log: MetricLog) -> dict[str, tuple[list[int], list[float]]]:
    """``{tag: (steps, values)}``: :func:`guard_progress` after each recorded ``step_end``, the
    recorded stream replayed through ``curriculum`` (fresh guards, no action run; as
    :func:`engine.replay`, faithful up to the first decision that differs from the run)."""
    from engine.replay import _dry

    engine = CurriculumEngine(_dry(curriculum, copy_guards=True))
    engine.start()
    series: dict[str, tuple[list[int], list[float]]] = {}
    for point, values in log:
        if point != "step_end":
            engine.epoch_end(**values)
            continue
        values = dict(values)
        engine.step_end(values.pop("loss"), **values)
        for tag, value in guard_progress(engine).items():
            steps, got = series.setdefault(tag, ([], []))
            steps.append(engine.clock.global_step)
            got.append(value)
    return series
