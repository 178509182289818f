"""Run settings: the seed's defaults, presets, explicit flags and the resume rules.

Precedence for a fresh run: defaults < preset < flags given explicitly. On ``--resume``:
checkpoint < flags given explicitly, and an explicit flag that would change the trajectory and
differs from the checkpoint is an error listing each differing field.
"""

from __future__ import annotations

from typing import Any

from chunklm.model import ChunkLMConfig
from chunklm.train import TrainConfig

__all__ = ["DEFAULTS", "PRESETS", "MAY_CHANGE_ON_RESUME", "SettingsError", "fresh_settings", "resume_settings", "to_config"]


class SettingsError(ValueError):
    """Flags that cannot make a run; the message says which and why."""


# The seed's command line and the seed system's model size.
DEFAULTS: dict[str, Any] = {
    "seq_len": 1024,
    "kernel_len": 128,
    "chunk": 16,
    "d_model": 512,
    "n_layers": 6,
    "dropout": 0.0,
    "kernel_init": "smooth",
    "data": (),
    "batch_size": 4,
    "accum_steps": 8,
    "steps_per_epoch": 1000,
    "epochs": 50,
    "lr": 2e-4,
    "weight_decay": 0.1,
    "grad_clip": 1.0,
    "seed": 0,
    "ema": None,
    "cutoffs": None,  # None: seq_len/8, seq_len/4, seq_len/2
    "min_epochs": (2, 5, 10),
    "plateau_window": 50,
    "plateau_threshold": 0.005,
    "preserve": True,
    "eval_windows": 64,
}

PRESETS: dict[str, dict[str, Any]] = {
    # The seed's exact values (these are also the defaults).
    "seed": {},
    # CPU-sized: shows the raises on the default corpus in about 5 minutes on 2 cores.
    "demo": {
        "seq_len": 256,
        "kernel_len": 64,
        "chunk": 8,
        "d_model": 128,
        "n_layers": 4,
        "batch_size": 8,
        "accum_steps": 1,
        "steps_per_epoch": 150,
        "epochs": 12,
        "lr": 2e-3,
        "min_epochs": (2, 4, 6),
        "plateau_window": 100,
        "plateau_threshold": 0.01,
        "eval_windows": 32,
    },
}

# Flags that do not change the trajectory (or change it in a documented way: --epochs).
MAY_CHANGE_ON_RESUME = {"epochs"}


def _complete(settings: dict[str, Any]) -> dict[str, Any]:
    settings = dict(settings)
    if settings.get("cutoffs") is None:
        n = settings["seq_len"]
        settings["cutoffs"] = (n // 8, n // 4, n // 2)
    settings["cutoffs"] = tuple(settings["cutoffs"])
    settings["min_epochs"] = tuple(settings["min_epochs"])
    settings["data"] = tuple(settings["data"])
    return settings


def fresh_settings(preset: str | None, explicit: dict[str, Any]) -> dict[str, Any]:
    unknown = set(explicit) - set(DEFAULTS)
    if unknown:
        raise SettingsError(f"unknown settings {sorted(unknown)}")
    return _complete({**DEFAULTS, **PRESETS.get(preset or "seed", {}), **explicit})


def resume_settings(saved: dict[str, Any], saved_preset: str | None, preset: str | None, explicit: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's settings with the explicit flags applied; conflicting flags are an error."""
    saved = _complete({**DEFAULTS, **saved})
    differing = []
    if preset is not None and preset != (saved_preset or "seed"):
        differing.append(f"--preset: checkpoint has {saved_preset or 'seed'!r}, given {preset!r}")
    for key, value in explicit.items():
        if key in MAY_CHANGE_ON_RESUME:
            continue
        old = saved.get(key)
        new = tuple(value) if isinstance(value, list) else value
        if new != old:
            differing.append(f"--{key.replace('_', '-')}: checkpoint has {_show(old)}, given {_show(new)}")
    if differing:
        raise SettingsError(
            "these flags differ from the checkpoint and would change the run's trajectory:\n  "
            + "\n  ".join(differing)
            + "\nDrop them to continue the run as it was, or start a new run with another --ckpt"
        )
    return _complete({**saved, **explicit})


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) or "(none)"
    return repr(value)


def to_config(settings: dict[str, Any]) -> TrainConfig:
    """Build the validated configs; their errors name the field and the fix."""
    model = ChunkLMConfig(
        d_model=settings["d_model"],
        n_layers=settings["n_layers"],
        seq_len=settings["seq_len"],
        kernel_len=settings["kernel_len"],
        chunk=settings["chunk"],
        dropout=settings["dropout"],
        init_cutoff=settings["cutoffs"][0] if settings["cutoffs"] else None,
        kernel_init=settings["kernel_init"],
    )
    return TrainConfig(
        model=model,
        **{k: settings[k] for k in (
            "data", "batch_size", "accum_steps", "steps_per_epoch", "epochs", "lr", "weight_decay", "grad_clip", "seed",
            "ema", "cutoffs", "min_epochs", "plateau_window", "plateau_threshold", "preserve", "eval_windows",
        )},
    )
