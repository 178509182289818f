"""``chunklm train``: wiring of the settings, the run's files, the checkpoint, the trainer and the console.

Every path is checked and the run locked before training. The checkpoint is a save's commit point: it
records the digest of the metrics rows it covers, written durably before it, and a resume continues a
metrics file only if it matches, so an interrupted save never mixes two runs (docs/chunklm.md).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import attrs

from runs.artifacts import MetricsWriter, RunFiles, RunLock, WriteError, is_torch_file, remove_stale_temps, run_name
from runs.checkpoint import Checkpoint, CheckpointError, stale_metrics_message
from runs.console import Console, Reporter, invoked_as, sets_cutoff
from runs.distributed import Distributed, resume_command
from runs.errors import Output, RunError, UsageError, UserError, report
from runs.settings import Settings

__all__ = ["train", "check_model_size"]


class Interrupted(RunError):
    """A second Ctrl-C (or signal): stopped at once, without saving."""

    exit_code = 130


# -- before training --------------------------------------------------------------------------------

_SIDECARS = (".steps.csv", ".epochs.csv", ".history.json", ".png", ".lock", ".tmp")


def check_args(args: argparse.Namespace) -> None:
    """Flags that contradict each other, and checkpoint names that would collide with a run's other files."""
    if args.resume and args.overwrite:
        auto = args.resume == "auto"
        raise UsageError(
            f"--resume{' auto' * auto} continues the run in --ckpt{' if there is one' * auto} and --overwrite "
            "replaces it: pass one of them"
        )
    if args.allow_data_change and not args.resume:
        raise UsageError(
            "--allow-data-change applies to --resume (a fresh run has no checkpoint whose data could differ); "
            "drop it, or add --resume"
        )
    if not args.ckpt.strip():
        raise UsageError("--ckpt is empty; name the checkpoint file, e.g. --ckpt runs/demo/chunklm_ckpt.pt")
    try:
        args.ckpt.encode()
    except UnicodeEncodeError:
        raise UsageError(
            f"--ckpt {os.fsencode(args.ckpt).decode(errors='backslashreplace')}: the path is not valid UTF-8, so it "
            "cannot be printed or recorded; pick a UTF-8 name"
        ) from None
    if args.plot:
        from engine import CurriculumError
        from engine.plot import pyplot

        try:
            pyplot()  # before training, not after it: --plot without matplotlib
        except CurriculumError as exc:
            raise UsageError(f"--plot: {exc}; or drop --plot") from None
    name = Path(args.ckpt).name
    clash = next((s for s in _SIDECARS if name.endswith(s)), None)
    if clash is not None or name in ("", ".", ".."):
        raise UsageError(
            f"--ckpt {args.ckpt}: "
            f"a checkpoint name ending in {clash or name!r} would be confused with a run's other files "
            "(NAME.steps.csv, NAME.epochs.csv, NAME.history.json, NAME.png); name it e.g. NAME.pt"
        )


