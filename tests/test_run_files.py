"""The files a run owns (runs.artifacts, runs.train_cmd): no two checkpoints share one, every outside stop
of a run saves or leaves nothing in the way, every path is checked before training."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runs import train_cmd
from runs.artifacts import RunFiles, RunLock, read_csv, resolve_run
from runs.checkpoint import load_checkpoint
from runs.cli import main
from tests.test_cli import DISK_FULL, _snapshot_all
from tests.utils import DATA, REPO, TINY, at_a_terminal, train

# One thread, as in this process (tests/conftest.py); unbuffered, so each step line comes as it is printed.
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
LONG = [*TINY, "--steps-per-epoch", "200", "--log-every", "1", "--epochs", "2"]  # no save before step 200


def refused(argv: list[str], tmp: Path, capsys) -> str:
    """``main(argv)`` exits 2 with one line and changes nothing under ``tmp``; returns the line."""
    before = _snapshot_all(tmp)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("chunklm train: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert _snapshot_all(tmp) == before
    return err


def start(tmp: Path, name: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "runs.cli", "train", *LONG, "--ckpt", str(tmp / name), *extra],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


def wait_for_step(proc: subprocess.Popen, step: int) -> None:
    for line in proc.stdout:
        if line.startswith(f"  step {step}/"):
            return
    raise AssertionError(f"the run ended before step {step}: {proc.stderr.read()}")


# -- every file a run writes is its own ------------------------------------------------------------


def test_two_checkpoints_in_one_folder_never_share_a_file(tmp_path, capsys):
    """A finished run.ckpt keeps its metrics and history when run.pt beside it starts with --overwrite."""
    assert main(["train", *TINY, "--stop-after", "2", "--ckpt", str(tmp_path / "run.ckpt")]) == 0
    other = RunFiles(tmp_path / "run.ckpt")
    kept = {p: p.read_bytes() for p in other.written}
    assert train(tmp_path, "run", "--stop-after", "3", "--overwrite") == 0
    assert {p: p.read_bytes() for p in other.written} == kept
    mine = RunFiles(tmp_path / "run.pt")
    assert not set(mine.written) & set(other.written)
    assert [int(r["step"]) for r in read_csv(mine.steps)] == [1, 2, 3]


def test_a_checkpoint_whose_files_another_checkpoint_names_is_refused(tmp_path, capsys):
    """run and run.pt would name their files alike (run.steps.csv): beside one, the other is refused, even with
    --overwrite, in one line that names the other checkpoint."""
    assert train(tmp_path, "run", "--stop-after", "2") == 0
    err = refused(["train", *TINY, "--overwrite", "--ckpt", str(tmp_path / "run")], tmp_path, capsys)
    assert "run.pt beside it" in err and "--overwrite" not in err, err


def test_resume_of_a_missing_checkpoint_beside_another_run_says_only_that(tmp_path, capsys):
    """--resume of run.pt beside a run.ckpt run: no checkpoint, nothing to resume; no --overwrite hint."""
    assert main(["train", *TINY, "--stop-after", "2", "--ckpt", str(tmp_path / "run.ckpt")]) == 0
    err = refused(["train", "--resume", "--ckpt", str(tmp_path / "run.pt")], tmp_path, capsys)
    assert "no checkpoint at" in err and "--overwrite" not in err and "never saved" not in err, err


def test_files_left_without_their_checkpoint_are_not_called_a_run_that_never_saved(tmp_path, capsys):
    """A run's metrics and history whose checkpoint is gone: --resume says so, without guessing how."""
    assert train(tmp_path, "run", "--stop-after", "2") == 0
    (tmp_path / "run.pt").unlink()
    err = refused(["train", "--resume", "--ckpt", str(tmp_path / "run.pt")], tmp_path, capsys)
    assert "never saved" not in err and "nothing to resume" in err, err
    err = refused(["train", *TINY, "--resume", "auto", "--ckpt", str(tmp_path / "run.pt")], tmp_path, capsys)
    assert "did not write" not in err and "without their checkpoint" in err, err


names = st.text(alphabet="ap.tsvcj", min_size=1, max_size=12).filter(
    lambda n: n not in (".", "..") and not n.endswith(train_cmd._SIDECARS)
)


