"""Training throughput of ChunkLM against a causal Transformer of about the same size, on CPU.

One training step = forward + backward + AdamW step, on random bytes (throughput does not depend
on the data). Both models share the byte embedding, the block layout (pre-norm mixer + residual,
pre-norm feed-forward + residual), the chunk head and its loss (``chunklm.model.head_loss``, every
position); only the token mixer differs: ChunkLM's causal FFT long convolution versus multi-head
causal attention (``F.scaled_dot_product_attention(is_causal=True)``, head size 64, learned
positions). Steps of the two models alternate, so a slow phase of the machine hits both; each
number is the median of the repeats.

    python benchmarks/bench_throughput.py            # the table in BENCHMARKS.md (~5 min, 2 cores)
    python benchmarks/bench_throughput.py --quick    # one size, two lengths, a smoke test
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chunklm import ChunkLM, ChunkLMConfig  # noqa: E402
from chunklm.model import VOCAB, head_loss  # noqa: E402

# name: (d_model, n_layers, kernel_len, chunk, tokens per step)
SIZES = {
    "demo": (128, 4, 64, 8, 16384),
    "seed": (512, 6, 128, 16, 4096),
}


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, head_size: int = 64):
        super().__init__()
        self.n_head = max(1, d_model // head_size)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, D // self.n_head).permute(2, 0, 3, 1, 4)  # (B, H, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, hs)
        return self.proj(y.transpose(1, 2).reshape(B, T, D))


class TransformerBlock(nn.Module):
    def __init__(self, d_model: int, ff_mult: int = 4):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(d_model), CausalSelfAttention(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, ff_mult * d_model), nn.GELU(), nn.Linear(ff_mult * d_model, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ff(self.norm2(x))


class Transformer(nn.Module):
    """The baseline: ChunkLM with attention in place of the long convolution."""

    def __init__(self, config: ChunkLMConfig):
        super().__init__()
        self.chunk = config.chunk
        self.embed = nn.Embedding(VOCAB, config.d_model)
        self.pos = nn.Parameter(torch.zeros(config.seq_len, config.d_model))
        self.blocks = nn.ModuleList(TransformerBlock(config.d_model, config.ff_mult) for _ in range(config.n_layers))
        self.norm = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.chunk * VOCAB)

    def loss(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        T = windows.shape[1] - self.chunk
        x = self.embed(windows[:, :T]) + self.pos[:T]  # (B, T, D)
        for block in self.blocks:
            x = block(x)
        return head_loss(self.norm(x), self.head, windows)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def measure(models: dict[str, nn.Module], batch: int, seq_len: int, chunk: int, repeats: int) -> dict[str, float]:
    """Median seconds per training step of each model, steps interleaved; one warm-up step each."""
    windows = torch.randint(0, VOCAB, (batch, seq_len + chunk))
    opts = {name: torch.optim.AdamW(m.parameters(), lr=1e-4, weight_decay=0.1) for name, m in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    for rep in range(repeats + 1):
        for name, model in models.items():
            start = time.perf_counter()
            loss, _ = model.loss(windows)
            opts[name].zero_grad(set_to_none=True)
            loss.backward()
            opts[name].step()
            if rep > 0:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def crossover(ratios: list[tuple[int, float]]) -> str:
    """The first length where ChunkLM/Transformer reaches 1, interpolated in log-log between lengths."""
    for (l0, r0), (l1, r1) in zip(ratios, ratios[1:]):
        if r0 < 1.0 <= r1:
            f = -math.log(r0) / (math.log(r1) - math.log(r0))
            return f"~{math.exp(math.log(l0) + f * (math.log(l1) - math.log(l0))):.0f} (between {l0} and {l1})"
    return f"at or below {ratios[0][0]}" if ratios[0][1] >= 1.0 else "not reached"


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="demo,seed", help="comma-separated: " + ", ".join(SIZES))
    parser.add_argument("--seq-lens", default="128,256,512,1024,2048,4096")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="demo size, 256 and 1024, 2 repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.seq_lens, args.repeats = "demo", "256,1024", 2
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"{cpu_name()}, {os.cpu_count()} CPUs; torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"median of {args.repeats} steps (3 at batch 1), after one warm-up step each; "
        f"load average at the start (1, 5, 15 min): {os.getloadavg()}\n"
    )
    print(
        "| size | seq_len | batch | ChunkLM params | Transformer params | ChunkLM tok/s | Transformer tok/s | ratio |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    crossovers = {}
    for size in args.sizes.split(","):
        d_model, n_layers, kernel_len, chunk, tokens = SIZES[size]
        ratios = []
        for seq_len in (int(s) for s in args.seq_lens.split(",")):
            config = ChunkLMConfig(
                d_model=d_model, n_layers=n_layers, seq_len=seq_len, kernel_len=min(kernel_len, seq_len), chunk=chunk
            )
            models = {"chunklm": ChunkLM(config), "transformer": Transformer(config)}
            batch = max(1, tokens // seq_len)
            repeats = args.repeats if batch > 1 else min(args.repeats, 3)
            secs = measure(models, batch, seq_len, chunk, repeats)
            tps = {name: batch * seq_len / s for name, s in secs.items()}
            print(
                f"| {size} (d={d_model}, L={n_layers}, K={config.kernel_len}, C={chunk}) | {seq_len} | {batch} "
                f"| {n_params(models['chunklm']) / 1e6:.2f}M | {n_params(models['transformer']) / 1e6:.2f}M "
                f"| {tps['chunklm']:,.0f} | {tps['transformer']:,.0f} | {tps['chunklm'] / tps['transformer']:.2f} |",
                flush=True,
            )
            ratios.append((seq_len, tps["chunklm"] / tps["transformer"]))
        crossovers[size] = crossover(ratios)
    print(f"\nload average at the end (1, 5, 15 min): {os.getloadavg()}")
    for size, text in crossovers.items():
        print(f"crossover ({size}): ChunkLM overtakes the Transformer at seq_len {text}")


if __name__ == "__main__":
    main()
