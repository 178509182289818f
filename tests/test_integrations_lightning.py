"""The Lightning integration (engine.integrations.lightning.CurriculumCallback), against real Lightning on CPU.

A 5-parameter linear model, 10 batches per epoch, accumulate_grad_batches=3: each epoch has 4
optimizer steps, the last one a single micro-batch (Lightning steps on an epoch's last batch).
Under two processes (strategy="ddp", gloo): tests/ddp_lightning.py.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import sys
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import LambdaCallback, ModelCheckpoint
from torch import nn

from engine import Curriculum, CurriculumEngine, CurriculumError, Phase, Point, Transition
from engine.integrations.lightning import CurriculumCallback
from policies import MetricBelow, MinEpoch, MinSteps, Restartable, RestartLR, SetCutoff, StagedCosine, all_of
from tests import ddp_lightning
from tests.ddp_lightning import THRESHOLD as DDP_THRESHOLD
from tests.lightning_tiny import PositionLoader, Tiny
from tests.utils import launch, record_calls, same_tensors
from tests.utils import lightning_dataset as dataset

EPOCHS, BATCHES, ACCUM = 3, 10, 3
STEPS_PER_EPOCH = 4  # 3 + 3 + 3 + 1 micro-batches

# Lightning's own advice (checkpoint dirpath changed on resume, few workers, ...) is noise here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:lightning.*", "ignore:.*LeafSpec.*")


def curriculum(validation: bool = True) -> Curriculum:
    """a -> b at step 6 restarting the LR; b -> c at the epoch end after epoch 2 (reading val_loss, or not)."""
    epoch_guard = all_of(MinEpoch(2), MetricBelow("val_loss", 1e6)) if validation else MinEpoch(2)
    return Curriculum(
        [Phase("a"), Phase("b"), Phase("c")],
        [
            Transition("a", "b", [MinSteps(6)], actions=[RestartLR()], when=Point.STEP_END),
            Transition("b", "c", [epoch_guard]),
        ],
    )


def spy(engine: CurriculumEngine) -> list:
    """Record every step_end (step, loss) and epoch_end (epoch, metrics) the callback makes."""
    calls, step_end, epoch_end = [], engine.step_end, engine.epoch_end

    def on_step(loss, **metrics):
        calls.append(("step", engine.clock.global_step + 1, loss))
        return step_end(loss=loss, **metrics)

    def on_epoch(**metrics):
        calls.append(("epoch", engine.clock.epoch + 1, metrics))
        return epoch_end(**metrics)

    engine.step_end, engine.epoch_end = on_step, on_epoch
    return calls


def fit(
    root: Path, ckpt: Path | None = None, loader=PositionLoader, engine: CurriculumEngine | None = None, module=Tiny
):
    """One run to EPOCHS epochs, writing checkpoints three ways; returns (engine, calls, trainer)."""
    engine = engine or CurriculumEngine(curriculum())
    calls = spy(engine)
    checkpoints = [
        ModelCheckpoint(
            dirpath=root / "steps", every_n_train_steps=2, save_top_k=-1, filename="{step}"
        ),  # on_train_batch_end
        ModelCheckpoint(dirpath=root / "epoch", save_top_k=-1, filename="{step}"),  # on_train_epoch_end
        ModelCheckpoint(
            dirpath=root / "val", monitor="val_loss", save_top_k=-1, filename="{step}", save_on_train_epoch_end=False
        ),  # on_validation_end
    ]
    trainer = pl.Trainer(
        max_epochs=EPOCHS,
        accumulate_grad_batches=ACCUM,
        callbacks=[CurriculumCallback(engine), *checkpoints],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        num_sanity_val_steps=0,
        deterministic=True,
    )
    trainer.fit(
        module(), loader(dataset(), batch_size=2), torch.utils.data.DataLoader(dataset(), batch_size=5), ckpt_path=ckpt
    )
    return engine, calls, trainer


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """The uninterrupted run, with its checkpoints."""
    root = tmp_path_factory.mktemp("full")
    engine, calls, trainer = fit(root)
    return root, engine, calls, trainer


def history(engine):
    return [r.comparable() for r in engine.history]


def test_one_step_end_per_optimizer_step_with_the_mean_micro_batch_loss(full):
    """accumulate_grad_batches=3 over 10 batches: 4 step_ends per epoch (the last of one micro-batch), epoch ends at 4,
    8, 12."""
    _, engine, calls, trainer = full
    steps = [c for c in calls if c[0] == "step"]
    assert [c[1] for c in steps] == list(range(1, EPOCHS * STEPS_PER_EPOCH + 1))
    assert engine.clock.global_step == trainer.global_step == 12 and engine.clock.epoch == EPOCHS
    assert [i for i, c in enumerate(calls) if c[0] == "epoch"] == [4, 9, 14]
    assert all(isinstance(c[2], float) and c[2] > 0 for c in steps)
    assert "val_loss" in calls[4][2] and calls[4][2]["val_loss"] > 0


def test_transitions_fire_at_the_expected_points_with_the_restart(full):
    """a->b at step 6 (step_end) restarts the wrapped cosine; b->c at the epoch end after step 8, with val_loss as
    evidence."""
    _, engine, calls, _ = full
    ab, bc = [r for r in engine.history if r.source is not None]  # (the start may be a record too)
    assert (ab.source, ab.dest, ab.global_step, ab.point) == ("a", "b", 6, "step_end")
    assert ab.actions[0].effect["lr"][1] == 0.05 and ab.warnings == []
    assert (bc.source, bc.dest, bc.global_step, bc.epoch, bc.point) == ("b", "c", 8, 2, "epoch_end")
    val_loss = [c[2] for c in calls if c[0] == "epoch"][1]["val_loss"]
    assert bc.guards[0].evidence["MetricBelow('val_loss', 1000000.0)"]["value"] == val_loss


def assert_continues(root, engine, calls, where, step, out, validation=True):
    resumed, rest, trainer = fit(
        out, ckpt=root / where / f"step={step}.ckpt", engine=CurriculumEngine(curriculum(validation))
    )
    assert trainer.global_step == resumed.clock.global_step == 12
    done = calls.index(next(c for c in calls if c[:2] == ("step", step))) + 1
    if where == "epoch":
        done += 1  # the checkpoint was written after the epoch end
    return resumed, rest, calls[done:]


@pytest.mark.parametrize(
    "where, step",
    [
        ("epoch", 4),  # saved on_train_epoch_end (the ModelCheckpoint default)
        ("val", 8),  # saved on_validation_end, before the epoch end whose transition reads val_loss
        ("steps", 6),  # mid-epoch, the step a->b fires, with a data loader that resumes its position
        ("steps", 10),  # mid-epoch in the last phase
    ],
)
def test_resume_continues_exactly(full, tmp_path, where, step):
    """Resumed from a checkpoint, the per-step losses, epoch-end metrics and history equal the uninterrupted run's."""
    root, engine, calls, _ = full
    resumed, rest, expected = assert_continues(root, engine, calls, where, step, tmp_path)
    assert rest == expected
    assert history(resumed) == history(engine)


