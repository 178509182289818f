"""Does a curriculum defined with the engine save compute? A schedule study against LR-tuned baselines.

    python benchmarks/efficacy_study.py                      # the CPU study in BENCHMARKS.md
    python benchmarks/efficacy_study.py --quick              # the pipeline end to end (~1 min)
    python benchmarks/efficacy_study.py --plan seed --device cuda --max-minutes 8   # the seed's size, on a GPU
    python benchmarks/efficacy_study.py --resume bench_out/study/results.json      # keep what finished
    python benchmarks/efficacy_study.py --report benchmarks/results/efficacy_study.json.gz   # the tables again

Arms (every one: white-noise kernels, the library's default; AdamW; the same data order per seed):
  A*  one cosine cycle (peak -> 0.05 of it), full length and band from the start
  W*  warmup-stable-decay: constant LR, then a fixed (1-sqrt) cooldown over the last 20%
  S   sequence-length warmup, fixed by tokens: seq_lens[0] until seq_epochs[0], ... then full; A*'s schedule
  S+  S's phases, each switch plateau-triggered through the engine between a floor and a ceiling epoch
  WA  W*, whose cooldown the engine starts when the stable phase plateaus (after a floor epoch);
      the run stops when its cooldown ends (the cooldown is the same length as W*'s)
  C   today's spectral curriculum (cutoffs 1/8, 1/4, 1/2 of the band, plateau + minimum epochs,
      the seed's LR stages with restarts, noisy opening): the library's default curriculum
  CS  C with the sequence length opened together with the cutoff (the low-cutoff phases are the short ones)

Tuning: each tuned arm (A*, W*, S, C) runs every peak LR of the plan's grid (a factor of 2
apart) on the tuning seed; the LR with the lowest final validation bpb is kept for the evaluation
seeds. S+ takes S's LR (the same phases and schedule), WA takes W*'s (the same WSD, only the
cooldown's start differs), CS takes C's: four tunings fewer, so the study fits the CPU.

Tokens: a shorter phase cuts each window into pieces (chunklm.corpus.cut_windows), so every step
trains on the same bytes and tokens whatever its length; a step is a fixed number of tokens and
the LR schedules, which count steps, count tokens. Evaluation is always at the full length.
Analytic FLOPs count the matmuls and FFTs of forward + backward (3x forward) per step at its length.

Metric: target = A*'s mean final bpb over the evaluation seeds; per run, the tokens (and FLOPs) at
which its validation curve first reaches the target (linear between evaluations; "never"); a
speed-up is claimed only at >= 1.2x in mean tokens with the seeds' spreads not overlapping
(every seed of the arm reaches it before every seed of A* does), else "no gain". Wall-clock is
recorded per run but the machine may be shared: the claim rests on tokens and FLOPs.
Writes results.json and tables.md to --out after every run.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import statistics
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import attrs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chunklm.train import BaseHooks, compile_default  # noqa: E402
from engine import Curriculum, Phase  # noqa: E402
from policies import adaptive_cooldown, seq_len_curriculum, spectral_curriculum  # noqa: E402

ARMS = ("A*", "W*", "S", "S+", "WA", "C", "CS")
TUNED_BY = {"A*": "A*", "W*": "W*", "S": "S", "S+": "S", "WA": "W*", "C": "C", "CS": "C"}
ONE_CYCLE = ((0, 1.0, 0.05),)


@attrs.frozen
class StudyPlan:
    """The study's scale. Epochs are evaluation points (and the engine's epoch-end decisions)."""

    d_model: int = 32
    n_layers: int = 2
    seq_len: int = 128
    kernel_len: int = 32
    chunk: int = 4
    batch_size: int = 8
    steps_per_epoch: int = 24
    epochs: int = 20
    # The first grid stopped at 1.6e-2, the second at 6.4e-2, with A* still improving at each edge: widened
    # to 0.256 (BENCHMARKS.md). A tiny model over 480 steps without warmup takes a large LR.
    lrs: tuple[float, ...] = (2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2, 6.4e-2, 1.28e-1, 2.56e-1)
    tune_seed: int = 0
    seeds: tuple[int, ...] = (1, 2, 3)
    seq_lens: tuple[int, ...] = (32, 64)  # S's shorter phases; full after them
    seq_epochs: tuple[int, ...] = (3, 6)  # S: the epochs of the switches (15% and 30% of training)
    seq_floors: tuple[int, ...] = (1, 3)  # S+: not before these epochs ...
    seq_caps: tuple[int, ...] = (6, 12)  # ... and at these at the latest
    cooldown_fraction: float = 0.2
    wa_floor: int = 6  # WA: no cooldown before this epoch (30%)
    min_epochs: tuple[int, ...] = (2, 4, 8)  # C: the seed's 2, 5, 10 of 50 epochs, scaled to 20
    stages: tuple[tuple[int, float, float], ...] = ((0, 1.0, 0.1), (2, 1.0, 0.1), (4, 1.0, 0.05))
    window: int = 64
    threshold: float = 0.005
    eval_windows: int = 32
    arms: tuple[str, ...] = ARMS

    @property
    def cutoffs(self) -> tuple[int, int, int]:
        n = self.seq_len
        return (n // 8, n // 4, n // 2)

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len


QUICK = StudyPlan(
    d_model=16,
    n_layers=1,
    seq_len=64,
    kernel_len=16,
    batch_size=4,
    steps_per_epoch=8,
    epochs=10,
    lrs=(4e-3, 8e-3),
    seeds=(1,),
    seq_lens=(16, 32),
    seq_epochs=(2, 3),
    seq_floors=(1, 2),
    seq_caps=(3, 5),
    wa_floor=3,
    min_epochs=(1, 2, 4),
    stages=((0, 1.0, 0.1), (1, 1.0, 0.1), (2, 1.0, 0.05)),
    window=16,
    eval_windows=8,
)

# The seed's model (d_model 512, 6 layers, seq_len 1024, kernel_len 128, chunk 16) and batch (32 x 1,024
# bytes per step), 2,000 steps as 20 epochs x 100; seq-len warmup 256 -> 512 -> 1024; the LR grid around
# the seed's 2e-4. A GPU's work (tuning alone is 20 runs): `--plan seed --device cuda`, with `--resume` to continue.
SEED = StudyPlan(
    d_model=512,
    n_layers=6,
    seq_len=1024,
    kernel_len=128,
    chunk=16,
    batch_size=32,
    steps_per_epoch=100,
    lrs=(2e-4, 4e-4, 8e-4, 1.6e-3),
    seeds=(1, 2, 3),
    seq_lens=(256, 512),
    window=100,
    eval_windows=128,
)

# The default plan with four times the tokens (1,920 steps as 20 epochs x 96): the same phases, floors and
# ceilings in epochs, so every switch comes at the same share of training; the LR grid from the default
# plan's optimum down. The first grid, 0.032-0.256, had every arm's best at its bottom (0.032; 0.128 was
# already worse for A*): moved down to 0.008-0.064 (BENCHMARKS.md).
LONG = StudyPlan(steps_per_epoch=96, lrs=(8e-3, 1.6e-2, 3.2e-2, 6.4e-2))

PLANS = {"default": StudyPlan(), "long": LONG, "quick": QUICK, "seed": SEED}


def curriculum(plan: StudyPlan, arm: str) -> Curriculum:
    """The arm's curriculum, built fresh (guards hold state)."""
    if arm in ("A*", "W*"):
        return Curriculum([Phase("full")], [])
    if arm == "S":
        return seq_len_curriculum(plan.seq_lens, at_epochs=plan.seq_epochs)
    if arm == "S+":
        return seq_len_curriculum(
            plan.seq_lens,
            min_epochs=plan.seq_floors,
            max_epochs=plan.seq_caps,
            window=plan.window,
            threshold=plan.threshold,
        )
    if arm == "WA":
        return adaptive_cooldown(plan.wa_floor, window=plan.window, threshold=plan.threshold)
    if arm in ("C", "CS"):
        lens = None
        if arm == "CS":  # one length per cutoff phase: S's lengths, then the full one for the last cutoff
            lens = (*plan.seq_lens, *[plan.seq_len] * (len(plan.cutoffs) - len(plan.seq_lens)))[: len(plan.cutoffs)]
        return spectral_curriculum(
            n_bins=plan.seq_len // 2 + 1,
            cutoffs=plan.cutoffs,
            min_epochs=plan.min_epochs,
            window=plan.window,
            threshold=plan.threshold,
            preserve=False,
            seq_lens=lens,
        )
    raise ValueError(arm)