@given(names, names)
def test_no_two_checkpoint_names_share_a_file_but_siblings(a, b):
    """Whatever two accepted checkpoint names, their runs share no file, unless each is the other's sibling
    (``run`` and ``run.pt``), which a run refuses beside it; neither names a file of the other's run."""
    fa, fb = RunFiles(Path("d", a)), RunFiles(Path("d", b))
    shared = {*fa.written, fa.plot, fa.lock} & {*fb.written, fb.plot, fb.lock}
    if a != b:
        assert not shared or (fa.sibling == fb.ckpt and fb.sibling == fa.ckpt), (a, b, shared)
        assert fb.ckpt not in {*fa.written[1:], fa.plot, fa.lock}


# -- every outside stop saves, or leaves nothing that blocks a resume ------------------------------


def test_a_closed_output_saves_at_the_next_step_and_stops_printing(tmp_path):
    """`chunklm train | head`: when stdout closes, the run saves at the next step boundary and exits 141."""
    proc = start(tmp_path, "run.pt")
    wait_for_step(proc, 3)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 128 + signal.SIGPIPE, err
    assert "Traceback" not in err and "broken pipe" in err and "checkpoint saved" in err, err
    saved = load_checkpoint(tmp_path / "run.pt")
    assert saved.global_step >= 3
    assert [int(r["step"]) for r in read_csv(RunFiles(tmp_path / "run.pt").steps)] == list(
        range(1, saved.global_step + 1)
    )


def test_a_closed_terminal_saves_like_sigterm(tmp_path):
    """The terminal closes (its writes fail) and SIGHUP comes: the run saves at the next step boundary and exits
    128 + SIGHUP, its metrics whole up to the checkpoint."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "runs.cli", "train", *LONG, "--ckpt", str(tmp_path / "run.pt")],
        cwd=REPO,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=ENV,
        preexec_fn=at_a_terminal,
    )
    os.close(slave)
    seen = b""
    while b"step 3/" not in seen:
        chunk = os.read(master, 4096)
        assert chunk, seen
        seen += chunk
    os.close(master)
    proc.send_signal(signal.SIGHUP)
    assert proc.wait(timeout=120) == 128 + signal.SIGHUP
    saved = load_checkpoint(tmp_path / "run.pt")
    assert saved.global_step >= 3
    assert [int(r["step"]) for r in read_csv(RunFiles(tmp_path / "run.pt").steps)] == list(
        range(1, saved.global_step + 1)
    )


def test_a_run_killed_before_its_first_save_leaves_nothing_in_the_way(tmp_path, capsys):
    """SIGKILL before the first checkpoint leaves no run file: --resume says there is no checkpoint (and nothing
    else), --resume auto starts afresh."""
    proc = start(tmp_path, "run.pt")
    wait_for_step(proc, 3)
    proc.kill()
    proc.communicate(timeout=60)
    assert not RunFiles(tmp_path / "run.pt").existing()
    err = refused(["train", "--resume", "--ckpt", str(tmp_path / "run.pt")], tmp_path, capsys)
    assert "no checkpoint at" in err and "drop --resume to start a fresh run" in err, err
    assert train(tmp_path, "run", "--stop-after", "1", "--resume", "auto") == 0
    assert "starting fresh" in capsys.readouterr().out


# -- every path is checked before training ---------------------------------------------------------


@pytest.mark.parametrize("length", [255, 248])
def test_a_checkpoint_name_too_long_for_its_files_is_refused_before_training(tmp_path, capsys, length):
    """A --ckpt whose run files (or their temp files) exceed the file system's name limit: one line, exit 2."""
    name = "a" * (length - 3) + ".pt"
    err = refused(["train", *TINY, "--stop-after", "1", "--ckpt", str(tmp_path / name)], tmp_path, capsys)
    assert "too long" in err and "shorter" in err, err


def test_a_checkpoint_name_that_is_not_utf8_is_refused_before_training(tmp_path, capsys):
    """A --ckpt of bytes that are not UTF-8 cannot be printed or recorded: one line, exit 2."""
    ckpt = os.path.join(str(tmp_path), os.fsdecode(b"run\xff.pt"))
    err = refused(["train", *TINY, "--stop-after", "1", "--ckpt", ckpt], tmp_path, capsys)
    assert "not valid UTF-8" in err, err


