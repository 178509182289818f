"""`chunklm train` end to end on tiny configs: exact resume, flag rules, bad input, faults (runs.cli)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from runs.artifacts import RunFiles, read_csv
from runs.checkpoint import load_checkpoint
from runs.cli import main

DATA = str(Path(json.__file__).parent)  # the stdlib json package: ten real source files
REPO = Path(__file__).resolve().parent.parent

# Tiny model, two micro-batches per step; threshold 1.0 makes every full window a plateau, so the
# curriculum raises at each allowed epoch boundary and the restored engine state is exercised.
TINY = [
    "--data", DATA, "--seq-len", "32", "--kernel-len", "8", "--chunk", "4", "--d-model", "16", "--n-layers", "1",
    "--batch-size", "2", "--accum-steps", "2", "--steps-per-epoch", "6", "--cutoffs", "4,8,16",
    "--min-epochs", "1,1,2", "--plateau-window", "4", "--plateau-threshold", "1.0", "--log-every", "0",
]


def train(tmp: Path, name: str, *extra: str, epochs: int | None = 3) -> int:
    args = ["train", *TINY, "--ckpt", str(tmp / f"{name}.pt"), *extra]
    if epochs is not None:
        args += ["--epochs", str(epochs)]
    return main(args)


def resume(tmp: Path, name: str, *extra: str) -> int:
    return main(["train", "--ckpt", str(tmp / f"{name}.pt"), "--resume", *extra])


def assert_same_run(tmp: Path, a: str, b: str) -> None:
    """Bit-identical weights and optimizer state; same per-step losses and LRs; same history."""
    ca, cb = load_checkpoint(tmp / f"{a}.pt"), load_checkpoint(tmp / f"{b}.pt")
    ta, tb = ca["trainer"], cb["trainer"]
    assert ta["model"].keys() == tb["model"].keys()
    for key in ta["model"]:
        assert torch.equal(ta["model"][key], tb["model"][key]), key
    for pa, pb in zip(ta["optimizer"]["state"].values(), tb["optimizer"]["state"].values()):
        for key in pa:
            assert torch.equal(pa[key], pb[key]), key
    assert ta["schedule"] == tb["schedule"]
    fa, fb = RunFiles(tmp / f"{a}.pt"), RunFiles(tmp / f"{b}.pt")
    steps_a, steps_b = read_csv(fa.steps), read_csv(fb.steps)
    assert len(steps_a) == ca["global_step"] and steps_a == steps_b
    assert read_csv(fa.epochs) == read_csv(fb.epochs)
    ha, hb = fa.read_history(), fb.read_history()
    assert [r.comparable() for r in ha] == [r.comparable() for r in hb]
    return ha


def test_longer_run_equals_extended_run(tmp_path, capsys):
    """(a) --epochs 3 equals --epochs 2 then --resume --epochs 3."""
    assert train(tmp_path, "whole", epochs=3) == 0
    assert train(tmp_path, "split", epochs=2) == 0
    assert resume(tmp_path, "split", "--epochs", "3") == 0
    history = assert_same_run(tmp_path, "whole", "split")
    assert [(r.dest, r.epoch) for r in history] == [("cutoff_4", 0), ("cutoff_8", 1), ("cutoff_16", 2), ("full", 3)]


def test_stop_after_mid_epoch_then_bare_resume_equals_uninterrupted(tmp_path, capsys):
    """(b) --stop-after in mid-epoch, then `--ckpt X --resume` alone, equals the uninterrupted run."""
    assert train(tmp_path, "whole", epochs=4) == 0
    assert train(tmp_path, "split", "--stop-after", "9", epochs=4) == 0
    out = capsys.readouterr().out
    assert "stopped after 9 steps at global step 9" in out and "resume with: chunklm train --ckpt" in out
    data = load_checkpoint(tmp_path / "split.pt")
    assert (data["global_step"], data["trainer"]["engine"]["clock"]["step_in_epoch"]) == (9, 3)
    assert resume(tmp_path, "split") == 0
    out = capsys.readouterr().out
    assert "resumed" in out and "epoch 1 step 3/6" in out
    history = assert_same_run(tmp_path, "whole", "split")
    assert [r.dest for r in history] == ["cutoff_4", "cutoff_8", "cutoff_16", "full"]


def test_sigterm_stops_at_a_step_boundary_and_resumes_exactly(tmp_path):
    """(c) SIGTERM while training: checkpoint, non-zero exit with the resume command; resuming equals uninterrupted."""
    args = [*TINY, "--steps-per-epoch", "60", "--log-every", "1"]
    assert main(["train", *args, "--epochs", "2", "--ckpt", str(tmp_path / "whole.pt")]) == 0
    # One thread, as in this process (tests/conftest.py): float results depend on the thread count.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "runs.cli", "train", *args, "--epochs", "2", "--ckpt", str(tmp_path / "split.pt")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("  step 5/60"):
            proc.send_signal(signal.SIGTERM)
            break
    rest, _ = proc.communicate(timeout=120)
    out = "".join(lines) + rest
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "stopped by SIGTERM" in out and "resume with: chunklm train --ckpt" in out
    stopped_at = load_checkpoint(tmp_path / "split.pt")["global_step"]
    assert 5 <= stopped_at < 120
    assert main(["train", "--ckpt", str(tmp_path / "split.pt"), "--resume", "--log-every", "0"]) == 0
    assert_same_run(tmp_path, "whole", "split")


def test_conflicting_explicit_flags_on_resume_are_listed(tmp_path, capsys):
    """An explicit trajectory flag differing from the checkpoint fails with exit 2, listing each field."""
    assert train(tmp_path, "run", "--stop-after", "2") == 0
    before = (tmp_path / "run.pt").read_bytes()
    assert resume(tmp_path, "run", "--lr", "0.1", "--seq-len", "64", "--batch-size", "2") == 2
    err = capsys.readouterr().err
    assert "--lr: checkpoint has 0.0002, given 0.1" in err and "--seq-len: checkpoint has 32, given 64" in err
    assert "--batch-size" not in err  # equal to the checkpoint's: allowed
    assert (tmp_path / "run.pt").read_bytes() == before


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--data", "/no/such/dir"], "--data /no/such/dir: no such file or directory"),
        (["--seq-len", "8", "--kernel-len", "16"], "kernel_len must be <= seq_len"),
        (["--cutoffs", "4,8,40"], "40"),
        (["--cutoffs", "8,4,12"], "strictly increasing"),
    ],
)
def test_bad_input_exits_2_with_a_message(tmp_path, capsys, extra, message):
    """Bad flags give exit status 2 and one message, never a traceback."""
    assert train(tmp_path, "bad", *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("chunklm train: error:") and message in err and "Traceback" not in err


def test_checkpoint_in_missing_directory_and_resume_without_checkpoint(tmp_path, capsys):
    """A --ckpt in a missing directory, and --resume with no checkpoint, are clear exit-2 errors."""
    assert main(["train", *TINY, "--ckpt", str(tmp_path / "nope" / "x.pt")]) == 2
    assert "does not exist; create it" in capsys.readouterr().err
    assert resume(tmp_path, "absent") == 2
    assert "--resume: no checkpoint at" in capsys.readouterr().err


def test_corrupt_checkpoint_fails_clearly_and_is_not_overwritten(tmp_path, capsys):
    """A truncated checkpoint fails with exit 2 and a clear message, and the file is left as it was."""
    assert train(tmp_path, "run", "--stop-after", "2") == 0
    path = tmp_path / "run.pt"
    truncated = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(truncated)
    assert resume(tmp_path, "run") == 2
    assert "truncated or corrupt" in capsys.readouterr().err
    assert path.read_bytes() == truncated


def test_metrics_are_cut_back_to_the_checkpoint_on_resume(tmp_path, capsys):
    """Rows written after the last checkpoint (a crash) are dropped on resume: no step appears twice."""
    assert train(tmp_path, "run", "--stop-after", "4", epochs=2) == 0
    files = RunFiles(tmp_path / "run.pt")
    with open(files.steps, "a") as f:  # as if the run wrote steps 5 and 6 and then died
        f.write("5,0,5,9.9,0.1,4,cutoff_4\n6,0,6,9.9,0.1,4,cutoff_4\n")
    assert resume(tmp_path, "run") == 0
    steps = [int(r["step"]) for r in read_csv(files.steps)]
    assert steps == list(range(1, 13))
    assert "9.9" not in files.steps.read_text()


def test_nonfinite_loss_skips_updates_then_stops_keeping_the_checkpoint(tmp_path, capsys, monkeypatch):
    """NaN losses are not applied; three in a row stop the run (exit 1), the last good checkpoint kept."""
    import chunklm.train as train_mod

    assert train(tmp_path, "run", "--stop-after", "3") == 0
    real = train_mod.Trainer._micro_loss

    def poisoned(self, windows):
        loss = real(self, windows)
        return loss * float("nan") if self.clock.global_step >= 4 else loss

    monkeypatch.setattr(train_mod.Trainer, "_micro_loss", poisoned)
    assert resume(tmp_path, "run", "--ckpt-every", "1") == 1
    captured = capsys.readouterr()
    assert "non-finite for 3 optimizer steps in a row" in captured.err
    assert "non-finite loss (nan), update skipped" in captured.out
    data = load_checkpoint(tmp_path / "run.pt")
    assert data["global_step"] == 4  # step 4 was good and checkpointed; 5-7 were skipped, not saved


def test_sigkill_during_save_leaves_the_previous_checkpoint(tmp_path):
    """A process killed (SIGKILL) while saving never leaves a half-written checkpoint behind."""
    path = tmp_path / "ckpt.pt"
    code = (
        "import sys, torch\nfrom runs.checkpoint import atomic_save\n"
        "big = torch.randn(4_000_000)\n"
        "atomic_save({'n': 0, 'big': big}, sys.argv[1])\nprint('ready', flush=True)\n"
        "i = 0\nwhile True:\n    i += 1\n    atomic_save({'n': i, 'big': big}, sys.argv[1])\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.7)
    proc.kill()
    proc.wait()
    data = torch.load(path, weights_only=True)
    assert data["big"].shape == (4_000_000,) and isinstance(data["n"], int)


def test_subcommands_read_the_run(tmp_path, capsys):
    """history, plot, diagram and generate work on a finished run, given its directory or checkpoint."""
    assert train(tmp_path, "run", epochs=2) == 0
    capsys.readouterr()
    assert main(["history", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "#0  start in cutoff_4  at step 0 (epoch 0)" in out and "action SetCutoff(4): cutoff=[" in out
    assert "cutoff_4 -> cutoff_8  at step 12 (epoch 1" in out or "cutoff_4 -> cutoff_8  at step 6 (epoch 1" in out
    assert "Plateau(" in out and "older_mean" in out and "RestartLR()" in out
    assert main(["history", str(tmp_path / "run.pt"), "--format", "json"]) == 0
    start, first = json.loads(capsys.readouterr().out)[:2]
    assert (start["source"], start["dest"], start["point"]) == (None, "cutoff_4", "start") and first["dest"] == "cutoff_8"
    assert main(["plot", str(tmp_path)]) == 0
    png = RunFiles(tmp_path / "run.pt").plot
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    assert main(["diagram", "--run", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "cutoff_4 --> cutoff_8" in out and "class cutoff_16 current" in out
    assert main(["diagram", "--preset", "seed", "--format", "dot"]) == 0
    assert "cutoff_128 -> cutoff_256" in capsys.readouterr().out
    assert main(["generate", "--ckpt", str(tmp_path / "run.pt"), "--prompt", "import ", "-n", "12"]) == 0
    first = capsys.readouterr().out
    assert main(["generate", "--ckpt", str(tmp_path / "run.pt"), "--prompt", "import ", "-n", "12"]) == 0
    assert capsys.readouterr().out == first and first.startswith("import ")


def test_seed_lines_are_printed(tmp_path, capsys):
    """The seed's epoch, raise and step lines appear in its format."""
    assert main(["train", *TINY[:-2], "--log-every", "3", "--epochs", "2", "--ckpt", str(tmp_path / "r.pt")]) == 0
    out = capsys.readouterr().out
    assert "Epoch 0 avg_loss=" in out and " cutoff=4/17\n" in out
    assert "Epoch 1 🚀 CUTOFF RAISED: 4 -> 8 (loss plateaued, opening frequency gates)" in out
    lines = [l for l in out.splitlines() if l.startswith("  step 3/6 ")]
    assert lines and all(" lr=" in l and "e-0" in l and l.endswith(("cutoff=4", "cutoff=8")) for l in lines)
    assert "global batch = 2 x 2 accum x 1 process = 4 windows/step" in out


