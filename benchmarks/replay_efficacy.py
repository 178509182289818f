"""Where would the raises of the efficacy experiment's plateau arms land under other plateau rules?

    python benchmarks/efficacy.py --quick --out bench_out/efficacy_quick     # records per-step losses
    python benchmarks/replay_efficacy.py bench_out/efficacy_quick/results.json \
        --grid window=10,20 threshold=0.0,0.01 test=relative,welch

Replays the per-step training losses that ``efficacy.py`` saved (``results.json``, exact floats)
for the plateau arms (C, and E: the seed's noisy opening) on ``spectral_curriculum`` with the
experiment's cutoffs and minimum epochs, once per grid setting, and prints the ``chunklm replay``
table per arm and seed: the recorded raises, then each setting's raises with their deciding guard
up to its first departure from the recorded run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import MetricLog, Record  # noqa: E402
from engine.grid import format_table, legend  # noqa: E402
from runs.replay_cmd import grid_axes, settings_grid  # noqa: E402


def recorded_history(plan: dict, raises: list[dict]) -> list[Record]:
    """The plateau arm's raises as history records (efficacy.py keeps their steps and epochs)."""
    n = plan["seq_len"]
    names = [f"cutoff_{c}" for c in (n // 8, n // 4, n // 2)] + ["full"]
    return [
        Record(
            source=names[k],
            dest=names[k + 1],
            global_step=r["step"],
            epoch=r["epoch"],
            step_in_epoch=0,
            point="epoch_end",
            wall_time=0.0,
        )
        for k, r in enumerate(raises)
    ]


def stream_of(losses: list[float], steps_per_epoch: int) -> MetricLog:
    out = MetricLog()
    for i, loss in enumerate(losses, start=1):
        out.append("step_end", {"loss": loss})
        if i % steps_per_epoch == 0:
            out.append("epoch_end", {})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="results.json written by benchmarks/efficacy.py")
    parser.add_argument(
        "--grid", nargs="+", default=["window=50,100,200", "threshold=0.0,0.005,0.01", "test=relative,welch"]
    )
    parser.add_argument("--arms", default="CE")
    args = parser.parse_args()
    data = json.loads(Path(args.results).read_text())
    plan = data["plan"]
    n = plan["seq_len"]
    base = {
        "seq_len": n,
        "cutoffs": (n // 8, n // 4, n // 2),
        "min_epochs": tuple(plan["min_epochs"]),
        "plateau_window": plan["window"],
        "plateau_threshold": plan["threshold"],
        "preserve": True,
        "plateau_test": "relative",
        "plateau_alpha": None,
    }
    axes = grid_axes(args.grid)
    print(
        f"plan: {plan['epochs']} epochs x {plan['steps_per_epoch']} steps; recorded rule: cutoffs {base['cutoffs']}, "
        f"min epochs {base['min_epochs']}, window {plan['window']}, threshold {plan['threshold']} (relative)"
    )
    for r in data["results"]:
        if r["arm"] not in args.arms:
            continue
        stream = stream_of(r["losses"], plan["steps_per_epoch"])
        recorded = recorded_history(plan, r["raises"])
        table = settings_grid(base, axes, stream, recorded)
        own = table.own
        print(
            f"\narm {r['arm']}, seed {r['seed']} ({len(r['losses'])} steps)"
            + ("" if own.departure is None else f"; own settings depart: {own.departure.text()}")
        )
        print(format_table(recorded, [(row.label, row.replay) for row in table.rows], own, word="raise"))
    print()
    print(legend("raise"))


if __name__ == "__main__":
    main()
