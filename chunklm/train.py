"""The training loop that drives the curriculum engine.

One optimizer step = ``batch_size`` x ``accum_steps`` windows (run through the model
``micro_batch`` at a time, an execution-only setting); then, in the engine's order,
``optimizer.step()``, ``schedule.step()``, ``engine.step_end(loss=..., lr=...)``; after the last
step of an epoch, validation and ``engine.epoch_end(val_bpb=...)``. The loop reports through a
:class:`Hooks` object (the command line prints, a test records) and never prints itself.

A phase may train on shorter windows: its ``params={"seq_len": L}`` (L dividing the model's
seq_len) cuts each of the step's windows into seq_len / L pieces (:func:`chunklm.corpus.cut_windows`),
the same bytes and tokens per step with shorter contexts; validation is always at the full length.
The LR schedule is :class:`policies.StagedCosine` or, with ``schedule="wsd"``, :class:`policies.WSD`.

With named sources (``data=("web=PATH", "code=PATH")``, a :class:`chunklm.corpus.MixtureCorpus`) a
:class:`policies.MixtureSampler` draws each step's windows by the current phase's ``mix`` param (equal
weights where a phase has none), each source read without replacement; its position is part of the
state. Validation is then per source, and ``val_bpb`` (what the engine sees) their mean.

Everything that affects the next step lives in :class:`Trainer` state that :meth:`state_dict`
returns, so a run stopped at any optimizer-step boundary resumes bit-identically on CPU.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import random
from typing import Any, Callable, Protocol, Sequence

import attrs
import numpy as np
import torch

from chunklm.config import ConfigError, _positive_int
from chunklm.corpus import ByteCorpus, MixtureCorpus, cut_windows, open_corpus
from chunklm.evaluate import EMA, evaluate_bpb
from chunklm.model import ChunkLM, ChunkLMConfig
from engine import Curriculum, CurriculumEngine, Record
from policies import WSD, CooldownShape, MixtureSampler, StagedCosine, seq_len_curriculum, spectral_curriculum

__all__ = [
    "TrainConfig",
    "Trainer",
    "Hooks",
    "StepInfo",
    "EpochInfo",
    "NonFiniteLossError",
    "MAX_NONFINITE",
    "seed_everything",
]

logger = logging.getLogger(__name__)

MAX_NONFINITE = 3  # consecutive non-finite losses before the run stops


class NonFiniteLossError(RuntimeError):
    """The loss was non-finite for MAX_NONFINITE optimizer steps in a row."""


def _positive(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    if not value > 0:
        raise ConfigError(f"{attribute.name} must be > 0: got {value}")


def _non_negative(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{attribute.name} must be an int >= 0: got {value!r}")


def _to_tuple(value: Any) -> tuple:
    return tuple(value)


def _check_seq_lens(inst: Any, attribute: attrs.Attribute, value: tuple) -> None:
    for n in value:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= inst.model.seq_len or inst.model.seq_len % n:
            raise ConfigError(
                f"seq_lens must be divisors of seq_len={inst.model.seq_len}: got {n!r} in {value}; "
                f"e.g. --seq-lens {inst.model.seq_len // 4},{inst.model.seq_len // 2}"
            )


# The LR schedules by name: StagedCosine (the seed's stages, restarted at raises), WSD (warmup-stable-decay).
SCHEDULES = {"staged": StagedCosine, "wsd": WSD}


def _check_schedule(inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value not in SCHEDULES:
        raise ConfigError(
            f"schedule must be one of {', '.join(SCHEDULES)}: got {value!r}; pass --schedule staged or wsd"
        )


def _check_cooldown_fraction(inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
        raise ConfigError(f"cooldown_fraction must be in (0, 1]: got {value!r}; e.g. --cooldown-fraction 0.2")


def _check_micro_batch(inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    _positive_int("--micro-batch")(inst, attribute, value)
    step = inst.batch_size * inst.accum_steps
    if value > step:
        raise ConfigError(
            f"micro_batch must be <= batch_size x accum_steps, the windows of a step: got --micro-batch {value}, "
            f"--batch-size {inst.batch_size} x --accum-steps {inst.accum_steps} = {step}; "
            f"pass --micro-batch {step} or less"
        )


@attrs.frozen
class TrainConfig:
    """Everything that determines a run's trajectory (plus ``epochs``, which may grow on resume)."""

    model: ChunkLMConfig
    data: tuple[str, ...] = attrs.field(default=(), converter=_to_tuple)
    batch_size: int = attrs.field(default=4, validator=_positive_int("--batch-size"))
    accum_steps: int = attrs.field(default=8, validator=_positive_int("--accum-steps"))
    steps_per_epoch: int = attrs.field(default=1000, validator=_positive_int("--steps-per-epoch"))
    epochs: int = attrs.field(default=50, validator=_positive_int("--epochs"))
    lr: float = attrs.field(default=2e-4, validator=_positive)
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = attrs.field(default=0, validator=_non_negative)
    ema: float | None = None  # EMA decay, or None for no EMA
    cutoffs: tuple[int, ...] = attrs.field(default=(128, 256, 512), converter=_to_tuple)
    min_epochs: tuple[int, ...] = attrs.field(default=(2, 5, 10), converter=_to_tuple)
    plateau_window: int = 50
    plateau_threshold: float = 0.005
    plateau_test: str = "relative"  # Plateau(test=...): "relative" (the seed's rule) or "welch" (noise-aware)
    plateau_alpha: float | None = None  # the Welch test's level (None: Plateau's default, 0.05)
    preserve: bool = False  # SetCutoff(preserve=...): False is the seed's noisy opening, True the exact one
    # Sequence-length warmup: one window length per phase before "full" (divisors of model.seq_len;
    # with cutoffs, one per cutoff phase; without, seq_len_curriculum's phases). () trains at full length.
    seq_lens: tuple[int, ...] = attrs.field(default=(), converter=_to_tuple, validator=_check_seq_lens)
    schedule: str = attrs.field(default="staged", validator=_check_schedule)  # the LR schedule: SCHEDULES
    # WSD: the cooldown's share of training, and its shape
    cooldown_fraction: float = attrs.field(default=0.2, validator=_check_cooldown_fraction)
    cooldown_shape: str = CooldownShape.ONE_MINUS_SQRT.value  # checked by WSD(shape=...)
    eval_windows: int = 64
    eval_batch_size: int = 16
    # Execution only (the trajectory's math does not depend on them; they may change on resume):
    # windows per forward/backward (None: batch_size); the global batch stays batch_size x accum_steps
    micro_batch: int | None = attrs.field(default=None, validator=attrs.validators.optional(_check_micro_batch))
    compile: bool = False  # torch.compile the model's loss (forward + backward); see compile_default()

    def curriculum(self) -> Curriculum:
        """The seed's spectral curriculum with this config's cutoffs, minimum epochs and plateau rule.

        With ``seq_lens`` its cutoff phases also train on shorter windows (one length per cutoff);
        with ``seq_lens`` and no cutoffs, :func:`policies.seq_len_curriculum` under the same rule. With
        ``schedule="wsd"`` the transitions fire no ``RestartLR`` (WSD has no restarts).
        """
        restart = self.schedule == "staged"
        if self.seq_lens and not self.cutoffs:
            return seq_len_curriculum(
                self.seq_lens,
                min_epochs=self.min_epochs,
                window=self.plateau_window,
                threshold=self.plateau_threshold,
                test=self.plateau_test,
                alpha=self.plateau_alpha,
                restart_lr=restart,
            )
        return spectral_curriculum(
            n_bins=self.model.n_bins,
            cutoffs=self.cutoffs,
            min_epochs=self.min_epochs,
            window=self.plateau_window,
            threshold=self.plateau_threshold,
            preserve=self.preserve,
            test=self.plateau_test,
            alpha=self.plateau_alpha,
            seq_lens=self.seq_lens or None,
            restart_lr=restart,
        )


