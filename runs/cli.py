"""The ``chunklm`` command line: train, history, plot, diagram, generate, replay.

Bad input exits with status 2 and one message naming the problem and the fix, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

__all__ = ["main", "build_parser"]

RAISE_LINE = "Epoch {epoch} 🚀 CUTOFF RAISED: {before} -> {after} (loss plateaued, opening frequency gates)"


class UsageError(Exception):
    """Bad input: printed as one message, exit status 2."""


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, e.g. 128,256,512: got {text!r}") from None


def _train_flags(p: argparse.ArgumentParser) -> None:
    """The flags that make a run's settings (all default to 'not given')."""
    S = argparse.SUPPRESS
    g = p.add_argument_group("model")
    g.add_argument("--seq-len", dest="seq_len", type=int, default=S, help="window length in bytes (seed: 1024)")
    g.add_argument("--kernel-len", dest="kernel_len", type=int, default=S, help="taps of each causal kernel (seed: 128)")
    g.add_argument("--chunk", type=int, default=S, help="bytes predicted per position (seed: 16)")
    g.add_argument("--d-model", dest="d_model", type=int, default=S, help="width (seed: 512)")
    g.add_argument("--n-layers", dest="n_layers", type=int, default=S, help="blocks (seed: 6)")
    g.add_argument("--dropout", type=float, default=S)
    g.add_argument("--kernel-init", dest="kernel_init", choices=["smooth", "white"], default=S, help="kernel initialisation (white: the seed's)")
    g = p.add_argument_group("training")
    g.add_argument("--data", nargs="+", default=S, help="files or directories (default: this Python's standard library *.py)")
    g.add_argument("--batch-size", dest="batch_size", type=int, default=S)
    g.add_argument("--accum-steps", dest="accum_steps", type=int, default=S)
    g.add_argument("--steps-per-epoch", dest="steps_per_epoch", type=int, default=S)
    g.add_argument("--epochs", type=int, default=S)
    g.add_argument("--lr", type=float, default=S, help="peak learning rate")
    g.add_argument("--weight-decay", dest="weight_decay", type=float, default=S)
    g.add_argument("--grad-clip", dest="grad_clip", type=float, default=S)
    g.add_argument("--seed", type=int, default=S)
    g.add_argument("--ema", type=float, nargs="?", const=0.999, default=S, help="keep an EMA of the weights (decay, default 0.999)")
    g = p.add_argument_group("curriculum (the seed's Tuning section)")
    g.add_argument("--cutoffs", type=_int_list, default=S, help="cutoffs in rfft bins (default seq_len/8,/4,/2)")
    g.add_argument("--min-epochs", dest="min_epochs", type=_int_list, default=S, help="never raise before these epochs (seed: 2,5,10)")
    g.add_argument("--plateau-window", dest="plateau_window", type=int, default=S, help="optimizer steps in the plateau window (seed: 50)")
    g.add_argument("--plateau-threshold", dest="plateau_threshold", type=float, default=S, help="relative improvement below which the loss has plateaued (seed: 0.005)")
    g.add_argument("--preserve", action=argparse.BooleanOptionalAction, default=S, help="open bands without changing the function (default) or with noise (--no-preserve, the seed's)")
    p.add_argument("--preset", choices=["demo", "seed"], default=None, help="a named set of the flags above; explicit flags override it")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chunklm", description="Train ChunkLM with a spectral curriculum, and inspect its runs.")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train (or --resume) a run")
    _train_flags(t)
    o = t.add_argument_group("run")
    o.add_argument("--ckpt", default="chunklm_ckpt.pt", help="checkpoint path; metrics and history are written beside it")
    o.add_argument("--resume", action="store_true", help="continue the run in --ckpt; flags not given come from it")
    o.add_argument("--log-every", dest="log_every", type=int, default=10, help="print a step line every N optimizer steps (0: never)")
    o.add_argument("--ckpt-every", dest="ckpt_every", type=int, default=0, help="also checkpoint every N optimizer steps")
    o.add_argument("--stop-after", dest="stop_after", type=int, default=None, help="stop cleanly after N optimizer steps (checkpoint, exit 0)")
    o.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1...")
    o.add_argument("--plot", action="store_true", help="write the run's PNG plot at the end")

    h = sub.add_parser("history", help="the transitions of a run, with their evidence")
    h.add_argument("run", help="run directory or checkpoint")
    h.add_argument("--format", choices=["table", "json", "csv"], default="table")

    pl = sub.add_parser("plot", help="PNG: loss with transition markers, LR and cutoff")
    pl.add_argument("run", help="run directory or checkpoint")
    pl.add_argument("--out", default=None, help="PNG path (default: beside the checkpoint)")

    d = sub.add_parser("diagram", help="Mermaid or DOT text of the curriculum these flags make")
    _train_flags(d)
    d.add_argument("--format", choices=["mermaid", "dot"], default="mermaid")
    d.add_argument("--run", default=None, help="a run whose settings and current phase to show")

    from runs.replay_cmd import add_replay_parser

    add_replay_parser(sub)

    gen = sub.add_parser("generate", help="sample bytes from a checkpoint")
    gen.add_argument("--ckpt", required=True)
    gen.add_argument("--prompt", default="")
    gen.add_argument("-n", "--n-bytes", dest="n", type=int, default=256)
    gen.add_argument("--temperature", type=float, default=0.8)
    gen.add_argument("--top-p", dest="top_p", type=float, default=0.95)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--ema", action="store_true", help="sample with the EMA weights when the checkpoint has them")
    return parser


