"""`chunklm train` end to end on tiny configs: exact resume, flag rules, bad input, faults (runs.cli)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import attrs
import pytest
import torch

import runs.artifacts
import runs.train_cmd
from runs.artifacts import RunFiles, read_csv
from runs.checkpoint import load_checkpoint
from runs.cli import main
from tests.utils import DATA, REPO, TINY, assert_same_run, at_a_terminal, resume, train


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
    assert (data.global_step, data.trainer["engine"]["clock"]["step_in_epoch"]) == (9, 3)
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
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
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
    stopped_at = load_checkpoint(tmp_path / "split.pt").global_step
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
        # counts that do not match, in the flags' words (TINY has --min-epochs 1,1,2)
        (["--cutoffs", "4"], "--min-epochs 1,1,2 gives 3 minimum epochs for the 1 raise of --cutoffs 4; give one"),
        (
            ["--cutoffs", "4,8", "--seq-lens", "8"],
            "--seq-lens 8 gives 1 window length for the 2 cutoffs of --cutoffs 4,8",
        ),
        (["--cutoffs", ""], "--min-epochs 1,1,2 gives 3 minimum epochs for the 0 raises of --cutoffs ''"),
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


def test_nonfinite_loss_skips_updates_then_stops_keeping_the_checkpoint(tmp_path, capsys):
    """NaN losses are not applied; three in a row stop the run (exit 1), the last good checkpoint kept."""
    # An LR of 1e30 makes the weights non-finite after the first step, so every later loss is NaN.
    assert train(tmp_path, "run", "--lr", "1e30", "--ckpt-every", "1") == 1
    captured = capsys.readouterr()
    assert "non-finite for 3 optimizer steps in a row" in captured.err and "Traceback" not in captured.err
    assert "non-finite loss (nan), update skipped" in captured.out
    data = load_checkpoint(tmp_path / "run.pt")
    assert data.global_step == 1  # step 1 was good and checkpointed; 2-4 were skipped, not saved


def test_sigkill_during_save_leaves_the_previous_checkpoint(tmp_path):
    """A process killed (SIGKILL) while saving never leaves a half-written checkpoint behind."""
    path = tmp_path / "ckpt.pt"
    code = (
        "import sys, torch\nfrom runs.artifacts import atomic_write\n"
        "big = torch.randn(4_000_000)\n"
        "def save(obj): atomic_write(sys.argv[1], lambda f: torch.save(obj, f))\n"
        "save({'n': 0, 'big': big})\nprint('ready', flush=True)\n"
        "i = 0\nwhile True:\n    i += 1\n    save({'n': i, 'big': big})\n"
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
    assert (
        "#0  start in cutoff_4  at step 0 (epoch 0)" in out and "action SetCutoff(4, preserve=False): cutoff=[" in out
    )
    assert "cutoff_4 -> cutoff_8  at step 12 (epoch 1" in out or "cutoff_4 -> cutoff_8  at step 6 (epoch 1" in out
    assert "Plateau(" in out and "older_mean" in out and "RestartLR()" in out
    assert main(["history", str(tmp_path / "run.pt"), "--format", "json"]) == 0
    start, first = json.loads(capsys.readouterr().out)[:2]
    assert (start["source"], start["dest"], start["point"]) == (None, "cutoff_4", "start") and first[
        "dest"
    ] == "cutoff_8"
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
    lines = [line for line in out.splitlines() if line.startswith("  step 3/6 ")]
    assert lines and all(" lr=" in line and "e-0" in line and line.endswith(("cutoff=4", "cutoff=8")) for line in lines)
    assert "global batch = 2 x 2 accum x 1 process = 4 windows/step" in out


def test_resume_with_another_thread_count_says_it_is_not_bit_identical(tmp_path, capsys):
    """The checkpoint records the CPU thread count; resuming with another one prints a note."""
    assert train(tmp_path, "run", "--stop-after", "2") == 0
    assert load_checkpoint(tmp_path / "run.pt").num_threads == torch.get_num_threads() == 1
    torch.set_num_threads(2)  # tests/conftest.py restores it
    assert resume(tmp_path, "run", "--stop-after", "1") == 0
    assert "this run used 1 CPU threads and this process has 2" in capsys.readouterr().out


def test_checkpoint_without_engine_state_resumes_in_the_phase_its_epochs_imply(tmp_path, capsys):
    """Weights only (an older checkpoint): resume at its epoch, in the phase the epoch implies, no lower cutoff."""
    assert (
        main(
            [
                "train",
                *TINY,
                "--min-epochs",
                "1,2,3",
                "--plateau-threshold",
                "-1",
                "--epochs",
                "2",
                "--ckpt",
                str(tmp_path / "run.pt"),
            ]
        )
        == 0
    )  # threshold -1: never plateaus, stays at cutoff 4
    data = load_checkpoint(tmp_path / "run.pt")
    assert data.engine_phase == "cutoff_4" and data.epoch == 2
    attrs.evolve(data, trainer={"model": data.trainer["model"]}).save(tmp_path / "run.pt")  # weights only
    capsys.readouterr()
    assert resume(tmp_path, "run", "--epochs", "3") == 0
    resumed = load_checkpoint(tmp_path / "run.pt")
    assert resumed.engine_phase == "cutoff_16"  # min epochs 1, 2 reached at epoch 2
    assert resumed.trainer["model"]["spectral_cutoff"].item() == 16
    assert resumed.global_step == 18


# -- a user having a bad day: every mistake is one line, exit 2 (bad input) or 1 (run time) ----------


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """A tiny run stopped after 2 steps, to copy and damage."""
    tmp = tmp_path_factory.mktemp("base")
    assert train(tmp, "run", "--stop-after", "2") == 0
    return tmp


def _tampered(base: Path, tmp: Path, edit) -> str:
    data = torch.load(base / "run.pt", weights_only=True)
    edit(data)
    torch.save(data, tmp / "run.pt")
    return str(tmp / "run.pt")


def _corrupt_history(base, tmp):
    (tmp / "run.history.json").write_text('[{"source": "a", ')
    return ["history", str(tmp / "run.pt")]


def _garbage_csv(base, tmp):
    (tmp / "run.steps.csv").write_text("step,loss\nnot-a-number,zzz\n")
    return ["plot", str(tmp / "run.pt")]


def _fifo(base, tmp):
    os.mkfifo(tmp / "fifo")
    return ["train", *TINY, "--data", str(tmp / "fifo"), "--ckpt", str(tmp / "x.pt")]


def _five_bytes(base, tmp):
    (tmp / "tiny.txt").write_bytes(b"abcde")
    return ["train", *TINY, "--data", str(tmp / "tiny.txt"), "--ckpt", str(tmp / "x.pt")]


def _edit(fn):
    return lambda base, tmp: ["train", "--resume", "--ckpt", _tampered(base, tmp, fn)]


def _set_model_weight(d):
    d["trainer"]["model"]["embed.weight"] = torch.zeros(3, 3)


def _nan_weight(d):
    d["trainer"]["model"]["embed.weight"] = torch.full_like(d["trainer"]["model"]["embed.weight"], float("nan"))


def _history_text(command: str, text: str):
    def make(base, tmp):
        (tmp / "run.history.json").write_text(text)
        return [command, str(tmp / "run.pt")]

    return make


def _folder(name: str, command: list[str]):
    """``name`` beside the checkpoint is a folder, then ``command`` (RUN: the checkpoint)."""

    def make(base, tmp):
        path = tmp / name
        path.unlink()
        path.mkdir()
        return [str(tmp / "run.pt") if a == "RUN" else a for a in command]

    return make


def _not_a_checkpoint(content: bytes):
    def make(base, tmp):
        (tmp / "x.pt").write_bytes(content)
        return ["generate", "--ckpt", str(tmp / "x.pt")]

    return make


def _symlinked_lock(base, tmp):
    (tmp / "victim.txt").write_text("mine")
    (tmp / ".fresh.lock").symlink_to(tmp / "victim.txt")
    return ["train", *TINY, "--ckpt", str(tmp / "fresh.pt")]


def _csvs_without_checkpoint(base, tmp):
    (tmp / "run.pt").unlink()
    return ["train", "--resume", "--ckpt", str(tmp / "run.pt")]


def _auto_csvs_without_checkpoint(base, tmp):
    (tmp / "run.pt").unlink()
    return ["train", *TINY, "--resume", "auto", "--ckpt", str(tmp / "run.pt")]


def _auto_foreign_file(base, tmp):
    (tmp / "x.pt").write_bytes(b"my notes, not a checkpoint")
    return ["train", *TINY, "--resume", "auto", "--ckpt", str(tmp / "x.pt")]


def _auto_refused_file(base, tmp):
    """A fresh --resume auto whose curriculum file the schedule cannot run (StartCooldown under staged)."""
    from engine import save_curriculum
    from policies import adaptive_cooldown
    from tests.utils import TINY_MODEL

    (tmp / "curricula").mkdir()
    path = save_curriculum(adaptive_cooldown(1), tmp / "curricula" / "wsd.toml")
    return ["train", *TINY_MODEL, "--curriculum", str(path), "--resume", "auto", "--ckpt", str(tmp / "new.pt")]


_DEEP = "[" * 100_000 + "]" * 100_000
_STEP_AS_TEXT = (
    '[{"source": null, "dest": "a", "global_step": "ten", "epoch": 0, "step_in_epoch": 0, "point": "start", '
    '"wall_time": 0}]'
)


BAD = {
    # (argv, or a function (base_run, tmp) -> argv), exit status, a fragment of the one-line message
    "seed -1": (["train", *TINY, "--seed", "-1"], 2, "--seed must be an integer >= 0"),
    "device cuda:99": (["train", *TINY, "--device", "cuda:99"], 2, "--device cuda:99:"),
    "device tpu": (["train", *TINY, "--device", "tpu"], 2, "--device tpu: unknown device"),
    "generate -n -5": (lambda b, t: ["generate", "--ckpt", str(b / "run.pt"), "-n", "-5"], 2, "an integer >= 0"),
    "temperature -1": (
        lambda b, t: ["generate", "--ckpt", str(b / "run.pt"), "--temperature", "-1"],
        2,
        "--temperature",
    ),
    "temperature nan": (
        lambda b, t: ["generate", "--ckpt", str(b / "run.pt"), "--temperature", "nan"],
        2,
        "--temperature",
    ),
    "top-p 0": (lambda b, t: ["generate", "--ckpt", str(b / "run.pt"), "--top-p", "0"], 2, "a number in (0, 1]"),
    "top-p 1.5": (lambda b, t: ["generate", "--ckpt", str(b / "run.pt"), "--top-p", "1.5"], 2, "a number in (0, 1]"),
    "top-p nan": (lambda b, t: ["generate", "--ckpt", str(b / "run.pt"), "--top-p", "nan"], 2, "a number in (0, 1]"),
    "history corrupt json": (_corrupt_history, 2, "is not a transition history"),
    "plot garbage csv": (_garbage_csv, 2, "is not a metrics file"),
    "plot out in missing folder": (
        lambda b, t: ["plot", str(t / "run.pt"), "--out", str(t / "no" / "x.png")],
        2,
        "does not exist",
    ),
    "ckpt in read-only folder": (["train", *TINY, "--ckpt", "/sys/chunklm_test.pt"], 2, "cannot write in /sys"),
    "settings missing": (_edit(lambda d: d.pop("settings")), 2, "missing @ checkpoint.settings"),
    "trainer missing": (_edit(lambda d: d.pop("trainer")), 2, "missing @ checkpoint.trainer"),
    "shape mismatch": (_edit(_set_model_weight), 2, "does not fit its own settings"),
    "bad engine phase": (
        _edit(lambda d: d["trainer"]["engine"].update(phase="nope")),
        2,
        "does not fit its own settings",
    ),
    "bad engine clock": (_edit(lambda d: d["trainer"]["engine"].update(clock="x")), 2, "does not fit its own settings"),
    "generate ckpt dir": (lambda b, t: ["generate", "--ckpt", str(t)], 2, "is a directory, not a checkpoint"),
    "grad-clip -1": (["train", *TINY, "--grad-clip", "-1"], 2, "--grad-clip must be a finite number >= 0"),
    "grad-clip nan": (["train", *TINY, "--grad-clip", "nan"], 2, "--grad-clip must be a finite number >= 0"),
    "ema 0": (["train", *TINY, "--ema", "0"], 2, "--ema must be a finite number > 0.0 and < 1.0"),
    "plateau-threshold nan": (
        ["train", *TINY, "--plateau-threshold", "nan"],
        2,
        "--plateau-threshold must be a finite number",
    ),
    "stop-after 0": (["train", *TINY, "--stop-after", "0"], 2, "--stop-after: expected an integer >= 1"),
    "stop-after -1": (["train", *TINY, "--stop-after", "-1"], 2, "--stop-after: expected an integer >= 1"),
    "log-every -1": (["train", *TINY, "--log-every", "-1"], 2, "--log-every: expected an integer >= 0"),
    "ckpt-every -1": (["train", *TINY, "--ckpt-every", "-1"], 2, "--ckpt-every: expected an integer >= 0"),
    "chunk longer than seq-len": (["train", *TINY, "--chunk", "100"], 2, "--chunk 100 is longer than --seq-len 32"),
    "data /dev/zero": (
        ["train", *TINY, "--data", "/dev/zero"],
        2,
        "--data /dev/zero: not a regular file or a directory",
    ),
    "data fifo": (_fifo, 2, "not a regular file or a directory"),
    "data of 5 bytes": (_five_bytes, 2, "corpus too small: 5 bytes, but training and validation each need one window"),
    # values out of range and unreadable files: a one-line refusal, not a traceback
    "lr 1e300": (["train", *TINY, "--lr", "1e300"], 2, "--lr must be at most 1e+30"),
    "seed 2**32": (["train", *TINY, "--seed", str(2**32)], 2, "--seed must be an integer >= 0 and <= 4294967295"),
    "seed 2**63": (["train", *TINY, "--seed", str(2**63)], 2, "--seed must be an integer >= 0 and <= 4294967295"),
    "ckpt empty": (["train", *TINY, "--ckpt", ""], 2, "--ckpt is empty"),
    "history a list of numbers": (
        _history_text("history", "[1, 2, 3]"),
        2,
        "is not a transition history this version can read",
    ),
    "history an extra key": (
        _history_text("history", _STEP_AS_TEXT.replace('"wall_time": 0', '"wall_time": 0, "x": 1')),
        2,
        "is not a transition history this version can read",
    ),
    "history a step as text": (
        _history_text("plot", _STEP_AS_TEXT),
        2,
        "is not a transition history this version can read",
    ),
    "history deeply nested": (_history_text("history", _DEEP), 2, "is not a transition history this version can read"),
    "history json a folder": (_folder("run.history.json", ["history", "RUN"]), 2, "cannot read the transition history"),
    "plot history a folder": (_folder("run.history.json", ["plot", "RUN"]), 2, "cannot read the transition history"),
    "plot steps csv a folder": (_folder("run.steps.csv", ["plot", "RUN"]), 2, "cannot read the metrics file"),
    "replay epochs csv a folder": (
        _folder("run.epochs.csv", ["replay", "RUN"]),
        2,
        "run.epochs.csv is not a regular file",
    ),
    "resume history a folder": (
        _folder("run.history.json", ["train", "--resume", "--ckpt", "RUN"]),
        2,
        "is not a regular file",
    ),
    "resume steps csv a folder": (
        _folder("run.steps.csv", ["train", "--resume", "--ckpt", "RUN"]),
        2,
        "is not a regular file",
    ),
    "plot out txt": (
        lambda b, t: ["plot", str(t / "run.pt"), "--out", str(t / "x.txt")],
        2,
        ".txt is not an image format",
    ),
    "plot out in /proc": (
        lambda b, t: ["plot", str(t / "run.pt"), "--out", "/proc/nope.png"],
        2,
        "cannot write in /proc",
    ),
    "absurd d_model": (_edit(lambda d: d["settings"].update(d_model=10**7)), 2, "make a model of"),
    "generate absurd d_model": (
        lambda b, t: ["generate", "--ckpt", _tampered(b, t, lambda d: d["settings"].update(d_model=10**7))],
        2,
        "make a model of",
    ),
    "generate NaN weights": (
        lambda b, t: ["generate", "--ckpt", _tampered(b, t, _nan_weight)],
        2,
        "non-finite weights (NaN or infinity in embed.weight)",
    ),
    "generate seed -1": (
        lambda b, t: ["generate", "--ckpt", str(b / "run.pt"), "--seed", "-1"],
        2,
        "--seed: expected an integer >= 0",
    ),
    # contradictory or unusable flags: refused, not silently accepted
    "resume and overwrite": (
        lambda b, t: ["train", "--resume", "--overwrite", "--ckpt", str(t / "run.pt")],
        2,
        "pass one of them",
    ),
    "ckpt named like a metrics file": (
        lambda b, t: ["train", *TINY, "--ckpt", str(t / "ck.steps.csv")],
        2,
        "would be confused with a run's other files",
    ),
    "ckpt /dev/null": (["train", *TINY, "--ckpt", "/dev/null"], 2, "/dev/null is not a regular file"),
    "lock a symbolic link": (_symlinked_lock, 2, "is a symbolic link"),
    "same files as a run": (
        lambda b, t: ["train", *TINY, "--overwrite", "--ckpt", str(t / "run")],
        2,
        "run.pt beside it is a checkpoint whose run's files are named as this one's would be",
    ),
    "trainer.optimizer missing": (
        _edit(lambda d: d["trainer"].pop("optimizer")),
        2,
        "lacks trainer.optimizer, which a resume needs",
    ),
    "trainer.rng missing": (_edit(lambda d: d["trainer"].pop("rng")), 2, "lacks trainer.rng, which a resume needs"),
    "trainer.rng.torch missing": (_edit(lambda d: d["trainer"]["rng"].pop("torch")), 2, "lacks trainer.rng.torch"),
    # unreadable checkpoints: a message that names what is wrong
    "ckpt of random bytes": (
        _not_a_checkpoint(bytes(range(7, 250))),
        2,
        "is not a checkpoint: not a file torch.save wrote",
    ),
    "ckpt a JSON file": (
        _not_a_checkpoint(b'{"schema_version": 2}'),
        2,
        "is not a checkpoint: not a file torch.save wrote",
    ),
    "resume CSVs without a checkpoint": (
        _csvs_without_checkpoint,
        2,
        "nothing to resume. run.steps.csv, run.epochs.csv, run.history.json beside it are the files of a run without",
    ),
    # --resume auto, and the curriculum a checkpoint stores
    "resume maybe": (["train", *TINY, "--resume", "maybe"], 2, "--resume: expected nothing (continue the run) or auto"),
    "resume auto and overwrite": (
        lambda b, t: ["train", "--resume", "auto", "--overwrite", "--ckpt", str(t / "run.pt")],
        2,
        "--resume auto continues the run in --ckpt if there is one and --overwrite replaces it",
    ),
    "resume auto CSVs without a checkpoint": (
        _auto_csvs_without_checkpoint,
        2,
        "run.steps.csv, run.epochs.csv, run.history.json beside it are the files of a run without their checkpoint",
    ),
    "resume auto other settings": (
        lambda b, t: ["train", *TINY, "--lr", "0.1", "--resume", "auto", "--ckpt", str(t / "run.pt")],
        2,
        "--lr: checkpoint has 0.0002, given 0.1",
    ),
    "resume auto a foreign file": (_auto_foreign_file, 2, "is not a checkpoint: not a file torch.save wrote"),
    "resume auto a file the schedule cannot run": (_auto_refused_file, 2, "pass --schedule wsd"),
    "stored curriculum garbled": (
        _edit(lambda d: d.update(curriculum={"phases": 3}, curriculum_file="c.toml")),
        2,
        "the curriculum it stores cannot be used",
    ),
    "stored curriculum not a table": (
        _edit(lambda d: d.update(curriculum=[1], curriculum_file="c.toml")),
        2,
        "expected dict @ checkpoint.curriculum",
    ),
    "seq-len 1 with default cutoffs": (
        ["train", "--data", DATA, "--seq-len", "1", "--chunk", "1", "--kernel-len", "1"],
        2,
        "each cutoff must be >= 1 bin",
    ),
}

# Refusals that must not suggest --overwrite: it would not help.
NO_OVERWRITE_HINT = {"ckpt /dev/null", "resume history a folder", "resume steps csv a folder", "lock a symbolic link"}


@pytest.mark.parametrize("case", sorted(BAD))
def test_every_user_mistake_is_one_line_never_a_traceback(case, base_run, tmp_path, capsys):
    """Bad input and run-time failures print one line naming the problem and the fix, with exit 2 or 1."""
    argv, status, fragment = BAD[case]
    for f in base_run.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    if callable(argv):
        argv = argv(base_run, tmp_path)
    elif argv[0] == "train" and "--ckpt" not in argv:
        argv = [*argv, "--ckpt", str(tmp_path / "fresh.pt")]
    before = _snapshot_all(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own checks (types of -n, --top-p...) exit here
        code = exc.code
    out, err = capsys.readouterr()
    assert code == status, err
    assert fragment in err and "Traceback" not in err, err
    assert err.startswith("chunklm ") and err.count("\n") == 1, err
    assert "starting fresh" not in out  # --resume auto reports its decision only once the line passed every check
    assert _snapshot_all(tmp_path) == before  # nothing changed on disk (a lock file aside)
    if case in NO_OVERWRITE_HINT:
        assert "--overwrite" not in err, err


def _snapshot_all(tmp: Path) -> dict:
    """Every file and folder under ``tmp`` but the run locks, with the bytes of each regular file."""
    return {
        str(p.relative_to(tmp)): (
            p.read_bytes() if p.is_file() and not p.is_symlink() else os.readlink(p) if p.is_symlink() else "dir"
        )
        for p in tmp.rglob("*")
        if not p.name.endswith(".lock") or p.is_symlink()
    }


def test_an_unwritable_corpus_cache_is_refused_before_training(tmp_path, capsys, monkeypatch):
    """A cache folder that cannot be written is a one-line error (exit 2) before any step runs."""
    (tmp_path / "data.py").write_text("x = 1\n" * 200)
    monkeypatch.setenv("CHUNKLM_CACHE_DIR", "/sys/chunklm_cache")  # unwritable even for root
    assert main(["train", *TINY, "--data", str(tmp_path / "data.py"), "--ckpt", str(tmp_path / "r.pt")]) == 2
    err = capsys.readouterr().err
    assert "cache folder /sys/chunklm_cache is writable" in err and err.count("\n") == 1 and "Traceback" not in err
    assert not RunFiles(tmp_path / "r.pt").existing()


DISK_FULL = """
import resource, signal, sys
from runs.cli import main
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
sys.exit(main(sys.argv[1:]))
"""


def test_a_full_disk_at_a_save_is_one_line_and_keeps_the_previous_checkpoint(tmp_path):
    """A save that cannot be written (file size limit: the disk is full) exits 1 saying so; the old checkpoint stays."""
    from chunklm import ByteCorpus

    ByteCorpus(DATA, seq_len=32, chunk=4)  # the corpus cache exists before the limit applies
    assert train(tmp_path, "run", "--stop-after", "1") == 0
    before = (tmp_path / "run.pt").read_bytes()
    proc = subprocess.run(
        [sys.executable, "-c", DISK_FULL, "train", "--ckpt", str(tmp_path / "run.pt"), "--resume", "--stop-after", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 1, proc.stderr
    assert "could not write" in proc.stderr and "the disk is full" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert (tmp_path / "run.pt").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_diagram_of_a_weights_only_checkpoint_marks_the_phase_its_epochs_imply(base_run, tmp_path, capsys):
    """A weights-only checkpoint (a format the README supports) still draws, its phase inferred from its epoch."""
    data = load_checkpoint(base_run / "run.pt")
    attrs.evolve(data, trainer={"model": data.trainer["model"]}, epoch=1).save(tmp_path / "w.pt")
    assert main(["diagram", "--run", str(tmp_path / "w.pt")]) == 0
    assert "class cutoff_16 current" in capsys.readouterr().out  # min epochs 1,1,2: epoch 1 is in cutoff_16


# -- never losing a run ----------------------------------------------------------------------------


def _snapshot(tmp: Path) -> dict:
    return {p.name: p.read_bytes() for p in tmp.iterdir() if p.is_file() and not p.name.startswith(".")}


def test_a_fresh_run_on_an_existing_run_is_refused_and_touches_nothing(tmp_path, capsys):
    """Without --resume or --overwrite, a fresh run on a run's --ckpt exits 2 naming its files and the ways out."""
    assert train(tmp_path, "run", "--stop-after", "2") == 0
    before = _snapshot(tmp_path)
    capsys.readouterr()
    assert train(tmp_path, "run") == 2
    err = capsys.readouterr().err
    assert "already holds a run (run.pt, run.steps.csv, run.epochs.csv, run.history.json)" in err
    assert "--resume" in err and "--overwrite" in err and "another --ckpt" in err
    assert _snapshot(tmp_path) == before