def schedule_of(arm: str) -> str:
    return "wsd" if arm in ("W*", "WA") else "staged"


def stages_of(plan: StudyPlan, arm: str) -> tuple:
    return plan.stages if arm in ("C", "CS") else ONE_CYCLE


def step_flops(plan: StudyPlan, seq_len: int) -> float:
    """Analytic FLOPs of one training step at window length ``seq_len`` (forward + backward = 3x forward).

    Per token and layer: in_proj (D -> 2D), out_proj and the feed-forward (D -> 4D -> D): 2 * 11 D^2;
    the head: 2 D (chunk * 256). Per piece, layer and channel, the FFT convolution at n = the padded
    length: two real FFTs of n points (2.5 n log2 n each) and the spectral product (3 n). Norms,
    gates, the embedding, the optimizer and the kernel's own FFT are left out (each well under 1%).
    """
    from chunklm.model import _fast_len

    D, L, K = plan.d_model, seq_len, plan.kernel_len
    pieces = plan.batch_size * (plan.seq_len // seq_len)
    n = _fast_len(L + K - 1)
    per_token = plan.n_layers * 22 * D * D + 2 * D * plan.chunk * 256
    per_piece_conv = plan.n_layers * D * (5 * n * math.log2(n) + 3 * n)
    return 3.0 * pieces * (L * per_token + per_piece_conv)


class _Recorder(BaseHooks):
    """Per step: loss, LR, length; per epoch: validation bpb with tokens, FLOPs and seconds so far; transitions."""

    def __init__(self, trainer, plan: StudyPlan, deadline: float | None) -> None:
        self.trainer, self.plan, self.deadline = trainer, plan, deadline
        self.losses: list[float] = []
        self.lrs: list[float] = []
        self.lens: list[int] = []
        self.evals: list[dict] = []
        self.transitions: list[dict] = []
        self.tokens, self.flops, self.t0 = 0, 0.0, time.time()
        self._flops = {}
        self.stop: str | None = None

    def on_step(self, info) -> None:
        self.losses.append(info.loss)
        self.lrs.append(info.lr)
        self.lens.append(info.seq_len)
        self.tokens += self.plan.tokens_per_step
        if info.seq_len not in self._flops:
            self._flops[info.seq_len] = step_flops(self.plan, info.seq_len)
        self.flops += self._flops[info.seq_len]

    def on_epoch(self, info) -> None:
        self.evals.append(
            {
                "step": self.trainer.clock.global_step,
                "tokens": self.tokens,
                "flops": self.flops,
                "seconds": time.time() - self.t0,
                "bpb": info.bpb,
            }
        )
        if getattr(self.trainer.schedule, "finished", False):
            self.stop = "cooldown_done"  # WA: its cooldown is over, the LR stays at its final value

    def on_transition(self, record) -> None:
        self.transitions.append(
            {"step": record.global_step, "epoch": record.epoch, "from": record.source, "to": record.dest}
        )

    def should_stop(self) -> str | None:
        if self.stop:
            return self.stop
        return "deadline" if self.deadline is not None and time.time() >= self.deadline else None


def run(
    plan: StudyPlan,
    arm: str,
    lr: float,
    seed: int,
    kind: str,
    device: str = "cpu",
    compile: bool = False,
    deadline: float | None = None,
) -> dict:
    """Train one arm at one peak LR and seed; ``kind`` is "tune" or "eval" (recorded only)."""
    import torch

    from chunklm import ByteCorpus, ChunkLMConfig
    from chunklm.train import NonFiniteLossError, TrainConfig, Trainer

    if device == "cpu":
        torch.set_num_threads(1)
    model = ChunkLMConfig(
        d_model=plan.d_model,
        n_layers=plan.n_layers,
        seq_len=plan.seq_len,
        kernel_len=plan.kernel_len,
        chunk=plan.chunk,
        kernel_init="white",
    )
    config = TrainConfig(
        model=model,
        batch_size=plan.batch_size,
        accum_steps=1,
        steps_per_epoch=plan.steps_per_epoch,
        epochs=plan.epochs,
        lr=lr,
        seed=seed,
        eval_windows=plan.eval_windows,
        schedule=schedule_of(arm),
        cooldown_fraction=plan.cooldown_fraction,
        compile=compile,
    )
    corpus = ByteCorpus(None, seq_len=plan.seq_len, chunk=plan.chunk)
    trainer = Trainer(
        config, device=device, corpus=corpus, curriculum=curriculum(plan, arm), stages=stages_of(plan, arm)
    )
    trainer.start()
    rec = _Recorder(trainer, plan, deadline)
    try:
        ended = trainer.fit(rec, save=lambda reason: None)
    except NonFiniteLossError:  # this LR diverged: an outcome of the tuning, its final bpb is inf
        ended = "diverged"
        rec.evals.append(
            {
                "step": trainer.clock.global_step,
                "tokens": rec.tokens,
                "flops": rec.flops,
                "seconds": time.time() - rec.t0,
                "bpb": math.inf,
            }
        )
    return {
        "kind": kind,
        "arm": arm,
        "lr": lr,
        "seed": seed,
        "losses": rec.losses,
        "lrs": rec.lrs,
        "lens": rec.lens,
        "evals": rec.evals,
        "transitions": rec.transitions,
        "seconds": time.time() - rec.t0,
        "ended": ended,
        "complete": ended in ("done", "cooldown_done", "diverged"),
        "device": device,
    }


# -- reading the results ---------------------------------------------------------------------------


def reach(evals: list[dict], target: float, key: str = "tokens") -> float | None:
    """``key`` (tokens or flops) at which the validation curve first reaches ``target``, linear between
    evaluations (from the one before); None when it never does."""
    prev = None
    for e in evals:
        if e["bpb"] <= target:
            if prev is None or prev["bpb"] == e["bpb"]:
                return float(e[key])
            frac = (prev["bpb"] - target) / (prev["bpb"] - e["bpb"])
            return prev[key] + frac * (e[key] - prev[key])
        prev = e
    return None


def best_lrs(results: list[dict], plan: StudyPlan) -> dict[str, tuple[float, bool]]:
    """Per tuned arm with every grid LR finished: (the LR of lowest final bpb, whether it is at the grid's edge)."""
    out = {}
    for arm in sorted(set(TUNED_BY.values())):
        runs = {r["lr"]: r for r in results if r["kind"] == "tune" and r["arm"] == arm and r["complete"]}
        if set(plan.lrs) <= set(runs):
            lr = min(plan.lrs, key=lambda x: runs[x]["evals"][-1]["bpb"])
            out[arm] = (lr, lr in (min(plan.lrs), max(plan.lrs)))
    return out


MIN_SEEDS = 3


def verdict(arm_reach: list[float | None], base_reach: list[float | None], budget: float) -> tuple[float | None, str]:
    """(mean ratio of A*'s reach to the arm's, words): a speed-up only at >= 1.2x, with every seed of the
    arm ahead of every seed of A* (an A* seed that never reaches its own mean counts as the budget),
    and at least MIN_SEEDS seeds of each."""
    if not arm_reach or not base_reach:
        return None, "—"
    if any(x is None for x in arm_reach):
        return None, "no gain (a seed never reaches the target)"
    base = [budget if x is None else x for x in base_reach]
    ratio = statistics.fmean(base) / statistics.fmean(arm_reach)
    if ratio >= 1.2 and max(arm_reach) < min(base):
        if min(len(arm_reach), len(base_reach)) < MIN_SEEDS:
            return ratio, f"{ratio:.2f}x, fewer than {MIN_SEEDS} seeds: no claim"
        return ratio, f"speed-up {ratio:.2f}x"
    return ratio, "no gain"


def _spread(values: list[float], fmt: str = "{:.4f}") -> str:
    mean = statistics.fmean(values)
    half = (max(values) - min(values)) / 2 if len(values) > 1 else 0.0
    return f"{fmt.format(mean)} ± {fmt.format(half)}"


def report(plan: StudyPlan, results: list[dict], out: Path | None = None) -> str:
    """The tuning table and the evaluation table from the finished runs so far (tables.md in ``out``)."""
    done = [r for r in results if r["complete"]]
    best = best_lrs(done, plan)
    budget_tokens = plan.total_steps * plan.tokens_per_step
    budget_flops = plan.total_steps * step_flops(plan, plan.seq_len)
    lines = [
        f"ChunkLM d_model {plan.d_model}, {plan.n_layers} layers, seq_len {plan.seq_len}, "
        f"kernel_len {plan.kernel_len}, chunk {plan.chunk}; "
        f"batch {plan.batch_size} x {plan.seq_len} bytes = {plan.tokens_per_step} tokens/step; "
        f"{plan.total_steps} steps "
        f"({plan.epochs} epochs x {plan.steps_per_epoch}) = {budget_tokens / 1e6:.3f} M tokens, "
        f"{budget_flops / 1e12:.3f} TFLOP at full length; "
        f"LR grid {', '.join(f'{x:g}' for x in plan.lrs)} on seed {plan.tune_seed}; "
        f"evaluation seeds {', '.join(map(str, plan.seeds))}.",
        "",
        "Tuning (final validation bpb on the tuning seed; * = kept):",
        "",
        "| arm | " + " | ".join(f"{x:g}" for x in plan.lrs) + " |",
        "|---|" + "---:|" * len(plan.lrs),
    ]
    for arm in sorted(set(TUNED_BY.values()), key=ARMS.index):
        runs = {r["lr"]: r for r in done if r["kind"] == "tune" and r["arm"] == arm}
        if not runs:
            continue
        cells = []
        for x in plan.lrs:
            cell = f"{runs[x]['evals'][-1]['bpb']:.4f}" if x in runs else "—"
            cells.append(cell + ("*" if arm in best and best[arm][0] == x else ""))
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    edges = [a for a, (_, edge) in best.items() if edge]
    if edges:
        lines += ["", f"Best LR at the grid's edge (the optimum may lie outside): {', '.join(edges)}."]
    evals = {
        a: sorted(
            (
                r
                for r in done
                if r["kind"] == "eval"
                and r["arm"] == a
                and TUNED_BY[a] in best
                and r["lr"] == best[TUNED_BY[a]][0]
                and r["seed"] in plan.seeds
            ),
            key=lambda r: r["seed"],
        )
        for a in ARMS
    }
    base = evals["A*"]
    target = statistics.fmean(r["evals"][-1]["bpb"] for r in base) if base else None
    lines += [
        "",
        "Evaluation"
        + (
            f" (target = A*'s mean final bpb {target:.4f}):" if target is not None else " (A* not finished: no target):"
        ),
        "",
        "| arm | peak LR | seeds | final val bpb | vs A* | tokens used (M) | tokens to target (M, "
        "per seed) | FLOPs to target (T, mean) "
        "| tokens verdict | FLOPs ratio | switches (step, per seed) | wall s (median) |",
        "|---|---:|---|---:|---:|---:|---|---:|---|---:|---|---:|",
    ]
    base_tok = [reach(r["evals"], target) for r in base] if target is not None else []
    base_fl = [reach(r["evals"], target, "flops") for r in base] if target is not None else []
    for arm in ARMS:
        rs = evals[arm]
        if not rs:
            continue
        finals = [r["evals"][-1]["bpb"] for r in rs]
        vs = f"{100 * (statistics.fmean(finals) / target - 1):+.2f}%" if target is not None else "—"
        used = statistics.fmean(r["evals"][-1]["tokens"] for r in rs) / 1e6
        if target is not None:
            tok = [reach(r["evals"], target) for r in rs]
            fl = [reach(r["evals"], target, "flops") for r in rs]
            tok_s = ", ".join("never" if x is None else f"{x / 1e6:.3f}" for x in tok)
            fl_s = "never" if any(x is None for x in fl) else f"{statistics.fmean(fl) / 1e12:.4f}"
            _, words = verdict(tok, base_tok, budget_tokens) if arm != "A*" else (None, "(the baseline)")
            fratio, _ = verdict(fl, base_fl, budget_flops)
            fl_ratio = "—" if fratio is None else f"{fratio:.2f}x"
        else:
            tok_s = fl_s = words = fl_ratio = "—"
        switches = "; ".join("/".join(str(t["step"]) for t in r["transitions"]) or "-" for r in rs)
        wall = statistics.median(r["seconds"] for r in rs)
        lr = rs[0]["lr"]
        lines.append(
            f"| {arm} | {lr:g} | {', '.join(str(r['seed']) for r in rs)} | {_spread(finals)} | {vs} | {used:.3f} | "
            f"{tok_s} | {fl_s} "
            f"| {words} | {fl_ratio} | {switches} | {wall:.0f} |"
        )
    stopped = [r for r in results if not r["complete"]]
    if stopped:
        lines += ["", "Stopped before the end (not in the tables; their curves are in results.json):", ""]
        lines += [
            f"- {r['kind']} {r['arm']} lr {r['lr']:g} seed {r['seed']}: {r['ended']} after step {len(r['losses'])}"
            for r in stopped
        ]
    text = "\n".join(lines)
    if out is not None:
        (out / "tables.md").write_text(text + "\n")
    return text


REPLAY_RULES = (
    (64, 0.005, "relative"),
    (64, 0.0, "relative"),
    (128, 0.005, "relative"),
    (128, 0.0, "relative"),
    (64, 0.005, "welch"),
    (128, 0.005, "welch"),
)


def replay_cooldown(plan: StudyPlan, results: list[dict], rules=REPLAY_RULES) -> str:
    """Where would ``adaptive_cooldown`` have started W*'s cooldown, under WA's rule and others?

    Feeds each evaluation seed's recorded W* stable phase (its training losses up to the fixed
    cooldown's start, at the kept LR) to ``engine.replay``: W* itself has no transition, so each
    replay is faithful up to its own first firing, which is where that rule would have cooled down.
    """
    from engine import replay

    best = best_lrs([r for r in results if r["complete"]], plan)
    if "W*" not in best:
        return "W* not tuned yet: nothing to replay"
    stable = plan.total_steps - max(1, round(plan.cooldown_fraction * plan.total_steps))
    rows = [
        "| rule (floor epoch " + str(plan.wa_floor) + ") | " + " | ".join(f"seed {s}" for s in plan.seeds) + " |",
        "|---|" + "---:|" * len(plan.seeds),
    ]
    runs = {
        r["seed"]: r
        for r in results
        if r["complete"] and r["kind"] == "eval" and r["arm"] == "W*" and r["lr"] == best["W*"][0]
    }
    for window, threshold, test in rules:
        cells = []
        for seed in plan.seeds:
            r = runs.get(seed)
            if r is None:
                cells.append("—")
                continue
            stream: list[tuple[str, dict]] = []
            for i, loss in enumerate(r["losses"][:stable], start=1):
                stream.append(("step_end", {"loss": loss}))
                if i % plan.steps_per_epoch == 0:
                    stream.append(("epoch_end", {}))
            result = replay(adaptive_cooldown(plan.wa_floor, window=window, threshold=threshold, test=test), stream)
            fired = [x for x in result.history if x.source == "stable"]
            cells.append(
                f"{fired[0].global_step} ({fired[0].global_step / plan.total_steps:.0%})"
                if fired
                else f"not before {stable}"
            )
        rows.append(f"| window {window}, threshold {threshold:g}, {test} | " + " | ".join(cells) + " |")
    return (
        f"Where adaptive_cooldown would have started W*'s cooldown (step, share of the {plan.total_steps} steps), "
        "replayed on "
        f"W*'s recorded stable-phase losses; W* itself cools down at step {stable}:\n\n" + "\n".join(rows)
    )


def plot(plan: StudyPlan, results: list[dict], path: Path) -> None:
    """Validation bpb against tokens, mean over the evaluation seeds per arm (thin: each seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = best_lrs([r for r in results if r["complete"]], plan)
    fig, ax = plt.subplots(figsize=(9, 5.5))
    colors = dict(zip(ARMS, ["black", "tab:gray", "tab:blue", "tab:cyan", "tab:orange", "tab:red", "tab:purple"]))
    target = None
    for arm in ARMS:
        rs = [
            r
            for r in results
            if r["complete"]
            and r["kind"] == "eval"
            and r["arm"] == arm
            and TUNED_BY[arm] in best
            and r["lr"] == best[TUNED_BY[arm]][0]
            and r["seed"] in plan.seeds
        ]
        if not rs:
            continue
        n = min(len(r["evals"]) for r in rs)
        tokens = [rs[0]["evals"][i]["tokens"] / 1e6 for i in range(n)]
        ax.plot(
            tokens,
            [statistics.fmean(r["evals"][i]["bpb"] for r in rs) for i in range(n)],
            "-o",
            ms=3,
            color=colors[arm],
            label=arm,
        )
        for r in rs:
            ax.plot(
                [e["tokens"] / 1e6 for e in r["evals"]],
                [e["bpb"] for e in r["evals"]],
                "-",
                lw=0.5,
                alpha=0.35,
                color=colors[arm],
            )
        if arm == "A*":
            target = statistics.fmean(r["evals"][-1]["bpb"] for r in rs)
    if target is not None:
        ax.axhline(target, color="gray", ls=":", lw=1, label="A*'s final bpb")
        ax.set_ylim(target - 0.25, target + 0.6)
    ax.set_xlabel("training tokens (M)")
    ax.set_ylabel("validation bits per byte (next byte, full length)")
    ax.set_title("Each arm at its tuned peak LR, mean over seeds (thin: each seed)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- running ---------------------------------------------------------------------------------------


def jobs(plan: StudyPlan, results: list[dict]) -> tuple[list[tuple], list[str]]:
    """The runs that can start now and are not done: tuning first (LR by LR, arms alternating), then
    evaluation seed by seed (arms alternating) once the arm's tuning is complete; and what waits."""
    have = {(r["kind"], r["arm"], r["lr"], r["seed"]) for r in results}
    tuned = [a for a in dict.fromkeys(TUNED_BY[a] for a in plan.arms)]
    todo = [("tune", a, lr, plan.tune_seed) for lr in plan.lrs for a in tuned]
    best = best_lrs(results, plan)
    waiting = []
    for seed in plan.seeds:
        for a in plan.arms:
            if TUNED_BY[a] in best:
                todo.append(("eval", a, best[TUNED_BY[a]][0], seed))
            else:
                waiting.append(f"{a} seed {seed}")
    return [j for j in todo if j not in have], waiting


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plan", choices=sorted(PLANS), default="default")
    parser.add_argument("--quick", action="store_true", help="the same as --plan quick")
    parser.add_argument("--seeds", type=int, nargs="+", help="evaluation seeds (default: the plan's)")
    parser.add_argument("--arms", help=f"comma-separated subset of {','.join(ARMS)} (default: all)")
    parser.add_argument("--out", default="bench_out/study")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, help="torch.compile (default: on for CUDA)")
    parser.add_argument("--workers", type=int, help="runs at a time (default 2 on CPU, 1 on CUDA)")
    parser.add_argument(
        "--max-minutes", type=float, help="start no run that would end past this; stop one still going then"
    )
    parser.add_argument(
        "--report", type=Path, metavar="RESULTS_JSON", help="only write tables.md and study.png from this results.json"
    )
    parser.add_argument(
        "--resume",
        type=Path,
        metavar="RESULTS_JSON",
        help="keep the finished runs of this results.json (the same plan; its LR grid, seeds and arms may differ)",
    )
    args = parser.parse_args()
    t0 = time.time()
    plan = PLANS["quick" if args.quick else args.plan]
    if args.seeds:
        plan = attrs.evolve(plan, seeds=tuple(args.seeds))
    if args.arms:
        arms = tuple(a.strip() for a in args.arms.split(","))
        if set(arms) - set(ARMS):
            parser.error(f"--arms takes names from {','.join(ARMS)}: got {args.arms!r}")
        plan = attrs.evolve(plan, arms=arms)
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    workers = args.workers or (1 if device == "cuda" else 2)
    compile = compile_default(device) if args.compile is None else args.compile
    deadline = t0 + 60 * args.max_minutes if args.max_minutes is not None else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.report:
        import gzip

        raw = args.report.read_bytes()
        saved = json.loads(gzip.decompress(raw) if args.report.suffix == ".gz" else raw)
        plan = StudyPlan(
            **{
                k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
                for k, v in saved["plan"].items()
            }
        )
        print(report(plan, saved["results"], out))
        print()
        print(replay_cooldown(plan, saved["results"]))
        plot(plan, saved["results"], out / "study.png")
        return
    results: list[dict] = []
    plan_dict = json.loads(json.dumps(attrs.asdict(plan)))
    if args.resume:
        saved = json.loads(args.resume.read_text())
        loose = ("lrs", "seeds", "arms")  # runs stay valid when the grid widens or seeds are added
        if {k: v for k, v in saved["plan"].items() if k not in loose} != {
            k: v for k, v in plan_dict.items() if k not in loose
        }:
            raise SystemExit(
                f"--resume {args.resume}: written for another plan; pass the same --plan, or drop --resume"
            )
        results = [r for r in saved["results"] if r["complete"]]
        print(f"resumed {len(results)} runs from {args.resume}", flush=True)
    from chunklm import ByteCorpus

    ByteCorpus(None, seq_len=plan.seq_len, chunk=plan.chunk)  # the corpus cache, once, before the workers
    pool_args = {"mp_context": multiprocessing.get_context("spawn")} if device == "cuda" else {}
    running: dict = {}
    longest = 0.0
    skipped: list[str] = []
    with ProcessPoolExecutor(workers, **pool_args) as pool:
        while True:
            todo, waiting = jobs(plan, results)
            todo = [j for j in todo if j not in running.values() and f"{j[0]} {j[1]} {j[2]:g} {j[3]}" not in skipped]
            for job in todo:
                if len(running) >= workers:
                    break
                if deadline is not None and time.time() + longest > deadline:
                    skipped.append(f"{job[0]} {job[1]} {job[2]:g} {job[3]}")
                    continue
                kind, arm, lr, seed = job
                running[pool.submit(run, plan, arm, lr, seed, kind, device, compile, deadline)] = job
            if not running:
                break
            ended, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in ended:
                running.pop(f)
                r = f.result()
                results.append(r)
                longest = max(longest, r["seconds"])
                last = r["evals"][-1] if r["evals"] else None
                print(
                    f"{r['kind']} {r['arm']} lr {r['lr']:g} seed {r['seed']}: "
                    + (
                        f"final bpb {last['bpb']:.4f} at {last['tokens'] / 1e6:.3f} M tokens"
                        if last
                        else "no evaluation"
                    )
                    + f", switches {[t['step'] for t in r['transitions']]}, {r['ended']}, {r['seconds']:.0f} s",
                    flush=True,
                )
                write_json(out / "results.json", {"plan": plan_dict, "results": results})
                report(plan, results, out)
    print(report(plan, results, out))
    _, waiting = jobs(plan, results)
    for line in skipped + waiting:
        print(f"not run: {line}")
    print(f"\n{time.time() - t0:.0f} s on {device}; wrote {out}/results.json, tables.md")


if __name__ == "__main__":
    main()