class NumpyNoise(Tiny):
    """Adds noise drawn from numpy's global generator to each batch, as many augmentations do."""

    def training_step(self, batch, batch_idx):
        x, y = batch
        noise = torch.from_numpy(np.random.normal(scale=0.5, size=tuple(x.shape))).to(x.dtype)
        return nn.functional.mse_loss(self.lin(x + noise), y)


def test_resume_mid_epoch_continues_numpys_random_draws(tmp_path):
    """A training step that draws from numpy's global generator: resumed mid-epoch in a process whose numpy state is
    another, the losses equal the uninterrupted run's (the checkpoint holds numpy's state with torch's and Python's)."""
    np.random.seed(0)
    engine, calls, _ = fit(tmp_path / "full", module=NumpyNoise)
    np.random.seed(1)  # a new process: another state
    resumed, rest, _ = fit(
        tmp_path / "again",
        ckpt=tmp_path / "full" / "steps" / "step=6.ckpt",
        engine=CurriculumEngine(curriculum()),
        module=NumpyNoise,
    )
    done = calls.index(next(c for c in calls if c[:2] == ("step", 6))) + 1
    assert rest == calls[done:]
    assert history(resumed) == history(engine)


@pytest.mark.parametrize("step", [4, 8])
def test_resume_at_an_epochs_last_batch_is_exact_without_validation_guards(tmp_path, step):
    """Saved on_train_batch_end at an epoch's last batch: Lightning skips that epoch's end; the callback makes it at
    resume."""
    engine, calls, _ = fit(tmp_path / "full", engine=CurriculumEngine(curriculum(validation=False)))
    resumed, rest, expected = assert_continues(
        tmp_path / "full", engine, calls, "steps", step, tmp_path / "again", validation=False
    )
    assert [c for c in rest if c[0] == "step"] == [c for c in expected if c[0] == "step"]
    assert [c[:2] for c in rest] == [c[:2] for c in expected]  # the epoch end comes first, at resume
    assert history(resumed) == history(engine)


