"""Does annealing on target data pay? Data-mixture arms at equal tokens, with LR-tuned baselines.

    nice -n 10 python benchmarks/mixture_study.py                 # the CPU study in BENCHMARKS.md (~15 min)
    python benchmarks/mixture_study.py --quick                    # the pipeline end to end (~1 min)
    python benchmarks/mixture_study.py --report benchmarks/results/mixture_study.json   # the tables again

Three offline sources (chunklm.corpus.ByteCorpus each, split by file): ``python`` (the standard
library's ``*.py``), ``c`` (the C/C++ headers of torch's include/c10 and include/pybind11) and
``prose`` (the METADATA files of the installed packages: English package descriptions). The target
is ``prose``; "general" bpb is the mean of the other two. Mixes (policies.MixtureSampler, phase param
``mix``): GENERAL python 5 : c 4 : prose 1; TARGET python 2 : c 2 : prose 6; UNIFORM 1 : 1 : 1.

Arms, every one the same steps and tokens (but WP, which stops when its cooldown ends):
  COS   GENERAL throughout, one cosine cycle (peak -> 0.05 of it)                   LR tuned
  WSD   GENERAL throughout, warmup-stable-decay: (1-sqrt) cooldown over the last 20%  LR tuned
  WA    WSD, and the cooldown reads TARGET (the engine's transition at the cooldown's fixed start)
  WP    WA whose cooldown (and TARGET) starts at the first plateau of the training loss after 30% of
        the steps, at 80% at the latest (the fallback); the run stops when its cooldown ends
  TGT   TARGET throughout, WSD
  UNI   UNIFORM throughout, WSD
  FIX   SAME_SHARE throughout (python 11 : c 9 : prose 5: the share of each source WA reads in all), WSD
WA, WP, TGT, UNI and FIX take WSD's tuned LR (the same schedule; only the data differ).

Tuning: COS and WSD each run 4 peak LRs a factor of 2 apart on the tuning seed (0), and the grid grows
by a factor of 2 past an edge that wins (twice at most); the lowest final general bpb picks the LR.
Evaluation: seeds 1, 2, 3, arms alternated in one process (wall-clock is
comparable between arms, but the machine is shared). Verdict (DESIGN.md section 9): an arm beats a
baseline on a source when its 3 seeds' range lies wholly below the baseline's; the target gain is
weighed against the general loss (Pareto).
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chunklm.config import ChunkLMConfig  # noqa: E402
from chunklm.corpus import ByteCorpus  # noqa: E402
from chunklm.model import ChunkLM  # noqa: E402
from engine import Curriculum, CurriculumEngine, Phase, Point, Transition  # noqa: E402
from policies import WSD, MinEpoch, MinSteps, MixtureSampler, Plateau, StartCooldown, all_of, any_of  # noqa: E402

GENERAL = {"python": 5, "c": 4, "prose": 1}
TARGET = {"python": 2, "c": 2, "prose": 6}
UNIFORM = {"python": 1, "c": 1, "prose": 1}
SAME_SHARE = {"python": 11, "c": 9, "prose": 5}  # WA's bytes in all: 80% of the steps GENERAL, 20% TARGET
ARMS = ("COS", "WSD", "WA", "WP", "TGT", "UNI", "FIX")
TARGET_SOURCE = "prose"


def sources() -> dict[str, list[str] | None]:
    """The three domains' paths (None: ByteCorpus's default, the standard library's *.py)."""
    include = Path(torch.__file__).resolve().parent / "include"
    site = sysconfig.get_paths()["purelib"]
    return {
        "python": None,
        "c": [str(include / "c10"), str(include / "pybind11")],
        "prose": sorted(glob.glob(os.path.join(site, "*.dist-info", "METADATA"))),
    }


def curriculum(arm: str, steps: int, epoch_steps: int) -> Curriculum:
    """The arm's phases (each with its mix) and, for the anneals, the transition into TARGET."""
    if arm in ("COS", "WSD"):
        return Curriculum([Phase("general", params={"mix": GENERAL})], [])
    if arm in ("TGT", "UNI", "FIX"):
        mix = {"TGT": TARGET, "UNI": UNIFORM, "FIX": SAME_SHARE}[arm]
        return Curriculum([Phase(arm.lower(), params={"mix": mix})], [])
    phases = [Phase("stable", params={"mix": GENERAL}), Phase("anneal", params={"mix": TARGET})]
    if arm == "WA":  # at the end of step s the cooldown's first step (0-based s) is next: WSD's own start
        start = steps - round(0.2 * steps)
        return Curriculum(phases, [Transition("stable", "anneal", guards=[MinSteps(start)], when=Point.STEP_END)])
    epochs = steps // epoch_steps
    guard = any_of(
        all_of(MinEpoch(round(0.3 * epochs)), Plateau(window=2 * epoch_steps, threshold=0.01)),
        MinEpoch(round(0.8 * epochs)),
    )
    return Curriculum(
        phases, [Transition("stable", "anneal", guards=[guard], actions=[StartCooldown()], when=Point.EPOCH_END)]
    )


