"""``bench_engine.py`` of two source trees, run alternately, medians side by side.

    python benchmarks/compare_engine.py BEFORE_TREE AFTER_TREE [--rounds 4] [--quick]
    python benchmarks/compare_engine.py BEFORE_TREE AFTER_TREE --fine [--rounds 10]

Each round runs ``benchmarks/bench_engine.py`` once from each tree (BEFORE first on odd rounds,
AFTER first on even ones), each in its own process with the tree first on ``sys.path``, so that
a machine whose load changes over time slows both alike. Prints every run's raw table, then per
row the median over rounds of each tree and their ratio (after / before). Make the BEFORE tree
with ``git worktree add --detach /tmp/before <commit>``.

``--fine`` measures four rows only, in many short batches (40 batches of 2,000 calls per
process and row, the rows interleaved), for a machine so loaded that a 200,000-call median moves
by 2x between runs: per row it prints the median over rounds of each process's fastest batch
(the least disturbed) and of its median batch.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROW = re.compile(r"^\| (?P<name>[^|]+?) \| (?P<us>[0-9.]+) \|")


def run(tree: Path, quick: bool) -> tuple[str, dict[str, float]]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, str(tree / "benchmarks" / "bench_engine.py")] + (["--quick"] if quick else [])
    out = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=True).stdout
    rows = {m["name"]: float(m["us"]) for m in map(ROW.match, out.splitlines()) if m and m["name"] != "call"}
    return out, rows


FINE = """
import itertools, statistics, sys, time
from benchmarks.bench_engine import engine_step_transition, engine_with
def batch(fn, n=2000):
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6
loss = itertools.count()
quiet, stepping, wide = engine_with(50, 0), engine_step_transition(50), engine_step_transition(1000)
for _ in range(1010):  # full windows
    quiet.step_end(loss=float(next(loss) % 97)); stepping.step_end(loss=float(next(loss) % 97))
    wide.step_end(loss=float(next(loss) % 97))
calls = {
    "step_end, no step-end transition (window 50, history 0)": lambda: quiet.step_end(loss=float(next(loss) % 97)),
    "step_end, a step-end transition guarded by Plateau (window 50)": (
        lambda: stepping.step_end(loss=float(next(loss) % 97))
    ),
    "step_end, a step-end transition guarded by Plateau (window 1000)": (
        lambda: wide.step_end(loss=float(next(loss) % 97))
    ),
    "epoch_end, guards false (no transition)": lambda: quiet.epoch_end(),
}
times = {name: [] for name in calls}
for _ in range(40):
    for name, fn in calls.items():
        times[name].append(batch(fn))
for name, ts in times.items():
    print(f"| {name} | {min(ts):.3f} | {statistics.median(ts):.3f} |")
"""


def run_fine(tree: Path) -> tuple[str, dict[str, tuple[float, float]]]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, "-c", FINE], cwd=tree, env=env, capture_output=True, text=True, check=True
    ).stdout
    rows = {}
    for line in out.splitlines():
        name, fastest, median = (part.strip() for part in line.strip("|").split("|"))
        rows[name] = (float(fastest), float(median))
    return out, rows


def fine(trees: dict[str, Path], rounds: int) -> None:
    results: dict[str, list[dict[str, tuple[float, float]]]] = {"before": [], "after": []}
    for r in range(rounds):
        for which in ["before", "after"] if r % 2 == 0 else ["after", "before"]:
            out, rows = run_fine(trees[which])
            results[which].append(rows)
            print(
                f"## round {r + 1}, {which} ({trees[which]}): "
                f"| row | fastest batch | median batch | (µs per call)\n{out}",
                flush=True,
            )
    print(
        f"## over {rounds} processes per tree: median of the fastest batches, "
        "median of the median batches (µs per call)\n"
    )
    print("| call | before, fastest | after, fastest | ratio | before, median | after, median | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in results["after"][0]:
        b = [statistics.median(rows[name][k] for rows in results["before"]) for k in (0, 1)]
        a = [statistics.median(rows[name][k] for rows in results["after"]) for k in (0, 1)]
        print(f"| {name} | {b[0]:.2f} | {a[0]:.2f} | {a[0] / b[0]:.2f} | {b[1]:.2f} | {a[1]:.2f} | {a[1] / b[1]:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--fine", action="store_true")
    args = parser.parse_args()
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    if args.fine:
        fine(trees, args.rounds)
        return
    results: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    for r in range(args.rounds):
        order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
        for which in order:
            out, rows = run(trees[which], args.quick)
            results[which].append(rows)
            print(f"## round {r + 1}, {which} ({trees[which]})\n\n{out}", flush=True)
    names = list(results["after"][0])
    print(f"## medians over {args.rounds} rounds (µs per call)\n")
    print("| call | before | after | after / before |")
    print("|---|---:|---:|---:|")
    for name in names:
        before = statistics.median(rows[name] for rows in results["before"] if name in rows)
        after = statistics.median(rows[name] for rows in results["after"])
        print(f"| {name} | {before:.2f} | {after:.2f} | {after / before:.2f} |")


if __name__ == "__main__":
    main()
