"""``chunklm replay RUN``: would another plateau rule have raised elsewhere, and which guard decided?

Feeds the run's recorded per-step losses and per-epoch metrics (its steps and epochs CSV) to the
curriculum the run's own settings make (as ``chunklm train`` built it), with the curriculum flags
given here applied (``--plateau-window``, ``--plateau-threshold``, ``--plateau-test``,
``--plateau-alpha``, ``--min-epochs``, ``--cutoffs``), or to every setting of a ``--grid``; or to
the curriculum of each ``--curriculum FILE``. A run trained with ``--curriculum FILE`` is replayed
under the curriculum its checkpoint stores. Prints one row per setting: the step of each raise with
its deciding guard, up to the first decision that differs from the recorded run (after it, the
recorded losses came from a model in another phase).
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path
from typing import Any, Iterable

from engine import Curriculum, CurriculumError, History, Record, Replay, replay
from engine.grid import LEGEND as SWITCH_LEGEND
from engine.grid import format_table as engine_format_table
from runs.errors import UsageError

__all__ = [
    "add_replay_parser",
    "run_replay",
    "GRID_KEYS",
    "load_stream",
    "recorded_settings",
    "replay_settings",
    "settings_curriculum",
    "parse_grid",
    "format_table",
    "label",
    "describe_settings",
    "LEGEND",
]

# --grid keys -> the setting each one sets, and how a value is read.
GRID_KEYS: dict[str, tuple[str, Any]] = {
    "window": ("plateau_window", int),
    "threshold": ("plateau_threshold", float),
    "test": ("plateau_test", str),
    "alpha": ("plateau_alpha", float),
    "min_epochs": ("min_epochs", lambda v: tuple(int(x) for x in v.split(":"))),
}
_NOT_STEP_METRICS = {"step", "epoch", "step_in_epoch", "cutoff", "phase"}
_NOT_EPOCH_METRICS = {"epoch", "step", "cutoff"}


class ReplayError(UsageError):
    """Bad input to ``chunklm replay``: one message naming the fix."""


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, e.g. 2,4,6: got {text!r}") from None


def add_replay_parser(sub: Any) -> None:
    """Register ``replay`` on the command line's subparsers."""
    S = argparse.SUPPRESS
    r = sub.add_parser("replay", help="replay a run's recorded losses under other curriculum settings (no training)")
    r.add_argument("run", help="run directory or checkpoint")
    g = r.add_argument_group("curriculum (default: the run's own)")
    g.add_argument("--cutoffs", type=_int_list, default=S, help="cutoffs in rfft bins, e.g. 32,64,128")
    g.add_argument(
        "--min-epochs", dest="min_epochs", type=_int_list, default=S, help="never raise before these epochs, e.g. 2,4,6"
    )
    g.add_argument(
        "--plateau-window", dest="plateau_window", type=int, default=S, help="optimizer steps in the plateau window"
    )
    g.add_argument(
        "--plateau-threshold",
        dest="plateau_threshold",
        type=float,
        default=S,
        help="relative improvement below which the loss has plateaued",
    )
    g.add_argument(
        "--plateau-test",
        dest="plateau_test",
        choices=["relative", "welch"],
        default=S,
        help="relative: r < threshold (the default); "
        "welch: a one-sided Welch t-test finds no improvement beyond threshold",
    )
    g.add_argument(
        "--plateau-alpha", dest="plateau_alpha", type=float, default=S, help="level of the Welch test (default 0.05)"
    )
    r.add_argument(
        "--grid",
        nargs="+",
        metavar="KEY=V1,V2",
        default=None,
        help=f"replay every combination, e.g. window=50,100,200 threshold=0.001,0.005 (keys: {', '.join(GRID_KEYS)}; "
        "min_epochs values as 2:4:6)",
    )
    r.add_argument(
        "--curriculum",
        action="extend",
        nargs="+",
        metavar="FILE",
        default=None,
        help="replay under the curriculum of each file (TOML or JSON, as chunklm train --curriculum reads), "
        "one row per file; instead of the curriculum flags and --grid",
    )


# -- the recorded run ----------------------------------------------------------------------------


