"""benchmarks/gpu_run.sh plans its steps by priority within its time limit (its --dry-run, which runs nothing)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_run.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def plan(*args: str) -> list[tuple[str, int | None, str]]:
    """(step, timeout or None when skipped, command) per step, from a dry run."""
    out = subprocess.run(["bash", str(SCRIPT), "--dry-run", *args], capture_output=True, text=True, check=True).stdout
    steps = []
    for line in out.splitlines():
        if m := re.match(r"== (\w+): timeout (\d+) s: (.*)", line):
            steps.append((m[1], int(m[2]), m[3]))
        elif m := re.match(r"== (\w+): SKIPPED", line):
            steps.append((m[1], None, ""))
    return steps


def test_steps_run_in_priority_order_within_the_time_limit():
    """conv, seed, compare, checks, cli, long, efficacy; the timeouts, each used up, fit the time limit."""
    steps = plan("540")
    assert [s for s, _, _ in steps] == ["conv", "seed", "compare", "checks", "cli", "long", "efficacy"]
    assert steps[0][1] is not None and sum(t or 0 for _, t, _ in steps) <= 540
    assert steps[-1][1] is None  # 540 s go to the gpu_check sections when each takes its whole cap


def test_efficacy_alone_gets_the_time_limit_and_stops_itself_before_its_timeout(tmp_path):
    """--only efficacy: the seed plan on the GPU, --max-minutes 15 s short of its timeout; --resume and -- passed on."""
    previous = tmp_path / "results.json"
    previous.write_text("{}")
    [(step, timeout, command)] = plan("--only", "efficacy", "--resume", str(previous), "200", "--", "--no-compile")
    assert step == "efficacy" and timeout == 190
    assert "--plan seed --device auto" in command and "--max-minutes 2.92" in command
    assert command.endswith(f"--resume {previous} --no-compile")
    [(_, _, afresh)] = plan("--only", "efficacy", "--resume", str(tmp_path / "missing.json"), "200")
    assert "--resume" not in afresh


def test_a_step_with_too_little_time_left_is_skipped():
    """Less time left than a step's floor skips it rather than starting it to be cut off."""
    conv, efficacy = plan("--only", "conv,efficacy", "60")
    assert conv[:2] == ("conv", 50) and efficacy == ("efficacy", None, "")


def test_results_go_to_out_or_a_new_folder_per_card_and_run(tmp_path):
    """--out DIR reaches every step's command; without it the default is benchmarks/results/gpu-<card>-<date>/."""
    steps = plan("--out", str(tmp_path / "r"), "540")
    assert all(f"--out {tmp_path / 'r'}" in command for _, _, command in steps if command)
    out = subprocess.run(["bash", str(SCRIPT), "--dry-run", "540"], capture_output=True, text=True, check=True).stdout
    assert re.match(r"== results in benchmarks/results/gpu-[a-z0-9-]+-\d{8}-\d{6}\n", out)