def test_resume_mid_epoch_with_a_plain_data_loader_is_lightnings_limit(tmp_path, caplog):
    """With a plain DataLoader Lightning restarts the epoch's data at its first batch: the engine stays on Lightning's
    step, the losses differ, and the callback says so at resume, naming the loader that makes it exact."""
    engine, calls, _ = fit(tmp_path / "full", loader=torch.utils.data.DataLoader)
    with caplog.at_level(logging.WARNING, logger="engine.integrations.lightning"):
        resumed, rest, trainer = fit(
            tmp_path / "again", ckpt=tmp_path / "full" / "steps" / "step=6.ckpt", loader=torch.utils.data.DataLoader
        )
    assert "cannot restore its position" in caplog.text and "StatefulDataLoader" in caplog.text
    assert trainer.global_step == resumed.clock.global_step == 12
    assert [c[1] for c in rest if c[0] == "step"] == list(range(7, 13))
    assert [c[2] for c in rest if c[0] == "step"] != [c[2] for c in calls if c[0] == "step" and c[1] > 6]
    assert [r.global_step for r in resumed.history] == [r.global_step for r in engine.history]


def test_resume_at_the_first_epochs_last_batch_with_a_validation_guard_is_refused(full, tmp_path):
    """Saved before the first validation ever ran: the epoch end cannot have val_loss, a clear error names the
    checkpoint to use."""
    with pytest.raises(
        CurriculumError, match=r"last batch of epoch 0, before its validation.*'val_loss'.*saved at that epoch's end"
    ):
        fit(tmp_path, ckpt=full[0] / "steps" / "step=4.ckpt")


def test_resume_at_an_epochs_last_batch_gives_the_epoch_end_the_checkpoint_metrics(full, tmp_path, caplog):
    """Saved at the last batch of epoch 1 (before its validation): the epoch end made at resume sees the metrics of that
    moment."""
    root, engine, calls, _ = full
    with caplog.at_level(logging.WARNING, logger="engine.integrations.lightning"):
        resumed, rest, _ = fit(tmp_path, ckpt=root / "steps" / "step=8.ckpt")
    assert "which Lightning does not run again: its epoch end gets the metrics of the checkpoint moment" in caplog.text
    epoch_ends = [c for c in calls if c[0] == "epoch"]
    assert rest[0][:2] == ("epoch", 2) and rest[0][2]["val_loss"] == epoch_ends[0][2]["val_loss"]  # epoch 0's
    assert rest[0][2]["val_loss"] != epoch_ends[1][2]["val_loss"]
    assert [r.global_step for r in resumed.history] == [r.global_step for r in engine.history]


def test_resume_from_a_checkpoint_without_engine_state_is_refused(full, tmp_path):
    """A checkpoint written without the callback cannot silently restart the curriculum at phase one."""
    root = full[0]
    ckpt = torch.load(root / "epoch" / "step=4.ckpt", weights_only=False)
    ckpt["callbacks"] = {k: v for k, v in ckpt["callbacks"].items() if "CurriculumCallback" not in k}
    torch.save(ckpt, tmp_path / "foreign.ckpt")
    with pytest.raises(CurriculumError, match="resumed at step 4 from a checkpoint without engine state"):
        fit(tmp_path / "run", ckpt=tmp_path / "foreign.ckpt")


