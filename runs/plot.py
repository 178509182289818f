"""The run's PNG: loss with labelled transition markers, LR, and cutoff, against optimizer steps."""

from __future__ import annotations

from pathlib import Path

from runs.artifacts import RunFiles, read_csv

__all__ = ["plot_run"]


def plot_run(files: RunFiles, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_csv(files.steps)
    steps = [int(r["step"]) for r in rows]
    loss = [float(r["loss"]) for r in rows]
    lr = [float(r["lr"]) for r in rows]
    cutoff = [int(r["cutoff"]) for r in rows]
    history = files.read_history() if files.history.exists() else []

    fig, (ax_loss, ax_lr, ax_cut) = plt.subplots(3, 1, figsize=(10, 8), sharex=True, gridspec_kw={"height_ratios": [3, 1, 1]})
    ax_loss.plot(steps, loss, lw=0.6, alpha=0.4, color="tab:blue", label="loss per step")
    k = max(1, len(loss) // 100)
    if k > 1:
        smooth = [sum(loss[max(0, i - k + 1): i + 1]) / len(loss[max(0, i - k + 1): i + 1]) for i in range(len(loss))]
        ax_loss.plot(steps, smooth, lw=1.5, color="tab:blue", label=f"mean of {k} steps")
    epochs = files.epochs.exists() and read_csv(files.epochs)
    if epochs:
        ax_val = ax_loss.twinx()
        ax_val.plot([int(r["step"]) for r in epochs], [float(r["val_bpb"]) for r in epochs], "o-", color="tab:green", label="val bpb")
        ax_val.set_ylabel("validation bits/byte", color="tab:green")
    for record in history:
        if record.source is None:  # the start record: no transition to mark
            continue
        for ax in (ax_loss, ax_lr, ax_cut):
            ax.axvline(record.global_step, color="tab:red", ls="--", lw=1)
        ax_loss.annotate(f"{record.source} → {record.dest}\nepoch {record.epoch}", (record.global_step, 1.0),
                         xycoords=("data", "axes fraction"), xytext=(3, -3), textcoords="offset points",
                         va="top", fontsize=8, color="tab:red")
    ax_loss.set_ylabel("training loss (nats)")
    ax_loss.legend(loc="lower left", fontsize=8)
    ax_lr.plot(steps, lr, color="tab:orange")
    ax_lr.set_ylabel("learning rate")
    ax_cut.step(steps, cutoff, where="post", color="tab:purple")
    ax_cut.set_ylabel("cutoff (bins)")
    ax_cut.set_xlabel("optimizer step")
    ax_loss.set_title(f"{files.ckpt.name}: spectral curriculum")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
