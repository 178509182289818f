"""The checkpoint file as a type: layout, the v1 migration, safe reading, clear errors (runs.checkpoint)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from runs.checkpoint import CKPT_SCHEMA_VERSION, Checkpoint, CheckpointError
from runs.settings import Settings

V0 = Path(__file__).parent / "data" / "v0_tiny"


class _RunsCode:
    """A pickle that would run a shell command when unpickled by an unsafe loader."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("zipfile", [True, False], ids=["zip format", "legacy format"])
def test_a_checkpoint_carrying_code_is_refused_naming_the_global_and_nothing_runs(tmp_path, zipfile):
    """A crafted __reduce__ pickle, in each of torch's formats: refused, the global named, nothing executed."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"schema_version": 2, "x": _RunsCode(marker)}, path, _use_new_zipfile_serialization=zipfile)
    with pytest.raises(CheckpointError) as info:
        Checkpoint.load(path)
    message = str(info.value)
    assert "holds Python objects the safe loader refuses (global posix.system)" in message
    assert "nothing in it was executed" in message
    assert "weights_only" not in message and "truncated" not in message
    assert not marker.exists()


def test_the_first_releases_layout_is_migrated():
    """A v1 file (settings and config) reads as today's type, its settings whole."""
    saved = Checkpoint.load(V0 / "stopped.pt")
    assert (saved.global_step, saved.epoch, saved.world_size, saved.preset) == (9, 1, 1, None)
    assert saved.settings.seq_len == 32 and saved.settings.cutoffs == (4, 8, 16)
    assert saved.settings.kernel_init == "smooth" and saved.settings.preserve is True
    assert "config" not in saved.to_dict() and saved.to_dict()["schema_version"] == CKPT_SCHEMA_VERSION


def test_a_v1_file_without_later_settings_keeps_the_values_its_run_used():
    """Settings a v1 file left out take v1's values, not today's defaults (which may change)."""
    data = torch.load(V0 / "stopped.pt", weights_only=True)
    for key in ("kernel_init", "preserve"):
        del data["settings"][key]
    saved = Checkpoint.from_dict(data)
    assert saved.settings.kernel_init == "smooth" and saved.settings.preserve is True


def test_save_and_load_round_trip(tmp_path):
    """What is saved is what is loaded, every setting included."""
    settings = Settings.fresh("demo", {"seed": 3})
    ckpt = Checkpoint(settings=settings, trainer={"model": {"w": torch.ones(2)}}, global_step=5, epoch=0, preset="demo",
                      num_threads=1)
    ckpt.save(tmp_path / "c.pt")
    back = Checkpoint.load(tmp_path / "c.pt")
    assert back.settings == settings and back.preset == "demo" and back.global_step == 5
    assert torch.equal(back.trainer["model"]["w"], torch.ones(2))


@pytest.mark.parametrize(
    "content, fragment",
    [
        ({"a": 1}, "is not a chunklm checkpoint"),
        ({"schema_version": 99}, "newer than this version's"),
        ({"schema_version": 2, "settings": {}, "trainer": {"model": {}}, "global_step": 0, "epoch": 0}, "settings this version cannot use"),
        ({"schema_version": 2, "trainer": {}, "global_step": 0, "epoch": 0}, "missing or wrong settings"),
    ],
)
def test_files_that_are_not_our_checkpoints_say_what_is_wrong(tmp_path, content, fragment):
    """Foreign, newer or edited files are a CheckpointError naming the problem."""
    torch.save(content, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match=fragment):
        Checkpoint.load(tmp_path / "c.pt")


def test_a_directory_or_a_missing_file_is_not_a_checkpoint(tmp_path):
    """The messages say which, with no advice about training flags."""
    with pytest.raises(CheckpointError, match="is a directory, not a checkpoint"):
        Checkpoint.load(tmp_path)
    with pytest.raises(CheckpointError, match="no checkpoint at") as info:
        Checkpoint.load(tmp_path / "none.pt")
    assert "--resume" not in str(info.value)
