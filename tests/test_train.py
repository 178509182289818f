"""The Trainer's exact resume, tested directly through its public API (chunklm.train)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

from chunklm import ChunkLMConfig
from chunklm.train import BaseHooks, StepInfo, TrainConfig, Trainer

DATA = str(Path(json.__file__).parent)

CONFIG = TrainConfig(
    model=ChunkLMConfig(d_model=16, n_layers=1, seq_len=32, kernel_len=8, chunk=4, init_cutoff=4),
    data=(DATA,),
    batch_size=2,
    accum_steps=2,
    steps_per_epoch=6,
    epochs=3,
    cutoffs=(4, 8, 16),
    min_epochs=(1, 1, 2),
    plateau_window=4,
    plateau_threshold=1.0,
    eval_windows=4,
)


class Recorder(BaseHooks):
    """Records each step's loss and LR; asks to stop after ``stop_after`` steps."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.steps: list[tuple[int, float, float]] = []
        self.stop_after = stop_after

    def on_step(self, info: StepInfo) -> None:
        self.steps.append((info.global_step, info.loss, info.lr))

    def should_stop(self) -> str | None:
        return "stop" if self.stop_after is not None and len(self.steps) >= self.stop_after else None


def through_a_file(state: dict) -> dict:
    """What a checkpoint gives back: saved, then loaded with weights_only."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.fixture(scope="module")
def uninterrupted() -> tuple[Trainer, Recorder]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as tests/conftest.py sets for each test: float sums depend on the thread count
    try:
        trainer, hooks = Trainer(CONFIG), Recorder()
        trainer.start()
        assert trainer.fit(hooks, save=lambda reason: None) == "done"
    finally:
        torch.set_num_threads(threads)
    return trainer, hooks


@pytest.mark.parametrize("stop_after", [5, 6, 13])
def test_stopped_and_restored_equals_uninterrupted(uninterrupted, stop_after):
    """Stop after N steps (mid-epoch, at an epoch's last step), restore into a new Trainer, finish: bit-identical."""
    whole, whole_hooks = uninterrupted
    first, hooks = Trainer(CONFIG), Recorder(stop_after)
    first.start()
    saved: list[dict] = []
    assert first.fit(hooks, save=lambda reason: saved.append(through_a_file(first.state_dict()))) == "stop"
    second, rest = Trainer(CONFIG), Recorder()
    second.load_state_dict(saved[-1], epochs_done=first.clock.epoch)
    assert second.fit(rest, save=lambda reason: None) == "done"
    assert hooks.steps + rest.steps == whole_hooks.steps  # same losses and LRs, step by step
    for key, value in whole.model.state_dict().items():
        assert torch.equal(second.model.state_dict()[key], value), key
    assert [r.comparable() for r in second.engine.history] == [r.comparable() for r in whole.engine.history]
    assert second.schedule.state_dict() == whole.schedule.state_dict()


def test_a_fresh_trainer_is_a_function_of_its_config():
    """Two Trainers of one config hold equal state, RNG states of every library included."""
    import numpy as np

    a = through_a_file(Trainer(CONFIG).state_dict())
    np.random.seed(99)
    b = through_a_file(Trainer(CONFIG).state_dict())
    assert torch.equal(a["rng"]["numpy"]["key"], b["rng"]["numpy"]["key"]) and a["rng"]["python"] == b["rng"]["python"]


def test_close_releases_the_wrapper_and_keeps_the_state_readable():
    """close() drops every reference to the (DDP) wrapper; the model and state stay readable."""
    import weakref

    wrappers = []

    def wrap(objective):  # stands in for DDP: what matters is that nothing keeps it alive
        wrappers.append(weakref.ref(objective))
        return objective

    trainer = Trainer(CONFIG, wrap_model=wrap)
    trainer.start()
    trainer.train_step()
    assert wrappers[0]() is not None
    trainer.close()
    assert trainer.net is None and wrappers[0]() is None and "model" in trainer.state_dict()
