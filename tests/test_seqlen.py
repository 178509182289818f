"""Sequence-length phases: windows cut into pieces, causality at every length, exact resume across a switch."""

from __future__ import annotations

import io
import json
from pathlib import Path

import attrs
import pytest
import torch

from chunklm import ChunkLMConfig
from chunklm.config import ConfigError
from chunklm.corpus import CorpusError, cut_windows
from chunklm.model import ChunkLM, _offset_targets
from chunklm.train import BaseHooks, StepInfo, TrainConfig, Trainer
from engine import Curriculum, CurriculumError, Phase
from policies import seq_len_curriculum, spectral_curriculum

DATA = str(Path(json.__file__).parent)
MODEL = ChunkLMConfig(d_model=16, n_layers=1, seq_len=32, kernel_len=8, chunk=4)
CONFIG = TrainConfig(
    model=MODEL,
    data=(DATA,),
    batch_size=2,
    accum_steps=2,
    steps_per_epoch=4,
    epochs=3,
    eval_windows=4,
    seq_lens=(8, 16),
    cutoffs=(),
    min_epochs=(1, 2),
    plateau_window=4,
    plateau_threshold=1.0,
)


class Recorder(BaseHooks):
    def __init__(self, stop_after: int | None = None) -> None:
        self.steps: list[tuple[int, float, float, int]] = []
        self.bpb: list[float] = []
        self.stop_after = stop_after

    def on_step(self, info: StepInfo) -> None:
        self.steps.append((info.global_step, info.loss, info.lr, info.seq_len))

    def on_epoch(self, info) -> None:
        self.bpb.append(info.bpb)

    def should_stop(self) -> str | None:
        return "stop" if self.stop_after is not None and len(self.steps) >= self.stop_after else None


