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
from lightning.pytorch import Callback

from engine.core import CurriculumError
from engine.integrations import PhaseParams, bind, check_engine, real_metrics
from engine.integrations.tracking import log_to_lightning
from engine.runtime import CurriculumEngine

__all__ = ["CurriculumCallback"]

logger = logging.getLogger(__name__)


def _batch_progress(trainer: Any) -> Any:
    return trainer.fit_loop.epoch_loop.batch_progress


class CurriculumCallback(Callback):
    """Drives a :class:`~engine.CurriculumEngine` from a Lightning ``Trainer``.

    - **Binds** the ``LightningModule`` (as ``model``), the first optimizer and the first LR
      scheduler (as ``schedule``) at ``on_train_start``, when Lightning has built them and
      restored a checkpoint; then starts the engine (fresh run) or restores it (resumed run).
    - **One ``step_end`` per optimizer step**: when ``trainer.global_step`` has moved at
      ``on_train_batch_end`` (so ``accumulate_grad_batches`` counts once, and so does the shorter
      step Lightning takes on the last batches of an epoch), with ``loss`` = the mean of that step's
      micro-batch losses (``training_step``'s loss; averaged over processes under DDP) and ``lr`` =
      the LR the step ran at. Lightning
      steps a ``"step"``-interval scheduler before this hook, as the engine's contract wants.
    - **One ``epoch_end`` per completed epoch** at ``on_train_epoch_end``, with the numbers in
      ``trainer.callback_metrics`` (validation metrics included, Lightning validates first).
    - **State** lives in Lightning's checkpoint through ``state_dict``/``load_state_dict``.

    Resume: exact from a checkpoint saved at an epoch end (``on_train_epoch_end``, the
    ``ModelCheckpoint`` default, or ``on_validation_end``) and from a mid-epoch checkpoint when the
    train data loader restores its position (it has ``state_dict``/``load_state_dict``, e.g.
    torchdata's ``StatefulDataLoader``). Lightning itself is not exact in two cases: mid-epoch with
    a plain ``DataLoader`` it restarts the epoch's data at its first batch while counting on from
    the checkpoint's batch; and from a checkpoint saved at the epoch's last batch
    (``on_train_batch_end``, e.g. ``every_n_train_steps`` landing there) it skips that epoch's
    validation and ``on_train_epoch_end``. In the second case the callback runs the missed
    ``epoch_end`` when training resumes, with the metrics of the checkpoint moment (no validation
    metrics of that epoch): exact unless an epoch-end guard reads one (a metric never logged before
    is then a ``CurriculumError`` naming the checkpoint to resume from instead; one logged at an
    earlier epoch is that epoch's value).
    """

    def __init__(self, engine: CurriculumEngine) -> None:
        self.engine = check_engine(engine, "CurriculumCallback")
        self.params = PhaseParams(engine)
        self._restored: dict | None = None  # the checkpoint's state, applied at on_train_start
        self._epoch_metrics: dict | None = None  # a checkpoint's metrics for the epoch end it precedes
        # Scratch of the optimizer step in progress (a checkpoint never splits a step).
        self._losses: list[float] = []
        self._step_lr: float | None = None

    # -- Lightning's checkpoint ----------------------------------------------------------------

    def state_dict(self) -> dict:
        return {"engine": self.engine.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        self._restored = state_dict

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict) -> None:
        entry = checkpoint.get("callbacks", {}).get(self.state_key)
        if entry is not None and self._epoch_end_pending(trainer):
            # Saved after the epoch's last batch but before its epoch_end (on_train_batch_end or
            # on_validation_end): on resume Lightning does not validate that epoch again, so keep the
            # metrics of this moment for the epoch_end the resumed run makes.
            entry["epoch_end_metrics"] = real_metrics(trainer.callback_metrics)

    def _epoch_end_pending(self, trainer: Any) -> bool:
        return bool(_batch_progress(trainer).is_last_batch) and self.engine.clock.step_in_epoch > 0

    # -- training ------------------------------------------------------------------------------

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        optimizers = trainer.optimizers
        schedulers = [config.scheduler for config in trainer.lr_scheduler_configs]
        bind(self.engine, model=pl_module, optimizer=optimizers[0] if optimizers else None,
             schedule=schedulers[0] if schedulers else None)
        self._losses, self._step_lr = [], None
        restored, self._restored = self._restored, None
        if restored is None:
            if trainer.global_step > 0:
                raise CurriculumError(
                    f"CurriculumCallback: Lightning resumed at step {trainer.global_step} from a checkpoint without "
                    "engine state (it was saved without this callback); resume from a checkpoint written with it, or "
                    "start the engine yourself (engine.start(phase=..., global_step=..., epoch=...)) and leave the callback out"
                )
            self.engine.start()
            return
        self.engine.load_state_dict(restored["engine"])
        if self.engine.clock.global_step != trainer.global_step:
            raise CurriculumError(
                f"CurriculumCallback: the checkpoint's engine state is at step {self.engine.clock.global_step} but "
                f"Lightning resumed at step {trainer.global_step}; the checkpoint was not written by this run's callback"
            )
        self._epoch_metrics = restored.get("epoch_end_metrics")
        if self.engine.clock.epoch < trainer.current_epoch:
            # Saved at the epoch's last batch: Lightning skips that epoch's validation and epoch end on resume.
            logger.warning(
                "resumed from a checkpoint saved at the last batch of epoch %d, before its validation: Lightning "
                "does not validate that epoch again; the engine's epoch_end for it gets the metrics of the checkpoint moment",
                self.engine.clock.epoch,
            )
            metrics, self._epoch_metrics = self._epoch_metrics or {}, None
            try:
                self.engine.epoch_end(**metrics)
            except CurriculumError as exc:
                raise CurriculumError(
                    f"CurriculumCallback: resumed from a checkpoint saved at the last batch of epoch {self.engine.clock.epoch}, "
                    f"before its validation, which Lightning does not run again: its epoch end cannot have the metrics "
                    f"the curriculum reads ({exc}). Resume from the checkpoint saved at that epoch's end "
                    "(ModelCheckpoint's default) or from a mid-epoch one"
                ) from exc

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        self._step_lr = float(optimizer.param_groups[0]["lr"])

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None or not hasattr(loss, "item"):
            raise CurriculumError(
                f"CurriculumCallback: training_step returned no loss for batch {batch_idx} (got {type(outputs).__name__}); "
                "return the loss tensor, or a dict with 'loss'"
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
        log_to_lightning(trainer, self.engine, record)  # tracking: the curriculum to the Trainer's loggers

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if not _batch_progress(trainer).is_last_batch:
            return  # stopped mid-epoch (max_steps): no epoch end
        metrics = real_metrics(trainer.callback_metrics)
        if self._epoch_metrics is not None:  # the epoch end Lightning repeats after a checkpoint saved on_validation_end
            metrics, self._epoch_metrics = {**metrics, **self._epoch_metrics}, None
        record = self.engine.epoch_end(**metrics)
        if record is not None:  # tracking
            log_to_lightning(trainer, self.engine, record)
