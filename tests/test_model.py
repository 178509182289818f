"""ChunkLM: configuration, shapes, causality at every cutoff, exact band opening, the loss."""

import json
import math

import attrs
import cattrs
import pytest
import torch

import chunklm.model as model_module
from chunklm import ChunkLM, ChunkLMConfig, ConfigError, KernelInit, chunk_loss
from chunklm.model import SpectralKernel

SEQ_LEN = 64
CUTOFFS = (SEQ_LEN // 8, SEQ_LEN // 4, SEQ_LEN // 2, None)  # None: full (33 bins)


def tiny(**overrides) -> ChunkLMConfig:
    fields = dict(d_model=24, n_layers=2, seq_len=SEQ_LEN, kernel_len=16, chunk=4)
    return ChunkLMConfig(**{**fields, **overrides})


def tiny_model(seed: int = 0, **overrides) -> ChunkLM:
    torch.manual_seed(seed)
    return ChunkLM(tiny(**overrides)).double()


def random_bytes(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed))


def circular_fft_conv(u, k):
    """The seed's leak: an unpadded (circular) FFT convolution."""
    T = u.shape[-1]
    return torch.fft.irfft(torch.fft.rfft(u, n=T) * torch.fft.rfft(k, n=T), n=T)


def max_leak(model: ChunkLM, positions=(1, 9, 31, 50, 57, 63)) -> float:
    """Largest move of an output before position s when byte s changes."""
    idx = random_bytes(2, SEQ_LEN)
    with torch.no_grad():
        base = model(idx)
        leak = 0.0
        for s in positions:
            edited = idx.clone()
            edited[:, s] = (edited[:, s] + 101) % 256
            leak = max(leak, (model(edited)[:, :s] - base[:, :s]).abs().max().item())
    return leak


# configuration ------------------------------------------------------------------------------------


def test_config_kernel_longer_than_sequence_names_the_fix():
    """kernel_len > seq_len is a ConfigError naming both values and the flags to change."""
    with pytest.raises(ConfigError, match=r"kernel_len must be <= seq_len: got kernel_len=128, seq_len=64; lower"):
        tiny(kernel_len=128)


@pytest.mark.parametrize(
    "field, value",
    [
        ("d_model", 0),
        ("n_layers", True),
        ("chunk", 2.0),
        ("dropout", 1.0),
        ("init_cutoff", 34),
        ("kernel_init", "pink"),
    ],
)
def test_config_rejects_bad_values(field, value):
    """Each field's validator rejects an out-of-range value with a ValueError naming the field."""
    with pytest.raises(ValueError, match=field):
        tiny(**{field: value})


def test_config_roundtrips_through_cattrs_and_json():
    """The config unstructures to plain JSON values and structures back equal."""
    config = tiny(kernel_init="white", init_cutoff=4)
    raw = cattrs.unstructure(config)
    assert raw["kernel_init"] == "white" and raw["init_cutoff"] == 4
    assert cattrs.structure(json.loads(json.dumps(raw)), ChunkLMConfig) == config
    assert config.kernel_init is KernelInit.WHITE


def test_config_defaults():
    """Defaults: no dropout, ff_mult 4, white-noise kernels (measured best), init_cutoff seq_len // 8."""
    config = tiny()
    assert (config.dropout, config.ff_mult, config.init_cutoff, config.kernel_init) == (0.0, 4, None, KernelInit.WHITE)
    assert config.resolved_init_cutoff == SEQ_LEN // 8
    assert attrs.evolve(config, seq_len=1024).n_bins == 513


# shapes and cutoff --------------------------------------------------------------------------------


def test_forward_shape_and_shorter_inputs():
    """forward maps (B, T) bytes to (B, T, chunk, 256) logits for any T <= seq_len."""
    model = tiny_model()
    assert model(random_bytes(3, SEQ_LEN)).shape == (3, SEQ_LEN, 4, 256)
    assert model(random_bytes(1, 5)).shape == (1, 5, 4, 256)


