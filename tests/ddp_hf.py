"""One rank of the 2-process Hugging Face Trainer runs that tests/test_integrations_hf.py launches.

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_hf.py OUT_DIR

gloo on CPU. Each rank's data differ: rank 0's labels are a function of the tokens (learnable),
rank 1's are noise, so the ranks' losses part at once. Three runs, one after the other, each of 12
optimizer steps (64 windows, 4 per micro-batch, 2 micro-batches a step): ``mean``, a model that
averages its own loss (the Trainer divides it by the accumulation), and ``tokens``, one that
divides its loss sum by the Trainer's ``num_items_in_batch`` (as Hugging Face language models do),
each with ``logging_steps=1``; then ``quiet``, the second with ``logging_steps=5``. DDP's
``find_unused_parameters`` is off in the first two (the forward's loss tensor reaches the Trainer
as it is) and on in the third (DDP hands the Trainer another tensor). Each rank writes
``OUT_DIR/<run>.rank<R>.json``: the losses its engine saw, its own per-step (loss sum, token count)
of each micro-batch, the losses the Trainer logged and the engine's history. A fourth run, ``crop``,
is ``tokens`` with a ``prepare_inputs`` that crops each micro-batch to the phase's ``seq_len`` (6 in
``a``, 12 in ``b``): the Trainer counts ``num_items_in_batch`` before the crop, the callback
renormalises.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from engine import Curriculum, CurriculumEngine, Phase, Point, Transition
from engine.integrations.hf import CurriculumCallback
from policies import MetricBelow
from tests.utils import HF_LENGTH, HF_VOCAB, TinyLM, TokenCountLM

WINDOWS = 64
THRESHOLD = 2.35  # the mean over ranks crosses it at step 5, rank 0's own loss at step 3; rank 1's never does


class RankWindows(torch.utils.data.Dataset):
    """Rank 0: labels = (3 x + 1) mod V, learnable; rank 1: labels drawn at random, noise."""

    def __len__(self) -> int:
        return WINDOWS

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        x = torch.randint(0, HF_VOCAB, (HF_LENGTH,), generator=g)
        noise = torch.distributed.get_rank() == 1
        return {
            "input_ids": x,
            "labels": torch.randint(0, HF_VOCAB, (HF_LENGTH,), generator=g) if noise else (x * 3 + 1) % HF_VOCAB,
        }


class PerStep(TrainerCallback):
    """Cuts the model's record of micro-batches at each optimizer step."""

    def __init__(self) -> None:
        self.steps: list[list[tuple[float, int]]] = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.steps.append(model.seen)
        model.seen = []


def crop(inputs, params):
    n = params["seq_len"]
    return {k: v[:, :n] if k in ("input_ids", "labels") else v for k, v in inputs.items()}


def run(
    out: Path, name: str, model: TinyLM, logging_steps: int, find_unused_parameters: bool, prepare_inputs=None
) -> None:
    phases = (
        [Phase("a", params={"seq_len": 6}), Phase("b", params={"seq_len": 12})]
        if prepare_inputs
        else [Phase("a"), Phase("b")]
    )
    curriculum = Curriculum(phases, [Transition("a", "b", [MetricBelow("loss", THRESHOLD)], when=Point.STEP_END)])
    engine = CurriculumEngine(curriculum)
    seen, step_end = [], engine.step_end

    def spy(loss, **metrics):
        seen.append(loss)
        return step_end(loss=loss, **metrics)

    engine.step_end = spy
    per_step = PerStep()
    args = TrainingArguments(
        output_dir=str(out / name),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        num_train_epochs=3,
        learning_rate=0.1,
        lr_scheduler_type="constant",
        logging_steps=logging_steps,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        ddp_backend="gloo",
        ddp_timeout=120,
        ddp_find_unused_parameters=find_unused_parameters,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=RankWindows(),
        callbacks=[CurriculumCallback(engine, prepare_inputs=prepare_inputs), per_step],
    )
    trainer.train()
    rank = torch.distributed.get_rank()
    record = {
        "engine": seen,
        "own": per_step.steps,
        "logged": [h["loss"] for h in trainer.state.log_history if "loss" in h and "step" in h],
        "history": [{k: v for k, v in r.items() if k != "wall_time"} for r in engine.history.to_dicts()],
    }
    (out / f"{name}.rank{rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    out = Path(sys.argv[1])
    run(out, "mean", TinyLM(), logging_steps=1, find_unused_parameters=False)
    run(out, "tokens", TokenCountLM(), logging_steps=1, find_unused_parameters=False)
    run(out, "quiet", TokenCountLM(), logging_steps=5, find_unused_parameters=True)
    run(out, "crop", TokenCountLM(), logging_steps=1, find_unused_parameters=False, prepare_inputs=crop)
    # The Trainer leaves the process group up; exiting with it alive lets gloo's threads outlive the interpreter
    # and abort the process now and then ("terminate called without an active exception").
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
