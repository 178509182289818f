"""The ``chunklm`` command line: train, history, plot, diagram, generate, replay.

A problem the user can fix is one line, ``chunklm CMD: error: what is wrong; what to do``, with exit
status 2 for bad input and 1 for a failure at run time. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from typing import Sequence

from runs.errors import Output, OutputError, UsageError, UserError, report, silence
from runs.settings import NON_NEGATIVE, RUN_GROUP, add_flags, explicit_settings, number

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in the command line's one-line format."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


_SEED = number(int, lambda v: 0 <= v < 2**63, "an integer >= 0 and < 2**63")
_POSITIVE = number(int, lambda v: v >= 1, "an integer >= 1")


def _resume_mode(text: str) -> str:
    """``--resume auto``; plain ``--resume`` takes no value."""
    if text != "auto":
        raise argparse.ArgumentTypeError(
            f"expected nothing (continue the run) or auto (continue it if there is one, else start it): got {text!r}"
        )
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="chunklm", description="Train ChunkLM with a spectral curriculum, and inspect its runs.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train (or --resume) a run")
    o = add_flags(t)[RUN_GROUP]
    o.add_argument(
        "--ckpt", default="chunklm_ckpt.pt", help="checkpoint path; metrics and history are written beside it"
    )
    o.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        type=_resume_mode,
        metavar="auto",
        help="continue the run in --ckpt; flags not given come from it. --resume auto: continue it if there is "
        "one, else start it (for restarts nobody watches: torchrun --max-restarts, a cluster's requeue)",
    )
    o.add_argument(
        "--overwrite", action="store_true", help="replace the run already in --ckpt (at the new run's first save)"
    )
    o.add_argument("--stop-after", type=_POSITIVE, help="stop cleanly after N optimizer steps (checkpoint, exit 0)")
    o.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1...")
    o.add_argument("--plot", action="store_true", help="write the run's PNG plot at the end")
    o.add_argument(
        "--curriculum",
        metavar="FILE",
        help="train with the curriculum in this .toml/.json file instead of the one the curriculum flags build "
        "(docs/curriculum-files.md); not needed again on --resume (the checkpoint stores the curriculum)",
    )
    o.add_argument(
        "--allow-data-change",
        action="store_true",
        help="--resume on data that differs from the checkpoint's (other path, files or bytes): "
        "continue anyway, recorded in the checkpoint",
    )

    h = sub.add_parser("history", help="the transitions of a run, with their evidence")
    h.add_argument("run", help="run directory or checkpoint")
    h.add_argument("--format", choices=["table", "json", "csv"], default="table")

    pl = sub.add_parser("plot", help="PNG: loss with transition markers, LR and cutoff")
    pl.add_argument("run", help="run directory or checkpoint")
    pl.add_argument("--out", help="image path, or a folder (default: beside the checkpoint)")

    d = sub.add_parser(
        "diagram", help="Mermaid or DOT text of the curriculum these flags make, or of a curriculum file"
    )
    d.add_argument("file", nargs="?", help="a curriculum .toml/.json file to draw instead (docs/curriculum-files.md)")
    add_flags(d, skip=(RUN_GROUP,))
    d.add_argument("--format", choices=["mermaid", "dot"], default="mermaid")
    d.add_argument("--run", help="a run whose settings and current phase to show")

    from runs.replay_cmd import add_replay_parser

    add_replay_parser(sub)

    gen = sub.add_parser("generate", help="sample bytes from a checkpoint (streamed as they come)")
    gen.add_argument("--ckpt", required=True)
    gen.add_argument("--prompt", default="")
    gen.add_argument("-n", "--n-bytes", dest="n", type=NON_NEGATIVE, default=256, help="bytes to generate")
    gen.add_argument(
        "--temperature", type=number(float, lambda v: v >= 0, "a finite number >= 0 (0: greedy)"), default=0.8
    )
    gen.add_argument("--top-p", type=number(float, lambda v: 0 < v <= 1, "a number in (0, 1]"), default=0.95)
    gen.add_argument("--seed", type=_SEED, default=0)
    gen.add_argument("--ema", action="store_true", help="sample with the EMA weights when the checkpoint has them")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    commands = {
        "train": _train,
        "history": _history,
        "plot": _plot,
        "diagram": _diagram,
        "generate": _generate,
        "replay": _replay,
    }
    stdout = sys.stdout
    sys.stdout = Output(stdout)
    try:
        code = commands[args.command](args)
        sys.stdout.flush()  # here, not at the interpreter's exit: a closed pipe is then one line too
        return code
    except UserError as exc:
        if isinstance(exc, OutputError) and stdout is sys.__stdout__:
            silence(sys.__stdout__)
        return report(args.command, exc)
    finally:
        if isinstance(sys.stdout, Output):
            sys.stdout = stdout


def _train(args: argparse.Namespace) -> int:
    from runs.train_cmd import train

    return train(args, explicit_settings(args))


def _replay(args: argparse.Namespace) -> int:
    from runs.replay_cmd import run_replay

    return run_replay(args)


def _saved(files):
    """The run's checkpoint, tensors mapped (cheap at any size), or None when there is none to read."""
    from runs.checkpoint import Checkpoint, CheckpointError

    try:
        return Checkpoint.load(files.ckpt, mmap=True) if files.ckpt.is_file() else None
    except CheckpointError:  # nothing to compare with; these commands read the CSVs and history only
        return None


