"""`chunklm train --curriculum FILE` and `chunklm diagram FILE` (runs.curriculum_file) on tiny runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine import Curriculum, Phase, Transition, save_curriculum
from policies import MetricBelow, MinEpoch, SetCutoff, adaptive_cooldown, spectral_curriculum
from runs.artifacts import RunFiles, read_csv
from runs.cli import main
from tests.utils import TINY_MODEL, assert_same_run

# test_cli's tiny run without the curriculum flags; the file below is the curriculum those flags make.
MODEL = [*TINY_MODEL, "--log-every", "0", "--epochs", "2"]
FLAGS = ["--cutoffs", "4,8,16", "--min-epochs", "1,1,2", "--plateau-window", "4", "--plateau-threshold", "1.0"]


def tiny_curriculum() -> Curriculum:
    return spectral_curriculum(n_bins=17, cutoffs=(4, 8, 16), min_epochs=(1, 1, 2), window=4, threshold=1.0)


def write(tmp: Path, curriculum: Curriculum, name: str = "c.toml") -> str:
    return str(save_curriculum(curriculum, tmp / name))


def test_a_file_trains_exactly_as_the_flags_that_make_it_and_resumes_under_it(tmp_path, capsys):
    """--curriculum FILE equal to the flags' curriculum gives the flags' run; a run stopped under it resumes under
    it: without the file (the checkpoint stores the curriculum), and with it again (--resume auto)."""
    path = write(tmp_path, tiny_curriculum())
    assert main(["train", *MODEL, *FLAGS, "--ckpt", str(tmp_path / "flags.pt")]) == 0
    assert main(["train", *MODEL, "--curriculum", path, "--ckpt", str(tmp_path / "file.pt"), "--stop-after", "4"]) == 0
    assert f"curriculum: {path} (phases cutoff_4 -> cutoff_8 -> cutoff_16 -> full)" in capsys.readouterr().out
    Path(path).rename(tmp_path / "away.toml")  # not read again
    assert main(["train", "--ckpt", str(tmp_path / "file.pt"), "--resume", "--stop-after", "3"]) == 0
    assert f"curriculum: {path} (stored in the checkpoint) (phases cutoff_4" in capsys.readouterr().out
    (tmp_path / "away.toml").rename(path)
    assert main(["train", *MODEL, "--curriculum", path, "--ckpt", str(tmp_path / "file.pt"), "--resume", "auto"]) == 0
    assert f"resuming {tmp_path / 'file.pt'} at step 7" in capsys.readouterr().out
    history = assert_same_run(tmp_path, "flags", "file")
    assert [r.dest for r in history] == ["cutoff_4", "cutoff_8", "cutoff_16"]


def test_resume_under_another_curriculum_is_refused_in_one_line(tmp_path, capsys):
    """Resuming with another file, or a checkpoint written before checkpoints stored their curriculum without the
    file it was trained with, names what differs and what to pass; with the file, such a checkpoint resumes."""
    path = write(
        tmp_path,
        Curriculum(
            [Phase("a", on_enter=[SetCutoff(4)]), Phase("b", on_enter=[SetCutoff(None)])],
            [Transition("a", "b", [MinEpoch(1)])],
        ),
    )
    other = write(
        tmp_path,
        Curriculum(
            [Phase("a", on_enter=[SetCutoff(4)]), Phase("b", on_enter=[SetCutoff(None)])],
            [Transition("a", "b", [MinEpoch(2)])],
        ),
        "other.toml",
    )
    ckpt = str(tmp_path / "r.pt")
    assert main(["train", *MODEL, "--curriculum", path, "--ckpt", ckpt, "--stop-after", "2"]) == 0
    capsys.readouterr()
    assert main(["train", "--ckpt", ckpt, "--resume", "--curriculum", other]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        f"chunklm train: error: --curriculum {other}: {ckpt} was saved with another curriculum"
    )
    assert "transition a -> b guard MinEpoch(1) -> MinEpoch(2)" in err
    assert "drop --curriculum: the checkpoint stores the one it was trained with" in err
    data = torch.load(ckpt, weights_only=True)
    del data["curriculum"], data["curriculum_file"]  # as written before checkpoints stored it
    torch.save(data, ckpt)
    assert main(["train", "--ckpt", ckpt, "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "was saved with a curriculum its settings do not make" in err
    assert "resume with --curriculum and that file" in err
    assert main(["train", "--ckpt", ckpt, "--resume", "--curriculum", path, "--stop-after", "1"]) == 0
    assert "curriculum" in torch.load(ckpt, weights_only=True)  # stored from the next save on


@pytest.mark.parametrize(
    "make, extra, message",
    [
        (
            lambda: Curriculum([Phase("a", params={"seq_len": 16, "batch": 4}, on_enter=[SetCutoff(4)])], []),
            [],
            "phase 'a' has params ['batch'], which chunklm train does not read (it reads only seq_len, mix;",
        ),
        (
            lambda: Curriculum([Phase("a", params={"seq_len": 12})], []),
            [],
            "phase 'a' has seq_len = 12; it must be a divisor of --seq-len 32",
        ),
        (
            lambda: Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [MetricBelow("val_loss", 1.0)])]),
            [],
            "MetricBelow('val_loss', 1.0) in transition a -> b reads the metric 'val_loss' at epoch_end, and chunklm "
            "train passes "
            "only val_bpb, avg_loss there",
        ),
        (
            lambda: Curriculum([Phase("a", on_enter=[SetCutoff(64)])], []),
            [],
            "SetCutoff(64, preserve=False) in phase 'a' on_enter opens more bins than the model has (17 at this "
            "--seq-len)",
        ),
        (
            lambda: tiny_curriculum(),
            ["--cutoffs", "4,8,16"],
            "--cutoffs build the spectral curriculum, which --curriculum",
        ),
        (
            lambda: adaptive_cooldown(1),
            ["--schedule", "staged"],
            "StartCooldown() in transition stable -> cooldown starts a WSD cooldown, and --schedule staged has none; "
            "pass --schedule wsd",
        ),
        (
            lambda: tiny_curriculum(),
            ["--schedule", "wsd"],
            "RestartLR() in transition cutoff_4 -> cutoff_8 restarts the LR, and --schedule wsd has no restarts",
        ),
    ],
)
def test_a_file_the_trainer_cannot_drive_is_refused_before_training(tmp_path, capsys, make, extra, message):
    """Phase params, a metric the loop does not pass, a cutoff beyond the model, curriculum flags, an LR action the
    --schedule cannot take: one line, exit 2, no run (nothing but the file and the run's hidden lock on disk)."""
    path = write(tmp_path, make())
    assert main(["train", *MODEL, "--curriculum", path, *extra, "--ckpt", str(tmp_path / "r.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == ["c.toml"]


def test_wsd_with_the_adaptive_cooldown_file_cools_down_at_the_transition_and_resumes_exactly(tmp_path):
    """--schedule wsd --curriculum (adaptive_cooldown, tiny floor and window): stable -> cooldown at the end of epoch
    1, the LR falls from the step after it (not at the fixed 80% point), and a run stopped before and after the
    transition resumes to the same run."""
    path = write(tmp_path, adaptive_cooldown(1, window=4, threshold=1.0))
    run = [*MODEL, "--schedule", "wsd", "--curriculum", path]  # 12 steps; the fixed cooldown would start at step 10
    assert main(["train", *run, "--ckpt", str(tmp_path / "whole.pt")]) == 0
    assert main(["train", *run, "--ckpt", str(tmp_path / "cut.pt"), "--stop-after", "4"]) == 0
    for extra in (["--stop-after", "4"], []):  # to step 8, past the transition at step 6; then to the end
        assert main(["train", "--ckpt", str(tmp_path / "cut.pt"), "--resume", *extra]) == 0
    history = assert_same_run(tmp_path, "whole", "cut")
    assert [(r.source, r.dest, r.global_step) for r in history] == [(None, "stable", 0), ("stable", "cooldown", 6)]
    assert history[1].actions[0].effect["cooldown"] == [6, 8]  # round(0.2 * 12) = 2 steps
    lrs = [float(row["lr"]) for row in read_csv(RunFiles(tmp_path / "whole.pt").steps)]
    assert lrs[:7] == [2e-4] * 7 and 0 < lrs[7] < 2e-4 and lrs[8:] == [0.0] * 4  # step 7 (0-based 6) runs at peak


def test_a_broken_file_is_one_line_with_its_key(tmp_path, capsys):
    """A typo in the file: exit 2, the file, the key path, and the fix."""
    path = tmp_path / "c.toml"
    path.write_text(Path(write(tmp_path, tiny_curriculum(), "ok.toml")).read_text().replace('"Plateau"', '"Plateu"', 1))
    assert main(["train", *MODEL, "--curriculum", str(path), "--ckpt", str(tmp_path / "r.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"chunklm train: error: {path}: transitions[0].guards[0].guards[1]: type: unknown guard 'Plateu'" in err
    assert "(did you mean 'Plateau'?)" in err


def test_diagram_draws_a_file_and_marks_a_runs_phase(tmp_path, capsys):
    """chunklm diagram FILE: Mermaid or DOT of the file's curriculum; with --run, its phase (checked by fingerprint)."""
    shipped = str(Path(__file__).resolve().parent.parent / "policies" / "curricula" / "spectral.toml")
    assert main(["diagram", shipped]) == 0
    out = capsys.readouterr().out
    assert (
        "cutoff_128 --> cutoff_256 : epoch_end [all_of(MinEpoch(2), Plateau(window=50, threshold=0.005))] / RestartLR()"
        in out
    )
    assert main(["diagram", shipped, "--format", "dot"]) == 0
    assert "cutoff_512 -> full" in capsys.readouterr().out
    path = write(tmp_path, tiny_curriculum())
    assert main(["train", *MODEL, "--curriculum", path, "--ckpt", str(tmp_path / "r.pt"), "--stop-after", "7"]) == 0
    capsys.readouterr()
    assert main(["diagram", path, "--run", str(tmp_path)]) == 0
    assert "class cutoff_8 current" in capsys.readouterr().out
    assert (
        main(["diagram", "--run", str(tmp_path)]) == 0
    )  # the curriculum the checkpoint stores, not the flags' defaults
    out = capsys.readouterr().out
    assert "class cutoff_8 current" in out and "Plateau(window=4, threshold=1.0)" in out, out
    assert main(["diagram", shipped, "--run", str(tmp_path)]) == 2
    assert "was saved with another curriculum" in capsys.readouterr().err
    assert main(["diagram", shipped, "--cutoffs", "4,8"]) == 2
    assert "settings flags do not change it; drop them" in capsys.readouterr().err


def test_a_file_of_seq_len_phases_trains_exactly_as_the_seq_lens_flags(tmp_path):
    """Phase params `seq_len` in a file are what `--seq-lens` sets: the file of the curriculum those flags make
    trains the same run, bit for bit."""
    from policies import seq_len_curriculum

    rule = ["--min-epochs", "1,2", "--plateau-window", "4", "--plateau-threshold", "1.0"]
    curriculum = seq_len_curriculum((8, 16), min_epochs=(1, 2), window=4, threshold=1.0, restart_lr=True)
    path = write(tmp_path, curriculum)
    assert (
        main(
            [
                "train",
                *MODEL,
                "--epochs",
                "3",
                "--cutoffs",
                "",
                "--seq-lens",
                "8,16",
                *rule,
                "--ckpt",
                str(tmp_path / "flags.pt"),
            ]
        )
        == 0
    )
    assert main(["train", *MODEL, "--epochs", "3", "--curriculum", path, "--ckpt", str(tmp_path / "file.pt")]) == 0
    history = assert_same_run(tmp_path, "flags", "file")
    assert [r.dest for r in history] == ["seq_8", "seq_16", "full"]


def test_the_flags_a_file_replaces_are_refused_before_the_settings_check_them(tmp_path, capsys):
    """--seq-lens and --cutoffs with --curriculum are refused naming themselves (not the curriculum they would have
    built); resuming a file-trained run with a curriculum flag names the stored curriculum, not the flag's old value;
    resuming a flags-trained run with a file says to drop --curriculum."""
    path = write(tmp_path, tiny_curriculum())
    for flags in (["--seq-lens", "8,16"], ["--cutoffs", ""]):
        assert main(["train", *MODEL, "--curriculum", path, *flags, "--ckpt", str(tmp_path / "x.pt")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(
            f"chunklm train: error: {flags[0]} build the spectral curriculum"
        )
    assert main(["train", *MODEL, "--curriculum", path, "--ckpt", str(tmp_path / "f.pt"), "--stop-after", "2"]) == 0
    capsys.readouterr()
    assert main(["train", "--ckpt", str(tmp_path / "f.pt"), "--resume", "--plateau-window", "3"]) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and f"--plateau-window build the spectral curriculum, which the curriculum {tmp_path / 'f.pt'} stores" in err
    )
    assert main(["train", *MODEL, *FLAGS, "--ckpt", str(tmp_path / "g.pt"), "--stop-after", "2"]) == 0
    other = write(
        tmp_path,
        spectral_curriculum(n_bins=17, cutoffs=(4, 8), min_epochs=(1, 1), window=4, threshold=1.0),
        "other.toml",
    )
    capsys.readouterr()
    assert main(["train", "--ckpt", str(tmp_path / "g.pt"), "--resume", "--curriculum", other]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "drop --curriculum: the run was trained with the curriculum its flags make" in err


def test_the_banner_describes_a_seq_lens_run(tmp_path, capsys):
    """`--cutoffs '' --seq-lens 8,16`: the header names the window lengths, not an empty list of cutoffs."""
    flags = ["--cutoffs", "", "--seq-lens", "8,16", "--min-epochs", "1,2", "--epochs", "1"]
    assert main(["train", *MODEL, *flags, "--ckpt", str(tmp_path / "s.pt")]) == 0
    assert "curriculum: windows of 8, 16 bytes then 32; min epochs 1, 2;" in capsys.readouterr().out


def test_a_run_whose_early_cooldown_ended_stops_at_that_epochs_end(tmp_path, capsys):
    """--epochs 4 (24 steps), the cooldown started at step 6 for round(0.2 * 24) = 5 steps: it ends at step 11, so
    the run stops at the end of epoch 2 (step 12), saying why, instead of training 12 more steps at LR 0; resumed,
    it is finished. A run stopped inside that last epoch and resumed stops at the same place."""
    path = write(tmp_path, adaptive_cooldown(1, window=4, threshold=1.0))
    run = [*MODEL, "--epochs", "4", "--schedule", "wsd", "--curriculum", path]
    assert main(["train", *run, "--ckpt", str(tmp_path / "whole.pt")]) == 0
    out = capsys.readouterr().out
    assert (
        "the LR cooldown the curriculum started ended at step 11, and the LR is 0 from there: training stops at "
        "epoch 2 of 4"
        in out
        and "done: 12 steps" in out
    )
    lrs = [float(row["lr"]) for row in read_csv(RunFiles(tmp_path / "whole.pt").steps)]
    assert len(lrs) == 12 and lrs[-1] == 0.0 and lrs[-2] > 0.0
    assert main(["train", "--ckpt", str(tmp_path / "whole.pt"), "--resume"]) == 0
    assert (
        "the run already finished: the LR cooldown the curriculum started ended at step 11" in capsys.readouterr().out
    )
    assert main(["train", *run, "--ckpt", str(tmp_path / "cut.pt"), "--stop-after", "9"]) == 0
    assert main(["train", "--ckpt", str(tmp_path / "cut.pt"), "--resume"]) == 0
    assert_same_run(tmp_path, "whole", "cut")
