"""A run's picture from its engine state: loss with transition markers, LR, and the phase params.

    plot_run(engine, "run.png")                # an engine built with record_metrics=True
    plot_run(state_dict, "run.png")            # or its saved state (python -m engine plot PATH --out run.png)

The loss and LR (``lr`` when the loop passed it) come from the recorded metrics, the transitions
from the history, the phase params from the curriculum spec kept in the state (docs/observability.md).
matplotlib (the ``plot`` extra) is imported only when a plot is drawn.
"""

from __future__ import annotations

import bisect
import itertools
import numbers
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

from engine.core import Curriculum, CurriculumError
from engine.files import atomic_write
from engine.grid import recorded_run
from engine.history import Record
from engine.progress import progress_series
from engine.recording import MetricLog
from engine.runtime import CurriculumEngine

__all__ = ["plot_run", "draw_run", "plot_target", "pyplot", "IMAGE_SUFFIXES"]

#: The image formats a plot is written in, by the output's suffix.
IMAGE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")

_EPOCH_METRIC = re.compile(r"loss|bpb|acc|ppl|perplexity|error|f1", re.IGNORECASE)
_NOT_A_MEASURE = re.compile(r"runtime|per_second|samples|steps|epoch", re.IGNORECASE)


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the file-only Agg backend; without matplotlib, one error naming the extra."""
    try:
        import matplotlib
    except ModuleNotFoundError as exc:
        if exc.name != "matplotlib":
            raise
        raise CurriculumError(
            'plotting needs matplotlib, which is not installed; install it with: pip install "curriculum-engine[plot]"'
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_target(out: str | Path, default_name: str) -> Path:
    """Where a plot asked for at ``--out out`` is written, checked before anything is drawn: in a
    folder, ``default_name``; without a suffix, ``.png``. Refused (a :class:`CurriculumError` naming
    the fix): a suffix that is no image format, a missing or unwritable folder, a path that exists
    and is not a regular file. An existing file is the caller's to refuse or replace."""
    out = Path(out)
    if out.is_dir():
        out = out / default_name
    elif not out.parent.is_dir():
        raise CurriculumError(f"--out {out}: the folder {out.parent} does not exist; create it or pick another path")
    if not out.suffix:
        out = out.with_suffix(".png")
    if out.suffix.lower() not in IMAGE_SUFFIXES:
        raise CurriculumError(
            f"--out {out}: {out.suffix} is not an image format the plot writes; use one of {', '.join(IMAGE_SUFFIXES)}"
        )
    if os.path.lexists(out) and not out.is_file():
        raise CurriculumError(f"--out {out} exists and is not a regular file; pick another path")
    try:
        with tempfile.TemporaryFile(dir=out.parent):
            pass
    except OSError as exc:
        raise CurriculumError(
            f"--out {out}: cannot write in {out.parent} ({exc.strerror}); pick a writable folder"
        ) from None
    return out


def _numeric_params(spec: dict) -> dict[str, dict[str, float]]:
    """phase name -> its params that are real numbers (bools aside)."""
    out = {}
    for name, _on_enter, params in spec["phases"]:
        out[name] = {
            k: float(v) for k, v in (params or {}).items() if isinstance(v, numbers.Real) and not isinstance(v, bool)
        }
    return out


def _phase_per_step(history: Sequence[Record], steps: Sequence[int]) -> list[str]:
    """The phase each step ran in: a transition at step S (step or epoch end) takes effect at S + 1."""
    moves = sorted((r.global_step, k, r.dest) for k, r in enumerate(history))
    starts = [step for step, _, _ in moves]
    return [moves[max(bisect.bisect_left(starts, step) - 1, 0)][2] if moves else "?" for step in steps]


def _epoch_metric(log: MetricLog) -> str | None:
    names = [n for n in log.names("epoch_end") if not _NOT_A_MEASURE.search(n)]
    preferred = [n for n in names if _EPOCH_METRIC.search(n)]
    return (preferred or names or [None])[0]


