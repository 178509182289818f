"""``chunklm replay RUN``: would another plateau rule have raised elsewhere, and which guard decided?

Feeds the run's recorded metrics (its steps and epochs CSV) to the curriculum its settings make, with
the curriculum flags given here applied, or every setting of a ``--grid``, or each ``--curriculum FILE``
(docs/chunklm.md). One row per setting, up to its first decision that differs from the recorded run.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import attrs

from engine import Curriculum, CurriculumError, History, MetricLog, Replay, curriculum_from_dict, replay
from engine.grid import GridTable, format_table, legend, replay_grid
from runs.errors import UsageError
from runs.settings import Settings, add_flag

__all__ = ["add_replay_parser", "run_replay", "load_stream", "recorded_settings", "replay_settings", "grid_axes"]

# --grid keys (and the curriculum flags) -> the setting each one sets, and an example of its values.
GRID_KEYS: dict[str, tuple[str, str]] = {
    "window": ("plateau_window", "50,100"),
    "threshold": ("plateau_threshold", "0.005,0.01"),
    "test": ("plateau_test", "relative,welch"),
    "alpha": ("plateau_alpha", "0.01,0.05"),
    "min_epochs": ("min_epochs", "2:4:6,3:5:7"),
}
_FLAG_KEYS = {setting: key for key, (setting, _) in GRID_KEYS.items()} | {"cutoffs": "cutoffs"}
_NOT_STEP_METRICS = {"step", "epoch", "step_in_epoch", "cutoff", "phase"}
_NOT_EPOCH_METRICS = {"epoch", "step", "cutoff"}


def add_replay_parser(sub: Any) -> None:
    r = sub.add_parser("replay", help="replay a run's recorded losses under other curriculum settings (no training)")
    r.add_argument("run", help="run directory or checkpoint")
    g = r.add_argument_group("curriculum (default: the run's own; these flags are chunklm train's)")
    for f in attrs.fields(Settings):
        if f.name in _FLAG_KEYS:
            add_flag(g, f)
    r.add_argument(
        "--grid",
        nargs="+",
        metavar="KEY=V1,V2",
        help=f"replay every combination, e.g. window=50,100,200 threshold=0.001,0.005 (keys: {', '.join(GRID_KEYS)}; "
        "min_epochs values as 2:4:6)",
    )
    r.add_argument(
        "--curriculum",
        action="extend",
        nargs="+",
        metavar="FILE",
        help="replay under the curriculum of each file (TOML or JSON, as chunklm train --curriculum reads), "
        "one row per file; instead of the curriculum flags and --grid",
    )


def recorded_settings(ckpt: Path) -> dict[str, Any]:
    """The run's settings from its checkpoint."""
    return _checkpoint(ckpt).settings.to_dict()


def _checkpoint(ckpt: Path):
    from runs.checkpoint import CheckpointError, load_checkpoint

    try:
        return load_checkpoint(ckpt, mmap=True)  # only its settings and clock are read
    except CheckpointError as exc:
        raise UsageError(f"{exc}; replay reads the run's settings from it") from None


def load_stream(steps: list[dict], epochs: list[dict]) -> MetricLog:
    """The run's evaluation points in order, from its steps and epochs CSV rows: a step_end per
    step (every numeric column but the clock's, the cutoff and the phase) and an epoch_end after
    the last step of each epoch (the same for the epochs CSV)."""
    ends = {}
    for row in epochs:
        ends[int(row["step"])] = {
            k: float(v) for k, v in row.items() if k not in _NOT_EPOCH_METRICS and v not in ("", None)
        }
    stream = MetricLog()
    for i, row in enumerate(steps, start=1):
        if int(row["step"]) != i:
            raise UsageError(
                f"the steps CSV is not one row per optimizer step from 1 (row {i} has step {row['step']}); "
                "replay needs the whole run's steps, as chunklm train writes them"
            )
        stream.append("step_end", {k: float(v) for k, v in row.items() if k not in _NOT_STEP_METRICS})
        if i in ends:
            stream.append("epoch_end", ends.pop(i))
    return stream


