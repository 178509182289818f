"""A run's settings: one attrs class whose fields make the flags, defaults, presets and resume rules.

A setting is one field of :class:`Settings`, declared with :func:`setting`: e.g. ``micro_batch: int |
None = setting(help="windows through the model at once", absent=None, type=int)`` feeds the TrainConfig
field of the same name (``to="train"``) and takes its default, gets ``--micro-batch``, is stored in every
checkpoint (read as ``absent`` from checkpoints stored before it existed), and is refused on resume when
it differs (``resume=Resume.FREE`` allows it). A fresh run takes defaults < preset < explicit flags; a
resume, the checkpoint < explicit flags, refusing those that would change the trajectory.
"""

from __future__ import annotations

import argparse
import enum
import functools
import math
from collections.abc import Callable, Collection, Mapping
from typing import Any

import attrs

from chunklm.config import ChunkLMConfig, ConfigError
from chunklm.train import SCHEDULES, TrainConfig
from policies import CooldownShape
from runs.errors import UsageError

__all__ = ["PRESETS", "RUN_GROUP", "Resume", "Settings", "SettingsError", "add_flags", "explicit_settings", "setting"]


class SettingsError(UsageError):
    """Flags that cannot make a run; the message names the flag, what came and the fix."""


class Resume(str, enum.Enum):
    """May an explicit flag differ from the checkpoint's value on ``--resume``?"""

    FIXED = "fixed"  # it would change the trajectory: refused when it differs
    FREE = "free"  # it may change (--epochs: documented effect on the LR stages)


PRESETS = ("seed", "demo")  # "seed": the seed's exact values, which are also the defaults

_CONFIGS = {"train": TrainConfig, "model": ChunkLMConfig}


def setting(
    default: Any = attrs.NOTHING,
    help: str = "",
    *,
    group: str = "training",
    demo: Any = attrs.NOTHING,
    resume: Resume = Resume.FIXED,
    to: str | None = "train",
    flag: str | None = "",
    check: tuple = (),
    absent: Any = attrs.NOTHING,
    converter: Any = None,
    **argparse_kwargs: Any,
) -> Any:
    """One setting. ``default`` left out: the default of the ``to`` config's field ("model", "train";
    None: neither); ``flag``: "" derives ``--name-with-dashes``, None means none; ``check``: (what the
    value must be, test) pairs; ``absent``: the value that reproduces the runs of checkpoints stored
    before this setting existed; ``argparse_kwargs`` go to ``add_argument``."""
    metadata = dict(help=help, group=group, demo=demo, resume=resume, to=to, flag=flag, check=check, absent=absent)
    metadata["argparse"] = argparse_kwargs
    return attrs.field(default=default, metadata=metadata, converter=converter, kw_only=True)


def _config_defaults(cls: type, fields: list[attrs.Attribute]) -> list[attrs.Attribute]:
    """Give each setting declared without a default the default of the config field it feeds."""
    return [f if f.default is not attrs.NOTHING else f.evolve(default=_config_default(cls, f)) for f in fields]


def _config_default(cls: type, f: attrs.Attribute) -> Any:
    config = _CONFIGS.get(f.metadata["to"])
    field = config and attrs.fields_dict(config).get(f.name)
    if field is None or field.default is attrs.NOTHING:
        raise TypeError(
            f"{cls.__name__}.{f.name}: no default given, and {f.metadata['to']!r} has no config field "
            f"{f.name!r} with a default to take it from; pass setting(default, ...)"
        )
    return field.default.value if isinstance(field.default, enum.Enum) else field.default


# -- checks: (what the value must be, test) --------------------------------------------------------