def test_forward_rejects_too_long_input():
    """An input longer than seq_len is a ConfigError telling to crop the context."""
    with pytest.raises(ConfigError, match="crop the context"):
        tiny_model()(random_bytes(1, SEQ_LEN + 1))


def test_coefficients_kept_per_cutoff():
    """The kernel keeps ceil(cutoff * K / seq_len) coefficients: 128/513 -> 16/65 for K=128, L=1024."""
    kernel = SpectralKernel(2, 128, 1024, 128, KernelInit.SMOOTH)
    assert [kernel.n_keep(c) for c in (1, 128, 256, 512, 513)] == [1, 16, 32, 64, 65]
    assert kernel(torch.tensor(128)).shape == (2, 128)  # exactly K taps
    assert (kernel.coef[:, 16:] == 0).all() and (kernel.coef[:, :16, 0] != 0).all()


def test_white_init_fills_every_coefficient():
    """kernel_init='white' draws every coefficient (the seed's white-noise kernels)."""
    coef = tiny_model(kernel_init="white").blocks[0].mix.kernel.coef
    assert (coef[:, :, 0] != 0).all()


def test_default_model_has_white_kernels():
    """With no kernel_init given, every kernel coefficient is drawn (white noise), not only the low bands."""
    coef = tiny_model().blocks[0].mix.kernel.coef
    assert (coef[:, :, 0] != 0).all()


def test_smooth_init_is_zero_above_init_cutoff():
    """kernel_init='smooth' draws only the coefficients below init_cutoff (8 of 33 bins: 2 of 9)."""
    coef = tiny_model(kernel_init="smooth").blocks[0].mix.kernel.coef
    assert (coef[:, 2:] == 0).all() and (coef[:, :2, 0] != 0).all()


def test_new_model_is_full_and_set_cutoff_moves_it():
    """A new model is at full cutoff (n_bins); set_cutoff(n) and set_cutoff(None) move it."""
    model = tiny_model()
    assert model.n_bins == 33 and model.cutoff == 33
    model.set_cutoff(8)
    assert model.cutoff == 8
    model.set_cutoff(None)
    assert model.cutoff == 33


@pytest.mark.parametrize("bad", [0, 34, -1, 8.0, True, "8"])
def test_set_cutoff_rejects_out_of_range(bad):
    """set_cutoff outside [1, n_bins] is a ConfigError (a ValueError) and leaves the cutoff alone."""
    model = tiny_model()
    with pytest.raises(ValueError, match=r"cutoff must be an int in \[1, 33\]"):
        model.set_cutoff(bad)
    assert model.cutoff == 33


def test_cutoff_is_in_state_dict_and_restored():
    """The cutoff is a buffer: saved in state_dict and restored by load_state_dict."""
    model = tiny_model()
    model.set_cutoff(16)
    state = model.state_dict()
    assert int(state["spectral_cutoff"]) == 16
    fresh = tiny_model(seed=5)
    fresh.load_state_dict(state)
    assert fresh.cutoff == 16
    torch.testing.assert_close(fresh(random_bytes(1, 20)), model(random_bytes(1, 20)), rtol=0, atol=0)


# causality ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("cutoff", CUTOFFS)
def test_changing_a_byte_moves_no_earlier_output(cutoff):
    """At every cutoff, editing byte s moves no output at positions < s (float64, < 1e-10)."""
    model = tiny_model(kernel_init="white")  # every band non-zero, so the mask matters
    model.set_cutoff(cutoff)
    assert max_leak(model) < 1e-10


def test_leak_check_catches_a_circular_convolution(monkeypatch):
    """The causality check fails for the seed's circular (unpadded) FFT convolution."""
    monkeypatch.setattr(model_module, "causal_fft_conv", circular_fft_conv)
    assert max_leak(tiny_model(kernel_init="white")) > 1e-6