@attrs.frozen
class StepInfo:
    epoch: int
    step_in_epoch: int  # 1-based: the step just completed
    global_step: int
    loss: float  # nats, mean over positions and chunk offsets (all ranks)
    lr: float  # the LR this step ran at
    cutoff: int
    phase: str
    applied: bool  # False when the loss was non-finite and the update was skipped
    seq_len: int | None = None  # the window length the step trained at (the phase's seq_len param)


@attrs.frozen
class EpochInfo:
    epoch: int  # index of the epoch that just ended
    avg_loss: float
    cutoff: int
    bpb: float
    bpb_mean: float
    sources: dict[str, float] | None = None  # next-byte bpb per named source (bpb is their mean)


class Hooks(Protocol):
    """What the loop reports; every method is optional to implement via :class:`BaseHooks`."""

    def on_step(self, info: StepInfo) -> None: ...
    def on_epoch(self, info: EpochInfo) -> None: ...
    def on_transition(self, record: Record) -> None: ...
    def on_checkpoint(self, reason: str) -> None: ...
    def should_stop(self) -> str | None: ...


class BaseHooks:
    def on_step(self, info: StepInfo) -> None:
        pass

    def on_epoch(self, info: EpochInfo) -> None:
        pass

    def on_transition(self, record: Record) -> None:
        pass

    def on_checkpoint(self, reason: str) -> None:
        pass

    def should_stop(self) -> str | None:
        """A reason to stop at this optimizer-step boundary (signal, --stop-after), or None."""
        return None


