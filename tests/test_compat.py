"""Checkpoints written by earlier versions resume exactly (tests/data/README.md says how they were made)."""

from __future__ import annotations

import shutil
from pathlib import Path

import attrs
import pytest

from engine import History
from runs.artifacts import RunFiles
from runs.checkpoint import load_checkpoint
from tests.test_cli import assert_same_run, resume

V0 = Path(__file__).parent / "data" / "v0_tiny"


@pytest.fixture
def v0_run(tmp_path: Path) -> Path:
    for f in V0.iterdir():
        shutil.copy(f, tmp_path / f.name)
    return tmp_path


def resume_v0(v0_run: Path) -> History:
    """Resume the v0 checkpoint; compare its run with v0's own full run and return the history."""
    assert resume(v0_run, "stopped") == 0
    # v0 recorded no deciding guard; the transitions the resumed run adds carry one. Compare the rest.
    files = RunFiles(v0_run / "stopped.pt")
    history = files.read_history()
    assert [r.decision is None for r in history] == [True, False, False]
    files.write_history(History([attrs.evolve(r, decision=None) for r in history]))
    return assert_same_run(v0_run, "full", "stopped", csv_digits=6)  # v0 wrote 6 significant digits


def test_v0_checkpoint_resumes_to_the_uninterrupted_v0_run(v0_run: Path) -> None:
    """A mid-epoch checkpoint of the first release continues, with today's code, into that release's own full run."""
    resume_v0(v0_run)


def test_v0_checkpoint_keeps_its_own_settings_when_defaults_change(v0_run: Path) -> None:
    """The v0 run used smooth kernels and exact raises, the defaults then; a resume keeps them, not today's."""
    history = resume_v0(v0_run)
    settings = load_checkpoint(v0_run / "stopped.pt").settings
    assert (settings.kernel_init, settings.preserve) == ("smooth", True)
    config = settings.to_config()
    assert (config.model.kernel_init.value, config.preserve) == ("smooth", True)
    raises = [a for r in history for a in r.actions if a.action.startswith("SetCutoff(")]
    assert raises and all(a.action in ("SetCutoff(8)", "SetCutoff(16)", "SetCutoff(None)") for a in raises)  # preserve=True