def settings_curriculum(settings: dict[str, Any]) -> Curriculum:
    """The curriculum ``chunklm train`` builds from these settings (cutoffs, seq_lens, schedule, plateau rule)."""
    return Settings.from_dict(settings).to_config().curriculum()


def replay_settings(settings: dict[str, Any], stream: MetricLog, recorded: History | None) -> Replay:
    """Replay ``stream`` on the curriculum these settings make (no action runs)."""
    return replay(settings_curriculum(settings), stream, recorded=recorded, copy_guards=False)


def _read(key: str, value: Any) -> Any:
    """A --grid value as parsed by ``python -m engine``'s grid, as the setting ``key`` takes it (None: invalid)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if key == "window":
        return value if number and isinstance(value, int) else None
    if key in ("threshold", "alpha"):
        return float(value) if number else None
    if key == "test":
        return value if isinstance(value, str) else None
    values = value if isinstance(value, tuple) else (value,)  # min_epochs: 2:4:6, or one epoch
    return values if all(isinstance(v, int) and not isinstance(v, bool) for v in values) else None


def grid_axes(items: list[str]) -> dict[str, list[Any]]:
    """``["window=50,100", "threshold=0.01"]`` -> ``{"window": [50, 100], "threshold": [0.01]}``."""
    from engine.__main__ import parse_grid

    axes: dict[str, list[Any]] = {}
    for item in items:
        key = item.partition("=")[0]
        try:
            ((key, values),) = parse_grid([item]).items()
        except CurriculumError:
            values = None
        if key not in GRID_KEYS or values is None or key in axes:
            raise UsageError(
                f"--grid {item!r}: expected KEY=V1,V2,... once per KEY, with KEY one of {', '.join(GRID_KEYS)}; "
                "e.g. window=50,100,200"
            )
        axes[key] = [_read(key, v) for v in values]
        if None in axes[key]:
            raise UsageError(f"--grid {item!r}: a value is not a valid {key}; e.g. {key}={GRID_KEYS[key][1]}")
    return axes


def settings_grid(base: dict[str, Any], axes: dict[str, list[Any]], stream: MetricLog, history: History) -> GridTable:
    """:func:`engine.replay_grid` over the curriculum these settings make: ``axes`` maps --grid keys
    (and ``cutoffs``) to their values; a row per distinct setting (alpha counts only for the Welch test)."""
    test = base.get("plateau_test", "relative")
    if "alpha" in axes and "welch" not in axes.get("test", [test]):
        raise UsageError(
            "--plateau-alpha (or alpha= in --grid) is the level of the Welch test; "
            "add --plateau-test welch or test=welch to --grid"
        )

    def run_settings(**chosen: Any) -> Curriculum:
        settings = {**base, **{GRID_KEYS.get(k, (k,))[0]: v for k, v in chosen.items()}}
        if settings.get("plateau_test", "relative") != "welch":
            settings["plateau_alpha"] = None
        return settings_curriculum(settings)

    def label(chosen: dict[str, Any]) -> str:
        welch = chosen.get("test", test) == "welch"
        shown = [(k, ",".join(map(str, v)) if isinstance(v, tuple) else v) for k, v in chosen.items()]
        return " ".join(f"{k}={v}" for k, v in shown if k != "alpha" or welch) or "replay"

    table = replay_grid(run_settings, stream, axes, history=history, label=label)
    seen: set[str] = set()
    rows = [row for row in table.rows if not (row.label in seen or seen.add(row.label))]
    return GridTable(recorded=table.recorded, rows=rows, own=table.own, steps=table.steps, epochs=table.epochs)


def run_replay(args: argparse.Namespace) -> int:
    """The ``chunklm replay`` subcommand; returns the exit status (bad input raises a UsageError)."""
    from runs.artifacts import read_csv, resolve_run
    from runs.checkpoint import stale_metrics_message
    from runs.curriculum_file import check_metrics_read, load_file, saved_differences

    files = resolve_run(args.run)
    for path, what in (
        (files.steps, "step metrics"),
        (files.epochs, "epoch metrics"),
        (files.history, "transition history"),
    ):
        if not path.exists():
            raise UsageError(f"no {what} at {path}; replay needs a run written by chunklm train")
        if not path.is_file():
            raise UsageError(f"the {what} {path} is not a regular file; replay needs a run written by chunklm train")
    saved = _checkpoint(files.ckpt)
    base = saved.settings.to_dict()
    stale = stale_metrics_message(files, saved)
    if stale:
        raise UsageError(f"{stale}; replay needs the metrics of the run that made the checkpoint")
    steps_rows = read_csv(files.steps)
    try:
        stream = load_stream(steps_rows, read_csv(files.epochs))
        rounded = any(f"{float(row['loss']):.6g}" == row["loss"] for row in steps_rows)  # rows the first release wrote
    except (KeyError, ValueError, TypeError) as exc:  # reading the CSV rows' cells only
        raise UsageError(
            f"{files.steps} or {files.epochs.name} is not a metrics file this version can read "
            f"({type(exc).__name__}: {str(exc)[:200]}); it may be truncated or edited"
        ) from None
    history = files.read_history()
    flags = {k: getattr(args, k) for k in attrs.fields_dict(Settings) if k in _FLAG_KEYS and hasattr(args, k)}
    stored = saved.curriculum is not None  # trained with --curriculum FILE: the checkpoint holds that curriculum
    if (args.curriculum or stored) and (flags or args.grid):
        named = ["--" + k.replace("_", "-") for k in flags] + (["--grid"] if args.grid else [])
        why = (
            "--curriculum FILE replaces it"
            if args.curriculum
            else f"this run was trained with the curriculum in {saved.curriculum_file} (its checkpoint stores it)"
        )
        raise UsageError(
            f"{', '.join(named)} {'change' if len(named) > 1 else 'changes'} the curriculum the run's settings make, "
            f"and {why}; to try another rule, replay under a copy of the curriculum file with it changed: "
            "--curriculum FILE [FILE ...]"
        )

    def own_curriculum() -> Curriculum:  # a fresh one per replay: a replay feeds its guards
        if stored:
            return curriculum_from_dict(saved.curriculum, source=f"{files.ckpt}: curriculum")
        return settings_curriculum(base)

    def run(curriculum: Curriculum) -> Replay:
        return replay(curriculum, stream, recorded=history, copy_guards=False)

    given = [(path, check_metrics_read(load_file(path), f"--curriculum {path}")) for path in args.curriculum or []]
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
        raise UsageError(
            f"{files.ckpt}: the curriculum this run was trained with cannot be rebuilt from it ({problem}); replay "
            f"it under the file it was trained with: chunklm replay {args.run} --curriculum "
            f"{saved.curriculum_file or 'FILE'}"
        )
    try:
        own = run(own_curriculum()) if problem is None else None
        if given:
            rows = [(path, run(curriculum)) for path, curriculum in given]
        elif stored:
            rows = [("replay", run(own_curriculum()))]
        else:
            axes = {_FLAG_KEYS[k]: [v] for k, v in flags.items()} | grid_axes(args.grid or [])
            rows = [(row.label, row.replay) for row in settings_grid(base, axes, stream, history).rows]
    except CurriculumError as exc:
        raise UsageError(str(exc)) from None

    recorded_as = (
        saved.settings.describe_curriculum() if not stored else f"{saved.curriculum_file} (stored in the checkpoint)"
    )
    print(f"run {files.ckpt.parent}: {stream.steps} steps, {stream.epochs} epochs; recorded curriculum: {recorded_as}")
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
    word = "raise" if not stored and not given and base["cutoffs"] else "switch"  # the cutoff curriculum raises
    print(f"\n{format_table(history, rows, own, word=word)}\n\n{legend(word)}")
    if len(rows) == 1:
        res = rows[0][1]
        print()
        for r in (r for r in res.faithful() if r.decision is not None):
            print(f"{r.source} -> {r.dest} at step {r.global_step} (epoch {r.epoch}): {r.decision.text(r.global_step)}")
        if res.departure is not None:
            print(res.departure.text())
    return 0
