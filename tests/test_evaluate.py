"""Bits per byte on the validation windows, and the EMA of the weights."""

import math
from pathlib import Path

import pytest
import torch

from chunklm import EMA, ByteCorpus, ChunkLM, ChunkLMConfig, chunk_loss, evaluate_bpb

SEQ_LEN, CHUNK = 32, 4


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> ByteCorpus:
    root = tmp_path_factory.mktemp("data")
    text = Path(__file__).read_bytes()
    (root / "a.py").write_bytes(text)
    return ByteCorpus(root / "a.py", seq_len=SEQ_LEN, chunk=CHUNK, val_fraction=0.3, cache_dir=root / "cache")


def make_model(seed: int = 0) -> ChunkLM:
    torch.manual_seed(seed)
    return ChunkLM(ChunkLMConfig(d_model=16, n_layers=2, seq_len=SEQ_LEN, kernel_len=8, chunk=CHUNK))


def weights(model: ChunkLM) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same_weights(model: ChunkLM, before: dict[str, torch.Tensor]) -> None:
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_bpb_is_offset_one_and_mean_over_offsets(corpus):
    """bpb is the offset-1 cross-entropy in bits on the validation windows; bpb_mean the offset mean."""
    model = make_model()
    result = evaluate_bpb(model, corpus, n_windows=12, batch_size=5)
    with torch.no_grad():
        windows = torch.cat(corpus.val_batches(12, 5))
        _, per_offset = chunk_loss(model(windows[:, :SEQ_LEN]), windows)
    bits = per_offset / math.log(2)
    assert result["bpb"] == pytest.approx(bits[0].item(), rel=1e-5)
    assert result["bpb_mean"] == pytest.approx(bits.mean().item(), rel=1e-5)
    assert 7.5 < result["bpb"] < 8.5  # an untrained model is about uniform over bytes


@pytest.mark.parametrize("training", [True, False])
def test_evaluate_keeps_weights_and_restores_mode(corpus, training):
    """evaluate_bpb changes no weight and gives the model back in the mode it came in."""
    model = make_model()
    model.train(training)
    before = weights(model)
    evaluate_bpb(model, corpus, n_windows=4, batch_size=2)
    assert model.training is training
    assert_same_weights(model, before)


def test_evaluate_runs_in_eval_mode_without_grad(corpus):
    """The forward passes of evaluate_bpb see eval mode and no autograd."""
    model = make_model()
    seen = []
    model.embed.register_forward_hook(lambda m, i, o: seen.append((m.training, torch.is_grad_enabled())))
    evaluate_bpb(model, corpus, n_windows=2, batch_size=2)
    assert seen and all(state == (False, False) for state in seen)


def test_ema_update_is_an_exponential_average():
    """update moves the shadow by (1 - decay) towards the live parameters."""
    model = make_model()
    ema = EMA(model, decay=0.75)
    start = {k: v.clone() for k, v in ema.shadow.items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    for name, p in model.named_parameters():
        torch.testing.assert_close(ema.shadow[name], start[name] + 0.25)
    assert "spectral_cutoff" not in ema.shadow  # parameters only


def test_ema_state_dict_roundtrips_through_torch_save(tmp_path):
    """An EMA saved with torch.save loads with weights_only=True into a fresh EMA, equal."""
    model = make_model()
    ema = EMA(model, decay=0.9)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)
    ema.update(model)
    torch.save(ema.state_dict(), tmp_path / "ema.pt")
    fresh = EMA(make_model(seed=1), decay=0.5)
    fresh.load_state_dict(torch.load(tmp_path / "ema.pt", weights_only=True))
    assert fresh.decay == 0.9 and fresh.num_updates == 1
    for name, tensor in ema.shadow.items():
        assert torch.equal(fresh.shadow[name], tensor)


def test_ema_load_rejects_another_model():
    """Loading an EMA state of a different architecture is a ValueError naming the parameters."""
    state = EMA(make_model()).state_dict()
    other = ChunkLM(ChunkLMConfig(d_model=16, n_layers=3, seq_len=SEQ_LEN, kernel_len=8, chunk=CHUNK))
    with pytest.raises(ValueError, match="blocks.2"):
        EMA(other).load_state_dict(state)


def test_ema_applied_swaps_and_restores():
    """Inside ema.applied the model holds the shadow; afterwards the live weights are back."""
    model = make_model()
    ema = EMA(make_model(seed=3))
    live = weights(model)
    with ema.applied(model):
        for name, p in model.named_parameters():
            assert torch.equal(p, ema.shadow[name])
    assert_same_weights(model, live)


def test_evaluate_with_ema_uses_shadow_at_live_cutoff(corpus):
    """With ema, bpb is the shadow weights' at the live model's cutoff, and live weights come back."""
    model = make_model()
    ema = EMA(make_model(seed=3))
    model.set_cutoff(4)
    live = weights(model)
    result = evaluate_bpb(model, corpus, n_windows=6, batch_size=3, ema=ema)
    assert_same_weights(model, live)
    reference = make_model(seed=3)
    reference.set_cutoff(4)
    assert result == pytest.approx(evaluate_bpb(reference, corpus, n_windows=6, batch_size=3), rel=1e-6)
    assert result != pytest.approx(evaluate_bpb(model, corpus, n_windows=6, batch_size=3), rel=1e-6)