def test_allow_fingerprint_mismatch_passes_through(full, tmp_path):
    """A changed curriculum is refused at resume, naming the option; with allow_fingerprint_mismatch=True the run goes
    on."""
    changed = Curriculum(
        [Phase("a"), Phase("b"), Phase("c")],
        [
            Transition("a", "b", [MinSteps(7)], actions=[RestartLR()], when=Point.STEP_END),
            Transition("b", "c", [MinEpoch(2)]),
        ],
    )
    ckpt = full[0] / "epoch" / "step=4.ckpt"
    with pytest.raises(CurriculumError, match="allow_fingerprint_mismatch=True"):
        fit(tmp_path / "refused", ckpt=ckpt, engine=CurriculumEngine(changed))
    engine = CurriculumEngine(changed)
    trainer = pl.Trainer(
        max_epochs=EPOCHS,
        accumulate_grad_batches=ACCUM,
        logger=False,
        enable_progress_bar=False,
        callbacks=[CurriculumCallback(engine, allow_fingerprint_mismatch=True)],
        enable_checkpointing=False,
        enable_model_summary=False,
        accelerator="cpu",
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(
        Tiny(),
        PositionLoader(dataset(), batch_size=2),
        torch.utils.data.DataLoader(dataset(), batch_size=5),
        ckpt_path=ckpt,
    )
    assert engine.clock.global_step == 12 and engine.phase.name == "c"
    with pytest.raises(CurriculumError, match="'allow_fingerprint_mismatch' must be a bool"):
        CurriculumCallback(CurriculumEngine(changed), allow_fingerprint_mismatch="yes")


def test_params_view_follows_the_phase():
    """callback.params reads the current phase's params live; a missing key names the fix."""
    engine = CurriculumEngine(
        Curriculum(
            [Phase("short", params={"seq_len": 64}), Phase("long", params={"seq_len": 256})],
            [Transition("short", "long", [MinSteps(1)], when="step_end")],
        )
    )
    params = CurriculumCallback(engine).params
    engine.start()
    assert params["seq_len"] == 64 and params.phase == "short"
    engine.step_end(loss=1.0)
    assert params["seq_len"] == 256 and dict(params) == {"seq_len": 256}
    with pytest.raises(KeyError, match=r"phase 'long' has no param 'batch'.*\.get\('batch', default\)"):
        params["batch"]
    with pytest.raises(CurriculumError, match="'engine' must be a CurriculumEngine"):
        CurriculumCallback(curriculum())


class StagedModule(Tiny):
    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=0.05)
        sched = StagedCosine(opt, base_lr=0.05, total_steps=8, stages=((0, 1.0, 0.1), (4, 0.5, 0.0)), stages_in="steps")
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def test_lightning_takes_staged_cosine_as_its_scheduler(tmp_path):
    """Lightning accepts StagedCosine (a torch LRScheduler) and steps it once per optimizer step: the LRs follow its
    stages."""
    engine = CurriculumEngine(curriculum())
    lrs = []
    step_end = engine.step_end

    def record_lr(loss, **metrics):
        lrs.append(metrics["lr"])
        return step_end(loss=loss, **metrics)

    engine.step_end = record_lr
    trainer = pl.Trainer(
        max_epochs=2,
        accumulate_grad_batches=ACCUM,
        callbacks=[CurriculumCallback(engine)],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(
        StagedModule(),
        torch.utils.data.DataLoader(dataset(), batch_size=2),
        torch.utils.data.DataLoader(dataset(), batch_size=5),
    )
    assert lrs[:4] == pytest.approx(
        [0.05, 0.05 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4))), 0.05 * 0.55, lrs[3]], rel=1e-12
    )
    assert lrs[4] == 0.025 and len(lrs) == 8
    (restart,) = [r for r in engine.history if r.source == "a"]
    assert (
        restart.global_step == 6 and restart.actions[0].effect["lr"][1] == 0.025
    )  # a->b restarts the second stage at its peak


# -- two processes (strategy="ddp", gloo on CPU): tests/ddp_lightning.py, whose ranks see data of different losses ----


