"""A run's settings: one attrs class whose fields make the flags, defaults, presets and resume rules.

Each field of :class:`Settings` is declared once with :func:`setting`: its default, its help, the
group it is listed under, its value in each preset, and whether a resumed run may change it. The
command line's flags (:func:`add_flags`), the checkpoint's stored settings (:meth:`Settings.to_dict`)
and the configs the trainer takes (:meth:`Settings.to_config`) are all generated from it.

To add a setting, add one field, e.g. ``micro_batch: int | None = setting(help="windows through the
model at once", absent=None, check=..., type=int)``: it feeds the TrainConfig field of the same name
(``to="train"``, the default) and takes that field's default (a setting with no config field states
its own: ``setting(None, "help", to=None)``), gets ``--micro-batch``, is stored in every checkpoint,
is refused on resume when it differs (``resume=Resume.FREE`` to allow), and checkpoints stored before
it existed read ``absent``. A boolean flag pair is ``action=argparse.BooleanOptionalAction``.

Precedence for a fresh run: defaults < preset < flags given explicitly. On ``--resume``: the
checkpoint < flags given explicitly, and an explicit flag that would change the trajectory and
differs from the checkpoint is an error listing each differing field.
"""

from __future__ import annotations

import argparse
import enum
import math
from collections.abc import Callable, Collection, Mapping
from typing import Any

import attrs

from chunklm.config import ChunkLMConfig, ConfigError
from chunklm.train import SCHEDULES, TrainConfig
from policies import CooldownShape
from runs.errors import UsageError

__all__ = [
    "NON_NEGATIVE",
    "PRESETS",
    "RUN_GROUP",
    "Resume",
    "Settings",
    "SettingsError",
    "add_flags",
    "default_cutoffs",
    "explicit_settings",
    "number",
    "setting",
]


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
    check: Any = None,
    absent: Any = attrs.NOTHING,
    converter: Any = None,
    **argparse_kwargs: Any,
) -> Any:
    """One setting. ``default``: left out, the default of the config field it feeds (stated once, in
    the config, so the command line and the library never disagree); ``to``: the config it feeds
    ("model": ChunkLMConfig, "train": TrainConfig, None: neither); ``flag``: "" derives
    ``--name-with-dashes``, None means no flag; ``check(name, value)`` returns an error message or
    None; ``absent``: the value that reproduces the runs of checkpoints stored before this setting
    existed (a setting added later needs one); ``argparse_kwargs`` go to ``add_argument`` (type,
    nargs...)."""
    presets = {} if demo is attrs.NOTHING else {"demo": demo}
    metadata = {
        "help": help,
        "group": group,
        "presets": presets,
        "resume": resume,
        "to": to,
        "flag": flag,
        "check": check,
        "absent": absent,
        "argparse": argparse_kwargs,
    }
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


# -- checks: each returns the message's middle part, or None -------------------------------------


def _int_at_least(low: int):
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            return f"must be an integer >= {low}: got {value!r}"
        return None

    return check


def _int_in(low: int, high: int, why: str):
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            return f"must be an integer >= {low} and <= {high} ({why}): got {value!r}"
        return None

    return check


def _both(*checks):
    return lambda value: next((m for m in (c(value) for c in checks) if m), None)


def _at_most(high: float, why: str):
    def check(value: Any) -> str | None:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > high:
            return f"must be at most {high:g} ({why}): got {value!r}"
        return None

    return check


_MAX_LR = 1e30  # AdamW divides it by 1 - 0.9: far more and float32 arithmetic overflows (max 3.4e38)


def _finite(low: float | None = None, *, above: bool = False, below: float | None = None):
    def check(value: Any) -> str | None:
        if value is None:
            return None
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and (low is None or (value > low if above else value >= low)) and (below is None or value < below)
        if not ok:
            rng = "a finite number" + ("" if low is None else f" {'>' if above else '>='} {low}")
            rng += "" if below is None else f" and < {below}"
            return f"must be {rng}: got {value!r}"
        return None

    return check


