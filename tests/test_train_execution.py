"""Execution-only training settings: micro_batch and compile change how a step runs, not what it computes."""

from pathlib import Path

import attrs
import pytest
import torch

from chunklm import ByteCorpus, ChunkLMConfig
from chunklm.train import TrainConfig, Trainer, micro_batches

SEQ_LEN, CHUNK = 32, 4


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> ByteCorpus:
    root = tmp_path_factory.mktemp("data")
    (root / "a.py").write_bytes(Path(__file__).read_bytes() * 4)
    return ByteCorpus(root / "a.py", seq_len=SEQ_LEN, chunk=CHUNK, val_fraction=0.3, cache_dir=root / "cache")


def config(**overrides) -> TrainConfig:
    model = ChunkLMConfig(d_model=16, n_layers=1, seq_len=SEQ_LEN, kernel_len=8, chunk=CHUNK)
    return TrainConfig(
        model=model,
        **{
            "batch_size": 2,
            "accum_steps": 3,
            "steps_per_epoch": 4,
            "epochs": 1,
            "cutoffs": (4,),
            "min_epochs": (1,),
            **overrides,
        },
    )


def run_steps(corpus: ByteCorpus, n: int = 2, **overrides) -> tuple[list[float], list[list[torch.Tensor]], Trainer]:
    """Losses and the gradients the optimizer stepped with, for n steps of a fresh run."""
    trainer = Trainer(config(**overrides), corpus=corpus)
    trainer.start()
    grads: list[list[torch.Tensor]] = []
    step = trainer.optimizer.step

    def recording_step(*args, **kwargs):
        grads.append([p.grad.clone() for p in trainer.model.parameters()])
        return step(*args, **kwargs)

    trainer.optimizer.step = recording_step
    losses = [trainer.train_step().loss for _ in range(n)]
    return losses, grads, trainer


def test_micro_batches_cover_the_windows_in_order():
    """Slices are consecutive, at most micro_batch long, the last one the remainder."""
    assert micro_batches(6, 4) == [(0, 4), (4, 6)]
    assert micro_batches(6, 2) == [(0, 2), (2, 4), (4, 6)]
    assert micro_batches(3, 8) == [(0, 3)]


def test_micro_batch_rejects_zero():
    """micro_batch must be positive (None means batch_size)."""
    with pytest.raises(ValueError, match="micro_batch"):
        config(micro_batch=0)


def test_micro_batch_equal_to_batch_size_is_the_default_bit_for_bit(corpus):
    """micro_batch=batch_size runs exactly the default step: same losses, gradients and weights, bit for bit."""
    losses, grads, trainer = run_steps(corpus)
    losses_mb, grads_mb, trainer_mb = run_steps(corpus, micro_batch=2)
    assert losses == losses_mb
    assert all(torch.equal(a, b) for g, h in zip(grads, grads_mb) for a, b in zip(g, h))
    assert all(
        torch.equal(a, b) for a, b in zip(trainer.model.state_dict().values(), trainer_mb.model.state_dict().values())
    )


@pytest.mark.parametrize("micro_batch", [1, 4, 6])
def test_micro_batch_changes_only_the_summation_order(corpus, micro_batch):
    """Any micro_batch (even, uneven, the whole global batch) gives the same loss and gradient up to float32 round-off.

    Bit-identity does not hold: the windows' losses and gradients are summed in another order and the
    matrix products run at another batch size. The windows themselves are the same (drawn per
    accumulation index), so a checkpoint resumes the same with any micro_batch.
    """
    losses, grads, _ = run_steps(corpus)
    losses_mb, grads_mb, _ = run_steps(corpus, micro_batch=micro_batch)
    assert losses_mb == pytest.approx(losses, rel=1e-6, abs=1e-6)
    for g, h in zip(grads, grads_mb):
        for a, b in zip(g, h):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_compiled_step_matches_eager(corpus):
    """compile=True (torch.compile of the loss) gives the eager step's loss and gradients within float32 round-off."""
    losses, grads, _ = run_steps(corpus, n=1)
    losses_c, grads_c, _ = run_steps(corpus, n=1, compile=True)
    assert losses_c == pytest.approx(losses, rel=1e-5)
    for a, b in zip(grads[0], grads_c[0]):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-5)


def test_execution_settings_leave_the_trajectory_config_alone():
    """micro_batch and compile default to the plain eager step (None, False)."""
    cfg = config()
    assert (cfg.micro_batch, cfg.compile) == (None, False)
    assert attrs.evolve(cfg, micro_batch=4, compile=True).batch_size == cfg.batch_size