def test_resume_with_another_thread_count_says_it_is_not_bit_identical(tmp_path, capsys):
    """The checkpoint records the CPU thread count; resuming with another one prints a note."""
    assert train(tmp_path, "run", "--stop-after", "2") == 0
    assert load_checkpoint(tmp_path / "run.pt")["num_threads"] == torch.get_num_threads() == 1
    torch.set_num_threads(2)  # tests/conftest.py restores it
    assert resume(tmp_path, "run", "--stop-after", "1") == 0
    assert "this run used 1 CPU threads and this process has 2" in capsys.readouterr().out


def test_checkpoint_without_engine_state_resumes_in_the_phase_its_epochs_imply(tmp_path, capsys):
    """Weights only (an older checkpoint): resume at its epoch, in the phase the epoch implies, no lower cutoff."""
    assert main(["train", *TINY, "--min-epochs", "1,2,3", "--plateau-threshold", "-1", "--epochs", "2",
                 "--ckpt", str(tmp_path / "run.pt")]) == 0  # threshold -1: never plateaus, stays at cutoff 4
    data = load_checkpoint(tmp_path / "run.pt")
    assert data["trainer"]["engine"]["phase"] == "cutoff_4" and data["epoch"] == 2
    data["trainer"] = {"model": data["trainer"]["model"]}  # weights only
    torch.save(data, tmp_path / "run.pt")
    capsys.readouterr()
    assert resume(tmp_path, "run", "--epochs", "3") == 0
    resumed = load_checkpoint(tmp_path / "run.pt")
    assert resumed["trainer"]["engine"]["phase"] == "cutoff_16"  # min epochs 1, 2 reached at epoch 2
    assert resumed["trainer"]["model"]["spectral_cutoff"].item() == 16
    assert resumed["global_step"] == 18