def recorded_settings(ckpt: Path) -> dict[str, Any]:
    """The run's settings from its checkpoint, completed with the defaults."""
    return _settings(_checkpoint(ckpt))


def _checkpoint(ckpt: Path):
    from runs.checkpoint import CheckpointError, load_checkpoint

    try:
        return load_checkpoint(ckpt, mmap=True)  # only its settings and clock are read
    except CheckpointError as exc:
        raise ReplayError(f"{exc}; replay reads the run's settings from it") from None


def _settings(saved) -> dict[str, Any]:
    settings = saved.settings.to_dict()
    settings.setdefault("plateau_test", "relative")
    settings.setdefault("plateau_alpha", None)
    return settings


def load_stream(steps: list[dict], epochs: list[dict]) -> list[tuple[str, dict[str, float]]]:
    """The run's evaluation points in order, from its steps and epochs CSV rows: a step_end per
    step (every numeric column but the clock's, the cutoff and the phase) and an epoch_end after
    the last step of each epoch (the same for the epochs CSV)."""
    ends = {}
    for row in epochs:
        ends[int(row["step"])] = {
            k: float(v) for k, v in row.items() if k not in _NOT_EPOCH_METRICS and v not in ("", None)
        }
    stream: list[tuple[str, dict[str, float]]] = []
    for i, row in enumerate(steps, start=1):
        if int(row["step"]) != i:
            raise ReplayError(
                f"the steps CSV is not one row per optimizer step from 1 (row {i} has step {row['step']}); "
                "replay needs the whole run's steps, as chunklm train writes them"
            )
        stream.append(("step_end", {k: float(v) for k, v in row.items() if k not in _NOT_STEP_METRICS}))
        if i in ends:
            stream.append(("epoch_end", ends.pop(i)))
    return stream


def settings_curriculum(settings: dict[str, Any]) -> Curriculum:
    """The curriculum ``chunklm train`` builds from these settings (cutoffs, seq_lens, schedule, plateau rule)."""
    from runs.settings import Settings

    return Settings.from_dict(settings).to_config().curriculum()


def replay_settings(settings: dict[str, Any], stream: list, recorded: History | None) -> Replay:
    """Replay ``stream`` on the curriculum these settings make (no action runs)."""
    return replay(settings_curriculum(settings), stream, recorded=recorded, copy_guards=False)


def parse_grid(items: Iterable[str]) -> list[dict[str, Any]]:
    """``["window=50,100", "threshold=0.01"]`` -> every combination, as settings overrides."""
    axes = []
    for item in items:
        key, eq, values = item.partition("=")
        if not eq or key not in GRID_KEYS or not values:
            raise ReplayError(
                f"--grid {item!r}: expected KEY=V1,V2,... with KEY one of {', '.join(GRID_KEYS)}; e.g. "
                "window=50,100,200"
            )
        name, read = GRID_KEYS[key]
        try:
            axes.append([(key, name, read(v)) for v in values.split(",")])
        except ValueError:
            raise ReplayError(
                f"--grid {item!r}: a value is not a valid {key}; e.g. {key}="
                + {
                    "window": "50,100",
                    "threshold": "0.005,0.01",
                    "test": "relative,welch",
                    "alpha": "0.01,0.05",
                    "min_epochs": "2:4:6,3:5:7",
                }[key]
            ) from None
    return [{name: value for _, name, value in combo} for combo in itertools.product(*axes)]


# -- the table -----------------------------------------------------------------------------------


def label(settings: dict[str, Any], keys: list[str]) -> str:
    """A row's name: the settings in ``keys`` (alpha only for the Welch test)."""
    names = {v[0]: k for k, v in GRID_KEYS.items()} | {"cutoffs": "cutoffs"}
    parts = []
    for key in keys:
        value = settings.get(key)
        if isinstance(value, tuple):
            value = ",".join(map(str, value))
        if key == "plateau_alpha" and settings.get("plateau_test", "relative") != "welch":
            continue
        parts.append(f"{names.get(key, key)}={value}")
    return " ".join(parts) or "replay"


