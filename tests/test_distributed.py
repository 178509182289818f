"""Multi-process training with torchrun (gloo on CPU): collective decisions, rank-0 files, exact resume."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import torch.multiprocessing as mp

from runs.checkpoint import load_checkpoint
from runs.cli import main
from tests.test_cli import REPO, TINY, assert_same_run

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "runs.cli"]


def torchrun(tmp, name, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [*TORCHRUN, "train", *extra, "--ckpt", str(tmp / f"{name}.pt")],
        cwd=REPO, capture_output=True, text=True, env=env, timeout=300,
    )
    return proc.returncode, proc.stdout + proc.stderr


def test_two_processes_raise_together_and_resume_exactly(tmp_path):
    """A 2-process gloo run raises on both ranks at once; stopped and resumed it equals the uninterrupted run."""
    rc, out = torchrun(tmp_path, "whole", *TINY, "--batch-size", "1", "--epochs", "3")
    assert rc == 0, out
    assert "global batch = 1 x 2 accum x 2 processes = 4 windows/step" in out
    assert out.count("Epoch 0 avg_loss=") == 1  # rank 0 alone prints
    assert "Epoch 1 🚀 CUTOFF RAISED: 4 -> 8" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["whole.epochs.csv", "whole.history.json", "whole.pt", "whole.steps.csv"]
    rc, out = torchrun(tmp_path, "split", *TINY, "--batch-size", "1", "--epochs", "3", "--stop-after", "8")
    assert rc == 0, out
    rc, out = torchrun(tmp_path, "split", "--resume")
    assert rc == 0, out
    history = assert_same_run(tmp_path, "whole", "split")
    assert [r.dest for r in history] == ["cutoff_4", "cutoff_8", "cutoff_16", "full"]
    assert len(load_checkpoint(tmp_path / "split.pt")["rng_per_rank"]) == 2

    # A different world size is refused with a clear message (the data each rank sees would change).
    assert main(["train", "--ckpt", str(tmp_path / "split.pt"), "--resume"]) == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _diverge(rank: int, port: int, results) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    from runs.train_cmd import _Distributed

    dist = _Distributed("cpu")
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
