"""`chunklm train`'s flags: which combinations are refused, what a resume keeps, and what a run prints (runs.cli)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from runs.checkpoint import load_checkpoint
from runs.cli import main
from tests.utils import DATA, TINY_MODEL, resume, train


def _files(tmp: Path) -> list[str]:
    """The files in ``tmp`` but the run locks."""
    return sorted(p.name for p in tmp.iterdir() if not p.name.endswith(".lock"))


def test_allow_data_change_on_a_fresh_run_is_refused_in_one_line(tmp_path, capsys):
    """A fresh run has no checkpoint's data to differ from: the flag is refused, nothing written; with
    --resume auto (the same line starts and continues a run) it is accepted."""
    assert train(tmp_path, "run", "--allow-data-change") == 2
    err = capsys.readouterr().err
    assert "--allow-data-change applies to --resume" in err and err.count("\n") == 1, err
    assert _files(tmp_path) == []
    assert train(tmp_path, "run", "--allow-data-change", "--resume", "auto", "--stop-after", "1") == 0


def test_a_micro_batch_larger_than_the_step_is_refused_in_one_line(tmp_path, capsys):
    """--micro-batch counts the windows of a step (--batch-size x --accum-steps) run at once: more is refused,
    naming the flags; the whole step at once is accepted."""
    assert train(tmp_path, "run", "--micro-batch", "5") == 2
    err = capsys.readouterr().err
    assert "--micro-batch 5, --batch-size 2 x --accum-steps 2 = 4" in err and err.count("\n") == 1, err
    assert _files(tmp_path) == []
    assert train(tmp_path, "run", "--micro-batch", "4", "--stop-after", "1") == 0


def test_a_run_whose_data_moved_resumes_with_the_new_path_and_allow_data_change(tmp_path, monkeypatch, capsys):
    """The bare resume names the fix; --data NEW without the flag is refused naming it; with it the run continues."""
    shutil.copytree(DATA, tmp_path / "data", ignore=shutil.ignore_patterns("__pycache__"))
    assert train(tmp_path, "run", "--data", str(tmp_path / "data"), "--stop-after", "2") == 0
    (tmp_path / "data").rename(tmp_path / "moved")
    capsys.readouterr()
    assert resume(tmp_path, "run") == 2
    err = capsys.readouterr().err
    assert f"--data {tmp_path / 'data'}: no such file or directory" in err and err.count("\n") == 1, err
    assert "--data NEW --allow-data-change" in err
    assert resume(tmp_path, "run", "--data", str(tmp_path / "moved")) == 2
    assert "--allow-data-change" in capsys.readouterr().err
    assert resume(tmp_path, "run", "--data", str(tmp_path / "moved"), "--allow-data-change", "--stop-after", "1") == 0
    saved = load_checkpoint(tmp_path / "run.pt")
    assert saved.settings.data == (str(tmp_path / "moved"),) and saved.global_step == 3
    assert saved.data_changes[0]["changes"] == [
        f"the data path was {tmp_path / 'data'}, now {tmp_path / 'moved'} (the same files and bytes)"
    ]
    assert resume(tmp_path, "run", "--stop-after", "1") == 0  # the new path is now the run's


def test_a_count_mismatch_with_the_default_min_epochs_says_it_is_the_default(tmp_path, capsys):
    """--cutoffs alone: the message says that the --min-epochs it blames is the default."""
    assert main(["train", *TINY_MODEL, "--cutoffs", "8,16", "--ckpt", str(tmp_path / "run.pt")]) == 2
    err = capsys.readouterr().err
    assert "--min-epochs 2,5,10 (the default) gives 3 minimum epochs for the 2 raises of --cutoffs 8,16" in err, err


def test_log_every_is_kept_on_resume(tmp_path, capsys):
    """Every flag not given on --resume comes from the checkpoint: --log-every 0 too."""
    args = ("--log-every", "0", "--steps-per-epoch", "10", "--stop-after", "1")
    assert train(tmp_path, "run", *args, epochs=1) == 0
    capsys.readouterr()
    assert resume(tmp_path, "run") == 0
    out = capsys.readouterr().out
    assert "  step " not in out, out
    assert resume(tmp_path, "run", "--epochs", "2", "--log-every", "5") == 0  # and a resume may change it
    assert "  step 5/10 " in capsys.readouterr().out


def test_a_curriculum_without_cutoffs_prints_no_cutoff(tmp_path, capsys):
    """Phases of window lengths only: no line speaks of a cutoff."""
    args = ("--cutoffs", "", "--seq-lens", "8,16", "--min-epochs", "1,1", "--log-every", "3", "--stop-after", "7")
    assert train(tmp_path, "run", *args) == 0
    assert resume(tmp_path, "run", "--stop-after", "1") == 0
    out = capsys.readouterr().out
    assert "  step 3/6 " in out and "Epoch 0 avg_loss=" in out and "resumed " in out, out
    assert "cutoff" not in out.lower(), out


def test_a_transition_at_the_runs_last_epoch_end_says_its_phase_trains_no_step(tmp_path, capsys):
    """The raise to full at the end of the last epoch is noted: that phase never trains in this run."""
    assert train(tmp_path, "run", epochs=3) == 0
    out = capsys.readouterr().out
    assert "CUTOFF RAISED: 16 -> full" in out
    assert "note: the run ends here, so phase full trains no step; resume with --epochs N (N > 3) to train it" in out


def test_the_resume_hint_is_the_command_as_it_was_invoked(tmp_path, monkeypatch, capsys):
    """Run by a path (./run.sh runs .venv/bin/chunklm), the hint repeats that path; otherwise it says chunklm."""
    monkeypatch.setattr(sys, "argv", [".venv/bin/chunklm"])
    assert train(tmp_path, "a", "--stop-after", "1") == 0
    assert f"resume with: .venv/bin/chunklm train --ckpt {tmp_path / 'a.pt'} --resume" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", ["chunklm"])
    assert train(tmp_path, "b", "--stop-after", "1") == 0
    assert f"resume with: chunklm train --ckpt {tmp_path / 'b.pt'} --resume" in capsys.readouterr().out


def test_the_command_found_on_path_is_named_by_its_name(tmp_path, monkeypatch):
    """Run through PATH (argv[0] is then the full path), the command is `chunklm`; run by another path, that path."""
    from runs.console import invoked_as

    program = tmp_path / "bin" / "chunklm"
    program.parent.mkdir()
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    monkeypatch.setenv("PATH", str(program.parent))
    monkeypatch.setattr(sys, "argv", [str(program)])
    assert invoked_as() == "chunklm"
    monkeypatch.setenv("PATH", str(tmp_path))
    assert invoked_as() == str(program)
    monkeypatch.setattr(sys, "argv", ["/somewhere/runs/cli.py"])
    assert invoked_as() == "chunklm"


def test_without_tqdm_a_terminal_gets_plain_lines(monkeypatch, capsys):
    """The progress bar is optional: on a terminal without tqdm installed, lines print as they would in a pipe."""
    from runs.console import Console

    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm raises ImportError
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    console = Console(enabled=True)
    console.open_bar(total=3, done=0, epoch=0)
    console.advance(loss=1.0, lr=1e-3)
    console.line("step 1/3 loss=1.00")
    console.close_bar()
    assert console.bar is None and capsys.readouterr().out == "step 1/3 loss=1.00\n"


def test_plot_without_matplotlib_is_refused_before_training(tmp_path, monkeypatch, capsys):
    """--plot needs the plot extra. Without matplotlib the line is refused at once naming the extra; nothing written."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    assert train(tmp_path, "run", "--plot") == 2
    err = capsys.readouterr().err
    assert 'pip install "curriculum-engine[plot]"' in err and err.count("\n") == 1, err
    assert _files(tmp_path) == []