@torch.no_grad()
def bpb(model: ChunkLM, corpora: dict[str, ByteCorpus], n_windows: int) -> dict[str, float]:
    """Next-byte bits per byte on each source's validation windows."""
    model.eval()
    out = {}
    for name, corpus in corpora.items():
        nats = [model.loss(w)[1][0].item() * len(w) for w in corpus.val_batches(n_windows, 32)]
        out[name] = sum(nats) / min(n_windows, corpus.n_val_bytes - corpus.window + 1) / math.log(2)
    model.train()
    return out


def run(arm: str, lr: float, seed: int, corpora: dict[str, ByteCorpus], plan: dict) -> dict:
    """One training run; returns the final bpb per source, steps, tokens, wall-clock and the anneal's start."""
    steps, epoch_steps, batch = plan["steps"], plan["epoch_steps"], plan["batch"]
    torch.manual_seed(seed)
    model = ChunkLM(ChunkLMConfig(**plan["model"]))
    model.set_cutoff(None)  # the full band from the start: only the data and the LR differ between arms
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1, betas=(0.9, 0.95))
    if arm == "COS":
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=0.05 * lr)
    else:
        schedule = WSD(optimizer, base_lr=lr, total_steps=steps, cooldown_fraction=0.2)
    engine = CurriculumEngine(curriculum(arm, steps, epoch_steps), optimizer=optimizer, schedule=schedule)
    engine.start()
    sampler = MixtureSampler({n: c.n_windows for n, c in corpora.items()}, batch, seed=seed, engine=engine)
    start, losses, anneal_at, tokens = time.perf_counter(), [], None, 0
    for step in range(steps):
        drawn = sampler.next_batch()
        windows = torch.cat(
            [corpora[n].windows([i for m, i in drawn if m == n]) for n in corpora if any(m == n for m, _ in drawn)]
        )
        loss, _ = model.loss(windows)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        tokens += windows.shape[0] * plan["model"]["seq_len"]
        losses.append(loss.item())
        engine.step_end(loss=losses[-1])
        if (step + 1) % epoch_steps == 0:
            engine.epoch_end(avg_loss=statistics.fmean(losses[-epoch_steps:]))
        if anneal_at is None and engine.phase.name == "anneal":
            anneal_at = step + 1
        if isinstance(schedule, WSD) and schedule.finished:
            break
    wall = time.perf_counter() - start
    final = bpb(model, corpora, plan["eval_windows"])
    general = statistics.fmean(v for n, v in final.items() if n != TARGET_SOURCE)
    return {
        "arm": arm,
        "lr": lr,
        "seed": seed,
        "steps": step + 1,
        "tokens": tokens,
        "wall_s": round(wall, 2),
        "anneal_at": anneal_at,
        "bpb": final,
        "target": final[TARGET_SOURCE],
        "general": general,
    }


PLANS = {
    "cpu": {
        "model": {"d_model": 64, "n_layers": 2, "seq_len": 128, "kernel_len": 32, "chunk": 4},
        "steps": 400,
        "epoch_steps": 20,
        "batch": 16,
        "eval_windows": 128,
        "lrs": {"COS": [8e-3, 1.6e-2, 3.2e-2, 6.4e-2], "WSD": [8e-3, 1.6e-2, 3.2e-2, 6.4e-2]},
        "tune_seed": 0,
        "seeds": [1, 2, 3],
    },
    "quick": {
        "model": {"d_model": 32, "n_layers": 1, "seq_len": 64, "kernel_len": 16, "chunk": 2},
        "steps": 40,
        "epoch_steps": 5,
        "batch": 8,
        "eval_windows": 16,
        "lrs": {"COS": [2e-3, 4e-3], "WSD": [2e-3, 4e-3]},
        "tune_seed": 0,
        "seeds": [1, 2],
    },
}


def spread(values: list[float]) -> str:
    return f"{statistics.fmean(values):.4f} [{min(values):.4f}, {max(values):.4f}]"