def _real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_FINITE = ("a finite number", _real)
_POSITIVE = ("a finite number > 0.0", lambda v: _real(v) and v > 0)
# AdamW divides the LR by 1 - 0.9: far more than 1e30 and float32 arithmetic overflows (max 3.4e38)
_MAX_LR = ("at most 1e+30 (larger ones overflow float32 in the optimizer)", lambda v: v <= 1e30)
_SEED = ("an integer >= 0 and <= 4294967295 (numpy's seeds are 32-bit)", lambda v: _int(v) and 0 <= v < 2**32)
_NOT_NEGATIVE = ("a finite number >= 0.0", lambda v: _real(v) and v >= 0)
_LEVEL = ("a finite number > 0.0 and < 1.0", lambda v: v is None or (_real(v) and 0 < v < 1))
_COUNT = ("an integer >= 0", lambda v: _int(v) and v >= 0)


def number(kind: Callable, test: Callable[[Any], bool], expected: str) -> Callable[[str], Any]:
    """An argparse type: ``kind(text)`` when finite and ``test`` holds, else "expected ...: got ..."."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and test(value)):
            raise argparse.ArgumentTypeError(f"expected {expected}: got {text!r}")
        return value

    return parse


NON_NEGATIVE = number(int, lambda v: v >= 0, "an integer >= 0")


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.replace(",", " ").split())
    except ValueError:
        message = f"expected integers separated by commas, e.g. 128,256,512: got {text!r}"
        raise argparse.ArgumentTypeError(message) from None


RUN_GROUP = "run"  # the run's own flags; the command line adds its other run flags (--ckpt, --resume...) to it
# The groups: each shares its flags' heading and what its settings feed or may do on resume.
_model = functools.partial(setting, group="model", to="model", type=int)
_curriculum = functools.partial(setting, group="curriculum (the seed's Tuning section)")
_execution = functools.partial(
    setting, group="execution (change speed, not the run: free to change on --resume)", resume=Resume.FREE, absent=None
)
_output = functools.partial(setting, group=RUN_GROUP, resume=Resume.FREE, to=None, check=(_COUNT,), type=NON_NEGATIVE)


@attrs.frozen(field_transformer=_config_defaults)
class Settings:
    """Everything a run is made from, stored whole in its checkpoint. Only the model's sizes (ChunkLMConfig
    has no defaults for them), the derived --cutoffs and the settings that feed no config state defaults."""

    seq_len: int = _model(1024, "window length in bytes (seed: 1024)", demo=256)
    kernel_len: int = _model(128, "taps of each causal kernel (seed: 128)", demo=64)
    chunk: int = _model(16, "bytes predicted per position (seed: 16)", demo=8)
    d_model: int = _model(512, "width (seed: 512)", demo=128)
    n_layers: int = _model(6, "blocks (seed: 6)", demo=4)
    dropout: float = _model(help="dropout probability in [0, 1)", type=float)
    kernel_init: str = _model(
        help="kernel initialisation: white (default, the seed's; measured best) or smooth (band-limited to the first "
        "cutoff)",
        type=None,
        choices=["smooth", "white"],
    )
    # training
    data: tuple[str, ...] = setting(
        help="files or directories (default: this Python's standard library *.py), or named sources NAME=PATH ... "
        "that phases mix by their mix param",
        converter=tuple,
        nargs="+",
    )
    batch_size: int = setting(help="windows per micro-batch", demo=8, type=int)
    accum_steps: int = setting(help="micro-batches per optimizer step", demo=1, type=int)
    steps_per_epoch: int = setting(help="optimizer steps per epoch", demo=150, type=int)
    epochs: int = setting(help="epochs in all (may grow on --resume)", demo=12, resume=Resume.FREE, type=int)
    lr: float = setting(help="peak learning rate", demo=2e-3, check=(_POSITIVE, _MAX_LR), type=float)
    weight_decay: float = setting(help="AdamW weight decay", check=(_NOT_NEGATIVE,), type=float)
    grad_clip: float = setting(
        help="clip the gradient norm to this (0: no clipping)", check=(_NOT_NEGATIVE,), type=float
    )
    seed: int = setting(help="seed of the weights and the data order", check=(_SEED,), type=int)
    ema: float | None = setting(
        help="keep an EMA of the weights (decay in (0, 1), default 0.999)",
        check=(_LEVEL,),
        type=float,
        nargs="?",
        const=0.999,
    )
    # curriculum
    cutoffs: tuple[int, ...] | None = _curriculum(
        None,  # derived from seq_len in _make
        "cutoffs in rfft bins (default seq_len/8,/4,/2)",
        type=_int_list,
        converter=attrs.converters.optional(tuple),
    )
    min_epochs: tuple[int, ...] = _curriculum(
        help="never raise before these epochs (seed: 2,5,10)", demo=(2, 4, 6), type=_int_list, converter=tuple
    )
    plateau_window: int = _curriculum(help="optimizer steps in the plateau window (seed: 50)", demo=100, type=int)
    plateau_threshold: float = _curriculum(
        help="relative improvement below which the loss has plateaued (seed: 0.005; negative: only a loss that rises "
        "that much)",
        demo=0.01,
        check=(_FINITE,),
        type=float,
    )
    plateau_test: str = _curriculum(
        help="relative: r < threshold (the seed's rule); welch: a one-sided Welch t-test finds no improvement beyond "
        "threshold (noise-aware; try it first with chunklm replay)",
        absent="relative",
        choices=["relative", "welch"],
    )
    plateau_alpha: float | None = _curriculum(
        help="level of the Welch test (default 0.05)", absent=None, check=(_LEVEL,), type=float
    )
    preserve: bool = _curriculum(
        help="open bands at zero, leaving the function unchanged (exact with --kernel-init smooth; measured to end "
        "worse), or with noise (--no-preserve, the default: the seed's)",
        action=argparse.BooleanOptionalAction,
    )
    seq_lens: tuple[int, ...] = _curriculum(
        help="sequence-length warmup: window lengths (divisors of --seq-len) of the phases before full, one per cutoff "
        "(with --cutoffs '': phases seq_<L> under the same rule); e.g. 128,256,512",
        absent=(),
        type=_int_list,
        converter=tuple,
    )
    schedule: str = _curriculum(
        help="LR schedule: staged (the seed's stage-aligned cosine, restarted at each raise) or wsd "
        "(warmup-stable-decay: constant, then a --cooldown-fraction cooldown; no restarts)",
        absent="staged",
        choices=list(SCHEDULES),
    )
    cooldown_fraction: float = _curriculum(
        help="wsd: the cooldown's share of training (default 0.2)", absent=0.2, type=float
    )
    cooldown_shape: str = _curriculum(
        help="wsd: the cooldown's shape (default 1-sqrt, Hägele et al.'s best)",
        absent=CooldownShape.ONE_MINUS_SQRT.value,
        choices=[shape.value for shape in CooldownShape],
    )
    # execution only: how the step runs, not what it computes
    micro_batch: int | None = _execution(
        help="windows through the model at once (default: --batch-size); the global batch stays "
        "--batch-size x --accum-steps",
        type=int,
    )
    compile: bool | None = _execution(
        None,
        "torch.compile the training step (default: on for CUDA, off on CPU)",
        to=None,
        action=argparse.BooleanOptionalAction,
    )
    # the run's output: kept when not given
    log_every: int = _output(10, "print a step line every N optimizer steps (0: never)", absent=10)
    ckpt_every: int = _output(0, "also checkpoint every N optimizer steps (0: at epoch ends only)", absent=0)
    eval_windows: int = setting(demo=32, flag=None)

    @classmethod
    def fresh(cls, preset: str | None, explicit: Mapping[str, Any]) -> Settings:
        """Defaults < preset < explicit flags; checked."""
        fields = attrs.fields(cls) if preset == "demo" else ()  # "seed": the defaults
        values = {f.name: f.metadata["demo"] for f in fields if f.metadata["demo"] is not attrs.NOTHING}
        return cls._make({**values, **explicit})

    def resume(
        self, saved_preset: str | None, preset: str | None, explicit: Mapping[str, Any], free: Collection[str] = ()
    ) -> Settings:
        """These (a checkpoint's) settings with the explicit flags applied; conflicting flags are an error.
        ``free``: fixed fields this resume may change (``--allow-data-change`` frees ``data``)."""
        differing = []
        if preset is not None and preset != (saved_preset or "seed"):
            differing.append(f"--preset: checkpoint has {saved_preset or 'seed'!r}, given {preset!r}")
        for f in attrs.fields(type(self)):
            if f.name not in explicit or f.metadata["resume"] is not Resume.FIXED or f.name in free:
                continue
            saved, given = getattr(self, f.name), explicit[f.name]
            if given != saved:
                how = " (pass --allow-data-change to continue on other data)" if f.name == "data" else ""
                differing.append(f"{_flag(f)}: checkpoint has {_show(saved)}, given {_show(given)}{how}")
        if differing:
            raise SettingsError(
                "these flags differ from the checkpoint and would change the run's trajectory: "
                + "; ".join(differing)
                + ". Drop them to continue the run as it was, or start a new run with another --ckpt"
            )
        return self._make({**self.to_dict(), **explicit})

    @classmethod
    def _make(cls, values: Mapping[str, Any]) -> Settings:
        unknown = set(values) - set(attrs.fields_dict(cls))
        if unknown:
            raise SettingsError(f"unknown settings {sorted(unknown)}")
        settings = cls(**values)
        if settings.cutoffs is None:  # the seed's 128, 256, 512 at seq_len 1024
            n = settings.seq_len
            settings = attrs.evolve(settings, cutoffs=(n // 8, n // 4, n // 2))
        settings.check()
        return settings

    def check(self) -> None:
        """Each field's checks; the model's sizes (the rest derive from them); the checks across flags;
        then the train config's and the curriculum's, whose messages name the flags."""
        from engine import CurriculumError

        for f in attrs.fields(type(self)):
            value = getattr(self, f.name)
            for expected, ok in f.metadata["check"]:
                if not ok(value):
                    raise SettingsError(f"{_flag(f)} must be {expected}: got {value!r}")
        try:
            ChunkLMConfig(**self._feeding("model"))
            self._check_flags()
            self.to_config().curriculum()
        except (ConfigError, CurriculumError) as exc:
            raise SettingsError(str(exc)) from None

    def _check_flags(self) -> None:
        """What no config checks in the flags' words: the derived cutoffs, --chunk against --seq-len, and
        one --min-epochs (and --seq-lens) value per raise."""
        cutoffs = self.cutoffs or ()
        if any(isinstance(c, int) and c < 1 for c in cutoffs):
            raise SettingsError(
                f"--cutoffs {_show(cutoffs)}: each cutoff must be >= 1 bin (the default, seq_len/8,/4,/2, gives 0 "
                f"below --seq-len 8: got --seq-len {self.seq_len}); raise --seq-len or pass --cutoffs"
            )
        if self.chunk > self.seq_len:
            raise SettingsError(
                f"--chunk {self.chunk} is longer than --seq-len {self.seq_len}; lower --chunk or raise --seq-len"
            )
        if cutoffs and self.seq_lens and len(self.seq_lens) != len(cutoffs):
            raise SettingsError(
                f"--seq-lens {_show(self.seq_lens)} gives {len(self.seq_lens)} window length"
                f"{'s' if len(self.seq_lens) != 1 else ''} for the {len(cutoffs)} cutoffs of --cutoffs "
                f"{_show(cutoffs)}; give one per cutoff, or pass --cutoffs '' for phases of window lengths only"
            )
        if cutoffs or not self.seq_lens:
            raises, what = len(cutoffs), f"--cutoffs {_show(cutoffs) if cutoffs else repr('')}"
        else:
            raises, what = len(self.seq_lens), f"--seq-lens {_show(self.seq_lens)}"
        if len(self.min_epochs) != raises:
            example = ",".join(str(2 * (k + 1)) for k in range(raises)) or "''"
            default = " (the default)" if self.min_epochs == attrs.fields(type(self)).min_epochs.default else ""
            raise SettingsError(
                f"--min-epochs {_show(self.min_epochs)}{default} gives {len(self.min_epochs)} minimum epochs for the "
                f"{raises} raise{'s' if raises != 1 else ''} of {what}; give one per raise, e.g. --min-epochs {example}"
            )

    def describe_curriculum(self) -> str:
        """The curriculum these settings make, in one line (``chunklm train``'s header, ``chunklm replay``)."""
        phases = [f"cutoffs {_show(self.cutoffs, ', ')} then full of {self.to_config().model.n_bins} bins"]
        if self.seq_lens:
            phases.append(f"windows of {_show(self.seq_lens, ', ')} bytes then {self.seq_len}")
        return (
            f"{'; '.join(phases[not self.cutoffs :])}; min epochs {_show(self.min_epochs, ', ')}; "
            f"plateau window {self.plateau_window}, threshold {self.plateau_threshold}"
            + (f", Welch test at alpha {self.plateau_alpha or 0.05}" if self.plateau_test == "welch" else "")
        )

    def _feeding(self, config: str) -> dict[str, Any]:
        """The settings that feed ``config`` ("model" or "train"), by field name."""
        return {f.name: getattr(self, f.name) for f in attrs.fields(type(self)) if f.metadata["to"] == config}

    def to_config(self) -> TrainConfig:
        """The validated library configs (their errors name the field and the fix)."""
        model_config = ChunkLMConfig(**self._feeding("model"), init_cutoff=self.cutoffs[0] if self.cutoffs else None)
        return TrainConfig(model=model_config, **self._feeding("train"))

    def to_dict(self) -> dict[str, Any]:
        """Plain values (lists for tuples): what the checkpoint stores."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in attrs.asdict(self, recurse=False).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Settings:
        """A checkpoint's settings; every field must be present (older layouts are migrated first)."""
        fields = attrs.fields_dict(cls)
        absent = {n: f.metadata["absent"] for n, f in fields.items() if f.metadata["absent"] is not attrs.NOTHING}
        data = {**absent, **data}
        missing, unknown = set(fields) - set(data), set(data) - set(fields)
        if missing or unknown:
            raise SettingsError(
                f"stored settings do not match this version: missing {sorted(missing)}, unknown {sorted(unknown)}"
            )
        return cls._make(data)


def _flag(f: attrs.Attribute) -> str:
    """The field's flag (``--seq-len``), or its name when it has none."""
    return f.name if f.metadata["flag"] is None else f.metadata["flag"] or f"--{f.name.replace('_', '-')}"


def _show(value: Any, sep: str = ",") -> str:
    if isinstance(value, (tuple, list)):
        return sep.join(str(v) for v in value) or "(none)"
    return repr(value)


def add_flag(group: Any, f: attrs.Attribute) -> None:
    """The setting's flag, defaulting to 'not given' (argparse.SUPPRESS) so that a resume can tell."""
    group.add_argument(
        _flag(f), dest=f.name, default=argparse.SUPPRESS, help=f.metadata["help"] or None, **f.metadata["argparse"]
    )


def add_flags(
    parser: argparse.ArgumentParser, schema: type | None = None, skip: Collection[str] = ()
) -> dict[str, Any]:
    """One flag per setting that has one, grouped (but the groups in ``skip``), and ``--preset``.
    Returns the groups by name."""
    groups: dict[str, Any] = {}
    for f in attrs.fields(schema or Settings):
        name = f.metadata["group"]
        if f.metadata["flag"] is not None and name not in skip:
            add_flag(groups.get(name) or groups.setdefault(name, parser.add_argument_group(name)), f)
    parser.add_argument(
        "--preset",
        choices=list(PRESETS),
        default=None,
        help="a named set of the flags above; explicit flags override it",
    )
    return groups


def explicit_settings(args: argparse.Namespace, schema: type | None = None) -> dict[str, Any]:
    """The settings the user gave explicitly (flags left out are absent from the namespace)."""
    values = {f.name: getattr(args, f.name) for f in attrs.fields(schema or Settings) if hasattr(args, f.name)}
    return {name: tuple(v) if isinstance(v, list) else v for name, v in values.items()}
