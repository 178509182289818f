"""Multi-process training with torchrun (gloo on CPU): collective decisions, rank-0 files, exact resume."""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time

import torch.multiprocessing as mp

from runs.checkpoint import load_checkpoint
from runs.cli import main
from tests.utils import REPO, TINY, TINY_MODEL, assert_same_run, launch, sources

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "runs.cli"]


def torchrun(tmp, name, *extra) -> str:
    """`chunklm train` under torchrun with 2 processes; its output. Fails the test on a non-zero exit,
    or after 300 s, ending every process it started."""
    return launch([*TORCHRUN, "train", *extra, "--ckpt", str(tmp / f"{name}.pt")], timeout=300)


# `chunklm train` whose rank 1 SIGKILLs itself after global step 10 on torchrun's first attempt only
# (a test hook, not a flag).
_KILL_RANK_1_ONCE = """
import os, signal, sys
sys.path.insert(0, {repo!r})
from runs import console
from runs.cli import main

on_step = console.Reporter.on_step

def die_once(self, info):
    on_step(self, info)
    if info.global_step == 10 and os.environ["RANK"] == "1" and os.environ["TORCHELASTIC_RESTART_COUNT"] == "0":
        os.kill(os.getpid(), signal.SIGKILL)

console.Reporter.on_step = die_once
sys.exit(main(sys.argv[1:]))
"""


def test_two_processes_raise_together_and_resume_exactly(tmp_path):
    """A 2-process gloo run raises on both ranks at once; stopped and resumed it equals the uninterrupted run;
    so does a run whose rank 1 is killed mid-epoch and which torchrun restarts (--max-restarts 1, --resume auto):
    the job finishes by itself from its last checkpoint (step 8; killed after step 10 of 18)."""
    out = torchrun(
        tmp_path, "whole", *TINY, "--batch-size", "1", "--epochs", "3", "--resume", "auto"
    )  # nothing there: fresh
    assert f"no run in {tmp_path / 'whole.pt'}: starting fresh" in out
    assert "global batch = 1 x 2 accum x 2 processes = 4 windows/step" in out
    assert out.count("Epoch 0 avg_loss=") == 1  # rank 0 alone prints
    assert "Epoch 1 🚀 CUTOFF RAISED: 4 -> 8" in out
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "whole.epochs.csv",
        "whole.history.json",
        "whole.pt",
        "whole.steps.csv",
    ]
    out = torchrun(tmp_path, "split", *TINY, "--batch-size", "1", "--epochs", "3", "--stop-after", "8")
    split = shlex.quote(str(tmp_path / "split.pt"))  # the same launch, not a single-process command
    assert (
        f"resume with: torchrun --standalone --nproc_per_node=2 --no-python chunklm train --ckpt {split} --resume"
        in out
    )
    out = torchrun(tmp_path, "split", "--resume")
    history = assert_same_run(tmp_path, "whole", "split")
    assert [r.dest for r in history] == ["cutoff_4", "cutoff_8", "cutoff_16", "full"]
    assert len(load_checkpoint(tmp_path / "split.pt").rng_per_rank) == 2

    # A different world size is refused with a clear message (the data each rank sees would change).
    assert main(["train", "--ckpt", str(tmp_path / "split.pt"), "--resume"]) == 2

    script = tmp_path / "kill_rank_1_once.py"
    script.write_text(_KILL_RANK_1_ONCE.format(repo=str(REPO)))
    out = launch(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "--max-restarts=1",
            str(script),
            "train",
            *TINY,
            "--batch-size",
            "1",
            "--epochs",
            "3",
            "--ckpt-every",
            "4",
            "--resume",
            "auto",
            "--ckpt",
            str(tmp_path / "killed.pt"),
        ],
        timeout=300,
    )
    assert f"no run in {tmp_path / 'killed.pt'}: starting fresh" in out
    assert f"resuming {tmp_path / 'killed.pt'} at step 8" in out
    assert "done: 10 steps" in out
    assert_same_run(tmp_path, "whole", "killed")


# `chunklm train` whose mixture samplers log what they draw, one JSON line per step, to <ckpt>.rank<R>.jsonl.
_LOG_DRAWS = """
import json, os, sys
sys.path.insert(0, {repo!r})
from policies.mixture import MixtureSampler
from runs.cli import main

next_batch = MixtureSampler.next_batch
log = sys.argv[sys.argv.index("--ckpt") + 1] + ".rank" + os.environ["RANK"] + ".jsonl"

def logged(self):
    batch = next_batch(self)
    with open(log, "a") as f:
        f.write(json.dumps([self.step, self.rank, self.world_size, batch]) + "\\n")
    return batch

MixtureSampler.next_batch = logged
sys.exit(main(sys.argv[1:]))
"""

