"""Sequence-length warmup as a curriculum: phases that train on shorter windows, then the full length.

A phase's window length is a phase param, ``Phase("seq_64", params={"seq_len": 64})``, which the loop
reads before each step: a resumed run trains at the length of its phase, with nothing else to restore.
"""

from __future__ import annotations

from typing import Sequence

from engine import Curriculum, Phase
from policies._checks import fail
from policies.guards import MinEpoch, Plateau, all_of, any_of
from policies.spectral import _increasing, _lengths, _raises, _sequence

__all__ = ["seq_len_curriculum"]


def seq_len_curriculum(
    seq_lens: Sequence[int],
    *,
    at_epochs: Sequence[int] | None = None,
    min_epochs: Sequence[int] | None = None,
    max_epochs: Sequence[int] | None = None,
    window: int = 50,
    threshold: float = 0.005,
    test: str = "relative",
    alpha: float | None = None,
    restart_lr: bool = False,
) -> Curriculum:
    """``seq_<L1> -> seq_<L2> -> ... -> full``: train on windows of L1 bytes, then L2, ..., then the full length.

    Each ``seq_<L>`` phase has ``params={"seq_len": L}``; ``full`` has no params (the model's own
    length). The lengths strictly increase. Each switch is checked at epoch end and is either

    * fixed: ``at_epochs[k]``, the global epoch at which the k-th switch happens (``MinEpoch``); or
    * plateau-triggered: ``min_epochs[k]`` (a floor) and a plateau of the training loss
      (``Plateau(window, threshold, test=test, alpha=alpha)``), with an optional ceiling
      ``max_epochs[k]`` at which it switches anyway.

    ``restart_lr=True`` fires ``RestartLR()`` at each switch (for a schedule with stages, as the
    spectral curriculum does); the default keeps the LR schedule running through the switches.
    """
    where = "seq_len_curriculum"
    lens = _lengths(where, seq_lens)
    if not lens:
        raise fail(where, "seq_lens", "at least one window length", tuple(seq_lens), "e.g. seq_lens=(64, 128, 256)")
    _increasing(where, "seq_lens", lens, strict=True)
    if (at_epochs is None) == (min_epochs is None):
        expected = "given (fixed switches), or else min_epochs (plateau-triggered): exactly one"
        fix = "e.g. at_epochs=(3, 6), or min_epochs=(1, 3) with a plateau rule"
        raise fail(where, "at_epochs", expected, (at_epochs, min_epochs), fix)
    if at_epochs is not None and max_epochs is not None:
        fix = "drop max_epochs, or use min_epochs"
        raise fail(where, "max_epochs", "None with fixed switches (at_epochs)", max_epochs, fix)
    # Each epoch is checked by the MinEpoch it makes; here only what relates them.
    epochs = {"at_epochs": at_epochs, "min_epochs": min_epochs, "max_epochs": max_epochs}
    epochs = {name: _sequence(where, name, values) for name, values in epochs.items() if values is not None}
    floors = {name: [MinEpoch(n) for n in values] for name, values in epochs.items()}
    for name, values in epochs.items():
        if len(values) != len(lens):
            expected = f"one epoch per shorter length ({len(lens)} for seq_lens {tuple(lens)})"
            raise fail(where, name, expected, values, "give the epoch of each switch, e.g. (3, 6) for two lengths")
        _increasing(where, name, values)
    if "max_epochs" in epochs and any(hi < lo for lo, hi in zip(epochs["min_epochs"], epochs["max_epochs"])):
        fix = f"at least {epochs['min_epochs']}"
        raise fail(where, "max_epochs", "each >= its min_epochs", epochs["max_epochs"], fix)

    names = [f"seq_{n}" for n in lens] + ["full"]
    phases = [Phase(name, params={"seq_len": n}) for name, n in zip(names, lens)] + [Phase("full")]
    if at_epochs is not None:
        return Curriculum(phases, _raises(names, floors["at_epochs"], restart_lr))
    plateau = [
        all_of(m, Plateau(window=window, threshold=threshold, test=test, alpha=alpha)) for m in floors["min_epochs"]
    ]
    guards = [any_of(g, m) for g, m in zip(plateau, floors["max_epochs"])] if max_epochs is not None else plateau
    return Curriculum(phases, _raises(names, guards, restart_lr))