@attrs.define
class EpochAccumulator:
    """The epoch in progress: its finite losses so far and the non-finite streak."""

    loss_sum: float = 0.0
    loss_count: int = 0
    nonfinite_streak: int = 0


def rng_state() -> dict:
    """Python, numpy, torch (and CUDA) RNG states as tensors and plain lists (``weights_only``-safe)."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": [version, list(internal), gauss],
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed torch (the weights: the same on every rank) and Python's and numpy's global RNGs (per
    rank). The loop draws from none of the latter, but the checkpoint stores their states, so
    seeding them makes a checkpoint a pure function of its settings."""
    torch.manual_seed(seed)
    random.seed(seed * 1_000_003 + rank)
    np.random.seed([seed, rank])


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": np_state["bit_generator"],
            "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
            "has_gauss": np_state["has_gauss"],
            "gauss": np_state["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def compile_default(device: str | torch.device) -> bool:
    """``TrainConfig.compile``'s intended default: on for CUDA, off on CPU (CPU results stay the eager ones)."""
    return torch.device(device).type == "cuda"


def micro_batches(n_windows: int, micro_batch: int) -> list[tuple[int, int]]:
    """(start, stop) of consecutive slices of at most ``micro_batch`` windows covering ``n_windows``."""
    return [(i, min(i + micro_batch, n_windows)) for i in range(0, n_windows, micro_batch)]


class _Objective(torch.nn.Module):
    """The model's training loss as a module's forward, so DistributedDataParallel can wrap it."""

    def __init__(self, model: ChunkLM) -> None:
        super().__init__()
        self.model = model

    def forward(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.loss(windows)


class Trainer:
    """Model, optimizer, LR schedule, curriculum engine and corpus for one run.

    ``Trainer(config)`` builds a fresh run; ``load_state_dict`` restores a checkpoint into it.
    The curriculum is the seed's ``spectral_curriculum`` from the config unless ``curriculum`` is
    given (registered objects: ``model``, ``optimizer``, ``schedule``); ``stages`` overrides the
    LR schedule's seed stages.
    ``rank``/``world_size`` and ``all_reduce_mean`` serve multi-process (DDP) training.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        device: str | torch.device = "cpu",
        corpus: ByteCorpus | MixtureCorpus | None = None,
        rank: int = 0,
        world_size: int = 1,
        all_reduce_mean: Callable[[float], float] | None = None,
        wrap_model: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
        curriculum: Curriculum | None = None,
        stages: Sequence[tuple[int, float, float]] | None = None,
    ) -> None:
        self.config = config
        self.device = torch.device(device)
        self.rank, self.world_size = rank, world_size
        self._reduce = all_reduce_mean or (lambda x: x)
        self.corpus = corpus or open_corpus(config.data, seq_len=config.model.seq_len, chunk=config.model.chunk)
        seed_everything(config.seed, rank)
        self.model = ChunkLM(config.model).to(self.device)
        objective = _Objective(self.model)
        self.net = wrap_model(objective) if wrap_model else objective  # DDP wraps the loss, so it syncs gradients
        self._ddp = isinstance(self.net, torch.nn.parallel.DistributedDataParallel)
        self._loss_fn = torch.compile(self.net) if config.compile else self.net  # same parameters, same state
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.95)
        )
        self.schedule = self._build_schedule(stages)
        self.curriculum = curriculum or config.curriculum()
        self._check_seq_lens(self.curriculum)
        self.engine = CurriculumEngine(
            self.curriculum, model=self.model, optimizer=self.optimizer, schedule=self.schedule
        )
        self.sampler = (
            MixtureSampler(
                self.corpus.sizes,
                config.batch_size * config.accum_steps,
                seed=config.seed,
                engine=self.engine,
                rank=rank,
                world_size=world_size,
            )
            if isinstance(self.corpus, MixtureCorpus)
            else None
        )
        self.ema = EMA(self.model, decay=config.ema) if config.ema else None
        self.acc = EpochAccumulator()
        self._last_record: Record | None = None  # the engine's record of the last train_step, for fit's hooks
        self._started = False

    def _build_schedule(self, stages: Sequence[tuple[int, float, float]] | None):
        cfg = self.config
        if cfg.schedule == "wsd":
            return WSD(
                self.optimizer,
                base_lr=cfg.lr,
                total_steps=cfg.epochs * cfg.steps_per_epoch,
                cooldown_fraction=cfg.cooldown_fraction,
                shape=cfg.cooldown_shape,
            )
        return StagedCosine(
            self.optimizer,
            base_lr=cfg.lr,
            steps_per_epoch=cfg.steps_per_epoch,
            total_epochs=cfg.epochs,
            **({"stages": tuple(stages)} if stages is not None else {}),
        )

    def _check_seq_lens(self, curriculum: Curriculum) -> None:
        """Every phase's ``seq_len`` param divides the model's seq_len (the step cuts full windows into pieces)."""
        full = self.config.model.seq_len
        for phase in curriculum.phases:
            n = phase.params.get("seq_len", full)
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= full or full % n:
                raise ConfigError(
                    f"phase {phase.name!r}: params['seq_len'] must be a divisor of the model's seq_len={full}: "
                    f"got {n!r}; e.g. {full // 2} or {full // 4}"
                )

    @property
    def sources(self) -> tuple[str, ...]:
        """The names of the data sources (named ``--data``; none for one unnamed source)."""
        return self.sampler.sources if self.sampler is not None else ()

    @property
    def seq_len(self) -> int:
        """The window length of the current phase: its ``seq_len`` param, else the model's seq_len."""
        return int(self.engine.phase.params.get("seq_len", self.config.model.seq_len))

    # -- state -----------------------------------------------------------------------------------

    def start(self) -> None:
        """A fresh run: enter the first phase (sets the first cutoff)."""
        self.engine.start()
        self._started = True

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "engine": self.engine.state_dict(),
            "rng": rng_state(),
            "epoch_accumulator": attrs.asdict(self.acc),
            **({"sampler": self.sampler.state_dict()} if self.sampler is not None else {}),
        }

    def load_state_dict(self, state: dict, *, epochs_done: int = 0, data_changed: bool = False) -> None:
        """Restore a checkpoint's trainer state.

        ``data_changed``: the data may differ from the checkpoint's (``--allow-data-change``): the mixture
        sampler then continues its position over sources of other sizes (the same names).

        Only ``model`` is required. A state without ``engine`` (an older or foreign checkpoint with
        weights only) resumes at the start of epoch ``epochs_done``, in the highest phase whose
        minimum epoch it has reached; the LR schedule is then stepped to that point.
        """
        self.model.load_state_dict(state["model"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        if state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        if state.get("engine") is not None:
            self.schedule.load_state_dict(state["schedule"])
            self.engine.load_state_dict(state["engine"])
            if self.sampler is not None:
                self.sampler.load_state_dict(state["sampler"], other_sizes=data_changed)
        else:
            self.schedule.fast_forward(epochs_done * self.config.steps_per_epoch)
            self._start_from_epoch(epochs_done)
        if state.get("rng") is not None:
            set_rng_state(state["rng"])
        self.acc = EpochAccumulator(**state.get("epoch_accumulator", {}))
        self._started = True

    def _start_from_epoch(self, epochs_done: int) -> None:
        from policies import phase_for_epoch

        phase = phase_for_epoch(self.curriculum, epochs_done)
        self.engine.start(phase=phase, global_step=epochs_done * self.config.steps_per_epoch, epoch=epochs_done)
        logger.warning("checkpoint has no engine state: resuming in phase %s (epoch %d)", phase, epochs_done)

    def close(self) -> None:
        """Release the DDP wrapper before the process group is destroyed (its reducer holds the
        group; a gloo group torn down under it aborted a rank at exit). The trainer cannot train
        after this; its model and state remain readable."""
        self.net = self._loss_fn = None  # _loss_fn is the wrapper itself, or torch.compile of it
        gc.collect()

    @property
    def clock(self):
        return self.engine.clock

    @property
    def done(self) -> bool:
        """Every epoch trained, or a cooldown ended early (:attr:`cooled_down`)."""
        return self.clock.epoch >= self.config.epochs or self.cooled_down

    @property
    def cooled_down(self) -> bool:
        """At an epoch end: the WSD cooldown (started early by the curriculum, e.g. ``StartCooldown`` on a
        plateau) is over and the LR is 0, so further steps would change no weight: training ends here.
        The rest of the epoch the cooldown ended in is trained (at LR 0), so every epoch ends as usual."""
        schedule = self.schedule
        return (
            isinstance(schedule, WSD)
            and schedule.finished
            and schedule.final_ratio == 0.0
            and self.clock.step_in_epoch == 0
        )

    # -- the loop --------------------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _micro_loss(self, windows: torch.Tensor) -> torch.Tensor:
        """Mean nats of one micro-batch of (B, seq_len + chunk) windows, over positions and offsets."""
        with self._autocast():
            loss, _ = self._loss_fn(windows)
        return loss.float()

    def _step_windows(self, seq_len: int) -> torch.Tensor:
        """The step's batch_size x accum_steps windows, drawn per accumulation index as always (resume-safe).

        At a phase's shorter ``seq_len`` L each full window is cut into seq_len / L pieces of L + chunk
        bytes (:func:`chunklm.corpus.cut_windows`): the same bytes and targets, so the same tokens per
        step, with shorter contexts.
        """
        cfg, clock = self.config, self.clock
        if self.sampler is not None:  # named sources: by the phase's mix
            windows = self.corpus.windows(self.sampler.next_batch())  # (batch_size * accum_steps, seq_len + chunk)
            if seq_len != cfg.model.seq_len:
                windows = cut_windows(windows, seq_len, cfg.model.chunk)
            return windows.to(self.device, non_blocking=True)
        # (batch_size * accum_steps, seq_len + chunk)
        windows = torch.cat(
            [
                self.corpus.train_batch(
                    cfg.batch_size,
                    seed=cfg.seed,
                    epoch=clock.epoch,
                    step=clock.step_in_epoch,
                    micro_step=micro,
                    rank=self.rank,
                )
                for micro in range(cfg.accum_steps)
            ]
        )
        if seq_len != cfg.model.seq_len:
            windows = cut_windows(windows, seq_len, cfg.model.chunk)  # (batch_size * accum_steps * pieces, L + chunk)
        return windows.to(self.device, non_blocking=True)

    def train_step(self) -> StepInfo:
        """One optimizer step over batch_size x accum_steps windows, micro_batch at a time; then schedule and engine.

        Every window has the same number of scored positions, so the step's loss, the mean over its
        windows, is the sum of each slice's mean weighted by its share of the windows. At a phase's
        shorter ``seq_len`` a window is seq_len / L pieces, and batch_size and micro_batch count pieces
        in proportion (the same tokens per step and per forward pass).
        """
        cfg, clock = self.config, self.clock
        self.net.train()
        seq_len = self.seq_len
        pieces = cfg.model.seq_len // seq_len
        windows = self._step_windows(seq_len)
        size = (cfg.micro_batch or cfg.batch_size) * pieces
        batch = cfg.batch_size * pieces
        slices = micro_batches(len(windows), size)
        total = torch.zeros((), device=self.device)
        for i, (start, stop) in enumerate(slices):
            sync = contextlib.nullcontext()
            if i < len(slices) - 1 and self._ddp:
                sync = self.net.no_sync()  # DDP: all-reduce gradients once per optimizer step
            with sync:
                loss = self._micro_loss(windows[start:stop])
                (loss / (len(windows) / (stop - start))).backward()  # / accum_steps when micro_batch = batch_size
            total += loss.detach() * ((stop - start) / batch)
        loss_value = self._reduce(total.item() / cfg.accum_steps)
        lr = self.optimizer.param_groups[0]["lr"]
        applied = math.isfinite(loss_value)
        if applied:
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.model)
            self.acc.loss_sum += loss_value
            self.acc.loss_count += 1
            self.acc.nonfinite_streak = 0
        else:
            self.acc.nonfinite_streak += 1
            logger.warning(
                "non-finite loss %s at epoch %d step %d: update skipped (%d in a row)",
                loss_value,
                clock.epoch,
                clock.step_in_epoch + 1,
                self.acc.nonfinite_streak,
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()
        record = self.engine.step_end(loss=loss_value, lr=lr)
        info = StepInfo(
            epoch=clock.epoch,
            step_in_epoch=clock.step_in_epoch,
            global_step=clock.global_step,
            loss=loss_value,
            lr=lr,
            cutoff=self.model.cutoff,
            phase=self.engine.phase.name,
            applied=applied,
            seq_len=seq_len,
        )
        self._last_record = record
        if not applied and self.acc.nonfinite_streak >= MAX_NONFINITE:
            raise NonFiniteLossError(
                f"the loss was non-finite for {MAX_NONFINITE} optimizer steps in a row (last at epoch {clock.epoch}, "
                f"step {clock.step_in_epoch}); the run stopped without saving, so the last good checkpoint is kept. "
                "Lower --lr or check the data"
            )
        return info

    def evaluate(self) -> dict:
        """Validation bpb (:func:`evaluate_bpb`); of named sources, each one's (``"sources"``) and their mean."""
        cfg = self.config
        if self.sampler is None:
            return evaluate_bpb(
                self.model, self.corpus, n_windows=cfg.eval_windows, batch_size=cfg.eval_batch_size, ema=self.ema
            )
        each = {
            name: evaluate_bpb(self.model, c, n_windows=cfg.eval_windows, batch_size=cfg.eval_batch_size, ema=self.ema)
            for name, c in self.corpus.corpora.items()
        }
        mean = {key: sum(m[key] for m in each.values()) / len(each) for key in ("bpb", "bpb_mean")}
        return {**mean, "sources": {name: m["bpb"] for name, m in each.items()}}

    def end_epoch(self) -> tuple[EpochInfo, Record | None]:
        """Validate, summarise the epoch and let the engine decide at the epoch boundary."""
        metrics = self.evaluate()
        avg = self.acc.loss_sum / self.acc.loss_count if self.acc.loss_count else float("nan")
        info = EpochInfo(
            epoch=self.clock.epoch,
            avg_loss=avg,
            cutoff=self.model.cutoff,
            bpb=metrics["bpb"],
            bpb_mean=metrics["bpb_mean"],
            sources=metrics.get("sources"),
        )
        record = self.engine.epoch_end(val_bpb=metrics["bpb"], avg_loss=avg)
        self.acc = EpochAccumulator(nonfinite_streak=self.acc.nonfinite_streak)  # a streak spans epochs
        return info, record

    def fit(self, hooks: BaseHooks, save: Callable[[str], None], ckpt_every: int = 0) -> str:
        """Train until ``epochs`` are done or a hook asks to stop; returns why it ended.

        ``save(reason)`` writes a checkpoint: at epoch ends, every ``ckpt_every`` optimizer steps
        (0: never), and when a hook asks to stop (a signal, ``--stop-after``).
        """
        if not self._started:
            raise RuntimeError("call trainer.start() (fresh run) or trainer.load_state_dict() (resume) first")
        cfg = self.config
        while not self.done:
            while self.clock.step_in_epoch < cfg.steps_per_epoch:
                info = self.train_step()
                hooks.on_step(info)
                if self._last_record is not None:
                    hooks.on_transition(self._last_record)
                reason = hooks.should_stop()
                if reason is not None:
                    save(reason)
                    return reason
                if ckpt_every and self.clock.global_step % ckpt_every == 0 and not self.acc.nonfinite_streak:
                    save("ckpt_every")  # never during a non-finite streak: keep the last good one
            info, record = self.end_epoch()
            hooks.on_epoch(info)
            if record is not None:
                hooks.on_transition(record)
            saved = not self.acc.nonfinite_streak
            if saved:
                save("epoch_end")
            reason = hooks.should_stop()
            if reason is not None:
                if not saved:  # a stop always leaves a checkpoint of where it stopped, as within an epoch
                    save(reason)
                return reason
        return "done"