def test_a_full_disk_at_the_first_save_says_nothing_was_saved(tmp_path):
    """A fresh run whose first checkpoint cannot be written: exit 1, no "resume" (there is nothing to resume)."""
    from chunklm import ByteCorpus

    ByteCorpus(DATA, seq_len=32, chunk=4)  # the corpus cache exists before the limit applies
    proc = subprocess.run(
        [sys.executable, "-c", DISK_FULL, "train", *TINY, "--stop-after", "1", "--ckpt", str(tmp_path / "run.pt")],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert proc.returncode == 1, proc.stderr
    assert "the disk is full" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert "then resume" not in proc.stderr and "start the run again: nothing of it was saved" in proc.stderr, (
        proc.stderr
    )
    assert not [p for p in tmp_path.iterdir() if not p.name.endswith(".lock")]


# -- the lock --------------------------------------------------------------------------------------


def test_a_lock_file_with_another_name_is_refused_and_left_alone(tmp_path, capsys):
    """A hard link planted as the lock file is refused; the file it names keeps its bytes."""
    (tmp_path / "victim.txt").write_text("mine")
    os.link(tmp_path / "victim.txt", RunFiles(tmp_path / "run.pt").lock)
    err = refused(["train", *TINY, "--ckpt", str(tmp_path / "run.pt")], tmp_path, capsys)
    assert "hard links" in err, err
    assert (tmp_path / "victim.txt").read_text() == "mine"


def test_a_held_lock_refuses_a_second_run_in_one_line(tmp_path, capsys):
    """While the run is locked, another run on its checkpoint is refused; released, it runs."""
    lock = RunLock(tmp_path / "run.pt")
    lock.acquire()
    try:
        err = refused(["train", *TINY, "--stop-after", "1", "--ckpt", str(tmp_path / "run.pt")], tmp_path, capsys)
        assert f"another run is using {tmp_path / 'run.pt'}" in err, err
    finally:
        lock.release()
    assert train(tmp_path, "run", "--stop-after", "1") == 0


def test_a_run_whose_files_an_earlier_version_named_after_the_stem_is_refused_until_renamed(tmp_path, capsys):
    """An earlier version named run.ckpt's files run.steps.csv...: a resume of it, and a fresh run.pt that would
    replace them, are refused in one line giving the renames; renamed, the run resumes."""
    assert main(["train", *TINY, "--stop-after", "2", "--ckpt", str(tmp_path / "run.ckpt")]) == 0
    today, earlier = RunFiles(tmp_path / "run.ckpt"), RunFiles(tmp_path / "run.pt")
    for new, old in ((today.steps, earlier.steps), (today.epochs, earlier.epochs), (today.history, earlier.history)):
        new.rename(old)
    err = refused(["train", "--resume", "--ckpt", str(today.ckpt)], tmp_path, capsys)
    assert "run.ckpt was written by an earlier version" in err and "mv run.steps.csv run.ckpt.steps.csv" in err, err
    err = refused(["train", *TINY, "--overwrite", "--ckpt", str(earlier.ckpt)], tmp_path, capsys)
    assert "run.ckpt was written by an earlier version" in err, err
    for new, old in ((today.steps, earlier.steps), (today.epochs, earlier.epochs), (today.history, earlier.history)):
        old.rename(new)
    assert main(["train", "--resume", "--stop-after", "1", "--ckpt", str(today.ckpt)]) == 0
    assert [int(r["step"]) for r in read_csv(today.steps)] == [1, 2, 3]


def test_a_run_folder_resolves_to_its_checkpoint_whatever_its_name(tmp_path, capsys):
    """A folder holding the run of run.ckpt (files run.ckpt.*) resolves to run.ckpt, and `chunklm history` reads it."""
    assert main(["train", *TINY, "--stop-after", "2", "--ckpt", str(tmp_path / "run.ckpt")]) == 0
    assert resolve_run(tmp_path).ckpt == tmp_path / "run.ckpt"
    capsys.readouterr()
    assert main(["history", str(tmp_path)]) == 0
    assert "cutoff_4" in capsys.readouterr().out
