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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = _columns(files.steps, {"step": int, "loss": float, "lr": float, "cutoff": int})
    steps, loss, lr, cutoff = cols["step"], cols["loss"], cols["lr"], cols["cutoff"]
    history = (
        [r for r in files.read_history() if r.source is not None] if files.history.exists() else []
    )  # transitions, not the start

    fig, (ax_loss, ax_lr, ax_cut) = plt.subplots(
        3, 1, figsize=(10, 8), sharex=True, gridspec_kw={"height_ratios": [3, 1, 1]}
    )
    ax_loss.plot(steps, loss, lw=0.6, alpha=0.4, color="tab:blue", label="loss per step")
    k = max(1, len(loss) // 100)
    if k > 1:
        smooth = [sum(loss[max(0, i - k + 1) : i + 1]) / len(loss[max(0, i - k + 1) : i + 1]) for i in range(len(loss))]
        ax_loss.plot(steps, smooth, lw=1.5, color="tab:blue", label=f"mean of {k} steps")
    epochs = _columns(files.epochs, {"step": int, "val_bpb": float}) if files.epochs.exists() else {"step": []}
    if epochs["step"]:
        ax_val = ax_loss.twinx()
        ax_val.plot(epochs["step"], epochs["val_bpb"], "o-", color="tab:green", label="val bpb")
        ax_val.set_ylabel("validation bits/byte", color="tab:green")
    for record in history:
        for ax in (ax_loss, ax_lr, ax_cut):
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
    ax_loss.set_ylabel("training loss (nats)")
    ax_loss.legend(loc="lower left", fontsize=8)
    ax_lr.plot(steps, lr, color="tab:orange")
    ax_lr.set_ylabel("learning rate")
    ax_cut.step(steps, cutoff, where="post", color="tab:purple")
    ax_cut.set_ylabel("cutoff (bins)")
    ax_cut.set_xlabel("optimizer step")
    ax_loss.set_title(f"{files.ckpt.name}: spectral curriculum")
    fig.tight_layout()
    try:  # atomically, as every file of a run: a full disk is one line, and never a truncated image
        atomic_write(out, lambda f: fig.savefig(f, format=out.suffix[1:] or "png", dpi=110))
    finally:
        plt.close(fig)
    return out
