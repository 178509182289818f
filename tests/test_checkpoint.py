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
    ckpt = Checkpoint(
        settings=settings, trainer={"model": {"w": torch.ones(2)}}, global_step=5, epoch=0, preset="demo", num_threads=1
    )
    ckpt.save(tmp_path / "c.pt")
    back = Checkpoint.load(tmp_path / "c.pt")
    assert back.settings == settings and back.preset == "demo" and back.global_step == 5
    assert torch.equal(back.trainer["model"]["w"], torch.ones(2))


@pytest.mark.parametrize(
    "content, fragment",
    [
        ({"a": 1}, "is not a chunklm checkpoint"),
        ({"schema_version": 99}, "newer than this version's"),
        (
            {"schema_version": 2, "settings": {}, "trainer": {"model": {}}, "global_step": 0, "epoch": 0},
            "settings this version cannot use",
        ),
        ({"schema_version": 2, "trainer": {}, "global_step": 0, "epoch": 0}, "missing @ checkpoint.settings"),
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


def test_the_data_identity_and_its_changes_round_trip_and_are_checked(tmp_path):
    """``data`` and ``data_changes`` are stored and read back; a malformed one is refused by name."""
    from chunklm.corpus import corpus_fingerprint

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("hello")
    identity = corpus_fingerprint(str(tmp_path / "d"))
    assert identity["files"] == [[0, "a.txt", 5, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"]]
    changes = [{"global_step": 3, "epoch": 0, "changes": ["1 file added (b.txt)"]}]
    ckpt = Checkpoint(
        settings=Settings.fresh("demo", {}),
        trainer={"model": {}},
        global_step=5,
        epoch=0,
        data=identity,
        data_changes=changes,
    )
    ckpt.save(tmp_path / "c.pt")
    back = Checkpoint.load(tmp_path / "c.pt")
    assert back.data == identity and back.data_changes == changes
    data = torch.load(tmp_path / "c.pt", weights_only=True)
    data["data"] = {"paths": "x"}
    torch.save(data, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="expected the identity of a corpus @ checkpoint.data"):
        Checkpoint.load(tmp_path / "c.pt")


def test_fingerprint_changes_name_what_changed(tmp_path):
    """Added, removed, resized and edited files, and another path, each named; the same data: no change."""
    from chunklm.corpus import corpus_fingerprint, fingerprint_changes

    (tmp_path / "d").mkdir()
    for name in ("a", "b", "c"):
        (tmp_path / "d" / name).write_text(name * 10)
    before = corpus_fingerprint([tmp_path / "d"])
    assert fingerprint_changes(before, corpus_fingerprint([tmp_path / "d"])) == []
    (tmp_path / "d" / "a").write_text("A" * 10)
    (tmp_path / "d" / "b").write_text("b")
    (tmp_path / "d" / "c").unlink()
    (tmp_path / "d" / "e").write_text("e")
    assert fingerprint_changes(before, corpus_fingerprint([tmp_path / "d"])) == [
        "1 file added (e)",
        "1 file removed (c)",
        "1 file changed size (b)",
        "1 file changed content, same size (a)",
    ]
    (tmp_path / "d").rename(tmp_path / "moved")
    moved = corpus_fingerprint([tmp_path / "moved"])
    assert fingerprint_changes(corpus_fingerprint([tmp_path / "moved"]), moved) == []
    assert fingerprint_changes({**moved, "paths": [str(tmp_path / "d")]}, moved) == [
        f"the data path was {tmp_path / 'd'}, now {tmp_path / 'moved'} (the same files and bytes)"
    ]


def test_a_full_trainer_state_must_be_whole(tmp_path):
    """Weights alone are a checkpoint; a state with more must have every part a resume needs."""
    settings = Settings.fresh("demo", {})
    weights = Checkpoint(settings=settings, trainer={"model": {}}, global_step=0, epoch=1)
    assert weights.missing_parts() == []
    full = {
        "model": {},
        "optimizer": {},
        "schedule": {},
        "engine": {},
        "rng": {"python": [], "numpy": {}, "torch": 0},
        "epoch_accumulator": {},
    }
    assert Checkpoint(settings=settings, trainer=full, global_step=0, epoch=0).missing_parts() == []
    partial = {k: v for k, v in full.items() if k not in ("optimizer", "rng")}
    assert Checkpoint(settings=settings, trainer=partial, global_step=0, epoch=0).missing_parts() == [
        "trainer.optimizer",
        "trainer.rng",
    ]
    with_ema = Checkpoint(
        settings=Settings.fresh("demo", {"ema": 0.99}), trainer={**full, "ema": None}, global_step=0, epoch=0
    )
    assert with_ema.missing_parts() == ["trainer.ema"]


@pytest.mark.parametrize(
    "content", [b"", b"random bytes \x00\x01", b'{"schema_version": 2}'], ids=["empty", "random", "json"]
)
def test_a_file_torch_did_not_write_is_not_called_tampered(tmp_path, content):
    """Not a zip, not a pickle: "not a checkpoint", never the safe loader's refusal of Python objects."""
    (tmp_path / "c.pt").write_bytes(content)
    with pytest.raises(CheckpointError, match="is not a checkpoint: not a file torch.save wrote") as info:
        Checkpoint.load(tmp_path / "c.pt")
    assert "tampered" not in str(info.value)
