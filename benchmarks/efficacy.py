"""Does the spectral curriculum earn its keep? Six arms, the same step budget and data order.

    python benchmarks/efficacy.py            # the experiment in BENCHMARKS.md (~1 h on 2 cores)
    python benchmarks/efficacy.py --quick    # the pipeline end to end in about 30 s
    python benchmarks/efficacy.py --plan kernel256 --arms CEDFA --workers 1   # kernels as long as the window
    python benchmarks/efficacy.py --plan seed --device cuda --max-minutes 8   # C, D, A at the seed's size on a GPU

Arms (each over the same seeds; a seed fixes the initial weights and the data order):
  A  no curriculum: full cutoff from the start, one cosine cycle over the budget
  B  fixed schedule: raises at the seed table's epochs scaled to the budget, the same LR stages
  C  the plateau rule (spectral_curriculum), the same minimum epochs and LR stages
  D  A plus C's LR stages and restarts at the steps where C raised (same seed)
  E  C with preserve=False and white-noise kernels: the seed's own behaviour
  F  D with white-noise kernels
C vs D isolates the cutoff curriculum; D vs F the kernel initialisation; C vs E the seed's way of
opening bands. Every arm names its kernel initialisation and band opening itself, so the arms do
not move when the library's defaults do. Runs go seed by seed in the order --arms gives (D and F
wait for C of the same seed), --workers at a time: on CPU single-threaded processes; on CUDA one
run at a time, each in a fresh process, the way the trainer runs there (bf16 autocast,
torch.compile unless --no-compile). Writes results.json, tables.md and efficacy.png to --out
(default bench_out/efficacy) after every run, so a run cut short keeps what finished.

--max-minutes bounds the whole script: no run starts that would end past it (judged by the
longest run so far), and a run still going at the limit stops at its next step and is kept in
results.json as incomplete, outside the tables. --resume FILE keeps the finished runs of an
earlier results.json of the same plan and runs only the others (a run cut short by a time limit
continues where it stopped).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Callable, Sequence

import attrs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chunklm.train import BaseHooks, compile_default  # noqa: E402
from engine import Curriculum, Phase, Transition  # noqa: E402
from policies import MinEpoch, MinSteps, RestartLR, SetCutoff, spectral_curriculum  # noqa: E402

ARMS = "ABCDEF"


@attrs.frozen
class Plan:
    """The experiment's scale: one CPU-sized ChunkLM, a fixed budget of optimizer steps."""

    d_model: int = 64
    n_layers: int = 2
    seq_len: int = 128
    kernel_len: int = 32
    chunk: int = 4
    batch_size: int = 16
    steps_per_epoch: int = 300
    epochs: int = 20
    lr: float = 3e-3
    min_epochs: tuple[int, ...] = (2, 4, 8)  # the seed's 2, 5, 10 of 50 epochs, scaled to 20
    stages: tuple[tuple[int, float, float], ...] = ((0, 1.0, 0.1), (2, 1.0, 0.1), (4, 1.0, 0.05))
    window: int = 100
    threshold: float = 0.01
    eval_windows: int = 64
    seeds: tuple[int, ...] = (0, 1, 2)
    arms: str = ARMS  # the arms a plain run trains, in order (--arms overrides)

    @property
    def n_bins(self) -> int:
        return self.seq_len // 2 + 1

    @property
    def cutoffs(self) -> tuple[int, int, int]:
        n = self.seq_len
        return (n // 8, n // 4, n // 2)


QUICK = Plan(
    d_model=32,
    n_layers=1,
    seq_len=64,
    kernel_len=16,
    batch_size=8,
    steps_per_epoch=20,
    epochs=6,
    min_epochs=(1, 2, 3),
    stages=((0, 1.0, 0.1), (1, 1.0, 0.1), (2, 1.0, 0.05)),
    window=10,
    eval_windows=16,
    seeds=(0,),
)

# The long-kernel plan: kernels as long as the window (K = T = 256), 3,000 steps as
# 20 epochs x 150, so the minimum epochs, LR stages and plateau window are the default plan's.
KERNEL256 = Plan(seq_len=256, kernel_len=256, steps_per_epoch=150, seeds=(0,))

# The seed's size on a GPU: the seed's model (d_model 512, 6 layers, seq_len 1024, kernel_len 128, chunk 16;
# cutoffs 128, 256, 512), batch (32 windows of 1,024 bytes per step) and LR (2e-4) on the default
# plan's schedule: 2,000 steps as 20 epochs x 100, the same minimum epochs, LR stages and plateau
# rule; seeds 0 and 1; 128 validation windows (131 kB) after every epoch. Arms C, D, A in that
# order, seed by seed: a run stopped by --max-minutes after two runs has C against D (the cutoff curriculum's
# own effect, the CPU table's main finding), after three the baseline A too.
SEED = Plan(
    d_model=512,
    n_layers=6,
    seq_len=1024,
    kernel_len=128,
    chunk=16,
    batch_size=32,
    steps_per_epoch=100,
    lr=2e-4,
    eval_windows=128,
    seeds=(0, 1),
    arms="CDA",
)

PLANS = {"default": Plan(), "kernel256": KERNEL256, "quick": QUICK, "seed": SEED}


@attrs.frozen
class Execution:
    """Where and how the runs execute: none of it is part of the plan.

    On CUDA the trainer trains in bf16 autocast, so its numbers are not the CPU's float32 ones.
    ``deadline`` (``time.time()``): a run still going then stops at its next step.
    """

    device: str = "cpu"
    compile: bool = False
    deadline: float | None = None


@attrs.frozen
class Arm:
    """How one arm trains: its curriculum (built fresh per run: guards hold state), LR stages, init."""

    name: str
    description: str
    curriculum: Callable[[], Curriculum]
    stages: tuple[tuple[int, float, float], ...]
    kernel_init: str


class _Fixed:
    """Curriculum factories as small named classes (picklable for the worker processes)."""

    def __init__(self, plan: Plan, kind: str, raise_steps: tuple[int, ...] = ()) -> None:
        self.plan, self.kind, self.raise_steps = plan, kind, raise_steps

    def __call__(self) -> Curriculum:
        p = self.plan
        if self.kind == "none":  # A: full band from the start, no transitions
            return Curriculum([Phase("full", on_enter=[SetCutoff(None, preserve=True)])], [])
        if self.kind == "fixed":  # B: raise at fixed epochs, restart the LR
            opens = [SetCutoff(c, preserve=True) for c in [*p.cutoffs, None]]
            return _chain(opens, [MinEpoch(m) for m in p.min_epochs])
        if self.kind in ("plateau", "plateau_noisy"):  # C, E
            return spectral_curriculum(
                n_bins=p.n_bins,
                cutoffs=p.cutoffs,
                min_epochs=p.min_epochs,
                window=p.window,
                threshold=p.threshold,
                preserve=self.kind == "plateau",
            )
        if self.kind == "restarts":  # D, F: full band, LR restarts where C raised
            phases = [Phase("full", on_enter=[SetCutoff(None, preserve=True)])] + [
                Phase(f"restart_{i + 1}") for i in range(len(self.raise_steps))
            ]
            transitions = [
                Transition(phases[i].name, phases[i + 1].name, [MinSteps(s)], [RestartLR()])
                for i, s in enumerate(self.raise_steps)
            ]
            return Curriculum(phases, transitions)
        raise ValueError(self.kind)


def _chain(on_enter: list, guards: list) -> Curriculum:
    names = [f"phase_{i}" for i in range(len(on_enter))]
    phases = [Phase(n, on_enter=[a]) for n, a in zip(names, on_enter)]
    transitions = [Transition(names[i], names[i + 1], [g], [RestartLR()]) for i, g in enumerate(guards)]
    return Curriculum(phases, transitions)


def build_arms(plan: Plan, c_raise_steps: tuple[int, ...] = ()) -> dict[str, Arm]:
    """The six arms; D and F need the steps where C raised (for the same seed)."""
    one_cycle = ((0, 1.0, 0.05),)
    return {
        "A": Arm("A", "no curriculum, one cosine cycle", _Fixed(plan, "none"), one_cycle, "smooth"),
        "B": Arm("B", "fixed raises at scaled seed epochs", _Fixed(plan, "fixed"), plan.stages, "smooth"),
        "C": Arm("C", "plateau rule (spectral_curriculum)", _Fixed(plan, "plateau"), plan.stages, "smooth"),
        "D": Arm("D", "A + C's LR stages and restarts", _Fixed(plan, "restarts", c_raise_steps), plan.stages, "smooth"),
        "E": Arm(
            "E", "C, preserve=False, white-noise kernels (seed)", _Fixed(plan, "plateau_noisy"), plan.stages, "white"
        ),
        "F": Arm("F", "D with white-noise kernels", _Fixed(plan, "restarts", c_raise_steps), plan.stages, "white"),
    }


class _Recorder(BaseHooks):
    """One run's per-step losses, per-epoch validation bpb and raises; asks to stop at the deadline."""

    def __init__(self, trainer, deadline: float | None) -> None:
        self.trainer, self.deadline = trainer, deadline
        self.losses: list[float] = []
        self.evals: list[tuple[int, float]] = []
        self.raises: list[dict] = []

    def on_step(self, info) -> None:
        self.losses.append(info.loss)

    def on_epoch(self, info) -> None:
        self.evals.append((self.trainer.clock.global_step, info.bpb))

    def on_transition(self, record) -> None:
        cut = next((a.effect["cutoff"] for a in record.actions if "cutoff" in a.effect), None)
        self.raises.append({"step": record.global_step, "epoch": record.epoch, "cutoff": cut})

    def should_stop(self) -> str | None:
        return "deadline" if self.deadline is not None and time.time() >= self.deadline else None


def run_arm(plan: Plan, arm: Arm, seed: int, execution: Execution = Execution()) -> dict:
    """Train one arm for one seed (on CPU on one thread); per-step losses, per-epoch validation bpb, raises.

    ``complete`` is False when the deadline stopped the run before its last step.
    """
    import torch

    from chunklm import ByteCorpus, ChunkLMConfig
    from chunklm.train import TrainConfig, Trainer

    if execution.device == "cpu":
        torch.set_num_threads(1)
    model = ChunkLMConfig(
        d_model=plan.d_model,
        n_layers=plan.n_layers,
        seq_len=plan.seq_len,
        kernel_len=plan.kernel_len,
        chunk=plan.chunk,
        init_cutoff=plan.cutoffs[0],
        kernel_init=arm.kernel_init,
    )
    config = TrainConfig(
        model=model,
        batch_size=plan.batch_size,
        accum_steps=1,
        steps_per_epoch=plan.steps_per_epoch,
        epochs=plan.epochs,
        lr=plan.lr,
        seed=seed,
        eval_windows=plan.eval_windows,
        cutoffs=plan.cutoffs,
        min_epochs=plan.min_epochs,
        compile=execution.compile,
    )
    corpus = ByteCorpus(None, seq_len=plan.seq_len, chunk=plan.chunk)
    trainer = Trainer(config, device=execution.device, corpus=corpus, curriculum=arm.curriculum(), stages=arm.stages)
    trainer.start()
    rec = _Recorder(trainer, execution.deadline)
    t0 = time.time()
    ended = trainer.fit(rec, save=lambda reason: None)
    losses = rec.losses
    for r in rec.raises:  # the loss right before and after each raise: the spike, or its absence
        s = r["step"]
        r["loss_before"] = statistics.fmean(losses[max(0, s - 10) : s]) if s > 0 else None
        r["loss_after"] = statistics.fmean(losses[s : s + 10]) if s < len(losses) else None
        r["loss_first_step_after"] = losses[s] if s < len(losses) else None
    device = torch.cuda.get_device_name(trainer.device) if trainer.device.type == "cuda" else "cpu"
    return {
        "arm": arm.name,
        "seed": seed,
        "losses": losses,
        "evals": rec.evals,
        "raises": rec.raises,
        "seconds": time.time() - t0,
        "complete": ended == "done",
        "device": device,
        "compile": execution.compile,
    }


def _ci(values: list[float]) -> str:
    mean = statistics.fmean(values)
    spread = (max(values) - min(values)) / 2 if len(values) > 1 else 0.0
    return f"{mean:.4f} ± {spread:.4f}"


def steps_to(evals: list[tuple[int, float]], target: float) -> int | None:
    return next((step for step, bpb in evals if bpb <= target), None)


def report(plan: Plan, results: list[dict], out: Path) -> str:
    """Write tables.md and efficacy.png from the complete runs so far; list the incomplete ones after."""
    finished = [r for r in results if r.get("complete", True)]  # results.json before --max-minutes: all complete
    by_arm = {a: sorted((r for r in finished if r["arm"] == a), key=lambda r: r["seed"]) for a in ARMS}
    target = statistics.fmean(r["evals"][-1][1] for r in by_arm["A"]) if by_arm["A"] else None
    budget = plan.epochs * plan.steps_per_epoch
    arms = build_arms(plan)
    devices = sorted({r.get("device", "cpu") for r in results}) or ["-"]
    lines = [
        f"Budget {budget} optimizer steps ({plan.epochs} epochs x {plan.steps_per_epoch}), "
        f"batch {plan.batch_size} x {plan.seq_len} bytes; "
        f"ChunkLM d_model {plan.d_model}, {plan.n_layers} layers, kernel_len {plan.kernel_len}, chunk {plan.chunk}; "
        f"LR {plan.lr:g}; "
        f"seeds {', '.join(map(str, plan.seeds))}; on {', '.join(devices)}; "
        + (f"target = A's final bpb {target:.4f}." if target is not None else "arm A not run: no target."),
        "",
        "| arm | what | seeds | final val bpb (mean ± half-range) | vs A | steps to A's final bpb (per seed) | raise "
        "steps (per seed) |",
        "|---|---|---|---:|---:|---|---|",
    ]
    for a in ARMS:
        rs = by_arm[a]
        if not rs:
            continue
        finals = [r["evals"][-1][1] for r in rs]
        vs_a = f"{100 * (statistics.fmean(finals) / target - 1):+.2f}%" if target is not None else "—"
        reach = (
            ", ".join("never" if s is None else str(s) for s in (steps_to(r["evals"], target) for r in rs))
            if target is not None
            else "—"
        )
        raise_steps = ["/".join(str(x["step"]) for x in r["raises"]) or "-" for r in rs]
        seeds = ", ".join(str(r["seed"]) for r in rs)
        lines.append(
            f"| {a} | {arms[a].description} | {seeds} | {_ci(finals)} | {vs_a} | {reach} | {'; '.join(raise_steps)} |"
        )
    lines += [
        "",
        "Loss (nats, mean of 10 steps) right before and after each raise, seed " + str(plan.seeds[0]) + ":",
        "",
        "| arm | raise step | cutoff | loss before | loss after | first step after |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for a in "BCE":
        for r in [r for r in by_arm[a] if r["seed"] == plan.seeds[0]][:1]:
            for x in r["raises"]:
                lines.append(
                    f"| {a} | {x['step']} | {x['cutoff']} | {x['loss_before']:.4f} | {x['loss_after']:.4f} | "
                    f"{x['loss_first_step_after']:.4f} |"
                )
    stopped = [r for r in results if not r.get("complete", True)]
    if stopped:
        lines += ["", "Stopped by --max-minutes, not in the tables (their curves are in results.json):", ""]
        lines += [
            f"- {r['arm']} seed {r['seed']}: stopped after step {len(r['losses'])} of {budget}"
            + (f", last val bpb {r['evals'][-1][1]:.4f} at step {r['evals'][-1][0]}" if r["evals"] else "")
            for r in stopped
        ]
    text = "\n".join(lines)
    (out / "tables.md").write_text(text + "\n")
    if finished:
        plot(by_arm, out / "efficacy.png", target)
    return text


def plot(by_arm: dict[str, list[dict]], path: Path, target: float | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    colors = dict(zip(ARMS, ["black", "tab:blue", "tab:red", "tab:green", "tab:orange", "tab:purple"]))
    for a, rs in by_arm.items():
        if not rs:
            continue
        steps = [s for s, _ in rs[0]["evals"]]
        mean = [statistics.fmean(r["evals"][i][1] for r in rs) for i in range(len(steps))]
        ax.plot(steps, mean, "-o", ms=3, color=colors[a], label=f"{a}")
        for r in rs:
            ax.plot(steps, [b for _, b in r["evals"]], "-", lw=0.5, alpha=0.35, color=colors[a])
    if target is not None:
        ax.axhline(target, color="gray", ls=":", lw=1, label="A's final bpb")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("validation bits per byte (next byte)")
    ax.set_title("Curriculum efficacy: mean over seeds (thin: each seed)")
    ax.legend()
    lo = min(b for rs in by_arm.values() for r in rs for _, b in r["evals"])
    ax.set_ylim(lo - 0.05, lo + 1.5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def schedule(
    pool: ProcessPoolExecutor,
    plan: Plan,
    arms: str,
    workers: int,
    on_result: Callable[[dict], None],
    *,
    execution: Execution = Execution(),
    done: Sequence[dict] = (),
) -> list[str]:
    """Run every (arm, seed) not in ``done``, seed by seed in the order given, at most ``workers`` at a
    time; D and F wait for C's raises. With a deadline, a run starts only if the longest run so far
    would still end before it. Returns what did not run, and why."""
    finished: dict[tuple[str, int], dict] = {(r["arm"], r["seed"]): r for r in done}
    pending = [(a, s) for s in plan.seeds for a in arms if (a, s) not in finished]
    running: dict = {}
    longest, skipped = 0.0, []
    while pending or running:
        for job in list(pending):
            if len(running) >= workers:
                break
            a, s = job
            if a in "DF" and ("C", s) not in finished:
                if ("C", s) not in running.values() and ("C", s) not in pending:
                    if any(x.startswith(f"C seed {s}:") for x in skipped):
                        pending.remove(job)
                        skipped.append(f"{a} seed {s}: C seed {s} did not run")
                        continue
                    raise SystemExit(f"arm {a} restarts where C raised: add C to --arms (e.g. --arms C{arms})")
                continue
            if a in "DF" and not finished[("C", s)].get("complete", True):
                pending.remove(job)
                skipped.append(f"{a} seed {s}: C seed {s} stopped early")
                continue
            if execution.deadline is not None and time.time() + longest > execution.deadline:
                pending.remove(job)
                skipped.append(f"{a} seed {s}: --max-minutes (the longest run took {longest:.0f} s)")
                continue
            c_steps = tuple(x["step"] for x in finished[("C", s)]["raises"]) if a in "DF" else ()
            running[pool.submit(run_arm, plan, build_arms(plan, c_steps)[a], s, execution)] = job
            pending.remove(job)
        if not running:
            continue
        ended, _ = wait(running, return_when=FIRST_COMPLETED)
        for f in ended:
            finished[running.pop(f)] = r = f.result()
            longest = max(longest, r["seconds"])
            on_result(r)
    return skipped


def load_done(path: Path, plan: Plan) -> list[dict]:
    """The complete runs of an earlier results.json, which must be of the same plan."""
    saved = json.loads(path.read_text())
    if saved["plan"] != json.loads(json.dumps(attrs.asdict(plan))):
        raise SystemExit(
            f"--resume {path}: written for another plan ({saved['plan']}); pass the same --plan, or drop --resume"
        )
    return [r for r in saved["results"] if r.get("complete", True)]


def write_json(path: Path, data: dict) -> None:
    """Replace ``path`` whole (a run killed while writing leaves the previous file)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--plan",
        choices=sorted(PLANS),
        default="default",
        help="the scale: default (BENCHMARKS.md), kernel256 (K = T = 256), seed (the seed's size, a GPU's work), quick",
    )
    parser.add_argument("--quick", action="store_true", help="the same as --plan quick: checks the pipeline (~30 s)")
    parser.add_argument(
        "--arms", help=f"which arms, in the order they run (default: the plan's, {ARMS}; --plan seed: CDA)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", help="override the plan's seeds")
    parser.add_argument("--out", default="bench_out/efficacy")
    parser.add_argument(
        "--device", choices=("cpu", "cuda", "auto"), default="cpu", help="cpu (default), cuda, auto (CUDA when present)"
    )
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        help="torch.compile the training loss (default: on for CUDA, off on CPU, as chunklm.train.compile_default)",
    )
    parser.add_argument("--workers", type=int, help="runs at a time (default 2 on CPU, 1 on CUDA: the one GPU)")
    parser.add_argument(
        "--max-minutes",
        type=float,
        help="start no run that would end past this many minutes; stop one still going then",
    )
    parser.add_argument(
        "--resume",
        type=Path,
        metavar="RESULTS_JSON",
        help="keep the complete runs of this earlier results.json (same plan)",
    )
    args = parser.parse_args()
    t0 = time.time()
    plan = PLANS["quick" if args.quick else args.plan]
    if args.seeds:
        plan = attrs.evolve(plan, seeds=tuple(args.seeds))
    arms = plan.arms if args.arms is None else args.arms
    if not arms or set(arms) - set(ARMS) or len(set(arms)) != len(arms):
        parser.error(f"--arms takes distinct letters from {ARMS}: got {arms!r}")
    import torch

    device = (
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else "cpu"
        if args.device == "auto"
        else args.device
    )
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here; use --device cpu (or auto)")
    workers = args.workers or (1 if device == "cuda" else 2)
    if device == "cuda" and workers != 1:
        parser.error(f"--workers {workers}: on CUDA one run at a time uses the one GPU; pass --workers 1")
    deadline = t0 + 60 * args.max_minutes if args.max_minutes is not None else None
    execution = Execution(device, compile_default(device) if args.compile is None else args.compile, deadline)
    done = load_done(args.resume, plan) if args.resume else []
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from chunklm import ByteCorpus

    ByteCorpus(None, seq_len=plan.seq_len, chunk=plan.chunk)  # build the corpus cache once, before the workers
    results: list[dict] = list(done)
    if done:
        names = ", ".join(f"{r['arm']} seed {r['seed']}" for r in done)
        print(f"resumed {len(done)} runs from {args.resume}: {names}", flush=True)

    def on_result(r: dict) -> None:
        results.append(r)
        raises = f", raises {[x['step'] for x in r['raises']]}" if r["raises"] else ""
        stopped = "" if r["complete"] else f", STOPPED by --max-minutes after step {len(r['losses'])}"
        last = f"final bpb {r['evals'][-1][1]:.4f}" if r["evals"] else "no evaluation yet"
        print(f"{r['arm']} seed {r['seed']}: {last}{raises}{stopped}, {r['seconds']:.0f} s", flush=True)
        write_json(out / "results.json", {"plan": attrs.asdict(plan), "results": results})
        report(plan, results, out)

    # CUDA: a spawned process (CUDA cannot be forked), a fresh one per run where Python has max_tasks_per_child
    pool_args = {"mp_context": multiprocessing.get_context("spawn")} if device == "cuda" else {}
    if device == "cuda" and sys.version_info >= (3, 11):
        pool_args["max_tasks_per_child"] = 1
    with ProcessPoolExecutor(workers, **pool_args) as pool:
        skipped = schedule(pool, plan, arms, workers, on_result, execution=execution, done=done)
    print(report(plan, results, out))
    for line in skipped:
        print(f"not run: {line}")
    print(
        f"\n{len(results) - len(done)} runs in {time.time() - t0:.0f} s on {device}; "
        f"wrote {out}/results.json, tables.md, efficacy.png"
    )


if __name__ == "__main__":
    main()
