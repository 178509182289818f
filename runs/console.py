"""What a run prints (the seed's line formats), and :class:`Reporter`, the trainer's hooks in ``chunklm train``."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import sys
from typing import Callable

from chunklm.train import BaseHooks, EpochInfo, StepInfo
from engine import Record

__all__ = ["Console", "Reporter", "invoked_as", "sets_cutoff"]

RAISE_LINE = "Epoch {epoch} 🚀 CUTOFF RAISED: {before} -> {after} (loss plateaued, opening frequency gates)"


def cutoff_text(value: int | None, n_bins: int) -> str:
    return "full" if value is None or value >= n_bins else str(value)


def sets_cutoff(curriculum) -> bool:
    """Whether the curriculum sets the model's cutoff (a run whose curriculum does not prints none)."""
    from policies import SetCutoff

    actions = [a for p in curriculum.phases for a in p.on_enter]
    actions += [a for t in curriculum.transitions for a in t.actions]
    return any(isinstance(a, SetCutoff) for a in actions)


def invoked_as() -> str:
    """The command line's name as the user ran it, for the commands it prints: ``chunklm`` when that
    name on PATH runs it, else the path they ran (``./run.sh`` runs ``.venv/bin/chunklm``)."""
    program = sys.argv[0]
    if os.path.basename(program) != "chunklm":  # python -m runs.cli, or called from Python
        return "chunklm"
    found = shutil.which("chunklm")
    if found and os.path.realpath(found) == os.path.realpath(program):
        return "chunklm"
    return shlex.quote(program)


def exact(value: float) -> str:
    """A metric as the CSVs keep it: the shortest text that reads back as the same float, so
    ``chunklm replay`` feeds the guards the very values the run gave them."""
    return repr(float(value))


def history_digest(history) -> str:
    """sha256 of the history without wall times: equal on every rank when decisions agree."""
    text = json.dumps([r.comparable() for r in history], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class Console:
    """Prints on rank 0 only; a tqdm bar per epoch when stdout is a terminal and tqdm is installed,
    plain lines otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar = None
        self.tty = enabled and sys.stdout.isatty()

    def line(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def open_bar(self, total: int, done: int, epoch: int) -> None:
        if self.tty and self.bar is None:
            try:
                from tqdm import tqdm
            except ImportError:  # the bar is a nicety: without tqdm, plain lines
                self.tty = False
                return
            self.bar = tqdm(total=total, initial=done, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True)

    def advance(self, loss: float, lr: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.1e}", refresh=False)

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class Reporter(BaseHooks):
    """Prints the step, epoch and raise lines, writes the metrics rows (``writers``: steps, epochs; on
    rank 0), checks that ranks agree, and stops every rank when ``stop_reason()`` gives one on any."""

    def __init__(
        self, trainer, console: Console, writers, dist, log_every: int, stop_reason: Callable[[], str | None]
    ) -> None:
        self.trainer, self.console, self.writers, self.dist = trainer, console, writers, dist
        self.log_every, self.stop_reason = log_every, stop_reason
        self.steps_per_epoch = trainer.config.steps_per_epoch
        self.chunk = trainer.config.model.chunk
        self.n_bins = trainer.model.n_bins
        self.shows_cutoff = sets_cutoff(trainer.curriculum)
        self.warned = {i: len(r.warnings) for i, r in enumerate(trainer.engine.history)}  # warnings already shown

    def on_step(self, info: StepInfo) -> None:
        if self.writers:
            self.writers[0].write(
                {
                    "step": info.global_step,
                    "epoch": info.epoch,
                    "step_in_epoch": info.step_in_epoch,
                    "loss": exact(info.loss),
                    "lr": exact(info.lr),
                    "cutoff": info.cutoff,
                    "phase": info.phase,
                }
            )
        self.console.open_bar(self.steps_per_epoch, info.step_in_epoch - 1, info.epoch)
        self.console.advance(info.loss, info.lr)
        if self.log_every and info.step_in_epoch % self.log_every == 0:
            cutoff = f" cutoff={cutoff_text(info.cutoff, self.n_bins)}" if self.shows_cutoff else ""
            self.console.line(
                f"  step {info.step_in_epoch}/{self.steps_per_epoch} loss={info.loss:.2f} lr={info.lr:.1e}{cutoff}"
            )
        if not info.applied:
            self.console.line(f"  ⚠️  step {info.step_in_epoch}: non-finite loss ({info.loss}), update skipped")
        for i, record in enumerate(self.trainer.engine.history):
            for warning in record.warnings[self.warned.get(i, 0) :]:
                self.console.line(f"  ⚠️  WARNING after the transition at epoch {record.epoch}: {warning}")
            self.warned[i] = len(record.warnings)

    def on_epoch(self, info: EpochInfo) -> None:
        self.dist.check_same("transition history", history_digest(self.trainer.engine.history))
        self.console.close_bar()
        cutoff = f" cutoff={info.cutoff}/{self.n_bins}" if self.shows_cutoff else ""
        self.console.line(f"Epoch {info.epoch} avg_loss={info.avg_loss:.2f}{cutoff}")
        self.console.line(
            f"Epoch {info.epoch} val_bpb={info.bpb:.3f} (next byte), "
            f"{info.bpb_mean:.3f} (mean over {self.chunk} offsets)"
            + (
                " of the sources' mean; " + " ".join(f"val_bpb/{n}={v:.3f}" for n, v in info.sources.items())
                if info.sources
                else ""
            )
        )
        if self.writers:
            self.writers[1].write(
                {
                    "epoch": info.epoch,
                    "step": self.trainer.clock.global_step,
                    "avg_loss": exact(info.avg_loss),
                    "cutoff": info.cutoff,
                    "val_bpb": exact(info.bpb),
                    "val_bpb_mean": exact(info.bpb_mean),
                    **{f"val_bpb/{n}": exact(v) for n, v in (info.sources or {}).items()},
                }
            )

    def on_transition(self, record: Record) -> None:
        self.dist.check_same("transition", f"{record.source}->{record.dest}@{record.global_step}")
        cut = next((a.effect.get("cutoff") for a in record.actions if "cutoff" in a.effect), None)
        if cut is not None:
            before, after = (cutoff_text(v, self.n_bins) for v in cut)
            self.console.line(RAISE_LINE.format(epoch=record.epoch, before=before, after=after))
        else:
            self.console.line(f"Epoch {record.epoch} transition {record.source} -> {record.dest}")
        trainer, clock = self.trainer, self.trainer.clock
        epochs = trainer.config.epochs
        if trainer.done or (clock.epoch + 1 >= epochs and clock.step_in_epoch >= self.steps_per_epoch):
            more = "" if trainer.cooled_down else f"; resume with --epochs N (N > {epochs}) to train it"
            self.console.line(f"note: the run ends here, so phase {record.dest} trains no step{more}")

    def should_stop(self) -> str | None:
        reason = self.stop_reason()
        if self.dist.any_flag(reason is not None):  # every rank stops at the same step
            return reason or "signal"
        return None