def describe_settings(settings: dict[str, Any]) -> str:
    test = settings.get("plateau_test", "relative")
    phases = [f"cutoffs {','.join(map(str, settings['cutoffs']))}"] if settings["cutoffs"] else []
    if settings.get("seq_lens"):
        phases.append(f"seq lens {','.join(map(str, settings['seq_lens']))}")
    return (
        f"{', '.join(phases)}, min epochs {','.join(map(str, settings['min_epochs']))}, "
        f"plateau window {settings['plateau_window']}, threshold {settings['plateau_threshold']}, test {test}"
        + (f" (alpha {settings.get('plateau_alpha') or 0.05})" if test == "welch" else "")
    )


LEGEND = (
    "step Decider: the raise and the guard that became true last; *: "
    "the replay raises where the recorded run did not;\n"
    "> S: the recorded run raised at step S, this setting not yet; ?: after the departure (the recorded losses no\n"
    "longer follow from this setting); departs: the first differing decision (-: none within the recorded steps)"
)


def format_table(
    recorded: Iterable[Record], rows: list[tuple[str, Replay]], own: Replay | None = None, word: str = "raise"
) -> str:
    """The replay table (:func:`engine.grid.format_table`), its columns named by raise (a cutoff
    curriculum's transitions) or by ``word``."""
    return engine_format_table(recorded, rows, own, word=word)


def run_replay(args: argparse.Namespace) -> int:
    """The ``chunklm replay`` subcommand; returns the exit status (bad input raises ReplayError)."""
    from runs.artifacts import read_csv, resolve_run

    files = resolve_run(args.run)
    for path, what in (
        (files.steps, "step metrics"),
        (files.epochs, "epoch metrics"),
        (files.history, "transition history"),
    ):
        if not path.exists():
            raise ReplayError(f"no {what} at {path}; replay needs a run written by chunklm train")
        if not path.is_file():
            raise ReplayError(f"the {what} {path} is not a regular file; replay needs a run written by chunklm train")
    from runs.checkpoint import stale_metrics_warning

    saved = _checkpoint(files.ckpt)
    base = _settings(saved)
    stale = stale_metrics_warning(files, saved)
    if stale:
        raise ReplayError(f"{stale}; replay needs the metrics of the run that made the checkpoint")
    steps_rows = read_csv(files.steps)
    try:
        stream = load_stream(steps_rows, read_csv(files.epochs))
        rounded = any(f"{float(row['loss']):.6g}" == row["loss"] for row in steps_rows)  # rows the first release wrote
    except (KeyError, ValueError, TypeError) as exc:  # reading the CSV rows' cells only
        raise ReplayError(
            f"{files.steps} or {files.epochs.name} is not a metrics file this version can read "
            f"({type(exc).__name__}: {str(exc)[:200]}); it may be truncated or edited"
        ) from None
    history = files.read_history()
    flags = {
        k: getattr(args, k)
        for k in ("cutoffs", "min_epochs", "plateau_window", "plateau_threshold", "plateau_test", "plateau_alpha")
        if hasattr(args, k)
    }
    stored = saved.curriculum is not None  # trained with --curriculum FILE: the checkpoint holds that curriculum
    if (args.curriculum or stored) and (flags or args.grid):
        named = ["--" + k.replace("_", "-") for k in flags] + (["--grid"] if args.grid else [])
        why = (
            "--curriculum FILE replaces it"
            if args.curriculum
            else f"this run was trained with the curriculum in {saved.curriculum_file} (its checkpoint stores it)"
        )
        raise ReplayError(
            f"{', '.join(named)} {'change' if len(named) > 1 else 'changes'} the curriculum the run's settings make, "
            f"and {why}; to try another rule, replay under a copy of the curriculum file with it changed: "
            "--curriculum FILE [FILE ...]"
        )
    from runs.curriculum_file import check_metrics_read, load_file, saved_differences

    def own_curriculum() -> Curriculum:  # a fresh one per replay: a replay feeds its guards
        if stored:
            return Curriculum.from_dict(saved.curriculum, source=f"{files.ckpt}: curriculum")
        return settings_curriculum(base)

    given = [(path, check_metrics_read(load_file(path), f"--curriculum {path}")) for path in args.curriculum or []]
    recorded_as = f"{saved.curriculum_file} (stored in the checkpoint)" if stored else describe_settings(base)
    problem = None  # why the run's own curriculum cannot be rebuilt
    try:
        changes = saved_differences(own_curriculum(), saved)
    except CurriculumError as exc:  # a stored curriculum that no longer reads
        changes, problem = None, str(exc)
    if changes is not None:
        problem = "its engine state was saved from another curriculum" + (
            f": {'; '.join(changes[:3])}" if changes else ""
        )
        if not stored:
            problem += " (trained with --curriculum FILE before checkpoints stored the curriculum?)"
    if problem is not None and not given:
        raise ReplayError(
            f"{files.ckpt}: the curriculum this run was trained with cannot be rebuilt from it ({problem}); replay "
            f"it under the file it was trained with: chunklm replay {args.run} --curriculum "
            f"{saved.curriculum_file or 'FILE'}"
        )
    try:
        own = replay(own_curriculum(), stream, recorded=history, copy_guards=False) if problem is None else None
        if given:
            rows = [
                (path, replay(curriculum, stream, recorded=history, copy_guards=False)) for path, curriculum in given
            ]
        elif stored:
            rows = [("replay", replay(own_curriculum(), stream, recorded=history, copy_guards=False))]
        else:
            rows = _settings_rows(args, base, flags, stream, history)
    except CurriculumError as exc:
        raise ReplayError(str(exc)) from None

    steps = sum(1 for p, _ in stream if p == "step_end")
    epochs = sum(1 for p, _ in stream if p == "epoch_end")
    print(f"run {files.ckpt.parent}: {steps} steps, {epochs} epochs; recorded curriculum: {recorded_as}")
    held = "to 6 significant digits in the rows the first release wrote" if rounded else "exactly"
    print(f"the losses as the steps CSV holds them ({held}); no training, no action runs")
    if problem is not None:
        print(f"note: the run's own curriculum cannot be rebuilt ({problem}); no replay of it in the table")
    elif own.departure is not None:
        why = (
            "the CSV's rounded losses decide otherwise there, so rows after that step are unreliable"
            if rounded
            else "the run was recorded by other code, or its files were edited"
        )
        print(f"note: replayed with its own settings the run departs from its record: {own.departure.text()}; {why}")
    raises = not stored and not given and bool(base["cutoffs"])  # the cutoff curriculum: its transitions raise
    print()
    print(format_table(history, rows, own, word="raise" if raises else "switch"))
    print()
    print(LEGEND if raises else SWITCH_LEGEND)
    if len(rows) == 1:
        res = rows[0][1]
        print()
        for r in res.faithful():
            if r.decision is not None:
                print(
                    f"{r.source} -> {r.dest} at step {r.global_step} (epoch {r.epoch}): "
                    f"{r.decision.text(r.global_step)}"
                )
        if res.departure is not None:
            print(res.departure.text())
    return 0