@pytest.mark.parametrize("cutoff", CUTOFFS)
def test_outputs_have_no_gradient_from_later_embeddings(cutoff):
    """At every cutoff, outputs at t have gradient < 1e-10 w.r.t. input embeddings after t."""
    model = tiny_model(kernel_init="white")
    model.set_cutoff(cutoff)
    emb = model.embed(random_bytes(2, SEQ_LEN)).detach().requires_grad_(True)
    out = model.head(model.hidden(emb))  # (B, T, C * 256)
    weights = torch.randn(out.shape[-1], dtype=out.dtype)
    for t in (0, 5, 17, 40, 62):
        (grad,) = torch.autograd.grad(
            out[:, t] @ weights, emb, grad_outputs=torch.ones(2, dtype=out.dtype), retain_graph=True
        )
        assert grad[:, t + 1 :].abs().max() < 1e-10
        assert grad[:, t].abs().max() > 1e-6  # the check is not vacuous


def test_random_bytes_cannot_be_learned_below_8_bits():
    """Training on fresh uniform random bytes does not push next-byte loss below 8 bits (no leak)."""
    torch.manual_seed(0)
    model = ChunkLM(tiny(kernel_init="white"))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(300):  # a masked product spectrum (the seed's leak) reaches ~7.8 bits here
        loss, _ = model.loss(random_bytes(8, SEQ_LEN + 4, seed=100 + step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        _, per_offset = model.loss(random_bytes(64, SEQ_LEN + 4, seed=7))
    bits = per_offset / math.log(2)
    assert bits.min() > 7.97, bits


# opening bands ------------------------------------------------------------------------------------


def test_adamw_keeps_a_zero_parameter_with_zero_gradient_at_zero():
    """AdamW with weight decay leaves a zero parameter whose gradient is zero exactly zero."""
    p = torch.nn.Parameter(torch.zeros(7, dtype=torch.float64))
    q = torch.nn.Parameter(torch.ones(7, dtype=torch.float64))
    opt = torch.optim.AdamW([p, q], lr=0.1, weight_decay=0.5)
    for _ in range(20):
        p.grad, q.grad = torch.zeros_like(p), torch.randn_like(q)
        opt.step()
    assert (p == 0).all() and not (q == 1).all()


def test_masked_coefficients_get_no_gradient():
    """Coefficients above the cutoff receive exactly zero gradient."""
    model = tiny_model(kernel_init="white")
    model.set_cutoff(16)  # 4 of 9 coefficients
    model.loss(random_bytes(2, SEQ_LEN + 4))[0].backward()
    grad = model.blocks[0].mix.kernel.coef.grad
    assert (grad[:, 4:] == 0).all() and grad[:, 1:4].abs().max() > 0


@pytest.mark.parametrize("kernel_init", ["smooth", "white"])
def test_raising_with_preserve_keeps_logits(kernel_init):
    """set_cutoff(preserve=True) through 8 -> 16 -> 32 -> full leaves logits equal to 1e-12."""
    model = tiny_model(kernel_init=kernel_init)
    model.set_cutoff(8)
    idx = random_bytes(2, SEQ_LEN)
    before = model(idx)
    for cutoff in CUTOFFS[1:]:
        model.set_cutoff(cutoff, preserve=True)
        torch.testing.assert_close(model(idx), before, rtol=0, atol=1e-12)


def test_raising_after_adamw_steps_keeps_logits():
    """After AdamW steps (weight decay) at a low cutoff, raising with preserve=True is still exact."""
    model = tiny_model(kernel_init="smooth")
    model.set_cutoff(8)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    for step in range(10):
        loss, _ = model.loss(random_bytes(4, SEQ_LEN + 4, seed=step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    coef = model.blocks[0].mix.kernel.coef
    assert (coef[:, 2:] == 0).all()  # masked coefficients stayed exactly zero
    idx = random_bytes(2, SEQ_LEN)
    before = model(idx)
    model.set_cutoff(None, preserve=True)
    torch.testing.assert_close(model(idx), before, rtol=0, atol=1e-12)


def test_raising_by_default_opens_bands_with_noise():
    """set_cutoff's default is the seed's opening: the opened coefficients become noise, logits move."""
    model = tiny_model(kernel_init="smooth")  # opened bands start at zero, so only the opening fills them
    model.set_cutoff(8)
    idx = random_bytes(2, SEQ_LEN)
    before = model(idx)
    model.set_cutoff(None)
    coef = model.blocks[0].mix.kernel.coef
    assert (coef[:, 2:8, 0] != 0).all()
    assert (model(idx) - before).abs().max() > 1e-6


def test_raising_without_preserve_adds_noise_at_init_scale():
    """set_cutoff(preserve=False) fills the opened coefficients with noise at the init's scale."""
    torch.manual_seed(0)
    model = ChunkLM(tiny(d_model=256))
    model.set_cutoff(8)
    kernel = model.blocks[0].mix.kernel
    idx = random_bytes(1, SEQ_LEN)
    before = model(idx)
    model.set_cutoff(None, preserve=False)
    opened = kernel.coef[:, 2:8]  # away from the Nyquist bin, whose imaginary part is unused
    assert abs(opened.std().item() / kernel.init_std - 1) < 0.1
    assert (model(idx) - before).abs().max() > 1e-4


# loss ---------------------------------------------------------------------------------------------


def test_chunk_loss_targets_are_the_next_bytes():
    """Offset k at position t is scored against windows[:, t + k]: a perfect guess costs ~0 nats."""
    windows = random_bytes(2, 10 + 3)  # T = 10, C = 3
    logits = torch.zeros(2, 10, 3, 256)
    for k in range(1, 4):
        logits[:, :, k - 1].scatter_(-1, windows[:, k : k + 10, None], 50.0)
    loss, per_offset = chunk_loss(logits, windows)
    assert per_offset.shape == (3,) and loss < 1e-6
    wrong, _ = chunk_loss(logits, torch.roll(windows, 1, dims=1))
    assert wrong > 10


@pytest.mark.parametrize("streamed", [True, False])
def test_head_loss_matches_chunk_loss_and_its_gradient(monkeypatch, streamed):
    """head_loss (streamed or not) equals chunk_loss(model(x)) in value and gradient, any stride."""
    monkeypatch.setattr(model_module, "_HEAD_BLOCK", 1000)  # several row blocks
    model = tiny_model()
    windows = random_bytes(3, SEQ_LEN + 4)
    for stride in (1, 3):
        model.zero_grad()
        loss, per_offset = chunk_loss(model(windows[:, :SEQ_LEN]), windows, stride)
        (loss + per_offset[1]).backward()
        expected = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        hidden = model.hidden(model.embed(windows[:, :SEQ_LEN]))
        fused, fused_per_offset = model_module.head_loss(hidden, model.head, windows, stride, streamed=streamed)
        (fused + fused_per_offset[1]).backward()
        torch.testing.assert_close(fused_per_offset, per_offset, rtol=0, atol=1e-12)
        for p, g in zip(model.parameters(), expected):
            torch.testing.assert_close(p.grad, g, rtol=0, atol=1e-12)


def test_model_loss_is_head_loss_of_all_positions():
    """model.loss(windows) scores every position of windows[:, :T] against the next chunk bytes."""
    model = tiny_model()
    windows = random_bytes(2, SEQ_LEN + 4)
    loss, per_offset = model.loss(windows)
    expected, expected_per_offset = chunk_loss(model(windows[:, :SEQ_LEN]), windows)
    torch.testing.assert_close(per_offset, expected_per_offset, rtol=0, atol=1e-12)


def test_cpu_bf16_autocast_forward_is_finite():
    """Under CPU bf16 autocast the model runs (FFT in float32) and gives finite logits."""
    torch.manual_seed(0)
    model = ChunkLM(tiny())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = model.loss(random_bytes(2, SEQ_LEN + 4))
    assert torch.isfinite(loss)
