"""``bench_engine.py`` of two source trees, run alternately, medians side by side.

    python benchmarks/compare_engine.py BEFORE_TREE AFTER_TREE [--rounds 4] [--quick]

Each round runs ``benchmarks/bench_engine.py`` once from each tree (BEFORE first on odd rounds,
AFTER first on even ones), each in its own process with the tree first on ``sys.path``, so that
a machine whose load changes over time slows both alike. Prints every run's raw table, then per
row the median over rounds of each tree and their ratio (after / before). Make the BEFORE tree
with ``git worktree add --detach /tmp/before <commit>``.
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
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
