"""``chunklm train --curriculum FILE`` and ``chunklm diagram FILE``: a curriculum from a data file.

A file (docs/curriculum-files.md) replaces the curriculum the flags build; it is checked against what
``chunklm train``'s loop provides before anything runs, and on resume against the checkpoint's engine
state. The checkpoint stores the curriculum, so a resume needs no file.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from engine import Curriculum, CurriculumError, Point, curriculum_from_dict, load_curriculum
from engine.core import guard_leaves, metrics_read, spec_differences
from runs.errors import UsageError

__all__ = ["curriculum_for_run", "check_metrics_read", "check_saved_curriculum", "load_file", "saved_differences"]

# What chunklm.train.Trainer registers with its engine and passes to step_end / epoch_end.
OBJECTS = ("model", "optimizer", "schedule")
METRICS = {"step_end": ("loss", "lr"), "epoch_end": ("val_bpb", "avg_loss")}
# The phase params the loop reads: the window length a phase trains on (chunklm.train.Trainer.seq_len),
# and the weights of the named data sources it reads (policies.MixtureSampler).
PARAMS = ("seq_len", "mix")
# The settings a curriculum file replaces (they build the spectral curriculum).
CURRICULUM_FLAGS = (
    "cutoffs min_epochs plateau_window plateau_threshold plateau_test plateau_alpha preserve seq_lens".split()
)


def load_file(path: str) -> Curriculum:
    """The curriculum in ``path``; its errors as one-line usage errors (naming the installed copy of a
    shipped curriculum, ``policies/curricula/NAME``, when ``path`` names one that is not there)."""
    try:
        return load_curriculum(path)
    except CurriculumError as exc:
        shipped = Path(__file__).resolve().parent.parent / "policies" / "curricula" / Path(path).name
        if not Path(path).exists() and shipped.is_file():
            raise UsageError(f"{exc}; the shipped {shipped.name} is {shipped}") from None
        raise UsageError(str(exc)) from None


def check_for_training(curriculum: Curriculum, where: str, config: Any) -> Curriculum:
    """``curriculum`` (from ``where``, for messages), checked against what ``chunklm train`` provides under
    ``config`` (a :class:`chunklm.train.TrainConfig`: the model's bins and the LR schedule)."""
    n_bins, full = config.model.n_bins, config.model.seq_len
    for phase in curriculum.phases:
        unread = sorted(set(phase.params) - set(PARAMS))
        if unread:
            raise UsageError(
                f"{where}: phase {phase.name!r} has params {unread}, which chunklm train does not read (it reads only "
                f"{', '.join(PARAMS)}; a phase changes the model through its actions, e.g. SetCutoff); remove them, "
                "or drive the curriculum from your own loop (engine.CurriculumEngine)"
            )
        n = phase.params.get("seq_len", full)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= full or full % n:
            raise UsageError(
                f"{where}: phase {phase.name!r} has seq_len = {n!r}; it must be a divisor of --seq-len {full} "
                f"(the phase trains on windows cut into pieces of that length), e.g. {full // 2} or {full // 4}"
            )
        if "mix" in phase.params:
            _check_mix(phase, where, config)
        for action in phase.on_enter:
            _check_action(action, where, f"phase {phase.name!r} on_enter", n_bins, config.schedule)
    for name, users in curriculum.requirements().items():
        if name not in OBJECTS:
            raise UsageError(
                f"{where}: {users[0]} needs a registered {name!r}, and chunklm train registers only "
                f"{', '.join(OBJECTS)}; use guards and actions that need only those"
            )
    for tr in curriculum.transitions:
        for action in tr.actions:
            _check_action(action, where, f"transition {tr.label}", n_bins, config.schedule)
    return check_metrics_read(curriculum, where)


def check_metrics_read(curriculum: Curriculum, where: str) -> Curriculum:
    """Every guard of ``curriculum`` reads only the metrics ``chunklm train`` passes (and its CSVs hold)."""
    for tr in curriculum.transitions:
        for leaf in (leaf for g in tr.guards for leaf in guard_leaves(g)):
            for point, passed in METRICS.items():
                for metric in metrics_read(leaf, tr.when, Point(point)):
                    if metric not in passed:
                        raise UsageError(
                            f"{where}: {leaf!r} in transition {tr.label} reads the metric {metric!r} at {point}, "
                            f"and chunklm train passes only {', '.join(passed)} there; "
                            f'use one of those (e.g. metric = "{passed[0]}")'
                        )
    return curriculum


def _check_mix(phase: Any, where: str, config: Any) -> None:
    """A phase's ``mix`` names only the sources of ``--data NAME=PATH ...``, with weights of a positive sum."""
    from chunklm.corpus import CorpusError, data_sources
    from policies import mix_weights

    try:
        sources = data_sources(config.data)
    except CorpusError as exc:
        raise UsageError(str(exc)) from None
    if sources is None:
        raise UsageError(
            f"{where}: phase {phase.name!r} has a mix, and --data names no sources; "
            "name them, e.g. --data general=PATH target=PATH"
        )
    try:
        mix_weights(phase.params["mix"], tuple(sources), f"{where}: phase {phase.name!r}")
    except CurriculumError as exc:
        raise UsageError(str(exc)) from None


def _check_action(action: Any, where: str, what: str, n_bins: int, schedule: str) -> None:
    """A cutoff within the model's bins, and an LR action the ``--schedule`` can take (refused here in the
    flag's words, rather than by the action's ``check``, which speaks of registered objects)."""
    from policies import RestartLR, SetCutoff, StartCooldown

    if isinstance(action, SetCutoff) and action.n is not None and action.n > n_bins:
        raise UsageError(
            f"{where}: {action!r} in {what} opens more bins than the model has ({n_bins} at this --seq-len); "
            f'use n <= {n_bins}, or n = "full"'
        )
    if isinstance(action, StartCooldown) and schedule != "wsd":
        raise UsageError(
            f"{where}: {action!r} in {what} starts a WSD cooldown, and --schedule {schedule} has none; "
            "pass --schedule wsd"
        )
    if isinstance(action, RestartLR) and schedule != "staged":
        raise UsageError(
            f"{where}: {action!r} in {what} restarts the LR, and --schedule {schedule} has no restarts; "
            "pass --schedule staged, or remove RestartLR from the file"
        )


def saved_differences(curriculum: Curriculum, saved: Any) -> list[str] | None:
    """None when the checkpoint's engine state was saved from ``curriculum`` (or holds no engine state to
    compare: weights only, or damaged, which the restore reports); else what differs (possibly nothing
    nameable: an empty list)."""
    from engine.state import from_primitives

    raw = saved.trainer.get("engine") if isinstance(saved.trainer, dict) else None
    if raw is None:
        return None  # weights only: resumed by phase_for_epoch
    try:
        snap = from_primitives(raw)
    except CurriculumError:
        return None  # a damaged state: the restore reports it
    if snap.fingerprint == curriculum.fingerprint(snap.fingerprint_version):
        return None
    return spec_differences(snap.spec, curriculum.spec()) if snap.spec is not None else []


def _what(changes: list[str]) -> str:
    return f" ({'; '.join(changes[:4])}{'; ...' if len(changes) > 4 else ''}, saved -> this one)" if changes else ""


def check_saved_curriculum(
    curriculum: Curriculum, saved: Any, ckpt: Path, path: str | None, config: Any = None
) -> None:
    """On resume: the checkpoint's engine state was saved from ``curriculum`` (file ``path``, or
    None for the one the settings make), else one line saying what differs and what to pass.
    ``config``: the run's, to tell a run trained from its flags (drop ``--curriculum``)."""
    changes = saved_differences(curriculum, saved)
    if changes is None:
        return
    if path is not None:
        if getattr(saved, "curriculum", None) is not None:
            way = "drop --curriculum: the checkpoint stores the one it was trained with"
        elif config is not None and saved_differences(config.curriculum(), saved) is None:
            way = "drop --curriculum: the run was trained with the curriculum its flags make"
        else:
            way = "resume with the file it was trained with"
        raise UsageError(f"--curriculum {path}: {ckpt} was saved with another curriculum{_what(changes)}; {way}")
    raise UsageError(
        f"{ckpt} was saved with a curriculum its settings do not make{_what(changes)}; if it was trained with "
        "--curriculum FILE, resume with --curriculum and that file"
    )


def refuse_curriculum_flags(args: argparse.Namespace, saved: Any, ckpt: Path) -> None:
    """The flags that build the settings' curriculum, given with a curriculum that replaces theirs (a
    ``--curriculum`` file, or the one checkpoint ``saved`` stores), are refused. Called before the settings
    are built: they would check the flags' curriculum first, in words about the wrong thing."""
    path = getattr(args, "curriculum", None)
    if path is None and getattr(saved, "curriculum", None) is None:
        return
    given = [name for name in CURRICULUM_FLAGS if hasattr(args, name)]  # flags default to absent (argparse.SUPPRESS)
    if given:
        source = (
            f"--curriculum {path}"
            if path is not None
            else f"the curriculum {ckpt} stores (from {saved.curriculum_file})"
        )
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        hint = " (a phase's window length is its seq_len param in the file)" if "seq_lens" in given else ""
        raise UsageError(
            f"{flags} build the spectral curriculum, which {source} replaces; drop "
            f"{'them' if len(given) > 1 else 'it'}"
            + (", or set the same in the file" if path is not None else "")
            + hint
        )


def stored_curriculum(saved: Any, ckpt: Path, config: Any) -> Curriculum:
    """The curriculum a checkpoint stores (a run trained with ``--curriculum FILE``), checked
    against the engine state saved with it and against what ``chunklm train`` provides."""
    from runs.checkpoint import CheckpointError

    try:
        curriculum = curriculum_from_dict(saved.curriculum, source=f"{ckpt}: curriculum")
        check_for_training(curriculum, f"the curriculum stored in {ckpt}", config)
        check_saved_curriculum(curriculum, saved, ckpt, None)
    except (CurriculumError, UsageError) as exc:
        raise CheckpointError(
            f"{ckpt} is damaged or edited: the curriculum it stores cannot be used ({exc}); "
            f"resume with --curriculum {saved.curriculum_file or 'FILE'} (the file it was trained with), "
            "or from another checkpoint"
        ) from None
    return curriculum


def curriculum_for_run(
    args: argparse.Namespace, config: Any, saved: Any, ckpt: Path
) -> tuple[Curriculum | None, str | None]:
    """The curriculum ``chunklm train`` runs and where it comes from: the file's (``--curriculum``),
    on resume the one the checkpoint stores (a run trained with a file, resumed without it), or
    (None, None) for the settings' spectral curriculum; on resume, checked against the checkpoint's."""
    path = getattr(args, "curriculum", None)
    stored = getattr(saved, "curriculum", None) is not None
    if path is None and not stored:
        if saved is not None:
            check_saved_curriculum(config.curriculum(), saved, ckpt, None)
        return None, None
    if path is None:  # the flags these replace were refused before the settings were built (refuse_curriculum_flags)
        return stored_curriculum(saved, ckpt, config), saved.curriculum_file
    curriculum = check_for_training(load_file(path), f"--curriculum {path}", config)
    if saved is not None:
        check_saved_curriculum(curriculum, saved, ckpt, path, config)
    return curriculum, path
