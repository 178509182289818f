"""``python -m engine``: replay and plot any run whose engine recorded its metrics; diff two checkpoints.

    python -m engine replay PATH --curriculum mymodule:make_curriculum --grid threshold=0.001,0.01 window=50,100
    python -m engine plot PATH --out run.png
    python -m engine diff A B

``PATH`` is an own loop's state file (JSON or torch), an HF Trainer checkpoint folder or a Lightning
``.ckpt`` (:mod:`engine.saved`) of a run recorded with ``record_metrics=True``. ``--curriculum
MODULE:FUNCTION`` **imports your module** and calls ``FUNCTION(**setting)`` per setting of the grid
(docs/observability.md). ``diff`` (:mod:`engine.diff`) exits 0 when identical, 1 naming the first
difference. Bad input prints one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import operator
import os
import sys
from pathlib import Path
from typing import Any, Callable

from engine.core import Curriculum, CurriculumError
from engine.diff import compare, read_checkpoint, summary
from engine.grid import LEGEND, replay_grid
from engine.plot import plot_run, plot_target, pyplot
from engine.saved import load_recorded

EXIT_USAGE = 2
EXIT_DIFFERENT = 1
_PATH = "state file (JSON or torch), HF checkpoint folder, or Lightning .ckpt"


def _value(text: str) -> Any:
    """A grid value: a Python literal (50, 0.01, True, 'x'), a tuple as 2:4:6, else the text itself."""
    if ":" in text:
        return tuple(_value(part) for part in text.split(":"))
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``["threshold=0.001,0.01", "window=50"]`` -> ``{"threshold": [0.001, 0.01], "window": [50]}``."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, eq, values = item.partition("=")
        if not eq or not key.isidentifier() or not values or key in grid:
            raise CurriculumError(
                f"--grid {item!r}: expected KEY=V1,V2,... once per KEY, with KEY a parameter of the curriculum "
                "function, e.g. --grid threshold=0.001,0.01 window=50,100"
            )
        grid[key] = [_value(v) for v in values.split(",")]
    return grid


def load_factory(spec: str) -> Callable[..., Curriculum]:
    """``module:function`` -> the function; imports the module (user code runs)."""
    module_name, colon, attr = spec.partition(":")
    if not colon or not module_name or not attr:
        raise CurriculumError(
            f"--curriculum {spec!r}: expected MODULE:FUNCTION, e.g. --curriculum mytraining:make_curriculum"
        )
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module_name.startswith(exc.name):
            raise  # the user's module imports something that is missing: a bug, with its traceback
        raise CurriculumError(
            f"--curriculum {spec!r}: no module named {exc.name!r} "
            "(run from the folder that holds it, or set PYTHONPATH)"
        ) from None
    try:
        target = operator.attrgetter(attr)(module)
    except AttributeError:
        raise CurriculumError(f"--curriculum {spec!r}: module {module_name!r} has no {attr!r}") from None
    if not callable(target):
        raise CurriculumError(
            f"--curriculum {spec!r}: {attr!r} is a {type(target).__name__}, not a function that builds a Curriculum"
        )
    return target


def run_replay(args: argparse.Namespace) -> int:
    grid = parse_grid(args.grid or [])
    state, where = load_recorded(args.path)
    factory = load_factory(args.curriculum)
    table = replay_grid(factory, state, grid)
    print(
        f"{where}: {table.steps} steps, {table.epochs} epoch ends recorded; "
        f"curriculum {args.curriculum}; no action runs"
    )
    if note := table.note():
        print(f"note: {note}")
    print(f"\n{table.to_markdown() if args.markdown else table}\n\n{LEGEND}")
    return 0


def run_plot(args: argparse.Namespace) -> int:
    pyplot()
    out = plot_target(args.out, Path(args.path).stem + ".png")
    if out.exists() and not args.force:
        raise CurriculumError(f"{out} exists; pass --force to overwrite it, or name another --out")
    state, where = load_recorded(args.path)
    plot_run(state, out, title=args.title or Path(args.path).name)
    print(f"wrote {out} ({where})")
    return 0


def run_diff(args: argparse.Namespace) -> int:
    a, b = read_checkpoint(args.a), read_checkpoint(args.b)
    print(f"A: {a.where}\nB: {b.where}")
    found = compare(a, b)
    if not found:
        print(f"identical: {summary(a)} (wall times aside)")
        return 0
    more = f" ({len(found) - 1} more differences)" if len(found) > 1 else ""
    print(f"first difference: {found[0]}{more}")
    return EXIT_DIFFERENT


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("replay", help="replay a run's recorded metrics under other curriculum settings (no training)")
    r.add_argument("path", help=_PATH)
    r.add_argument(
        "--curriculum",
        required=True,
        metavar="MODULE:FUNCTION",
        help="a function that builds the curriculum from keyword arguments (IMPORTS your module)",
    )
    r.add_argument(
        "--grid",
        nargs="+",
        metavar="KEY=V1,V2",
        help="replay every combination, e.g. threshold=0.001,0.01 window=50,100",
    )
    r.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    r.set_defaults(run=run_replay)
    p = sub.add_parser("plot", help="the run's loss with transition markers, LR and phase params, as a PNG")
    p.add_argument("path", help=_PATH)
    p.add_argument("--out", "-o", required=True, help="image file to write (.png, .svg, .pdf), or a folder")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--title", help="the plot's title (default: the path's name)")
    p.set_defaults(run=run_plot)
    d = sub.add_parser(
        "diff",
        help="compare two checkpoints: weights, optimizer, scheduler, engine state and history (exit 1 if they differ)",
    )
    d.add_argument(
        "a", help="a checkpoint: chunklm .pt, HF checkpoint-N/, Lightning .ckpt, DCP folder, engine state JSON"
    )
    d.add_argument("b", help="the checkpoint to compare it with, in the same format")
    d.set_defaults(run=run_diff)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except CurriculumError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
