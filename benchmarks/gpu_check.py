"""GPU check of ChunkLM: its speed and correctness on one NVIDIA GPU, side by side.

    python benchmarks/gpu_check.py --out DIR                  # on the GPU: all sections, in this order
    python benchmarks/gpu_check.py --out DIR --max-minutes 10 # start no section after 10 minutes
    python benchmarks/gpu_check.py --out DIR --only conv      # some sections (comma-separated names)
    python benchmarks/gpu_check.py --long --out DIR           # ChunkLM vs Transformer at 8k-32k bytes
    python benchmarks/gpu_check.py --quick --out DIR          # tiny shapes: a smoke test, runs on CPU

Sections (results are written to gpu_check.json / gpu_check.md under --out after each one, so a
run cut short keeps what it measured; with --max-minutes, a section not started by then is skipped
with a line saying so):

conv     The causal convolution alone at (B, D, T, K) = (32, 512, 1024, 128), forward + backward:
         the FFT conv (float32 and bf16 input) against the fused Triton conv (bf16; float32 IEEE) and
         cuDNN's depthwise conv1d; Triton's error against float64; a K sweep for the dispatch
         threshold (chunklm.model.TRITON_MAX_K). Target: Triton bf16 >= 6x faster than 1.83 ms (H100).
checks   Causality on the device in float32 and bf16 autocast (model and Triton conv), and exact
         resume of Trainer on the device (same device; default and deterministic settings, each in
         its own process: CUBLAS_WORKSPACE_CONFIG must be set before cuBLAS starts).
seed     The seed's exact command (batch 4 x accum 8 = 32 windows of 1024 bytes per step) through
         Trainer.train_step: eager, micro_batch 32, FFT conv forced, compile, compile with CUDA
         graphs (mode="reduce-overhead"). Target: >= 1.0M tokens/s.
compare  ChunkLM vs the same-size flash-attention Transformer at 1024 (batch 32) and 4096 (batch 8),
         bf16 autocast, eager and torch.compile, tokens/s and MFU. Targets (compiled): >= 1.0x, >= 1.5x.
cli      `chunklm train --preset seed --device cuda` for 5 steps, stopped and resumed.

MFU counts matmul FLOPs only (6 x Linear weights per token; the convolution's and attention's
FLOPs are not counted, so it is a lower bound for both models). Steps are medians after warm-up.
On CPU (--quick without a GPU) the CUDA-only rows print a line saying they were skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import chunklm.model as model_module  # noqa: E402
from benchmarks.bench_throughput import Transformer as TransformerLM  # noqa: E402
from chunklm import ByteCorpus, ChunkLM, ChunkLMConfig  # noqa: E402
from chunklm.model import causal_fft_conv  # noqa: E402
from chunklm.train import TrainConfig, Trainer, _Objective  # noqa: E402

SEED = dict(d_model=512, n_layers=6, seq_len=1024, kernel_len=128, chunk=16)
QUICK = dict(d_model=32, n_layers=2, seq_len=128, kernel_len=32, chunk=4)
PEAK_BF16 = {"H100": 989e12, "H200": 989e12}  # dense bf16 tensor-core peak, FLOP/s
SECTIONS = ("conv", "checks", "seed", "compare", "cli")
REPO = Path(__file__).resolve().parents[1]
CORPUS = tuple(str(REPO / d) for d in ("chunklm", "engine", "policies", "runs", "tests"))  # no corpus cache to build


class Report:
    """Rows per section, printed and written to gpu_check.md as they come; gpu_check.json after every section."""

    def __init__(self, out: Path, meta: dict) -> None:
        self.out, self.data, self.lines = out, {"meta": meta}, []
        out.mkdir(parents=True, exist_ok=True)

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.lines.append(text)
        (self.out / "gpu_check.md").write_text("\n".join(self.lines) + "\n")  # a section killed midway keeps its rows

    def header(self, columns: list[str]) -> None:
        """Start a Markdown table; its rows follow one by one (``row``), so a section killed midway keeps them."""
        self.say("| " + " | ".join(columns) + " |\n|" + "|".join("---" for _ in columns) + "|")

    def row(self, cells: list) -> None:
        self.say("| " + " | ".join(str(c) for c in cells) + " |")

    def save(self, section: str, value) -> None:
        self.data[section] = value
        (self.out / "gpu_check.json").write_text(json.dumps(self.data, indent=2, default=str))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], object], device: torch.device, steps: int, warmup: int) -> float:
    times = []
    for i in range(warmup + steps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def skipped(report: Report, what: str) -> None:
    report.say(f"SKIPPED (CUDA only, no GPU here): {what}")


@contextlib.contextmanager
def fft_conv_only():
    """Force the FFT conv on CUDA (the dispatch's threshold at 0 taps)."""
    saved = model_module.TRITON_MAX_K
    model_module.TRITON_MAX_K = 0
    try:
        yield
    finally:
        model_module.TRITON_MAX_K = saved


def matmul_params(model: torch.nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def mfu(model: torch.nn.Module, tokens_per_s: float, card: str | None) -> str:
    if card is None:
        return "n/a"
    return f"{6 * matmul_params(model) * tokens_per_s / PEAK_BF16[card]:.1%}"


# conv ---------------------------------------------------------------------------------------------


def direct_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """cuDNN's depthwise conv1d: left zero padding, flipped kernel, in u's dtype."""
    return F.conv1d(F.pad(u, (k.shape[-1] - 1, 0)), k.flip(-1)[:, None, :].to(u.dtype), groups=k.shape[0])


def conv_ms(conv, u: torch.Tensor, k: torch.Tensor, g: torch.Tensor, steps: int) -> float:
    u, k = u.detach().requires_grad_(True), k.detach().requires_grad_(True)

    def step():
        y = conv(u, k)
        torch.autograd.grad(y, (u, k), g.to(y.dtype))

    return 1e3 * median_seconds(step, u.device, steps, warmup=3)


def conv_errors(conv, u: torch.Tensor, k: torch.Tensor, g: torch.Tensor) -> dict:
    """Max |error| / max |reference| of y, du, dk against the float64 FFT conv of the same (rounded) inputs."""

    def run(fn, uu, kk, gg):
        uu, kk = uu.detach().requires_grad_(True), kk.detach().requires_grad_(True)
        y = fn(uu, kk)
        return (y, *torch.autograd.grad(y, (uu, kk), gg.to(y.dtype)))

    got = run(conv, u, k, g)
    want = run(causal_fft_conv, u.double(), k.to(u.dtype).double(), g.to(u.dtype).double())
    return {n: ((a.double() - b).abs().max() / b.abs().max()).item() for n, a, b in zip(("y", "du", "dk"), got, want)}


def section_conv(report: Report, device: torch.device, quick: bool) -> dict:
    B, D, T, K = (2, 8, 256, 32) if quick else (32, 512, 1024, 128)
    steps = 3 if quick else 20
    gen = torch.Generator(device=device).manual_seed(0)
    u = torch.randn(B, D, T, device=device, generator=gen)
    k = torch.randn(D, K, device=device, generator=gen) / K**0.5
    g = torch.randn(B, D, T, device=device, generator=gen)
    impls = {
        "FFT conv, float32 input": (causal_fft_conv, torch.float32),
        "FFT conv, bf16 input (autocast)": (causal_fft_conv, torch.bfloat16),
    }
    if device.type == "cuda":
        from chunklm.triton_conv import triton_causal_conv

        impls.update(
            {
                "Triton, bf16": (triton_causal_conv, torch.bfloat16),
                "Triton, float32 (IEEE)": (triton_causal_conv, torch.float32),
                "cuDNN depthwise conv1d, bf16": (direct_conv, torch.bfloat16),
            }
        )
    report.say(
        f"\n### Causal convolution alone, (B, D, T, K) = {(B, D, T, K)}, forward + backward, median of {steps}\n"
    )
    result = {"shape": [B, D, T, K], "rows": {}}
    fft_ms = None
    report.header(["implementation", "ms", "vs FFT float32", "rel. error y / du / dk vs float64"])
    for name, (conv, dtype) in impls.items():
        ms = conv_ms(conv, u.to(dtype), k, g, steps)
        fft_ms = fft_ms or ms
        err = conv_errors(conv, u.to(dtype), k, g)
        result["rows"][name] = {"ms": ms, "rel_err": err}
        report.row([name, f"{ms:.3f}", f"{fft_ms / ms:.2f}x", f"{err['y']:.1e} / {err['du']:.1e} / {err['dk']:.1e}"])
    if device.type != "cuda":
        skipped(report, "Triton and cuDNN rows, the K sweep for TRITON_MAX_K")
        return result
    from chunklm.triton_conv import triton_causal_conv

    report.say(
        f"\nK sweep at (B, D, T) = {(B, D, T)}, bf16 input, forward + backward ms (dispatch: "
        f"Triton for K <= {model_module.TRITON_MAX_K}):\n"
    )
    sweep = []
    report.header(["K", "FFT ms", "Triton ms", "Triton speed-up"])
    for kk in (32, 64, 128, 256, 512):
        kern = torch.randn(D, kk, device=device, generator=gen) / kk**0.5
        fft, tri = (conv_ms(c, u.bfloat16(), kern, g, steps) for c in (causal_fft_conv, triton_causal_conv))
        sweep.append([kk, f"{fft:.3f}", f"{tri:.3f}", f"{fft / tri:.2f}x"])
        report.row(sweep[-1])
    result["k_sweep"] = sweep
    return result


# checks -------------------------------------------------------------------------------------------


def model_leak(device: torch.device, bf16: bool) -> float:
    """Largest move of a model output before byte s when byte s changes."""
    torch.manual_seed(0)
    model = ChunkLM(ChunkLMConfig(d_model=64, n_layers=2, seq_len=256, kernel_len=64, chunk=4)).to(device).eval()
    idx = torch.randint(0, 256, (2, 256), device=device)
    leak = 0.0
    for s in (1, 64, 100, 255):
        edited = idx.clone()
        edited[:, s] = (edited[:, s] + 17) % 256
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            leak = max(leak, (model(idx).float() - model(edited).float())[:, :s].abs().max().item())
    return leak


def triton_conv_leak(device: torch.device) -> float:
    from chunklm.triton_conv import triton_causal_conv

    u, k = torch.randn(4, 16, 300, device=device).bfloat16(), torch.randn(16, 128, device=device)
    leak = 0.0
    for s in (1, 64, 200, 299):
        v = u.clone()
        v[..., s] += 10
        leak = max(leak, (triton_causal_conv(v, k) - triton_causal_conv(u, k))[..., :s].abs().max().item())
    return leak


def resume_config(quick: bool) -> TrainConfig:
    model = ChunkLMConfig(**(QUICK if quick else {**SEED, "d_model": 128, "n_layers": 2}))
    cutoffs = (16, 32) if quick else (128, 256)
    return TrainConfig(
        model=model,
        data=CORPUS,
        batch_size=4,
        accum_steps=2,
        steps_per_epoch=100,
        epochs=1,
        cutoffs=cutoffs,
        min_epochs=(1, 2),
        eval_windows=4,
    )


def resume_worker(device: str, deterministic: bool, quick: bool) -> None:
    """Run 4 steps straight, and 2 + save/load into a fresh Trainer + 2; print whether they agree bit for bit."""
    if deterministic:
        torch.use_deterministic_algorithms(True)
    cfg = resume_config(quick)
    corpus = ByteCorpus(list(cfg.data), seq_len=cfg.model.seq_len, chunk=cfg.model.chunk)
    straight = Trainer(cfg, device=device, corpus=corpus)
    straight.start()
    losses = [straight.train_step().loss for _ in range(4)]
    first = Trainer(cfg, device=device, corpus=corpus)
    first.start()
    resumed_losses = [first.train_step().loss for _ in range(2)]
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    second = Trainer(cfg, device=device, corpus=corpus)
    second.load_state_dict(torch.load(buffer, weights_only=True))
    resumed_losses += [second.train_step().loss for _ in range(2)]
    a, b = straight.model.state_dict(), second.model.state_dict()
    print(
        json.dumps(
            {
                "losses_equal": losses == resumed_losses,
                "weights_bit_identical": all(torch.equal(a[n], b[n]) for n in a),
                "max_weight_diff": max((a[n].double() - b[n].double()).abs().max().item() for n in a),
            }
        )
    )


def resume_check(device: torch.device, deterministic: bool, quick: bool) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if deterministic:
        env["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    cmd = (
        [sys.executable, __file__, "--resume-worker", device.type]
        + (["--deterministic"] if deterministic else [])
        + (["--quick"] if quick else [])
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def section_checks(report: Report, device: torch.device, quick: bool) -> dict:
    result = {"leak_fp32": model_leak(device, bf16=False)}
    report.say("\n### Causality and exact resume on the device\n")
    report.say(f"model, float32: max |change| of outputs before the edited byte = {result['leak_fp32']:.2e} (FFT conv)")
    if device.type == "cuda":
        result["leak_bf16"] = model_leak(device, bf16=True)
        result["triton_conv_leak_bf16"] = triton_conv_leak(device)
        report.say(
            f"model, bf16 autocast (Triton conv): {result['leak_bf16']:.2e}; Triton conv alone, bf16: "
            f"{result['triton_conv_leak_bf16']:.2e} (expected exactly 0)"
        )
    else:
        skipped(report, "bf16 autocast causality (the Triton conv path)")
    for deterministic in (False, True):
        key = "resume_deterministic" if deterministic else "resume_default"
        result[key] = resume_check(device, deterministic, quick)
        setting = (
            "torch.use_deterministic_algorithms(True), CUBLAS_WORKSPACE_CONFIG=:4096:8"
            if deterministic
            else "default settings"
        )
        report.say(f"resume on {device.type}, {setting}: {result[key]}")
    return result


# seed command -------------------------------------------------------------------------------------


def seed_config(quick: bool, **overrides) -> TrainConfig:
    model = ChunkLMConfig(**(QUICK if quick else SEED))
    cutoffs = {"cutoffs": (16, 32), "min_epochs": (1, 2)} if quick else {}
    return TrainConfig(
        model=model, batch_size=4, accum_steps=8, steps_per_epoch=10**6, epochs=1, **cutoffs, **overrides
    )


def section_seed(report: Report, device: torch.device, quick: bool, card: str | None) -> dict:
    cfg = seed_config(quick)
    tokens = cfg.batch_size * cfg.accum_steps * cfg.model.seq_len
    corpus = ByteCorpus(
        list(CORPUS), seq_len=cfg.model.seq_len, chunk=cfg.model.chunk
    )  # throughput does not depend on the bytes
    variants = [
        ("eager, micro-batch 4 (the seed's)", {}, None, False),
        ("eager, micro-batch 32", {"micro_batch": 32}, None, False),
        ("eager, micro-batch 32, FFT conv forced", {"micro_batch": 32}, None, True),
        ("compile, micro-batch 4", {"compile": True}, None, False),
        ("compile, micro-batch 32", {"micro_batch": 32, "compile": True}, None, False),
        ("compile reduce-overhead (CUDA graphs), micro-batch 32", {"micro_batch": 32}, "reduce-overhead", False),
    ]
    report.say(
        f"\n### The seed's command: batch 4 x accum 8 = {tokens:,} bytes per optimizer step, Trainer.train_step\n"
    )
    result, not_here = {}, []
    report.header(["variant", "tokens/s", "MFU"])
    for name, overrides, mode, fft in variants:
        if device.type != "cuda" and (overrides.get("compile") or mode):
            not_here.append(f"{name} (compile rows: ~40 s of CPU per compile here; the tests cover compile on CPU)")
            continue
        try:
            torch.manual_seed(0)
            trainer = Trainer(seed_config(quick, **overrides), device=device, corpus=corpus)
            if mode:
                trainer._loss_fn = torch.compile(trainer.net, mode=mode)
            trainer.start()
            with fft_conv_only() if fft else contextlib.nullcontext():
                warmup = 4 if (overrides.get("compile") or mode) else 2
                seconds = median_seconds(
                    trainer.train_step, device, steps=2 if quick else 8, warmup=1 if quick else warmup
                )
            tps = tokens / seconds
            result[name] = {"tokens_per_s": tps, "mfu": mfu(trainer.model, tps, card)}
            report.row([name, f"{tps:,.0f}", result[name]["mfu"]])
            del trainer
        except Exception as exc:  # a variant that fails is a result too
            result[name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
            report.row([name, "FAILED", result[name]["error"][:120]])
        if device.type == "cuda":
            torch.cuda.empty_cache()
    for what in not_here:  # after the table, which they would break
        skipped(report, what)
    return result


# compare ------------------------------------------------------------------------------------------


def train_tps(
    model: torch.nn.Module, batch: int, seq_len: int, chunk: int, compiled: bool, steps: int, device: torch.device
) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    loss_fn = torch.compile(_Objective(model)) if compiled else _Objective(model)
    windows = torch.randint(0, 256, (batch, seq_len + chunk), device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss, _ = loss_fn(windows)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return batch * seq_len / median_seconds(step, device, steps, warmup=3)


def section_compare(report: Report, device: torch.device, quick: bool, card: str | None, lengths=None) -> dict:
    base = QUICK if quick else SEED
    lengths = lengths or (((128, 4), (256, 2)) if quick else ((1024, 32), (4096, 8)))
    report.say(
        "\n### ChunkLM vs Transformer (flash attention), bf16 autocast on CUDA, forward + backward + fused AdamW\n"
    )
    result, not_here = [], []
    report.header(
        ["seq_len", "batch", "mode", "ChunkLM tok/s", "MFU", "Transformer tok/s", "MFU", "ChunkLM / Transformer"]
    )
    for seq_len, batch in lengths:
        for compiled in (False, True):
            if compiled and device.type != "cuda":
                not_here.append(f"compiled rows at seq_len {seq_len}")
                continue
            tps = {}
            for kind in ("ChunkLM", "Transformer"):
                torch.manual_seed(0)
                cfg = ChunkLMConfig(**{**base, "seq_len": seq_len})
                model = (ChunkLM(cfg) if kind == "ChunkLM" else TransformerLM(cfg)).to(device)
                try:
                    tps[kind] = train_tps(model, batch, seq_len, cfg.chunk, compiled, 2 if quick else 8, device)
                    result.append(
                        {
                            "model": kind,
                            "seq_len": seq_len,
                            "batch": batch,
                            "compiled": compiled,
                            "tokens_per_s": tps[kind],
                            "mfu": mfu(model, tps[kind], card),
                        }
                    )
                except Exception as exc:
                    result.append(
                        {
                            "model": kind,
                            "seq_len": seq_len,
                            "compiled": compiled,
                            "error": f"{type(exc).__name__}: {exc}"[:2000],
                        }
                    )
                    tps[kind] = float("nan")
                del model
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            how = "compile" if compiled else "eager"
            report.row(
                [
                    seq_len,
                    batch,
                    how,
                    f"{tps['ChunkLM']:,.0f}",
                    result[-2].get("mfu", "-"),
                    f"{tps['Transformer']:,.0f}",
                    result[-1].get("mfu", "-"),
                    f"{tps['ChunkLM'] / tps['Transformer']:.2f}",
                ]
            )
    for what in not_here:
        skipped(report, what)
    return {"rows": result}


# cli ----------------------------------------------------------------------------------------------


def section_cli(report: Report, device: torch.device, out: Path) -> dict:
    if device.type != "cuda":
        skipped(report, "the CLI on CUDA (`--preset seed --device cuda`); tests/test_cli.py covers the CPU")
        return {}
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    results, log = {}, []
    with tempfile.TemporaryDirectory() as tmp:  # the checkpoint (~240 MB) and its history stay out of --out
        ckpt_path = Path(tmp) / "gpu_seed.pt"
        base = [sys.executable, "-m", "runs.cli", "train", "--ckpt", str(ckpt_path), "--device", "cuda"]
        first = base + [
            "--preset",
            "seed",
            "--steps-per-epoch",
            "8",
            "--epochs",
            "2",
            "--log-every",
            "2",
            "--stop-after",
            "5",
        ]
        for name, cmd in (("first", first), ("resume", base + ["--resume", "--log-every", "2"])):
            t0 = time.time()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=400, cwd=REPO)
            log.append(f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
            results[name] = {"rc": proc.returncode, "seconds": round(time.time() - t0, 1)}
        (out / "gpu_cli.log").write_text("\n".join(log))
        if ckpt_path.exists():
            ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
            results["final_global_step"] = ckpt.get("global_step")
    report.say(f"\n### CLI on the GPU\n\n{results} (log: gpu_cli.log)")
    return results


# main ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="bench_out")
    parser.add_argument("--quick", action="store_true", help="tiny shapes (a smoke test; runs on CPU)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {SECTIONS}")
    parser.add_argument(
        "--long", action="store_true", help="only ChunkLM vs Transformer at 8k-32k bytes, eager and compiled"
    )
    parser.add_argument(
        "--max-minutes", type=float, help="start no section after this many minutes (a section started runs to its end)"
    )
    parser.add_argument("--resume-worker", choices=("cpu", "cuda"), help=argparse.SUPPRESS)
    parser.add_argument("--deterministic", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    deadline = None if args.max_minutes is None else time.time() + 60 * args.max_minutes
    if args.resume_worker:
        return resume_worker(args.resume_worker, args.deterministic, args.quick)
    sections = args.only.split(",")
    if unknown := set(sections) - set(SECTIONS):
        parser.error(f"--only: unknown sections {sorted(unknown)}; choose from {SECTIONS}")

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        card = "H200" if "H200" in name else "H100" if "H100" in name else None
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        name, card = "CPU", None
    meta = {
        "device": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "quick": args.quick,
        "argv": sys.argv[1:] if argv is None else argv,
    }
    report = Report(Path(args.out), meta)
    report.say(f"## gpu_check on {name}, torch {torch.__version__}, CUDA {torch.version.cuda}, quick={args.quick}")
    if device.type != "cuda" and not args.quick:
        parser.error("no GPU here: run with --quick for the CPU smoke test")
    if args.long:
        lengths = ((1024, 2), (2048, 1)) if args.quick else ((8192, 4), (16384, 2), (32768, 1))
        report.save("long", section_compare(report, device, args.quick, card, lengths))
        return
    t0 = time.time()
    for section in SECTIONS:
        if section not in sections:
            continue
        start = time.time()
        if deadline is not None and start >= deadline:
            report.say(f"SKIPPED ({section}): --max-minutes {args.max_minutes:g} reached before it started")
            report.save(section, {"skipped": "--max-minutes"})
            continue
        if section == "conv":
            value = section_conv(report, device, args.quick)
        elif section == "checks":
            value = section_checks(report, device, args.quick)
        elif section == "seed":
            value = section_seed(report, device, args.quick, card)
        elif section == "compare":
            value = section_compare(report, device, args.quick, card)
        else:
            value = section_cli(report, device, Path(args.out))
        report.say(f"({section}: {time.time() - start:.0f} s)")
        if device.type == "cuda":
            value = {"result": value, "peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9}
        report.save(section, value)
    report.say(f"\ntotal {time.time() - t0:.0f} s")
    report.save("total_s", time.time() - t0)


if __name__ == "__main__":
    main()
