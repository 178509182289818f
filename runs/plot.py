"""The run's PNG: loss with labelled transition markers, LR, and cutoff, against optimizer steps."""

from __future__ import annotations

from pathlib import Path

from runs.artifacts import RunFiles, atomic_write, read_csv
from runs.errors import UsageError

__all__ = ["plot_run"]


def _columns(path: Path, columns: dict) -> dict[str, list]:
    """``{name: parse}`` columns of a metrics CSV; a garbled file is a clear error."""
    try:
        rows = read_csv(path)
        return {name: [parse(r[name]) for r in rows] for name, parse in columns.items()}
    except (KeyError, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise UsageError(
            f"{path} is not a metrics file this version can read ({type(exc).__name__}: {exc}); "
            "it may be truncated or edited"
        ) from None


def plot_run(files: RunFiles, out: Path) -> Path:
    """The run's PNG, drawn by :func:`engine.plot.draw_run` from its CSVs (cutoff as the phase param)."""
    from engine.plot import draw_run, pyplot

    plt = pyplot()  # its callers checked that matplotlib is there
    cols = _columns(files.steps, {"step": int, "loss": float, "lr": float, "cutoff": int})
    # the transitions, not the start
    history = [r for r in files.read_history() if r.source is not None] if files.history.exists() else []
    epochs = _columns(files.epochs, {"step": int, "val_bpb": float}) if files.epochs.exists() else {"step": []}
    val = ("val bpb", epochs["step"], epochs["val_bpb"]) if epochs["step"] else None
    fig = draw_run(
        cols["step"],
        cols["loss"],
        cols["lr"],
        {"cutoff (bins)": cols["cutoff"]},
        history,
        val,
        f"{files.ckpt.name}: spectral curriculum",
    )
    try:  # atomically, as every file of a run: a full disk is one line, and never a truncated image
        atomic_write(out, lambda f: fig.savefig(f, format=out.suffix[1:] or "png", dpi=110))
    finally:
        plt.close(fig)
    return out
