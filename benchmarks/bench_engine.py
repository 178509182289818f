"""Engine cost per call, against a hand-written inline plateau check.

    python benchmarks/bench_engine.py [--quick]

Measures microseconds per ``engine.step_end`` with nothing to evaluate: the current phase has
only an epoch-end transition (the spectral curriculum's case), so the call validates the loss,
counts the step, lets the one Plateau observe it, and does not call into the ``transitions``
machine; for several plateau windows and history lengths; ``step_end`` where the phase has a
step-end transition guarded by a Plateau (the machine is triggered, the Plateau decides, and its
state is copied so that a failing call could undo the observation), at windows 50 and 1000; ``epoch_end``
with and without a transition; and the same plateau check written inline, as a loop author would
without the engine.
Prints a Markdown table (median of repeats), with each cost as a share of one ChunkLM optimizer
step at the demo config.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections import deque

from engine import Curriculum, CurriculumEngine, Phase, Point, Transition
from policies import MinEpoch, MinSteps, Plateau, all_of


def per_call_us(fn, n: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(times)


def back_and_forth(floor, window: int, when: Point) -> CurriculumEngine:
    """Two phases, each leaving at ``when`` on ``floor`` (never holds) and a Plateau; started."""
    cur = Curriculum(
        [Phase("a"), Phase("b")],
        [Transition(s, d, [all_of(floor, Plateau(window=window))], when=when) for s, d in (("a", "b"), ("b", "a"))],
    )
    eng = CurriculumEngine(cur)
    eng.start()
    return eng


def engine_with(window: int, history: int) -> CurriculumEngine:
    """Leaving at epoch end on MinEpoch and a Plateau; ``history`` forced transitions."""
    eng = back_and_forth(MinEpoch(10**9), window, Point.EPOCH_END)
    for i in range(history):
        eng.force("b" if eng.phase.name == "a" else "a", reason="fill the history")
    return eng


def engine_step_transition(window: int) -> CurriculumEngine:
    """Leaving at step end on a MinSteps that never holds and a Plateau: every step_end triggers
    the machine and evaluates both guards (none is skipped)."""
    return back_and_forth(MinSteps(10**9), window, Point.STEP_END)


class InlinePlateau:
    """What a loop author writes by hand: a deque and two running sums."""

    def __init__(self, window: int, threshold: float = 0.005) -> None:
        self.window, self.threshold = window, threshold
        self.values: deque = deque()
        self.older = self.newer = 0.0

    def step(self, loss: float) -> None:
        if not math.isfinite(loss):
            return
        half = self.window // 2
        self.values.append(loss)
        self.newer += loss
        if len(self.values) > half and len(self.values) - 1 >= half:
            moved = self.values[-half - 1]
            self.newer -= moved
            self.older += moved
        if len(self.values) > self.window:
            self.older -= self.values.popleft()

    def plateaued(self) -> bool:
        if len(self.values) < self.window:
            return False
        h = self.window // 2
        old, new = self.older / h, self.newer / h
        return old != 0 and (old - new) / abs(old) < self.threshold


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, repeats = (20_000, 3) if args.quick else (200_000, 7)
    rows = []
    for window in (50, 500, 5000):
        for history in (0, 1000):
            eng = engine_with(window, history)
            loss = iter(range(10**9))
            us = per_call_us(lambda: eng.step_end(loss=float(next(loss) % 97)), n, repeats)
            rows.append((f"step_end, no step-end transition (window {window}, history {history})", us))
    for window in (50, 1000):
        eng = engine_step_transition(window)
        loss = iter(range(10**9))
        for _ in range(window):  # a full window: the Plateau computes its improvement every step
            eng.step_end(loss=float(next(loss) % 97))
        us = per_call_us(lambda: eng.step_end(loss=float(next(loss) % 97)), n // 10, repeats)
        rows.append((f"step_end, a step-end transition guarded by Plateau (window {window})", us))
    inline = InlinePlateau(50)
    loss = iter(range(10**9))
    rows.append(
        (
            "inline plateau update (window 50), no engine",
            per_call_us(lambda: inline.step(float(next(loss) % 97)), n, repeats),
        )
    )

    eng = engine_with(50, 0)
    rows.append(("epoch_end, guards false (no transition)", per_call_us(lambda: eng.epoch_end(), n // 10, repeats)))

    def fire() -> None:
        cur = Curriculum([Phase("a"), Phase("b")], [Transition("a", "b", [MinEpoch(1)])])
        e = CurriculumEngine(cur)
        e.start()
        t0 = time.perf_counter()
        e.epoch_end()
        fire.samples.append((time.perf_counter() - t0) * 1e6)

    fire.samples = []
    for _ in range(max(200, n // 100)):
        fire()
    rows.append(("epoch_end that fires a transition", statistics.median(fire.samples)))

    step_us = demo_step_us(3 if args.quick else 10)
    print("| call | µs per call (median) | share of one demo ChunkLM optimizer step |")
    print("|---|---:|---:|")
    for name, us in rows:
        print(f"| {name} | {us:.2f} | {100 * us / step_us:.4f}% |")
    print(
        "\none ChunkLM optimizer step at the demo config (batch 8 x 256 bytes, forward + backward + AdamW): "
        f"{step_us / 1000:.1f} ms (median)"
    )


def demo_step_us(repeats: int) -> float:
    """Median time of one training step of the demo preset's model, for scale."""
    import torch

    from chunklm import ChunkLM
    from runs.settings import Settings

    config = Settings.fresh("demo", {}).to_config()
    torch.manual_seed(0)
    model = ChunkLM(config.model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    windows = torch.randint(0, 256, (config.batch_size, config.model.seq_len + config.model.chunk))
    times = []
    for i in range(repeats + 2):
        t0 = time.perf_counter()
        loss, _ = model.loss(windows)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if i >= 2:
            times.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(times)


if __name__ == "__main__":
    main()