# A mix that changes at step 7's end. Neither mix divides the 4 windows a rank draws per step, so a rounding
# credit is carried across a stop.
_MIX_CHANGE = """version = 1

[[phases]]
name = "stable"
params = { mix = { general = 2, target = 1 } }

[[phases]]
name = "anneal"
params = { mix = { general = 1, target = 2 } }

[[transitions]]
source = "stable"
dest = "anneal"
when = "step_end"
guards = [{ type = "MinSteps", n = 7 }]
"""


def test_two_processes_read_disjoint_shards_of_a_mix_and_resume_exactly(tmp_path):
    """Named sources under a 2-process gloo run, the mix changing at step 7: each rank's sampler has its own
    rank of 2, no window is read twice in the whole run (so the ranks' shards are disjoint), and a run stopped
    mid-phase and mid-epoch (step 5) and resumed across the change equals the uninterrupted run, draw for draw."""
    script = tmp_path / "log_draws.py"
    script.write_text(_LOG_DRAWS.format(repo=str(REPO)))
    (tmp_path / "mix.toml").write_text(_MIX_CHANGE)
    args = [*TINY_MODEL, "--log-every", "0", "--epochs", "3", "--curriculum", str(tmp_path / "mix.toml")]
    args[args.index("--data") + 1 : args.index("--data") + 2] = sources(tmp_path)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]

    def draws(name: str) -> list[list]:
        """Per step, both ranks' logged draws: [[step, rank, world_size, batch] of rank 0, of rank 1]."""
        logs = [(tmp_path / f"{name}.pt.rank{r}.jsonl").read_text().splitlines() for r in (0, 1)]
        return [[json.loads(line) for line in lines] for lines in zip(*logs, strict=True)]

    out = launch([*launcher, "train", *args, "--ckpt", str(tmp_path / "whole.pt")], timeout=300)
    assert "global batch = 2 x 2 accum x 2 processes = 8 windows/step" in out
    whole = draws("whole")
    assert len(whole) == 18
    assert all([(s[0], s[1], s[2]) for s in step] == [(i, 0, 2), (i, 1, 2)] for i, step in enumerate(whole, 1))
    read = [tuple(x) for step in whole for _, _, _, batch in step for x in batch]
    assert len(read) == 18 * 8 and len(set(read)) == len(read)  # both sources are larger than what is read
    general = [[sum(name == "general" for name, _ in batch) for _, _, _, batch in step] for step in whole]
    assert all(g in ([2, 2], [3, 3]) for g in general[:7]) and all(g in ([1, 1], [2, 2]) for g in general[7:])

    launch([*launcher, "train", *args, "--stop-after", "5", "--ckpt", str(tmp_path / "split.pt")], timeout=300)
    assert len(draws("split")) == 5
    launch([*launcher, "train", "--ckpt", str(tmp_path / "split.pt"), "--resume"], timeout=300)
    assert draws("split") == whole
    history = assert_same_run(tmp_path, "whole", "split")
    assert [(r.dest, r.global_step) for r in history] == [("stable", 0), ("anneal", 7)]
    saved = load_checkpoint(tmp_path / "split.pt")
    assert list(saved.data["sources"]) == ["general", "target"] and saved.trainer["sampler"]["world_size"] == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _diverge(rank: int, port: int, results) -> None:
    os.environ.update(
        {
            "RANK": str(rank),
            "WORLD_SIZE": "2",
            "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    from runs.distributed import Distributed

    dist = Distributed("cpu")
    try:
        dist.check_same("transition", "a->b@10" if rank == 0 else "a->b@11")
        results.put((rank, "silent"))
    except RuntimeError as exc:
        results.put((rank, str(exc)))
    finally:
        dist.close()


def test_rank_divergence_is_raised_on_every_rank():
    """When ranks disagree on a transition, every rank raises, naming each rank's view."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_diverge, args=(r, port, results)) for r in range(2)]
    for p in procs:
        p.start()
    got = dict(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    for rank in (0, 1):
        assert "ranks diverged on transition: rank 0: a->b@10; rank 1: a->b@11" == got[rank]


# Rank 0 alone fails at its first save (a full disk); rank 1 is then inside the next step's collectives.
_FAIL_ON_RANK_0 = """
import errno, os, sys
from runs import checkpoint
from runs.artifacts import atomic_write
from runs.cli import main

def full_disk(self, path):
    def write(f):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    atomic_write(path, write)

if os.environ["RANK"] == "0":
    checkpoint.Checkpoint.save = full_disk
sys.exit(main(sys.argv[1:]))
"""


def _launch_two_ranks(tmp_path, script: str, *args: str) -> list[subprocess.Popen]:
    """Both ranks as plain processes (no launcher to kill one when the other fails), output in files."""
    port = _free_port()
    procs = []
    for rank in (0, 1):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "LOCAL_WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", script, *args],
                cwd=REPO,
                env=env,
                text=True,
                stdout=open(tmp_path / f"rank{rank}.out", "w"),
                stderr=open(tmp_path / f"rank{rank}.err", "w"),
            )
        )
    return procs


def test_a_failure_on_one_rank_ends_every_rank_within_seconds(tmp_path):
    """An error on rank 0 alone ends both ranks promptly (no launcher to kill them): rank 0 prints it, both exit 1."""
    procs = _launch_two_ranks(
        tmp_path,
        _FAIL_ON_RANK_0,
        "train",
        *TINY,
        "--batch-size",
        "1",
        "--epochs",
        "2",
        "--ckpt",
        str(tmp_path / "run.pt"),
    )
    for p in procs:
        p.wait(timeout=240)  # gloo's own timeout would be 30 minutes
    err0, err1 = (tmp_path / "rank0.err").read_text(), (tmp_path / "rank1.err").read_text()
    assert procs[0].returncode == 1, err0
    assert "chunklm train: error: rank 0: could not write" in err0 and "disk is full" in err0, err0
    assert "Traceback" not in err0
    assert procs[1].returncode == 1, err1
    assert "rank 1 stopping: rank 0 failed: could not write" in err1, err1
    assert not (tmp_path / "run.pt").exists()


# Rank 0 alone fails after the last save, writing the --plot image (a full disk), while rank 1 waits at the end.
_FAIL_AT_THE_PLOT_ON_RANK_0 = """
import errno, os, sys
import matplotlib.figure
from runs.cli import main

def full_disk(self, *args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

if os.environ["RANK"] == "0":
    matplotlib.figure.Figure.savefig = full_disk
sys.exit(main(sys.argv[1:]))
"""


def test_a_failure_in_rank_0s_final_work_ends_every_rank_within_seconds(tmp_path):
    """Rank 0's --plot failing after the last collective ends rank 1 at once, not at the backend's timeout; shown
    once."""
    procs = _launch_two_ranks(
        tmp_path,
        _FAIL_AT_THE_PLOT_ON_RANK_0,
        "train",
        *TINY,
        "--batch-size",
        "1",
        "--epochs",
        "1",
        "--plot",
        "--ckpt",
        str(tmp_path / "run.pt"),
    )
    procs[0].wait(timeout=240)
    rank0_ended = time.monotonic()
    procs[1].wait(timeout=240)  # NCCL would hold it in the final barrier for 10 minutes, gloo for 30
    lag = time.monotonic() - rank0_ended
    out0, err0, err1 = ((tmp_path / name).read_text() for name in ("rank0.out", "rank0.err", "rank1.err"))
    assert procs[0].returncode == 1, err0
    assert "done: 6 steps" in out0  # the run itself finished and saved
    png = tmp_path / "run.png"
    assert (
        err0.count("could not write") == 1
        and f"chunklm train: error: rank 0: could not write {png}: the disk is full" in err0
    ), err0
    assert "Traceback" not in err0 + err1
    assert procs[1].returncode == 1, err1
    assert (
        err1.strip()
        == f"chunklm train: error: rank 1 stopping: rank 0 failed: could not write {png}: "
        + err0.split(f"could not write {png}: ", 1)[1].strip()
    ), err1
    assert lag < 30, lag
    assert load_checkpoint(tmp_path / "run.pt").global_step == 6 and not png.exists()


def test_the_resume_command_repeats_the_launch(monkeypatch):
    """Alone: chunklm; under torchrun: the same number of processes (and nodes)."""
    from runs.distributed import resume_command

    for key in ("TORCHELASTIC_RUN_ID", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    assert resume_command("a b.pt") == "chunklm train --ckpt 'a b.pt' --resume"
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    monkeypatch.setenv("WORLD_SIZE", "16")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    monkeypatch.setenv("GROUP_WORLD_SIZE", "2")
    assert resume_command("c.pt").startswith("torchrun --nnodes=2 --nproc_per_node=8 ")
    monkeypatch.setenv("GROUP_WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert (
        resume_command("c.pt")
        == "torchrun --standalone --nproc_per_node=4 --no-python chunklm train --ckpt c.pt --resume"
    )