def check_paths(files: RunFiles, resume: bool, overwrite: bool) -> None:
    """The checkpoint path is a file path in a writable folder, whose run's file names the file system
    takes; a fresh run does not replace a run; no run replaces anything but regular files, nor shares
    its files with another checkpoint (:attr:`RunFiles.sibling`)."""
    ckpt = files.ckpt
    folder = ckpt.parent
    if not folder.is_dir():
        what = "is not a directory" if folder.exists() else "does not exist"
        raise UsageError(
            f"--ckpt {ckpt}: the folder {folder} {what}; create it (mkdir -p {folder}) or pick another path"
        )
    files.check_names()  # before anything else looks a name up: a name too long is an OSError there
    if ckpt.is_dir():
        raise UsageError(f"--ckpt {ckpt} is a directory; name a file in it, e.g. --ckpt {ckpt / 'chunklm_ckpt.pt'}")
    odd = files.not_regular()
    if odd:
        raise UsageError(
            f"--ckpt {ckpt}: {', '.join(str(p) for p in odd)} {'is' if len(odd) == 1 else 'are'} not a regular file "
            "(a folder, device, FIFO or symbolic link), which a run never replaces; pick another --ckpt"
        )
    sibling = files.sibling
    if sibling is not None and is_torch_file(sibling):
        raise UsageError(
            f"--ckpt {ckpt}: {sibling.name} beside it is a checkpoint whose run's files are named as this one's "
            f"would be ({files.steps.name}, {files.history.name}...); pick another --ckpt name, or use {sibling.name}"
        )
    others = [p for p in files.existing() if p != ckpt]
    earlier = _renamed_by_earlier_version(files, resume, others)
    if earlier is not None:
        old_ckpt, renamed = earlier
        raise UsageError(
            f"{old_ckpt.name} was written by an earlier version, which named its run's files after the checkpoint's "
            f"stem; give them today's names in {folder} ({'; '.join(f'mv {a.name} {b.name}' for a, b in renamed)}), "
            "then run this again"
        )
    if resume == "auto":
        auto_resume(files)  # refused before the lock file is made; decided again holding it
        return
    if resume:
        if not ckpt.exists():
            if others:
                raise UsageError(
                    f"--resume: no checkpoint at {ckpt}; there is nothing to resume. "
                    f"{_without_checkpoint(others)}; move them aside to start afresh, or pick another --ckpt"
                )
            raise UsageError(f"--resume: no checkpoint at {ckpt}; drop --resume to start a fresh run, or fix --ckpt")
        return
    if ckpt.exists() and not overwrite:
        raise UsageError(
            f"{ckpt} already holds a run ({', '.join(p.name for p in files.existing())}); continue it with --resume, "
            "replace it with --overwrite (its files are replaced at the new run's first save), or pass another --ckpt"
        )
    if others and not overwrite:
        raise UsageError(
            f"--ckpt {ckpt}: {_without_checkpoint(others)}; move them aside, replace them with --overwrite "
            "(at the new run's first save), or pass another --ckpt"
        )


def _renamed_by_earlier_version(files: RunFiles, resume: bool | str, others: list[Path]) -> tuple[Path, list] | None:
    """A checkpoint whose run's files an earlier version named after its stem (this one, when resuming;
    one beside it whose files have this run's names, when starting), with (old name, today's) of each."""
    if resume:
        candidates = [files.ckpt]
    elif others:
        pattern = glob.escape(run_name(files.ckpt)) + ".*"
        candidates = [p for p in sorted(files.ckpt.parent.glob(pattern)) if p != files.ckpt]
    else:
        return None
    for ckpt in candidates:
        renamed = RunFiles(ckpt).renamed()
        if renamed and (resume or any(old in others for old, _ in renamed)):
            return ckpt, renamed
    return None


def _without_checkpoint(files: list[Path]) -> str:
    """What the files of a run whose checkpoint is missing are, as far as can be told."""
    return (
        f"{', '.join(p.name for p in files)} beside it {'are' if len(files) > 1 else 'is'} the files of a run without "
        "their checkpoint (moved or deleted, or a run of an earlier version stopped before its first save)"
    )


def auto_resume(files: RunFiles) -> bool:
    """``--resume auto``, decided holding the run's lock: resume (True) when the checkpoint is there,
    start fresh (False) when nothing of a run is (a run killed before its first save leaves nothing:
    its metrics wait in memory), and refuse anything else."""
    if os.path.lexists(files.ckpt):
        return True
    others = files.existing()
    if others:
        raise UsageError(
            f"--resume auto: no checkpoint at {files.ckpt}, and {_without_checkpoint(others)}; nothing was changed. "
            "Move them aside, replace them with --overwrite instead of --resume auto, or pick another --ckpt"
        )
    return False