def number(kind: Callable, test: Callable[[Any], bool], expected: str) -> Callable[[str], Any]:
    """An argparse type: ``kind(text)`` when finite and ``test`` holds, else "expected ...: got ..."."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}: got {text!r}") from None
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


def default_cutoffs(seq_len: int) -> tuple[int, ...]:
    """The seed's 128, 256, 512 at seq_len 1024: seq_len/8, /4, /2 bins."""
    return (seq_len // 8, seq_len // 4, seq_len // 2)


_MODEL_GROUP = "model"
_CURRICULUM = "curriculum (the seed's Tuning section)"
_EXECUTION = "execution (change speed, not the run: free to change on --resume)"
RUN_GROUP = "run"  # the run's own flags; the command line adds its other run flags (--ckpt, --resume...) to it


@attrs.frozen(field_transformer=_config_defaults)
class Settings:
    """Everything a run is made from, stored whole in its checkpoint.

    A setting that feeds a config field takes its default from the config; only the model's sizes
    (ChunkLMConfig has no defaults for them), the derived --cutoffs and the execution settings state
    their own.
    """

    # model
    seq_len: int = setting(
        1024,
        "window length in bytes (seed: 1024)",
        group=_MODEL_GROUP,
        demo=256,
        to="model",
        type=int,
    )
    kernel_len: int = setting(
        128,
        "taps of each causal kernel (seed: 128)",
        group=_MODEL_GROUP,
        demo=64,
        to="model",
        type=int,
    )
    chunk: int = setting(
        16,
        "bytes predicted per position (seed: 16)",
        group=_MODEL_GROUP,
        demo=8,
        to="model",
        type=int,
    )
    d_model: int = setting(
        512,
        "width (seed: 512)",
        group=_MODEL_GROUP,
        demo=128,
        to="model",
        type=int,
    )
    n_layers: int = setting(
        6,
        "blocks (seed: 6)",
        group=_MODEL_GROUP,
        demo=4,
        to="model",
        type=int,
    )
    dropout: float = setting(
        help="dropout probability in [0, 1)",
        group=_MODEL_GROUP,
        to="model",
        type=float,
    )
    kernel_init: str = setting(
        help="kernel initialisation: white (default, the seed's; measured best) or smooth (band-limited to the first "
        "cutoff)",
        group=_MODEL_GROUP,
        to="model",
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
    lr: float = setting(
        help="peak learning rate",
        demo=2e-3,
        type=float,
        check=_both(_finite(0.0, above=True), _at_most(_MAX_LR, "larger ones overflow float32 in the optimizer")),
    )
    weight_decay: float = setting(help="AdamW weight decay", check=_finite(0.0), type=float)
    grad_clip: float = setting(help="clip the gradient norm to this (0: no clipping)", check=_finite(0.0), type=float)
    seed: int = setting(
        help="seed of the weights and the data order",
        check=_int_in(0, 2**32 - 1, "numpy's seeds are 32-bit"),
        type=int,
    )
    ema: float | None = setting(
        help="keep an EMA of the weights (decay in (0, 1), default 0.999)",
        check=_finite(0.0, above=True, below=1.0),
        type=float,
        nargs="?",
        const=0.999,
    )
    # curriculum
    cutoffs: tuple[int, ...] | None = setting(
        None,
        "cutoffs in rfft bins (default seq_len/8,/4,/2)",  # None: derived from seq_len (default_cutoffs)
        group=_CURRICULUM,
        type=_int_list,
        converter=attrs.converters.optional(tuple),
    )
    min_epochs: tuple[int, ...] = setting(
        help="never raise before these epochs (seed: 2,5,10)",
        group=_CURRICULUM,
        demo=(2, 4, 6),
        type=_int_list,
        converter=tuple,
    )
    plateau_window: int = setting(
        help="optimizer steps in the plateau window (seed: 50)",
        group=_CURRICULUM,
        demo=100,
        check=_int_at_least(1),
        type=int,
    )
    plateau_threshold: float = setting(
        help="relative improvement below which the loss has plateaued (seed: 0.005; negative: only a loss that rises "
        "that much)",
        group=_CURRICULUM,
        demo=0.01,
        check=_finite(),
        type=float,
    )
    plateau_test: str = setting(
        help="relative: r < threshold (the seed's rule); welch: a one-sided Welch t-test finds no improvement beyond "
        "threshold (noise-aware; try it first with chunklm replay)",
        group=_CURRICULUM,
        absent="relative",
        choices=["relative", "welch"],
    )
    plateau_alpha: float | None = setting(
        help="level of the Welch test (default 0.05)",
        group=_CURRICULUM,
        absent=None,
        check=_finite(0.0, above=True, below=1.0),
        type=float,
    )
    preserve: bool = setting(
        help="open bands at zero, leaving the function unchanged (exact with --kernel-init smooth; measured to end "
        "worse), or with noise (--no-preserve, the default: the seed's)",
        group=_CURRICULUM,
        action=argparse.BooleanOptionalAction,
    )
    seq_lens: tuple[int, ...] = setting(
        help="sequence-length warmup: window lengths (divisors of --seq-len) of the phases before full, one per cutoff "
        "(with --cutoffs '': phases seq_<L> under the same rule); e.g. 128,256,512",
        group=_CURRICULUM,
        absent=(),
        type=_int_list,
        converter=tuple,
    )
    schedule: str = setting(
        help="LR schedule: staged (the seed's stage-aligned cosine, restarted at each raise) or wsd "
        "(warmup-stable-decay: constant, then a --cooldown-fraction cooldown; no restarts)",
        group=_CURRICULUM,
        absent="staged",
        choices=list(SCHEDULES),
    )
    cooldown_fraction: float = setting(
        help="wsd: the cooldown's share of training (default 0.2)",
        group=_CURRICULUM,
        absent=0.2,
        type=float,
    )
    cooldown_shape: str = setting(
        help="wsd: the cooldown's shape (default 1-sqrt, Hägele et al.'s best)",
        group=_CURRICULUM,
        absent=CooldownShape.ONE_MINUS_SQRT.value,
        choices=[shape.value for shape in CooldownShape],
    )
    # execution only: how the step runs, not what it computes (may change on resume)
    micro_batch: int | None = setting(
        help="windows through the model at once (default: --batch-size); the global batch stays "
        "--batch-size x --accum-steps",
        group=_EXECUTION,
        resume=Resume.FREE,
        absent=None,
        type=int,
    )
    compile: bool | None = setting(
        None,
        "torch.compile the training step (default: on for CUDA, off on CPU)",
        group=_EXECUTION,
        resume=Resume.FREE,
        absent=None,
        to=None,
        action=argparse.BooleanOptionalAction,
    )
    # the run's output: free to change on --resume, and kept when not given
    log_every: int = setting(
        10,
        "print a step line every N optimizer steps (0: never)",
        group=RUN_GROUP,
        resume=Resume.FREE,
        absent=10,
        to=None,
        check=_int_at_least(0),
        type=NON_NEGATIVE,
    )
    ckpt_every: int = setting(
        0,
        "also checkpoint every N optimizer steps (0: at epoch ends only)",
        group=RUN_GROUP,
        resume=Resume.FREE,
        absent=0,
        to=None,
        check=_int_at_least(0),
        type=NON_NEGATIVE,
    )
    # no flag
    eval_windows: int = setting(demo=32, flag=None)

    # -- building ----------------------------------------------------------------------------

    @classmethod
    def fresh(cls, preset: str | None, explicit: Mapping[str, Any]) -> Settings:
        """Defaults < preset < explicit flags; checked."""
        values = {f.name: f.metadata["presets"][preset] for f in attrs.fields(cls) if preset in f.metadata["presets"]}
        return cls._make({**values, **explicit})

    def resume(
        self, saved_preset: str | None, preset: str | None, explicit: Mapping[str, Any], free: Collection[str] = ()
    ) -> Settings:
        """These (a checkpoint's) settings with the explicit flags applied; conflicting flags are an error.
        ``free``: fields this resume may change though they are fixed (``--allow-data-change`` frees ``data``)."""
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
        if settings.cutoffs is None:
            settings = attrs.evolve(settings, cutoffs=default_cutoffs(settings.seq_len))
        settings.check()
        return settings

    def check(self) -> None:
        """Each field's own check; the model's sizes (ChunkLMConfig's checks: the rest derive from them);
        the checks across flags; then the train config's and the curriculum's. The configs' messages name
        the flags, so a value they check is checked there only."""
        from engine import CurriculumError

        for f in attrs.fields(type(self)):
            message = f.metadata["check"] and f.metadata["check"](getattr(self, f.name))
            if message:
                raise SettingsError(f"{_flag(f)} {message}")
        try:
            ChunkLMConfig(**self._feeding("model"))
            self._check_flags()
            self.to_config().curriculum()
        except (ConfigError, CurriculumError) as exc:
            raise SettingsError(str(exc)) from None

    def _check_flags(self) -> None:
        """What no config checks in the flags' words: the derived cutoffs, --chunk against --seq-len, and
        one --min-epochs (and --seq-lens) value per raise (the library's check names its own arguments)."""
        if self.cutoffs is not None and any(isinstance(c, int) and c < 1 for c in self.cutoffs):
            raise SettingsError(
                f"--cutoffs {_show(self.cutoffs)}: each cutoff must be >= 1 bin (the default, seq_len/8,/4,/2, "
                "gives 0 below "
                f"--seq-len 8: got --seq-len {self.seq_len}); raise --seq-len or pass --cutoffs"
            )
        if self.chunk > self.seq_len:
            raise SettingsError(
                f"--chunk {self.chunk} is longer than --seq-len {self.seq_len}; lower --chunk or raise --seq-len"
            )
        cutoffs = self.cutoffs or ()
        if cutoffs and self.seq_lens and len(self.seq_lens) != len(cutoffs):
            raise SettingsError(
                f"--seq-lens {_show(self.seq_lens)} gives {len(self.seq_lens)} window length"
                f"{'s' if len(self.seq_lens) != 1 else ''} for the "
                f"{len(cutoffs)} cutoffs of --cutoffs {_show(cutoffs)}; give one per cutoff, or pass --cutoffs '' "
                "for phases of window lengths only"
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

    def _feeding(self, config: str) -> dict[str, Any]:
        """The settings that feed ``config`` ("model" or "train"), by field name."""
        return {f.name: getattr(self, f.name) for f in attrs.fields(type(self)) if f.metadata["to"] == config}

    def to_config(self) -> TrainConfig:
        """The validated library configs (their errors name the field and the fix)."""
        cutoffs = self.cutoffs if self.cutoffs is not None else default_cutoffs(self.seq_len)
        model_config = ChunkLMConfig(**self._feeding("model"), init_cutoff=cutoffs[0] if cutoffs else None)
        return TrainConfig(model=model_config, **{**self._feeding("train"), "cutoffs": cutoffs})

    # -- storing -----------------------------------------------------------------------------

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
    if f.metadata["flag"] is None:
        return f.name
    return f.metadata["flag"] or f"--{f.name.replace('_', '-')}"


def _show(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value) or "(none)"
    return repr(value)


def add_flags(
    parser: argparse.ArgumentParser, schema: type | None = None, skip: Collection[str] = ()
) -> dict[str, Any]:
    """One flag per setting that has one, grouped (but the groups in ``skip``); all default to 'not
    given' (argparse.SUPPRESS). Returns the groups by name."""
    groups: dict[str, Any] = {}
    for f in attrs.fields(schema or Settings):
        if f.metadata["flag"] is None or f.metadata["group"] in skip:
            continue
        name = f.metadata["group"]
        group = groups.get(name) or groups.setdefault(name, parser.add_argument_group(name))
        group.add_argument(
            _flag(f), dest=f.name, default=argparse.SUPPRESS, help=f.metadata["help"] or None, **f.metadata["argparse"]
        )
    parser.add_argument(
        "--preset",
        choices=list(PRESETS),
        default=None,
        help="a named set of the flags above; explicit flags override it",
    )
    return groups


def explicit_settings(args: argparse.Namespace, schema: type | None = None) -> dict[str, Any]:
    """The settings the user gave explicitly (flags left out are absent from the namespace)."""
    out = {}
    for f in attrs.fields(schema or Settings):
        if hasattr(args, f.name):
            value = getattr(args, f.name)
            out[f.name] = tuple(value) if isinstance(value, list) else value
    return out
