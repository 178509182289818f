"""Checkpoints written by earlier versions resume exactly (tests/data/README.md says how they were made).

Exactness holds on one machine (same CPU type, torch build and thread count: docs/checkpoint.md).
So what is compared bit for bit is computed here: the first release's stopped and uninterrupted
runs are recomputed from its commit (``V0_COMMIT``, extracted with ``git archive``), and the
stopped one resumed with today's code must equal the uninterrupted one. The committed files
(written on another CPU) are compared within the tolerances below; their decisions (phases, raise
steps, actions) exactly.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
import torch

from engine import History
from runs.artifacts import RunFiles, read_csv
from runs.checkpoint import load_checkpoint
from tests.utils import DATA, REPO, TINY, assert_same_run, resume

V0 = Path(__file__).parent / "data" / "v0_tiny"
V0_COMMIT = "ba275fd"  # the first release's code, which wrote tests/data/v0_tiny

# Tolerances for the committed files, made on another machine. Another CPU (or another vector ISA)
# sums floats in another order: over these 18 steps the weights differed by at most 8.4e-9 (AMD EPYC
# against the development machine) and 3.7e-9 (an AVX-512 Xeon), the optimizer moments by at most
# 1.2e-7 of each tensor's largest entry. One AdamW step moves every trained weight by about the
# learning rate (2e-4), so a run that took another step, another LR or other data is far outside
# WEIGHT_ATOL. The CSVs of the first release hold 6 significant digits (rounding: 5e-6 relative).
WEIGHT_ATOL = 1e-6
MOMENT_RTOL_OF_MAX = 1e-5
FLOAT_RTOL = 1e-5
# The plateau evidence's relative improvement is a difference of two loss means over one of them:
# losses that differ by a relative d (float32, a few ulp: ~1e-7) move it by about d in absolute terms
# (measured: 4.3e-8 with ATEN_CPU_CAPABILITY=default). The run's threshold is 1.0, far from any value.
EVIDENCE_ATOL = 1e-6


@pytest.fixture
def v0_run(tmp_path: Path) -> Path:
    for f in V0.iterdir():
        shutil.copy(f, tmp_path / f.name)
    return tmp_path


def _resume_without_deciders(run: Path, name: str) -> History:
    """Resume ``name``; v0 recorded no deciding guard, so drop the ones the resumed run adds before comparing."""
    assert resume(run, name) == 0
    files = RunFiles(run / f"{name}.pt")
    history = files.read_history()
    assert [r.decision is None for r in history] == [True, False, False]
    history = History([attrs.evolve(r, decision=None) for r in history])
    files.write_history(history)
    return history


def _close(a, b, where: str = "", abs_tol: float = 1e-9) -> None:
    """Equal structures; floats within FLOAT_RTOL relative, or ``abs_tol``."""
    if isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, (int, float)) and isinstance(b, (int, float)), where
        assert math.isclose(a, b, rel_tol=FLOAT_RTOL, abs_tol=abs_tol), f"{where}: {a} != {b}"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _close(a[key], b[key], f"{where}.{key}", abs_tol)
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{where}[{i}]", abs_tol)
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _csv_close(a: Path, b: Path) -> None:
    rows_a, rows_b = read_csv(a), read_csv(b)
    assert [r.keys() for r in rows_a] == [r.keys() for r in rows_b]
    for ra, rb in zip(rows_a, rows_b):
        _close(
            {k: float(v) if "." in v or "e" in v else v for k, v in ra.items()},
            {k: float(v) if "." in v or "e" in v else v for k, v in rb.items()},
            a.name,
        )


def assert_close_run(run: Path, a: str, b: str) -> None:
    """The same run within the tolerances above; its decisions exactly."""
    ca, cb = load_checkpoint(run / f"{a}.pt"), load_checkpoint(run / f"{b}.pt")
    assert (ca.global_step, ca.epoch) == (cb.global_step, cb.epoch)
    ta, tb = ca.trainer, cb.trainer
    assert ta["model"].keys() == tb["model"].keys()
    for key in ta["model"]:
        x, y = ta["model"][key], tb["model"][key]
        assert x.shape == y.shape and x.dtype == y.dtype, key
        if x.is_floating_point():
            assert (x - y).abs().max().item() <= WEIGHT_ATOL, key
        else:
            assert torch.equal(x, y), key
    for pa, pb in zip(ta["optimizer"]["state"].values(), tb["optimizer"]["state"].values()):
        for key in pa:
            scale = pb[key].abs().max().item()
            assert (pa[key] - pb[key]).abs().max().item() <= MOMENT_RTOL_OF_MAX * scale, key
    _close(ta["schedule"], tb["schedule"], "schedule")
    fa, fb = RunFiles(run / f"{a}.pt"), RunFiles(run / f"{b}.pt")
    _csv_close(fa.steps, fb.steps)
    _csv_close(fa.epochs, fb.epochs)
    ha, hb = fa.read_history(), fb.read_history()
    decisions = [
        [(r.source, r.dest, r.global_step, r.epoch, r.point, [x.action for x in r.actions]) for r in h]
        for h in (ha, hb)
    ]
    assert decisions[0] == decisions[1]  # exact
    _close([r.comparable() for r in ha], [r.comparable() for r in hb], "history", abs_tol=EVIDENCE_ATOL)


def test_v0_checkpoint_resumes_to_the_committed_v0_run(v0_run: Path) -> None:
    """The committed mid-epoch checkpoint of the first release continues, with today's code, into that
    release's committed full run: the same decisions, the same floats within the stated tolerances."""
    _resume_without_deciders(v0_run, "stopped")
    assert_close_run(v0_run, "full", "stopped")


