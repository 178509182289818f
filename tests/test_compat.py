"""Checkpoints written by earlier versions resume exactly (tests/data/README.md says how they were made)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from runs.checkpoint import load_checkpoint
from tests.test_cli import assert_same_run, resume

V0 = Path(__file__).parent / "data" / "v0_tiny"


@pytest.fixture
def v0_run(tmp_path: Path) -> Path:
    for f in V0.iterdir():
        shutil.copy(f, tmp_path / f.name)
    return tmp_path


def test_v0_checkpoint_resumes_to_the_uninterrupted_v0_run(v0_run: Path) -> None:
    """A mid-epoch checkpoint of the first release continues, with today's code, into that release's own full run."""
    assert resume(v0_run, "stopped") == 0
    assert_same_run(v0_run, "full", "stopped")


def test_v0_checkpoint_keeps_its_own_settings_when_defaults_change(v0_run: Path) -> None:
    """The v0 run used smooth kernels and exact raises, the defaults then; a resume keeps them, not today's."""
    assert resume(v0_run, "stopped") == 0
    resumed = load_checkpoint(v0_run / "stopped.pt")
    assert (resumed["settings"]["kernel_init"], resumed["settings"]["preserve"]) == ("smooth", True)
    assert (resumed["config"]["model"]["kernel_init"], resumed["config"]["preserve"]) == ("smooth", True)
    raises = [a for r in assert_same_run(v0_run, "full", "stopped") for a in r.actions if a.action.startswith("SetCutoff(")]
    assert raises and all(a.action in ("SetCutoff(8)", "SetCutoff(16)", "SetCutoff(None)") for a in raises)  # preserve=True
