"""Resumed equals uninterrupted under the real Hugging Face Trainer, over the cross product of what users vary.

Axes: the training set (read in order, shuffled by the Trainer's own sampler, an ``IterableDataset`` that shuffles
each pass from torch's global generator; the Trainer makes its loader itself and skips what a mid-epoch checkpoint
had consumed), dropout in the model or not, the checkpoint resumed from (mid-epoch, an epoch's last step by
``save_strategy="steps"``, the epoch end as ``save_strategy="epoch"`` writes it), evaluation each epoch or not,
``gradient_accumulation_steps`` 1 or 2, and a transition with ``RestartLR`` (on the Trainer's own linear schedule,
made restartable) at a step end (the first step of epoch 1) or at the end of epoch 0 (reading ``eval_loss`` when
the Trainer evaluates). Each run is 2 epochs of 4 micro-batches. Each cell resumes and must end bit-identical to
the uninterrupted run (weights, optimizer state, per-step losses and LRs, epoch ends and their metrics, history),
without a warning: every cell is exact (the table in docs/integrations.md). The uninterrupted run is shared by the
cells that differ only in the checkpoint.

The default test command runs every cell.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from transformers import Trainer, TrainingArguments

from engine import Curriculum, CurriculumEngine, Phase, Transition
from engine.integrations.hf import CurriculumCallback
from policies import MetricBelow, MinEpoch, MinSteps, RestartLR, all_of
from tests.hf_tiny import DropoutLM, InOrderTrainer, SaveAtEpochEnd, StreamedWindows, crop
from tests.utils import TinyLM, Windows, matrix_cells, record_calls, run_cache, same_tensors

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

MICRO_BATCHES, EPOCHS = 4, 2
AXES = {
    "loader": ("plain", "shuffled", "iterable"),
    "dropout": (False, True),
    "checkpoint": ("mid", "last", "epoch"),
    "evaluate": (False, True),
    "accumulate": (1, 2),
    "transition": ("step_end", "epoch_end"),
}
RUN_AXES = [axis for axis in AXES if axis != "checkpoint"]


def curriculum(transition: str, accumulate: int, evaluate: bool) -> Curriculum:
    if transition == "step_end":
        guard = MinSteps(MICRO_BATCHES // accumulate + 1)
    else:
        guard = all_of(MinEpoch(1), MetricBelow("eval_loss", 1e6)) if evaluate else MinEpoch(1)
    return Curriculum(
        [Phase("a", params={"seq_len": 6}), Phase("b", params={"seq_len": 12})],
        [Transition("a", "b", [guard], actions=[RestartLR()], when=transition)],
    )


def train(out: Path, run: tuple, resume=None):
    """One run of EPOCHS epochs with a checkpoint at every step and after each epoch end; returns (engine, calls,
    trainer)."""
    kind, dropout, evaluate, accumulate, transition = run
    engine = CurriculumEngine(curriculum(transition, accumulate, evaluate))
    calls = record_calls(engine)
    steps = EPOCHS * MICRO_BATCHES // accumulate
    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=6,
        gradient_accumulation_steps=accumulate,
        num_train_epochs=EPOCHS,
        # an IterableDataset has no length: the run is told its steps (the epochs then end where the stream does)
        **({"max_steps": steps} if kind == "iterable" else {}),
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="steps",
        save_steps=1,
        eval_strategy="epoch" if evaluate else "no",
        per_device_eval_batch_size=24,
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    trainer = (InOrderTrainer if kind == "plain" else Trainer)(
        model=DropoutLM() if dropout else TinyLM(),
        args=args,
        train_dataset=StreamedWindows() if kind == "iterable" else Windows(),
        eval_dataset=Windows(),
        callbacks=[CurriculumCallback(engine, prepare_inputs=crop), *([] if resume else [SaveAtEpochEnd()])],
    )
    trainer.train(resume_from_checkpoint=resume)
    return engine, calls, trainer


def timeless(calls: list) -> list:
    """The calls with the evaluation's timings left out of the epoch ends' metrics."""
    return [
        (*c[:2], {k: v for k, v in c[2].items() if not k.endswith(("_runtime", "_per_second"))})
        if c[0] == "epoch"
        else c
        for c in calls
    ]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """One uninterrupted run per setting of the axes other than the checkpoint, made when first needed."""
    return run_cache(tmp_path_factory, train)


def cells():
    return matrix_cells(AXES)


@pytest.mark.parametrize("cell", list(cells()))
def test_resume_is_exact_or_warned(uninterrupted, tmp_path, caplog, cell):
    """Resumed from the cell's checkpoint: bit-identical to the uninterrupted run, without a warning."""
    run = tuple(cell[axis] for axis in RUN_AXES)
    out, engine, calls, trainer = uninterrupted(run)
    steps_per_epoch = MICRO_BATCHES // cell["accumulate"]
    move = engine.history[1]  # the uninterrupted run's transition, which the resumed runs make or carry
    assert (move.dest, move.global_step) == ("b", steps_per_epoch + (cell["transition"] == "step_end"))
    step = 1 if cell["checkpoint"] == "mid" else steps_per_epoch
    folder = out / "kept" / f"{'epoch' if cell['checkpoint'] == 'epoch' else 'step'}-{step}"
    with caplog.at_level(logging.WARNING, logger="engine.integrations.hf"):
        resumed, rest, again = train(tmp_path, run, resume=str(folder))
    assert [r.getMessage() for r in caplog.records if r.name == "engine.integrations.hf"] == []  # every cell exact
    done = calls.index(next(c for c in calls if c[:2] == ("step", step))) + 1 + (cell["checkpoint"] == "epoch")
    assert timeless(rest) == timeless(calls[done:])
    assert [r.comparable() for r in resumed.history] == [r.comparable() for r in engine.history]
    assert same_tensors(again.model.state_dict(), trainer.model.state_dict())
    assert same_tensors(again.optimizer.state_dict(), trainer.optimizer.state_dict())