def data_identity(
    settings: Settings, saved: Checkpoint | None, allow_change: bool, console_notes: list[str]
) -> tuple[dict, list]:
    """The corpus's fingerprint, compared on resume with the checkpoint's: other or changed data is
    refused, naming what changed, unless ``allow_change`` (then recorded). Returns (fingerprint, the
    data changes to store)."""
    from chunklm.corpus import CorpusError, corpus_fingerprint, fingerprint_changes

    try:
        now = corpus_fingerprint(list(settings.data) or None)
    except CorpusError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot read the data: {exc.strerror or exc}: {exc.filename}; check --data") from None
    if saved is None:
        return now, []
    changes_so_far = list(saved.data_changes or [])
    if saved.data is None:
        console_notes.append(
            "note: this checkpoint was written before checkpoints recorded their data; the data is not checked "
            f"against it (training on {', '.join(now.get('paths') or settings.data)}); from the next save on it is"
        )
        return now, changes_so_far
    changes = fingerprint_changes(saved.data, now)
    if not changes:
        return now, changes_so_far
    if not allow_change:
        raise UsageError(
            f"the data differs from the checkpoint's: {'; '.join(changes)}. A resume on other data does not continue "
            "the same run; restore the data, "
            "or pass --allow-data-change to continue on this data knowingly (recorded in the checkpoint)"
        )
    console_notes.append(
        f"note: continuing on changed data (--allow-data-change, recorded in the checkpoint): {'; '.join(changes)}"
    )
    return now, changes_so_far + [{"global_step": saved.global_step, "epoch": saved.epoch, "changes": changes}]


def check_model_size(settings: Settings, device, what: str, training: bool = True) -> None:
    """Refuse, before allocating, a model larger than the memory of ``device`` (settings from a damaged
    or edited checkpoint, or a typo in --d-model)."""
    import torch

    from chunklm import ChunkLM

    with torch.device("meta"):
        n_params = sum(p.numel() for p in ChunkLM(settings.to_config().model).parameters())
    need = n_params * 4 * (4 if training else 1)  # weights; + gradients and AdamW's two moments when training
    if getattr(device, "type", "cpu") == "cuda":
        have = torch.cuda.get_device_properties(device).total_memory
    else:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > have:
        raise UsageError(
            f"{what} make a model of {n_params:,} parameters, "
            f"{need / 1e9:,.1f} GB to {'train' if training else 'load'}, "
            f"more than the {have / 1e9:,.1f} GB of {device}; lower --d-model or --n-layers (or check the checkpoint)"
        )


def check_data(paths: tuple[str, ...], from_checkpoint: bool = False) -> None:
    """Each --data path is a file or a directory, every item named (NAME=PATH) or none; ``from_checkpoint``:
    the paths are a resumed run's own."""
    from chunklm.corpus import CorpusError, data_sources, source_item

    try:
        data_sources(paths)
    except CorpusError as exc:
        raise UsageError(str(exc)) from None
    for path in (Path(source_item(item)[1]) for item in paths):
        if not path.exists():
            moved = "; if the run's data moved, resume with --data NEW --allow-data-change" if from_checkpoint else ""
            raise UsageError(f"--data {path}: no such file or directory{moved}")
        if not (path.is_file() or path.is_dir()):
            raise UsageError(
                f"--data {path}: not a regular file or a directory (a device, FIFO or socket); "
                "pass files or directories"
            )


def build_corpus(config, fingerprint: dict | None = None):
    """The run's corpus; ``fingerprint``: the data's, already taken (its files are then read once)."""
    from chunklm.corpus import CorpusError, default_cache_dir, open_corpus

    try:
        return open_corpus(config.data, seq_len=config.model.seq_len, chunk=config.model.chunk, fingerprint=fingerprint)
    except CorpusError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(
            f"cannot build the corpus: {exc.strerror or exc}: {exc.filename}; check --data, and that the cache folder "
            f"{default_cache_dir()} is writable (or set CHUNKLM_CACHE_DIR to one that is)"
        ) from None


# -- while training ---------------------------------------------------------------------------------


