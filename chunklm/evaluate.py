"""Validation bits per byte, and an exponential moving average (EMA) of the weights."""

from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch
import torch.nn as nn

from chunklm.corpus import ByteCorpus

__all__ = ["EMA", "evaluate_bpb"]


class EMA:
    """A shadow copy of a model's parameters (not its buffers), ``shadow = decay * shadow + (1 - decay) * live``.

    Buffers, the cutoff among them, stay the live model's: ``applied`` swaps parameters only.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1): got decay={decay!r}; e.g. 0.999")
        self.decay = float(decay)
        self.num_updates = 0
        self.shadow = {name: p.detach().clone() for name, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the shadow towards the live parameters; call after each optimizer step."""
        for name, p in model.named_parameters():
            self.shadow[name].lerp_(p.detach(), 1.0 - self.decay)
        self.num_updates += 1

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """Within the block the model holds the shadow parameters; the live ones come back after."""
        params = dict(model.named_parameters())
        live = {name: p.detach().clone() for name, p in params.items()}
        try:
            with torch.no_grad():
                for name, p in params.items():
                    p.copy_(self.shadow[name])
            yield model
        finally:
            with torch.no_grad():
                for name, p in params.items():
                    p.copy_(live[name])

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.shadow) ^ set(state["shadow"])
        if missing:
            raise ValueError(
                f"EMA state does not match the model: parameters {sorted(missing)} differ; "
                "load an EMA saved from the same model configuration"
            )
        self.decay, self.num_updates = float(state["decay"]), int(state["num_updates"])
        for name, tensor in state["shadow"].items():
            self.shadow[name].copy_(tensor)


@torch.no_grad()
def evaluate_bpb(
    model: nn.Module, corpus: ByteCorpus, n_windows: int = 64, batch_size: int = 8, ema: EMA | None = None
) -> dict[str, float]:
    """Bits per byte on ``corpus.val_batches(n_windows, batch_size)``, every position scored.

    Returns ``{"bpb": next-byte (offset 1) bpb, "bpb_mean": mean over the chunk offsets}``. Runs in
    eval mode without gradients and restores the model's mode; with ``ema`` it evaluates the shadow
    weights at the live model's cutoff and puts the live weights back. The weights never change.
    """
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    try:
        with ema.applied(model) if ema is not None else contextlib.nullcontext():
            total, count = None, 0
            for windows in corpus.val_batches(n_windows, batch_size):
                _, per_offset = model.loss(windows.to(device))  # (C,) mean nats
                n = windows.shape[0]
                total = per_offset.double() * n if total is None else total + per_offset.double() * n
                count += n
    finally:
        model.train(was_training)
    bits = (total / count / math.log(2)).cpu()  # (C,) bits per byte per offset
    return {"bpb": float(bits[0]), "bpb_mean": float(bits.mean())}
