"""A data mixture under Lightning: a policies.MixtureSampler as the train DataLoader's batch_sampler, driven by the
CurriculumCallback, against real Lightning on CPU.

Two sources of tagged rows (a: 0, b: 1); 6 optimizer steps of 2 micro-batches of 2 rows. The mix moves from a 3 : b 1
to b only at the end of optimizer step 3; a checkpoint is written after every optimizer step.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from engine import Curriculum, CurriculumEngine, CurriculumError, Phase, Point, Transition
from engine.integrations.lightning import CurriculumCallback
from policies import MinSteps, MixtureSampler

STEPS, ACCUM, BATCH = 6, 2, 2
SIZES = {"a": 24, "b": 24}

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:lightning.*", "ignore:.*LeafSpec.*")


class Tagged(pl.LightningModule):
    """A linear model that records, per micro-batch, the optimizer step and the sources its rows came from."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 1)
        self.read: list[tuple[int, list[int]]] = []

    def training_step(self, batch, batch_idx):
        x, y, tag = batch
        self.read.append((self.trainer.global_step, tag.tolist()))
        return nn.functional.mse_loss(self.lin(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def sources() -> torch.utils.data.ConcatDataset:
    def rows(tag: int, n: int) -> torch.utils.data.TensorDataset:
        x = torch.randn(n, 4, generator=torch.Generator().manual_seed(tag))
        return torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True), torch.full((n,), tag))

    return torch.utils.data.ConcatDataset([rows(tag, n) for tag, n in enumerate(SIZES.values())])


def fit(
    root: Path,
    ckpt: Path | None = None,
    seed: int = 0,
    steps: int | None = STEPS * ACCUM,
    mixture=True,
    num_workers=0,
    **sampler_args,
):
    """One run of STEPS optimizer steps (from ``ckpt``); returns (engine, sampler, module). ``mixture=False``: a plain
    DataLoader over the same rows."""
    engine = CurriculumEngine(
        Curriculum(
            [Phase("general", params={"mix": {"a": 3, "b": 1}}), Phase("target", params={"mix": {"b": 1}})],
            [Transition("general", "target", [MinSteps(3)], when=Point.STEP_END)],
        )
    )
    sampler = MixtureSampler(SIZES, BATCH, seed=seed, engine=engine, steps=steps, **sampler_args)
    module = Tagged()
    trainer = pl.Trainer(
        max_steps=STEPS,
        accumulate_grad_batches=ACCUM,
        callbacks=[
            CurriculumCallback(engine),
            ModelCheckpoint(dirpath=root, every_n_train_steps=1, save_top_k=-1, filename="{step}"),
        ],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        deterministic=True,
    )
    loader_args = {"batch_sampler": sampler} if mixture else {"batch_size": BATCH}
    trainer.fit(module, torch.utils.data.DataLoader(sources(), num_workers=num_workers, **loader_args), ckpt_path=ckpt)
    return engine, sampler, module


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    root = tmp_path_factory.mktemp("full")
    return root, *fit(root)


def test_a_mix_change_at_a_step_end_applies_from_the_next_optimizer_step(full):
    """Each optimizer step's 4 rows follow the mix of the phase it runs in: 3 a and 1 b up to step 3, where the
    transition fires, then b only; the sampler drew one batch per micro-batch, no more."""
    _, engine, sampler, module = full
    assert [(r.source, r.dest, r.global_step) for r in engine.history if r.source] == [("general", "target", 3)]
    per_step = [sorted(t for step, tags in module.read if step == s for t in tags) for s in range(STEPS)]
    assert per_step == [[0, 0, 0, 1]] * 3 + [[1, 1, 1, 1]] * 3
    assert sampler.step == STEPS * ACCUM


@pytest.mark.parametrize("step", [2, 3, 5])  # mid-phase, at the step the mix changes, after it
def test_resume_mid_phase_continues_bit_for_bit(full, tmp_path, caplog, step):
    """Resumed with fit(ckpt_path=...), the rows read, the weights, the history and the sampler's position equal the
    uninterrupted run's, without the warning of a loader that cannot restore its position."""
    root, engine, sampler, module = full
    with caplog.at_level(logging.WARNING, logger="engine.integrations.lightning"):
        resumed, resumed_sampler, again = fit(tmp_path, ckpt=root / f"step={step}.ckpt")
    assert caplog.text == ""
    assert again.read == [r for r in module.read if r[0] >= step]
    assert all(torch.equal(x, y) for x, y in zip(again.state_dict().values(), module.state_dict().values()))
    assert [r.comparable() for r in resumed.history] == [r.comparable() for r in engine.history]
    assert resumed_sampler.state_dict() == sampler.state_dict()


def test_a_resume_with_another_seed_is_refused(full, tmp_path):
    with pytest.raises(CurriculumError, match="saved with seed 0, and this sampler has 1"):
        fit(tmp_path, ckpt=full[0] / "step=2.ckpt", seed=1)


def test_a_resume_without_the_mixture_sampler_is_refused(full, tmp_path):
    with pytest.raises(CurriculumError, match="the checkpoint holds data sampler position, unlike this run's"):
        fit(tmp_path, ckpt=full[0] / "step=2.ckpt", mixture=False)


@pytest.mark.parametrize(
    "loader, cause",
    [
        ({"steps": None}, "Lightning fetches a loader without a length a batch ahead"),
        ({"num_workers": 1}, "its 1 workers fetch batches ahead"),
    ],
    ids=["endless", "workers"],
)
def test_a_loader_that_draws_ahead_of_training_is_refused(tmp_path, loader, cause):
    with pytest.raises(CurriculumError, match=rf"ahead of training \({cause}\).*steps=max_steps \* accumulate"):
        fit(tmp_path, **loader)


def test_a_sampler_of_another_world_size_is_refused(tmp_path):
    with pytest.raises(CurriculumError, match="sampler is rank 0 of 2 and this process is rank 0 of 1"):
        fit(tmp_path, rank=0, world_size=2)