def _warn_if_stale(files, saved=None) -> None:
    """After a command that read the run's files: say so if its CSVs are not its checkpoint's."""
    from runs.checkpoint import stale_metrics_message

    saved = saved if saved is not None else _saved(files)
    warning = stale_metrics_message(files, saved) if saved is not None else None
    if warning:
        print(f"warning: {warning}", file=sys.stderr)


def _history(args: argparse.Namespace) -> int:
    from runs.artifacts import resolve_run

    files = resolve_run(args.run)
    if not files.history.exists():
        raise UsageError(f"no transition history at {files.history}; has the run saved a checkpoint yet?")
    history = files.read_history()
    text = {"table": history.table, "json": history.to_json, "csv": history.to_csv}[args.format]()
    print(text.rstrip("\n"))
    saved = _saved(files)
    for change in (saved.data_changes or []) if saved is not None else []:
        note = (
            f"note: resumed at step {change.get('global_step')} (epoch {change.get('epoch')}) on changed data, with "
            f"--allow-data-change: {'; '.join(map(str, change.get('changes', [])))}"
        )
        print(note, file=sys.stdout if args.format == "table" else sys.stderr)
    _warn_if_stale(files, saved)
    return 0


def _plot(args: argparse.Namespace) -> int:
    from engine import CurriculumError
    from engine.plot import plot_target, pyplot
    from runs.artifacts import resolve_run
    from runs.plot import plot_run

    files = resolve_run(args.run)
    if not files.steps.exists():
        raise UsageError(f"no step metrics at {files.steps}; has the run trained a step yet?")
    try:
        pyplot()
        out = plot_target(args.out or files.plot, files.plot.name)
    except CurriculumError as exc:
        raise UsageError(str(exc)) from None
    lock = None
    if out.resolve() == files.plot.resolve():  # the run's own plot: not while a run writes its files
        from runs.artifacts import RunLock

        lock = RunLock(files.ckpt)
        lock.acquire()
    try:
        print(f"wrote {plot_run(files, out)}")
    finally:
        if lock is not None:
            lock.release()
    _warn_if_stale(files)
    return 0


