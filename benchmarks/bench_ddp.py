"""Two processes against one with the same global batch: do the loss curves agree within noise?

    python benchmarks/bench_ddp.py [--steps 600]

Runs `chunklm train` once in one process (batch 16) and once under torchrun with two gloo
processes (batch 8 each), same seed and everything else equal, then compares the per-step losses:
the mean over blocks of 100 steps for each run, their difference, and, as the noise scale, the
standard deviation of the single run's per-step loss within each block divided by sqrt(100).
The two runs see different windows (each rank samples its own), so only agreement within noise is
expected, not equality.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def losses(path: Path) -> list[float]:
    with open(path) as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=600)
    args = parser.parse_args()
    common = [
        "train",
        "--seq-len",
        "128",
        "--kernel-len",
        "32",
        "--chunk",
        "4",
        "--d-model",
        "64",
        "--n-layers",
        "2",
        "--accum-steps",
        "1",
        "--steps-per-epoch",
        str(args.steps),
        "--epochs",
        "1",
        "--lr",
        "0.003",
        "--log-every",
        "0",
        "--seed",
        "0",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        one = Path(tmp) / "one.pt"
        two = Path(tmp) / "two.pt"
        subprocess.run(
            [sys.executable, "-m", "runs.cli", *common, "--batch-size", "16", "--ckpt", str(one)],
            cwd=REPO,
            env=env,
            check=True,
        )
        subprocess.run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc_per_node=2",
                "-m",
                "runs.cli",
                *common,
                "--batch-size",
                "8",
                "--ckpt",
                str(two),
            ],
            cwd=REPO,
            env=env,
            check=True,
        )
        a = losses(one.with_name("one.steps.csv"))
        b = losses(two.with_name("two.steps.csv"))
    block = 100
    print("| steps | 1 process, batch 16 | 2 processes, batch 8 each | difference | noise (std/sqrt(n)) |")
    print("|---|---:|---:|---:|---:|")
    diffs = []
    for i in range(0, len(a), block):
        ma, mb = statistics.fmean(a[i : i + block]), statistics.fmean(b[i : i + block])
        noise = statistics.stdev(a[i : i + block]) / math.sqrt(block)
        diffs.append(abs(ma - mb) / noise)
        print(f"| {i + 1}-{i + block} | {ma:.4f} | {mb:.4f} | {ma - mb:+.4f} | {noise:.4f} |")
    print(
        f"\nmedian |difference| / noise = {statistics.median(diffs):.2f}; final-block relative difference "
        f"{100 * (statistics.fmean(b[-block:]) / statistics.fmean(a[-block:]) - 1):+.2f}%"
    )


if __name__ == "__main__":
    main()