def test_overwrite_replaces_the_old_run_only_at_the_first_save(tmp_path, capsys):
    """--overwrite leaves the old files as they are until the new run saves, then replaces all of them."""
    assert train(tmp_path, "run", "--stop-after", "2") == 0
    before = _snapshot(tmp_path)
    args = [*TINY, "--steps-per-epoch", "60", "--log-every", "1", "--epochs", "1", "--seed", "1", "--overwrite"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "runs.cli", "train", *args, "--ckpt", str(tmp_path / "run.pt")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    for line in proc.stdout:
        if line.startswith("  step 3/60"):
            assert _snapshot(tmp_path) == before  # three steps in, nothing touched yet
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "stopping after this step (checkpoint saved); SIGINT again to stop now without saving" in err
    new = load_checkpoint(tmp_path / "run.pt")
    assert new.settings.seed == 1 and new.global_step >= 3
    assert [int(r["step"]) for r in read_csv(RunFiles(tmp_path / "run.pt").steps)] == list(
        range(1, new.global_step + 1)
    )


@pytest.mark.parametrize("crash_in", ["write_history", "commit"])
def test_a_crash_in_the_first_save_under_overwrite_never_mixes_two_runs(tmp_path, capsys, monkeypatch, crash_in):
    """A crash after the new checkpoint, before its metrics: a resume refuses the old CSVs, untouched; moved aside, it
    resumes."""
    assert train(tmp_path, "run", "--plot", epochs=2) == 0  # the run to replace: 12 steps, 2 epochs, a plot
    old = _snapshot(tmp_path)
    files = RunFiles(tmp_path / "run.pt")

    def crash(*_args):
        raise RuntimeError("simulated crash after the checkpoint")

    target = RunFiles if crash_in == "write_history" else runs.artifacts.MetricsWriter
    with monkeypatch.context() as m:
        m.setattr(target, crash_in, crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            train(tmp_path, "run", "--seed", "1", "--overwrite", epochs=2)  # its first save: the end of epoch 0
    new = load_checkpoint(files.ckpt)
    assert (new.settings.seed, new.global_step) == (1, 6)
    assert (
        files.steps.read_bytes() == old["run.steps.csv"] and files.epochs.read_bytes() == old["run.epochs.csv"]
    )  # whole, not mixed
    assert not files.plot.exists()  # drawn from the replaced run: gone before the new checkpoint
    capsys.readouterr()
    before = _snapshot(tmp_path)
    assert resume(tmp_path, "run") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "run.steps.csv and run.epochs.csv do not hold the metrics run.pt" in err, err
    assert "Move them aside and resume again" in err, err
    assert _snapshot(tmp_path) == before  # nothing changed
    # the commands that read the folder say so: history and plot warn, replay refuses
    for command in (["history", str(files.ckpt)], ["plot", str(files.ckpt), "--out", str(tmp_path / "look.png")]):
        assert main(command) == 0
        assert (
            "warning: run.steps.csv and run.epochs.csv do not hold the metrics run.pt was saved with"
            in capsys.readouterr().err
        )
    assert main(["replay", str(files.ckpt)]) == 2
    err = capsys.readouterr().err
    assert "replay needs the metrics of the run that made the checkpoint" in err and err.count("\n") == 1, err
    (tmp_path / "look.png").unlink()

    for path in (files.steps, files.epochs):
        path.rename(path.with_name(path.name + ".replaced"))
    with monkeypatch.context() as m:  # a resume that fails as it starts still leaves the checkpoint's own history
        m.setattr(runs.train_cmd, "_fit", crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            resume(tmp_path, "run")
    assert [(r.dest, r.global_step) for r in files.read_history()] == [
        ("cutoff_4", 0),
        ("cutoff_8", 6),
    ]  # not the old run's 12
    assert resume(tmp_path, "run") == 0
    assert [int(r["step"]) for r in read_csv(files.steps)] == list(
        range(7, 13)
    )  # the new run's, from the checkpoint on
    assert [int(r["epoch"]) for r in read_csv(files.epochs)] == [1]
    capsys.readouterr()
    assert main(["history", str(files.ckpt)]) == 0
    assert "warning" not in capsys.readouterr().err  # repaired: the metrics are the checkpoint's again


def test_resume_auto_starts_then_continues_and_names_metrics_it_lost(tmp_path, capsys):
    """--resume auto starts a run where there is none, then continues it; a metrics file missing although the
    checkpoint vouches for rows in it (moved aside, or a kill between a first checkpoint and its CSVs) is named."""
    assert train(tmp_path, "run", "--stop-after", "4", "--resume", "auto", epochs=2) == 0
    assert f"no run in {tmp_path / 'run.pt'}: starting fresh" in capsys.readouterr().out
    files = RunFiles(tmp_path / "run.pt")
    files.steps.unlink()
    assert resume(tmp_path, "run", "--stop-after", "1") == 0
    out = capsys.readouterr().out
    assert f"resuming {tmp_path / 'run.pt'} at step 4" not in out  # plain --resume says nothing more
    assert "note: run.steps.csv is missing; the checkpoint vouches for rows up to step 4 that are lost" in out
    assert "epochs.csv" not in out  # no epoch had ended: nothing lost there
    assert [int(r["step"]) for r in read_csv(files.steps)] == [5]


def test_a_resume_refuses_metrics_that_are_not_its_checkpoints(tmp_path, capsys):
    """An edited steps CSV (a row up to the checkpoint changed) is refused in one line; rows past it are not checked."""
    assert train(tmp_path, "run", "--stop-after", "4") == 0
    files = RunFiles(tmp_path / "run.pt")
    with open(files.steps, "a", newline="") as f:
        f.write("5,0,5,9.9,0.0002,4,cutoff_4\r\n")  # a row past the checkpoint: a crash after it, cut on resume
    assert resume(tmp_path, "run", "--stop-after", "1") == 0
    assert [r["loss"] for r in read_csv(files.steps)][-1] != "9.9"
    text = files.steps.read_text()
    files.steps.write_text(text.replace(read_csv(files.steps)[1]["loss"], "1.234", 1))
    capsys.readouterr()
    assert resume(tmp_path, "run") == 2
    err = capsys.readouterr().err
    assert "run.steps.csv does not hold the metrics run.pt was saved with" in err and "Move it aside" in err


def test_a_second_ctrl_c_stops_at_once_without_saving(tmp_path):
    """The first SIGINT is acknowledged; a second one stops now (exit 130), the last checkpoint kept."""
    args = [*TINY, "--steps-per-epoch", "400", "--log-every", "1", "--epochs", "1"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_STEPS, "train", *args, "--ckpt", str(tmp_path / "run.pt")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    for line in proc.stdout:
        if line.startswith("  step 2/400"):  # step 3 is now sleeping its 2 s: both signals land inside it
            time.sleep(0.5)
            proc.send_signal(signal.SIGINT)
            time.sleep(0.3)
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "SIGINT again to stop now without saving" in err
    assert "stopped by a second SIGINT, without saving" in err and "Traceback" not in err
    assert not (tmp_path / "run.pt").exists(), out + err


# Steps that take two seconds each, so that the second signal arrives while a step is still running.
SLOW_STEPS = """
import sys, time
from chunklm.train import Trainer
from runs.cli import main
step = Trainer.train_step
def slow(self):
    time.sleep(2.0)
    return step(self)
Trainer.train_step = slow
sys.exit(main(sys.argv[1:]))
"""


def test_every_path_is_checked_before_training(tmp_path, capsys):
    """--ckpt naming a directory fails at once (exit 2), leaving no metrics files behind."""
    (tmp_path / "ck.pt").mkdir()
    assert main(["train", *TINY, "--ckpt", str(tmp_path / "ck.pt")]) == 2
    assert "--ckpt" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt"]
    (tmp_path / "file").write_text("")
    assert main(["train", *TINY, "--ckpt", str(tmp_path / "file" / "x.pt")]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_a_second_run_on_the_same_checkpoint_is_refused_naming_the_lock(tmp_path, capsys):
    """While a run holds --ckpt, another exits 2 naming the lock; a SIGKILLed holder leaves no stale lock."""
    from runs.artifacts import RunLock

    lock = RunLock(tmp_path / "run.pt")
    lock.acquire()
    try:
        assert train(tmp_path, "run", "--stop-after", "1") == 2
        err = capsys.readouterr().err
        assert f"another run is using {tmp_path / 'run.pt'} (it holds .run.lock)" in err
    finally:
        lock.release()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom pathlib import Path\nfrom runs.artifacts import RunLock\n"
            "RunLock(Path(sys.argv[1])).acquire()\nprint('locked', flush=True)\ntime.sleep(300)\n",
            str(tmp_path / "run.pt"),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait()
    assert train(tmp_path, "run", "--stop-after", "1") == 0


def test_temp_files_have_unique_names_and_stale_ones_are_removed(tmp_path, capsys):
    """Fixed temp names are not used (a directory in the way breaks nothing); a killed run's temp files are removed."""
    for name in ("run.history.json.tmp", "run.steps.csv.tmp", "run.epochs.csv.tmp"):
        (tmp_path / name).mkdir()  # the old fixed temp names
    stale = [
        tmp_path / ".run.pt.k2j4h5_q.tmp",
        tmp_path / ".run.history.json.abc123de.tmp",
        tmp_path / ".run.steps.csv.x0000000.tmp",
    ]
    for path in stale:
        path.write_bytes(b"left by a SIGKILL during a save")
    others = [
        tmp_path / ".other.pt.k2j4h5_q.tmp",
        tmp_path / ".run.pt.bak.k2j4h5_q.tmp",
    ]  # other runs' (run.pt.bak is one)
    for path in others:
        path.write_bytes(b"another run's")
    assert train(tmp_path, "run", "--stop-after", "2") == 0
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in others)


def test_checkpoints_and_metrics_follow_the_umask(tmp_path, capsys):
    """Files are created 0666 less the umask (shared filesystems), not mkstemp's 0600."""
    old = os.umask(0o022)
    try:
        assert train(tmp_path, "run", "--stop-after", "1") == 0
    finally:
        os.umask(old)
    files = RunFiles(tmp_path / "run.pt")
    for path in (files.ckpt, files.history, files.steps):
        assert path.stat().st_mode & 0o777 == 0o644, path


def test_resuming_a_finished_run_says_how_to_train_longer(tmp_path, capsys):
    """A finished run resumed does nothing and says to pass a larger --epochs."""
    assert train(tmp_path, "run", epochs=2) == 0
    before = _snapshot(tmp_path)
    capsys.readouterr()
    assert resume(tmp_path, "run") == 0
    out = capsys.readouterr().out
    assert (
        "the run already finished: it has trained 2 epochs and --epochs is 2; to train longer, resume with --epochs N "
        "(N > 2" in out
    )
    assert resume(tmp_path, "run", "--epochs", "1") == 0  # not "finished its 1 epochs"
    assert (
        "it has trained 2 epochs and --epochs is 1; to train longer, resume with --epochs N (N > 2"
        in capsys.readouterr().out
    )
    assert _snapshot(tmp_path) == before


def test_plot_writes_where_it_says_and_draws_a_run_that_never_saved(tmp_path, capsys):
    """--out DIR writes DIR/NAME.png and prints that path; a run with step metrics only still plots."""
    assert train(tmp_path, "run", "--stop-after", "3") == 0
    (tmp_path / "plots").mkdir()
    capsys.readouterr()
    assert main(["plot", str(tmp_path / "run.pt"), "--out", str(tmp_path / "plots")]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'plots' / 'run.png'}"
    assert (tmp_path / "plots" / "run.png").read_bytes()[:4] == b"\x89PNG"
    for path in (tmp_path / "run.pt", tmp_path / "run.history.json"):
        path.unlink()
    assert main(["plot", str(tmp_path)]) == 0
    assert (tmp_path / "run.png").exists()


def test_generate_streams_its_bytes_and_ctrl_c_keeps_them(base_run):
    """generate prints bytes as they are sampled; Ctrl-C stops it with what was printed kept (exit 130)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runs.cli",
            "generate",
            "--ckpt",
            str(base_run / "run.pt"),
            "--prompt",
            "import ",
            "-n",
            "10000000",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        preexec_fn=at_a_terminal,
    )
    first, deadline = b"", time.monotonic() + 60  # the first bytes arrive long before ten million are done
    while len(first) < 40 and time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 1.0)[0]:
            first += os.read(proc.stdout.fileno(), 40 - len(first))
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    assert first.startswith(b"import ") and len(first) == 40
    assert proc.returncode == 130 and b"stopped by Ctrl-C" in err and b"Traceback" not in err


def test_a_checkpoint_is_a_pure_function_of_its_settings(tmp_path, capsys):
    """Two runs with the same settings write equal RNG states, whatever the process's global RNGs held."""
    import random

    import numpy as np

    assert train(tmp_path, "a", "--stop-after", "2") == 0
    np.random.seed(12345)
    random.seed(678)
    assert train(tmp_path, "b", "--stop-after", "2") == 0
    ra, rb = load_checkpoint(tmp_path / "a.pt").trainer["rng"], load_checkpoint(tmp_path / "b.pt").trainer["rng"]
    assert torch.equal(ra["numpy"]["key"], rb["numpy"]["key"]) and ra["numpy"]["pos"] == rb["numpy"]["pos"]
    assert ra["python"] == rb["python"] and torch.equal(ra["torch"], rb["torch"])


def test_micro_batch_is_an_execution_setting_free_to_change_on_resume(tmp_path, capsys):
    """--micro-batch equal to --batch-size is the default step bit for bit, and a resume may change it."""
    assert train(tmp_path, "plain", epochs=2) == 0
    assert train(tmp_path, "micro", "--micro-batch", "2", "--stop-after", "5", epochs=2) == 0
    assert load_checkpoint(tmp_path / "micro.pt").settings.micro_batch == 2
    assert resume(tmp_path, "micro", "--micro-batch", "2", "--no-compile") == 0
    assert_same_run(tmp_path, "plain", "micro")
    assert resume(tmp_path, "micro", "--epochs", "3", "--micro-batch", "1") == 0  # not refused as a trajectory change


def test_the_exact_band_opening_is_an_option_that_resumes_exactly(tmp_path, capsys):
    """--preserve --kernel-init smooth (not the default) runs exact raises, and a resume continues bit-identically."""
    exact = ("--preserve", "--kernel-init", "smooth")
    assert train(tmp_path, "whole", *exact) == 0
    assert train(tmp_path, "split", *exact, "--stop-after", "9") == 0
    assert resume(tmp_path, "split") == 0
    history = assert_same_run(tmp_path, "whole", "split")
    cutoffs = [a.action for r in history for a in r.actions if a.action.startswith("SetCutoff(")]
    assert cutoffs == ["SetCutoff(4)", "SetCutoff(8)", "SetCutoff(16)", "SetCutoff(None)"]  # the preserve=True reprs


def test_the_welch_plateau_is_a_training_setting_too(tmp_path, capsys):
    """A rule found with `chunklm replay --plateau-test welch` can be trained with; an alpha alone is refused."""
    assert train(tmp_path, "welch", "--plateau-test", "welch", "--plateau-alpha", "0.2", epochs=2) == 0
    settings = load_checkpoint(tmp_path / "welch.pt").settings
    assert (settings.plateau_test, settings.plateau_alpha) == ("welch", 0.2)
    guards = [g.guard for r in RunFiles(tmp_path / "welch.pt").read_history() for g in r.guards]
    assert guards and all("test='welch'" in g and "alpha=0.2" in g for g in guards)
    capsys.readouterr()
    assert train(tmp_path, "alpha_only", "--plateau-alpha", "0.2", epochs=2) == 2
    err = capsys.readouterr().err
    assert "alpha" in err and "welch" in err and "Traceback" not in err


# -- a run stays the run ----------------------------------------------------------------------------


def test_a_resume_on_changed_data_is_refused_naming_the_change_unless_allowed(tmp_path, monkeypatch, capsys):
    """A relative --data is stored absolute; edited data is refused naming the file, nothing changed;
    --allow-data-change continues, and the checkpoint and `chunklm history` record it."""
    import shutil

    shutil.copytree(DATA, tmp_path / "data", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.chdir(tmp_path)
    assert train(tmp_path, "run", "--data", "data", "--stop-after", "2") == 0
    saved = load_checkpoint(tmp_path / "run.pt")
    assert saved.settings.data == (str(tmp_path / "data"),) and saved.data["paths"] == [str(tmp_path / "data")]
    assert [f[1] for f in saved.data["files"]] == sorted(p.name for p in (tmp_path / "data").iterdir())
    edited = tmp_path / "data" / "decoder.py"
    text = edited.read_bytes()
    edited.write_bytes(text.replace(b"import re", b"import XX", 1))  # same size, other bytes
    monkeypatch.chdir(tmp_path / "data")  # the resume command works from anywhere
    before = _snapshot(tmp_path)
    capsys.readouterr()
    assert resume(tmp_path, "run") == 2
    err = capsys.readouterr().err
    assert "the data differs from the checkpoint's: 1 file changed content, same size (decoder.py)" in err, err
    assert "--allow-data-change" in err and err.count("\n") == 1
    assert _snapshot(tmp_path) == before
    assert resume(tmp_path, "run", "--allow-data-change", "--stop-after", "1") == 0
    assert (
        "note: continuing on changed data (--allow-data-change, recorded in the checkpoint)" in capsys.readouterr().out
    )
    saved = load_checkpoint(tmp_path / "run.pt")
    assert saved.data_changes == [
        {"global_step": 2, "epoch": 0, "changes": ["1 file changed content, same size (decoder.py)"]}
    ]
    assert resume(tmp_path, "run", "--stop-after", "1") == 0  # the new data is now the run's
    assert load_checkpoint(tmp_path / "run.pt").data_changes == saved.data_changes  # and the record stays
    capsys.readouterr()
    assert main(["history", str(tmp_path / "run.pt")]) == 0
    assert "note: resumed at step 2 (epoch 0) on changed data, with --allow-data-change" in capsys.readouterr().out
    (tmp_path / "data" / "extra.py").write_text("x = 1\n")
    assert resume(tmp_path, "run") == 2
    assert "1 file added (extra.py)" in capsys.readouterr().err


def test_a_fresh_run_that_fails_before_its_first_save_leaves_no_files(tmp_path, capsys):
    """NaN losses before any checkpoint: exit 1, and no CSVs left to block the next fresh run or confuse --resume."""
    assert train(tmp_path, "run", "--lr", "1e30") == 1
    assert "non-finite for 3 optimizer steps in a row" in capsys.readouterr().err
    assert not RunFiles(tmp_path / "run.pt").existing()
    assert train(tmp_path, "run", "--stop-after", "1") == 0


def test_a_run_never_replaces_what_is_not_a_regular_file(tmp_path, capsys):
    """A FIFO (or a device) where a run's file goes is refused even with --overwrite, and left as it is;
    the refusal does not suggest --overwrite."""
    os.mkfifo(tmp_path / "run.history.json")
    assert train(tmp_path, "run", "--overwrite") == 2
    err = capsys.readouterr().err
    assert "run.history.json is not a regular file" in err and "--overwrite" not in err, err
    assert (tmp_path / "run.history.json").is_fifo()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["run.history.json"]


def test_two_checkpoints_with_one_run_name_share_the_lock(tmp_path, capsys):
    """run.pt and run would write the same run.steps.csv: while one runs the other is refused."""
    from runs.artifacts import RunLock

    lock = RunLock(tmp_path / "run")
    lock.acquire()
    try:
        assert train(tmp_path, "run", "--stop-after", "1") == 2
        assert "another run is using" in capsys.readouterr().err
    finally:
        lock.release()
    assert not RunFiles(tmp_path / "run.pt").existing()


def test_a_run_folder_moved_away_mid_run_is_one_line(tmp_path, capsys, monkeypatch):
    """The folder disappears before a save: exit 1, one line saying so; the moved folder keeps its files."""
    (tmp_path / "a").mkdir()
    save = runs.train_cmd.Checkpoint.save

    def move_then_save(self, path):
        if (tmp_path / "a").exists():
            (tmp_path / "a").rename(tmp_path / "b")
        return save(self, path)

    monkeypatch.setattr(runs.train_cmd.Checkpoint, "save", move_then_save)
    assert main(["train", *TINY, "--epochs", "1", "--ckpt", str(tmp_path / "a" / "run.pt")]) == 1
    err = capsys.readouterr().err
    assert "its folder" in err and "does not exist (moved or deleted?)" in err, err
    assert err.count("\n") == 1 and "Traceback" not in err and "Free space" not in err


@pytest.mark.parametrize("command", ["generate", "history", "replay"])
@pytest.mark.parametrize(
    "error",
    [BrokenPipeError(32, "Broken pipe"), OSError(28, "No space left on device")],
    ids=["closed pipe", "full disk"],
)
def test_output_that_cannot_be_written_is_one_line(base_run, monkeypatch, capsys, command, error):
    """stdout closed early (`| head`) or on a full disk: one line, exit 1."""
    argv = {
        "generate": ["generate", "--ckpt", str(base_run / "run.pt"), "-n", "8"],
        "history": ["history", str(base_run), "--format", "csv"],
        "replay": ["replay", str(base_run)],
    }[command]

    class Closed:
        def write(self, text):
            raise error

        def flush(self):
            raise error

    monkeypatch.setattr(sys, "stdout", Closed())
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert ("broken pipe" if isinstance(error, BrokenPipeError) else "No space left on device") in err


def test_generate_to_a_closed_pipe_is_one_line(base_run, tmp_path):
    """The real thing, in a process (`generate | head -c 0`): one line, exit 1, no second error at interpreter exit."""
    cmd = [
        sys.executable,
        "-m",
        "runs.cli",
        "generate",
        "--ckpt",
        str(base_run / "run.pt"),
        "--prompt",
        "a\udcffb",
        "-n",
        "64",
    ]
    proc = subprocess.Popen(
        [os.fsencode(c) for c in cmd],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    proc.stdout.close()  # the reader is gone before the first byte
    err = proc.stderr.read().decode()
    assert proc.wait() == 1 and "broken pipe" in err and err.count("\n") == 1, err


def test_generate_takes_a_prompt_that_is_not_utf8(base_run, capsys):
    """A prompt's bytes are used as given (the model reads bytes); they print with U+FFFD for what is not UTF-8."""
    assert (
        main(["generate", "--ckpt", str(base_run / "run.pt"), "--prompt", "a\udcffb", "-n", "4", "--temperature", "0"])
        == 0
    )
    assert capsys.readouterr().out.startswith("a\ufffdb")


def test_a_write_that_fails_for_another_reason_does_not_say_free_space(tmp_path):
    """Only a full disk says "Free space"; "the previous version is kept" only when there was one."""
    from runs.artifacts import WriteError, atomic_write

    (tmp_path / "x").mkdir()
    with pytest.raises(WriteError) as info:
        atomic_write(tmp_path / "x", lambda f: f.write(b"data"))
    message = str(info.value)
    assert "Is a directory" in message and "nothing was written there" in message
    assert "Free space" not in message and "previous version" not in message