def test_v0_checkpoint_keeps_its_own_settings_when_defaults_change(v0_run: Path, capsys) -> None:
    """The v0 run used smooth kernels and exact raises, the defaults then; a resume keeps them, not today's.
    It recorded no data identity: the resume says once that its data is not checked, and records it from then on."""
    history = _resume_without_deciders(v0_run, "stopped")
    assert (
        capsys.readouterr().out.count("note: this checkpoint was written before checkpoints recorded their data") == 1
    )
    assert load_checkpoint(v0_run / "stopped.pt").data["paths"] == [str(Path(DATA).resolve())]
    settings = load_checkpoint(v0_run / "stopped.pt").settings
    assert (settings.kernel_init, settings.preserve) == ("smooth", True)
    config = settings.to_config()
    assert (config.model.kernel_init.value, config.preserve) == ("smooth", True)
    raises = [a for r in history for a in r.actions if a.action.startswith("SetCutoff(")]
    assert raises and all(
        a.action in ("SetCutoff(8)", "SetCutoff(16)", "SetCutoff(None)") for a in raises
    )  # preserve=True


# The first release's two runs, made by its own code on this machine (one process, one thread).
V0_RUNS = """
import sys
from runs.cli import main
out, *tiny = sys.argv[1:]
for name, extra in (("full", []), ("stopped", ["--stop-after", "9"])):
    code = main(["train", *tiny, "--epochs", "3", "--ckpt", f"{out}/{name}.pt", *extra])
    assert code == 0, (name, code)
"""


def _v0_code(into: Path) -> bool:
    """Extract the first release's code; False when this is not a git checkout with that commit."""
    try:
        archive = subprocess.run(["git", "archive", V0_COMMIT], cwd=REPO, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    if archive.returncode != 0:
        return False
    into.mkdir()
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return True


def test_v0_runs_made_here_resume_bit_for_bit(tmp_path: Path) -> None:
    """The first release's stopped and uninterrupted runs, computed on this machine by its own code:
    the stopped one resumed by today's code equals the uninterrupted one bit for bit."""
    code = tmp_path / "v0_code"
    if not _v0_code(code):
        pytest.skip(f"needs the git history (commit {V0_COMMIT}) to rebuild the first release's runs")
    runs = tmp_path / "runs"
    runs.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(code)}  # its modules, not today's
    proc = subprocess.run(
        [sys.executable, "-c", V0_RUNS, str(runs), *TINY], cwd=code, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert TINY[1] == DATA
    _resume_without_deciders(runs, "stopped")
    assert_same_run(runs, "full", "stopped", csv_digits=6)  # v0 wrote 6 significant digits; both sides made here
