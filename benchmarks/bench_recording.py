"""What recording the metric stream costs: ``step_end`` with ``record_metrics`` off and on, and the
size of a 100k-step run's recorded state.

    python benchmarks/bench_recording.py [--quick]

Per-call cost: two engines on the same curriculum (the spectral case: the phase has only an
epoch-end transition guarded by MinEpoch and a Plateau, so a step_end validates, counts, lets the
Plateau observe, and does not call into the machine), fed ``step_end(loss=..., lr=...)``; rounds
alternate off, on, off, on, ... in one process; the median microseconds per call of each, and their
ratio. Size: a run of 100,000 steps (loss and lr per step, a val_loss epoch end every 1,000 steps)
recorded, then ``engine.state_dict()``: the JSON bytes of its ``recorded`` entry and of the whole
state, the time of the first ``state_dict()`` and of a later one, and, for scale, the JSON of the
same floats written as a list.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import statistics
import subprocess
import time

from engine import Curriculum, CurriculumEngine, Phase, Transition
from policies import MinEpoch, Plateau, all_of


def curriculum() -> Curriculum:
    return Curriculum(
        [Phase("a", params={"cutoff": 128}), Phase("b", params={"cutoff": 256})],
        [Transition("a", "b", [all_of(MinEpoch(10**9), Plateau(window=50))])],
    )


def started(record: bool) -> CurriculumEngine:
    engine = CurriculumEngine(curriculum(), record_metrics=record)
    engine.start()
    return engine


def loss_and_lr(n: int, seed: int = 0) -> list[tuple[float, float]]:
    """A noisy falling loss (every bit of the mantissa random) and a cosine LR."""
    rng = random.Random(seed)
    return [
        (2.0 + 3.0 * math.exp(-i / 20000) + 0.1 * rng.random(), 2e-4 * (0.55 + 0.45 * math.cos(math.pi * i / n)))
        for i in range(n)
    ]


def per_call(engine: CurriculumEngine, values: list[tuple[float, float]]) -> float:
    step_end = engine.step_end
    t0 = time.perf_counter()
    for loss, lr in values:
        step_end(loss, lr=lr)
    return (time.perf_counter() - t0) / len(values) * 1e6


def bench_calls(rounds: int, n: int) -> dict:
    values = loss_and_lr(n)
    engines = {False: started(False), True: started(True)}
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(rounds):
        for record in (False, True):
            times[record].append(per_call(engines[record], values))
    off, on = statistics.median(times[False]), statistics.median(times[True])
    return {
        "off_us": off,
        "on_us": on,
        "ratio": on / off,
        "rounds": rounds,
        "calls_per_round": n,
        "off_all": times[False],
        "on_all": times[True],
    }


def bench_size(steps: int, per_epoch: int) -> dict:
    engine = started(True)
    for i, (loss, lr) in enumerate(loss_and_lr(steps), start=1):
        engine.step_end(loss, lr=lr)
        if i % per_epoch == 0:
            engine.epoch_end(val_loss=loss - 0.1)
    t0 = time.perf_counter()
    state = engine.state_dict()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    engine.state_dict()
    again = time.perf_counter() - t0
    as_list = json.dumps([[p, m] for p, m in engine.recorded.stream()])
    return {
        "steps": steps,
        "recorded_json_bytes": len(json.dumps(state["recorded"])),
        "state_json_bytes": len(json.dumps(state)),
        "raw_float64_bytes": 8 * (2 * steps + steps // per_epoch),
        "plain_list_json_bytes": len(as_list),
        "first_state_dict_s": first,
        "later_state_dict_s": again,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer rounds and a 10k-step size run")
    args = parser.parse_args()
    rounds, n, steps = (3, 5000, 10_000) if args.quick else (9, 20_000, 100_000)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"commit {commit}, python {platform.python_version()}, {platform.processor() or platform.machine()}")
    calls = bench_calls(rounds, n)
    print(f"step_end(loss, lr=...), spectral case, {rounds} alternated rounds of {n} calls each (median):")
    print("| record_metrics | us per step_end |")
    print("|---|---|")
    print(f"| off | {calls['off_us']:.2f} |")
    print(f"| on | {calls['on_us']:.2f} |")
    print(
        f"on/off = {calls['ratio']:.3f}; rounds off: {[round(t, 2) for t in calls['off_all']]}, on: "
        f"{[round(t, 2) for t in calls['on_all']]}"
    )
    size = bench_size(steps, 1000)
    print(f"\nrecorded state of a {steps}-step run (loss and lr per step, val_loss every 1000 steps):")
    for key, value in size.items():
        print(f"  {key}: {value:.4f}" if isinstance(value, float) else f"  {key}: {value}")


if __name__ == "__main__":
    main()
