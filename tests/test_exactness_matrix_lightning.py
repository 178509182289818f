"""Resumed equals uninterrupted under real Lightning, over the cross product of what users vary.

Axes: the train loader (a plain ``DataLoader`` with shuffle off and on, a loader that restores its position, an
``IterableDataset`` that shuffles each pass from torch's global generator), dropout in the model or not, the
checkpoint resumed from (mid-epoch, an epoch's last step by ``every_n_train_steps``, the epoch end by
``ModelCheckpoint``'s default), validation each epoch or not, ``accumulate_grad_batches`` 1 or 2, and a transition
with ``RestartLR`` at a step end (the first step of epoch 1) or at the end of epoch 0. Each run is 2 epochs of 4
batches. Each cell resumes and must end bit-identical to the uninterrupted run (weights, optimizer state, per-step
losses and LRs, epoch ends, history), or the callback warns once at resume (:func:`expected_warning`, the table in
docs/integrations.md). The uninterrupted run is shared by the cells that differ only in the checkpoint.

The default test command runs every cell.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from engine import Curriculum, CurriculumEngine, Phase, Transition
from engine.integrations.lightning import CurriculumCallback
from policies import MinEpoch, MinSteps, RestartLR
from tests.lightning_tiny import PositionLoader, ShuffledRows
from tests.utils import lightning_dataset, matrix_cells, record_calls, run_cache, same_tensors

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:lightning.*", "ignore:.*LeafSpec.*")

BATCHES, EPOCHS = 4, 2
AXES = {
    "loader": ("plain", "shuffled", "stateful", "iterable"),
    "dropout": (False, True),
    "checkpoint": ("mid", "last", "epoch"),
    "evaluate": (False, True),
    "accumulate": (1, 2),
    "transition": ("step_end", "epoch_end"),
}
RUN_AXES = [axis for axis in AXES if axis != "checkpoint"]


def expected_warning(loader: str, checkpoint: str, evaluate: bool) -> str | None:
    """What the callback says at resume in this cell (None: the resume is bit-identical)."""
    if checkpoint == "mid" and loader != "stateful":
        return "cannot restore its position"  # Lightning starts the epoch's data again at its first batch
    if checkpoint == "last" and loader == "iterable" and evaluate:
        return "a dataset that draws from torch's global generator as its iteration starts"
    return None


class Module(pl.LightningModule):
    def __init__(self, params, dropout: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.params = params
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5) if dropout else nn.Identity(), nn.Linear(8, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y * self.params["scale"])

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=0.05)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=EPOCHS * BATCHES)  # made restartable
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def curriculum(transition: str, accumulate: int) -> Curriculum:
    guard = MinSteps(BATCHES // accumulate + 1) if transition == "step_end" else MinEpoch(1)
    return Curriculum(
        [Phase("a", params={"scale": 1.0}), Phase("b", params={"scale": 2.0})],
        [Transition("a", "b", [guard], actions=[RestartLR()], when=transition)],
    )


def loader(kind: str):
    data = lightning_dataset(batches=BATCHES)
    if kind == "stateful":
        return PositionLoader(data, batch_size=2)
    if kind == "iterable":
        return torch.utils.data.DataLoader(ShuffledRows(data), batch_size=2)
    return torch.utils.data.DataLoader(data, batch_size=2, shuffle=kind == "shuffled")


def fit(root: Path, run: tuple, ckpt: Path | None = None):
    """One run to EPOCHS epochs with a checkpoint at every step and at each epoch end; returns (engine, calls,
    trainer)."""
    kind, dropout, evaluate, accumulate, transition = run
    engine = CurriculumEngine(curriculum(transition, accumulate))
    calls = record_calls(engine)
    callback = CurriculumCallback(engine)
    checkpoints = [
        ModelCheckpoint(dirpath=root / "step", every_n_train_steps=1, save_top_k=-1, filename="{step}"),
        ModelCheckpoint(dirpath=root / "epoch", save_top_k=-1, filename="{step}"),  # the defaults: each epoch end
    ]
    trainer = pl.Trainer(
        max_epochs=EPOCHS,
        accumulate_grad_batches=accumulate,
        callbacks=[callback, *checkpoints],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        num_sanity_val_steps=0,
    )
    val = torch.utils.data.DataLoader(lightning_dataset(batches=BATCHES), batch_size=4) if evaluate else None
    trainer.fit(Module(callback.params, dropout), loader(kind), val, ckpt_path=ckpt)
    return engine, calls, trainer


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """One uninterrupted run per setting of the axes other than the checkpoint, made when first needed."""
    return run_cache(tmp_path_factory, fit)


def cells():
    return matrix_cells(AXES)


@pytest.mark.parametrize("cell", list(cells()))
def test_resume_is_exact_or_warned(uninterrupted, tmp_path, caplog, cell):
    """Resumed from the cell's checkpoint: bit-identical to the uninterrupted run, or one warning at resume."""
    run = tuple(cell[axis] for axis in RUN_AXES)
    root, engine, calls, trainer = uninterrupted(run)
    steps_per_epoch = BATCHES // cell["accumulate"]
    move = engine.history[1]  # the uninterrupted run's transition, which the resumed runs make or carry
    assert (move.dest, move.global_step) == ("b", steps_per_epoch + (cell["transition"] == "step_end"))
    step = 1 if cell["checkpoint"] == "mid" else steps_per_epoch
    ckpt = root / ("epoch" if cell["checkpoint"] == "epoch" else "step") / f"step={step}.ckpt"
    with caplog.at_level(logging.WARNING, logger="engine.integrations.lightning"):
        resumed, rest, again = fit(tmp_path, run, ckpt=ckpt)
    warnings = [r.getMessage() for r in caplog.records if r.name == "engine.integrations.lightning"]
    warning = expected_warning(cell["loader"], cell["checkpoint"], cell["evaluate"])
    if warning is not None:
        assert len(warnings) == 1 and warning in warnings[0], warnings
        return
    assert warnings == []
    assert again.global_step == resumed.clock.global_step == EPOCHS * steps_per_epoch
    done = calls.index(next(c for c in calls if c[:2] == ("step", step))) + 1 + (cell["checkpoint"] == "epoch")
    assert [c for c in rest if c[0] == "step"] == [c for c in calls[done:] if c[0] == "step"]
    assert [c[:2] for c in rest] == [c[:2] for c in calls[done:]]
    assert [r.comparable() for r in resumed.history] == [r.comparable() for r in engine.history]
    assert same_tensors(again.lightning_module.state_dict(), trainer.lightning_module.state_dict())
    assert same_tensors(again.optimizers[0].state_dict(), trainer.optimizers[0].state_dict())