def launch_ddp(out: Path, *ckpt: Path) -> list[dict]:
    """Each rank's record of a run of tests/ddp_lightning.py into out (resumed from ckpt when given)."""
    launch([sys.executable, "-m", "tests.ddp_lightning", str(out), *map(str, ckpt)], timeout=240)
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]


@pytest.fixture(scope="module")
def ddp_dir(tmp_path_factory):
    """The uninterrupted run's folder: each rank's record, and its checkpoints in ckpt/."""
    out = tmp_path_factory.mktemp("ddp")
    launch_ddp(out)
    return out


@pytest.fixture(scope="module")
def ddp(ddp_dir):
    """Each rank's record of the uninterrupted run."""
    return [json.loads((ddp_dir / f"rank{rank}.json").read_text()) for rank in (0, 1)]


def own_losses(record) -> list[float]:
    """A rank's own loss at each optimizer step: the mean of its training_step losses in that step."""
    steps = sorted({step for step, _ in record["own"]})
    return [statistics.fmean(loss for s, loss in record["own"] if s == step) for step in steps]


def mean_over_ranks(records) -> list[float]:
    return [statistics.fmean(losses) for losses in zip(*map(own_losses, records))]


def test_under_ddp_every_rank_feeds_the_mean_over_ranks(ddp):
    """Each rank's engine sees, at each of the 8 steps (two of one micro-batch), the mean of the two ranks' own losses,
    which differ."""
    own0, own1 = map(own_losses, ddp)
    assert len(own0) == len(own1) == 8 and max(abs(a - b) for a, b in zip(own0, own1)) > 5  # the ranks' losses part
    assert [step for step, _ in ddp[0]["own"]] == [1, 1, 2, 2, 3, 3, 4, 5, 5, 6, 6, 7, 7, 8]
    for record in ddp:
        assert record["engine"] == pytest.approx(mean_over_ranks(ddp), rel=1e-5)


def test_under_ddp_every_rank_transitions_where_the_mean_crosses(ddp):
    """Both ranks move a -> b at the first step the mean loss is below the threshold, not where either rank's own loss
    is."""
    first_below = lambda losses: next(step for step, loss in enumerate(losses, 1) if loss < DDP_THRESHOLD)  # noqa: E731
    step = first_below(mean_over_ranks(ddp))
    assert step not in {first_below(own_losses(record)) for record in ddp}  # either rank alone would move elsewhere
    history0, history1 = (record["history"] for record in ddp)
    assert history0 == history1
    assert [(h["source"], h["dest"], h["global_step"]) for h in history0] == [(None, "a", 0), ("a", "b", step)]


def test_under_ddp_a_mid_epoch_resume_gives_each_rank_its_own_random_state(ddp_dir, ddp, tmp_path):
    """Resumed from the checkpoint at step 2 (mid-epoch), each rank drops out its inputs as in the uninterrupted run:
    its own losses, its engine's losses, the history (the transition at step 5 included) and the weights are the same,
    bit for bit."""
    resumed = launch_ddp(tmp_path, ddp_dir / "ckpt" / "step=2.ckpt")
    for before, after in zip(ddp, resumed):
        assert after["own"] == [seen for seen in before["own"] if seen[0] > 2]
        assert after["engine"] == before["engine"][2:]
        assert after["history"] == before["history"] and after["history"][-1]["global_step"] == 5
        assert after["weights"] == before["weights"]


def test_a_checkpoint_of_another_number_of_processes_puts_back_no_random_state(ddp_dir, tmp_path, caplog):
    """One process resumed from the two ranks' mid-epoch checkpoint: one warning naming why the draws differ, and the
    random state when training starts is neither rank's."""
    drawn = []
    trainer = pl.Trainer(
        max_steps=3,
        callbacks=[
            CurriculumCallback(CurriculumEngine(ddp_lightning.curriculum())),
            LambdaCallback(on_train_start=lambda trainer, module: drawn.append(torch.get_rng_state())),
        ],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    ckpt = ddp_dir / "ckpt" / "step=2.ckpt"
    with caplog.at_level(logging.WARNING, logger="engine.integrations.lightning"):
        trainer.fit(ddp_lightning.Regressor(), PositionLoader(dataset(batches=7), batch_size=2), ckpt_path=ckpt)
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "engine.integrations.lightning"]
    assert "resumed with 1 processes from a checkpoint holding the random state of 2" in warning
    ranks = next(v for v in torch.load(ckpt, weights_only=True)["callbacks"].values() if "rng" in v)["rng"]
    assert not any(torch.equal(drawn[0], rank["torch"]) for rank in ranks)


