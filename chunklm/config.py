"""ChunkLM's configuration: one frozen attrs class, plain fields, so cattrs can store it."""

from __future__ import annotations

import enum
from typing import Any

import attrs

__all__ = ["ConfigError", "KernelInit", "ChunkLMConfig"]


class ConfigError(ValueError):
    """A ChunkLM setting is out of range; the message names the field, what came and the fix."""


class KernelInit(str, enum.Enum):
    """How the long-convolution kernels start.

    ``WHITE`` (default): random coefficients in all ``kernel_len // 2 + 1`` bins (white-noise
    kernels, the seed's behaviour). ``SMOOTH``: random coefficients in the first ``init_cutoff``
    bins only, exactly zero above; with ``preserve=True`` raises the bands above the cutoff then
    stay exactly zero, the exact, function-preserving curriculum. That combination was measured to
    end worse: 0.2-1.8% higher validation bpb than white kernels with the seed's noisy opening, in
    three settings (BENCHMARKS.md, "New defaults").
    """

    SMOOTH = "smooth"
    WHITE = "white"

    def __str__(self) -> str:
        return self.value


def _to_kernel_init(value: Any) -> KernelInit:
    try:
        return KernelInit(value)
    except ValueError:
        choices = ", ".join(repr(k.value) for k in KernelInit)
        raise ConfigError(
            f"kernel_init must be one of {choices}: got {value!r}; pass --kernel-init smooth or white"
        ) from None


def _positive_int(flag: str):
    def check(inst: Any, attribute: attrs.Attribute, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(
                f"{attribute.name} must be an int >= 1: got {attribute.name}={value!r}; "
                f"pass a positive integer to {flag}"
            )

    return check


def _check_kernel_len(inst: "ChunkLMConfig", attribute: attrs.Attribute, value: int) -> None:
    _positive_int("--kernel-len")(inst, attribute, value)
    if value > inst.seq_len:
        raise ConfigError(
            f"kernel_len must be <= seq_len: got kernel_len={value}, seq_len={inst.seq_len}; "
            "lower --kernel-len or raise --seq-len"
        )


def _check_dropout(inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ConfigError(f"dropout must be a float in [0, 1): got dropout={value!r}; pass e.g. --dropout 0.1")


def _check_init_cutoff(inst: "ChunkLMConfig", attribute: attrs.Attribute, value: Any) -> None:
    if value is None:
        return
    n_bins = inst.seq_len // 2 + 1
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= n_bins:
        raise ConfigError(
            f"init_cutoff must be None or an int in [1, {n_bins}] (bins of the seq_len={inst.seq_len} "
            f"rfft): got init_cutoff={value!r}; leave it unset for seq_len // 8 or pass a value in range"
        )


@attrs.frozen
class ChunkLMConfig:
    """The model's shape. Derive variants with ``attrs.evolve``; store with cattrs.

    ``init_cutoff`` is counted in bins of a ``seq_len``-point rfft (``seq_len // 2 + 1`` bins), the
    unit the curriculum's cutoffs use; None means ``seq_len // 8``, the curriculum's first cutoff.
    """

    d_model: int = attrs.field(validator=_positive_int("--d-model"))
    n_layers: int = attrs.field(validator=_positive_int("--n-layers"))
    seq_len: int = attrs.field(validator=_positive_int("--seq-len"))
    kernel_len: int = attrs.field(validator=_check_kernel_len)
    chunk: int = attrs.field(validator=_positive_int("--chunk"))
    dropout: float = attrs.field(default=0.0, validator=_check_dropout)
    ff_mult: int = attrs.field(default=4, validator=_positive_int("--ff-mult"))
    init_cutoff: int | None = attrs.field(default=None, validator=_check_init_cutoff)
    kernel_init: KernelInit = attrs.field(default=KernelInit.WHITE, converter=_to_kernel_init)

    @property
    def n_bins(self) -> int:
        """Bins of a ``seq_len``-point rfft: the unit of every cutoff (513 for seq_len 1024)."""
        return self.seq_len // 2 + 1

    @property
    def resolved_init_cutoff(self) -> int:
        """``init_cutoff``, with None resolved to ``seq_len // 8`` (at least 1)."""
        return self.init_cutoff if self.init_cutoff is not None else max(1, self.seq_len // 8)
