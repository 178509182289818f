"""Sampling: a chunk of bytes per forward pass, deterministic under a seed."""

import pytest
import torch

from chunklm import ChunkLM, ChunkLMConfig, generate


@pytest.fixture(scope="module")
def model() -> ChunkLM:
    torch.manual_seed(0)
    return ChunkLM(ChunkLMConfig(d_model=16, n_layers=2, seq_len=32, kernel_len=8, chunk=4))


def test_same_seed_same_bytes(model):
    """The same prompt, arguments and seed give the same bytes; another seed gives others."""
    a = generate(model, b"def f(x):", 40, temperature=1.0, top_p=0.9, seed=7)
    assert a == generate(model, b"def f(x):", 40, temperature=1.0, top_p=0.9, seed=7)
    assert a != generate(model, b"def f(x):", 40, temperature=1.0, top_p=0.9, seed=8)


@pytest.mark.parametrize("n", [0, 1, 4, 10])
def test_returns_exactly_n_new_bytes(model, n):
    """generate returns the n bytes after the prompt, also when n is not a multiple of chunk."""
    out = generate(model, b"abc", n)
    assert isinstance(out, bytes) and len(out) == n


def test_one_forward_pass_per_chunk(model):
    """Each forward pass yields chunk bytes: 10 bytes at chunk 4 take 3 passes."""
    calls = []
    handle = model.embed.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    try:
        generate(model, b"x", 10)
    finally:
        handle.remove()
    assert len(calls) == 3


def test_empty_prompt_starts_from_newline(model):
    """An empty prompt samples as if the prompt were a single newline."""
    assert generate(model, b"", 12, seed=3) == generate(model, b"\n", 12, seed=3)


def test_long_prompt_is_cropped_to_seq_len(model):
    """A prompt longer than seq_len is cropped to its last seq_len bytes."""
    prompt = bytes(range(100))
    assert generate(model, prompt, 8, seed=1) == generate(model, prompt[-32:], 8, seed=1)


def test_greedy_and_tiny_top_p_agree(model):
    """Temperature 0 is greedy, whatever the seed; top_p near 0 keeps only the most likely byte."""
    greedy = generate(model, b"import ", 12, temperature=0.0, seed=0)
    assert greedy == generate(model, b"import ", 12, temperature=0.0, seed=99)
    assert greedy == generate(model, b"import ", 12, top_p=1e-9, seed=5)


def test_restores_training_mode(model):
    """generate samples in eval mode and gives the model back in training mode if it was."""
    model.train()
    generate(model, b"a", 4)
    assert model.training


@pytest.mark.parametrize("kwargs", [dict(n=-1), dict(temperature=-0.5), dict(top_p=0.0), dict(top_p=1.5)])
def test_rejects_bad_arguments(model, kwargs):
    """Negative n or temperature, or top_p outside (0, 1], is a ValueError."""
    with pytest.raises(ValueError):
        generate(model, b"a", **{"n": 4, **kwargs})