class StopSignals:
    """SIGINT/SIGTERM/SIGHUP (unless ignored: ``nohup``): the first stops the run after the step in
    progress, saved; a second stops it now."""

    def __init__(self, announce: bool) -> None:
        self.announce = announce
        self.signum: int | None = None
        self._old: dict = {}

    def __enter__(self) -> "StopSignals":
        stops = [signal.SIGINT, signal.SIGTERM] + [signal.SIGHUP] * (signal.getsignal(signal.SIGHUP) != signal.SIG_IGN)
        self._old = {s: signal.signal(s, self._handle) for s in stops}
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)

    def _handle(self, signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.signum is None:
            self.signum = signum
            text = f"\n{name}: stopping after this step (checkpoint saved); {name} again to stop now without saving\n"
            if self.announce:  # os.write: print() is not safe inside a signal handler; a closed terminal is fine
                with contextlib.suppress(OSError):
                    os.write(2, text.encode())
            return
        raise Interrupted(f"stopped by a second {name}, without saving; the last checkpoint is kept")


class OutputWatch:
    """While a run trains, stdout and stderr that cannot be written go silent instead of failing the run
    (``chunklm train | head``, a closed terminal); ``lost`` says why stdout went, and the run saves."""

    def __init__(self) -> None:
        self.lost: str | None = None
        self._old: tuple = ()

    def __enter__(self) -> "OutputWatch":
        self._old = sys.stdout, sys.stderr
        stdout = sys.stdout.stream if isinstance(sys.stdout, Output) else sys.stdout
        sys.stdout, sys.stderr = Output(stdout, self._stdout_lost), Output(sys.stderr, lambda error: None)
        return self

    def __exit__(self, *exc: Any) -> None:
        sys.stdout, sys.stderr = self._old

    def _stdout_lost(self, error: Exception) -> None:
        self.lost = self.lost or str(error)


# -- the command ------------------------------------------------------------------------------------


def train(args: argparse.Namespace, explicit: dict[str, Any]) -> int:
    """Run ``chunklm train``; under torchrun a failure on any rank ends every rank within seconds."""
    dist = Distributed(args.device)
    try:
        code = _train(args, explicit, dist)
        dist.close()  # inside: a barrier that fails (a rank died) is reported, and ends the others too
    except BaseException as exc:
        if not dist.active:
            raise
        other = dist.aborted_by_other()
        if other is not None:  # our error is a consequence of theirs
            code = report("train", RunError(f"rank {dist.rank} stopping: {other}"))
        else:
            code = report("train", exc, prefix=f"rank {dist.rank}: ")
        dist.abort(str(exc).splitlines()[0] if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}", code)
    return code


def _load(
    files: RunFiles, args: argparse.Namespace, explicit: dict[str, Any]
) -> tuple[Checkpoint | None, Settings, str | None]:
    from chunklm.corpus import source_item
    from runs.curriculum_file import refuse_curriculum_flags

    if explicit.get("data"):  # absolute (NAME= kept): the checkpoint's resume command works from any folder
        named = (source_item(item) for item in explicit["data"])
        data = tuple(("" if n is None else f"{n}=") + str(Path(p).expanduser().resolve()) for n, p in named)
        explicit = {**explicit, "data": data}
    if not args.resume:
        refuse_curriculum_flags(args, None, files.ckpt)
        return None, Settings.fresh(args.preset, explicit), args.preset
    saved = Checkpoint.load(files.ckpt)
    missing = saved.missing_parts()
    if missing:
        raise CheckpointError(
            f"{files.ckpt} lacks {', '.join(missing)}, which a resume needs to continue the run exactly; it is "
            "damaged or was edited. Resume from another checkpoint, or start a fresh run"
        )
    refuse_curriculum_flags(args, saved, files.ckpt)  # before comparing those flags with the checkpoint's
    free = ("data",) if args.allow_data_change else ()  # the flag's promise: other path, files or bytes
    return saved, saved.settings.resume(saved.preset, args.preset, explicit, free), saved.preset


def _train(args: argparse.Namespace, explicit: dict[str, Any], dist: Distributed) -> int:
    from chunklm.train import NonFiniteLossError, Trainer, compile_default
    from engine import CurriculumError, curriculum_to_dict
    from runs.curriculum_file import curriculum_for_run

    check_args(args)
    files = RunFiles(Path(args.ckpt))
    lock = RunLock(files.ckpt)
    auto = args.resume == "auto"
    if dist.rank == 0:
        check_paths(files, args.resume, args.overwrite)
        lock.acquire()
    try:
        # rank 0 decides, holding the lock and writing nothing before a collective; every rank reads the same files
        if auto:
            args.resume = dist.gather_to_all(auto_resume(files) if dist.rank == 0 else None)[0]
        saved, settings, preset = _load(files, args, explicit)
        stale = stale_metrics_message(files, saved, resuming=True) if saved is not None and dist.rank == 0 else None
        if stale:
            raise UsageError(stale)
        if saved is not None and saved.world_size != dist.world_size:
            raise UsageError(
                f"{files.ckpt} was written by a run with {saved.world_size} processes, this one has {dist.world_size}: "
                "the data each rank sees would change. Resume with the same --nproc_per_node"
            )
        check_data(settings.data, from_checkpoint=saved is not None and "data" not in explicit)
        notes = [
            f"note: {path.name} is missing; the checkpoint vouches for rows up to step {saved.global_step} that are "
            "lost with it, and it starts again after the checkpoint"
            for path in (files.lost_metrics(saved) if saved is not None and dist.rank == 0 else [])
        ]
        data, data_changes = None, []
        if dist.rank == 0:
            data, data_changes = data_identity(settings, saved, args.allow_data_change, notes)
        check_model_size(settings, dist.device, f"the settings{' of ' + str(files.ckpt) if saved is not None else ''}")
        compile_step = compile_default(dist.device) if settings.compile is None else settings.compile
        config = attrs.evolve(settings.to_config(), compile=compile_step)
        # --curriculum FILE, or stored; None: the settings' own
        curriculum, curriculum_file = curriculum_for_run(args, config, saved, files.ckpt)
        console = Console(enabled=dist.rank == 0)
        if auto:  # after every check of the line: a refused line says only why
            console.line(
                f"resuming {files.ckpt} at step {saved.global_step}"
                if saved is not None
                else f"no run in {files.ckpt}: starting fresh"
            )
        corpus = build_corpus(config, data)
        trainer = Trainer(
            config,
            device=dist.device,
            corpus=corpus,
            rank=dist.rank,
            world_size=dist.world_size,
            all_reduce_mean=dist.reduce_mean if dist.active else None,
            wrap_model=dist.wrap,
            curriculum=curriculum,
        )
        try:
            if saved is None:
                trainer.start()
            else:
                state = saved.trainer_state(dist.rank)
                try:  # restoring the file's contents only
                    trainer.load_state_dict(state, epochs_done=saved.epoch, data_changed=args.allow_data_change)
                except (RuntimeError, KeyError, TypeError, ValueError, CurriculumError) as exc:
                    detail = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
                    raise CheckpointError(
                        f"{files.ckpt} does not fit its own settings ({type(exc).__name__}: {detail[:300]}); it is "
                        "damaged or was edited. Resume from another checkpoint, or start a fresh run"
                    ) from None
            if dist.rank == 0:
                remove_stale_temps(files.written)
                if saved is not None and saved.engine_phase is not None:
                    # the checkpoint's own: a save cut short after it left an older one
                    files.write_history(trainer.engine.history)
            stored = (curriculum_to_dict(curriculum), curriculum_file) if curriculum is not None else None
            run = Run(
                args=args,
                trainer=trainer,
                settings=settings,
                preset=preset,
                dist=dist,
                files=files,
                saved=saved,
                console=console,
                data=data,
                data_changes=data_changes,
                curriculum=stored,
            )
            if getattr(args, "curriculum", None) is None and curriculum is not None:
                curriculum_file = f"{curriculum_file} (stored in the checkpoint)"
            _print_header(run, corpus, curriculum_file)
            for note in notes:
                console.line(note)
            if trainer.done:
                done = trainer.clock.epoch
                console.line(
                    f"the run already finished: {_cooled_down(trainer)}; it stopped there"
                    if done < config.epochs
                    else f"the run already finished: it has trained {done} epoch{'s' if done != 1 else ''} and "
                    f"--epochs is {config.epochs}; to train longer, resume with --epochs N (N > {done}: the last LR "
                    "stage stretches to the new end)"
                )
                return 0
            # to the last line: a closed terminal fails the run's last lines too
            with OutputWatch() as output:
                return _fit(run, output)
        finally:
            trainer.close()  # before the process group goes
    except NonFiniteLossError as exc:
        raise RunError(str(exc)) from None
    finally:
        lock.release()


def _cooled_down(trainer) -> str:
    end = trainer.schedule.cooldown_end
    return f"the LR cooldown the curriculum started ended at step {end}, and the LR is 0 from there"


@attrs.frozen
class Run:
    """A run ready to train: what :func:`_train` checked and built, for :func:`_fit` to train and save."""

    args: argparse.Namespace
    trainer: Any
    settings: Settings
    preset: str | None
    dist: Distributed
    files: RunFiles
    saved: Checkpoint | None
    console: Console
    data: dict | None = None  # the data's fingerprint (rank 0), stored in every checkpoint
    data_changes: list | None = None  # the changes --allow-data-change continued on
    curriculum: tuple[dict, str | None] | None = None  # --curriculum FILE's curriculum as data, and its file


class Saver:
    """``save(reason)`` for :meth:`Trainer.fit`: every rank calls it at the same step; rank 0 writes, with
    ``writers`` (name -> :class:`MetricsWriter`, see :meth:`RunFiles.metrics`)."""

    def __init__(self, run: Run, writers: dict[str, MetricsWriter]) -> None:
        self.run, self.writers = run, writers
        self.replace_old = run.args.overwrite and run.saved is None  # replacing a run (--overwrite), not saved yet
        self.wrote = False  # whether this run has written a checkpoint yet

    def __call__(self, reason: str) -> None:
        import torch

        run, clock = self.run, self.run.trainer.clock
        state = run.trainer.state_dict()
        rng_per_rank = run.dist.gather_to_all(state["rng"])
        if run.dist.rank != 0:
            return
        for writer in self.writers.values():
            writer.sync()  # the rows the checkpoint vouches for are on disk before it
        if self.replace_old and run.files.plot.exists():
            run.files.plot.unlink()  # the replaced run's plot, drawn from the files the checkpoint below replaces
        curriculum, curriculum_file = run.curriculum or (None, None)
        Checkpoint(  # the commit point: from here on the folder holds this run
            settings=run.settings,
            trainer=state,
            global_step=clock.global_step,
            epoch=clock.epoch,
            preset=run.preset,
            world_size=run.dist.world_size,
            num_threads=torch.get_num_threads(),
            rng_per_rank=rng_per_rank if run.dist.active else None,
            metrics={name: writer.digest() for name, writer in self.writers.items()},
            data=run.data,
            data_changes=run.data_changes or None,
            curriculum=curriculum,
            curriculum_file=curriculum_file,
        ).save(run.files.ckpt)
        self.wrote = True
        run.files.write_history(run.trainer.engine.history)
        for writer in self.writers.values():
            writer.commit()
        self.replace_old = False


def _fit(run: Run, output: OutputWatch) -> int:
    """Train to the end or a stop, saving on the way. A fresh run's metrics wait in memory until its
    first save, so that a run stopped before it leaves nothing in the way of the next (and, with
    ``--overwrite``, the replaced run's files stay as they are until then)."""
    args, trainer, dist, files, console = run.args, run.trainer, run.dist, run.files, run.console
    clock = trainer.clock
    metrics = files.metrics(clock.global_step, clock.epoch, trainer.sources) if dist.rank == 0 else {}
    writers = {
        name: MetricsWriter(path, fields, key, upto if run.saved else None, defer=run.saved is None)
        for name, (path, fields, key, upto) in metrics.items()
    }
    save = Saver(run, writers)
    started_at, steps_at_start = time.time(), clock.global_step
    with StopSignals(announce=dist.rank == 0) as signals:

        def stop_reason() -> str | None:
            if signals.signum is not None:
                return "signal"
            if output.lost is not None:
                return "output"
            if args.stop_after is not None and trainer.clock.global_step - steps_at_start >= args.stop_after:
                return "stop_after"
            return None

        try:
            metrics = (writers["steps"], writers["epochs"]) if writers else ()
            reporter = Reporter(trainer, console, metrics, dist, run.settings.log_every, stop_reason)
            reason = trainer.fit(reporter, save, ckpt_every=run.settings.ckpt_every)
        except WriteError as exc:  # what comes next: resume when this run has a checkpoint
            then = (
                f"resume with: {resume_command(files.ckpt)}"
                if run.saved is not None or save.wrote
                else "start the run again: nothing of it was saved (it had no checkpoint yet)"
            )
            raise WriteError(f"{exc}, then {then}") from None
        finally:
            console.close_bar()
            for writer in writers.values():
                writer.close()
    clock = trainer.clock
    steps = clock.global_step - steps_at_start
    if reason == "output":  # said on stderr, which may still be there (`| head`); the shell's status for SIGPIPE
        print(
            f"{output.lost}: stopped at global step {clock.global_step}; checkpoint saved to {files.ckpt}\n"
            f"resume with: {resume_command(files.ckpt)}",
            file=sys.stderr,
            flush=True,
        )
        return 128 + signal.SIGPIPE
    if reason in ("signal", "stop_after"):
        signum = signals.signum or signal.SIGTERM
        how = f"by {signal.Signals(signum).name}" if reason == "signal" else f"after {steps} steps"
        console.line(f"stopped {how} at global step {clock.global_step}; checkpoint saved to {files.ckpt}")
        console.line(f"resume with: {resume_command(files.ckpt, invoked_as())}")
        return 128 + int(signum) if reason == "signal" else 0
    if clock.epoch < trainer.config.epochs:  # ended by trainer.cooled_down
        console.line(f"{_cooled_down(trainer)}: training stops at epoch {clock.epoch} of {trainer.config.epochs}")
    console.line(
        f"done: {steps} steps in {time.time() - started_at:.0f} s; checkpoint {files.ckpt}, history {files.history}"
    )
    if args.plot and dist.rank == 0:
        from runs.plot import plot_run

        plot_run(files, files.plot)
        console.line(f"plot: {files.plot}")
    return 0


def _print_header(run: Run, corpus, curriculum_file: str | None) -> None:
    import torch

    console, trainer, dist, saved = run.console, run.trainer, run.dist, run.saved
    config, m = trainer.config, trainer.config.model
    n_params = sum(p.numel() for p in trainer.model.parameters())
    console.line(
        f"ChunkLM {n_params / 1e6:.2f}M params: d_model={m.d_model} n_layers={m.n_layers} seq_len={m.seq_len} "
        f"kernel_len={m.kernel_len} chunk={m.chunk} on {dist.device}"
        + (f" (preset {run.preset})" if run.preset else "")
    )
    console.line(
        f"corpus: {corpus.n_files} files, "
        f"{corpus.n_train_bytes / 1e6:.1f} MB train / {corpus.n_val_bytes / 1e6:.2f} MB validation; "
        f"global batch = {config.batch_size} x {config.accum_steps} accum x {dist.world_size} process"
        f"{'es' if dist.world_size > 1 else ''} = {config.batch_size * config.accum_steps * dist.world_size} "
        "windows/step"
    )
    if curriculum_file is not None:
        console.line(f"curriculum: {curriculum_file} (phases {' -> '.join(p.name for p in trainer.curriculum.phases)})")
    else:
        console.line(f"curriculum: {run.settings.describe_curriculum()}")
    if saved is None:
        return
    if saved.num_threads is not None and saved.num_threads != torch.get_num_threads():
        console.line(
            f"note: this run used {saved.num_threads} CPU threads and this process has {torch.get_num_threads()}; "
            f"float results will not be bit-identical to an uninterrupted run (set OMP_NUM_THREADS={saved.num_threads})"
        )
    c = trainer.clock
    console.line(
        f"resumed {run.files.ckpt} at epoch {c.epoch} step {c.step_in_epoch}/{config.steps_per_epoch} (global step "
        f"{c.global_step}), phase {trainer.engine.phase.name}"
        + (f", cutoff={trainer.model.cutoff}/{trainer.model.n_bins}" if sets_cutoff(trainer.curriculum) else "")
    )