def _settings_rows(
    args: argparse.Namespace, base: dict[str, Any], flags: dict[str, Any], stream: list, history: History
) -> list[tuple[str, Replay]]:
    """One (label, replay) per setting: the run's settings with the curriculum flags, for each --grid combination."""
    overrides = parse_grid(args.grid) if args.grid else [{}]
    alpha_given = "plateau_alpha" in flags or any("plateau_alpha" in o for o in overrides)
    if alpha_given and all({**base, **flags, **o}.get("plateau_test") != "welch" for o in overrides):
        raise ReplayError(
            "--plateau-alpha (or alpha= in --grid) is the level of the Welch test; "
            "add --plateau-test welch or test=welch to --grid"
        )
    settings_list, seen = [], set()
    for extra in overrides:
        s = {**base, **flags, **extra}
        if s.get("plateau_test", "relative") != "welch":
            s["plateau_alpha"] = None  # a level only for the Welch test: relative rows do not repeat per alpha
        key = tuple(sorted((k, str(v)) for k, v in s.items()))
        if key not in seen:
            seen.add(key)
            settings_list.append(s)
    varied = list(dict.fromkeys([k for extra in overrides for k in extra] + list(flags)))
    return [(label(s, varied), replay_settings(s, stream, history)) for s in settings_list]
