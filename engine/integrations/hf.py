"""The curriculum engine under the Hugging Face ``Trainer``: :class:`CurriculumCallback`.

    callback = CurriculumCallback(CurriculumEngine(curriculum))
    trainer = Trainer(..., optimizers=(optimizer, StagedCosine(optimizer, ...)), callbacks=[callback])
    trainer.train()                                  # or trainer.train(resume_from_checkpoint=True)

Needs ``transformers`` (``pip install "curriculum-engine[hf]"``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any, Callable, Mapping

import torch
from transformers import TrainerCallback

from engine.core import CurriculumError
from engine.integrations import PhaseParams, bind, check_engine, real_metrics
from engine.integrations.tracking import curriculum_logs, report_before_loggers
from engine.runtime import CurriculumEngine

__all__ = ["CurriculumCallback", "STATE_KEY"]

logger = logging.getLogger(__name__)

#: Where the engine state lives in each ``checkpoint-N/trainer_state.json``: under ``stateful_callbacks``.
STATE_KEY = "curriculum_engine"
_TRAINER_STATE = "trainer_state.json"


def _output_loss(output: Any) -> torch.Tensor | None:
    if isinstance(output, Mapping) or hasattr(output, "keys"):  # a dict or a ModelOutput
        loss = output.get("loss") if hasattr(output, "get") else None
    else:
        loss = getattr(output, "loss", None)
    return loss if isinstance(loss, torch.Tensor) else None


class CurriculumCallback(TrainerCallback):
    """Drives a :class:`~engine.CurriculumEngine` from the Hugging Face ``Trainer``.

    - **Binds** the Trainer's ``model``, ``optimizer`` and ``lr_scheduler`` (as ``schedule``) at
      ``on_train_begin``, then starts the engine (fresh run) or restores it (resumed run).
    - **One ``step_end`` per optimizer step** (gradient accumulation counts once), with
      ``loss`` = that step's training loss, exactly the number the Trainer logs for the step with
      ``logging_steps=1`` (whatever ``logging_steps`` is; transformers 4.x logs it rounded to 4
      decimals), and ``lr`` = the LR the step ran at.
      The loss is read from the ``loss`` the model's forward returns for each training
      micro-batch, combined as the Trainer combines them.
    - **One ``epoch_end`` per completed epoch**, with the evaluation metrics when the Trainer
      evaluates at that epoch end (``eval_strategy="epoch"``: ``eval_loss``, ...), else none.
    - **State**: the engine state is put in the Trainer state's ``stateful_callbacks[STATE_KEY]``
      before each save (and after every epoch end), so each ``checkpoint-N/trainer_state.json`` holds it;
      ``trainer.train(resume_from_checkpoint=...)`` restores it, wherever the folder is. A
      checkpoint written at the last step of an epoch is updated after that epoch's ``epoch_end``
      (the Trainer resumes it in the next epoch and does not repeat the epoch end).
    - **Params**: :attr:`params` is a live view of the current phase's ``params`` for a collator or
      dataset. The Trainer's data loader collates one micro-batch ahead, so a change made at a step
      end reaches the collator from the second micro-batch of the next step on (at an epoch end,
      from the first); a run resumed from a checkpoint taken exactly there collates that one
      micro-batch in the new phase. Where a change must be exact at every step, change the batch
      in ``prepare_inputs(inputs, params) -> inputs``: it runs on each training micro-batch's
      inputs right before the model's forward (a model that takes ``num_items_in_batch`` gets the
      count the Trainer made before it).
    - **Several processes** (DDP): every rank passes the same ``loss``, the mean over ranks that the
      Trainer logs (with ``num_items_in_batch`` counted over every rank, as
      ``average_tokens_across_devices`` does by default, the per-token mean of the step), so all
      ranks take the same transitions at the same step.
    """

    def __init__(self, engine: CurriculumEngine, *, prepare_inputs: Callable[[dict, PhaseParams], dict] | None = None) -> None:
        self.engine = check_engine(engine, "CurriculumCallback")
        if prepare_inputs is not None and not callable(prepare_inputs):
            raise CurriculumError(
                f"CurriculumCallback: 'prepare_inputs' must be a callable (inputs, params) -> inputs, got {prepare_inputs!r}"
            )
        self.prepare_inputs = prepare_inputs
        self.params = PhaseParams(engine)
        # Scratch of the optimizer step in progress (never in a checkpoint: a step is never split by one).
        self._losses: list[torch.Tensor] = []
        self._scaled = False  # the model normalised its loss by num_items_in_batch (the Trainer then sums)
        self._missing_loss = False
        self._step_lr: float | None = None
        self._hooks: list[Any] = []
        self._epoch_end_at_evaluate = False
        self._checkpoint: tuple[int, str] | None = None  # (global step, folder) of this run's last checkpoint
        self._logged: int | None = None  # tracking: history records already in the Trainer's logs (None: none yet)

    # -- the model's forward -------------------------------------------------------------------

    def _before_forward(self, module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        if not module.training:
            return None
        inputs = self.prepare_inputs(dict(kwargs), self.params)
        if not isinstance(inputs, dict):
            raise CurriculumError(f"prepare_inputs must return the inputs dict, got {type(inputs).__name__}")
        return args, inputs

    def _after_forward(self, module: Any, args: tuple, kwargs: dict, output: Any) -> None:
        if not module.training:
            return
        loss = _output_loss(output)
        if loss is None:
            self._missing_loss = True
            return
        self._losses.append(loss.detach().clone())  # not a view: the Trainer may scale the loss in place (DDP)
        self._scaled = "num_items_in_batch" in kwargs

    def _step_loss(self, step: int, args: Any) -> float:
        losses, self._losses = self._losses, []
        if self._missing_loss or not losses:
            self._missing_loss = False
            raise CurriculumError(
                f"CurriculumCallback: no training loss for optimizer step {step}: the model's forward must return "
                "its loss as output['loss'] or output.loss (pass labels in the batch); a loss computed outside the "
                "model (compute_loss_func, a compute_loss override) is not seen by the callback"
            )
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        world = torch.distributed.get_world_size() if distributed else 1
        total = torch.zeros((), dtype=torch.float32, device=losses[0].device)  # this rank's tr_loss in the Trainer
        for loss in losses:  # as the Trainer adds its tr_loss_step: each micro-batch's loss / their count
            total += (loss if self._scaled else loss / len(losses)).mean()
        if self._scaled and getattr(args, "average_tokens_across_devices", False):
            # num_items_in_batch counted the tokens of every rank: the Trainer multiplies the loss by the
            # number of processes (after the forward), so that the mean over ranks is the mean per token
            total *= world
        if world > 1:  # every rank must see the same loss to take the same transition: the mean the Trainer logs
            torch.distributed.all_reduce(total)
            total /= world
        return total.item()

    # -- the Trainer's events ------------------------------------------------------------------

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None,
                       lr_scheduler: Any = None, **kwargs: Any) -> None:
        bind(self.engine, model=model, optimizer=optimizer, schedule=lr_scheduler)
        for hook in self._hooks:
            hook.remove()
        self._hooks = [model.register_forward_hook(self._after_forward, with_kwargs=True)]
        if self.prepare_inputs is not None:
            self._hooks.append(model.register_forward_pre_hook(self._before_forward, with_kwargs=True))
        self._losses, self._missing_loss, self._epoch_end_at_evaluate, self._checkpoint = [], False, False, None
        saved = (state.stateful_callbacks or {}).get(STATE_KEY)
        if state.global_step == 0:
            self.engine.start()
        elif saved is None:
            raise CurriculumError(
                f"CurriculumCallback: the Trainer resumed at step {state.global_step} from a checkpoint without "
                f"engine state (no stateful_callbacks[{STATE_KEY!r}] in its {_TRAINER_STATE}); resume from a checkpoint "
                "written with this callback, or start the engine yourself before training: "
                "engine.start(phase=..., global_step=..., epoch=...) and leave the callback out of this run"
            )
        else:
            self.engine.load_state_dict(saved)
            if self.engine.clock.global_step != state.global_step:
                raise CurriculumError(
                    f"CurriculumCallback: the checkpoint's engine state is at step {self.engine.clock.global_step} but the "
                    f"Trainer resumed at step {state.global_step}; resume from the checkpoint folder the state was written to"
                )
        self._stash(state)
        self._logged = None  # tracking
        report_before_loggers(self, sys._getframe(1).f_locals.get("self"))  # tracking: the Trainer's CallbackHandler

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        # tracking (engine/integrations/tracking.py): the curriculum in every log the Trainer makes
        values, self._logged = curriculum_logs(self.engine, self._logged)
        if logs is not None:
            logs.update(values)
        if state.log_history:
            state.log_history[-1].update(values)

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, optimizer: Any = None, **kwargs: Any) -> None:
        self._step_lr = float(optimizer.param_groups[0]["lr"]) if optimizer is not None else None

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        loss = self._step_loss(state.global_step, args)
        self.engine.step_end(loss=loss, **({"lr": self._step_lr} if self._step_lr is not None else {}))
        if control.should_save or control.should_evaluate:  # set by the Trainer's flow callback, which runs first
            self._stash(state)

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.epoch is None or state.epoch != int(state.epoch):
            return  # stopped mid-epoch (max_steps): no epoch end
        if control.should_evaluate:  # the Trainer evaluates next: the epoch end waits for its metrics
            self._epoch_end_at_evaluate = True
        else:
            self._epoch_end(args, state, {})

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        if self._epoch_end_at_evaluate:
            self._epoch_end_at_evaluate = False
            self._epoch_end(args, state, metrics or {})

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._checkpoint = (state.global_step, os.path.join(args.output_dir, f"checkpoint-{state.global_step}"))
        stashed = (state.stateful_callbacks or {}).get(STATE_KEY, {}).get("clock", {}).get("global_step")
        if stashed != self.engine.clock.global_step and args.should_save:  # a save nobody announced at step end
            self._rewrite(self._checkpoint[1], self._stash(state))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    # -- state ---------------------------------------------------------------------------------

    def _epoch_end(self, args: Any, state: Any, metrics: Mapping[str, Any]) -> None:
        self.engine.epoch_end(**real_metrics(metrics))
        engine_state = self._stash(state)
        if self._checkpoint is not None and self._checkpoint[0] == state.global_step and args.should_save:
            self._rewrite(self._checkpoint[1], engine_state)

    def _stash(self, state: Any) -> dict:
        engine_state = self.engine.state_dict()
        if state.stateful_callbacks is None:
            state.stateful_callbacks = {}
        state.stateful_callbacks[STATE_KEY] = engine_state
        return engine_state

    @staticmethod
    def _rewrite(folder: str, engine_state: dict) -> None:
        """Put the engine state after this step's epoch end into the checkpoint written at that step."""
        path = os.path.join(folder, _TRAINER_STATE)
        if not os.path.isfile(path):
            return
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        data.setdefault("stateful_callbacks", {})[STATE_KEY] = engine_state
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:  # the Trainer's own format
            f.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
