"""Sampling bytes from a ChunkLM, a chunk of bytes per forward pass."""

from __future__ import annotations

from typing import Callable

import torch

from chunklm.model import ChunkLM

__all__ = ["generate"]

EMPTY_PROMPT = b"\n"  # context used when the prompt is empty (not part of the output)


def _sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> torch.Tensor:
    """logits (C, 256) float32 -> (C,) bytes, one per offset; temperature 0 is greedy."""
    if temperature == 0.0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, dim=-1)  # (C, 256)
    if top_p < 1.0:
        sorted_p, order = probs.sort(-1, descending=True)  # (C, 256)
        drop = sorted_p.cumsum(-1) - sorted_p >= top_p  # outside the smallest set reaching top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]  # (C,)


@torch.no_grad()
def generate(
    model: ChunkLM,
    prompt: bytes,
    n: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    on_bytes: Callable[[bytes], None] | None = None,
) -> bytes:
    """The ``n`` bytes that follow ``prompt`` (the prompt itself is not returned).

    Each forward pass samples ``chunk`` bytes at once, one from each offset's distribution at the
    last position, appends them and repeats; the context is cropped to the last ``seq_len`` bytes.
    Sampling runs on the CPU from a ``torch.Generator`` seeded with ``seed``, so the same model,
    prompt and arguments give the same bytes. An empty prompt starts from a newline. Temperature 0
    is greedy; ``top_p`` < 1 samples from the smallest set of bytes whose probability reaches it.
    ``on_bytes``, if given, receives each chunk of new bytes as soon as it is sampled (streaming).
    """
    if n < 0 or temperature < 0 or not 0.0 < top_p <= 1.0:
        raise ValueError(
            f"generate needs n >= 0, temperature >= 0 and 0 < top_p <= 1: got n={n}, "
            f"temperature={temperature}, top_p={top_p}"
        )
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    context = list(prompt or EMPTY_PROMPT)
    out: list[int] = []
    was_training = model.training
    model.eval()
    try:
        while len(out) < n:
            idx = torch.tensor([context[-model.config.seq_len :]], dtype=torch.long, device=device)  # (1, T)
            h = model.hidden(model.embed(idx))[:, -1]  # (1, D): the head runs at the last position only
            logits = model.head(h).view(-1, 256).float().cpu()  # (C, 256): bytes t+1 .. t+C
            chunk = _sample(logits, temperature, top_p, generator).tolist()
            context += chunk
            if on_bytes is not None:
                on_bytes(bytes(chunk[: n - len(out)]))
            out += chunk
    finally:
        model.train(was_training)
    return bytes(out[:n])
