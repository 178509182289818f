"""The seed's spectral curriculum as a ready-made :class:`engine.Curriculum`, and its resume rule."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from engine import Curriculum, Phase, Point, Transition
from engine.plan import conjuncts
from policies._checks import check_int, fail
from policies.actions import RestartLR, SetCutoff
from policies.guards import MinEpoch, Plateau, all_of

__all__ = ["spectral_curriculum", "phase_for_epoch"]


def spectral_curriculum(
    n_bins: int = 513,
    cutoffs: Sequence[int] = (128, 256, 512),
    min_epochs: Sequence[int] = (2, 5, 10),
    window: int = 50,
    threshold: float = 0.005,
    preserve: bool = False,
    test: str = "relative",
    alpha: float | None = None,
    seq_lens: Sequence[int] | None = None,
    restart_lr: bool = True,
) -> Curriculum:
    """Open frequency bands step by step: ``cutoff_128 -> cutoff_256 -> cutoff_512 -> full`` (docs/reference.md).

    ``restart_lr=False``: no ``RestartLR()`` on the raises, for a schedule without restarts such as
    :class:`policies.WSD`. ``seq_lens``: one window length per cutoff phase, as its ``params={"seq_len": L}``.
    """
    where = "spectral_curriculum"
    n_bins = check_int(where, "n_bins", n_bins, 2, "bins of the seq_len-point rfft: seq_len // 2 + 1, e.g. 513")
    # Each value is checked once, by the object it makes (SetCutoff, MinEpoch); here what relates them.
    cutoffs, min_epochs = _sequence(where, "cutoffs", cutoffs), _sequence(where, "min_epochs", min_epochs)
    enter = [SetCutoff(c, preserve=preserve) for c in (*cutoffs, None)]
    floors = [MinEpoch(m) for m in min_epochs]
    _increasing(where, "cutoffs", cutoffs, strict=True)
    if cutoffs and cutoffs[-1] >= n_bins:
        expected = f"below n_bins={n_bins} (the last phase opens the full band)"
        raise fail(where, f"cutoffs[{len(cutoffs) - 1}]", expected, cutoffs[-1], "drop it or lower it")
    per_cutoff = f"per cutoff ({len(cutoffs)} for cutoffs {cutoffs})"
    if len(min_epochs) != len(cutoffs):
        fix = "give the earliest epoch of each raise, e.g. (2, 5, 10) for three cutoffs"
        raise fail(where, "min_epochs", f"one minimum epoch {per_cutoff}", min_epochs, fix)
    _increasing(where, "min_epochs", min_epochs)
    lens: list[int | None] = [None] * len(cutoffs)
    if seq_lens is not None:
        lens = _lengths(where, seq_lens)
        if len(lens) != len(cutoffs):
            fix = "e.g. seq_lens=(128, 256, 512) with cutoffs (128, 256, 512) at seq_len 1024"
            raise fail(where, "seq_lens", f"one window length {per_cutoff}", tuple(lens), fix)
        _increasing(where, "seq_lens", lens)
    names = [f"cutoff_{c}" for c in cutoffs] + ["full"]
    phases = [
        Phase(name, params={} if n is None else {"seq_len": n}, on_enter=[action])
        for name, action, n in zip(names, enter, [*lens, None])
    ]
    guards = [all_of(m, Plateau(window=window, threshold=threshold, test=test, alpha=alpha)) for m in floors]
    return Curriculum(phases, _raises(names, guards, restart_lr))


def _raises(names: list[str], guards: list[Any], restart_lr: bool) -> list[Transition]:
    """The epoch-end transitions ``names[k] -> names[k + 1]``, guarded by ``guards[k]``, each firing
    ``RestartLR()`` when ``restart_lr``."""
    return [
        Transition(source, dest, guards=[guard], actions=[RestartLR()] if restart_lr else [], when=Point.EPOCH_END)
        for source, dest, guard in zip(names, names[1:], guards)
    ]


def _sequence(where: str, field: str, values: Any) -> tuple:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise fail(where, field, "a sequence of ints", values, f"e.g. {field}=(2, 5, 10)")
    return tuple(values)


def _lengths(where: str, values: Any) -> list[int]:
    """``seq_lens`` as window lengths: ints >= 1."""
    fix = "window lengths in tokens, e.g. seq_lens=(64, 128, 256)"
    return [check_int(where, f"seq_lens[{i}]", n, 1, fix) for i, n in enumerate(_sequence(where, "seq_lens", values))]


def _increasing(where: str, field: str, values: Sequence[int], *, strict: bool = False) -> None:
    """Refuses ``values`` unless they increase strictly, or (not ``strict``) never decrease."""
    if any(b < a or (strict and b == a) for a, b in zip(values, values[1:])):
        fix = f"sort them{' and drop repeats' if strict else ''}: {tuple(sorted(set(values) if strict else values))}"
        raise fail(where, field, "strictly increasing" if strict else "not decreasing", tuple(values), fix)


def _min_epoch(guards: Iterable[Any], entered: int) -> int | None:
    """The earliest global epoch at which these (AND-ed) guards' MinEpoch requirements hold (inside
    ``all_of`` too; ``in_phase`` counts from ``entered``); None when no MinEpoch constrains them."""
    floors = [g for top in guards for g in conjuncts(top) if isinstance(g, MinEpoch)]
    return max((entered + g.n if g.in_phase else g.n for g in floors), default=None)


def phase_for_epoch(curriculum: Curriculum, epochs_completed: int) -> str:
    """The phase to resume in from a checkpoint without engine state, after ``epochs_completed`` epochs:
    the highest the epoch allows along the first transitions whose ``MinEpoch`` it meets (docs/reference.md);
    transitions without a ``MinEpoch`` are not followed."""
    epochs = check_int(
        "phase_for_epoch", "epochs_completed", epochs_completed, 0, "pass the epochs the checkpoint completed"
    )
    name, entered, seen = curriculum.initial_name, 0, {curriculum.initial_name}
    while True:
        for tr in curriculum.outgoing(name):
            need = _min_epoch(tr.guards, entered)
            if need is not None and need <= epochs and tr.dest not in seen:
                name, entered = tr.dest, need
                seen.add(name)
                break
        else:
            return name
