"""The one settings schema: flags, defaults, presets, resume rules and configs from one field each (runs.settings)."""

from __future__ import annotations

import argparse

import attrs
import pytest

from chunklm.config import ChunkLMConfig
from chunklm.train import TrainConfig
from runs.settings import Resume, Settings, SettingsError, add_flags, explicit_settings, setting


def parse(*argv: str, schema: type = Settings) -> dict:
    parser = argparse.ArgumentParser()
    add_flags(parser, schema)
    return explicit_settings(parser.parse_args(list(argv)), schema)


def test_flags_are_generated_from_the_schema_and_default_to_not_given():
    """Each setting with a flag parses to its field; flags left out are absent (so a resume can tell)."""
    assert parse() == {}
    got = parse(
        "--seq-len", "64", "--cutoffs", "8,16", "--data", "a", "b", "--no-preserve", "--ema", "--kernel-init", "white"
    )
    assert got == {
        "seq_len": 64,
        "cutoffs": (8, 16),
        "data": ("a", "b"),
        "preserve": False,
        "ema": 0.999,
        "kernel_init": "white",
    }
    with pytest.raises(SystemExit):
        parse("--eval-windows", "3")  # a setting without a flag


def test_defaults_are_the_library_configs_own():
    """Where TrainConfig or ChunkLMConfig has a default, the command line's is the same value (one place)."""
    settings = Settings.fresh(None, {})
    train, model = attrs.fields_dict(TrainConfig), attrs.fields_dict(ChunkLMConfig)
    for name in (
        "batch_size",
        "accum_steps",
        "lr",
        "grad_clip",
        "seed",
        "ema",
        "min_epochs",
        "preserve",
        "eval_windows",
    ):
        assert getattr(settings, name) == train[name].default, name
    assert settings.kernel_init == model["kernel_init"].default.value


def test_presets_and_explicit_flags():
    """Defaults < preset < explicit flags; the default cutoffs follow seq_len."""
    demo = Settings.fresh("demo", {"lr": 0.01})
    assert (demo.seq_len, demo.d_model, demo.lr, demo.cutoffs) == (256, 128, 0.01, (32, 64, 128))
    assert Settings.fresh(None, {}).cutoffs == (128, 256, 512)
    assert demo.to_config().model.init_cutoff == 32


def test_resume_refuses_fixed_settings_that_differ_and_allows_free_ones():
    """An explicit trajectory setting that differs is listed; equal ones and --epochs pass."""
    saved = Settings.fresh("demo", {})
    assert saved.resume("demo", None, {"epochs": 40, "lr": saved.lr}).epochs == 40
    with pytest.raises(
        SettingsError, match=r"--seq-len: checkpoint has 256, given 64; --lr: checkpoint has 0.002, given 0.1"
    ):
        saved.resume("demo", None, {"lr": 0.1, "seq_len": 64})
    with pytest.raises(SettingsError, match="--preset: checkpoint has 'demo', given 'seed'"):
        saved.resume("demo", "seed", {})


@attrs.frozen
class _WithMicroBatch(Settings):
    """A setting added later: one field."""

    micro_batch: int | None = setting(None, "windows through the model at once", to=None, absent=None, type=int)


def test_adding_a_setting_is_one_field():
    """A new field gets its flag, default, stored value, resume rule, and a value for older checkpoints."""
    assert parse("--micro-batch", "2", schema=_WithMicroBatch) == {"micro_batch": 2}
    fresh = _WithMicroBatch.fresh(None, {"micro_batch": 2})
    assert fresh.to_dict()["micro_batch"] == 2
    older = Settings.fresh(None, {}).to_dict()  # stored before the setting existed
    assert _WithMicroBatch.from_dict(older).micro_batch is None
    with pytest.raises(SettingsError, match="--micro-batch: checkpoint has 2, given 4"):
        fresh.resume(None, None, {"micro_batch": 4})
    assert attrs.fields_dict(_WithMicroBatch)["micro_batch"].metadata["resume"] is Resume.FIXED


@pytest.mark.parametrize(
    "values, message",
    [
        ({"seed": -1}, "--seed must be an integer >= 0"),
        ({"grad_clip": float("nan")}, "--grad-clip must be a finite number >= 0"),
        ({"ema": 1.0}, "--ema must be a finite number > 0.0 and < 1.0"),
        ({"chunk": 2000}, "--chunk 2000 is longer than --seq-len 1024"),
        ({"cutoffs": (8, 4, 12)}, "strictly increasing"),
        ({"seq_len": 8, "kernel_len": 16, "chunk": 4}, "kernel_len must be <= seq_len"),
        ({"seq_len": 0}, "seq_len=0; pass a positive integer to --seq-len"),
        ({"dropout": 1.0}, "dropout must be a float in \\[0, 1\\).*--dropout"),
        ({"batch_size": 0}, "batch_size=0; pass a positive integer to --batch-size"),
        ({"epochs": 1.5}, "epochs=1.5; pass a positive integer to --epochs"),
        ({"micro_batch": 0}, "micro_batch=0; pass a positive integer to --micro-batch"),
        (
            {"batch_size": 2, "accum_steps": 3, "micro_batch": 7},
            "got --micro-batch 7, --batch-size 2 x --accum-steps 3",
        ),
        ({"cooldown_fraction": 2.0}, "cooldown_fraction must be in \\(0, 1\\]: got 2.0; e.g. --cooldown-fraction"),
    ],
)
def test_bad_values_name_the_flag(values, message):
    """Each check's message names the flag and what came."""
    with pytest.raises(SettingsError, match=message):
        Settings.fresh(None, values)


def test_data_may_differ_on_resume_only_when_freed():
    """--data is a trajectory setting: another one is refused naming --allow-data-change, unless freed."""
    saved = Settings.fresh(None, {"data": ("/old",)})
    with pytest.raises(SettingsError, match=r"--data: checkpoint has /old, given /new \(pass --allow-data-change"):
        saved.resume(None, None, {"data": ("/new",)})
    assert saved.resume(None, None, {"data": ("/new",)}, free=("data",)).data == ("/new",)


def test_the_run_output_flags_are_stored_and_kept_on_resume():
    """--log-every and --ckpt-every come from the checkpoint when not given, and may change when given."""
    saved = Settings.from_dict(Settings.fresh(None, {"log_every": 0, "ckpt_every": 7}).to_dict())
    assert (saved.log_every, saved.ckpt_every) == (0, 7)
    assert saved.resume(None, None, {}).log_every == 0
    assert saved.resume(None, None, {"log_every": 5}).log_every == 5
    assert parse("--log-every", "0") == {"log_every": 0}