def draw_run(
    steps: Sequence[int],
    loss: Sequence[float],
    lr: Sequence[float] | None,
    params: Mapping[str, Sequence[float]],
    transitions: Sequence[Record],
    epoch_metric: tuple[str, Sequence[int], Sequence[float]] | None,
    title: str,
    progress: Mapping[str, tuple[Sequence[int], Sequence[float], float]] | None = None,
) -> Any:
    """The matplotlib Figure: loss with transition markers and the epoch-end metric, the LR, the phase
    params, and with ``progress`` (plateau tag -> steps, relative improvements, threshold) a fourth panel."""
    plt = pyplot()
    rows = 4 if progress else 3
    fig, axes = plt.subplots(
        rows, 1, figsize=(10, 8 + 2 * (rows - 3)), sharex=True, gridspec_kw={"height_ratios": [3, 1, 1, 1][:rows]}
    )
    ax_loss, ax_lr, ax_par = axes[:3]
    for (tag, (at, values, threshold)), color in zip((progress or {}).items(), ("tab:blue", "tab:green", "tab:red")):
        dest, guard = tag.split("/")[1:3]
        axes[3].plot(at, values, lw=1, color=color, label=f"-> {dest}: {guard}'s relative improvement")
        axes[3].axhline(threshold, ls=":", color=color, label=f"threshold {threshold:g} (fires below)")
    if progress:
        axes[3].set_ylabel("plateau")
        axes[3].legend(loc="upper right", fontsize=7)
    ax_loss.plot(steps, loss, lw=0.6, alpha=0.4, color="tab:blue", label="loss per step")
    k = max(1, len(loss) // 100)
    if k > 1:
        sums = [0.0, *itertools.accumulate(loss)]
        smooth = [(sums[i + 1] - sums[max(0, i - k + 1)]) / (i + 1 - max(0, i - k + 1)) for i in range(len(loss))]
        ax_loss.plot(steps, smooth, lw=1.5, color="tab:blue", label=f"mean of {k} steps")
    if epoch_metric is not None:
        name, at, values = epoch_metric
        ax_val = ax_loss.twinx()
        ax_val.plot(at, values, "o-", color="tab:green", label=name)
        ax_val.set_ylabel(name, color="tab:green")
    for record in transitions:
        for ax in axes:
            ax.axvline(record.global_step, color="tab:red", ls="--", lw=1)
        ax_loss.annotate(
            f"{record.source} → {record.dest}\nepoch {record.epoch}",
            (record.global_step, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -3),
            textcoords="offset points",
            va="top",
            fontsize=8,
            color="tab:red",
        )
    ax_loss.set_ylabel("training loss")
    ax_loss.legend(loc="lower left", fontsize=8)
    if lr is not None:
        ax_lr.plot(steps, lr, color="tab:orange")
    else:
        ax_lr.text(
            0.5, 0.5, "no 'lr' recorded: pass lr=... to step_end", transform=ax_lr.transAxes, ha="center", va="center"
        )
    ax_lr.set_ylabel("learning rate")
    for (name, values), color in zip(
        params.items(), ("tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray")
    ):
        ax_par.step(steps, values, where="post", color=color, label=name)
    if params:
        ax_par.legend(loc="upper left", fontsize=8)
    ax_par.set_ylabel("phase params")
    axes[-1].set_xlabel("optimizer step")
    ax_loss.set_title(title)
    fig.tight_layout()
    return fig


def plot_run(source: Any, out: str | Path, *, title: str | None = None, curriculum: Curriculum | None = None) -> Path:
    """Draw the run of ``source`` (an engine built with ``record_metrics=True``, or its
    ``state_dict()``) to ``out`` (the format from its suffix), replacing it atomically. With the
    curriculum at hand (an engine's own, or ``curriculum=``), a panel shows how close each ``Plateau``
    was to firing (:func:`engine.progress.progress_series`). Returns ``out``."""
    log, history, spec = recorded_run(source, "plot_run")
    if spec is None:
        raise CurriculumError(
            "plot_run: this engine state (schema 1) holds no curriculum spec to read the phase params from"
        )
    if curriculum is None and isinstance(source, CurriculumEngine):
        curriculum = source.curriculum
    steps, loss = log.series("loss")
    if not steps:
        raise CurriculumError("plot_run: the recorded metrics have no step_end yet; plot after the run has taken steps")
    lr_steps, lr = log.series("lr")
    phases = _phase_per_step(history, steps)
    numeric = _numeric_params(spec)
    names = list(dict.fromkeys(k for p in numeric.values() for k in p))
    params = {name: [numeric.get(ph, {}).get(name, float("nan")) for ph in phases] for name in names}
    if not params:
        index = {entry[0]: k for k, entry in enumerate(spec["phases"])}
        params = {"phase index": [float(index.get(ph, -1)) for ph in phases]}
    metric = _epoch_metric(log)
    epoch_metric = (metric, *log.series(metric, "epoch_end")) if metric is not None else None
    progress = None
    if curriculum is not None:
        series = progress_series(curriculum, log)
        progress = {
            tag[: -len("/improvement")]: (*series[tag], series[tag[: -len("improvement")] + "threshold"][1][0])
            for tag in series
            if tag.endswith("/improvement") and tag[: -len("improvement")] + "threshold" in series
        }
    fig = draw_run(
        steps,
        loss,
        lr if len(lr_steps) == len(steps) else None,
        params,
        [r for r in history if r.source is not None],
        epoch_metric,
        title or "curriculum run",
        progress,
    )
    out = Path(out)
    plt = pyplot()
    try:
        atomic_write(out, lambda f: fig.savefig(f, format=out.suffix[1:] or "png", dpi=110))
    finally:
        plt.close(fig)
    return out