def test_pieces_score_the_window_own_targets():
    """Cut at every length dividing T, the pieces' (position, targets) are exactly the full window's, in order."""
    T, C = 32, 4
    windows = torch.randint(0, 256, (3, T + C))
    full = _offset_targets(windows, T, C)  # (B, T, C)
    for L in (1, 2, 4, 8, 16, 32):
        pieces = cut_windows(windows, L, C)
        assert pieces.shape == (3 * T // L, L + C)
        assert torch.equal(_offset_targets(pieces, L, C).reshape(3, T, C), full), L
        assert torch.equal(pieces[:, :L].reshape(3, T), windows[:, :T])  # the inputs too
    assert cut_windows(windows, T, C) is windows
    for bad in (0, 3, 33, True):
        with pytest.raises(CorpusError, match="seq_len must divide"):
            cut_windows(windows, bad, C)


@pytest.mark.parametrize("L", [4, 8, 16, 32])
def test_causal_at_every_length(L):
    """At each phase length, changing byte s moves no output at positions < s (float64)."""
    torch.manual_seed(0)
    model = ChunkLM(MODEL).double().eval()
    x = torch.randint(0, 256, (1, L))
    base = model(x)
    for s in range(L):
        y = x.clone()
        y[0, s] = (y[0, s] + 1) % 256
        diff = (model(y) - base)[:, :s].abs().max().item() if s else 0.0
        assert diff < 1e-10, (L, s, diff)


def test_a_step_trains_on_the_phase_length_pieces():
    """The step at seq_len 8 runs the model on the full windows cut in 4, and reports that length."""
    trainer = Trainer(CONFIG)
    trainer.start()
    assert trainer.engine.phase.name == "seq_8" and trainer.seq_len == 8
    windows = trainer._step_windows(8)
    assert windows.shape == (2 * 2 * 4, 8 + 4)
    with torch.no_grad():
        expected, _ = trainer.model.loss(windows)
    info = trainer.train_step()
    assert info.seq_len == 8 and info.loss == pytest.approx(expected.item(), rel=1e-6)


def test_evaluation_is_at_the_full_length(monkeypatch):
    """Validation windows are seq_len + chunk bytes whatever the phase."""
    seen = []
    trainer = Trainer(CONFIG)
    trainer.start()
    loss = trainer.model.loss
    monkeypatch.setattr(trainer.model, "loss", lambda w, *a, **k: (seen.append(w.shape[1]), loss(w, *a, **k))[1])
    trainer.evaluate()
    assert seen and set(seen) == {MODEL.seq_len + MODEL.chunk}


@pytest.fixture(scope="module")
def uninterrupted() -> tuple[Trainer, Recorder]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer, hooks = Trainer(CONFIG), Recorder()
        trainer.start()
        assert trainer.fit(hooks, save=lambda reason: None) == "done"
    finally:
        torch.set_num_threads(threads)
    return trainer, hooks


def test_the_lengths_follow_the_phases(uninterrupted):
    """8 for epoch 0, 16 for epoch 1, full from epoch 2 (threshold 1.0: the plateau holds at once)."""
    _, hooks = uninterrupted
    assert [s[3] for s in hooks.steps] == [8] * 4 + [16] * 4 + [32] * 4


@pytest.mark.parametrize("stop_after", [3, 4, 6])
def test_resume_across_a_length_change_is_exact(uninterrupted, stop_after):
    """Stopped mid-phase or at the switch, restored into a new Trainer: the same losses, LRs, lengths and weights."""
    whole, whole_hooks = uninterrupted
    first, hooks = Trainer(CONFIG), Recorder(stop_after)
    first.start()
    saved = []

    def save(reason):
        buf = io.BytesIO()
        torch.save(first.state_dict(), buf)
        buf.seek(0)
        saved.append(torch.load(buf, weights_only=True))

    assert first.fit(hooks, save=save) == "stop"
    second, rest = Trainer(CONFIG), Recorder()
    second.load_state_dict(saved[-1], epochs_done=first.clock.epoch)
    assert second.fit(rest, save=lambda reason: None) == "done"
    assert hooks.steps + rest.steps == whole_hooks.steps
    for key, value in whole.model.state_dict().items():
        assert torch.equal(second.model.state_dict()[key], value), key


def test_lengths_must_divide_the_model_length():
    """A length that does not divide seq_len is refused by the config and by the trainer, naming the fix."""
    with pytest.raises(ConfigError, match="seq_lens must be divisors of seq_len=32"):
        attrs.evolve(CONFIG, seq_lens=(12,))
    bad = Curriculum([Phase("short", params={"seq_len": 12})], [])
    with pytest.raises(ConfigError, match="phase 'short'.*divisor of the model's seq_len=32"):
        Trainer(attrs.evolve(CONFIG, seq_lens=()), curriculum=bad)


def test_builders():
    """seq_len_curriculum: fixed or plateau phases with seq_len params; spectral_curriculum pairs lengths with
    cutoffs."""
    fixed = seq_len_curriculum((64, 128), at_epochs=(1, 3))
    assert [(p.name, dict(p.params)) for p in fixed.phases] == [
        ("seq_64", {"seq_len": 64}),
        ("seq_128", {"seq_len": 128}),
        ("full", {}),
    ]
    assert [repr(t.guards[0]) for t in fixed.transitions] == ["MinEpoch(1)", "MinEpoch(3)"]
    assert all(t.actions == () or list(t.actions) == [] for t in fixed.transitions)
    plateau = seq_len_curriculum((64,), min_epochs=(1,), max_epochs=(4,), window=8, threshold=0.01)
    assert (
        repr(plateau.transitions[0].guards[0])
        == "any_of(all_of(MinEpoch(1), Plateau(window=8, threshold=0.01)), MinEpoch(4))"
    )
    both = spectral_curriculum(n_bins=129, cutoffs=(16, 32), min_epochs=(1, 2), seq_lens=(64, 128), restart_lr=False)
    assert [dict(p.params) for p in both.phases] == [{"seq_len": 64}, {"seq_len": 128}, {}]
    assert all(list(t.actions) == [] for t in both.transitions)
    assert spectral_curriculum().fingerprint() == spectral_curriculum(seq_lens=None, restart_lr=True).fingerprint()
    with pytest.raises(CurriculumError, match="strictly increasing"):
        seq_len_curriculum((128, 64), at_epochs=(1, 2))
    with pytest.raises(CurriculumError, match="exactly one"):
        seq_len_curriculum((64,))
    with pytest.raises(CurriculumError, match="one window length per cutoff"):
        spectral_curriculum(seq_lens=(64,))


def test_cli_seq_lens_with_wsd_resumes_exactly(tmp_path, capsys):
    """`--seq-lens 8,16,16 --schedule wsd`: stopped mid-phase and resumed with `--resume` alone equals the whole run."""
    from tests.utils import assert_same_run, resume, train

    flags = ("--seq-lens", "8,16,16", "--schedule", "wsd")
    assert train(tmp_path, "whole", *flags) == 0
    assert train(tmp_path, "split", *flags, "--stop-after", "7") == 0
    assert resume(tmp_path, "split") == 0
    history = assert_same_run(tmp_path, "whole", "split")
    assert [r.dest for r in history] == ["cutoff_4", "cutoff_8", "cutoff_16", "full"]
    assert all(a.effect.get("lr") is None for r in history for a in r.actions)  # WSD: no RestartLR
    from runs.checkpoint import load_checkpoint

    saved = load_checkpoint(tmp_path / "whole.pt")
    assert saved.settings.seq_lens == (8, 16, 16) and saved.settings.schedule == "wsd"
    assert "cooldown_steps" in saved.trainer["schedule"]
    capsys.readouterr()
    assert train(tmp_path, "bad", "--seq-lens", "8,12,16") == 2
    assert "seq_lens must be divisors of seq_len=32" in capsys.readouterr().err