def _diagram(args: argparse.Namespace) -> int:
    from engine.diagram import to_dot, to_mermaid
    from policies import phase_for_epoch
    from runs.artifacts import resolve_run
    from runs.checkpoint import Checkpoint
    from runs.curriculum_file import check_saved_curriculum, load_file, stored_curriculum
    from runs.settings import Settings

    explicit = explicit_settings(args)
    curriculum = current = None
    if args.file is not None:
        if explicit or args.preset:
            flags = ", ".join("--" + name.replace("_", "-") for name in explicit) or "--preset"
            raise UsageError(
                f"{flags}: {args.file} is drawn as written, and settings flags do not change it; drop them"
            )
        curriculum = load_file(args.file)
    if args.run:
        files = resolve_run(args.run)
        saved = Checkpoint.load(files.ckpt)
        if curriculum is not None:
            check_saved_curriculum(curriculum, saved, files.ckpt, args.file)
        else:  # trained with --curriculum FILE, the checkpoint stores it; else its settings make it
            config = saved.settings.resume(saved.preset, args.preset, explicit).to_config()
            stored = saved.curriculum is not None
            curriculum = stored_curriculum(saved, files.ckpt, config) if stored else config.curriculum()
        current = saved.engine_phase or phase_for_epoch(curriculum, saved.epoch)  # weights only: by its epochs
    elif curriculum is None:
        curriculum = Settings.fresh(args.preset, explicit).to_config().curriculum()
    print((to_mermaid if args.format == "mermaid" else to_dot)(curriculum, current=current).rstrip("\n"))
    return 0


def _generate(args: argparse.Namespace) -> int:
    import codecs

    import torch

    from chunklm import EMA, ChunkLM, generate
    from runs.checkpoint import Checkpoint, CheckpointError
    from runs.train_cmd import check_model_size

    saved = Checkpoint.load(args.ckpt)
    check_model_size(saved.settings, torch.device("cpu"), f"the settings of {args.ckpt}", training=False)
    config = saved.settings.to_config()
    model = ChunkLM(config.model)
    try:
        model.load_state_dict(saved.trainer["model"])
    except RuntimeError as exc:
        raise CheckpointError(
            f"{args.ckpt}: the weights do not fit its settings ({' '.join(str(exc).split())[:300]}); "
            "it is damaged or was edited"
        ) from None
    bad = _nonfinite(saved.trainer["model"])
    if bad is not None:
        raise CheckpointError(
            f"{args.ckpt} has non-finite weights (NaN or infinity in {bad}): the run diverged or the file was edited; "
            "sample from an earlier checkpoint"
        )
    ema = None
    if args.ema:
        if saved.trainer.get("ema") is None:
            raise UsageError(f"{args.ckpt} has no EMA weights; drop --ema")
        ema = EMA(model, decay=config.ema or 0.999)
        ema.load_state_dict(saved.trainer["ema"])
        if _nonfinite(saved.trainer["ema"]) is not None:
            raise CheckpointError(
                f"{args.ckpt} has non-finite EMA weights; sample without --ema, or from an earlier checkpoint"
            )
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # bytes that are not UTF-8 print as U+FFFD

    def show(chunk: bytes) -> None:
        sys.stdout.write(decoder.decode(chunk))
        sys.stdout.flush()

    prompt = os.fsencode(args.prompt)  # the bytes given, also when they are not UTF-8
    show(prompt)
    try:
        with ema.applied(model) if ema is not None else contextlib.nullcontext():
            generate(
                model, prompt, args.n, temperature=args.temperature, top_p=args.top_p, seed=args.seed, on_bytes=show
            )
    except KeyboardInterrupt:
        sys.stdout.write(decoder.decode(b"", final=True) + "\n")
        print("chunklm generate: stopped by Ctrl-C", file=sys.stderr)
        return 130
    sys.stdout.write(decoder.decode(b"", final=True) + "\n")
    return 0


def _nonfinite(state, name: str = "") -> str | None:
    """The name of the first tensor of ``state`` (tensors in dicts and lists) holding a NaN or an infinity."""
    import torch

    if isinstance(state, torch.Tensor):
        return name if state.is_floating_point() and not bool(torch.isfinite(state).all()) else None
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, (list, tuple)) else ()
    return next((bad for k, v in items if (bad := _nonfinite(v, f"{name}.{k}".lstrip("."))) is not None), None)


if __name__ == "__main__":
    sys.exit(main())
