"""The curriculum engine under the Hugging Face ``Trainer``: :class:`CurriculumCallback`.

    callback = CurriculumCallback(CurriculumEngine(curriculum))
    trainer = Trainer(..., optimizers=(optimizer, StagedCosine(optimizer, ...)), callbacks=[callback])
    trainer.train()                                  # or trainer.train(resume_from_checkpoint=True)

A data mixture (a sampler such as ``policies.MixtureSampler``) is drawn at each optimizer step by
:class:`MixtureTrainer` (or :class:`MixtureTrainerMixin` in a Trainer class of your own).

Needs ``transformers`` (``pip install "curriculum-engine[hf]"``).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable, Mapping

import torch
from transformers import Trainer, TrainerCallback

from engine.core import CurriculumError
from engine.files import atomic_write
from engine.integrations import FrameworkCallback, PhaseParams, random_state, real_metrics, set_random_state
from engine.integrations.tracking import calling_handler, curriculum_logs, report_before_loggers
from engine.runtime import CurriculumEngine

__all__ = [
    "CurriculumCallback",
    "MixtureTrainerMixin",
    "MixtureTrainer",
    "STATE_KEY",
    "EPOCH_END_KEY",
    "SCHEDULE_KEY",
    "MIXTURE_KEY",
]

logger = logging.getLogger(__name__)

#: Where the engine state lives in each ``checkpoint-N/trainer_state.json``: under ``stateful_callbacks``.
STATE_KEY = "curriculum_engine"
#: Next to it, the state of the Trainer's own scheduler made restartable (when the curriculum restarts it).
SCHEDULE_KEY = "curriculum_engine_schedule"
#: Next to it, in a checkpoint written on an epoch's last step: that epoch end's metrics,
#: for the resumed run's epoch_end.
EPOCH_END_KEY = "curriculum_engine_epoch_end"
#: Next to it, the position of a :class:`MixtureTrainer`'s mixture after the step the checkpoint was written at.
MIXTURE_KEY = "curriculum_engine_mixture"
_TRAINER_STATE = "trainer_state.json"


def _last_micro_batch() -> bool:
    """Whether the forward in progress is the last micro-batch of its optimizer step (the Trainer tells accelerate)."""
    from accelerate.state import GradientState  # the Trainer's own dependency; shared state, made by the Trainer

    return bool(GradientState().sync_gradients)


def _shifts_labels(model: Any) -> bool:
    """Whether the Trainer counts ``labels[..., 1:]`` for this model's ``num_items_in_batch``
    (causal LM losses), as it decides."""
    try:
        from transformers.loss.loss_utils import LOSS_MAPPING, ForCausalLMLoss
    except ImportError:  # an older transformers counts every label
        return False
    return LOSS_MAPPING.get(getattr(model, "loss_type", None)) is ForCausalLMLoss and not getattr(
        getattr(model, "config", None), "is_encoder_decoder", False
    )


def _output_loss(output: Any) -> torch.Tensor | None:
    mapping = isinstance(output, Mapping) or hasattr(output, "keys")  # a dict or a ModelOutput
    loss = (output.get("loss") if hasattr(output, "get") else None) if mapping else getattr(output, "loss", None)
    return loss if isinstance(loss, torch.Tensor) else None


class CurriculumCallback(FrameworkCallback, TrainerCallback):
    """Drives a :class:`~engine.CurriculumEngine` from the Hugging Face ``Trainer``; docs/integrations.md is
    its manual (options, the loss it reads, schedules, which resumes are exact).

    One ``step_end`` per optimizer step, with the step's training loss as the Trainer logs it (read from
    the ``loss`` each training forward returns, combined as the Trainer combines them; the mean over
    ranks under DDP) and the LR it ran at; one ``epoch_end`` per epoch, with the evaluation metrics when
    the Trainer evaluates there. The engine state goes in the Trainer state's ``stateful_callbacks[STATE_KEY]``
    before each save, so every file of a ``checkpoint-N`` describes one instant. :attr:`params` is a live
    view of the current phase's params; the Trainer's loader collates one micro-batch ahead, so a change
    that must be exact at every step goes in ``prepare_inputs(inputs, params) -> inputs``, which runs on
    each training micro-batch right before the forward.
    """

    def __init__(
        self,
        engine: CurriculumEngine,
        *,
        prepare_inputs: Callable[[dict, PhaseParams], dict] | None = None,
        allow_fingerprint_mismatch: bool = False,
        restart_over: str = "remaining",
    ) -> None:
        super().__init__(engine, allow_fingerprint_mismatch, restart_over)
        if prepare_inputs is not None and not callable(prepare_inputs):
            raise CurriculumError(
                "CurriculumCallback: 'prepare_inputs' must be a callable (inputs, params) -> inputs, "
                f"got {prepare_inputs!r}"
            )
        self.prepare_inputs = prepare_inputs
        # Scratch of the optimizer step in progress (never in a checkpoint: a step is never split by one).
        self._losses: list[torch.Tensor] = []
        self._scaled = False  # the model normalised its loss by num_items_in_batch (the Trainer then sums)
        self._items: torch.Tensor | None = None  # labels kept by prepare_inputs in this step's micro-batches
        self._counted: Any = None  # the num_items_in_batch the Trainer counted before prepare_inputs
        self._shifts_labels = False  # the Trainer counts labels[..., 1:] (causal LM losses)
        self._average_tokens = False  # the Trainer counted num_items_in_batch over every rank
        self._model: Any = None  # whose gradients a renormalisation rescales
        self._missing_loss = False
        self._step_lr: float | None = None
        self._hooks: list[Any] = []
        self._epoch_end_at_evaluate = False
        self._before_evaluate: dict | None = None  # the random state before an epoch end's evaluation
        self._checkpoint: tuple[int, str] | None = None  # (global step, folder) of this run's last checkpoint
        self._reads_at_resume: int | None = None  # params reads at a resume right after a step-end phase change
        self._logged: int | None = None  # tracking: history records already in the Trainer's logs (None: none yet)

    # -- the model's forward -------------------------------------------------------------------

    def _check_collated(self, module: Any, args: tuple, kwargs: dict) -> None:
        """The first training forward after a resume at a step-end phase change:
        was the batch collated with the params?"""
        if not module.training or self._reads_at_resume is None:
            return
        if self.params.reads > self._reads_at_resume:
            logger.warning(
                "resumed from checkpoint-%d, written at the step a step-end transition changed the phase: the collator "
                "read the new phase's params for the first micro-batch, which the uninterrupted run collated "
                "in the old phase (the Trainer's data loader collates one micro-batch ahead); change the batch in "
                "prepare_inputs(inputs, params) to be exact",
                self.engine.clock.global_step,
            )
        self._reads_at_resume = None

    def _before_forward(self, module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        if not module.training:
            return None
        inputs = self.prepare_inputs(dict(kwargs), self.params)
        if not isinstance(inputs, dict):
            raise CurriculumError(f"prepare_inputs must return the inputs dict, got {type(inputs).__name__}")
        counted = inputs.get("num_items_in_batch")
        if counted is not None:  # count the labels the model will see, as the Trainer counts them
            labels = inputs.get("shift_labels")
            if labels is None:
                labels = inputs.get("labels")
                labels = labels[..., 1:] if labels is not None and self._shifts_labels else labels
            if isinstance(labels, torch.Tensor):
                kept = labels.ne(-100).sum()
                self._items = kept if self._items is None else self._items + kept
                self._counted = counted
        return args, inputs

    def _after_forward(self, module: Any, args: tuple, kwargs: dict, output: Any) -> Any:
        if not module.training:
            return None
        loss = _output_loss(output)
        if loss is None:
            self._missing_loss = True
            return None
        self._scaled = "num_items_in_batch" in kwargs
        if self._items is not None and _last_micro_batch():
            output = self._renormalise(output, loss)
            loss = _output_loss(output)
        self._losses.append(loss.detach().clone())  # not a view: the Trainer may scale the loss in place (DDP)
        return output

    def _renormalise(self, output: Any, loss: torch.Tensor) -> Any:
        """The step's last micro-batch: the Trainer counted ``num_items_in_batch`` before ``prepare_inputs``
        cropped the step's micro-batches, so scale the gradients accumulated so far and this loss by
        counted/kept, plus a constant (no gradient) that corrects the losses already added up for the log."""
        kept, counted, self._items, self._counted = self._items, self._counted, None, None
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if distributed and self._average_tokens:  # the Trainer counted the labels of every rank
            kept = kept.clone()
            torch.distributed.all_reduce(kept)
        counted = torch.as_tensor(counted, dtype=torch.float64).to(kept.device)
        if bool(kept == counted):
            return output
        factor = (counted / kept.to(torch.float64)).item()
        with torch.no_grad():
            for param in self._model.parameters():
                if param.grad is not None:
                    param.grad.mul_(factor)
        earlier = sum((x.to(loss.dtype) for x in self._losses), torch.zeros((), dtype=loss.dtype, device=loss.device))
        renormalised = loss * factor + (earlier * (factor - 1)).detach()
        if hasattr(output, "keys"):  # a dict or a ModelOutput
            output["loss"] = renormalised
        else:
            output.loss = renormalised
        return output

    def _step_loss(self, step: int) -> float:
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
        if self._scaled and self._average_tokens:
            # num_items_in_batch counted the tokens of every rank: the Trainer multiplies the loss by the
            # number of processes (after the forward), so that the mean over ranks is the mean per token
            total *= world
        if world > 1:  # every rank must see the same loss to take the same transition: the mean the Trainer logs
            torch.distributed.all_reduce(total)
            total /= world
        return total.item()

    # -- the Trainer's events ------------------------------------------------------------------

    def on_train_begin(
        self,
        args: Any,
        state: Any,
        control: Any,
        model: Any = None,
        optimizer: Any = None,
        lr_scheduler: Any = None,
        **kwargs: Any,
    ) -> None:
        callbacks = state.stateful_callbacks or {}
        self._bind(model, optimizer, lr_scheduler, callbacks.get(SCHEDULE_KEY), fresh=state.global_step == 0)
        for hook in self._hooks:
            hook.remove()
        self._hooks = [
            model.register_forward_pre_hook(self._check_collated, with_kwargs=True),
            model.register_forward_hook(self._after_forward, with_kwargs=True),
        ]
        if self.prepare_inputs is not None:
            self._hooks.append(model.register_forward_pre_hook(self._before_forward, with_kwargs=True))
        self._model, self._shifts_labels = model, _shifts_labels(model)
        self._average_tokens = bool(getattr(args, "average_tokens_across_devices", False))
        self._losses, self._missing_loss, self._epoch_end_at_evaluate, self._checkpoint = [], False, False, None
        self._before_evaluate = None
        self._items = self._counted = self._reads_at_resume = self._logged = None
        missing = f"no stateful_callbacks[{STATE_KEY!r}] in its {_TRAINER_STATE}"
        if self._start_or_restore(callbacks.get(STATE_KEY), state.global_step, "the Trainer", missing):
            at_epoch_end = state.epoch is not None and float(state.epoch).is_integer()
            if at_epoch_end and self.engine.clock.epoch < int(state.epoch):
                # Written on an epoch's last step, before that epoch's end (the Trainer resumes in the next epoch
                # without making it): made now, with the evaluation metrics of that epoch end, so its actions
                # act on the restored objects.
                before, kept = len(self.engine.history), callbacks.get(EPOCH_END_KEY)
                ok = isinstance(kept, dict) and kept.get("global_step") == state.global_step
                where = (
                    f"checkpoint-{state.global_step}, written on the last step of epoch {self.engine.clock.epoch} "
                    "before its end, without the evaluation metrics of that epoch end"
                )
                fix = "resume from a checkpoint written after its evaluation (save_strategy='epoch') or an earlier one"
                if self._missed_epoch_end(kept.get("metrics", {}) if ok else {}, where, fix) is not None:
                    self._logged = before  # tracking: the first log says the transition it made
            last = self.engine.history[-1] if len(self.engine.history) else None
            if last is not None and last.point == "step_end" and last.global_step == state.global_step:
                self._reads_at_resume = self.params.reads  # a collator reading params now reads the new phase early
        self._stash(state)
        report_before_loggers(self, calling_handler())  # tracking: before the report_to loggers, for on_log's values

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
        self._items = self._counted = None  # renormalised at the step's last micro-batch, or nothing to renormalise
        loss = self._step_loss(state.global_step)
        self.engine.step_end(loss=loss, **({"lr": self._step_lr} if self._step_lr is not None else {}))
        if control.should_save or control.should_evaluate:  # set by the Trainer's flow callback, which runs first
            self._stash(state)

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.epoch is None or (state.epoch != int(state.epoch) and control.should_training_stop):
            return  # stopped mid-epoch (max_steps): no epoch end. (A stream, an IterableDataset, ends at a fraction.)
        # No step since the last epoch end: resumed from a checkpoint written after the end of a stream's pass, the
        # Trainer skipped that pass's batches and ends it (and evaluates) again.
        again = self.engine.clock.step_in_epoch == 0
        if control.should_evaluate:  # the Trainer evaluates next: the epoch end waits for its metrics
            # A checkpoint written at this epoch's last step holds the random state of now, which a run resumed
            # from it starts the next epoch from (the Trainer reloads it there): the evaluation gives back what it
            # draws (its loader's seed, ...), so the uninterrupted run starts the next epoch from it too.
            self._before_evaluate, self._epoch_end_at_evaluate = random_state(), not again
        elif not again:
            self._epoch_end(args, state, {})

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if self._before_evaluate is not None:
            set_random_state(self._before_evaluate)
            self._before_evaluate = None
        if self._epoch_end_at_evaluate:
            self._epoch_end_at_evaluate = False
            self._epoch_end(args, state, metrics or {})

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._checkpoint = (state.global_step, os.path.join(args.output_dir, f"checkpoint-{state.global_step}"))
        stashed = (state.stateful_callbacks or {}).get(STATE_KEY, {}).get("clock", {}).get("global_step")
        if stashed != self.engine.clock.global_step and args.should_save:  # a save nobody announced at step end
            self._rewrite(self._checkpoint[1], STATE_KEY, self._stash(state))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    # -- state ---------------------------------------------------------------------------------

    def _epoch_end(self, args: Any, state: Any, metrics: Mapping[str, Any]) -> None:
        metrics = real_metrics(metrics)
        self.engine.epoch_end(**metrics)
        self._stash(state)
        if metrics and self._checkpoint is not None and self._checkpoint[0] == state.global_step and args.should_save:
            # This step's checkpoint was written before the epoch end, as it should (every file of it at one
            # instant); a run resumed from it makes this epoch end again, and needs its evaluation metrics.
            self._rewrite(self._checkpoint[1], EPOCH_END_KEY, {"global_step": state.global_step, "metrics": metrics})

    def _stash(self, state: Any) -> dict:
        engine_state = self.engine.state_dict()
        if state.stateful_callbacks is None:
            state.stateful_callbacks = {}
        state.stateful_callbacks[STATE_KEY] = engine_state
        if self._wrapped is not None:
            state.stateful_callbacks[SCHEDULE_KEY] = self._wrapped.state_dict()
        return engine_state

    @staticmethod
    def _rewrite(folder: str, key: str, value: dict) -> None:
        """Set ``stateful_callbacks[key]`` in the ``trainer_state.json`` of the checkpoint written at this step."""
        path = os.path.join(folder, _TRAINER_STATE)
        if not os.path.isfile(path):
            return
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        data.setdefault("stateful_callbacks", {})[key] = value
        text = json.dumps(data, indent=2, sort_keys=True) + "\n"  # the Trainer's own format
        atomic_write(path, lambda f: f.write(text.encode("utf-8")))


class _MixtureResume(TrainerCallback):
    """Puts the mixture back where the checkpoint a run resumes from left it."""

    def __init__(self, mixture: Any) -> None:
        self.mixture = mixture

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == 0:
            return
        saved = (state.stateful_callbacks or {}).get(MIXTURE_KEY)
        if saved is None:
            raise CurriculumError(
                f"MixtureTrainer: the Trainer resumed at step {state.global_step} from a checkpoint without the "
                f"mixture's position (no stateful_callbacks[{MIXTURE_KEY!r}] in its {_TRAINER_STATE}); "
                "resume from a checkpoint a MixtureTrainer wrote"
            )
        self.mixture.load_state_dict(saved)  # refuses a position of other sources, seed or ranks


class MixtureTrainerMixin:
    """A ``Trainer`` that reads its training batches from a mixture, drawn at each optimizer step
    (docs/mixtures.md).

    ``mixture``: a sampler like ``policies.MixtureSampler`` whose ``batch_size`` is the optimizer step's
    examples on this rank (``per_device_train_batch_size * gradient_accumulation_steps``);
    ``train_dataset``: a ``ConcatDataset`` of the sources in the order of its ``sizes``. The Trainer's
    loader yields placeholders (it fetches ahead): the step's examples are drawn when the Trainer collects
    the step's micro-batches, after the previous step's end, so a mix change made at a step end applies
    from the next step. Micro-batch ``i`` holds the step's examples ``i, i + accum, ...``. The mixture's
    position after each draw goes in ``stateful_callbacks[MIXTURE_KEY]``, so each checkpoint holds it.
    """

    def __init__(self, *args: Any, mixture: Any, **kwargs: Any) -> None:
        if not callable(getattr(mixture, "next_batch", None)):
            raise CurriculumError(
                f"MixtureTrainer: mixture must be a mixture sampler (policies.MixtureSampler), got {mixture!r}"
            )
        super().__init__(*args, **kwargs)
        self.mixture = mixture
        self.add_callback(_MixtureResume(mixture))

    def get_train_dataloader(self) -> torch.utils.data.DataLoader:
        per_step = self.args.train_batch_size * self.args.gradient_accumulation_steps
        if self.mixture.batch_size != per_step:
            raise CurriculumError(
                f"MixtureTrainer: the mixture draws {self.mixture.batch_size} examples a step and the Trainer "
                f"trains on {per_step} (per_device_train_batch_size x gradient_accumulation_steps); "
                f"build the sampler with batch_size={per_step}"
            )
        ranks = (self.mixture.rank, self.mixture.world_size)
        if ranks != (self.args.process_index, self.args.world_size):
            raise CurriculumError(
                f"MixtureTrainer: the mixture is rank {ranks[0]} of {ranks[1]} and this process rank "
                f"{self.args.process_index} of {self.args.world_size}; build the sampler after the "
                "TrainingArguments (they start torch.distributed), or pass it rank= and world_size="
            )
        examples = len(self.train_dataset) if self.train_dataset is not None else None
        if examples != sum(self.mixture.sizes.values()):
            raise CurriculumError(
                f"MixtureTrainer: train_dataset has {examples} examples and the mixture's sources "
                f"{sum(self.mixture.sizes.values())}; pass train_dataset=ConcatDataset(sources) in the order of sizes"
            )
        steps = max(1, examples // (per_step * self.args.world_size))
        tickets = range(steps * per_step * self.args.world_size)  # placeholders: the loader draws ahead
        return self.accelerator.prepare(torch.utils.data.DataLoader(tickets, batch_size=self.args.train_batch_size))

    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, *args: Any, **kwargs: Any) -> Any:
        return super().get_batch_samples(self._draw(epoch_iterator, num_batches), num_batches, *args, **kwargs)

    def _draw(self, tickets: Any, num_batches: int) -> Any:
        """The step's micro-batches, drawn from the mixture when the first one is asked for."""
        accum, examples = self.args.gradient_accumulation_steps, None
        for i, _ in zip(range(num_batches), tickets):
            if examples is None:
                examples = self.mixture.flat(self.mixture.next_batch())
                self.state.stateful_callbacks[MIXTURE_KEY] = self.mixture.state_dict()
            yield self.data_collator([self.train_dataset[j] for j in examples[i::accum]])


class MixtureTrainer(MixtureTrainerMixin, Trainer):
    """``transformers.Trainer`` with :class:`MixtureTrainerMixin`:
    ``MixtureTrainer(model, args, train_dataset=ConcatDataset(sources), mixture=sampler, ...)``."""