# -- the exactness matrix: checkpoint position x transition point x action x shuffle, against real Lightning ----------
# Each configuration trains once uninterrupted (2 epochs of 4 steps, checkpoints at every step on_train_batch_end and
# at each epoch end), then resumes from a mid-epoch step (2), an epoch's last batch (4, before its epoch end) and the
# epoch-end checkpoint (4). The transition a -> b fires at step 2 (step_end) or at the end of epoch 0 (epoch_end); its
# action restarts the LR (the configured CosineAnnealingLR, made restartable by the callback, or a
# Restartable(..., over="remaining")) or changes the model (SetCutoff on a buffer); the phases' "scale" changes the
# targets training_step reads in every cell. Each cell resumes bit-identical (weights, optimizer state, per-step
# losses and LRs, history), except mid-epoch with shuffle=True: the order of the rest of the epoch is drawn again
# (Lightning keeps no sampler state), and the callback says so at resume.


class MatrixModule(pl.LightningModule):
    def __init__(self, params, own_schedule: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin, self.params, self.own_schedule = nn.Linear(4, 1), params, own_schedule
        self.register_buffer("cutoff", torch.tensor(4))

    def set_cutoff(self, n, preserve=True):
        self.cutoff.fill_(n)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.lin(x * (torch.arange(4) < self.cutoff)), y * self.params["scale"])

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=0.05)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=8)
        if self.own_schedule:
            sched = Restartable(sched, over="remaining")
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


MATRIX_CONFIGS = [
    (point, action, shuffle)
    for point in ("step_end", "epoch_end")
    for action in ("restart", "model")
    for shuffle in (False, True)
]


def matrix_curriculum(point, action) -> Curriculum:
    return Curriculum(
        [Phase("a", params={"scale": 1.0}), Phase("b", params={"scale": 2.0})],
        [
            Transition(
                "a",
                "b",
                [MinSteps(2) if point == "step_end" else MinEpoch(1)],
                actions=[RestartLR() if action == "restart" else SetCutoff(2)],
                when=point,
            )
        ],
    )


def spy_lr(engine: CurriculumEngine) -> list:
    calls, step_end, epoch_end = [], engine.step_end, engine.epoch_end

    def on_step(loss, **metrics):
        calls.append(("step", engine.clock.global_step + 1, loss, metrics.get("lr")))
        return step_end(loss=loss, **metrics)

    def on_epoch(**metrics):
        calls.append(("epoch", engine.clock.epoch + 1))
        return epoch_end(**metrics)

    engine.step_end, engine.epoch_end = on_step, on_epoch
    return calls


def matrix_fit(root: Path, config, ckpt=None):
    point, action, shuffle = config
    engine = CurriculumEngine(matrix_curriculum(point, action))
    calls = spy_lr(engine)
    callback = CurriculumCallback(engine)
    checkpoints = [
        ModelCheckpoint(dirpath=root / "step", every_n_train_steps=1, save_top_k=-1, filename="{step}"),
        ModelCheckpoint(dirpath=root / "epoch", save_top_k=-1, filename="{step}"),
    ]
    trainer = pl.Trainer(
        max_epochs=2,
        callbacks=[callback, *checkpoints],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        num_sanity_val_steps=0,
        deterministic=True,
    )
    module = MatrixModule(callback.params, own_schedule=shuffle and action == "restart")
    trainer.fit(module, PositionLoader(dataset(batches=4), batch_size=2, shuffle=shuffle), ckpt_path=ckpt)
    return engine, calls, trainer


