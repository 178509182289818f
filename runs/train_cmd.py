"""``chunklm train``: settings, checkpoints, console output, signals and multi-process setup."""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

from runs.cli import RAISE_LINE, UsageError

__all__ = ["train", "resume_command"]


def resume_command(ckpt: Path) -> str:
    return f"chunklm train --ckpt {shlex.quote(str(ckpt))} --resume"


class Console:
    """Prints on rank 0 only; a tqdm bar per epoch when stdout is a terminal, plain lines otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar = None
        self.tty = enabled and sys.stdout.isatty()

    def line(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def open_bar(self, total: int, done: int, epoch: int) -> None:
        if self.tty and self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True)

    def advance(self, loss: float, lr: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.1e}", refresh=False)

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _digest(history) -> str:
    """sha256 of the history without wall times: equal on every rank when decisions agree."""
    text = json.dumps([r.comparable() for r in history], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _cutoff_text(value: int, n_bins: int) -> str:
    return "full" if value >= n_bins else str(value)


class _Distributed:
    """torchrun's environment: process group, DDP wrapping, loss all-reduce, rank-divergence check."""

    def __init__(self, device_arg: str) -> None:
        import torch

        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device_arg == "auto":
            device_arg = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device_arg)
        if self.device.type == "cuda" and self.world_size > 1:
            self.device = torch.device("cuda", self.local_rank)
        elif self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.active = self.world_size > 1
        if self.active:
            import torch.distributed as dist

            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    def wrap(self, model):
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def reduce_mean(self, value: float) -> float:
        import torch
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.item() / self.world_size

    def check_same(self, what: str, text: str) -> None:
        """Raise on every rank when ranks disagree (never a silent divergence)."""
        if not self.active:
            return
        import torch.distributed as dist

        texts: list[Any] = [None] * self.world_size
        dist.all_gather_object(texts, text)
        if len(set(texts)) > 1:
            raise RuntimeError(f"ranks diverged on {what}: " + "; ".join(f"rank {r}: {t}" for r, t in enumerate(texts)))

    def gather_to_all(self, obj: Any) -> list[Any]:
        if not self.active:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def any_flag(self, flag: bool) -> bool:
        """True on every rank when any rank raised the flag (stop together at the same step)."""
        if not self.active:
            return flag
        import torch
        import torch.distributed as dist

        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def close(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()  # no rank tears gloo down while another still talks to it
            dist.destroy_process_group()


def train(args: argparse.Namespace, explicit: dict[str, Any]) -> int:
    from chunklm.corpus import ByteCorpus
    from chunklm.train import BaseHooks, NonFiniteLossError, Trainer
    from engine import CurriculumError
    from runs.artifacts import EPOCH_FIELDS, STEP_FIELDS, MetricsWriter, RunFiles
    from runs.checkpoint import CKPT_SCHEMA_VERSION, CheckpointError, atomic_save, config_to_dict, load_checkpoint
    from runs.settings import SettingsError, fresh_settings, resume_settings, to_config

    ckpt = Path(args.ckpt)
    if not ckpt.parent.is_dir():
        raise UsageError(f"--ckpt {ckpt}: the directory {ckpt.parent} does not exist; create it (mkdir -p {shlex.quote(str(ckpt.parent))}) or pick another path")
    saved = None
    try:
        if args.resume:
            if not ckpt.exists():
                raise UsageError(f"--resume: no checkpoint at {ckpt}; drop --resume to start a fresh run, or fix --ckpt")
            saved = load_checkpoint(ckpt)
            settings = resume_settings(saved["settings"], saved.get("preset"), args.preset, explicit)
            preset = saved.get("preset")
        else:
            settings = fresh_settings(args.preset, explicit)
            preset = args.preset
        for path in settings["data"]:
            if not Path(path).exists():
                raise UsageError(f"--data {path}: no such file or directory")
        config = to_config(settings)
    except (SettingsError, CheckpointError, CurriculumError, ValueError) as exc:
        raise UsageError(str(exc)) from None

    import torch

    dist = _Distributed(args.device)
    console = Console(enabled=dist.rank == 0)
    if saved is not None and saved.get("world_size", 1) != dist.world_size:
        raise UsageError(
            f"{ckpt} was written by a run with {saved.get('world_size', 1)} processes, this one has {dist.world_size}: "
            "the data each rank sees would change. Resume with the same --nproc_per_node"
        )
    try:
        corpus = ByteCorpus(list(config.data) or None, seq_len=config.model.seq_len, chunk=config.model.chunk)
        trainer = Trainer(
            config, device=dist.device, corpus=corpus, rank=dist.rank, world_size=dist.world_size,
            all_reduce_mean=dist.reduce_mean if dist.active else None, wrap_model=dist.wrap,
        )
    except (CurriculumError, ValueError) as exc:
        raise UsageError(str(exc)) from None

    if saved is not None:
        state = saved["trainer"]
        if "rng_per_rank" in saved:  # each rank continues its own random streams
            state = {**state, "rng": saved["rng_per_rank"][dist.rank]}
        trainer.load_state_dict(state, epochs_done=int(saved.get("epoch", 0)))
    else:
        trainer.start()

    files = RunFiles(ckpt)
    keep = trainer.clock.global_step if saved is not None else None
    writers = None
    if dist.rank == 0:
        writers = (
            MetricsWriter(files.steps, STEP_FIELDS, "step", keep),
            MetricsWriter(files.epochs, EPOCH_FIELDS, "epoch", (trainer.clock.epoch - 1) if saved is not None else None),
        )

    n_params = sum(p.numel() for p in trainer.model.parameters())
    m = config.model
    console.line(
        f"ChunkLM {n_params / 1e6:.2f}M params: d_model={m.d_model} n_layers={m.n_layers} seq_len={m.seq_len} "
        f"kernel_len={m.kernel_len} chunk={m.chunk} on {dist.device}" + (f" (preset {preset})" if preset else "")
    )
    console.line(
        f"corpus: {corpus.n_files} files, {corpus.n_train_bytes / 1e6:.1f} MB train / {corpus.n_val_bytes / 1e6:.2f} MB validation; "
        f"global batch = {config.batch_size} x {config.accum_steps} accum x {dist.world_size} process"
        f"{'es' if dist.world_size > 1 else ''} = {config.batch_size * config.accum_steps * dist.world_size} windows/step"
    )
    console.line(f"curriculum: cutoffs {', '.join(map(str, config.cutoffs))} then full of {trainer.model.n_bins} bins; "
                 f"min epochs {', '.join(map(str, config.min_epochs))}; plateau window {config.plateau_window}, threshold {config.plateau_threshold}")
    if saved is not None:
        threads = saved.get("num_threads")
        if threads is not None and threads != torch.get_num_threads():
            console.line(f"note: this run used {threads} CPU threads and this process has {torch.get_num_threads()}; "
                         f"float results will not be bit-identical to an uninterrupted run (set OMP_NUM_THREADS={threads})")
        c = trainer.clock
        console.line(f"resumed {ckpt} at epoch {c.epoch} step {c.step_in_epoch}/{config.steps_per_epoch} (global step {c.global_step}), "
                     f"phase {trainer.engine.phase.name}, cutoff={trainer.model.cutoff}/{trainer.model.n_bins}")

    stop_flag: dict[str, Any] = {"signal": None}

    def on_signal(signum, _frame):
        stop_flag["signal"] = signum

    old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    started_at = time.time()
    steps_at_start = trainer.clock.global_step
    n_bins = trainer.model.n_bins
    printed = {i: len(r.warnings) for i, r in enumerate(trainer.engine.history)}  # warnings already shown

    def save(reason: str) -> None:
        state = trainer.state_dict()
        rng_per_rank = dist.gather_to_all(state["rng"])  # every rank calls save at the same step
        if dist.rank == 0:
            extra = {"rng_per_rank": rng_per_rank} if dist.active else {}
            atomic_save(
                {
                    **extra,
                    "schema_version": CKPT_SCHEMA_VERSION,
                    "config": config_to_dict(config),
                    "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
                    "preset": preset,
                    "world_size": dist.world_size,
                    "num_threads": torch.get_num_threads(),
                    "global_step": trainer.clock.global_step,
                    "epoch": trainer.clock.epoch,
                    "trainer": state,
                },
                ckpt,
            )
            files.write_history(trainer.engine.history)

    class Hooks(BaseHooks):
        def on_step(self, info) -> None:
            if writers:
                writers[0].write({"step": info.global_step, "epoch": info.epoch, "step_in_epoch": info.step_in_epoch,
                                  "loss": f"{info.loss:.6g}", "lr": f"{info.lr:.6g}", "cutoff": info.cutoff, "phase": info.phase})
            console.open_bar(config.steps_per_epoch, info.step_in_epoch - 1, info.epoch)
            console.advance(info.loss, info.lr)
            if args.log_every and info.step_in_epoch % args.log_every == 0:
                console.line(f"  step {info.step_in_epoch}/{config.steps_per_epoch} loss={info.loss:.2f} lr={info.lr:.1e} cutoff={_cutoff_text(info.cutoff, n_bins)}")
            if not info.applied:
                console.line(f"  ⚠️  step {info.step_in_epoch}: non-finite loss ({info.loss}), update skipped")
            for i, record in enumerate(trainer.engine.history):
                for w in record.warnings[printed.get(i, 0):]:
                    console.line(f"  ⚠️  WARNING after the transition at epoch {record.epoch}: {w}")
                printed[i] = len(record.warnings)

        def on_epoch(self, info) -> None:
            dist.check_same("transition history", _digest(trainer.engine.history))
            console.close_bar()
            console.line(f"Epoch {info.epoch} avg_loss={info.avg_loss:.2f} cutoff={info.cutoff}/{n_bins}")
            console.line(f"Epoch {info.epoch} val_bpb={info.bpb:.3f} (next byte), {info.bpb_mean:.3f} (mean over {config.model.chunk} offsets)")
            if writers:
                writers[1].write({"epoch": info.epoch, "step": trainer.clock.global_step, "avg_loss": f"{info.avg_loss:.6g}",
                                  "cutoff": info.cutoff, "val_bpb": f"{info.bpb:.6g}", "val_bpb_mean": f"{info.bpb_mean:.6g}"})

        def on_transition(self, record) -> None:
            dist.check_same("transition", f"{record.source}->{record.dest}@{record.global_step}")
            cut = next((a.effect.get("cutoff") for a in record.actions if "cutoff" in a.effect), None)
            if cut is not None:
                before, after = (_cutoff_text(v if v is not None else n_bins, n_bins) for v in cut)
                console.line(RAISE_LINE.format(epoch=record.epoch, before=before, after=after))
            else:
                console.line(f"Epoch {record.epoch} transition {record.source} -> {record.dest}")

        def should_stop(self) -> str | None:
            stop = stop_flag["signal"] is not None
            after = args.stop_after is not None and trainer.clock.global_step - steps_at_start >= args.stop_after
            if dist.any_flag(stop or after):
                return "signal" if stop or not after else "stop_after"
            return None

    try:
        reason = trainer.fit(Hooks(), save, ckpt_every=args.ckpt_every)
    except NonFiniteLossError as exc:
        console.close_bar()
        print(f"chunklm train: error: {exc}", file=sys.stderr)
        return 1
    finally:
        console.close_bar()
        for s, h in old_handlers.items():
            signal.signal(s, h)
        if writers:
            for w in writers:
                w.close()
        # Drop DDP's reducer before the process group: a gloo group torn down while the reducer
        # still holds it aborted a rank at exit ('terminate called without an active exception').
        trainer.net = None
        gc.collect()
        dist.close()

    elapsed = time.time() - started_at
    steps = trainer.clock.global_step - steps_at_start
    if reason == "signal":
        signum = stop_flag["signal"] or signal.SIGTERM
        name = signal.Signals(signum).name
        console.line(f"stopped by {name} at global step {trainer.clock.global_step}; checkpoint saved to {ckpt}")
        console.line(f"resume with: {resume_command(ckpt)}")
        return 128 + int(signum)
    if reason == "stop_after":
        console.line(f"stopped after {steps} steps at global step {trainer.clock.global_step}; checkpoint saved to {ckpt}")
        console.line(f"resume with: {resume_command(ckpt)}")
        return 0
    console.line(f"done: {steps} steps in {elapsed:.0f} s; checkpoint {ckpt}, history {files.history}")
    if args.plot and dist.rank == 0:
        from runs.plot import plot_run

        plot_run(files, files.plot)
        console.line(f"plot: {files.plot}")
    return 0
