"""The curriculum engine under Lightning: :class:`CurriculumCallback`.

    callback = CurriculumCallback(CurriculumEngine(curriculum))
    trainer = lightning.pytorch.Trainer(..., callbacks=[callback])
    trainer.fit(module, ...)                          # or trainer.fit(module, ..., ckpt_path=...)

Needs ``lightning`` (``pip install "curriculum-engine[lightning]"``).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from lightning.fabric.utilities.data import sized_len
from lightning.pytorch import Callback

from engine.core import CurriculumError, Point, guard_leaves, metrics_read
from engine.history import Record
from engine.integrations import FrameworkCallback, random_state, real_metrics, set_random_state
from engine.integrations.tracking import log_to_lightning
from engine.runtime import CurriculumEngine

__all__ = ["CurriculumCallback"]

logger = logging.getLogger(__name__)


def _batch_progress(trainer: Any) -> Any:
    return trainer.fit_loop.epoch_loop.batch_progress


class CurriculumCallback(FrameworkCallback, Callback):
    """Drives a :class:`~engine.CurriculumEngine` from a Lightning ``Trainer``; docs/integrations.md is its
    manual (options, schedules, which resumes are exact and which ones it warns about at resume).

    Binds the module, the first optimizer and the first LR scheduler at ``on_train_start``, once Lightning
    has restored a checkpoint. One ``step_end`` per optimizer step, when ``trainer.global_step`` has moved
    at ``on_train_batch_end`` (``accumulate_grad_batches`` counts once; Lightning steps a ``"step"``-interval
    scheduler before that hook, as the engine wants), with the mean of the step's micro-batch losses (over
    processes under DDP) and the LR it ran at; one ``epoch_end`` per epoch with ``trainer.callback_metrics``.
    The engine state, the process's random state and a data mixture's position (a train ``batch_sampler``
    with ``next_batch``, docs/mixtures.md) are the callback's ``state_dict`` in Lightning's checkpoint.
    """

    def __init__(
        self, engine: CurriculumEngine, *, allow_fingerprint_mismatch: bool = False, restart_over: str = "remaining"
    ) -> None:
        super().__init__(engine, allow_fingerprint_mismatch, restart_over)
        self._restored: dict | None = None  # the checkpoint's state, applied at on_train_start
        self._sampler: Any = None  # the train loader's batch sampler when it keeps its position (a data mixture)
        self._epoch_metrics: dict | None = None  # a checkpoint's metrics for the epoch end it precedes
        # Scratch of the optimizer step in progress (a checkpoint never splits a step).
        self._losses: list[float] = []
        self._step_lr: float | None = None
        self._unlogged: Record | None = None  # a transition at an epoch end, logged with the next step

    # -- Lightning's checkpoint ----------------------------------------------------------------

    def state_dict(self) -> dict:
        state = {"engine": self.engine.state_dict(), "rng": random_state()}
        if self._wrapped is not None:
            state["schedule"] = self._wrapped.state_dict()
        if self._sampler is not None:
            state["sampler"] = self._sampler.state_dict()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        self._restored = state_dict

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict) -> None:
        entry = checkpoint.get("callbacks", {}).get(self.state_key)
        if entry is None:
            return
        # After the epoch's last batch (at it, after its validation or at its end): the next batch is the next
        # epoch's first, whose data loader draws its order from the random state when its iterator is made.
        entry["between_epochs"] = bool(_batch_progress(trainer).is_last_batch)
        if trainer.world_size > 1 and torch.distributed.is_initialized():
            # Lightning dumps the checkpoint on every process and rank 0 writes it: each rank's own random state.
            states = [None] * trainer.world_size
            torch.distributed.all_gather_object(states, entry["rng"])
            entry["rng"] = states
        if entry["between_epochs"] and self.engine.clock.step_in_epoch > 0:
            # Saved after the epoch's last batch but before its epoch_end (on_train_batch_end or
            # on_validation_end): on resume Lightning does not validate that epoch again, so keep the
            # metrics of this moment for the epoch_end the resumed run makes.
            entry["epoch_end_metrics"] = real_metrics(trainer.callback_metrics)

    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict) -> None:
        entry = checkpoint.get("callbacks", {}).get(self.state_key) or {}
        if entry.get("between_epochs") and "rng" in entry:
            # Now, before the fit loop makes the next epoch's iterator (a plain DataLoader's RandomSampler draws its
            # order from torch's global generator then): on_train_start comes after it.
            _restore_random_state(trainer, entry["rng"])

    # -- training ------------------------------------------------------------------------------

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        restored, self._restored = self._restored, None
        schedulers = [config.scheduler for config in trainer.lr_scheduler_configs]
        optimizer, scheduler = next(iter(trainer.optimizers), None), next(iter(schedulers), None)
        self._bind(pl_module, optimizer, scheduler, (restored or {}).get("schedule"), fresh=restored is None)
        self._losses, self._step_lr, self._unlogged = [], None, None
        self._sampler = _mixture_sampler(trainer)
        saved = (restored or {}).get("engine")
        if not self._start_or_restore(saved, trainer.global_step, "Lightning", "it was saved without this callback"):
            return
        if ("sampler" in restored) != (self._sampler is not None):
            raise CurriculumError(
                f"CurriculumCallback: the checkpoint {'holds' if 'sampler' in restored else 'holds no'} data sampler "
                "position, unlike this run's train loader; resume with the train DataLoader it was written with"
            )
        if self._sampler is not None:
            self._sampler.load_state_dict(restored["sampler"])
        if "rng" in restored and not restored.get("between_epochs"):
            # mid-epoch: the rest of the epoch draws on from the checkpoint's state
            _restore_random_state(trainer, restored["rng"])
        self._epoch_metrics = restored.get("epoch_end_metrics")
        epoch = self.engine.clock.epoch
        if epoch >= trainer.current_epoch:
            if self.engine.clock.step_in_epoch > 0 and self._sampler is None:
                _warn_mid_epoch(trainer, self.engine.clock)
            return
        # Saved at the epoch's last batch: Lightning skips that epoch's validation and epoch end on resume.
        if trainer.val_dataloaders is not None and isinstance(
            getattr(trainer.train_dataloader, "dataset", None), torch.utils.data.IterableDataset
        ):
            logger.warning(
                "resumed from a checkpoint saved at the last batch of epoch %d with an IterableDataset and "
                "validation: Lightning starts the train iteration of epoch %d before making the validation "
                "loader's iterator here, after it in the uninterrupted run, so a dataset that draws from torch's "
                "global generator as its iteration starts (a shuffle) draws otherwise; resume from the checkpoint "
                "saved at that epoch's end (ModelCheckpoint's default) or give the dataset its own torch.Generator",
                epoch,
                epoch + 1,
            )
        if self._reads_validation():
            logger.warning(
                "resumed from a checkpoint saved at the last batch of epoch %d, before its validation, "
                "which Lightning does not run again: its epoch end gets the metrics of the checkpoint moment "
                "(the validation metrics of an earlier epoch); resume from the checkpoint saved "
                "at that epoch's end (ModelCheckpoint's default) to be exact",
                epoch,
            )
        metrics, self._epoch_metrics = self._epoch_metrics or {}, None
        where = (
            f"a checkpoint saved at the last batch of epoch {epoch}, before its validation, which Lightning does not "
            "run again: its epoch end cannot have the metrics the curriculum reads"
        )
        fix = "resume from the checkpoint saved at that epoch's end (ModelCheckpoint's default) or from a mid-epoch one"
        self._unlogged = self._missed_epoch_end(metrics, where, fix)  # tracking: logged with the next step

    def _reads_validation(self) -> bool:
        """Whether a guard of an epoch-end transition out of the current phase reads a metric (validation's, then)."""
        at, phase = Point.EPOCH_END, self.engine.phase.name
        transitions = [tr for tr in self.engine.curriculum.transitions if tr.source == phase and tr.when is at]
        return any(metrics_read(leaf, at, at) for tr in transitions for g in tr.guards for leaf in guard_leaves(g))

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        self._step_lr = float(optimizer.param_groups[0]["lr"])

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None or not hasattr(loss, "item"):
            raise CurriculumError(
                f"CurriculumCallback: training_step returned no loss for batch {batch_idx} (got "
                f"{type(outputs).__name__}); return the loss tensor, or a dict with 'loss'"
            )
        # Lightning hands over the loss divided by accumulate_grad_batches: undo it.
        self._losses.append(float(loss.item()) * trainer.accumulate_grad_batches)
        if trainer.global_step == self.engine.clock.global_step:
            return  # still accumulating
        losses, self._losses = self._losses, []
        loss = sum(losses) / len(losses)
        if trainer.world_size > 1:  # every rank must see the same loss to take the same transition
            loss = float(trainer.strategy.reduce(torch.tensor(loss, device=pl_module.device), reduce_op="mean"))
        record = self.engine.step_end(loss=loss, **({"lr": self._step_lr} if self._step_lr is not None else {}))
        # tracking: the curriculum to the Trainer's loggers, in the row of the step's own self.log values
        record, self._unlogged = record or self._unlogged, None
        log_to_lightning(trainer, self.engine, record, trainer.global_step - 1)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if not _batch_progress(trainer).is_last_batch:
            return  # stopped mid-epoch (max_steps): no epoch end
        metrics = real_metrics(trainer.callback_metrics)
        if self._epoch_metrics is not None:  # the epoch end Lightning repeats after a save on_validation_end
            metrics, self._epoch_metrics = {**metrics, **self._epoch_metrics}, None
        # tracking: a transition is logged with the next step, the first in the new phase (or at the end of training)
        self._unlogged = self.engine.epoch_end(**metrics) or self._unlogged

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self._unlogged is not None:  # tracking: a transition at the last epoch end
            log_to_lightning(trainer, self.engine, self._unlogged, trainer.global_step)
            self._unlogged = None


def _mixture_sampler(trainer: Any) -> Any:
    """The train loader's batch sampler when it draws each step's examples and keeps its position (checked), else
    None."""
    loader = trainer.train_dataloader
    sampler = getattr(loader, "batch_sampler", None)
    if not all(callable(getattr(sampler, name, None)) for name in ("next_batch", "state_dict", "load_state_dict")):
        return None
    ahead = "Lightning fetches a loader without a length a batch ahead" if sized_len(loader) is None else ""
    if getattr(loader, "num_workers", 0):
        ahead = f"its {loader.num_workers} workers fetch batches ahead"
    if ahead:
        raise CurriculumError(
            f"CurriculumCallback: the train DataLoader draws its {type(sampler).__name__}'s batches ahead of training "
            f"({ahead}), so a mix change would land late; give the sampler a length "
            "(e.g. MixtureSampler(..., steps=max_steps * accumulate_grad_batches)) and keep num_workers=0"
        )
    shard = getattr(sampler, "rank", trainer.global_rank), getattr(sampler, "world_size", trainer.world_size)
    if shard != (trainer.global_rank, trainer.world_size):
        raise CurriculumError(
            f"CurriculumCallback: the train loader's sampler is rank {shard[0]} of {shard[1]} and this "
            f"process is rank {trainer.global_rank} of {trainer.world_size}; build it in train_dataloader() (after "
            "Lightning starts the processes) or pass rank=trainer.global_rank, world_size=trainer.world_size"
        )
    return sampler


def _restore_random_state(trainer: Any, saved: dict | list[dict]) -> None:
    """Put back this process's random state from a checkpoint's (one state, or one per rank under DDP); warn once
    when the checkpoint was written by another number of processes."""
    states = saved if isinstance(saved, list) else [saved]
    if len(states) == trainer.world_size:
        set_random_state(states[trainer.global_rank])
    elif trainer.is_global_zero:
        logger.warning(
            "resumed with %d processes from a checkpoint holding the random state of %d: each process's random "
            "draws (dropout, a shuffle, an augmentation) start again from this launch's seeds, so the run differs "
            "from the uninterrupted one; resume with as many processes as wrote the checkpoint to be exact",
            trainer.world_size,
            len(states),
        )


def _warn_mid_epoch(trainer: Any, clock: Any) -> None:
    """One warning when a mid-epoch resume cannot continue the epoch's data where the checkpoint left it."""
    loader = trainer.train_dataloader
    stateful = callable(getattr(loader, "state_dict", None)) and callable(getattr(loader, "load_state_dict", None))
    sampler = getattr(loader, "sampler", None)
    if not stateful:
        logger.warning(
            "resumed in the middle of epoch %d (step %d of it) "
            "with a train DataLoader that cannot restore its position: "
            "Lightning starts the epoch's data again at its first batch while counting on from the checkpoint, so the "
            "run differs from the uninterrupted one; use a loader with state_dict()/load_state_dict() (torchdata's "
            "StatefulDataLoader) or resume from an epoch-end checkpoint",
            clock.epoch,
            clock.step_in_epoch,
        )
    elif isinstance(sampler, torch.utils.data.RandomSampler) and type(loader).__name__ != "StatefulDataLoader":
        logger.warning(
            "resumed in the middle of epoch %d with a shuffling train DataLoader: "
            "the order of the rest of the epoch is "
            "drawn again, so the run differs from the uninterrupted one; use torchdata's StatefulDataLoader (it saves "
            "the sampler's order), shuffle=False, or resume from an epoch-end checkpoint",
            clock.epoch,
        )