_SETTING_KEYS = (
    "seq_len", "kernel_len", "chunk", "d_model", "n_layers", "dropout", "kernel_init", "data", "batch_size", "accum_steps",
    "steps_per_epoch", "epochs", "lr", "weight_decay", "grad_clip", "seed", "ema", "cutoffs", "min_epochs",
    "plateau_window", "plateau_threshold", "preserve",
)


def _explicit(args: argparse.Namespace) -> dict[str, Any]:
    out = {k: getattr(args, k) for k in _SETTING_KEYS if hasattr(args, k)}
    for key in ("cutoffs", "min_epochs", "data"):
        if key in out:
            out[key] = tuple(out[key])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "train":
            from runs.train_cmd import train

            return train(args, _explicit(args))
        if args.command == "history":
            return _history(args)
        if args.command == "plot":
            return _plot(args)
        if args.command == "diagram":
            return _diagram(args)
        if args.command == "generate":
            return _generate(args)
        if args.command == "replay":
            from runs.replay_cmd import ReplayError, run_replay

            try:
                return run_replay(args)
            except ReplayError as exc:
                raise UsageError(str(exc)) from None
    except UsageError as exc:
        print(f"chunklm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 2


def _history(args: argparse.Namespace) -> int:
    files = _resolve(args.run)
    if not files.history.exists():
        raise UsageError(f"no transition history at {files.history}; has the run saved a checkpoint yet?")
    history = files.read_history()
    text = {"table": history.table, "json": history.to_json, "csv": history.to_csv}[args.format]()
    print(text.rstrip("\n"))
    return 0


def _resolve(run: str):
    from runs.artifacts import resolve_run

    try:
        return resolve_run(run)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None


def _plot(args: argparse.Namespace) -> int:
    from runs.plot import plot_run

    files = _resolve(args.run)
    if not files.steps.exists():
        raise UsageError(f"no step metrics at {files.steps}; has the run trained a step yet?")
    out = Path(args.out) if args.out else files.plot
    plot_run(files, out)
    print(f"wrote {out}")
    return 0


def _diagram(args: argparse.Namespace) -> int:
    from engine import CurriculumError
    from policies import spectral_curriculum
    from runs.settings import SettingsError, fresh_settings, resume_settings

    current = None
    try:
        if args.run:
            from runs.checkpoint import CheckpointError, load_checkpoint

            files = _resolve(args.run)
            try:
                data = load_checkpoint(files.ckpt)
            except CheckpointError as exc:
                raise UsageError(str(exc)) from None
            settings = resume_settings(data["settings"], data.get("preset"), args.preset, _explicit(args))
            current = data["trainer"]["engine"]["phase"]
        else:
            settings = fresh_settings(args.preset, _explicit(args))
        curriculum = spectral_curriculum(
            n_bins=settings["seq_len"] // 2 + 1, cutoffs=settings["cutoffs"], min_epochs=settings["min_epochs"],
            window=settings["plateau_window"], threshold=settings["plateau_threshold"], preserve=settings["preserve"],
        )
    except (SettingsError, CurriculumError) as exc:
        raise UsageError(str(exc)) from None
    from engine.diagram import to_dot, to_mermaid

    print((to_mermaid if args.format == "mermaid" else to_dot)(curriculum, current=current).rstrip("\n"))
    return 0


def _generate(args: argparse.Namespace) -> int:
    from chunklm import ChunkLM, generate
    from runs.checkpoint import CheckpointError, config_from_dict, load_checkpoint

    try:
        data = load_checkpoint(args.ckpt)
        config = config_from_dict(data["config"])
    except CheckpointError as exc:
        raise UsageError(str(exc)) from None
    model = ChunkLM(config.model)
    model.load_state_dict(data["trainer"]["model"])
    if args.ema:
        if data["trainer"].get("ema") is None:
            raise UsageError(f"{args.ckpt} has no EMA weights; drop --ema")
        from chunklm import EMA

        ema = EMA(model, decay=config.ema or 0.999)
        ema.load_state_dict(data["trainer"]["ema"])
        with ema.applied(model):
            out = generate(model, args.prompt.encode(), args.n, temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    else:
        out = generate(model, args.prompt.encode(), args.n, temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    sys.stdout.write((args.prompt.encode() + out).decode("utf-8", errors="replace") + "\n")
    return 0


if __name__ == "__main__":
    # Under `python -m runs.cli` this module is __main__; run the importable one, so that the
    # UsageError raised by runs.train_cmd is the class main() catches.
    from runs.cli import main as _main

    sys.exit(_main())
