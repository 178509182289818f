"""Sequence-length warmup as a curriculum: phases that train on shorter windows, then the full length.

A phase's window length is a phase param, ``Phase("seq_64", params={"seq_len": 64})``: the loop
reads ``engine.phase.params.get("seq_len")`` before each step (ChunkLM's trainer does; see
``chunklm.train``), so a resumed run trains at the length of the phase it resumes in, with nothing
else to restore. Fixed switches (``at_epochs``) are Composer's ``SeqLengthWarmup`` and DeepSpeed's
curriculum; ``min_epochs`` gives the plateau-triggered variant.
"""

from __future__ import annotations

from typing import Sequence

from engine import Curriculum, Phase, Point, Transition
from policies._checks import check_int, fail
from policies.actions import RestartLR
from policies.guards import MinEpoch, Plateau, all_of, any_of
from policies.spectral import _ints

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
    lens = _ints(where, "seq_lens", seq_lens)
    if not lens:
        raise fail(where, "seq_lens", "at least one window length", tuple(seq_lens), "e.g. seq_lens=(64, 128, 256)")
    for i, n in enumerate(lens):
        check_int(where, f"seq_lens[{i}]", n, 1, "window lengths in tokens (bytes), e.g. 64")
        if i and n <= lens[i - 1]:
            raise fail(where, "seq_lens", "strictly increasing", tuple(lens), f"e.g. {tuple(sorted(set(lens)))}")
    if (at_epochs is None) == (min_epochs is None):
        raise fail(
            where,
            "at_epochs",
            "given (fixed switches), or else min_epochs (plateau-triggered): exactly one",
            (at_epochs, min_epochs),
            "e.g. at_epochs=(3, 6), or min_epochs=(1, 3) with a plateau rule",
        )
    if at_epochs is not None and max_epochs is not None:
        raise fail(
            where,
            "max_epochs",
            "None with fixed switches (at_epochs)",
            max_epochs,
            "drop max_epochs, or use min_epochs",
        )
    epochs = {"at_epochs": at_epochs, "min_epochs": min_epochs, "max_epochs": max_epochs}
    checked: dict[str, list[int]] = {}
    for name, values in epochs.items():
        if values is None:
            continue
        values = _ints(where, name, values)
        if len(values) != len(lens):
            raise fail(
                where,
                name,
                f"one epoch per shorter length ({len(lens)} for seq_lens {tuple(lens)})",
                tuple(values),
                "give the epoch of each switch, e.g. (3, 6) for two lengths",
            )
        if values != sorted(values):  # each value is checked by the MinEpoch it makes
            raise fail(where, name, "not decreasing", tuple(values), f"e.g. {tuple(sorted(values))}")
        checked[name] = values
    if "max_epochs" in checked and any(hi < lo for lo, hi in zip(checked["min_epochs"], checked["max_epochs"])):
        raise fail(
            where,
            "max_epochs",
            "each >= its min_epochs",
            tuple(checked["max_epochs"]),
            f"at least {tuple(checked['min_epochs'])}",
        )

    names = [f"seq_{n}" for n in lens] + ["full"]
    phases = [Phase(name, params={"seq_len": n}) for name, n in zip(names, lens)] + [Phase("full")]
    transitions = []
    for k in range(len(lens)):
        if at_epochs is not None:
            guard = MinEpoch(checked["at_epochs"][k])
        else:
            guard = all_of(
                MinEpoch(checked["min_epochs"][k]), Plateau(window=window, threshold=threshold, test=test, alpha=alpha)
            )
            if "max_epochs" in checked:
                guard = any_of(guard, MinEpoch(checked["max_epochs"][k]))
        transitions.append(
            Transition(
                names[k],
                names[k + 1],
                guards=[guard],
                actions=[RestartLR()] if restart_lr else [],
                when=Point.EPOCH_END,
            )
        )
    return Curriculum(phases, transitions)
