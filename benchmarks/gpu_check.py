"""GPU check of ChunkLM and the training loop: device placement, bf16 autocast, throughput.

    python benchmarks/gpu_check.py [--out DIR] [--quick]
    python benchmarks/gpu_check.py --long [--out DIR]   # only the 8k-32k comparison

1. Causality on the GPU (float32): changing byte s moves no output before s.
2. Training throughput (forward + backward + AdamW, tokens/s) at the seed's exact model
   (d_model 512, 6 layers, seq_len 1024, kernel_len 128, chunk 16), float32 and bf16 autocast,
   micro-batch 4 (the seed's) and 32; model FLOP utilisation counted from matmul FLOPs only
   (6 x matmul parameters per token; the FFTs are not counted, so MFU is a lower bound).
   A causal Transformer of the same size (benchmarks/bench_throughput.py) at 1024 and 4096.
3. The real command line on the GPU: `chunklm train --preset seed` for a few steps, stopped with
   --stop-after and resumed, so placement, autocast and checkpoints are exercised end to end.
Writes gpu_check.json (and the console log) under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_throughput import Transformer as TransformerLM  # noqa: E402
from chunklm import ChunkLM, ChunkLMConfig  # noqa: E402

SEED = dict(d_model=512, n_layers=6, seq_len=1024, kernel_len=128, chunk=16)
PEAK_BF16 = {"H100": 989e12, "H200": 989e12}  # dense bf16 tensor-core peak, FLOP/s
PEAK_TF32 = {"H100": 495e12, "H200": 495e12}


def matmul_params(model: torch.nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def causality(device: torch.device) -> float:
    torch.manual_seed(0)
    model = ChunkLM(ChunkLMConfig(d_model=64, n_layers=2, seq_len=256, kernel_len=64, chunk=4)).to(device).eval()
    idx = torch.randint(0, 256, (2, 256), device=device)
    s = 100
    edited = idx.clone()
    edited[:, s] = (edited[:, s] + 17) % 256
    with torch.no_grad():
        diff = (model(idx) - model(edited))[:, :s].abs().max().item()
    return diff


def throughput(model: torch.nn.Module, batch: int, seq_len: int, chunk: int, bf16: bool, steps: int) -> float:
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    windows = torch.randint(0, 256, (batch, seq_len + chunk), device=device)
    times = []
    for i in range(steps + 3):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss, _ = model.loss(windows)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return batch * seq_len / statistics.median(times)


def cli_run(out: Path, log: list[str]) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    base = [sys.executable, "-m", "runs.cli", "train", "--ckpt", str(out / "gpu_seed.pt"), "--device", "cuda"]
    first = base + ["--preset", "seed", "--steps-per-epoch", "8", "--epochs", "2", "--log-every", "2", "--stop-after", "5"]
    results = {}
    for name, cmd in (("first", first), ("resume", base + ["--resume", "--log-every", "2"])):
        t0 = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=400)
        log.append(f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
        results[name] = {"rc": proc.returncode, "seconds": round(time.time() - t0, 1)}
    ckpt = torch.load(out / "gpu_seed.pt", map_location="cpu", weights_only=True)
    results["final_global_step"] = ckpt["global_step"]
    results["weights_finite"] = all(torch.isfinite(t).all().item() for t in ckpt["trainer"]["model"].values() if t.is_floating_point())
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.environ.get("OUT", "bench_out"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--long", action="store_true", help="only ChunkLM vs Transformer at 8k-32k bytes (bf16)")
    args = parser.parse_args()
    if args.long:
        return long_lengths(Path(args.out))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        log.append(text)

    device = torch.device("cuda")
    name = torch.cuda.get_device_name(device)
    card = "H200" if "H200" in name else "H100"
    report: dict = {"device": name, "torch": torch.__version__, "cuda": torch.version.cuda}
    say(f"device {name}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True

    report["causality_max_diff_fp32"] = causality(device)
    say(f"causality on GPU (fp32): max |change| of outputs before the edited byte = {report['causality_max_diff_fp32']:.2e}")

    steps = 5 if args.quick else 10
    rows = []
    torch.manual_seed(0)
    model = ChunkLM(ChunkLMConfig(**SEED)).to(device)
    flops_per_token = 6 * matmul_params(model)
    report["chunklm_params"] = sum(p.numel() for p in model.parameters())
    report["chunklm_matmul_flops_per_token"] = flops_per_token
    for batch in (4, 32):
        for bf16 in (False, True):
            tps = throughput(model, batch, SEED["seq_len"], SEED["chunk"], bf16, steps)
            peak = (PEAK_BF16 if bf16 else PEAK_TF32)[card]
            rows.append({"model": "ChunkLM", "seq_len": 1024, "batch": batch, "dtype": "bf16 autocast" if bf16 else "fp32 (tf32 matmul)",
                         "tokens_per_s": round(tps), "mfu": flops_per_token * tps / peak})
            say(f"ChunkLM seed config, batch {batch}, {rows[-1]['dtype']}: {tps:,.0f} tokens/s, MFU {rows[-1]['mfu']:.1%}")
    del model
    torch.cuda.empty_cache()
    for seq_len, batch in ((1024, 32), (4096, 8)):
        for kind in ("ChunkLM", "Transformer"):
            torch.manual_seed(0)
            cfg = ChunkLMConfig(**{**SEED, "seq_len": seq_len})
            model = (ChunkLM(cfg) if kind == "ChunkLM" else TransformerLM(cfg)).to(device)
            tps = throughput(model, batch, seq_len, SEED["chunk"], True, steps)
            rows.append({"model": kind, "seq_len": seq_len, "batch": batch, "dtype": "bf16 autocast", "tokens_per_s": round(tps),
                         "params": sum(p.numel() for p in model.parameters())})
            say(f"{kind} seq_len {seq_len} batch {batch} bf16: {tps:,.0f} tokens/s ({rows[-1]['params'] / 1e6:.1f}M params)")
            del model
            torch.cuda.empty_cache()
    report["throughput"] = rows
    report["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 1e9

    report["cli"] = cli_run(out, log)
    say(f"CLI on GPU: {report['cli']}")
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    (out / "gpu_check.log").write_text("\n".join(log))


def long_lengths(out: Path) -> None:
    """Where does ChunkLM (O(T log T)) overtake flash attention (O(T^2)) on this GPU?"""
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda")
    rows = []
    for seq_len, batch in ((8192, 4), (16384, 2), (32768, 1)):
        for kind in ("ChunkLM", "Transformer"):
            torch.manual_seed(0)
            cfg = ChunkLMConfig(**{**SEED, "seq_len": seq_len})
            model = (ChunkLM(cfg) if kind == "ChunkLM" else TransformerLM(cfg)).to(device)
            tps = throughput(model, batch, seq_len, SEED["chunk"], True, 5)
            rows.append({"model": kind, "seq_len": seq_len, "batch": batch, "tokens_per_s": round(tps)})
            print(f"{kind} seq_len {seq_len} batch {batch} bf16: {tps:,.0f} tokens/s", flush=True)
            del model
            torch.cuda.empty_cache()
    (out / "gpu_long.json").write_text(json.dumps({"device": torch.cuda.get_device_name(device), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