@pytest.mark.parametrize("config", MATRIX_CONFIGS, ids=lambda c: "-".join(map(str, c)))
def test_exactness_matrix(tmp_path, caplog, config):
    """Each checkpoint position resumes bit-identical, or (mid-epoch, shuffled) the callback warns at resume naming the
    fix."""
    engine, calls, trainer = matrix_fit(tmp_path / "full", config)
    move = engine.history[1]
    assert (move.dest, move.global_step, move.warnings) == ("b", 2 if config[0] == "step_end" else 4, [])
    for where, step in (("step", 2), ("step", 4), ("epoch", 4)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="engine.integrations.lightning"):
            resumed, rest, again = matrix_fit(
                tmp_path / f"{where}{step}", config, ckpt=tmp_path / "full" / where / f"step={step}.ckpt"
            )
        if config[2] and step == 2:  # shuffled, mid-epoch: warned, the one inexact cell
            assert (
                "order of the rest of the epoch is drawn again" in caplog.text and "StatefulDataLoader" in caplog.text
            )
            assert [c[1] for c in rest if c[0] == "step"] == list(range(3, 9))
            continue
        assert not caplog.text, (where, step)
        done = calls.index(next(c for c in calls if c[:2] == ("step", step))) + 1 + (where == "epoch")
        assert rest == calls[done:], (where, step)
        assert history(resumed) == history(engine), (where, step)
        assert same_tensors(again.lightning_module.state_dict(), trainer.lightning_module.state_dict()), (where, step)
        assert same_tensors(again.optimizers[0].state_dict(), trainer.optimizers[0].state_dict()), (where, step)


# -- the configured schedule restarted: re-planned over the steps left, or replayed whole with a warning -------------


class PlainCosine(Tiny):
    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=0.05)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=8)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def restarted_cosine(tmp_path, **callback_options):
    """8 steps of a plain CosineAnnealingLR(T_max=8), restarted at step 4; returns (the steps' LRs, trainer)."""
    engine = CurriculumEngine(
        Curriculum(
            [Phase("a"), Phase("b")],
            [Transition("a", "b", [MinSteps(4)], actions=[RestartLR()], when=Point.STEP_END)],
        )
    )
    calls = record_calls(engine)
    trainer = pl.Trainer(
        max_epochs=2,
        callbacks=[CurriculumCallback(engine, **callback_options)],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        accelerator="cpu",
        default_root_dir=tmp_path,
    )
    trainer.fit(PlainCosine(), torch.utils.data.DataLoader(dataset(batches=4), batch_size=2))
    return [c[3] for c in calls if c[0] == "step"], trainer


def test_a_restarted_configured_schedule_anneals_over_the_steps_left(tmp_path, caplog):
    """restart_over='remaining' (the default): restarted at step 4 of 8, the cosine runs from the peak to its minimum
    over the last 4 steps, without a warning."""
    with caplog.at_level(logging.WARNING, logger="engine.integrations"):
        lrs, trainer = restarted_cosine(tmp_path)
    assert not caplog.text
    assert lrs[4] == 0.05 and lrs[5] == pytest.approx(0.05 * (1 + math.cos(math.pi / 4)) / 2, rel=1e-12)
    assert trainer.lr_scheduler_configs[0].scheduler.get_last_lr()[0] == pytest.approx(0, abs=1e-15)


def test_a_configured_schedule_replayed_whole_ends_above_its_minimum_and_is_warned(tmp_path, caplog):
    """restart_over='whole' replays the 8-step cosine from step 4: the run ends at half the peak, and the callback says
    so when training begins, naming restart_over='remaining'."""
    with caplog.at_level(logging.WARNING, logger="engine.integrations"):
        lrs, trainer = restarted_cosine(tmp_path, restart_over="whole")
    assert lrs[4] == 0.05 and trainer.lr_scheduler_configs[0].scheduler.get_last_lr()[0] == pytest.approx(0.025)
    assert caplog.text.count("does not reach the schedule's end") == 1 and "restart_over='remaining'" in caplog.text
    with pytest.raises(CurriculumError, match="'restart_over' must be 'whole' or 'remaining'"):
        CurriculumCallback(CurriculumEngine(curriculum()), restart_over=None)