def tables(results: dict) -> str:
    """Markdown: a header (command, commit, machine, start), the tuning grid, then per arm target and
    general bpb (mean [min, max] over seeds)."""
    header = ", ".join(f"{key}: {results.get(key, '?')}" for key in ("command", "commit", "machine", "started", "load"))
    lines = [f"<!-- {header} -->", "", "| tuned arm | peak LR | general bpb | target bpb |", "|---|---|---|---|"]
    for r in results["tuning"]:
        lines.append(f"| {r['arm']} | {r['lr']:g} | {r['general']:.4f} | {r['target']:.4f} |")
    lines += [
        "",
        "| arm | LR | target bpb (prose) | general bpb (python, c) | python | c | steps | tokens | wall s "
        "| anneal at step |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm in ARMS:
        rs = [r for r in results["runs"] if r["arm"] == arm]
        if not rs:
            continue
        mean = {key: statistics.fmean(r["bpb"][key] for r in rs) for key in ("python", "c")}
        lines.append(
            f"| {arm} | {rs[0]['lr']:g} | {spread([r['target'] for r in rs])} | "
            f"{spread([r['general'] for r in rs])} | "
            f"{mean['python']:.4f} | {mean['c']:.4f} | "
            f"{statistics.fmean(r['steps'] for r in rs):.0f} | {statistics.fmean(r['tokens'] for r in rs):.0f} | "
            f"{statistics.fmean(r['wall_s'] for r in rs):.1f} | {[r['anneal_at'] for r in rs]} |"
        )
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    full = results["plan"]["steps"] * results["plan"]["batch"] * results["plan"]["model"]["seq_len"]
    for arm in ARMS:
        rs = [r for r in results["runs"] if r["arm"] == arm]
        if not rs:
            continue
        xs, ys = [r["general"] for r in rs], [r["target"] for r in rs]
        (dots,) = ax.plot(xs, ys, "o", alpha=0.35)
        ax.errorbar(
            statistics.fmean(xs),
            statistics.fmean(ys),
            xerr=[[statistics.fmean(xs) - min(xs)], [max(xs) - statistics.fmean(xs)]],
            yerr=[[statistics.fmean(ys) - min(ys)], [max(ys) - statistics.fmean(ys)]],
            fmt="s",
            color=dots.get_color(),
            label=arm,
            capsize=3,
        )
    ax.set_xlabel("general validation bpb (mean of python, c; lower is better)")
    ax.set_ylabel("target validation bpb (prose; lower is better)")
    short = [f"{arm} ({statistics.fmean(r['tokens'] for r in rs) / full:.0%} of the tokens)" for arm in ARMS
             if (rs := [r for r in results["runs"] if r["arm"] == arm]) and rs[0]["tokens"] < full]  # fmt: skip
    ax.set_title("Seeds (dots), mean and range (squares)" + (f"; {', '.join(short)}" if short else ""), fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny plan: the pipeline end to end")
    parser.add_argument("--out", default="benchmarks/results/mixture_study.json")
    parser.add_argument("--plot", default="docs/mixtures.png")
    parser.add_argument("--report", help="print the tables of a saved results file and exit")
    parser.add_argument(
        "--reuse",
        nargs="+",
        default=[],
        help="logs of earlier runs of this plan (their printed JSON lines): the runs they hold are kept, not run "
        "again (a run is a pure function of arm, LR, seed and plan; only its wall-clock would differ)",
    )
    args = parser.parse_args()
    if args.report:  # the tables again, and the plot to --plot
        results = json.loads(Path(args.report).read_text())
        plot(results, Path(args.plot))
        print(tables(results), end="")
        return
    torch.set_num_threads(1)
    name = "quick" if args.quick else "cpu"
    plan = PLANS[name]
    seq_len, chunk = plan["model"]["seq_len"], plan["model"]["chunk"]
    corpora = {n: ByteCorpus(p, seq_len=seq_len, chunk=chunk) for n, p in sources().items()}
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    results = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "commit": commit,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared), "
        f"torch {torch.__version__}, 1 thread",
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "load": "load average %.1f %.1f %.1f at the start" % os.getloadavg(),
        "plan": plan,
        "sources": {n: repr(c) for n, c in corpora.items()},
        "tuning": [],
        "runs": [],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    kept = [
        json.loads(line) for log in args.reuse for line in Path(log).read_text().splitlines() if line.startswith("{")
    ]
    results["tuning"] = [r for r in kept if r["seed"] == plan["tune_seed"]]
    if kept:
        results["reused"] = f"{len(kept)} runs from {', '.join(args.reuse)}"
    tuned = {}
    for arm in ("COS", "WSD"):
        lrs = list(plan["lrs"][arm])
        while True:
            for lr in lrs:
                if not any(r["arm"] == arm and r["lr"] == lr for r in results["tuning"]):
                    results["tuning"].append(run(arm, lr, plan["tune_seed"], corpora, plan))
                    print(json.dumps(results["tuning"][-1]), flush=True)
            best = min((r for r in results["tuning"] if r["arm"] == arm), key=lambda r: r["general"])["lr"]
            if best not in (lrs[0], lrs[-1]) or len(lrs) >= len(plan["lrs"][arm]) + 2:
                break
            lrs = [lrs[0] / 2, *lrs] if best == lrs[0] else [*lrs, lrs[-1] * 2]  # best at an edge: extend the grid
        tuned[arm] = best
    out.write_text(json.dumps(results, indent=1))
    for seed in plan["seeds"]:
        for arm in ARMS:
            lr = tuned["COS" if arm == "COS" else "WSD"]
            same = [r for r in kept if (r["arm"], r["lr"], r["seed"]) == (arm, lr, seed)]
            results["runs"].append(same[0] if same else run(arm, lr, seed, corpora, plan))
            if not same:
                print(json.dumps(results["runs"][-1]), flush=True)
            out.write_text(json.dumps(results, indent=1))
    out.with_suffix(".md").write_text(tables(results))
    plot(results, Path(args.plot))
    print(tables(results))


if __name__ == "__main__":
    main()
